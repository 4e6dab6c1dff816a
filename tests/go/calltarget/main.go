// calltarget: a tiny program whose calls the loader tests trace with uprobes.
//
// Modes (first argument):
//
//	calls N   print the pid, wait for a line on stdin (so the test can attach first),
//	          then call target(i, i%3, 7, word(i)) for i in [0, N) and print "done".
//	loop M    print the pid, wait for a line on stdin, call bump(i) M times and print
//	          the elapsed nanoseconds (for the uprobe cost benchmark).
package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"time"
)

var words = []string{"", "a", "ab", "abc", "abcd", "abcde"}

// target has several return paths, so its body holds several RET instructions.
//
//go:noinline
func target(a, b, c int, s string) int {
	if a < 0 {
		return -1
	}
	if b == 0 {
		return a * 2
	}
	if len(s) > 3 {
		return a + b + c + len(s)
	}
	return a - b
}

var sink int

//go:noinline
func bump(i int) int {
	return i + 1
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: calltarget calls|loop N")
		os.Exit(2)
	}
	n, err := strconv.Atoi(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fmt.Println(os.Getpid())
	bufio.NewReader(os.Stdin).ReadString('\n')
	switch os.Args[1] {
	case "calls":
		for i := 0; i < n; i++ {
			sink += target(i, i%3, 7, words[i%len(words)])
		}
		fmt.Println("done")
	case "loop":
		start := time.Now()
		for i := 0; i < n; i++ {
			sink += bump(i)
		}
		fmt.Println(time.Since(start).Nanoseconds())
	}
}
