package wecom_test

import (
	"encoding/json"
	"testing"
	"testing/synctest"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom"
)

// TestDuplicateCheck: with DuplicateCheck set, a retry of a send WeCom already accepted (a
// host that crashed before recording it) is accepted again but shown once; after the
// interval, or without the option, the same message is shown again.
func TestDuplicateCheck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, srv := setup(t, wecom.Options{DuplicateCheck: 30 * time.Minute})
		msg := text(adapter.Target{User: "zhangsan"}, "pay day")
		first, err := c.Send(t.Context(), msg)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		if err := json.Unmarshal(srv.Sent()[0].Body, &body); err != nil {
			t.Fatal(err)
		}
		if body["enable_duplicate_check"] != 1.0 || body["duplicate_check_interval"] != 1800.0 {
			t.Errorf("message/send body %v; want enable_duplicate_check 1, duplicate_check_interval 1800", body)
		}
		time.Sleep(29 * time.Minute)
		retry, err := c.Send(t.Context(), msg) // the retry after a crash
		if err != nil {
			t.Fatal(err)
		}
		if retry.ID != first.ID {
			t.Errorf("retry id %q; want the first message's %q", retry.ID, first.ID)
		}
		sent := srv.Sent()
		if len(sent) != 2 || sent[0].Duplicate || !sent[1].Duplicate || len(sent[1].Delivered) != 0 {
			t.Fatalf("emulator saw %+v; want the message shown once and the retry accepted as a duplicate", sent)
		}
		time.Sleep(time.Minute) // past the interval: shown again
		if _, err := c.Send(t.Context(), msg); err != nil {
			t.Fatal(err)
		}
		if s := srv.Sent()[2]; s.Duplicate || len(s.Delivered) != 1 {
			t.Errorf("after the interval: %+v; want shown", s)
		}
	})
}

func TestDuplicateCheckOff(t *testing.T) {
	c, srv := setup(t, wecom.Options{})
	msg := text(adapter.Target{User: "zhangsan"}, "pay day")
	for range 2 {
		if _, err := c.Send(t.Context(), msg); err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range srv.Sent() {
		if s.Duplicate || len(s.Delivered) != 1 {
			t.Errorf("send %d without the option: %+v; want shown", i, s)
		}
		if json.Valid(s.Body) && string(s.Body) != "" && containsKey(s.Body, "enable_duplicate_check") {
			t.Errorf("send %d body %s sets enable_duplicate_check", i, s.Body)
		}
	}
	if _, err := wecom.New(testConfig(), wecom.Options{DuplicateCheck: 5 * time.Hour}); err == nil {
		t.Error("New(DuplicateCheck 5h) = nil error; want over WeCom's 4 h")
	}
}

func containsKey(data []byte, key string) bool {
	var m map[string]any
	_ = json.Unmarshal(data, &m)
	_, ok := m[key]
	return ok
}
