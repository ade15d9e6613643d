package graphtest_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter/graph/graphtest"
)

func do(t *testing.T, h http.Handler, method, u string, hdr map[string]string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, u, bytes.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := graphtest.HandlerTransport(h).RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func form(t *testing.T, h http.Handler, tenant string, v url.Values) (*http.Response, map[string]any) {
	t.Helper()
	resp, b := do(t, h, "POST", "http://login.test/"+tenant+"/oauth2/v2.0/token",
		map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, []byte(v.Encode()))
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("token endpoint answered non-JSON %q", b)
	}
	return resp, m
}

func appToken(t *testing.T, h http.Handler) string {
	t.Helper()
	_, m := form(t, h, "contoso", url.Values{"client_id": {"app"}, "client_secret": {"x"}, "grant_type": {"client_credentials"},
		"scope": {"https://graph.microsoft.com/.default"}})
	return m["access_token"].(string)
}

// TestZeroValueOverLoopback uses a zero Server as the handler of a real 127.0.0.1 server.
func TestZeroValueOverLoopback(t *testing.T) {
	var s graphtest.Server
	ts := httptest.NewServer(&s)
	defer ts.Close()
	resp, err := http.PostForm(ts.URL+"/contoso/oauth2/v2.0/token", url.Values{"client_id": {"any"}, "client_secret": {"any"},
		"grant_type": {"client_credentials"}, "scope": {"https://graph.microsoft.com/.default"}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	if resp.StatusCode != 200 || m["token_type"] != "Bearer" || m["expires_in"] != 3599.0 || m["ext_expires_in"] != 3599.0 || m["access_token"] == "" {
		t.Errorf("token response = %d %v; want Bearer with numeric expires_in and ext_expires_in", resp.StatusCode, m)
	}
	if _, ok := m["refresh_token"]; ok {
		t.Errorf("client credentials returned a refresh token")
	}
}

func TestTokenErrorShape(t *testing.T) {
	s := &graphtest.Server{}
	s.AddClient("app", "value")
	resp, m := form(t, s, "contoso", url.Values{"client_id": {"app"}, "client_secret": {"secret-id"}, "grant_type": {"client_credentials"},
		"scope": {"https://graph.microsoft.com/.default"}})
	desc, _ := m["error_description"].(string)
	if resp.StatusCode != 401 || m["error"] != "invalid_client" || !strings.HasPrefix(desc, "AADSTS7000215: ") ||
		!strings.Contains(desc, "\r\nTrace ID: ") || !strings.Contains(desc, "\r\nCorrelation ID: ") || !strings.Contains(desc, "\r\nTimestamp: ") {
		t.Errorf("wrong secret = %d %v", resp.StatusCode, m)
	}
	for _, k := range []string{"error_codes", "timestamp", "trace_id", "correlation_id", "error_uri"} {
		if _, ok := m[k]; !ok {
			t.Errorf("error JSON lacks %q", k)
		}
	}
	if codes, _ := m["error_codes"].([]any); len(codes) != 1 || codes[0] != 7000215.0 {
		t.Errorf("error_codes = %v", m["error_codes"])
	}
	tests := []struct {
		tenant string
		v      url.Values
		status int
		err    string
		code   float64
	}{
		{"contoso", url.Values{"client_id": {"app"}, "client_secret": {"value"}, "grant_type": {"client_credentials"}, "scope": {"User.Read"}}, 400, "invalid_scope", 1002012},
		{"common", url.Values{"client_id": {"app"}, "client_secret": {"value"}, "grant_type": {"client_credentials"}, "scope": {"https://graph.microsoft.com/.default"}}, 400, "invalid_request", 9001023},
		{"contoso", url.Values{"client_id": {"nope"}, "client_secret": {"value"}, "grant_type": {"client_credentials"}}, 400, "unauthorized_client", 700016},
		{"contoso", url.Values{"client_id": {"app"}, "grant_type": {"client_credentials"}}, 401, "invalid_client", 7000218},
		{"contoso", url.Values{"client_id": {"app"}, "client_secret": {"value"}, "grant_type": {"password"}}, 400, "unsupported_grant_type", 70003},
		{"contoso", url.Values{"client_id": {"app"}, "client_secret": {"value"}, "grant_type": {"refresh_token"}, "refresh_token": {"x"}}, 400, "invalid_grant", 9002313},
	}
	for _, tc := range tests {
		resp, m := form(t, s, tc.tenant, tc.v)
		if resp.StatusCode != tc.status || m["error"] != tc.err || m["error_codes"].([]any)[0] != tc.code {
			t.Errorf("%v on %s = %d %v %v; want %d %s %v", tc.v, tc.tenant, resp.StatusCode, m["error"], m["error_codes"], tc.status, tc.err, tc.code)
		}
	}
	if n := len(s.TokenRequests()); n != 7 {
		t.Errorf("TokenRequests() = %d; want 7", n)
	}
}

func TestRefreshRotation(t *testing.T) {
	for _, strict := range []bool{false, true} {
		s := &graphtest.Server{StrictRefresh: strict}
		rt := s.IssueRefreshToken("app", "u", "offline_access")
		redeem := func(rt string) (int, map[string]any) {
			resp, m := form(t, s, "contoso", url.Values{"client_id": {"app"}, "grant_type": {"refresh_token"}, "refresh_token": {rt}})
			return resp.StatusCode, m
		}
		st, m := redeem(rt)
		rt2, _ := m["refresh_token"].(string)
		if st != 200 || rt2 == "" || rt2 == rt {
			t.Fatalf("redeem = %d %v; want a rotated refresh token", st, m)
		}
		st, m = redeem(rt)
		if strict && (st != 400 || !strings.Contains(m["error_description"].(string), "AADSTS70008")) {
			t.Errorf("strict: reusing the old refresh token = %d %v; want AADSTS70008", st, m)
		}
		if !strict && st != 200 {
			t.Errorf("reusing the old refresh token = %d; the real platform accepts it", st)
		}
	}
}

func TestGraph401AndCAE(t *testing.T) {
	s := &graphtest.Server{}
	resp, b := do(t, s, "GET", "http://graph.test/v1.0/me", nil, nil)
	if resp.StatusCode != 401 || !strings.Contains(string(b), `"InvalidAuthenticationToken"`) || !strings.Contains(string(b), "Access token is empty.") ||
		!strings.Contains(resp.Header.Get("WWW-Authenticate"), `authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize"`) ||
		resp.Header.Get("request-id") == "" || resp.Header.Get("client-request-id") == "" {
		t.Errorf("no token: %d %s %v", resp.StatusCode, b, resp.Header)
	}
	tok := appToken(t, s)
	auth := map[string]string{"Authorization": "Bearer " + tok}
	if resp, b := do(t, s, "GET", "http://graph.test/v1.0/users/u", auth, nil); resp.StatusCode != 200 {
		t.Fatalf("with token: %d %s", resp.StatusCode, b)
	}
	s.RevokeTokens()
	if resp, b := do(t, s, "GET", "http://graph.test/v1.0/users/u", auth, nil); resp.StatusCode != 401 || !strings.Contains(string(b), "Access token has expired or is not yet valid.") {
		t.Errorf("revoked: %d %s", resp.StatusCode, b)
	}
	s.CAE = true
	// A client that did not declare cp1 gets no claims challenge, only the plain 401.
	if resp, b := do(t, s, "GET", "http://graph.test/v1.0/users/u", auth, nil); resp.StatusCode != 401 ||
		strings.Contains(resp.Header.Get("WWW-Authenticate"), "insufficient_claims") || !strings.Contains(string(b), "Access token has expired") {
		t.Errorf("CAE, revoked token of a client without cp1: %d %q %s; want the plain 401", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), b)
	}
	_, m := form(t, s, "contoso", url.Values{"client_id": {"app"}, "client_secret": {"x"}, "grant_type": {"client_credentials"},
		"scope": {"https://graph.microsoft.com/.default"}, "claims": {`{"access_token":{"xms_cc":{"values":["cp1"]}}}`}})
	cp1 := map[string]string{"Authorization": "Bearer " + m["access_token"].(string)}
	if resp, b := do(t, s, "GET", "http://graph.test/v1.0/users/u", cp1, nil); resp.StatusCode != 200 {
		t.Fatalf("cp1 token: %d %s", resp.StatusCode, b)
	}
	s.RevokeTokens()
	resp, _ = do(t, s, "GET", "http://graph.test/v1.0/users/u", cp1, nil)
	h := resp.Header.Get("WWW-Authenticate")
	i := strings.Index(h, `claims="`)
	if resp.StatusCode != 401 || !strings.Contains(h, `error="insufficient_claims"`) || i < 0 {
		t.Fatalf("CAE: %d %q", resp.StatusCode, h)
	}
	raw := h[i+8 : len(h)-1]
	dec, err := base64.StdEncoding.DecodeString(raw)
	if err != nil || !json.Valid(dec) || !strings.Contains(string(dec), "nbf") {
		t.Errorf("claims %q decode to %q, %v", raw, dec, err)
	}
}

func TestInjectedFaults(t *testing.T) {
	s := &graphtest.Server{}
	auth := map[string]string{"Authorization": "Bearer " + appToken(t, s)}
	s.InjectThrottle(1, 0)
	s.InjectThrottle(1, 3*time.Second)
	s.InjectStatus(1, 503, 0)
	want := []struct {
		status int
		ra     string
	}{{429, ""}, {429, "3"}, {503, ""}, {200, ""}}
	for i, w := range want {
		resp, _ := do(t, s, "GET", "http://graph.test/v1.0/users/u", auth, nil)
		if resp.StatusCode != w.status || resp.Header.Get("Retry-After") != w.ra {
			t.Errorf("request %d = %d Retry-After %q; want %d %q", i, resp.StatusCode, resp.Header.Get("Retry-After"), w.status, w.ra)
		}
	}
}

func TestUploadSessionRules(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &graphtest.Server{StrictUpload: true}
		_, m := form(t, s, "contoso", url.Values{"client_id": {"app"}, "client_secret": {"x"}, "grant_type": {"client_credentials"},
			"scope": {"https://graph.microsoft.com/.default"}})
		auth := map[string]string{"Authorization": "Bearer " + m["access_token"].(string)}
		resp, b := do(t, s, "POST", "http://graph.test/v1.0/users/u/drive/root:/f.bin:/createUploadSession", auth, []byte(`{}`))
		var sess struct {
			UploadURL string   `json:"uploadUrl"`
			Next      []string `json:"nextExpectedRanges"`
		}
		json.Unmarshal(b, &sess)
		if resp.StatusCode != 200 || !strings.HasPrefix(sess.UploadURL, "http://graph.test/upload/") {
			t.Fatalf("createUploadSession = %d %s", resp.StatusCode, b)
		}
		const unit = graphtest.FragmentMultiple
		total := 2*unit + 10
		put := func(start, n int, hdr map[string]string) int {
			h := map[string]string{"Content-Range": fmt.Sprintf("bytes %d-%d/%d", start, start+n-1, total)}
			for k, v := range hdr {
				h[k] = v
			}
			resp, _ := do(t, s, "PUT", sess.UploadURL, h, make([]byte, n))
			return resp.StatusCode
		}
		checks := []struct {
			name       string
			start, n   int
			hdr        map[string]string
			wantStatus int
		}{
			{"bearer on the upload URL", 0, unit, auth, 401},
			{"not a multiple of 320 KiB", 0, unit + 1, nil, 400},
			{"first fragment", 0, unit, nil, 202},
			{"overlap", 0, unit, nil, 416},
			{"out of order", 2 * unit, 10, nil, 400},
			{"second fragment", unit, unit, nil, 202},
			{"last fragment", 2 * unit, 10, nil, 201},
		}
		// The tempauth in the URL's query is its credential.
		if resp, _ := do(t, s, "GET", strings.Replace(sess.UploadURL, "tempauth=", "tempauth=x", 1), nil, nil); resp.StatusCode != 401 {
			t.Errorf("wrong tempauth = %d; want 401", resp.StatusCode)
		}
		if u := s.UploadURLs(); len(u) != 1 || u[0] != sess.UploadURL || !strings.Contains(u[0], "tempauth=") {
			t.Errorf("UploadURLs() = %v; want the one URL with its tempauth", u)
		}
		for _, c := range checks {
			if got := put(c.start, c.n, c.hdr); got != c.wantStatus {
				t.Errorf("%s: status %d; want %d", c.name, got, c.wantStatus)
			}
		}
		if f := s.Files()["u:f.bin"]; len(f.Data) != total {
			t.Errorf("file = %d bytes; want %d", len(f.Data), total)
		}
		// Status, expiry and cancel.
		_, b = do(t, s, "POST", "http://graph.test/v1.0/users/u/drive/root:/g.bin:/createUploadSession", auth, nil)
		json.Unmarshal(b, &sess)
		if got := put(0, unit, nil); got != 202 {
			t.Fatalf("first fragment = %d", got)
		}
		resp, b = do(t, s, "GET", sess.UploadURL, nil, nil)
		if resp.StatusCode != 200 || !strings.Contains(string(b), fmt.Sprintf(`"%d-"`, unit)) {
			t.Errorf("GET status = %d %s", resp.StatusCode, b)
		}
		time.Sleep(16 * time.Minute)
		if resp, _ := do(t, s, "GET", sess.UploadURL, nil, nil); resp.StatusCode != 404 {
			t.Errorf("expired session = %d; want 404", resp.StatusCode)
		}
		// Simple upload is limited to 4 MiB.
		resp, _ = do(t, s, "PUT", "http://graph.test/v1.0/users/u/drive/root:/big.bin:/content", auth, make([]byte, graphtest.MaxSimpleUpload+1))
		if resp.StatusCode != 413 {
			t.Errorf("simple upload over 4 MiB = %d; want 413", resp.StatusCode)
		}
	})
}

