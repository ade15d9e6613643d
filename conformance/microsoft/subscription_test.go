package microsoft

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// documentedSubscription is the answer to POST /subscriptions as "Create subscription"
// publishes it (learn.microsoft.com/graph/api/subscription-post-subscriptions, v1.0, example
// response: HTTP 201 Created), rewritten here from the documented shape.
const documentedSubscription = `{
  "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity",
  "id": "7f105c7d-2dc5-4530-97cd-4e7ae6534c07",
  "resource": "me/mailFolders('Inbox')/messages",
  "applicationId": "24d3b144-21ae-4080-943f-7067b395b913",
  "changeType": "created",
  "clientState": "secretClientValue",
  "notificationUrl": "https://webhook.azurewebsites.net/api/send/myNotifyClient",
  "expirationDateTime": "2016-11-20T18:23:45.9356913Z",
  "creatorId": "8ee44408-0679-472c-bc2a-692812af3437",
  "latestSupportedTlsVersion": "v1_2",
  "notificationContentType": "application/json"
}`

// TestSubscriptionAnswerAsDocumented: graphtest answers POST /subscriptions with 201 and every
// field of the documented answer (issue 11 item 19: clientState and latestSupportedTlsVersion
// were missing), the clientState and TLS version given, and the caller's app id.
func TestSubscriptionAnswerAsDocumented(t *testing.T) {
	e := newEmulator(t)
	// The notification URL answers Graph's validation request, as a subscriber must.
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, r.URL.Query().Get("validationToken"))
	}))
	defer hook.Close()
	e.srv.Client = hook.Client()

	cc := clientcredentials.Config{ClientID: confClientID, ClientSecret: confSecret,
		TokenURL: e.authority(tenant) + "/oauth2/v2.0/token", Scopes: []string{graphDefault}}
	hc := e.ts.Client()
	tok, err := cc.Token(context.WithValue(context.Background(), oauth2.HTTPClient, hc))
	if err != nil {
		t.Fatalf("token: %v", err)
	}
	body, _ := json.Marshal(map[string]any{"changeType": "created", "notificationUrl": hook.URL + "/notify",
		"resource": "chats/getAllMessages", "expirationDateTime": time.Now().Add(30 * time.Minute).UTC().Format(time.RFC3339),
		"clientState": "secretClientValue", "latestSupportedTlsVersion": "v1_2"})
	req, _ := http.NewRequest(http.MethodPost, e.ts.URL+"/v1.0/subscriptions", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /subscriptions = %d %s; want 201 as documented", resp.StatusCode, raw)
	}
	var got, want map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatalf("answer is not JSON: %v: %s", err, raw)
	}
	json.Unmarshal([]byte(documentedSubscription), &want)
	var missing []string
	for k := range want {
		if _, ok := got[k]; !ok {
			missing = append(missing, k)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("the emulator's subscription lacks documented fields %v:\n%s", missing, raw)
	}
	if got["clientState"] != "secretClientValue" || got["latestSupportedTlsVersion"] != "v1_2" ||
		got["notificationContentType"] != "application/json" || got["changeType"] != "created" {
		t.Errorf("answer %s does not echo the request as documented", raw)
	}
	if got["applicationId"] != confClientID {
		t.Errorf("applicationId = %v; want the calling app's client id %s", got["applicationId"], confClientID)
	}
	if s, _ := got["expirationDateTime"].(string); s == "" {
		t.Errorf("expirationDateTime = %v", got["expirationDateTime"])
	} else if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
		t.Errorf("expirationDateTime %q: %v", s, err)
	}
}
