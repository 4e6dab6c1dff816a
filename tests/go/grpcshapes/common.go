package main

// Shared pieces of grpcshapes (same codec, clock, truth writer and stdin handshake as
// grpcwork; its own request header). Only grpc APIs present from v1.40.0 on are used here.

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"google.golang.org/grpc/encoding"
)

// ---- codec: messages are *rawMsg carrying bytes verbatim ----------------------------

const codecName = "pyh2raw"

type rawMsg struct{ b []byte }

type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) {
	m, ok := v.(*rawMsg)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
	}
	return m.b, nil
}

func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	m, ok := v.(*rawMsg)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	m.b = append(m.b[:0], data...)
	return nil
}

func (rawCodec) Name() string { return codecName }

func init() { encoding.RegisterCodec(rawCodec{}) }

// ---- request header ------------------------------------------------------------------

// reqHeader leads every first request message (fixed 32 bytes, little endian): the status
// the server returns, how many attempts of this call id it fails with UNAVAILABLE first
// (retry case), stream message count, per-message delay, the client id and reply size.
type reqHeader struct {
	Code      uint8
	FailFirst uint8
	NMsgs     uint16
	DelayNs   uint64
	ID        uint64
	RespLen   uint32
}

const hdrLen = 32

func (h reqHeader) encode(pad int) []byte {
	b := make([]byte, hdrLen+pad)
	b[0] = 1 // version
	b[1] = h.Code
	b[2] = h.FailFirst
	binary.LittleEndian.PutUint16(b[4:], h.NMsgs)
	binary.LittleEndian.PutUint64(b[8:], h.DelayNs)
	binary.LittleEndian.PutUint64(b[16:], h.ID)
	binary.LittleEndian.PutUint32(b[24:], h.RespLen)
	for i := hdrLen; i < len(b); i++ {
		b[i] = byte(i * 7)
	}
	return b
}

func decodeHeader(b []byte) (reqHeader, bool) {
	if len(b) < hdrLen || b[0] != 1 {
		return reqHeader{}, false
	}
	return reqHeader{
		Code:      b[1],
		FailFirst: b[2],
		NMsgs:     binary.LittleEndian.Uint16(b[4:]),
		DelayNs:   binary.LittleEndian.Uint64(b[8:]),
		ID:        binary.LittleEndian.Uint64(b[16:]),
		RespLen:   binary.LittleEndian.Uint32(b[24:]),
	}, true
}

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
