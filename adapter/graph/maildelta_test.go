package graph

import (
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

func eventTexts(evs []adapter.Event) string {
	var texts []string
	for _, e := range evs {
		texts = append(texts, e.Text)
	}
	return strings.Join(texts, ",")
}

// TestPollMailIgnoresUpdatesAndDeletions: Graph's message delta reports updates (an old mail
// marked read) and deletions (@removed) as well as new mail; only new mail is a message event.
func TestPollMailIgnoresUpdatesAndDeletions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ae := newAdapter(t, func(o *Options) { o.NotificationURL = ""; o.Subscribe = []string{SubscribeMail} })
		old := ae.srv.DeliverMail(botUser, "carol@example.com", "old", "history")
		gone := ae.srv.DeliverMail(botUser, "carol@example.com", "old2", "history2")
		ctx := t.Context()
		if evs, err := ae.a.Poll(ctx); err != nil || len(evs) != 0 {
			t.Fatalf("baseline Poll() = %v, %v", evs, err)
		}
		time.Sleep(time.Hour)
		if !ae.srv.MarkMailRead(botUser, old) || !ae.srv.DeleteMail(botUser, gone) {
			t.Fatal("MarkMailRead/DeleteMail found no message")
		}
		fresh := ae.srv.DeliverMail(botUser, "carol@example.com", "new", "fresh")
		evs, err := ae.a.Poll(ctx)
		if err != nil || eventTexts(evs) != "fresh" {
			t.Fatalf("Poll() = %q, %v; want only the new mail", eventTexts(evs), err)
		}
		// Marking the new one read later is not a new message either.
		ae.srv.MarkMailRead(botUser, fresh)
		if evs, err := ae.a.Poll(ctx); err != nil || len(evs) != 0 {
			t.Errorf("Poll() after marking read = %q, %v; want nothing", eventTexts(evs), err)
		}
	})
}

// TestMailResyncIgnoresUpdates: the delta resync after a "missed" lifecycle event returns
// only mail that arrived, not mail marked read or deleted meanwhile.
func TestMailResyncIgnoresUpdates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ae := newAdapter(t, func(o *Options) { o.Subscribe = []string{SubscribeMail} })
		old := ae.srv.DeliverMail(botUser, "carol@example.com", "old", "history")
		gone := ae.srv.DeliverMail(botUser, "carol@example.com", "old2", "history2")
		if err := ae.a.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		subs := ae.srv.Subscriptions()
		if len(subs) != 1 {
			t.Fatalf("subscriptions = %+v", subs)
		}
		time.Sleep(time.Hour)
		ae.hook.setDown(true)
		ae.srv.MarkMailRead(botUser, old)
		ae.srv.DeleteMail(botUser, gone)
		ae.srv.DeliverMail(botUser, "dave@example.com", "lost", "while down")
		ae.hook.setDown(false)
		ae.hook.take()
		for _, ev := range []string{"missed", "subscriptionRemoved"} {
			if st, err := ae.srv.Lifecycle(subs[0].ID, ev); err != nil || st != 202 {
				t.Fatalf("Lifecycle(%s) = %d, %v", ev, st, err)
			}
			evs := ae.hook.take()
			want := "while down"
			if ev != "missed" {
				want = "" // the cursor moved past it at the "missed" resync
			}
			if eventTexts(evs) != want {
				t.Errorf("%s resync events = %q; want %q", ev, eventTexts(evs), want)
			}
			ae.srv.MarkMailRead(botUser, old)
		}
	})
}

// TestMailChange: the delta item classification that mailEvents relies on.
func TestMailChange(t *testing.T) {
	since := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		raw  string
		want string
	}{
		{`{"id":"A","@removed":{"reason":"deleted"}}`, changeRemoved},
		{`{"id":"A","receivedDateTime":"2026-12-01T11:00:00Z","isRead":true}`, changeUpdated},
		{`{"id":"A","createdDateTime":"2026-12-01T11:00:00Z"}`, changeUpdated},
		{`{"id":"A","receivedDateTime":"2026-12-01T12:00:01Z"}`, changeCreated},
		{`{"id":"A"}`, changeCreated},
		{`[1]`, changeUpdated},
	} {
		if got := mailChange([]byte(tc.raw), since); got != tc.want {
			t.Errorf("mailChange(%s) = %s; want %s", tc.raw, got, tc.want)
		}
	}
	if got := mailChange([]byte(`{"id":"A","receivedDateTime":"2020-01-01T00:00:00Z"}`), time.Time{}); got != changeCreated {
		t.Errorf("without since: %s; want created", got)
	}
}