func TestSubscriptionValidation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var validations atomic.Int32
		echo := true
		endpoint := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			tok := r.URL.Query().Get("validationToken")
			if tok == "" {
				w.WriteHeader(202)
				return
			}
			validations.Add(1)
			w.Header().Set("Content-Type", "text/plain")
			if echo {
				io.WriteString(w, tok)
			} else {
				io.WriteString(w, url.QueryEscape(tok)) // the classic mistake: an encoded token
			}
		})
		s := &graphtest.Server{LoginUser: "u", Client: &http.Client{Transport: graphtest.HandlerTransport(endpoint)}}
		auth := map[string]string{"Authorization": "Bearer " + appToken(t, s)}
		create := func(resource string, exp time.Duration, lifecycle string) (int, string) {
			body, _ := json.Marshal(map[string]any{"changeType": "created", "notificationUrl": "https://bot.test/hook", "resource": resource,
				"expirationDateTime": time.Now().Add(exp), "clientState": "cs", "lifecycleNotificationUrl": lifecycle})
			resp, b := do(t, s, "POST", "http://graph.test/v1.0/subscriptions", auth, body)
			return resp.StatusCode, string(b)
		}
		if st, b := create("users/u/messages", time.Hour, "https://bot.test/hook"); st != 201 || validations.Load() != 2 {
			t.Errorf("create = %d %s after %d validations; want 201 after 2 (notification and lifecycle URL)", st, b, validations.Load())
		}
		if st, b := create("chats/c/messages", 2*time.Hour, ""); st != 400 || !strings.Contains(b, "lifecycleNotificationUrl is a required property") {
			t.Errorf("Teams > 1 h without lifecycle URL = %d %s", st, b)
		}
		if st, b := create("users/u/messages", 8*24*time.Hour, ""); st != 400 {
			t.Errorf("mail > 7 days = %d %s", st, b)
		}
		st, b := create("users/u/messages", 10*time.Minute, "")
		var sub struct {
			Expiration time.Time `json:"expirationDateTime"`
		}
		json.Unmarshal([]byte(b), &sub)
		if st != 201 || sub.Expiration.Sub(time.Now()) != 45*time.Minute {
			t.Errorf("10-minute subscription = %d, expires in %v; want 45 min", st, sub.Expiration.Sub(time.Now()))
		}
		echo = false
		if st, b := create("users/u/messages", time.Hour, ""); st != 400 || !strings.Contains(b, "validation") {
			t.Errorf("encoded validation echo = %d %s; want 400", st, b)
		}
		// Delivery and redelivery.
		s.DeliverMail("u", "a@example.com", "s", "t")
		if n := s.Deliveries(); n != 1 {
			t.Errorf("Deliveries() = %d; want 1 (two subscriptions batched into one POST)", n)
		}
	})
}

