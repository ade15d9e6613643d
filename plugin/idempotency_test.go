package plugin

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/wecomtest"
	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
)

// launchWeCom launches a real plugin process serving bot "hr" as a WeCom adapter against
// api, with store.
func launchWeCom(t *testing.T, api string, store StoreConfig) *Plugin {
	t.Helper()
	opts := testLaunchOptions(nil)
	opts.Env = []string{roleEnv + "=plugin-wecom", wecomEnv + "=" + api}
	opts.Bots = []BotConfig{{Name: "hr", Platform: "wecom", Config: []byte(`{}`)}}
	opts.Store = store
	p, err := Launch(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func text(s string) adapter.Message {
	return adapter.Message{To: adapter.Target{User: "u1"}, Text: s}
}

// testIdempotentSends sends one message with one key 10 times at once through the bots
// (round robin), then another message with that key, and checks WeCom saw one send.
func testIdempotentSends(t *testing.T, srv *wecomtest.Server, bots []adapter.Adapter) {
	ctx := WithIdempotencyKey(t.Context(), "order-42")
	var wg sync.WaitGroup
	receipts := make([]adapter.Receipt, 10)
	errs := make([]error, 10)
	for i := range 10 {
		wg.Go(func() { receipts[i], errs[i] = bots[i%len(bots)].Send(ctx, text("hello once")) })
	}
	wg.Wait()
	for i := range 10 {
		if errs[i] != nil {
			t.Fatalf("send %d: %v", i, errs[i])
		}
		if receipts[i].ID == "" || receipts[i].ID != receipts[0].ID {
			t.Errorf("receipt %d = %+v, want %+v (the first answer)", i, receipts[i], receipts[0])
		}
	}
	if n := srv.Calls("message/send"); n != 1 {
		t.Fatalf("WeCom got %d message/send calls for one key, want 1", n)
	}
	if sent := srv.Sent(); len(sent) != 1 || sent[0].Content != "hello once" {
		t.Fatalf("WeCom recorded %+v, want one message", sent)
	}

	for _, b := range bots {
		_, err := b.Send(ctx, text("another message"))
		if !errors.Is(err, ErrIdempotencyConflict) || adapter.Code(err) != CodeIdempotencyConflict || adapter.KindOf(err) != adapter.KindInvalidRequest {
			t.Fatalf("same key, another message: err = %v (code %q), want ErrIdempotencyConflict", err, adapter.Code(err))
		}
		if errors.Is(err, ErrOutcomeUnknown) {
			t.Errorf("a conflict must not claim the outcome is unknown: %v", err)
		}
	}
	if n := srv.Calls("message/send"); n != 1 {
		t.Fatalf("WeCom got %d message/send calls after the conflict, want 1", n)
	}

	// without a key nothing is deduplicated (the host's sends: it deduplicates before)
	for range 2 {
		if _, err := bots[0].Send(t.Context(), text("hello once")); err != nil {
			t.Fatal(err)
		}
	}
	if n := srv.Calls("message/send"); n != 3 {
		t.Fatalf("WeCom got %d message/send calls, want 3 after two sends without a key", n)
	}
}

// TestProcessIdempotentSendMemory: a plugin without Redis keeps the keys in memory.
func TestProcessIdempotentSendMemory(t *testing.T) {
	srv := &wecomtest.Server{IgnoreDuplicateCheck: true}
	api := httptest.NewServer(srv)
	defer api.Close()
	p := launchWeCom(t, api.URL, StoreConfig{})
	testIdempotentSends(t, srv, []adapter.Adapter{p.Bot("hr")})
}

// TestProcessIdempotentSendRedis: two plugin processes on one Redis share the keys.
func TestProcessIdempotentSendRedis(t *testing.T) {
	srv := &wecomtest.Server{IgnoreDuplicateCheck: true}
	api := httptest.NewServer(srv)
	defer api.Close()
	rs := redistest.Start(t)
	store := StoreConfig{RedisURL: "redis://" + rs.Addr() + "/0", KeyPrefix: "idemtest"}
	p1, p2 := launchWeCom(t, api.URL, store), launchWeCom(t, api.URL, store)
	testIdempotentSends(t, srv, []adapter.Adapter{p1.Bot("hr"), p2.Bot("hr")})
}

// TestIdempotencyKeyContext: the key travels in the context; "" leaves it unset.
func TestIdempotencyKeyContext(t *testing.T) {
	ctx := context.Background()
	if IdempotencyKey(WithIdempotencyKey(ctx, "")) != "" || IdempotencyKey(WithIdempotencyKey(ctx, "k")) != "k" {
		t.Fatal("WithIdempotencyKey/IdempotencyKey do not round-trip")
	}
}

// TestProcessIdempotentSendCrashed: a plugin killed while WeCom holds its send leaves the
// key's outcome unknown; a repeat with the key (to the restarted plugin, on the same Redis)
// is refused with ErrOutcomeUnknown and never sends again.
func TestProcessIdempotentSendCrashed(t *testing.T) {
	srv := &wecomtest.Server{IgnoreDuplicateCheck: true}
	inSend := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/message/send") {
			first := false
			once.Do(func() { first = true })
			if first {
				close(inSend)
				<-release // the first send hangs until the test ends
				return
			}
		}
		srv.ServeHTTP(w, r)
	}))
	defer api.Close()
	defer close(release)
	rs := redistest.Start(t)
	p := launchWeCom(t, api.URL, StoreConfig{RedisURL: "redis://" + rs.Addr() + "/0"})
	ctx := WithIdempotencyKey(t.Context(), "crash-1")
	first := make(chan error, 1)
	go func() {
		_, err := p.Bot("hr").Send(ctx, text("maybe sent"))
		first <- err
	}()
	<-inSend
	pid := p.Pid()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := <-first; err == nil {
		t.Fatal("the send of a killed plugin succeeded")
	}
	var err error
	eventually(t, 30*time.Second, "the restarted plugin answers", func() bool {
		_, err = p.Bot("hr").Send(ctx, text("maybe sent"))
		return adapter.KindOf(err) != adapter.KindUnavailable
	})
	if !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, ErrIdempotencyConflict) || adapter.Code(err) != CodeOutcomeUnknown {
		t.Fatalf("repeat after a crash: err = %v (code %q), want ErrOutcomeUnknown", err, adapter.Code(err))
	}
	if p.Pid() == pid {
		t.Fatal("the plugin was not replaced")
	}
	if n := srv.Calls("message/send"); n != 0 {
		t.Fatalf("WeCom's message/send ran %d times after the crash, want 0 (never sent again)", n)
	}
}
