package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }
func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond)) }

func mib(kb int) float64 { return float64(kb) / 1024 }

func ratio(a, b float64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

// printReport writes rep as Markdown tables.
func printReport(w io.Writer, rep *report) {
	if len(rep.Events) > 0 {
		fmt.Fprintln(w, "\n### Webhook → event on SSE (open loop, latency from each callback's scheduled time)")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| offered/s | target | achieved/s | SSE p50 | SSE p99 | SSE max | 200 p99 | lost | dup | non-200 | CPU per event | peak RSS | load avg |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|")
		for _, r := range rep.Events {
			var parts, rss []string
			for _, p := range r.CPU {
				if r.Events > 0 {
					parts = append(parts, fmt.Sprintf("%s %.0f", p.Name, float64(p.CPU)/float64(r.Events)/float64(time.Microsecond)))
				}
				rss = append(rss, fmt.Sprintf("%s %.1f", p.Name, float64(p.PeakKB)/1024))
			}
			fmt.Fprintf(w, "| %d | %s | %.0f | %s | %s | %s | %s | %d | %d | %d | %s (%s) | %s MiB | %.1f |\n",
				r.Rate, r.Target, r.Achieved, ms(r.P50), ms(r.P99), ms(r.Max), ms(r.AckP99), r.Lost, r.Dup, r.Errors,
				us(r.cpuPerEvent()), strings.Join(parts, ", "), strings.Join(rss, ", "), r.Load1)
		}
		var notes []string
		for _, r := range rep.Events {
			if r.Warnings > 0 {
				notes = append(notes, fmt.Sprintf("%s at %d/s: %d WARN/ERROR log lines, most often %s", r.Target, r.Rate, r.Warnings, r.TopWarning))
			}
		}
		printNotes(w, notes)
		if rows := eventRatios(rep.Events); len(rows) > 0 {
			fmt.Fprintln(w)
			fmt.Fprintln(w, "| offered/s | chatwire / baseline: SSE p50 | SSE p99 | CPU per event |")
			fmt.Fprintln(w, "|---|---|---|---|")
			for _, row := range rows {
				fmt.Fprintln(w, row)
			}
		}
		printRedisCommands(w, rep.Events)
	}
	if len(rep.Sends) > 0 {
		fmt.Fprintln(w, "\n### Sends: POST /v1/bots/hr/messages → answer (closed loop)")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| callers | target | sends/s | p50 | p99 | max | CPU per send | non-200 | not at WeCom exactly once | load avg |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
		for _, r := range rep.Sends {
			var parts []string
			for _, p := range r.CPU {
				if r.OK > 0 {
					parts = append(parts, fmt.Sprintf("%s %.0f", p.Name, float64(p.CPU)/float64(r.OK)/float64(time.Microsecond)))
				}
			}
			fmt.Fprintf(w, "| %d | %s | %.0f | %s | %s | %s | %s (%s) | %d | %d | %.1f |\n",
				r.Callers, r.Target, r.PerSec, ms(r.P50), ms(r.P99), ms(r.Max), us(r.CPUPerSend), strings.Join(parts, ", "), r.Errors, r.Mismatch, r.Load1)
		}
		var notes []string
		for _, r := range rep.Sends {
			if r.Warnings > 0 {
				notes = append(notes, fmt.Sprintf("%s sends, up to %d callers: %d WARN/ERROR log lines, most often %s", r.Target, r.Callers, r.Warnings, r.TopWarning))
			}
		}
		printNotes(w, notes)
		var rows []string
		for _, a := range rep.Sends {
			for _, b := range rep.Sends {
				if a.Target == targetChatwire && b.Target == targetBaseline && a.Callers == b.Callers {
					rows = append(rows, fmt.Sprintf("| %d | %s | %s | %s | %s |", a.Callers, ratio(float64(a.P50), float64(b.P50)),
						ratio(float64(a.P99), float64(b.P99)), ratio(a.PerSec, b.PerSec), ratio(float64(a.CPUPerSend), float64(b.CPUPerSend))))
				}
			}
		}
		if len(rows) > 0 {
			fmt.Fprintln(w)
			fmt.Fprintln(w, "| callers | chatwire / baseline: p50 | p99 | throughput | CPU per send |")
			fmt.Fprintln(w, "|---|---|---|---|---|")
			for _, row := range rows {
				fmt.Fprintln(w, row)
			}
		}
	}
	if m := rep.Memory; m != nil {
		fmt.Fprintln(w, "\n### Memory: a host with N WeCom bots (emulator), RSS after start")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| bots | ready after | host RSS | plugin RSS | after a send and a callback per bot: host | plugin | host + plugin peak | gettoken calls at start | stopped after SIGTERM |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
		for _, s := range []memSample{m.One, m.Many} {
			stop := fmt.Sprintf("%.1f s", s.Stop.Seconds())
			if s.Killed {
				stop = fmt.Sprintf("no: killed after %.0f s", stopGrace.Seconds())
			}
			fmt.Fprintf(w, "| %d | %.1f s | %.1f MiB | %.1f MiB | %.1f MiB | %.1f MiB | %.1f MiB | %d | %s |\n", s.Bots, s.Ready.Seconds(),
				mib(s.HostKB), mib(s.PluginKB), mib(s.HostActiveKB), mib(s.PluginActiveKB), mib(s.HostPeakKB+s.PluginPeakKB), s.TokenRequests, stop)
		}
		var notes []string
		for _, s := range []memSample{m.One, m.Many} {
			notes = append(notes, fmt.Sprintf("host with %d bot(s): one send per bot: %v; one callback per bot: %v", s.Bots, s.Sends, s.Callbacks))
			if s.Warnings > 0 {
				notes = append(notes, fmt.Sprintf("host with %d bot(s): %d WARN/ERROR log lines, most often %s", s.Bots, s.Warnings, s.TopWarning))
			}
		}
		printNotes(w, notes)
		h, p := m.perBotKB()
		ha, pa := m.perActiveBotKB()
		fmt.Fprintf(w, "\nRSS per bot ((%d-bot RSS − 1-bot RSS) / %d): after start host %.1f + plugin %.1f = %.1f KiB; "+
			"after a send and a callback per bot: host %.1f + plugin %.1f = %.1f KiB\n", m.Many.Bots, m.Many.Bots-m.One.Bots, h, p, h+p, ha, pa, ha+pa)
	}
	if rep.Dir != "" {
		fmt.Fprintf(w, "\nlogs and configs: %s\n", rep.Dir)
	}
}

// printNotes prints lines under a table, as a list.
func printNotes(w io.Writer, notes []string) {
	if len(notes) == 0 {
		return
	}
	fmt.Fprintln(w)
	for _, n := range notes {
		fmt.Fprintln(w, "- "+n)
	}
}

func eventRatios(rs []*eventResult) []string {
	var rows []string
	for _, a := range rs {
		for _, b := range rs {
			if a.Target == targetChatwire && b.Target == targetBaseline && a.Rate == b.Rate {
				rows = append(rows, fmt.Sprintf("| %d | %s | %s | %s |", a.Rate, ratio(float64(a.P50), float64(b.P50)),
					ratio(float64(a.P99), float64(b.P99)), ratio(float64(a.cpuPerEvent()), float64(b.cpuPerEvent()))))
			}
		}
	}
	return rows
}
