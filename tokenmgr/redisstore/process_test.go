package redisstore_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/tokenmgr"
	"github.com/seed-a64d9e1f/chatwire/tokenmgr/redisstore"
)

// Multi-process tests re-exec this test binary with childEnv set; the child runs a Manager on
// a redisstore.Store and takes commands on stdin, one per line, answering one line each:
//
//	token              → ok <value> <gen>
//	wait-gen <g>       → ok <value> <gen> once the Manager holds generation g or later
//	invalidate <value> → ok
//	dropped <value>    → ok <unix ns> when the Manager dropped value after an invalidation
//	status             → ok <gen> <fetches>
//
// Errors are answered "err <message>". The child fetches from the parent's upstream over HTTP.
const (
	childEnv    = "REDISSTORE_TEST_CHILD" // the child's id
	childRedis  = "REDISSTORE_TEST_REDIS"
	childURL    = "REDISSTORE_TEST_UPSTREAM"
	childLockMS = "REDISSTORE_TEST_LOCK_MS"
	childKey    = "wecom/corp/1000002"
)

// quietLogger drops go-redis's own log lines ("failed to dial" while redis-server is killed
// on purpose); the Store's logging goes through Options.Logger.
type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

func TestMain(m *testing.M) {
	redis.SetLogger(quietLogger{})
	if id := os.Getenv(childEnv); id != "" {
		if err := runChild(id, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runChild(id string, in io.Reader, out io.Writer) error {
	lockMS, _ := strconv.Atoi(os.Getenv(childLockMS))
	rc := redis.NewClient(&redis.Options{Addr: os.Getenv(childRedis)})
	defer rc.Close()
	st, err := redisstore.New(rc, redisstore.Options{LockTTL: time.Duration(lockMS) * time.Millisecond, PollInterval: 50 * time.Millisecond})
	if err != nil {
		return err
	}
	defer st.Close()
	upstream := os.Getenv(childURL)
	src := tokenmgr.SourceFunc(func(ctx context.Context) (tokenmgr.Token, error) {
		req, err := http.NewRequestWithContext(ctx, "GET", upstream+"/token?who="+id, nil)
		if err != nil {
			return tokenmgr.Token{}, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return tokenmgr.Token{}, fmt.Errorf("%w: %v", tokenmgr.ErrTemporary, err)
		}
		defer resp.Body.Close()
		var body struct {
			Token string `json:"token"`
			MS    int64  `json:"expires_in_ms"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			return tokenmgr.Token{}, fmt.Errorf("%w: %v", tokenmgr.ErrTemporary, err)
		}
		return tokenmgr.Token{Value: body.Token, ExpiresAt: time.Now().Add(time.Duration(body.MS) * time.Millisecond)}, nil
	})
	var (
		mu      sync.Mutex
		dropped = map[string]time.Time{} // fingerprint → when dropped
	)
	m := tokenmgr.New(childKey, src, tokenmgr.Options{Store: st, ExpirySkew: testSkew, OnEvent: func(ev tokenmgr.Event) {
		if ev.Kind == tokenmgr.EventInvalidate {
			mu.Lock()
			if _, ok := dropped[ev.Fingerprint]; !ok {
				dropped[ev.Fingerprint] = time.Now()
			}
			mu.Unlock()
		}
	}})
	defer m.Close()

	fmt.Fprintln(out, "ready")
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(sc.Text(), " ")
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		var reply string
		switch cmd {
		case "token":
			tok, err := m.Token(ctx)
			if err != nil {
				reply = "err " + err.Error()
			} else {
				reply = fmt.Sprintf("ok %s %d", tok.Value, m.Status().Generation)
			}
		case "wait-gen":
			g, _ := strconv.ParseUint(arg, 10, 64)
			for m.Status().Generation < g && ctx.Err() == nil {
				time.Sleep(2 * time.Millisecond)
			}
			tok, err := m.Token(ctx)
			if err != nil {
				reply = "err " + err.Error()
			} else {
				reply = fmt.Sprintf("ok %s %d", tok.Value, m.Status().Generation)
			}
		case "invalidate":
			m.Invalidate(arg)
			reply = "ok"
		case "dropped":
			fp := tokenmgr.Fingerprint(arg)
			reply = "err timeout waiting for the invalidation"
			for ctx.Err() == nil {
				mu.Lock()
				at, ok := dropped[fp]
				mu.Unlock()
				if ok {
					reply = fmt.Sprintf("ok %d", at.UnixNano())
					break
				}
				time.Sleep(time.Millisecond)
			}
		case "status":
			s := m.Status()
			reply = fmt.Sprintf("ok %d %d", s.Generation, s.Fetches)
		default:
			reply = "err unknown command " + cmd
		}
		cancel()
		fmt.Fprintln(out, reply)
	}
	return sc.Err()
}

// upstream is the token endpoint the children call. It counts fetches and records who made
// them; with block set, the first fetch blocks until its client goes away.
type upstream struct {
	lifetime time.Duration
	block    bool
	started  chan string // receives the id of the blocked fetcher

	mu  sync.Mutex
	who []string // ids of the children that fetched, in order
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	who := r.URL.Query().Get("who")
	u.mu.Lock()
	u.who = append(u.who, who)
	n := len(u.who)
	u.mu.Unlock()
	if u.block && n == 1 {
		u.started <- who
		<-r.Context().Done() // the fetcher was killed
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"token":"tok-%d","expires_in_ms":%d}`, n, u.lifetime.Milliseconds())
}

func (u *upstream) fetches() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.who...)
}

type child struct {
	id    string
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string
}

// startChildren starts n children sharing Redis at addr and the upstream at url, and waits
// until each is ready. They are killed at cleanup.
func startChildren(t *testing.T, n int, addr, url string, lock time.Duration) []*child {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cs := make([]*child, n)
	for i := range cs {
		c := &child{id: strconv.Itoa(i), lines: make(chan string, 16)}
		c.cmd = exec.Command(exe, "-test.run=^$")
		c.cmd.Env = append(os.Environ(), childEnv+"="+c.id, childRedis+"="+addr, childURL+"="+url,
			childLockMS+"="+strconv.FormatInt(lock.Milliseconds(), 10))
		c.cmd.Stderr = os.Stderr
		if c.in, err = c.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		stdout, err := c.cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := c.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				c.lines <- sc.Text()
			}
			close(c.lines)
		}()
		t.Cleanup(func() {
			_ = c.cmd.Process.Kill()
			_ = c.cmd.Wait()
		})
		cs[i] = c
	}
	for _, c := range cs {
		if l := c.read(t); l != "ready" {
			t.Fatalf("child %s: first line %q; want ready", c.id, l)
		}
	}
	return cs
}

func (c *child) read(t *testing.T) string {
	t.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok {
			t.Fatalf("child %s exited", c.id)
		}
		return l
	case <-time.After(30 * time.Second):
		t.Fatalf("child %s: no answer within 30s", c.id)
	}
	return ""
}

