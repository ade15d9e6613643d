// Command load measures chatwire's adapter-host against bench/baseline, the least code that
// does the same work (issue 18), in one run on this machine. It starts everything itself on
// 127.0.0.1 and stops by itself:
//
//   - it builds cmd/adapter-host and bench/baseline from the checkout;
//   - for every offered rate and target it starts a fresh redis-server and the target (the
//     host with its real plugin subprocess and a generated config; or the baseline), both
//     against a WeCom emulator (wecomtest) served in this process;
//   - it offers signed, encrypted WeCom callbacks at a fixed rate (open loop: callback i is
//     due at i/rate and its latency counts from then, so a slow target cannot slow the offer
//     down and hide its queue), reads the events on the bot's SSE stream and reports POST →
//     SSE latency, the achieved rate, lost and duplicated events, CPU per event from
//     /proc/<pid>/stat (utime+stime) of each process and their peak RSS (VmHWM);
//   - then sends, sequential and with N callers (closed loop), POST → answer;
//   - then a host with --memory-bots WeCom bots, for the RSS a bot costs.
//
// Run it with `make bench-host` or `go run ./bench/load --help`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "load:", err)
			os.Exit(1)
		}
	}
}

// options are the command's flags.
type options struct {
	rates        []int
	targets      []string
	warmup       time.Duration
	duration     time.Duration
	conns        int
	drain        time.Duration
	sendDuration time.Duration
	sendCallers  []int
	minSends     int // each sends step sends at least this many (tests: enough to reach the platform's limits)
	memoryBots   int
	settle       time.Duration
	cpuprofile   string
	redisBin     string
	dir          string
	quiet        bool
}

// report is everything one run measured.
type report struct {
	Events []*eventResult
	Sends  []*sendResult
	Memory *memResult
	Dir    string // logs, configs and profiles
}

const usageHead = `Usage: go run ./bench/load [flags]

Measures adapter-host (with its plugin subprocess and Redis) against bench/baseline in one
run: webhook → SSE latency, achieved rate, lost/duplicated events, CPU per event and peak RSS
per process and Redis's commands per event (INFO commandstats) at each offered rate; send
latency and throughput; RSS per configured bot. Starts redis-server, the WeCom emulator, the
host and the baseline on 127.0.0.1 by itself, prints Markdown tables with the
chatwire/baseline ratio, and stops. Needs redis-server and go in PATH.

Flags:
`

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usageHead); fs.PrintDefaults() }
	o := &options{}
	rates := fs.String("rates", "500,1000,2000", "offered callback `rates` in events/s, comma-separated; each is a separate step with fresh processes")
	targets := fs.String("targets", "chatwire,baseline", "`targets` to measure, in order: chatwire (adapter-host + plugin + Redis), baseline (bench/baseline + Redis)")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "callbacks offered at the step's rate before the measured window (counted for lost/duplicated, not for latency or CPU)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured window of each rate step")
	fs.IntVar(&o.conns, "conns", 8, "HTTP connections the callbacks are offered over (callbacks due while all are busy wait, and that wait counts in their latency)")
	fs.DurationVar(&o.drain, "drain", 10*time.Second, "after the last callback, how long the SSE stream may go without a new event before the missing ones count as lost")
	fs.DurationVar(&o.sendDuration, "send-duration", 5*time.Second, "how long each sends step runs (0: no sends)")
	callers := fs.String("send-callers", "1,8", "concurrent `callers` of each sends step, comma-separated; each sends its next message when the last is answered")
	fs.IntVar(&o.memoryBots, "memory-bots", 1000, "WeCom bots configured in the memory step's host, compared with a host with one (0: no memory step)")
	fs.DurationVar(&o.settle, "settle", 3*time.Second, "memory step: wait this long after /readyz before reading RSS")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write CPU profiles of each chatwire rate step to `DIR`/host-<rate>.pprof and plugin-<rate>.pprof (and of the sends steps, together, to host-sends.pprof and plugin-sends.pprof) (adapter-host run --cpuprofile, --plugin-cpuprofile; read with go tool pprof -top)")
	fs.StringVar(&o.redisBin, "redis-server", "redis-server", "redis-server executable")
	fs.StringVar(&o.dir, "dir", "", "keep logs and configs in `DIR` (default: a temporary directory, removed at the end)")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress lines on stderr")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (see --help)", fs.Arg(0))
	}
	var err error
	if o.rates, err = intList("--rates", *rates); err != nil {
		return nil, err
	}
	if o.sendCallers, err = intList("--send-callers", *callers); err != nil {
		return nil, err
	}
	for _, t := range strings.Split(*targets, ",") {
		t = strings.TrimSpace(t)
		if t != targetChatwire && t != targetBaseline {
			return nil, fmt.Errorf("--targets: %q: want chatwire or baseline", t)
		}
		o.targets = append(o.targets, t)
	}
	switch {
	case o.duration <= 0:
		return nil, errors.New("--duration must be positive")
	case o.warmup < 0 || o.drain <= 0 || o.sendDuration < 0 || o.settle < 0:
		return nil, errors.New("--warmup, --send-duration and --settle must not be negative, --drain must be positive")
	case o.conns < 1:
		return nil, errors.New("--conns must be at least 1")
	case o.memoryBots == 1 || o.memoryBots < 0:
		return nil, errors.New("--memory-bots must be 0 (no memory step) or at least 2")
	}
	return o, nil
}