func TestDeviceCodePending(t *testing.T) {
	s := &graphtest.Server{}
	resp, b := do(t, s, "POST", "http://login.test/contoso/oauth2/v2.0/devicecode", map[string]string{"Content-Type": "application/x-www-form-urlencoded"},
		[]byte("client_id=app&scope=offline_access"))
	var dc map[string]any
	json.Unmarshal(b, &dc)
	if resp.StatusCode != 200 || dc["interval"] != 5.0 || dc["expires_in"] != 900.0 || dc["user_code"] == "" || dc["message"] == "" {
		t.Fatalf("devicecode = %d %v", resp.StatusCode, dc)
	}
	poll := url.Values{"client_id": {"app"}, "grant_type": {"urn:ietf:params:oauth:grant-type:device_code"}, "device_code": {dc["device_code"].(string)}}
	if resp, m := form(t, s, "contoso", poll); resp.StatusCode != 400 || m["error"] != "authorization_pending" {
		t.Errorf("pending poll = %d %v", resp.StatusCode, m)
	}
	if !s.ApproveDevice(dc["user_code"].(string)) {
		t.Fatal("ApproveDevice = false")
	}
	if resp, m := form(t, s, "contoso", poll); resp.StatusCode != 200 || m["refresh_token"] == nil {
		t.Errorf("approved poll = %d %v", resp.StatusCode, m)
	}
}

