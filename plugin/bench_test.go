package plugin

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"

	"github.com/seed-a64d9e1f/chatwire/adapter"
)

// BenchmarkSend compares one Send called in process, over an in-process gRPC connection, and
// through a real plugin subprocess (AutoMTLS, unix socket): the difference is the plugin
// boundary's overhead per call.
func BenchmarkSend(b *testing.B) {
	msg := adapter.Message{To: adapter.Target{User: "zhangsan"}, Text: "hello from the benchmark"}
	run := func(b *testing.B, a adapter.Adapter) {
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := a.Send(ctx, msg); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("in-process", func(b *testing.B) { run(b, testAdapter()) })
	b.Run("grpc-conn", func(b *testing.B) {
		srv := NewServer(ServerOptions{Open: func(context.Context, StoreConfig, BotConfig) (adapter.Adapter, error) { return testAdapter(), nil }})
		// TestPluginGRPCConn logs at debug level to hclog.DefaultOutput (stderr), and its lines
		// would land inside the benchmark's result lines: make bench's output unparseable.
		defer func(w io.Writer) { hclog.DefaultOutput = w }(hclog.DefaultOutput)
		hclog.DefaultOutput = io.Discard
		client, _ := goplugin.TestPluginGRPCConn(b, false, PluginMap(srv))
		defer client.Close()
		raw, err := client.Dispense(PluginName)
		if err != nil {
			b.Fatal(err)
		}
		c := raw.(*Client)
		if _, err := c.Configure(context.Background(), StoreConfig{}, []BotConfig{{Name: "hr"}}); err != nil {
			b.Fatal(err)
		}
		run(b, c.Bot("hr"))
	})
	b.Run("subprocess", func(b *testing.B) {
		p, err := Launch(context.Background(), testLaunchOptions(nil))
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		run(b, p.Bot("hr"))
	})
	b.Run("subprocess-parallel", func(b *testing.B) {
		p, err := Launch(context.Background(), testLaunchOptions(nil))
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		bot := p.Bot("hr")
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := bot.Send(context.Background(), msg); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// hopRequest is a webhook as the host forwards one from WeCom: the signature in the query,
// the usual headers, an encrypted XML body of about 600 bytes.
func hopRequest() *adapter.WebhookRequest {
	body := []byte("<xml><ToUserName><![CDATA[ww1234567890abcdef]]></ToUserName><AgentID><![CDATA[1000002]]></AgentID><Encrypt><![CDATA[" +
		strings.Repeat("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODkwYWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXo", 7) + "]]></Encrypt></xml>")
	return &adapter.WebhookRequest{Method: "POST", Path: "/webhook/hr",
		Query: url.Values{"msg_signature": {"477715d11cdb4164915debcba66cb864d751f3e6"}, "timestamp": {"1409659813"}, "nonce": {"1372623149"}},
		Header: http.Header{"Content-Type": {"text/xml"}, "User-Agent": {"Mozilla/4.0"}, "Content-Length": {strconv.Itoa(len(body))},
			"Accept": {"*/*"}, "X-Forwarded-For": {"101.226.103.12"}, "Connection": {"keep-alive"}},
		Body: body, RemoteAddr: "127.0.0.1:51234"}
}

// BenchmarkHop measures the plugin hop itself: per op, one HandleWebhook and one Send to a
// real plugin subprocess (AutoMTLS, unix socket), as the host makes them. Besides ns/op it
// reports the CPU each op costs the host (this process: getrusage) and the plugin
// (/proc/<pid>/stat, 10 ms ticks: run with -benchtime of a second or more) and the plugin's
// peak RSS, sequentially and from 8 goroutines at once (the load generator's connections).
func BenchmarkHop(b *testing.B) {
	msg := adapter.Message{To: adapter.Target{User: "zhangsan"}, Text: "hello from the benchmark"}
	req := hopRequest()
	opts := testLaunchOptions(nil)
	if path := os.Getenv(pluginProfileEnv); path != "" {
		opts.Env = append(opts.Env, pluginProfileEnv+"="+path)
	}
	p, err := Launch(context.Background(), opts)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	bot := p.Bot("hr")
	op := func(ctx context.Context) error {
		resp, events, err := bot.HandleWebhook(ctx, req)
		if err != nil {
			return err
		}
		if resp.Status != 200 || len(events) != 1 {
			return fmt.Errorf("webhook answered %d with %d events", resp.Status, len(events))
		}
		_, err = bot.Send(ctx, msg)
		return err
	}
	measure := func(b *testing.B, loop func()) {
		pid := p.Pid()
		h0, p0 := hostCPU(b), procCPU(b, pid)
		b.ReportAllocs()
		b.ResetTimer()
		loop()
		b.StopTimer()
		h1, p1 := hostCPU(b), procCPU(b, pid)
		b.ReportMetric(float64((h1-h0).Microseconds())/float64(b.N), "host-µs/op")
		b.ReportMetric(float64((p1-p0).Microseconds())/float64(b.N), "plugin-µs/op")
		b.ReportMetric(float64(peakRSS(b, pid))/(1<<20), "plugin-peak-MiB")
	}
	b.Run("sequential", func(b *testing.B) {
		measure(b, func() {
			for i := 0; i < b.N; i++ {
				if err := op(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("parallel8", func(b *testing.B) {
		measure(b, func() {
			b.SetParallelism(max(1, 8/runtime.GOMAXPROCS(0)))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := op(context.Background()); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	})
}

// hostCPU is the CPU time (user and system) this process has used.
func hostCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is the CPU time (user and system) process pid has used, from /proc (USER_HZ 100).
func procCPU(b *testing.B, pid int) time.Duration {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	s := string(stat)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // fields from the 3rd (state) on
	ut, err1 := strconv.ParseInt(f[11], 10, 64)              // utime, field 14
	st, err2 := strconv.ParseInt(f[12], 10, 64)              // stime, field 15
	if err1 != nil || err2 != nil {
		b.Fatalf("parsing /proc/%d/stat: %q", pid, s)
	}
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// peakRSS is process pid's peak resident set size (VmHWM), in bytes.
func peakRSS(b *testing.B, pid int) int64 {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				b.Fatalf("parsing VmHWM %q: %v", v, err)
			}
			return kb << 10
		}
	}
	b.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}