func intList(name, s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%s: %q: want positive integers separated by commas", name, f)
		}
		out = append(out, n)
	}
	return out, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	rep, err := bench(ctx, o, stderr)
	if rep != nil {
		printReport(stdout, rep)
	}
	return err
}

// bench runs every step o asks for. On an error it returns what was measured so far.
func bench(ctx context.Context, o *options, progress io.Writer) (*report, error) {
	if o.quiet {
		progress = io.Discard
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(progress, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
	}
	redisBin, err := exec.LookPath(o.redisBin)
	if err != nil {
		return nil, fmt.Errorf("redis-server not found (Debian: apt-get install redis-server; make deps installs it): %w", err)
	}
	dir := o.dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "chatwire-bench-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if o.cpuprofile != "" {
		if err := os.MkdirAll(o.cpuprofile, 0o755); err != nil {
			return nil, err
		}
	}
	logf("building adapter-host and baseline")
	hostBin, baselineBin, err := build(dir)
	if err != nil {
		return nil, err
	}
	emu, err := startEmulator()
	if err != nil {
		return nil, err
	}
	defer emu.srv.Close()
	e := &env{dir: dir, hostBin: hostBin, baselineBin: baselineBin, redisBin: redisBin, emu: emu, sec: newSecrets()}
	emu.AddApp(e.sec.corpID, e.sec.corpSecret, e.sec.agentID)
	rep := &report{Dir: o.dir}

	for _, rate := range o.rates {
		for _, t := range o.targets {
			label := fmt.Sprintf("%s-%d", t, rate)
			prof := ""
			if t == targetChatwire && o.cpuprofile != "" {
				if prof, err = filepath.Abs(filepath.Join(o.cpuprofile, fmt.Sprintf("host-%d.pprof", rate))); err != nil {
					return rep, err
				}
			}
			r, err := e.start(t, label, prof)
			if err != nil {
				return rep, fmt.Errorf("%s: %w", label, err)
			}
			logf("%s: offering %d callbacks/s for %v + %v warm-up", label, rate, o.duration, o.warmup)
			res, err := runEvents(ctx, r, e.sec, stepOptions{rate: rate, warmup: o.warmup, duration: o.duration, conns: o.conns, drain: o.drain})
			r.stop()
			if res != nil {
				res.Warnings, res.TopWarning = logProblems(r.main.log)
				rep.Events = append(rep.Events, res)
			}
			if err != nil {
				return rep, fmt.Errorf("%s: %w\n%s log, its end:\n%s", label, err, r.main.name, r.main.tail())
			}
		}
	}
	if o.sendDuration > 0 {
		for _, t := range o.targets {
			prof := ""
			if t == targetChatwire && o.cpuprofile != "" {
				if prof, err = filepath.Abs(filepath.Join(o.cpuprofile, "host-sends.pprof")); err != nil {
					return rep, err
				}
			}
			r, err := e.start(t, t+"-sends", prof)
			if err != nil {
				return rep, fmt.Errorf("%s sends: %w", t, err)
			}
			for _, c := range o.sendCallers {
				logf("%s: sends with %d callers for %v", t, c, o.sendDuration)
				res, err := runSends(ctx, r, emu, c, o.sendDuration, o.minSends, fmt.Sprintf("bench-%s-%d", t, c))
				if res != nil {
					res.Warnings, res.TopWarning = logProblems(r.main.log) // so far: the log is shared by the steps
					rep.Sends = append(rep.Sends, res)
				}
				if err != nil {
					r.stop()
					return rep, fmt.Errorf("%s sends: %w", t, err)
				}
			}
			r.stop()
		}
	}
	if o.memoryBots > 0 {
		logf("memory: a host with 1 bot, then one with %d", o.memoryBots)
		m, err := runMemory(ctx, e, o.memoryBots, o.settle)
		if err != nil {
			return rep, fmt.Errorf("memory: %w", err)
		}
		rep.Memory = m
	}
	return rep, nil
}