func TestListChats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &graphtest.Server{}
		rt := s.IssueRefreshToken("app", "bob", "offline_access")
		_, m := form(t, s, "contoso", url.Values{"client_id": {"app"}, "grant_type": {"refresh_token"}, "refresh_token": {rt}})
		auth := map[string]string{"Authorization": "Bearer " + m["access_token"].(string)}
		for i := range 3 {
			s.AddChatMessage(fmt.Sprintf("19:g%d@thread.v2", i), "alice", "Alice", "hi")
		}
		s.AddChatMessage("19:alice_carol@unq.gbl.spaces", "alice", "Alice", "not bob's")
		s.AddChannelMessage("T", "C", "", "alice", "Alice", "a channel is not a chat")
		do(t, s, "POST", "http://graph.test/v1.0/chats", auth, []byte(`{"chatType":"oneOnOne","members":[{"user@odata.bind":"https://graph.microsoft.com/v1.0/users('alice')"},{"user@odata.bind":"https://graph.microsoft.com/v1.0/users('bob')"}]}`))
		var ids []string
		link := "http://graph.test/v1.0/me/chats?$top=2"
		for link != "" {
			resp, b := do(t, s, "GET", link, auth, nil)
			var page struct {
				Value []struct {
					ID       string `json:"id"`
					ChatType string `json:"chatType"`
				} `json:"value"`
				Next string `json:"@odata.nextLink"`
			}
			if resp.StatusCode != 200 || json.Unmarshal(b, &page) != nil || len(page.Value) > 2 {
				t.Fatalf("GET %s = %d %s", link, resp.StatusCode, b)
			}
			for _, c := range page.Value {
				ids = append(ids, c.ID+":"+c.ChatType)
			}
			link = page.Next
		}
		want := "19:alice_bob@unq.gbl.spaces:oneOnOne,19:g0@thread.v2:group,19:g1@thread.v2:group,19:g2@thread.v2:group"
		if got := strings.Join(ids, ","); got != want {
			t.Errorf("/me/chats = %s; want %s", got, want)
		}
	})
}

