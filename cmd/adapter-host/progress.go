package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// What send's progress shows. The bar counts the bytes sent to the host. The host's answer
// comes once the platform has the file (WeCom media/upload, a Graph upload session): neither
// the HTTP API (one JSON answer per send) nor the plugin protocol (a unary Send) carries the
// platform upload's progress, so once the host has every byte the CLI says it is waiting for
// the platform, with the time waited, instead of a bar it cannot fill honestly.

// isTerminal reports whether w is a terminal (a character device), where a bar redrawn with
// \r makes sense; a pipe, a file or a CI log gets plain lines.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// progressView shows the upload of one file. Its methods run on one goroutine at a time
// (run's, then, after done, the caller's finish).
type progressView struct {
	w         io.Writer
	tty       bool
	name, bot string
	size      int64
	lastTenth int64     // plain output: the last tenth printed
	hostDone  time.Time // when the host had every byte
}

func newProgress(w io.Writer, name string, size int64, bot string) *progressView {
	return &progressView{w: w, tty: isTerminal(w), name: name, bot: bot, size: size}
}

// run shows the upload (size bytes, sent so far) until done: on a terminal a bar redrawn in
// place, then a line counting the wait for the platform; otherwise a line "name: N%" each
// time another tenth is sent, then one line saying the host has it all.
func (v *progressView) run(sent *atomic.Int64, done <-chan struct{}) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			v.tick(sent.Load())
		}
	}
}

func (v *progressView) tick(n int64) {
	if !v.tty {
		v.plain(n)
		if n >= v.size && v.hostDone.IsZero() {
			v.hostDone = time.Now()
			fmt.Fprintf(v.w, "%s: the host has it all; waiting for bot %s's platform to take the upload\n", v.name, v.bot)
		}
		return
	}
	if n < v.size {
		drawBar(v.w, v.name, v.size, n)
		return
	}
	if v.hostDone.IsZero() {
		v.hostDone = time.Now()
		drawBar(v.w, v.name, v.size, n)
		fmt.Fprintln(v.w)
	}
	fmt.Fprintf(v.w, "\r\033[Kwaiting for bot %s's platform to take the upload: %.0fs", v.bot, time.Since(v.hostDone).Seconds())
}

// plain prints "name: N%" for the tenths reached since the last line.
func (v *progressView) plain(n int64) {
	if tenth := min(n*10/v.size, 10); tenth > v.lastTenth {
		v.lastTenth = tenth
		fmt.Fprintf(v.w, "%s: %d%%\n", v.name, tenth*10)
	}
}

// finish ends the display once the host answered (run has returned): the full bar on a
// terminal, over the waiting line; otherwise the last percentage if not printed yet.
func (v *progressView) finish(n int64) {
	if !v.tty {
		v.plain(n)
		return
	}
	if !v.hostDone.IsZero() {
		fmt.Fprint(v.w, "\r\033[K\033[A") // clear the waiting line; redraw the bar above it
	}
	drawBar(v.w, v.name, v.size, n)
	fmt.Fprintln(v.w)
}

func drawBar(w io.Writer, name string, size, n int64) {
	const width = 30
	frac := float64(n) / float64(size)
	if frac > 1 {
		frac = 1
	}
	filled := int(frac * width)
	fmt.Fprintf(w, "\r%s [%s%s] %3.0f%% %s/%s", name, strings.Repeat("=", filled), strings.Repeat(" ", width-filled),
		frac*100, byteSize(n), byteSize(size))
}
