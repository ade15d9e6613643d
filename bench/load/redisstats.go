package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis has no CPU profile to read; its INFO commandstats counts, per command, the calls and
// the microseconds spent in them, which tells where a target's Redis time per event goes. A
// script's commands are counted on their own and again inside the script's time (evalsha).
// The microseconds are wall time from the command's start to its end: when the machine is
// busy they include the time Redis waited for a CPU in the middle of a command, so compare
// targets within one run rather than with a quiet benchmark.

// cmdStat is one command's counters from INFO commandstats.
type cmdStat struct {
	Calls int64
	Usec  int64
}

// redisCmd is one command's share of a step: calls and microseconds per event.
type redisCmd struct {
	Name  string
	Calls float64 // per event
	Usec  float64 // per event
}

// commandStats reads INFO commandstats of the Redis at addr; nil when it cannot (the step's
// report then has no Redis breakdown, nothing else is lost).
func commandStats(addr string) map[string]cmdStat {
	if addr == "" {
		return nil
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, Protocol: 2})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil
	}
	return parseCommandStats(info)
}

// parseCommandStats parses lines such as
// "cmdstat_evalsha:calls=19318,usec=618328,usec_per_call=32.01,rejected_calls=0,failed_calls=8".
func parseCommandStats(info string) map[string]cmdStat {
	out := map[string]cmdStat{}
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		name, fields, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		name, found := strings.CutPrefix(name, "cmdstat_")
		if !ok || !found {
			continue
		}
		var s cmdStat
		for f := range strings.SplitSeq(fields, ",") {
			k, v, _ := strings.Cut(f, "=")
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				continue
			}
			switch k {
			case "calls":
				s.Calls = n
			case "usec":
				s.Usec = n
			}
		}
		out[name] = s
	}
	return out
}

// perEvent returns what happened between before and after, per event, costliest first;
// INFO itself (the measurement) is left out.
func perEvent(before, after map[string]cmdStat, events int) []redisCmd {
	if before == nil || after == nil || events <= 0 {
		return nil
	}
	var out []redisCmd
	for name, a := range after {
		b := before[name]
		if name == "info" || a.Calls <= b.Calls {
			continue
		}
		out = append(out, redisCmd{Name: name, Calls: float64(a.Calls-b.Calls) / float64(events), Usec: float64(a.Usec-b.Usec) / float64(events)})
	}
	slices.SortFunc(out, func(x, y redisCmd) int {
		if x.Usec != y.Usec {
			if x.Usec > y.Usec {
				return -1
			}
			return 1
		}
		return strings.Compare(x.Name, y.Name)
	})
	return out
}

// printRedisCommands writes, per step, the commands that took the most of Redis's time.
func printRedisCommands(w io.Writer, events []*eventResult) {
	var rows []string
	for _, r := range events {
		if len(r.Redis) == 0 {
			continue
		}
		var parts []string
		for i, c := range r.Redis {
			if i == 6 {
				break
			}
			parts = append(parts, fmt.Sprintf("%s %.2f × %.1f µs", strings.ReplaceAll(c.Name, "|", `\|`), c.Calls, c.Usec/c.Calls))
		}
		rows = append(rows, fmt.Sprintf("| %d | %s | %s |", r.Rate, r.Target, strings.Join(parts, "; ")))
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintln(w, "\nRedis commands per event in the measured window (INFO commandstats: calls per event × µs per call, the costliest first; a script's time includes the commands it runs, which are also listed on their own; the µs are wall time inside Redis, so on a busy machine they include waits for a CPU):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| offered/s | target | Redis commands per event |")
	fmt.Fprintln(w, "|---|---|---|")
	for _, row := range rows {
		fmt.Fprintln(w, row)
	}
}