func TestClientRequestIDEchoed(t *testing.T) {
	s := &graphtest.Server{}
	auth := map[string]string{"Authorization": "Bearer " + appToken(t, s), "client-request-id": "my-request-1"}
	for _, u := range []string{"http://graph.test/v1.0/users/u", "http://graph.test/v1.0/nowhere"} {
		resp, b := do(t, s, "GET", u, auth, nil)
		if resp.Header.Get("client-request-id") != "my-request-1" || resp.Header.Get("request-id") == "" {
			t.Errorf("GET %s (%d): client-request-id %q, request-id %q; want the caller's id echoed and a request id",
				u, resp.StatusCode, resp.Header.Get("client-request-id"), resp.Header.Get("request-id"))
		}
		if resp.StatusCode >= 400 && (!strings.Contains(string(b), `"client-request-id":"my-request-1"`) ||
			!strings.Contains(string(b), resp.Header.Get("request-id"))) {
			t.Errorf("error body %s; want innerError with the same ids as the headers", b)
		}
	}
	delete(auth, "client-request-id")
	if resp, _ := do(t, s, "GET", "http://graph.test/v1.0/users/u", auth, nil); resp.Header.Get("client-request-id") == "" {
		t.Errorf("no client-request-id given: the answer has none; want one made up")
	}
}

