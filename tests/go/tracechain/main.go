// tracechain: a chain of three gRPC services for the trace-structure tests of pyhttp2probe
// (tests/test_traces.py, testkit/chain.py). One binary; each role is a process of its own:
//
//	-role c -listen ADDR -ready FILE -truth FILE          service C (tracechain.C)
//	-role b -listen ADDR -ready FILE -truth FILE -c ADDR  service B (tracechain.B), calls C
//	-role a -b ADDR -calls N -concurrency K -truth FILE   client A, calls B
//	-role d ...                                           client D: as A; run it from a
//	                                                      binary the agent does not trace
//
// Each client call carries its plan as payload (plan.go): B's method and status, its child
// calls to C (0..3; unary and server-streaming; sequential, or fanned out on goroutines with
// -fanout), C's statuses (some errors; B hands some of them back unchanged). For about
// -traceparent of its calls the client sends a W3C traceparent with fresh random ids.
//
// Truth, one JSON line per call: the client's (call id, B method, traceparent or null,
// observed and expected code, and the complete expected tree below the call: B's server
// span, B's calls to C, C's server spans, as {role, side, method, kind, code, children});
// B's and C's (per call served: the x-call-id and traceparent received, the status returned,
// B's calls to C with the codes it saw).
//
// Handshake (testkit/workload.py): -wait-start prints "READY <pid>" (servers: once serving,
// after writing -ready) and waits for a stdin line; clients then make their calls, servers
// serve until the next line, EOF or SIGTERM. -hold prints "DONE <calls>" at the end and
// waits for a line or EOF. A "SUMMARY {json}" line goes to stderr before DONE.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"pyhttp2probe/harness"
	"pyhttp2probe/harness/grpcharness"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "tracechain: "+format+"\n", args...)
	os.Exit(1)
}

func dial(addr string, n int) []*grpc.ClientConn {
	conns := make([]*grpc.ClientConn, n)
	for i := range conns {
		cc, err := grpc.NewClient(addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.CallContentSubtype(grpcharness.CodecName)))
		if err != nil {
			fail("dial %s: %v", addr, err)
		}
		conns[i] = cc
	}
	return conns
}

func main() {
	role := flag.String("role", "", "a | b | c | d")
	listen := flag.String("listen", "127.0.0.1:0", "b, c: listen address")
	ready := flag.String("ready", "", "b, c: write the listening address to FILE once serving")
	cAddr := flag.String("c", "", "b: address of C")
	cConns := flag.Int("c-conns", 1, "b: connections to C")
	bAddr := flag.String("b", "", "a, d: address of B")
	name := flag.String("name", "", "a, d: client name in call ids and plans (default: the role)")
	calls := flag.Int("calls", 100, "a, d: calls to B")
	concurrency := flag.Int("concurrency", 8, "a, d: goroutines making them")
	conns := flag.Int("conns", 2, "a, d: connections to B")
	seed := flag.Int64("seed", 1, "a, d: plan seed")
	tpFrac := flag.Float64("traceparent", 0.5, "a, d: fraction of calls sending a traceparent")
	fanFrac := flag.Float64("fanout", 0, "a, d: fraction of calls with 2+ children whose "+
		"children B makes concurrently, one goroutine each")
	timeout := flag.Duration("timeout", 30*time.Second, "a, d: per-call deadline")
	truthPath := flag.String("truth", "", "ground truth JSON lines")
	waitStart := flag.Bool("wait-start", false, "print READY <pid>, wait for a stdin line")
	hold := flag.Bool("hold", false, "print DONE at the end, wait for a stdin line or EOF")
	flag.Parse()
	harness.InitMonotonic()
	truth, err := harness.OpenTruth(*truthPath)
	if err != nil {
		fail("%v", err)
	}
	var summary interface{}
	switch *role {
	case "b", "c":
		if *role == "b" && *cAddr == "" {
			fail("-role b needs -c ADDR")
		}
		var signalled bool
		summary, signalled = runServer(*role, *listen, *ready, *cAddr, *cConns, truth, *waitStart)
		*hold = *hold && !signalled // stdin is still being read by the stop watcher
	case "a", "d":
		if *bAddr == "" {
			fail("-role %s needs -b ADDR", *role)
		}
		if *name == "" {
			*name = *role
		}
		cfg := clientConfig{name: *name, role: *role, calls: *calls, concurrency: *concurrency, seed: *seed,
			traceparentFrac: *tpFrac, fanFrac: *fanFrac, timeout: *timeout}
		cs := dial(*bAddr, *conns)
		if *waitStart {
			harness.Announce(fmt.Sprintf("READY %d", os.Getpid()))
			harness.WaitLine()
		}
		st := runClient(cfg, cs, truth)
		for _, cc := range cs {
			cc.Close()
		}
		summary = map[string]interface{}{"role": *role, "name": *name, "calls": st.calls.Load(),
			"mismatches": st.mismatches.Load(), "with_traceparent": st.withTraceparent.Load(),
			"by_code": counts(st.byCode[:])}
	default:
		fail("-role must be a, b, c or d")
	}
	if err := truth.Close(); err != nil {
		fail("truth: %v", err)
	}
	b, _ := json.Marshal(summary)
	fmt.Fprintf(os.Stderr, "SUMMARY %s\n", b)
	if *hold {
		harness.Announce(fmt.Sprintf("DONE %d", truth.Count()))
		harness.WaitLine()
	}
}

func counts(by []atomic.Int64) map[int]int64 {
	out := map[int]int64{}
	for code := range by {
		if n := by[code].Load(); n > 0 {
			out[code] = n
		}
	}
	return out
}

// runServer serves B or C until a stdin line (after the -wait-start one), EOF or SIGTERM,
// then stops gracefully. It says whether a signal stopped it.
func runServer(role, listen, ready, cAddr string, cConns int, truth *harness.TruthWriter, waitStart bool) (interface{}, bool) {
	s := &service{role: role, truth: truth}
	if role == "b" {
		s.toC = dial(cAddr, cConns)
	}
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		fail("listen %s: %v", listen, err)
	}
	srv := grpc.NewServer()
	srv.RegisterService(s.desc(), s)
	go srv.Serve(lis)
	if ready != "" {
		tmp := ready + ".tmp"
		if err := os.WriteFile(tmp, []byte(lis.Addr().String()+"\n"), 0o644); err != nil {
			fail("%v", err)
		}
		if err := os.Rename(tmp, ready); err != nil {
			fail("%v", err)
		}
	}
	stop := make(chan struct{})
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	harness.Announce(fmt.Sprintf("READY %d", os.Getpid()))
	go func() {
		if waitStart {
			harness.WaitLine()
		}
		harness.WaitLine()
		close(stop)
	}()
	signalled := false
	select {
	case <-stop:
	case <-sig:
		signalled = true
	}
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		srv.Stop()
		<-done
	}
	for _, cc := range s.toC {
		cc.Close()
	}
	return map[string]interface{}{"role": role, "served": s.served.Load(),
		"by_code": counts(s.byCode[:])}, signalled
}
