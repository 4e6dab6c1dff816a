// h2exec: a net/http HTTP/2 server and client (h2c, prior knowledge) in one process,
// driven by stdin lines, that can replace its own image with syscall.Exec: the target of
// the agent's fault tests (tests/test_service_faults.py). Standard library only.
//
// Protocol (stdout lines answer stdin lines; stdin and stdout survive an exec):
//
//	start           prints "READY <pid> <port> <go version>"
//	load N          makes N GET requests to its own server over one h2c connection,
//	                prints "LOADED <n ok> <n failed>"
//	exec PATH ARG…  execs PATH with ARG… (the new image prints READY again; same pid)
//	quit or EOF     exits 0
//
// -exit-after D: sleep D, then exit 0 without listening (a process gone within a few ms
// of its exec, e.g. while the agent attaches to it). -wait-start is accepted and ignored
// (the testkit's handshake flag).
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	exitAfter := flag.Duration("exit-after", -1, "if >= 0: sleep this long, then exit (a short-lived process)")
	flag.Bool("wait-start", false, "ignored: this program always waits for stdin lines")
	flag.Parse()
	if *exitAfter >= 0 {
		time.Sleep(*exitAfter)
		return
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "h2exec:", err)
		os.Exit(1)
	}
	port := lis.Addr().(*net.TCPAddr).Port
	serveH2C(lis, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	client, closeIdle := h2cClient()
	fmt.Printf("READY %d %d %s\n", os.Getpid(), port, runtime.Version())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		switch {
		case len(f) == 2 && f[0] == "load":
			n, _ := strconv.Atoi(f[1])
			ok, failed := 0, 0
			for i := 0; i < n; i++ {
				resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/r%d", port, i))
				if err == nil {
					io.Copy(ioutil.Discard, resp.Body)
					resp.Body.Close()
				}
				if err == nil && resp.StatusCode == 200 {
					ok++
				} else {
					failed++
				}
			}
			fmt.Printf("LOADED %d %d\n", ok, failed)
		case len(f) >= 2 && f[0] == "exec":
			closeIdle()
			err := syscall.Exec(f[1], f[1:], os.Environ())
			fmt.Printf("EXECFAILED %v\n", err)
		case len(f) == 1 && f[0] == "quit":
			return
		default:
			fmt.Printf("UNKNOWN %q\n", in.Text())
		}
	}
}
