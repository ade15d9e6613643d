package plugin

// Subprocess tests: the test binary re-executes itself as a plugin (or as a host that
// launches a plugin), selected by CHATWIRE_TEST_ROLE, as go-plugin's own tests do.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	goplugin "github.com/hashicorp/go-plugin"

	"github.com/seed-a64d9e1f/chatwire/adapter"
	"github.com/seed-a64d9e1f/chatwire/adapter/wecom"
)

const roleEnv = "CHATWIRE_TEST_ROLE"

// gateEnv names the directory of the plugin-gated role's files: "started" once its first
// process configured, "open" to let later processes configure.
const gateEnv = "CHATWIRE_TEST_GATE_DIR"

// wecomEnv is the wecomtest API base of the plugin-wecom role.
const wecomEnv = "CHATWIRE_TEST_WECOM_API"

// pluginProfileEnv, set for a benchmark run, names the file the plugin role writes its CPU
// profile to (go test -bench Hop -cpuprofile host.pprof with CHATWIRE_BENCH_PLUGIN_PROFILE=plugin.pprof).
const pluginProfileEnv = "CHATWIRE_BENCH_PLUGIN_PROFILE"

func TestMain(m *testing.M) {
	switch os.Getenv(roleEnv) {
	case "plugin":
		profilePlugin(func() { servePluginForTest(ProtocolVersion) })
		os.Exit(0)
	case "plugin-v2":
		servePluginForTest(2)
		os.Exit(0)
	case "plugin-crash":
		servePluginForTest(ProtocolVersion)
		os.Exit(0)
	case "plugin-wecom":
		servePluginForTest(ProtocolVersion)
		os.Exit(0)
	case "plugin-hang-configure", "plugin-gated":
		servePluginForTest(ProtocolVersion)
		os.Exit(0)
	case "host":
		hostForTest()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// profilePlugin runs serve under a CPU profile when pluginProfileEnv names a file.
func profilePlugin(serve func()) {
	if path := os.Getenv(pluginProfileEnv); path != "" {
		if f, err := os.Create(path); err == nil && pprof.StartCPUProfile(f) == nil {
			defer f.Close()
			defer pprof.StopCPUProfile()
		}
	}
	serve()
}

// testAdapter echoes: Send answers with the attachment bytes it got; text "panic" panics,
// "crash" makes the process exit, "block" waits for its ctx, "log" logs at warn and debug; HandleWebhook returns the
// body it got, and panics on the body "panic".
func testAdapter() adapter.Adapter {
	return &fakeAdapter{
		SendFn: func(ctx context.Context, msg adapter.Message) (adapter.Receipt, error) {
			switch msg.Text {
			case "panic":
				panic("test panic in Send")
			case "crash":
				os.Exit(3)
			case "block":
				<-ctx.Done()
				return adapter.Receipt{}, ctx.Err()
			case "log":
				slog.Warn("plugin-warn-marker", "n", 1)
				slog.Debug("plugin-debug-marker")
				slog.Error("plugin-error-marker")
			}
			n := 0
			for _, a := range msg.Attachments {
				n += len(a.Data)
			}
			return adapter.Receipt{ID: strconv.Itoa(n)}, nil
		},
		PollFn: func(ctx context.Context) ([]adapter.Event, error) {
			// Poll returns batch n once (event "poll-n"), like the AI Bot's receive queue;
			// the first batch is returned only once the caller has given up, so its answer
			// is lost on the way back.
			polls.Lock()
			defer polls.Unlock()
			polls.n++
			if polls.n == 1 {
				<-ctx.Done()
			}
			return []adapter.Event{{ID: fmt.Sprint("poll-", polls.n), Bot: "hr"}}, nil
		},
		WebhookFn: func(ctx context.Context, req *adapter.WebhookRequest) (*adapter.WebhookResponse, []adapter.Event, error) {
			if string(req.Body) == "panic" {
				panic("test panic in HandleWebhook")
			}
			return &adapter.WebhookResponse{Status: 200, Body: req.Body}, []adapter.Event{{ID: "e", Bot: "hr"}}, nil
		},
	}
}

// polls counts the test adapter's Poll calls in the plugin process.
var polls struct {
	sync.Mutex
	n int
}

func servePluginForTest(version int) {
	opts := ServerOptions{
		Platforms: []string{"test"},
		Open: func(ctx context.Context, store StoreConfig, bot BotConfig) (adapter.Adapter, error) {
			if os.Getenv(roleEnv) == "plugin-hang-configure" {
				// Configure never answers. SIGSTOP takes effect asynchronously (another thread
				// handles it, then the group stops): without the select, Open could return and
				// Configure answer in that window, which made TestProcessStartTimeoutKillsHung flaky.
				syscall.Kill(os.Getpid(), syscall.SIGSTOP)
				select {}
			}
			if os.Getenv(roleEnv) == "plugin-crash" {
				// crash soon after configuring, leaving Configure (and Launch's start, under
				// -race on a loaded machine) ample time to answer
				time.AfterFunc(300*time.Millisecond, func() { os.Exit(3) })
			}
			if os.Getenv(roleEnv) == "plugin-gated" {
				// the first process configures at once; later ones wait for the gate file
				dir := os.Getenv(gateEnv)
				if _, err := os.Stat(dir + "/started"); err != nil {
					os.WriteFile(dir+"/started", nil, 0o600)
				} else {
					for {
						if _, err := os.Stat(dir + "/open"); err == nil {
							break
						}
						time.Sleep(10 * time.Millisecond)
					}
				}
			}
			if os.Getenv(roleEnv) == "plugin-wecom" {
				// a real WeCom adapter against the wecomtest server the test runs
				return wecom.New(wecom.Config{Bot: bot.Name, CorpID: "wwidem", CorpSecret: "s3cret", AgentID: 1000002,
					APIBase: os.Getenv(wecomEnv)}, wecom.Options{})
			}
			return testAdapter(), nil
		},
	}
	if version == ProtocolVersion {
		if os.Getenv(roleEnv) == "plugin-wecom" {
			opts.IdempotencyLease = time.Second // a test kills a plugin mid-send
		}
		Serve(ServeOptions{ServerOptions: opts, LogLevel: slog.LevelDebug})
		return
	}
	hs := Handshake
	hs.ProtocolVersion = uint(version)
	goplugin.Serve(&goplugin.ServeConfig{HandshakeConfig: hs,
		VersionedPlugins: map[int]goplugin.PluginSet{version: PluginMap(NewServer(opts))},
		GRPCServer:       newGRPCServer})
}

// hostForTest launches a plugin, prints its pid and waits to be killed.
func hostForTest() {
	p, err := Launch(context.Background(), testLaunchOptions(nil))
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("pid", p.Pid(), "dir", p.sockDir)
	select {}
}

func testLaunchOptions(log *slog.Logger) LaunchOptions {
	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	return LaunchOptions{
		Path:       exe,
		Env:        []string{roleEnv + "=plugin"},
		Bots:       []BotConfig{{Name: "hr", Platform: "test", Config: []byte(`{"secret":"s3cret"}`)}},
		Logger:     log,
		BackoffMin: 50 * time.Millisecond,
	}
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// eventually polls cond every 20ms until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alive reports whether pid is a running (not zombie) process.
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// state is the field after the ")" that ends the command name
	s := string(stat)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

func launchForTest(t *testing.T) (*Plugin, *syncBuffer) {
	t.Helper()
	var logs syncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p, err := Launch(t.Context(), testLaunchOptions(log))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		pid, dir := p.Pid(), p.sockDir
		p.Close()
		if alive(pid) {
			t.Errorf("plugin %d still running after Close", pid)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket dir %s left behind: %v", dir, err)
		}
		if strings.Contains(logs.String(), "s3cret") {
			t.Errorf("host log holds a bot secret")
		}
	})
	return p, &logs
}

// TestProcessMaxProcs: LaunchOptions.MaxProcs reaches the plugin process as GOMAXPROCS in
// its environment (with the rest of the environment it was given); without it the plugin
// gets no GOMAXPROCS, so Go's default.
func TestProcessMaxProcs(t *testing.T) {
	t.Setenv("GOMAXPROCS", "7") // the host's own is never inherited
	environ := func(p *Plugin) string {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p.Pid()))
		if err != nil {
			t.Fatal(err)
		}
		return "\x00" + string(data) + "\x00"
	}
	log := slog.New(slog.DiscardHandler)
	opts := testLaunchOptions(log)
	opts.MaxProcs = 1
	p, err := Launch(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if env := environ(p); !strings.Contains(env, "\x00GOMAXPROCS=1\x00") || !strings.Contains(env, "\x00CHATWIRE_TEST_ROLE=plugin\x00") {
		t.Errorf("plugin environment %q; want GOMAXPROCS=1 and the test's own variable", env)
	}
	q, err := Launch(t.Context(), testLaunchOptions(log))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if env := environ(q); strings.Contains(env, "GOMAXPROCS") || strings.Contains(env, ProcsEnv) {
		t.Errorf("plugin launched without MaxProcs has environment %q; want no GOMAXPROCS and no %s", env, ProcsEnv)
	}
	opts = testLaunchOptions(log)
	opts.AutoProcs = true
	a, err := Launch(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if env := environ(a); !strings.Contains(env, "\x00"+ProcsEnv+"=auto\x00") || strings.Contains(env, "GOMAXPROCS") {
		t.Errorf("plugin launched with AutoProcs has environment %q; want %s=auto and no GOMAXPROCS", env, ProcsEnv)
	}
}

func TestProcessSecretsNotInArgvOrEnv(t *testing.T) {
	t.Setenv("CHATWIRE_TEST_HOST_SECRET", "host-env-secret") // the host's environment is not inherited
	p, _ := launchForTest(t)
	pid := p.Pid()
	for _, f := range []string{"cmdline", "environ"} {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, secret := range []string{"s3cret", "host-env-secret"} {
			if bytes.Contains(data, []byte(secret)) {
				t.Errorf("plugin %s holds %q", f, secret)
			}
		}
	}
	if _, err := p.Bot("hr").Send(t.Context(), adapter.Message{Text: "x"}); err != nil {
		t.Errorf("Send = %v; the bot (configured over RPC) should work", err)
	}
}

func TestProcessVersionMismatch(t *testing.T) {
	opts := testLaunchOptions(nil)
	opts.Env = []string{roleEnv + "=plugin-v2"}
	opts.StartTimeout = 10 * time.Second
	p, err := Launch(t.Context(), opts)
	if err == nil {
		p.Close()
		t.Fatal("Launch of a v2 plugin succeeded; want a version error")
	}
	if !strings.Contains(err.Error(), "incompatible API version") {
		t.Errorf("Launch error = %v; want incompatible API version", err)
	}
}

func TestProcessRunByHand(t *testing.T) {
	exe, _ := os.Executable()
	cmd := exec.Command(exe)
	cmd.Env = []string{roleEnv + "=plugin"}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "This binary is a plugin") {
		t.Errorf("plugin run by hand = %v, %q; want exit 1 with an explanation", err, out)
	}
}