// TestListChatMessagesPaging: GET /chats/{id}/messages pages newest first by $top with
// @odata.nextLink ($skiptoken), like /me/chats; a $top above 50 is a 400 on both.
func TestListChatMessagesPaging(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &graphtest.Server{}
		rt := s.IssueRefreshToken("app", "bob", "offline_access")
		_, m := form(t, s, "contoso", url.Values{"client_id": {"app"}, "grant_type": {"refresh_token"}, "refresh_token": {rt}})
		auth := map[string]string{"Authorization": "Bearer " + m["access_token"].(string)}
		var want []string
		for i := range 5 {
			msg := s.AddChatMessage("19:g@thread.v2", "alice", "Alice", fmt.Sprint("m", i))
			want = append([]string{msg.ID}, want...) // newest first
		}
		var got []string
		pages := 0
		link := "http://graph.test/v1.0/chats/19:g@thread.v2/messages?$top=2"
		for link != "" {
			resp, b := do(t, s, "GET", link, auth, nil)
			var page struct {
				Value []struct {
					ID string `json:"id"`
				} `json:"value"`
				Next string `json:"@odata.nextLink"`
			}
			if resp.StatusCode != 200 || json.Unmarshal(b, &page) != nil || len(page.Value) > 2 {
				t.Fatalf("GET %s = %d %s", link, resp.StatusCode, b)
			}
			pages++
			for _, v := range page.Value {
				got = append(got, v.ID)
			}
			link = page.Next
		}
		if pages != 3 || strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("%d pages with %v; want 3 pages with %v", pages, got, want)
		}
		for _, u := range []string{"http://graph.test/v1.0/chats/19:g@thread.v2/messages?$top=51", "http://graph.test/v1.0/me/chats?$top=51"} {
			if resp, b := do(t, s, "GET", u, auth, nil); resp.StatusCode != 400 || !strings.Contains(string(b), "$top must be at most 50") {
				t.Errorf("GET %s = %d %s; want 400", u, resp.StatusCode, b)
			}
		}
		// A skiptoken the emulator did not hand out is a 400, not a panic (a negative one
		// indexed before the list).
		for _, tok := range []string{"-3", "x", "1e3"} {
			for _, u := range []string{"http://graph.test/v1.0/chats/19:g@thread.v2/messages", "http://graph.test/v1.0/me/chats"} {
				u += "?$skiptoken=" + tok
				if resp, b := do(t, s, "GET", u, auth, nil); resp.StatusCode != 400 || !strings.Contains(string(b), "$skiptoken") {
					t.Errorf("GET %s = %d %s; want 400", u, resp.StatusCode, b)
				}
			}
		}
	})
}

