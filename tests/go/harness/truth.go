package harness

import (
	"bufio"
	"encoding/json"
	"os"
	"sync"
)

// TruthWriter writes ground truth as JSON lines, one per Write, safe for concurrent use.
// Opened with an empty path it writes nothing but still counts lines.
type TruthWriter struct {
	mu sync.Mutex
	f  *os.File
	w  *bufio.Writer
	n  int
}

// OpenTruth creates (truncates) path; "" gives a writer that only counts.
func OpenTruth(path string) (*TruthWriter, error) {
	if path == "" {
		return &TruthWriter{}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	return &TruthWriter{f: f, w: bufio.NewWriterSize(f, 1<<16)}, nil
}

// Write appends v as one JSON line; a value that does not marshal is a workload bug: panic.
func (t *TruthWriter) Write(v interface{}) {
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

// Count is how many lines Write was given.
func (t *TruthWriter) Count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n
}

// Close flushes and closes the file; the truth is complete only after it returns nil.
func (t *TruthWriter) Close() error {
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
