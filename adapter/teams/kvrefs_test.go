package teams

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

// mapKV is a KV in a map that counts writes.
type mapKV struct {
	mu     sync.Mutex
	m      map[string][]byte
	writes int
}

func (k *mapKV) Get(_ context.Context, key string) ([]byte, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	v, ok := k.m[key]
	return v, ok, nil
}

func (k *mapKV) Set(_ context.Context, key string, v []byte) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil {
		k.m = map[string][]byte{}
	}
	k.m[key] = v
	k.writes++
	return nil
}

func (k *mapKV) Delete(_ context.Context, key string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.m, key)
	return nil
}

// TestKVReferences: references round-trip through a KV under the prefix, users are found by
// Entra object id, an unchanged reference is not rewritten, and a deleted one is gone.
func TestKVReferences(t *testing.T) {
	ctx := t.Context()
	kv := &mapKV{}
	s := &KVReferences{KV: kv, Prefix: "p:"}
	now := time.Now().UTC().Truncate(time.Second)
	ref := Reference{ConversationID: "a:1", ConversationType: "personal", ServiceURL: "https://smba.trafficmanager.net/amer/t/",
		TenantID: "t", BotID: "28:app", UserID: "29:u", Updated: now}
	if err := s.PutConversation(ctx, ref); err != nil {
		t.Fatal(err)
	}
	if _, ok := kv.m["p:conv/a:1"]; !ok {
		t.Fatalf("keys %v: want p:conv/a:1", kv.m)
	}
	ref2 := ref
	ref2.Updated = now.Add(time.Minute)
	s.PutConversation(ctx, ref2)
	if kv.writes != 1 {
		t.Errorf("an unchanged reference was written again: %d writes", kv.writes)
	}
	ref3 := ref2
	ref3.ServiceURL = "https://smba.trafficmanager.net/emea/t/"
	s.PutConversation(ctx, ref3)
	got, ok, err := s.Conversation(ctx, "a:1")
	if err != nil || !ok || got.ServiceURL != ref3.ServiceURL {
		t.Errorf("Conversation = %+v %v %v; want the changed serviceUrl", got, ok, err)
	}
	u := UserRef{ID: "29:u", AADObjectID: "aad-1", Name: "Megan", TenantID: "t", ServiceURL: ref.ServiceURL, Conversation: "a:1"}
	if err := s.PutUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"29:u", "aad-1"} {
		if got, ok, err := s.User(ctx, id); err != nil || !ok || got != u {
			t.Errorf("User(%s) = %+v %v %v; want %+v", id, got, ok, err, u)
		}
	}
	if _, ok, _ := s.User(ctx, "aad-2"); ok {
		t.Error("an unknown user was found")
	}
	if err := s.DeleteConversation(ctx, "a:1"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Conversation(ctx, "a:1"); ok {
		t.Error("a deleted conversation was found")
	}
}

// TestManagedIdentity: a UserAssignedMSI bot gets its connector token from the identity
// endpoint (App Service protocol with the header, IMDS without), for the botframework
// resource and its client id; a refused identity is a credentials error.
func TestManagedIdentity(t *testing.T) {
	var mu sync.Mutex
	var seen []*http.Request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r)
		mu.Unlock()
		if r.URL.Query().Get("client_id") != "app-1" {
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"error":"invalid_request","error_description":"Identity not found"}`))
			return
		}
		w.Write([]byte(`{"access_token":"msi-token","expires_on":"` + strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10) + `","resource":"https://api.botframework.com","token_type":"Bearer"}`))
	}))
	defer srv.Close()

	a, err := New(Options{AppID: "app-1", TenantID: "t", AppType: AppUserAssignedMSI, MSIEndpoint: srv.URL + "/msi/token", MSIHeader: "hdr-secret"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	tok, err := a.Tokens().Token(t.Context())
	if err != nil || tok.Value != "msi-token" || time.Until(tok.ExpiresAt) < 50*time.Minute {
		t.Fatalf("Token = %+v, %v; want msi-token valid for an hour", tok, err)
	}
	r := seen[0]
	if r.Header.Get("X-IDENTITY-HEADER") != "hdr-secret" || r.URL.Query().Get("resource") != ConnectorResource || r.URL.Path != "/msi/token" {
		t.Errorf("App Service request %s %v", r.URL, r.Header)
	}

	imds := &ManagedIdentity{ClientID: "app-1", Endpoint: srv.URL}
	if _, err := imds.Token(t.Context()); err != nil {
		t.Fatal(err)
	}
	if r := seen[1]; r.Header.Get("Metadata") != "true" || r.URL.Query().Get("api-version") != "2018-02-01" {
		t.Errorf("IMDS request %s %v", r.URL, r.Header)
	}
	bad := &ManagedIdentity{ClientID: "other", Endpoint: srv.URL}
	if _, err := bad.Token(t.Context()); !errors.Is(err, tokenmgr.ErrCredentials) {
		t.Errorf("unknown identity: %v; want ErrCredentials", err)
	}
	if _, err := New(Options{AppID: "app-1", AppType: AppUserAssignedMSI}); err == nil {
		t.Error("a managed identity bot without tenant_id was accepted")
	}
}
