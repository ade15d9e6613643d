// Package procs lets a process run its Go code on one CPU while one is enough and on every
// CPU once it is busy (GOMAXPROCS chosen by load).
//
// Why: a chatwire host's work per request is small and mostly waits on sockets (the client,
// the plugin, Redis). With more than one CPU, every goroutine the host wakes (a socket became
// readable, a channel was sent to) makes Go's scheduler wake an idle thread on the other CPU
// to look for work, which finds none and sleeps again; on a virtual machine each such wake-up
// is an interrupt between CPUs. Measured with bench/load at 2,000 WeCom events/s on this
// project's 2-core machine (two alternating pairs of runs): the host's CPU per event was 151
// and 150 µs with every CPU, 134 and 126 µs with one, and its sends with 8 callers went no
// slower (6,125 and 7,535 against 7,272 and 7,692 a second). One CPU is a ceiling, though:
// a host that needs more than one must get them. So the Controller starts on one and watches
// the process's CPU time: a process using most of its one CPU gets every CPU at once, and one
// that has used little of them for a while goes back to one.
//
// No library does this (automaxprocs and Go's own default follow the CPU quota, not the
// load), so it is written here; it is a loop of one getrusage a second.
package procs

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"time"
)

// Defaults of Controller.
const (
	// DefaultEvery is how often the process's CPU use is read.
	DefaultEvery = time.Second
	// DefaultUp is the CPU use, in CPUs, at which a process on one CPU gets every CPU.
	DefaultUp = 0.6
	// DefaultDown is the CPU use under which a process on every CPU counts as calm.
	DefaultDown = 0.35
	// DefaultCalm is how many calm readings in a row send a process back to one CPU.
	DefaultCalm = 30
)

// Controller chooses GOMAXPROCS by load: one CPU while the process's CPU use stays under Up,
// the runtime's default (every CPU the process may use) from the first reading at or above
// it, and one CPU again after Calm readings in a row under Down. The zero value uses the
// defaults above and the process's own CPU time and GOMAXPROCS.
type Controller struct {
	Every time.Duration
	Up    float64
	Down  float64
	Calm  int
	Log   *slog.Logger

	// For tests: the process's CPU time (user + system) so far and whether it could be read,
	// and the GOMAXPROCS setters. Nil means the real ones.
	CPUTime func() (time.Duration, bool)
	One     func()     // run on one CPU
	All     func() int // run on the runtime's default; returns how many CPUs that is
}

// FromEnvironment reports whether the operator set GOMAXPROCS in the environment: then the
// process keeps it and no Controller should run.
func FromEnvironment() (int, bool) {
	v, ok := os.LookupEnv("GOMAXPROCS")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	return n, err == nil && n > 0
}

// Run starts the process on one CPU and adjusts it until ctx ends, then gives it back the
// runtime's default. It returns at once, doing nothing, when the runtime's default is one CPU
// or the process's CPU time cannot be read (not Linux or another Unix).
func (c *Controller) Run(ctx context.Context) {
	every, up, down, calm := c.Every, c.Up, c.Down, c.Calm
	if every <= 0 {
		every = DefaultEvery
	}
	if up <= 0 {
		up = DefaultUp
	}
	if down <= 0 {
		down = DefaultDown
	}
	if calm <= 0 {
		calm = DefaultCalm
	}
	cpuTime, one, all := c.CPUTime, c.One, c.All
	if cpuTime == nil {
		cpuTime = processCPUTime
	}
	if one == nil {
		one = func() { runtime.GOMAXPROCS(1) }
	}
	if all == nil {
		all = func() int { runtime.SetDefaultGOMAXPROCS(); return runtime.GOMAXPROCS(0) }
	}
	log := c.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cpus := all()
	last, ok := cpuTime()
	if cpus <= 1 || !ok {
		return
	}
	one()
	defer all()
	onAll, calmRun := false, 0
	lastAt := time.Now()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		used, ok := cpuTime()
		if !ok {
			continue
		}
		wall := now.Sub(lastAt)
		if wall <= 0 {
			continue
		}
		use := float64(used-last) / float64(wall)
		last, lastAt = used, now
		switch {
		case !onAll && use >= up:
			n := all()
			onAll, calmRun = true, 0
			log.Info("busy: Go code now runs on every CPU", "cpus", n, "cpu_use", round2(use))
		case onAll && use < down:
			calmRun++
			if calmRun >= calm {
				one()
				onAll = false
				log.Info("calm: Go code now runs on one CPU", "cpu_use", round2(use), "calm_for_s", int((time.Duration(calm) * every).Seconds()))
			}
		case onAll:
			calmRun = 0
		}
	}
}

func round2(f float64) float64 { return float64(int(f*100+0.5)) / 100 }