func (c *child) send(t *testing.T, cmd string) {
	t.Helper()
	if _, err := fmt.Fprintln(c.in, cmd); err != nil {
		t.Fatalf("child %s: send %q: %v", c.id, cmd, err)
	}
}

// all sends cmd to every child at once and returns their answers, failing on an error answer.
func all(t *testing.T, cs []*child, cmd string) [][]string {
	t.Helper()
	for _, c := range cs {
		c.send(t, cmd)
	}
	out := make([][]string, len(cs))
	for i, c := range cs {
		f := strings.Fields(c.read(t))
		if len(f) == 0 || f[0] != "ok" {
			t.Fatalf("child %s: %s → %q", c.id, cmd, strings.Join(f, " "))
		}
		out[i] = f[1:]
	}
	return out
}

// sameToken checks that every answer "<value> <gen>" names the same token and gen, and
// returns them.
func sameToken(t *testing.T, what string, answers [][]string) (string, string) {
	t.Helper()
	v, g := answers[0][0], answers[0][1]
	for i, a := range answers {
		if a[0] != v || a[1] != g {
			t.Fatalf("%s: child %d holds %s gen %s; child 0 holds %s gen %s", what, i, a[0], a[1], v, g)
		}
	}
	return v, g
}

// TestProcessesShareFetches runs 8 processes on one Redis: a cold start, two refresh-ahead
// cycles and an invalidation each make exactly one upstream fetch, every process gets the same
// token, and an invalidation in one process reaches all others within one pub/sub delivery.
func TestProcessesShareFetches(t *testing.T) {
	srv := startRedis(t)
	up := &upstream{lifetime: 1500 * time.Millisecond}
	hs := httptest.NewServer(up)
	t.Cleanup(hs.Close)
	cs := startChildren(t, 8, srv.Addr(), hs.URL, 2*time.Second)

	// Cold start: 8 processes ask at once.
	v, g := sameToken(t, "cold start", all(t, cs, "token"))
	if n := len(up.fetches()); n != 1 || v != "tok-1" || g != "1" {
		t.Fatalf("cold start of 8 processes: %d upstream fetches, token %s gen %s; want 1 fetch, tok-1 gen 1", n, v, g)
	}

	// Two refresh-ahead cycles: every process reaches its (jittered) refresh point.
	for gen := 2; gen <= 3; gen++ {
		v, g = sameToken(t, fmt.Sprintf("refresh %d", gen), all(t, cs, fmt.Sprintf("wait-gen %d", gen)))
		if n := len(up.fetches()); n != gen || v != fmt.Sprintf("tok-%d", gen) || g != strconv.Itoa(gen) {
			t.Fatalf("refresh cycle to gen %d: %d upstream fetches in all, token %s gen %s; want %d fetches, tok-%d gen %d",
				gen, n, v, g, gen, gen, gen)
		}
	}
	t.Logf("8 processes: cold start and 2 refresh-ahead cycles made %d upstream fetches (%v)", len(up.fetches()), up.fetches())

	// Invalidation in child 0 reaches children 1..7.
	start := time.Now()
	cs[0].send(t, "invalidate "+v)
	if l := cs[0].read(t); l != "ok" {
		t.Fatalf("invalidate: %q", l)
	}
	var worst time.Duration
	for _, a := range all(t, cs[1:], "dropped "+v) {
		ns, _ := strconv.ParseInt(a[0], 10, 64)
		worst = max(worst, time.Unix(0, ns).Sub(start))
	}
	t.Logf("invalidation in 1 process dropped the token in the 7 others within %v (slowest)", worst)
	if worst > 2*time.Second {
		t.Errorf("invalidation took %v to reach every process; want < 2s", worst)
	}
	nv, ng := sameToken(t, "after invalidation", all(t, cs, "wait-gen 4"))
	if nv == v || ng != "4" || len(up.fetches()) != 4 {
		t.Fatalf("after invalidation: token %s gen %s after %d fetches; want a new token at gen 4 after 4 fetches", nv, ng, len(up.fetches()))
	}
}

