package teams

import (
	"encoding/json"
	"errors"
	"net/http"
	"testing"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
)

func TestParseAPIError(t *testing.T) {
	for _, tc := range []struct {
		name      string
		status    int
		header    http.Header
		body      string
		code      string
		kind      adapter.Kind
		forget    bool
		temporary bool
	}{
		{"roster", 403, nil, `{"error":{"code":"BotNotInConversationRoster","message":"The bot is not part of the conversation roster."}}`, "BotNotInConversationRoster", adapter.KindInvalidRecipient, true, false},
		{"blocked (209)", 403, nil, `{"errorCode":209,"message":"{\"message\":\"User blocked the conversation with the bot.\",\"errorCode\":209,\"subCode\":\"MessageWritesBlocked\"}"}`, "MessageWritesBlocked", adapter.KindInvalidRecipient, true, false},
		{"not installed", 403, nil, `{"error":{"code":"ForbiddenOperationException","message":"Bot isn't installed in user's personal scope"}}`, "ForbiddenOperationException", adapter.KindInvalidRecipient, false, false},
		{"front door 401", 401, nil, `{"message":"Authorization has been denied for this request."}`, "Unauthorized", adapter.KindUnauthorized, false, false},
		{"throttled", 429, http.Header{"Retry-After": {"3"}}, `{"error":{"code":"Throttled","message":"Too many requests."}}`, "Throttled", adapter.KindRateLimited, false, true},
		{"precondition", 412, nil, `{"error":{"code":"PreconditionFailed","message":"Precondition failed, please try again."}}`, "PreconditionFailed", adapter.KindUnavailable, false, false},
		{"too big", 413, nil, `{"error":{"code":"MessageSizeTooBig","message":"Message size too large."}}`, "MessageSizeTooBig", adapter.KindTooLarge, false, false},
		{"gone", 404, nil, `{"error":{"code":"ConversationNotFound","message":"Conversation not found."}}`, "ConversationNotFound", adapter.KindNotFound, true, false},
		{"bad gateway, html", 502, nil, `<html>Bad Gateway</html>`, "BadGateway", adapter.KindUnavailable, false, true},
		{"empty", 500, nil, ``, "InternalServerError", adapter.KindUnavailable, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.header
			if h == nil {
				h = http.Header{}
			}
			e := parseAPIError(&http.Response{StatusCode: tc.status, Header: h}, []byte(tc.body))
			if e.Code != tc.code || e.Kind() != tc.kind || e.forgetReference() != tc.forget || errors.Is(e, tokenmgr.ErrTemporary) != tc.temporary {
				t.Errorf("parseAPIError = code %q kind %s forget %v temporary %v; want %q %s %v %v",
					e.Code, e.Kind(), e.forgetReference(), errors.Is(e, tokenmgr.ErrTemporary), tc.code, tc.kind, tc.forget, tc.temporary)
			}
			if tc.status == 401 && !errors.Is(e, tokenmgr.ErrInvalid) {
				t.Error("a 401 does not match tokenmgr.ErrInvalid")
			}
			ae := toAdapterError(e, "send")
			if adapter.KindOf(ae) != tc.kind || adapter.Code(ae) != tc.code {
				t.Errorf("toAdapterError = %v; want kind %s code %s", ae, tc.kind, tc.code)
			}
		})
	}
	if d := parseRetryAfter("3"); d.Seconds() != 3 {
		t.Errorf("Retry-After 3 = %s", d)
	}
}

// FuzzActivity feeds arbitrary activities to the conversion and reference code: no panic.
func FuzzActivity(f *testing.F) {
	f.Add([]byte(`{"type":"message","id":"1","conversation":{"id":"a:1"},"from":{"id":"29:x","aadObjectId":"g"},"text":"<at>Bot</at> hi","entities":[{"type":"mention","mentioned":{"id":"28:app"},"text":"<at>Bot</at>"}]}`))
	f.Add([]byte(`{"type":"installationUpdate","action":"remove","id":"f:1","conversation":{"id":"19:x@thread.tacv2;messageid=1","conversationType":"channel"}}`))
	f.Add([]byte(`{"type":"conversationUpdate","id":"f:2","conversation":{"id":"a:1"},"membersAdded":[{"id":"28:app"},{"id":"29:u"}]}`))
	f.Add([]byte(`{"type":"messageUpdate","id":"5","conversation":{"id":"a:1"},"attachments":[{"contentType":"application/vnd.microsoft.teams.file.download.info","content":{"downloadUrl":"x"}}]}`))
	a, err := New(Options{AppID: "app", AppPassword: "p", TenantID: "t"})
	if err != nil {
		f.Fatal(err)
	}
	defer a.Close()
	f.Fuzz(func(t *testing.T, body []byte) {
		var act Activity
		if jsonUnmarshal(body, &act) != nil || act.Conversation == nil || act.Conversation.ID == "" {
			return
		}
		a.remember(t.Context(), &act)
		a.toEvent(&act, body)
	})
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
