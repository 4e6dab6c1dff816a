package harness

import (
	"bufio"
	"fmt"
	"os"
)

// The stdin handshake of tests/truth.py: with -wait-start a workload Announces
// "READY <pid>" and waits for a line before its load; with -hold it Announces "DONE" and
// waits for a line or EOF before exiting, so the tracer can drain while the process lives.

var stdinLines = bufio.NewReader(os.Stdin)

// WaitLine blocks until a line or EOF arrives on stdin.
func WaitLine() { stdinLines.ReadString('\n') }

// Announce prints s as one line on stdout and syncs it, so the test sees it at once.
func Announce(s string) {
	fmt.Fprintln(os.Stdout, s)
	os.Stdout.Sync()
}
