package harness

import (
	"fmt"
	"syscall"
	"time"
	"unsafe"
)

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

// InitMonotonic pairs CLOCK_MONOTONIC with time.Now(); call it once, before MonoNow.
func InitMonotonic() {
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

// MonoNow is the current CLOCK_MONOTONIC time in nanoseconds (bpf_ktime_get_ns's clock).
func MonoNow() int64 { return monoBase + int64(time.Since(monoAnchor)) }
