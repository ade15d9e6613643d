package eventlog

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/seed-a64d9e1f/chatwire/internal/redistest"
)

// benchLogs opens each implementation for a benchmark.
func benchLogs(b *testing.B, fn func(b *testing.B, l Log)) {
	b.Run("memory", func(b *testing.B) {
		l := NewMemory(Options{MaxLen: 1 << 30})
		defer l.Close()
		fn(b, l)
	})
	b.Run("redis", func(b *testing.B) {
		srv := redistest.Start(b)
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
		defer rdb.Close()
		l := NewRedis(rdb, "bench:events:{b}", "bench:dedup:{b}:", Options{MaxLen: 1 << 30})
		defer l.Close()
		rdb.ConfigResetStat(context.Background())
		cpu, host := redisCPU(b, rdb), hostCPU()
		fn(b, l)
		reportRedisCPU(b, rdb, cpu)
		reportHostCPU(b, host)
		reportScripts(b, rdb)
	})
}

// reportScripts reports the script calls (EVALSHA, EVAL) Redis ran per operation since its
// statistics were reset: below 1 when appends share calls.
func reportScripts(b *testing.B, rdb *redis.Client) {
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	calls := 0
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimPrefix(strings.TrimSpace(line), "cmdstat_"), ":calls=")
		if ok && (name == "evalsha" || name == "eval") {
			n, _, _ := strings.Cut(rest, ",")
			c, _ := strconv.Atoi(n)
			calls += c
		}
	}
	b.ReportMetric(float64(calls)/float64(b.N), "scripts/op")
}

// hostCPU returns the CPU time this process has used, in seconds (getrusage).
func hostCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// reportHostCPU reports this process's CPU time since start per operation (the client side:
// the log's code, go-redis and its syscalls; the benchmark's own loop is in it too).
func reportHostCPU(b *testing.B, start float64) {
	b.ReportMetric((hostCPU()-start)*1e6/float64(b.N), "host-µs/op")
}

// redisCPU returns the CPU time redis-server has used, in seconds (INFO cpu).
func redisCPU(b *testing.B, rdb *redis.Client) float64 {
	info, err := rdb.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatal(err)
			}
			total += f
		}
	}
	return total
}

// reportRedisCPU reports redis-server's CPU time since start per operation: what Redis
// spends on one, whatever the machine's load does to the wall time.
func reportRedisCPU(b *testing.B, rdb *redis.Client, start float64) {
	b.ReportMetric((redisCPU(b, rdb)-start)*1e6/float64(b.N), "redis-µs/op")
}

var benchData = []byte(`{"id":"msg-1","bot":"hr","platform":"wecom","kind":"message","chat":{"id":"zhangsan","type":"direct"},"sender":{"id":"zhangsan","name":"Zhang San"},"text":"hello there","time":"2026-12-04T20:00:00Z"}`)

// BenchmarkAppend: one event appended with its dedup key, as a webhook does.
func BenchmarkAppend(b *testing.B) {
	benchLogs(b, func(b *testing.B, l Log) {
		ctx := context.Background()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i++
			if _, err := l.Append(ctx, Record{Kind: "message", Key: "zhangsan", Data: benchData, Dedup: "ev-" + strconv.Itoa(i)}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkAppendConcurrent: 8 goroutines append one event each at a time to one log, as the
// host's webhook handlers do under load (8 connections, one bot).
func BenchmarkAppendConcurrent(b *testing.B) {
	benchLogs(b, func(b *testing.B, l Log) {
		ctx := context.Background()
		b.ReportAllocs()
		b.ResetTimer()
		var n atomic.Int64
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for {
					i := n.Add(1)
					if i > int64(b.N) {
						return
					}
					if _, err := l.Append(ctx, Record{Kind: "message", Key: "zhangsan", Data: benchData, Dedup: "ev-" + strconv.FormatInt(i, 10)}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	})
}

// BenchmarkAppendToRead: the time from an append to a waiting reader having the entry.
func BenchmarkAppendToRead(b *testing.B) {
	benchLogs(b, func(b *testing.B, l Log) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		got := make(chan ID, 1)
		go func() {
			var pos ID
			for {
				es, err := l.Read(ctx, pos, 100)
				if err != nil {
					return
				}
				for _, e := range es {
					got <- e.ID
				}
				pos = es[len(es)-1].ID
			}
		}()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i++
			a, err := l.Append(ctx, Record{Kind: "message", Key: "zhangsan", Data: benchData, Dedup: "ev-" + strconv.Itoa(i)})
			if err != nil {
				b.Fatal(err)
			}
			if id := <-got; id != a[0].ID {
				b.Fatalf("reader got %v, want %v", id, a[0].ID)
			}
		}
	})
}

// BenchmarkAppendFullLog: one event appended to a log at MaxLen whose entries a reader has
// consumed, the steady state of a host that has run for a while: appends make room.
func BenchmarkAppendFullLog(b *testing.B) {
	srv := redistest.Start(b)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	l := NewRedis(rdb, "bench:events:{f}", "bench:dedup:{f}:", Options{MaxLen: 10000})
	defer l.Close()
	ctx := context.Background()
	i := 0
	appendOne := func() {
		i++
		a, err := l.Append(ctx, Record{Kind: "message", Key: "zhangsan", Data: benchData, Dedup: "ev-" + strconv.Itoa(i)})
		if err != nil {
			b.Fatal(err)
		}
		if i%100 == 0 { // a reader marks what it received, as an SSE stream does every 50 ms
			if err := l.Consumed(ctx, a[0].ID); err != nil {
				b.Fatal(err)
			}
		}
	}
	for range 10000 {
		appendOne()
	}
	b.ReportAllocs()
	cpu := redisCPU(b, rdb)
	for b.Loop() {
		appendOne()
	}
	reportRedisCPU(b, rdb, cpu)
}