// TestHolderKilledMidFetch kills the process holding the lock while it fetches: another
// process takes the lock when the lease runs out, fetches, and every survivor gets its token.
func TestHolderKilledMidFetch(t *testing.T) {
	srv := startRedis(t)
	up := &upstream{lifetime: time.Minute, block: true, started: make(chan string, 1)}
	hs := httptest.NewServer(up)
	t.Cleanup(hs.Close)
	const lease = time.Second
	cs := startChildren(t, 4, srv.Addr(), hs.URL, lease)
	for _, c := range cs {
		c.send(t, "token")
	}
	var holder string
	select {
	case holder = <-up.started:
	case <-time.After(20 * time.Second):
		t.Fatal("no fetch started")
	}
	h, _ := strconv.Atoi(holder)
	killed := time.Now()
	_ = cs[h].cmd.Process.Kill()
	var survivors [][]string
	for i, c := range cs {
		if i == h {
			continue
		}
		f := strings.Fields(c.read(t))
		if len(f) != 3 || f[0] != "ok" {
			t.Fatalf("child %d: token → %q", i, strings.Join(f, " "))
		}
		survivors = append(survivors, f[1:])
	}
	took := time.Since(killed)
	v, _ := sameToken(t, "after the holder died", survivors)
	who := up.fetches()
	t.Logf("holder %s killed mid-fetch; fetches by %v; survivors got %s %v after the kill (lease %v)", holder, who, v, took.Round(time.Millisecond), lease)
	if len(who) != 2 || who[1] == holder || v != "tok-2" {
		t.Fatalf("fetches %v, token %s; want 2 fetches, the second by a survivor, token tok-2", who, v)
	}
	if took > lease+2*time.Second {
		t.Errorf("survivors waited %v after the kill; want about the lease %v", took, lease)
	}
}