func TestProcessLogLevelsKept(t *testing.T) {
	p, logs := launchForTest(t)
	if _, err := p.Bot("hr").Send(t.Context(), adapter.Message{Text: "log"}); err != nil {
		t.Fatal(err)
	}
	want := []string{
		`"level":"WARN","msg":"plugin-warn-marker"`,
		`"level":"DEBUG","msg":"plugin-debug-marker"`,
		`"level":"ERROR","msg":"plugin-error-marker"`,
	}
	eventually(t, 5*time.Second, "plugin log lines with their levels in the host log", func() bool {
		s := logs.String()
		for _, w := range want {
			if !strings.Contains(s, w) {
				return false
			}
		}
		return true
	})
	if s := logs.String(); !strings.Contains(s, `"n":1`) {
		t.Errorf("plugin log attributes lost: %s", s)
	}
}

// TestProcessPanicRecovered: a panic in one bot's handler is one failed call (internal), not
// a dead plugin: the other bot, and the same one, keep working in the same process; the
// panic is logged once with its stack and counted (issue 11 item 14).
func TestProcessPanicRecovered(t *testing.T) {
	var logs syncBuffer
	opts := testLaunchOptions(slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	opts.Bots = append(opts.Bots, BotConfig{Name: "ops", Platform: "test", Config: []byte(`{}`)})
	p, err := Launch(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	pid := p.Pid()
	_, err = p.Bot("hr").Send(t.Context(), adapter.Message{Text: "panic"})
	if !errors.Is(err, adapter.ErrInternal) || strings.Contains(err.Error(), "test panic") {
		t.Errorf("Send that panics = %v; want an internal error that does not quote the panic", err)
	}
	resp, evs, err := p.Bot("hr").HandleWebhook(t.Context(), &adapter.WebhookRequest{Method: "POST", Body: []byte("panic")})
	if !errors.Is(err, adapter.ErrInternal) || resp != nil || len(evs) != 0 {
		t.Errorf("webhook that panics = %+v, %d events, %v; want an internal error", resp, len(evs), err)
	}
	r, err := p.Bot("ops").Send(t.Context(), adapter.Message{Attachments: []adapter.Attachment{{Data: []byte("ab")}}})
	if err != nil || r.ID != "2" {
		t.Errorf("the other bot's Send = %+v, %v; want id 2", r, err)
	}
	if r, err := p.Bot("hr").Send(t.Context(), adapter.Message{Text: "ok"}); err != nil || r.ID != "0" {
		t.Errorf("the panicking bot's next Send = %+v, %v; want it to work", r, err)
	}
	if p.Pid() != pid || p.Restarts() != 0 || !p.Ready() {
		t.Errorf("after the panics: pid %d (was %d), %d restarts, ready %v; want the same process, ready", p.Pid(), pid, p.Restarts(), p.Ready())
	}
	metrics, err := p.Metrics(t.Context())
	if err != nil || !strings.Contains(string(metrics), `chatwire_plugin_panics_total{method="/chatwire.adapter.v1.AdapterService/Send"} 1`) ||
		!strings.Contains(string(metrics), `chatwire_plugin_panics_total{method="/chatwire.adapter.v1.AdapterService/HandleWebhook"} 1`) {
		t.Errorf("plugin metrics = %v\n%s\nwant chatwire_plugin_panics_total 1 for Send and for HandleWebhook", err, metrics)
	}
	eventually(t, 5*time.Second, "the panics logged with their stacks", func() bool {
		return strings.Count(logs.String(), "panic in a plugin call") == 2
	})
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "panic in a plugin call") && (!strings.Contains(line, "test panic in") || !strings.Contains(line, "goroutine ")) {
			t.Errorf("panic log line lacks the panic or its stack: %s", line)
		}
	}
}