// TestCAEClaimsLessTokenRejected: in CAE mode, once Graph challenged an app or user, a new
// token of a cp1 client requested without the challenge's claims gets the same challenge; one
// requested with them is accepted and ends the challenge. Clients that did not declare cp1 are
// not under CAE, and other users of the app are not challenged.
func TestCAEClaimsLessTokenRejected(t *testing.T) {
	s := &graphtest.Server{CAE: true}
	const cp1 = `{"access_token":{"xms_cc":{"values":["cp1"]}}}`
	const withChallenge = `{"access_token":{"nbf":{"essential":true,"value":"1604106651"},"xms_cc":{"values":["cp1"]}}}`
	rtA := s.IssueRefreshToken("app", "ann", "offline_access")
	rtB := s.IssueRefreshToken("app", "ben", "offline_access")
	token := func(rt, claims string) string {
		t.Helper()
		v := url.Values{"client_id": {"app"}, "grant_type": {"refresh_token"}, "refresh_token": {rt}}
		if claims != "" {
			v.Set("claims", claims)
		}
		resp, m := form(t, s, "contoso", v)
		at, _ := m["access_token"].(string)
		if resp.StatusCode != 200 || at == "" {
			t.Fatalf("token with claims %q = %d %v", claims, resp.StatusCode, m["error"])
		}
		return at
	}
	get := func(tok string) (int, string) {
		t.Helper()
		resp, _ := do(t, s, "GET", "http://graph.test/v1.0/me", map[string]string{"Authorization": "Bearer " + tok}, nil)
		return resp.StatusCode, resp.Header.Get("WWW-Authenticate")
	}
	old := token(rtA, cp1)
	if st, _ := get(old); st != 200 {
		t.Fatalf("before revocation: %d", st)
	}
	s.RevokeTokens()
	st, want := get(old)
	if st != 401 || !strings.Contains(want, `error="insufficient_claims"`) {
		t.Fatalf("revoked token = %d %q; want the claims challenge", st, want)
	}
	plain := token(rtA, cp1)
	for name, tok := range map[string]string{
		"new cp1 token without the challenge's claims": plain,
		"new cp1 token with id_token nbf":              token(rtA, `{"id_token":{"nbf":{"essential":true}},"access_token":{"xms_cc":{"values":["cp1"]}}}`),
	} {
		if st, h := get(tok); st != 401 || h != want {
			t.Errorf("%s = %d %q; want 401 with the same challenge %q", name, st, h, want)
		}
	}
	for name, tok := range map[string]string{
		"new token without claims":  token(rtA, ""),
		"new token with bad claims": token(rtA, `{"access_token":`),
	} {
		if st, h := get(tok); st != 200 {
			t.Errorf("%s (no cp1: not under CAE) = %d %q; want 200", name, st, h)
		}
	}
	if st, h := get(token(rtB, cp1)); st != 200 {
		t.Errorf("a fresh token of another user = %d %q; want 200 (only ann was challenged)", st, h)
	}
	if st, h := get(token(rtA, withChallenge)); st != 200 {
		t.Fatalf("token with the challenge's claims = %d %q; want 200", st, h)
	}
	if st, _ := get(plain); st != 200 {
		t.Errorf("cp1 token without the claims after a token with them was presented = %d; want 200 (challenge over)", st)
	}
	if st, _ := get(old); st != 401 {
		t.Errorf("the revoked token = %d; want 401 still", st)
	}
	if st, _ := get(plain); st != 401 {
		t.Errorf("cp1 token without the claims after the revoked one was challenged again = %d; want 401", st)
	}
}

