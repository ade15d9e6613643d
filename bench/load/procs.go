package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// cpuTime returns utime+stime of pid (the process alone, not its waited-for children).
func cpuTime(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// "pid (comm) state ppid ..."; comm may contain spaces, so count fields after the ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	// After ')': state(3) ppid(4) ... utime is field 14, stime 15 of the whole line.
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// statusKiB returns a "Vm…:" field of /proc/<pid>/status in KiB (VmHWM: peak RSS, VmRSS).
func statusKiB(pid int, field string) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == field+":" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

// children returns the pids of pid's direct children. Go forks from whichever thread runs
// the goroutine, so every thread's list is read.
func children(pid int) []int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var out []int
	for _, f := range tasks {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, field := range strings.Fields(string(data)) {
			if c, err := strconv.Atoi(field); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

// loadAvg returns the 1-minute load average of the machine.
func loadAvg() float64 {
	data, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// logProblems counts the WARN and ERROR lines of a JSON log (slog's JSON handler: the host
// and its plugin) and names the most frequent message.
func logProblems(path string) (n int, top string) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, ""
	}
	counts := map[string]int{}
	for line := range strings.SplitSeq(string(data), "\n") {
		if !strings.Contains(line, `"level":"WARN"`) && !strings.Contains(line, `"level":"ERROR"`) {
			continue
		}
		n++
		msg := line
		if _, after, ok := strings.Cut(line, `"msg":"`); ok {
			msg, _, _ = strings.Cut(after, `"`)
		}
		counts[msg]++
	}
	best := 0
	for m, c := range counts {
		if c > best || (c == best && m < top) {
			best, top = c, m
		}
	}
	if n > 0 {
		top = fmt.Sprintf("%dx %q", best, top)
	}
	return n, top
}

// freeAddr returns a free 127.0.0.1:port.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// proc is a child process started by the tool, in its own process group (so a host's
// plugin goes with it), its output in a log file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func startProc(name, logPath string, env []string, bin string, args ...string) (*proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); f.Close(); close(p.done) }()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// tail returns the end of the process's log, for error messages.
func (p *proc) tail() string {
	data, _ := os.ReadFile(p.log)
	if len(data) > 3000 {
		data = data[len(data)-3000:]
	}
	return string(data)
}

// stopGrace is how long a process may take to stop after SIGTERM.
const stopGrace = 20 * time.Second

// stop ends the process with SIGTERM (a host then stops its plugin and writes its profile),
// then SIGKILLs its process group if it lingers past stopGrace; it reports whether it had to.
func (p *proc) stop() (killed bool) {
	if p == nil || p.exited() {
		return false
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopGrace):
		killed = true
		syscall.Kill(-p.pid(), syscall.SIGKILL)
		<-p.done
	}
	syscall.Kill(-p.pid(), syscall.SIGKILL) // anything left in the group (a plugin)
	return killed
}

// waitHTTP polls url until it answers 200, the process exits, or limit passes.
func waitHTTP(p *proc, url string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("%s exited before it was ready: %v\n%s", p.name, p.err, p.tail())
		}
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready after %v:\n%s", p.name, limit, p.tail())
}

// startRedis runs redis-server on a free loopback port without persistence.
func startRedis(bin, dir string) (*proc, string, error) {
	for range 5 { // the port may be taken between choosing and binding it
		addr, err := freeAddr()
		if err != nil {
			return nil, "", err
		}
		_, port, _ := net.SplitHostPort(addr)
		p, err := startProc("redis", filepath.Join(dir, "redis-"+port+".log"), nil, bin,
			"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
		if err != nil {
			return nil, "", err
		}
		rdb := redis.NewClient(&redis.Options{Addr: addr})
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) && !p.exited() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err = rdb.Ping(ctx).Err()
			cancel()
			if err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		rdb.Close()
		if err == nil && !p.exited() {
			return p, addr, nil
		}
		p.stop()
	}
	return nil, "", errors.New("redis-server did not start on a free port in 5 tries")
}

// moduleRoot returns the directory of chatwire's go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the chatwire module: run from the checkout")
	}
	return filepath.Dir(mod), nil
}

// build compiles the host and the baseline from the checkout into dir.
func build(dir string) (host, baseline string, err error) {
	root, err := moduleRoot()
	if err != nil {
		return "", "", err
	}
	host, baseline = filepath.Join(dir, "adapter-host"), filepath.Join(dir, "baseline")
	for _, b := range [][2]string{{host, "./cmd/adapter-host"}, {baseline, "./bench/baseline"}} {
		cmd := exec.Command("go", "build", "-o", b[0], b[1])
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("go build %s: %v\n%s", b[1], err, out)
		}
	}
	return host, baseline, nil
}
