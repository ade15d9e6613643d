package demo

import (
	"context"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// demo --no-echo prints a command for every bot; run as printed, they echo every message
// (it printed one, and the demo ended with "3 of 6 messages got no echo"), and the Python
// bot streams its answers to the AI bot word by word.
func TestDemoNoEchoCommandPerBot(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var out syncBuffer
	type result struct {
		s   demoSummary
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := runDemo(ctx, Options{Duration: 4 * time.Second, TokenLifetime: 12 * time.Second, Every: time.Second,
			Out: &out, NoEcho: true})
		done <- result{s, err}
	}()
	cmdRe := regexp.MustCompile(`(?m)^  (CHATWIRE_URL=\S+ CHATWIRE_API_KEY=\S+ python3 examples/python-bot/echo_bot.py (\S+))$`)
	var cmds [][]string
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if s := out.String(); strings.Contains(s, "connect your bots now") && strings.Count(s, "\n\n") >= 2 {
			cmds = cmdRe.FindAllStringSubmatch(s, -1)
			if len(cmds) > 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no bot commands printed:\n%s", out.String())
		}
	}
	var bots []string
	for _, c := range cmds {
		bots = append(bots, c[2])
		cmd := exec.Command("sh", "-c", "exec env "+c[1])
		cmd.Dir = "../.."
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
	}
	if strings.Join(bots, ",") != "echo,teams,tbot,ai" {
		t.Errorf("commands for bots %v; want echo, teams, tbot and ai", bots)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("demo: %v\n%s", r.err, out.String())
	}
	if r.s.UsersSent == 0 || r.s.EchoesSeen != r.s.UsersSent {
		t.Errorf("%d of %d messages echoed:\n%s", r.s.EchoesSeen, r.s.UsersSent, out.String())
	}
	// echo_bot.py streams its answers to the AI bot word by word: the user sees the echo.
	if r.s.AISent == 0 || r.s.AIWhole != r.s.AISent || r.s.AIStreamed != r.s.AISent || r.s.AIFrames < 2*r.s.AISent {
		t.Errorf("AI bot: %d of %d answers shown as the echo, %d streamed in %d frames; want all, streamed in more than one frame each:\n%s",
			r.s.AIWhole, r.s.AISent, r.s.AIStreamed, r.s.AIFrames, out.String())
	}
}