// TestProcessCrashRestarts: a plugin process that dies is replaced and its bots configured
// again.
func TestProcessCrashRestarts(t *testing.T) {
	var states []bool
	var mu sync.Mutex
	opts := testLaunchOptions(nil)
	opts.OnState = func(ready bool) { mu.Lock(); states = append(states, ready); mu.Unlock() }
	p, err := Launch(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	bot := p.Bot("hr")
	firstPid := p.Pid()
	_, err = bot.Send(t.Context(), adapter.Message{Text: "crash"})
	if !errors.Is(err, adapter.ErrUnavailable) {
		t.Errorf("Send that crashes the plugin = %v; want unavailable", err)
	}
	eventually(t, 15*time.Second, "plugin restarted", func() bool { return p.Restarts() == 1 && p.Ready() })
	if alive(firstPid) {
		t.Errorf("crashed plugin %d still running", firstPid)
	}
	r, err := bot.Send(t.Context(), adapter.Message{Text: "ok", Attachments: []adapter.Attachment{{Data: []byte("abc")}}})
	if err != nil || r.ID != "3" {
		t.Errorf("Send after restart = %+v, %v; want id 3", r, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(states) < 3 || states[0] != true || states[1] != false || states[2] != true {
		t.Errorf("readiness changes = %v; want [true false true]", states)
	}
}

// TestProcessWebhookWhileDown kills the plugin and checks that while it is being restarted
// (the replacement's Configure waits for a gate the test opens after its checks, so the
// window stays open however slow the machine) the bot is not ready, webhooks get a 503 and
// sends fail as unavailable, and that all work again after the restart.
func TestProcessWebhookWhileDown(t *testing.T) {
	var logs syncBuffer
	opts := testLaunchOptions(slog.New(slog.NewJSONHandler(&logs, nil)))
	gate := t.TempDir()
	opts.Env = []string{roleEnv + "=plugin-gated", gateEnv + "=" + gate}
	p, err := Launch(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	bot := p.Bot("hr")
	pid := p.Pid()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	eventually(t, 2*time.Second, "Ready() false after the plugin was killed", func() bool { return !p.Ready() })
	resp, evs, err := bot.HandleWebhook(t.Context(), &adapter.WebhookRequest{Method: "POST", Body: []byte("hi")})
	if resp == nil || resp.Status != 503 || len(evs) != 0 || !errors.Is(err, adapter.ErrUnavailable) || !errors.Is(err, ErrRestarting) {
		t.Errorf("webhook while restarting = %+v, %d events, %v; want 503, no events, unavailable (restarting)", resp, len(evs), err)
	}
	if _, err := bot.Send(t.Context(), adapter.Message{Text: "x"}); !errors.Is(err, adapter.ErrUnavailable) {
		t.Errorf("Send while restarting = %v; want unavailable", err)
	}
	if p.Ready() {
		t.Errorf("Ready() true again %v after the kill, before the gate opened", time.Since(killed))
	}
	if err := os.WriteFile(gate+"/open", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "plugin ready again", p.Ready)
	if p.Pid() == pid || p.Restarts() != 1 {
		t.Errorf("after restart: pid %d (was %d), %d restarts; want a new pid, 1 restart", p.Pid(), pid, p.Restarts())
	}
	resp, evs, err = bot.HandleWebhook(t.Context(), &adapter.WebhookRequest{Method: "POST", Body: []byte("hi")})
	if err != nil || resp.Status != 200 || string(resp.Body) != "hi" || len(evs) != 1 {
		t.Errorf("webhook after restart = %+v, %d events, %v; want 200 hi, 1 event", resp, len(evs), err)
	}
}

// TestProcessHungPluginReplaced stops the plugin with SIGSTOP: it keeps its socket open but
// answers nothing, so only a health check with a deadline can notice.
func TestProcessHungPluginReplaced(t *testing.T) {
	var down time.Time
	var mu sync.Mutex
	opts := testLaunchOptions(nil)
	opts.PingInterval, opts.PingTimeout, opts.PingMisses = 100*time.Millisecond, 200*time.Millisecond, 3
	opts.OnState = func(ready bool) {
		mu.Lock()
		defer mu.Unlock()
		if !ready && down.IsZero() {
			down = time.Now()
		}
	}
	// PingMisses × (interval + timeout) is 900ms; the rest is slack for a loaded machine
	// running -race
	const detectBound = 3 * time.Second
	p, err := Launch(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() }) // if the test stops early; closeWithin below times it
	bot := p.Bot("hr")
	pid := p.Pid()
	stopForTest(t, pid)
	stopped := time.Now()
	eventually(t, detectBound, "hung plugin detected (Ready false)", func() bool { return !p.Ready() })
	mu.Lock()
	took := down.Sub(stopped)
	mu.Unlock()
	t.Logf("hung plugin detected %v after SIGSTOP", took.Round(time.Millisecond))
	// at least one health check must have timed out; OnState(false) within the bound
	if took < opts.PingTimeout || took > detectBound {
		t.Errorf("OnState(false) came %v after SIGSTOP; want within [%v, %v]", took, opts.PingTimeout, detectBound)
	}
	eventually(t, 15*time.Second, "hung plugin replaced", func() bool { return p.Restarts() == 1 && p.Ready() })
	if p.Pid() == pid {
		t.Errorf("pid after replacement = %d, the hung one's", pid)
	}
	if alive(pid) {
		t.Errorf("hung plugin %d still running after its replacement", pid)
	}
	r, err := bot.Send(t.Context(), adapter.Message{Attachments: []adapter.Attachment{{Data: []byte("abcd")}}})
	if err != nil || r.ID != "4" {
		t.Errorf("Send after replacement = %+v, %v; want id 4 (bot configured again)", r, err)
	}
	closeWithin(t, p, 5*time.Second)
}

// TestProcessCloseWhileHung: Close must not wait for a hung plugin to answer its Shutdown
// RPC (go-plugin's Kill does, with no deadline).
func TestProcessCloseWhileHung(t *testing.T) {
	p, err := Launch(t.Context(), testLaunchOptions(nil)) // PingInterval 10s: no check runs
	if err != nil {
		t.Fatal(err)
	}
	pid, dir := p.Pid(), p.sockDir
	stopForTest(t, pid)
	closeWithin(t, p, killGrace+2*time.Second)
	if alive(pid) {
		t.Errorf("hung plugin %d still running after Close", pid)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket dir %s left behind: %v", dir, err)
	}
}

// TestProcessStartTimeoutKillsHung: a plugin that never answers Configure is killed at once
// when StartTimeout passes, not after a Shutdown RPC has waited out the kill grace.
func TestProcessStartTimeoutKillsHung(t *testing.T) {
	opts := testLaunchOptions(nil)
	opts.Env = []string{roleEnv + "=plugin-hang-configure"}
	opts.StartTimeout = 2 * time.Second
	start := time.Now()
	p, err := Launch(t.Context(), opts)
	took := time.Since(start)
	if err == nil {
		p.Close()
		t.Fatal("Launch of a plugin that never answers Configure succeeded")
	}
	if !strings.Contains(err.Error(), "configuring bots") {
		t.Errorf("Launch error = %v; want the Configure timeout", err)
	}
	// StartTimeout, then a SIGKILL; the kill grace (3s) would come on top without it
	if limit := opts.StartTimeout + killGrace/2; took > limit {
		t.Errorf("Launch returned after %v; want <= %v (StartTimeout %v, no kill grace)", took, limit, opts.StartTimeout)
	}
}

// stopForTest sends SIGSTOP to pid; cleanup resumes and kills it, should it still run.
func stopForTest(t *testing.T, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if alive(pid) {
			syscall.Kill(pid, syscall.SIGCONT)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	// The signal is delivered asynchronously: wait until every thread is stopped, so that
	// none answers a call made next.
	eventually(t, 5*time.Second, fmt.Sprintf("every thread of %d stopped", pid), func() bool {
		tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
		if err != nil || len(tasks) == 0 {
			return false
		}
		for _, f := range tasks {
			stat, err := os.ReadFile(f)
			s := string(stat)
			i := strings.LastIndexByte(s, ')')
			if err != nil || i < 0 || i+2 >= len(s) || (s[i+2] != 'T' && s[i+2] != 't') {
				return false
			}
		}
		return true
	})
}

// closeWithin fails the test if p.Close takes longer than d.
func closeWithin(t *testing.T, p *Plugin, d time.Duration) {
	t.Helper()
	start := time.Now()
	done := make(chan struct{})
	go func() { p.Close(); close(done) }()
	select {
	case <-done:
		t.Logf("Close took %v", time.Since(start).Round(time.Millisecond))
	case <-time.After(d):
		t.Fatalf("Close still running after %v", d)
	}
}

// TestProcessCrashBackoff runs a plugin that crashes right after each start: the waits
// between restarts must double (BackoffMin 100ms, then 200ms, 400ms, 800ms), not start over
// at BackoffMin after every crash.
func TestProcessCrashBackoff(t *testing.T) {
	var logs syncBuffer
	opts := testLaunchOptions(slog.New(slog.NewJSONHandler(&logs, nil)))
	opts.Env = []string{roleEnv + "=plugin-crash"}
	opts.BackoffMin, opts.BackoffMax = 100*time.Millisecond, 10*time.Second
	p, err := Launch(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	type sched struct {
		at   time.Time
		wait time.Duration
	}
	scheduled := func() []sched {
		var out []sched
		for _, line := range strings.Split(logs.String(), "\n") {
			var e struct {
				Time time.Time     `json:"time"`
				Msg  string        `json:"msg"`
				Wait time.Duration `json:"wait"`
			}
			if json.Unmarshal([]byte(line), &e) == nil && e.Msg == "plugin restart scheduled" {
				out = append(out, sched{e.Time, e.Wait})
			}
		}
		return out
	}
	eventually(t, 30*time.Second, "five restarts scheduled", func() bool { return len(scheduled()) >= 5 })
	s := scheduled()[:5]
	want := opts.BackoffMin
	for i, e := range s {
		if e.wait < want/2 || e.wait > want {
			t.Errorf("restart %d: wait %v; want within [%v, %v] (the backoff jittered down to half)", i+1, e.wait, want/2, want)
		}
		if i > 0 {
			// a crash comes after the previous wait
			if gap, low := e.at.Sub(s[i-1].at), s[i-1].wait; gap < low {
				t.Errorf("restart %d came %v after the previous one; want >= %v", i+1, gap, low)
			}
		}
		want *= 2
	}
	if gap := s[4].at.Sub(s[3].at); gap < 400*time.Millisecond {
		t.Errorf("gap between the 4th and 5th restarts = %v; want >= 400ms (half of 800ms)", gap)
	}
}

// TestProcessCloseDuringBackoff: Close returns at once while a restart waits out its backoff.
func TestProcessCloseDuringBackoff(t *testing.T) {
	var logs syncBuffer
	opts := testLaunchOptions(slog.New(slog.NewJSONHandler(&logs, nil)))
	opts.Env = []string{roleEnv + "=plugin-crash"}
	opts.BackoffMin, opts.BackoffMax = time.Hour, time.Hour
	p, err := Launch(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "a restart scheduled", func() bool {
		return strings.Contains(logs.String(), "plugin restart scheduled")
	})
	closed := make(chan struct{})
	go func() { p.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(20 * time.Second): // far below the 30 min the shortest wait could be
		t.Fatal("Close did not return while a restart waited out a 1h backoff")
	}
}

func TestProcessLargePayload(t *testing.T) {
	p, _ := launchForTest(t)
	data := bytes.Repeat([]byte("x"), 5<<20)
	r, err := p.Bot("hr").Send(t.Context(), adapter.Message{Attachments: []adapter.Attachment{{Name: "big", Body: bytes.NewReader(data), Size: int64(len(data))}}})
	if err != nil || r.ID != strconv.Itoa(len(data)) {
		t.Fatalf("Send 5 MiB = %+v, %v", r, err)
	}
	resp, evs, err := p.Bot("hr").HandleWebhook(t.Context(), &adapter.WebhookRequest{Method: "POST", Body: data})
	if err != nil || len(resp.Body) != len(data) || len(evs) != 1 {
		t.Fatalf("HandleWebhook 5 MiB = %d bytes, %d events, %v", bodyLen(resp), len(evs), err)
	}
}

func TestProcessHostKilled(t *testing.T) {
	exe, _ := os.Executable()
	host := exec.Command(exe)
	host.Env = []string{roleEnv + "=host"}
	out, err := host.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := host.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		host.Process.Kill()
		host.Wait()
		t.Fatalf("reading host output: %v", err)
	}
	var pid int
	var dir string
	if _, err := fmt.Sscanf(line, "pid %d dir %s", &pid, &dir); err != nil || !alive(pid) || !strings.Contains(dir, socketDirPrefix) {
		host.Process.Kill()
		host.Wait()
		t.Fatalf("host said %q", line)
	}
	t.Cleanup(func() { os.RemoveAll(dir) }) // only if the test failed
	// The dir holds the plugin's gRPC socket, and the wire's directory while the host is
	// still connecting to the wire (it opens in the background).
	ents, err := os.ReadDir(dir)
	sockets, others := 0, []string{}
	for _, e := range ents {
		switch {
		case e.Type()&os.ModeSocket != 0:
			sockets++
		case e.IsDir() && strings.HasPrefix(e.Name(), strings.TrimSuffix(wireDirPattern, "*")):
		default:
			others = append(others, e.Name())
		}
	}
	if err != nil || sockets != 1 || len(others) > 0 {
		t.Fatalf("socket dir %s holds %d sockets and %v, %v; want the plugin's socket (and the wire's directory while it opens)", dir, sockets, others, err)
	}
	host.Process.Signal(syscall.SIGKILL)
	host.Wait()
	killed := time.Now()
	eventually(t, 2*time.Second, fmt.Sprintf("orphaned plugin %d exits and removes its socket dir %s", pid, dir), func() bool {
		_, err := os.Lstat(dir)
		return !alive(pid) && errors.Is(err, os.ErrNotExist)
	})
	t.Logf("plugin exited and cleaned up %v after its host was killed", time.Since(killed).Round(time.Millisecond))
}

// TestProcessOwnGroup: the plugin runs in a process group of its own, so the SIGHUP and
// SIGCONT the kernel sends to an orphaned group never reach it while its host lives (they once
// resumed a SIGSTOPped plugin in a detached test run and let its hung Configure answer).
func TestProcessOwnGroup(t *testing.T) {
	p, err := Launch(t.Context(), testLaunchOptions(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	pid := p.Pid()
	pgid, err := syscall.Getpgid(pid)
	if err != nil {
		t.Fatal(err)
	}
	if pgid != pid || pgid == syscall.Getpgrp() {
		t.Errorf("plugin %d is in process group %d (the host's is %d); want a group of its own", pid, pgid, syscall.Getpgrp())
	}
}

// TestProcessTimedOutCallMarksNotReady: a call whose deadline passes unanswered (a webhook
// within the platform's budget) starts a health check at once; a hung plugin is then not
// ready, and ready again once it answers, without waiting for the next periodic check
// (issue 11 item 13).
func TestProcessTimedOutCallMarksNotReady(t *testing.T) {
	var states []bool
	var mu sync.Mutex
	opts := testLaunchOptions(nil)
	// No periodic check during the test (10s), a quick one when asked, no replacement.
	opts.PingInterval, opts.PingTimeout, opts.PingMisses = 10*time.Second, 200*time.Millisecond, 1000
	opts.OnState = func(ready bool) { mu.Lock(); states = append(states, ready); mu.Unlock() }
	p, err := Launch(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	pid := p.Pid()
	stopForTest(t, pid)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	_, _, err = p.Bot("hr").HandleWebhook(ctx, &adapter.WebhookRequest{Method: "POST", Body: []byte("hi")})
	if !errors.Is(err, adapter.ErrUnavailable) {
		t.Errorf("webhook to a hung plugin = %v; want unavailable", err)
	}
	eventually(t, 5*time.Second, "Ready() false after a webhook timed out on a hung plugin", func() bool { return !p.Ready() })
	resp, _, err := p.Bot("hr").HandleWebhook(t.Context(), &adapter.WebhookRequest{Method: "POST", Body: []byte("hi")})
	if !errors.Is(err, ErrNotAnswering) || resp == nil || resp.Status != 503 {
		t.Errorf("webhook while not answering = %+v, %v; want a fast 503, not answering", resp, err)
	}
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "Ready() again once the plugin answers", p.Ready)
	if p.Pid() != pid || p.Restarts() != 0 {
		t.Errorf("pid %d (was %d), %d restarts; want the same process", p.Pid(), pid, p.Restarts())
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(states, []bool{true, false, true}) {
		t.Errorf("readiness changes = %v; want [true false true]", states)
	}
}

// TestProcessPollAnswerLost: a Poll answer that the plugin sent as the host's call timed out
// never reached the host; the next Poll returns that batch again before any new one, so the
// at-least-once promise of adapter.Poller holds across the process boundary.
func TestProcessPollAnswerLost(t *testing.T) {
	p, _ := launchForTest(t)
	poller, ok := p.Bot("hr").(adapter.Poller)
	if !ok {
		t.Fatal("the test bot is not a Poller")
	}
	// the plugin answers this call only when its deadline passes
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if evs, err := poller.Poll(ctx); err == nil {
		t.Fatalf("Poll past its deadline = %v, nil; want an error", evs)
	}
	var got []string
	for range 2 {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		evs, err := poller.Poll(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			got = append(got, ev.ID)
		}
	}
	if strings.Join(got, ",") != "poll-1,poll-2" {
		t.Errorf("polled %q after a lost answer; want poll-1,poll-2", got)
	}
}

// TestRemoveSocketDirRemovesWireDir: a plugin whose host died while the wire was opening
// leaves its wire directory (and the socket in it) inside the socket dir; on exit it removes
// both, as it removes the socket dir itself. Before, os.Remove failed on the dir not empty
// and both stayed in the temp directory.
func TestRemoveSocketDirRemovesWireDir(t *testing.T) {
	dir, err := os.MkdirTemp(t.TempDir(), socketDirPrefix+"*")
	if err != nil {
		t.Fatal(err)
	}
	wire, err := os.MkdirTemp(dir, wireDirPattern)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(wire, "s"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PLUGIN_UNIX_SOCKET_DIR", dir)
	removeSocketDir(slog.New(slog.DiscardHandler))
	if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket dir %s still there (%v) after removeSocketDir with a wire dir in it", dir, err)
	}
}
