package main

// The test workloads' shared harness: a CLOCK_MONOTONIC clock comparable with
// bpf_ktime_get_ns, the ground-truth JSON-lines writer, and the stdin handshake
// (-wait-start / -hold) that tests/truth.py drives. Each workload links this file as
// harness.go (a symlink): they are separate main packages and some separate modules, so
// it is shared as source; tests/gobuild.py copies (and hashes) the link's target.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// ---- CLOCK_MONOTONIC -----------------------------------------------------------------

// Go's monotonic readings (runtime.nanotime) come from CLOCK_MONOTONIC on Linux but are
// not exposed as absolute values. We read CLOCK_MONOTONIC once through the raw syscall
// (the same clock as bpf_ktime_get_ns) next to a time.Now(), keeping the tightest pair, and
// then derive every timestamp as base + time.Since(anchor): cheap and exact to ~100 ns.
var (
	monoAnchor time.Time
	monoBase   int64
)

func rawMonotonic() int64 {
	var ts syscall.Timespec
	_, _, e := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 1 /* CLOCK_MONOTONIC */, uintptr(unsafe.Pointer(&ts)), 0)
	if e != 0 {
		panic(fmt.Sprintf("clock_gettime: %v", e))
	}
	return ts.Nano()
}

func initMonotonic() {
	best := time.Duration(1 << 62)
	for i := 0; i < 50; i++ {
		t0 := time.Now()
		m := rawMonotonic()
		t1 := time.Now()
		if d := t1.Sub(t0); d < best {
			best = d
			monoAnchor = t0.Add(d / 2)
			monoBase = m
		}
	}
}

func monoNow() int64 { return monoBase + int64(time.Since(monoAnchor)) }

// ---- JSON lines writer ---------------------------------------------------------------

type truthWriter struct {
	mu sync.Mutex
	f  *os.File
	w  *bufio.Writer
	n  int
}

func openTruth(path string) (*truthWriter, error) {
	if path == "" {
		return &truthWriter{}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	return &truthWriter{f: f, w: bufio.NewWriterSize(f, 1<<16)}, nil
}

func (t *truthWriter) write(v interface{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n++
	if t.w == nil {
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	t.w.Write(b)
	t.w.WriteByte('\n')
}

func (t *truthWriter) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n
}

func (t *truthWriter) close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.w == nil {
		return nil
	}
	if err := t.w.Flush(); err != nil {
		return err
	}
	return t.f.Close()
}

// ---- stdin handshake (-wait-start / -hold) -------------------------------------------

var stdinLines = bufio.NewReader(os.Stdin)

// waitLine blocks until a line or EOF arrives on stdin.
func waitLine() { stdinLines.ReadString('\n') }

func announce(s string) {
	fmt.Fprintln(os.Stdout, s)
	os.Stdout.Sync()
}
