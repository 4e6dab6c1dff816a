// ctxstale: gRPC calls served by (*grpc.Server).ServeHTTP behind a middleware that stacks a
// value context and a cancel context on the HTTP/2 stream's context, for
// tests/test_servehttp_stale_ctx.py. On the requests named by -stale, the middleware
// prints the addresses the agent's context join walks through,
//
//	CTX <request> <cancel ctx> <value ctx> <connection-level ctx>
//
// (hex: the cancel context it made, its parent the value context, and the stream
// context's grandparent, a context of the connection) and waits for a stdin line, so the
// test can leave behind what a request long over would: an entry keyed by the cancel
// context's address whose parent is the value context's — recycled addresses, as seen
// under connection churn. The calls are sequential Health/Check calls on one connection.
//
// -nested: a plain gRPC server instead (tests/test_traces_stale_ctx.py), whose Health/Check
// of service "outer" calls Check of service "inner" on the same server with a value
// context made from its own. On the requests named by -stale, before that call, it prints
// what the trace walk (bpf_src/trace_ctx.h request_ctx_of) passes through,
//
//	NEST <request> <handler ctx> <its parent>
//
// and waits for a stdin line, so the test can leave behind what a closed connection's
// context leaves at a recycled address: a noted connection context keyed by the handler
// context's address.
//
// Handshake: -wait-start prints "READY <pid>" and waits for a line; -hold prints
// "DONE <calls>" at the end and waits for a line or EOF.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"unsafe"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"pyhttp2probe/harness"
)

type mwKey struct{}

// addr is a context's data pointer: the address the agent keys contexts by.
func addr(c context.Context) uintptr { return (*[2]uintptr)(unsafe.Pointer(&c))[1] }

// parentOf reads the data word of the parent interface every context type of package
// context keeps at offset 0 (what the agent's walk reads).
func parentOf(p uintptr) uintptr { return *(*uintptr)(unsafe.Pointer(p + 8)) }

func die(err error) {
	fmt.Fprintln(os.Stderr, "ctxstale:", err)
	os.Exit(1)
}

// nestHealth: Check("outer") makes a nested Check("inner") with a context made from its own.
type nestHealth struct {
	healthpb.UnimplementedHealthServer
	inner healthpb.HealthClient
	stale map[int64]bool
	seen  atomic.Int64
}

func (h *nestHealth) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if req.Service == "outer" {
		d := context.WithValue(ctx, mwKey{}, "nested")
		if n := h.seen.Add(1); h.stale[n] {
			harness.Announce(fmt.Sprintf("NEST %d %x %x", n, addr(ctx), parentOf(addr(ctx))))
			harness.WaitLine()
		}
		if _, err := h.inner.Check(d, &healthpb.HealthCheckRequest{Service: "inner"}); err != nil {
			return nil, err
		}
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func main() {
	calls := flag.Int("calls", 10, "sequential Health/Check calls")
	nested := flag.Bool("nested", false, "a plain gRPC server whose outer Check calls an inner one")
	staleList := flag.String("stale", "", "comma-separated request numbers (from 1) that print CTX and wait")
	waitStart := flag.Bool("wait-start", false, "print READY <pid>, wait for a stdin line")
	hold := flag.Bool("hold", false, "print DONE at the end, wait for a stdin line or EOF")
	flag.Parse()
	stale := map[int64]bool{}
	for _, f := range strings.Split(*staleList, ",") {
		if n, err := strconv.Atoi(f); err == nil {
			stale[int64(n)] = true
		}
	}

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		die(err)
	}
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		die(err)
	}
	client := healthpb.NewHealthClient(cc)
	srv := grpc.NewServer()
	service := ""
	if *nested {
		healthpb.RegisterHealthServer(srv, &nestHealth{inner: client, stale: stale})
		service = "outer"
		go srv.Serve(lis)
	} else {
		healthpb.RegisterHealthServer(srv, health.NewServer())
		serveHTTP(srv, lis, stale)
	}

	if *waitStart {
		harness.Announce(fmt.Sprintf("READY %d", os.Getpid()))
		harness.WaitLine()
	}
	for i := 0; i < *calls; i++ {
		if _, err := client.Check(context.Background(), &healthpb.HealthCheckRequest{Service: service}); err != nil {
			die(err)
		}
	}
	cc.Close()
	if *hold {
		harness.Announce(fmt.Sprintf("DONE %d", *calls))
		harness.WaitLine()
	}
}

// serveHTTP serves srv through (*grpc.Server).ServeHTTP behind the middleware.
func serveHTTP(srv *grpc.Server, lis net.Listener, stale map[int64]bool) {
	var seen atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := context.WithValue(r.Context(), mwKey{}, "ctxstale")
		m, cancel := context.WithCancel(v)
		defer cancel()
		if n := seen.Add(1); stale[n] {
			grand := parentOf(parentOf(addr(r.Context())))
			harness.Announce(fmt.Sprintf("CTX %d %x %x %x", n, addr(m), addr(v), grand))
			harness.WaitLine()
		}
		srv.ServeHTTP(w, r.WithContext(m))
	})
	hs := &http.Server{Handler: h, Protocols: new(http.Protocols)}
	hs.Protocols.SetUnencryptedHTTP2(true)
	go hs.Serve(lis)
}