// TestMailDeltaReportsChanges: delta rounds report updates and @removed deletions as Graph
// does, and changeType=created (kept in the deltaLink) limits them to new mail.
func TestMailDeltaReportsChanges(t *testing.T) {
	s := &graphtest.Server{}
	a := s.DeliverMail("u", "x@example.com", "a", "a")
	b := s.DeliverMail("u", "x@example.com", "b", "b")
	auth := map[string]string{"Authorization": "Bearer " + appToken(t, s)}
	round := func(link string) (ids []string, removed []string, next string) {
		t.Helper()
		resp, body := do(t, s, "GET", link, auth, nil)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s = %d %s", link, resp.StatusCode, body)
		}
		var v struct {
			Value []struct {
				ID      string         `json:"id"`
				Removed map[string]any `json:"@removed"`
			} `json:"value"`
			DeltaLink string `json:"@odata.deltaLink"`
		}
		json.Unmarshal(body, &v)
		for _, it := range v.Value {
			if it.Removed != nil {
				removed = append(removed, it.ID)
			} else {
				ids = append(ids, it.ID)
			}
		}
		return ids, removed, v.DeltaLink
	}
	_, _, all := round("http://graph.test/v1.0/users/u/mailFolders/inbox/messages/delta")
	first, _, created := round("http://graph.test/v1.0/users/u/mailFolders/inbox/messages/delta?changeType=created")
	if len(first) != 2 {
		t.Fatalf("initial round = %v; want both messages", first)
	}
	s.MarkMailRead("u", a)
	s.DeleteMail("u", b)
	c := s.DeliverMail("u", "x@example.com", "c", "c")
	ids, removed, _ := round(all)
	if strings.Join(ids, ",") != a+","+c || strings.Join(removed, ",") != b {
		t.Errorf("delta = items %v removed %v; want items [%s %s] removed [%s]", ids, removed, a, c, b)
	}
	ids, removed, _ = round(created)
	if strings.Join(ids, ",") != c || len(removed) != 0 {
		t.Errorf("changeType=created delta = items %v removed %v; want only %s", ids, removed, c)
	}
}

// TestSubscriptionAnswerFields: POST /subscriptions answers with the clientState given and
// latestSupportedTlsVersion (default v1_2), as Graph's create and renew examples show; an
// unknown TLS version is refused.
func TestSubscriptionAnswerFields(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		endpoint := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, r.URL.Query().Get("validationToken"))
		})
		s := &graphtest.Server{LoginUser: "u", Client: &http.Client{Transport: graphtest.HandlerTransport(endpoint)}}
		auth := map[string]string{"Authorization": "Bearer " + appToken(t, s)}
		create := func(tls string) (int, map[string]any) {
			v := map[string]any{"changeType": "created", "notificationUrl": "https://bot.test/hook", "resource": "users/u/messages",
				"expirationDateTime": time.Now().Add(time.Hour), "clientState": "cs-secret"}
			if tls != "" {
				v["latestSupportedTlsVersion"] = tls
			}
			body, _ := json.Marshal(v)
			resp, b := do(t, s, "POST", "http://graph.test/v1.0/subscriptions", auth, body)
			var m map[string]any
			json.Unmarshal(b, &m)
			return resp.StatusCode, m
		}
		for _, tc := range []struct{ tls, want string }{{"", "v1_2"}, {"v1_3", "v1_3"}, {"v1_2", "v1_2"}} {
			st, m := create(tc.tls)
			if st != 201 || m["clientState"] != "cs-secret" || m["latestSupportedTlsVersion"] != tc.want || m["notificationContentType"] != "application/json" {
				t.Errorf("create(tls %q) = %d %v; want 201 with clientState, latestSupportedTlsVersion %s", tc.tls, st, m, tc.want)
			}
			id, _ := m["id"].(string)
			resp, b := do(t, s, "PATCH", "http://graph.test/v1.0/subscriptions/"+id, auth,
				fmt.Appendf(nil, `{"expirationDateTime":%q}`, time.Now().Add(2*time.Hour).Format(time.RFC3339)))
			var r map[string]any
			json.Unmarshal(b, &r)
			if resp.StatusCode != 200 || r["clientState"] != "cs-secret" || r["latestSupportedTlsVersion"] != tc.want {
				t.Errorf("renew = %d %v; want clientState and latestSupportedTlsVersion kept", resp.StatusCode, r)
			}
		}
		if st, m := create("v9"); st != 400 {
			t.Errorf("create(tls v9) = %d %v; want 400", st, m)
		}
	})
}
