package host

import (
	"context"
	"net/http/httptest"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/adapter/wecom/aibot/aibottest"
	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
)

// TestFleetAIBotOneConnection is the fleet proof: three hosts serve one AI bot on
// one Redis. There is one connection at any time; SIGKILL of the plugin holding it brings a
// new connection within 10 s, with no kick loop; every message that reached a live
// connection is in the event log exactly once; a reply accepted by any host reaches the
// socket.
func TestFleetAIBotOneConnection(t *testing.T) {
	rs := redistest.Start(t)
	emu := &aibottest.Server{}
	srv := httptest.NewServer(emu)
	defer srv.Close()
	url := "redis://" + rs.Addr() + "/0"
	var hosts []*env
	for i := 0; i < 3; i++ {
		hosts = append(hosts, aibotHostAt(t, emu, aibottest.WSURL(srv.URL), url, false))
	}
	waitUntil := func(what string, d time.Duration, cond func() bool) time.Duration {
		t.Helper()
		start := time.Now()
		for !cond() {
			if time.Since(start) > d {
				t.Fatalf("no %s within %s", what, d)
			}
			time.Sleep(10 * time.Millisecond)
		}
		return time.Since(start)
	}
	waitUntil("connection", 20*time.Second, func() bool { return emu.Connections() == 1 })
	events := hosts[0].subscribe("")
	p1, _ := emu.PushText(aibottest.Conv{User: "u"}, "before")
	if ev := next(t, events).ev; ev.Text != "before" {
		t.Fatalf("event = %+v", ev)
	}
	// Find the plugin holding the lease (its owner names the process) and kill it.
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer rdb.Close()
	keys, _ := rdb.Keys(context.Background(), "*aibot:BOT1:lease").Result()
	if len(keys) != 1 {
		t.Fatalf("lease keys %q; want one", keys)
	}
	owner, err := rdb.Get(context.Background(), keys[0]).Result()
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimPrefix(strings.SplitN(owner, "-", 2)[0], "pid"))
	holder := -1
	for i, h := range hosts {
		if h.h.plugin.Pid() == pid {
			holder = i
		}
	}
	if holder < 0 {
		t.Fatalf("lease owner %q is none of the plugins", owner)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	window := waitUntil("new connection", 10*time.Second, func() bool { return emu.Subscribes() == 2 && emu.Connections() == 1 })
	t.Logf("no connection for ≈%s after SIGKILL of the holder (messages WeCom pushes then are lost upstream)", window.Round(100*time.Millisecond))
	p2, err := emu.PushText(aibottest.Conv{User: "u"}, "after")
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(t, events).ev; ev.Text != "after" {
		t.Fatalf("event after the takeover = %+v", ev)
	}
	// A reply accepted by a host that does not hold the connection reaches the socket.
	other := (holder + 1) % 3
	body := map[string]any{"to": map[string]string{"user": "u"}, "reply_to": "wecom_aibot:" + p2.MsgID, "markdown": "answered"}
	if status, _, b := hosts[other].do("POST", "/v1/bots/hr/messages", testAPIKey, body); status != 200 {
		t.Fatalf("reply via host %d = %d %s", other, status, b)
	}
	time.Sleep(300 * time.Millisecond) // a negative check: no extra event, no second connection
	select {
	case ev := <-events:
		t.Errorf("extra event %+v", ev.ev)
	default:
	}
	if emu.Subscribes() != 2 || emu.MaxConnections() != 1 {
		t.Errorf("%d subscribes, %d connections at once; want 2 and 1 (no kick loop)", emu.Subscribes(), emu.MaxConnections())
	}
	sent := emu.Sent()
	if len(sent) != 1 || sent[0].ReqID != p2.ReqID || sent[0].Content != "answered" {
		t.Errorf("emulator got %+v", sent)
	}
	_ = p1
}
