// grpcwork: the gRPC accuracy workload of pyhttp2probe. One process runs K grpc servers
// and the clients that load them (N goroutines per connection, many streams in flight per
// connection, connection churn, every status code, client-side failures, nested calls) and
// writes ground truth: one JSON line per client RPC (-truth) and per server RPC
// (-server-truth), with CLOCK_MONOTONIC timestamps comparable with bpf_ktime_get_ns.
//
// With -serve-http every server is served through (*grpc.Server).ServeHTTP under net/http's
// HTTP/2 server (h2c) on the same port instead of grpc's own transport; -middleware (none,
// wrap, mixed) puts a middleware chain in front of it (servehttp.go); -h2-server xnet-h2c
// serves it through golang.org/x/net/http2/h2c.NewHandler instead. Clients are unchanged.
//
// Client truth line (one per RPC made by the client side, nested ones included):
//
//	id, kind (unary|server_stream|client_stream|bidi), method ("/pyhttp2probe.test.Work/Unary"),
//	service, short_method, server_port (for failure=unavailable: the port dialled, nothing
//	listens), code (status.Code(err) seen by the client), expected_code (what the plan asked
//	for; equal unless something is wrong), server_delay_ns (requested; for deadline/cancel
//	failures it is a long delay the call never waits out), client_start_ns, client_end_ns,
//	nested, nested_via ("" | "handler" | "interceptor"), parent_id (-1 unless nested),
//	conn_id (one per ClientConn; churn connections get fresh ids), churn, failure
//	("" | deadline | cancel | unavailable | deadline_past), n_msgs.
//
// Server truth line (one per RPC a handler ran): method, service, short_method, kind,
// server_port, code (returned by the handler), server_start_ns, server_end_ns (handler entry
// and exit), client_id (links to the client line), server_delay_ns.
//
// Counts are exact for the main goroutines (servers*conns-per-server*goroutines*rpcs plus
// nested calls); churn goroutines keep going until the main ones finish unless
// -churn-conns fixes their number. Read the truth files, not the flags, for totals.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"pyhttp2probe/harness"
	"pyhttp2probe/harness/grpcharness"
)

type clientTruth struct {
	ID            int64  `json:"id"`
	Kind          string `json:"kind"`
	Method        string `json:"method"`
	Service       string `json:"service"`
	ShortMethod   string `json:"short_method"`
	ServerPort    int    `json:"server_port"`
	Code          int    `json:"code"`
	ExpectedCode  int    `json:"expected_code"`
	ServerDelayNs int64  `json:"server_delay_ns"`
	StartNs       int64  `json:"client_start_ns"`
	EndNs         int64  `json:"client_end_ns"`
	Nested        bool   `json:"nested"`
	NestedVia     string `json:"nested_via"` // "" | "handler" | "interceptor"
	ParentID      int64  `json:"parent_id"`  // -1 unless nested
	ConnID        int    `json:"conn_id"`
	Churn         bool   `json:"churn"`
	Failure       string `json:"failure"` // "" | deadline | cancel | unavailable | deadline_past
	NMsgs         int    `json:"n_msgs"`
}

// A method's full name is a constant, as in protoc-gen-go-grpc's generated clients
// (Svc_Method_FullMethodName): a string literal in the binary's read-only data, which the
// agent's client probe reports by address instead of copying it.
type method struct {
	kind, service, short, fullName string
	desc                           *grpc.StreamDesc
}

func (m method) full() string { return m.fullName }

var (
	mUnary        = method{"unary", workService, "Unary", "/" + workService + "/Unary", nil}
	mUnaryB       = method{"unary", workService, "UnaryB", "/" + workService + "/UnaryB", nil}
	mPing         = method{"unary", otherService, "Ping", "/" + otherService + "/Ping", nil}
	mServerStream = method{"server_stream", workService, "ServerStream", "/" + workService + "/ServerStream", &grpc.StreamDesc{StreamName: "ServerStream", ServerStreams: true}}
	mClientStream = method{"client_stream", workService, "ClientStream", "/" + workService + "/ClientStream", &grpc.StreamDesc{StreamName: "ClientStream", ClientStreams: true}}
	mBidi         = method{"bidi", workService, "Bidi", "/" + workService + "/Bidi", &grpc.StreamDesc{StreamName: "Bidi", ServerStreams: true, ClientStreams: true}}
	unaryMethods  = []method{mUnary, mUnary, mUnaryB, mPing}
	failureKinds  = []string{"deadline", "cancel", "unavailable", "deadline_past"}
)

type config struct {
	servers, connsPerServer, goroutines, rpcs, churn, churnConns, streamMsgs int
	mix                                                                      string
	errors, clientFailures, nested                                           float64
	delayMax                                                                 time.Duration
	seed                                                                     int64
	truth, serverTruth                                                       string
	waitStart, hold, dialEarly, serveHTTP                                    bool
	middleware, h2Server                                                     string
	timeout                                                                  time.Duration
}

type conn struct {
	cc        *grpc.ClientConn
	id        int
	port      int
	serverIdx int
}

type workload struct {
	cfg         config
	kinds       []string // weighted: one entry per weight unit
	servers     []*workServer
	nestedConns []*conn
	deadConn    *conn
	truth       *harness.TruthWriter
	serverTruth *harness.TruthWriter
	nextID      int64
	nextConn    int64
	errCounter  uint64
	failCounter uint64
	nestCounter uint64
	byCode      [17]int64
	mismatch    int64
	stopChurn   chan struct{}
}

// nestReq, when present in a unary call's context, makes the client interceptor issue a
// nested call on the same goroutine (through the same ClientConn) before invoking.
type nestKey struct{}
type nestReq struct {
	c        *conn
	parentID int64
	rng      *rand.Rand
}

func (w *workload) interceptor(ctx context.Context, fullMethod string, req, reply interface{}, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if nr, ok := ctx.Value(nestKey{}).(*nestReq); ok && nr != nil {
		inner := context.WithValue(ctx, nestKey{}, (*nestReq)(nil))
		w.call(inner, nr.c, mPing, plan{delay: w.smallDelay(nr.rng)}, "interceptor", nr.parentID, false)
	}
	return invoker(ctx, fullMethod, req, reply, cc, opts...)
}

// nestedFromHandler is called by a server handler: a client call to another server.
func (w *workload) nestedFromHandler(ctx context.Context, target int, parentID int64) {
	c := w.nestedConns[target%len(w.nestedConns)]
	rng := rand.New(rand.NewSource(w.cfg.seed ^ parentID*7919))
	w.call(ctx, c, mPing, plan{delay: w.smallDelay(rng)}, "handler", parentID, false)
}

func (w *workload) smallDelay(rng *rand.Rand) time.Duration {
	if w.cfg.delayMax <= 0 {
		return 0
	}
	return time.Duration(rng.Int63n(int64(w.cfg.delayMax)/4 + 1))
}

func (w *workload) dial(serverIdx, port int) (*conn, error) {
	cc, err := grpc.Dial(fmt.Sprintf("127.0.0.1:%d", port),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.CallContentSubtype(grpcharness.CodecName)),
		grpc.WithUnaryInterceptor(w.interceptor))
	if err != nil {
		return nil, err
	}
	id := int(atomic.AddInt64(&w.nextConn, 1) - 1)
	return &conn{cc: cc, id: id, port: port, serverIdx: serverIdx}, nil
}

type plan struct {
	code    uint8
	delay   time.Duration
	nmsgs   int
	failure string
	nest    string // "" | handler | interceptor
}

func (w *workload) pick(rng *rand.Rand) (method, plan) {
	var m method
	switch w.kinds[rng.Intn(len(w.kinds))] {
	case "unary":
		m = unaryMethods[rng.Intn(len(unaryMethods))]
	case "server_stream":
		m = mServerStream
	case "client_stream":
		m = mClientStream
	default:
		m = mBidi
	}
	p := plan{nmsgs: 1 + rng.Intn(w.cfg.streamMsgs)}
	if w.cfg.delayMax > 0 {
		p.delay = time.Duration(rng.Int63n(int64(w.cfg.delayMax) + 1))
	}
	switch {
	case rng.Float64() < w.cfg.clientFailures:
		p.failure = failureKinds[atomic.AddUint64(&w.failCounter, 1)%uint64(len(failureKinds))]
		if p.failure == "deadline" || p.failure == "cancel" {
			p.delay = 200*time.Millisecond + time.Duration(rng.Int63n(int64(50*time.Millisecond)))
		}
	case rng.Float64() < w.cfg.errors:
		p.code = uint8(1 + atomic.AddUint64(&w.errCounter, 1)%16)
	}
	if m.kind == "unary" && p.failure == "" && rng.Float64() < w.cfg.nested {
		if atomic.AddUint64(&w.nestCounter, 1)%2 == 0 {
			p.nest = "handler"
		} else {
			p.nest = "interceptor"
		}
	}
	return m, p
}

var statusCancelled = 1

// call makes one RPC of any kind according to its plan and records its truth line.
func (w *workload) call(parent context.Context, c *conn, m method, p plan, nestedVia string, parentID int64, churn bool) {
	id := atomic.AddInt64(&w.nextID, 1) - 1
	expected := int(p.code)
	var ctx context.Context
	var cancel context.CancelFunc
	switch p.failure {
	case "deadline":
		ctx, cancel = context.WithTimeout(parent, time.Millisecond+time.Duration(id%3)*time.Millisecond)
		expected = 4
	case "deadline_past":
		ctx, cancel = context.WithDeadline(parent, time.Now().Add(-time.Millisecond))
		expected = 4
	case "cancel":
		ctx, cancel = context.WithTimeout(parent, w.cfg.timeout)
		t := time.AfterFunc(time.Millisecond+time.Duration(id%3)*time.Millisecond, cancel)
		defer t.Stop()
		expected = statusCancelled
	case "unavailable":
		c = w.deadConn
		ctx, cancel = context.WithTimeout(parent, w.cfg.timeout)
		expected = 14
	default:
		ctx, cancel = context.WithTimeout(parent, w.cfg.timeout)
	}
	defer cancel()
	hdr := reqHeader{Code: p.code, NMsgs: uint16(p.nmsgs), DelayNs: uint64(p.delay), ID: uint64(id)}
	if p.nest == "handler" {
		hdr.Nested = 1
		hdr.Target = uint32(c.serverIdx + 1)
	}
	if p.nest == "interceptor" {
		ctx = context.WithValue(ctx, nestKey{}, &nestReq{c: c, parentID: id,
			rng: rand.New(rand.NewSource(w.cfg.seed ^ id*104729))})
	}
	req := &grpcharness.RawMsg{Data: hdr.encode()}
	start := harness.MonoNow()
	var err error
	switch m.kind {
	case "unary":
		err = c.cc.Invoke(ctx, m.full(), req, new(grpcharness.RawMsg))
	case "server_stream":
		err = serverStreamCall(ctx, c.cc, m, req)
	case "client_stream":
		err = clientStreamCall(ctx, c.cc, m, req, p.nmsgs)
	default:
		err = bidiCall(ctx, c.cc, m, req, p.nmsgs)
	}
	end := harness.MonoNow()
	code := int(status.Code(err))
	if code != expected {
		atomic.AddInt64(&w.mismatch, 1)
		if atomic.LoadInt64(&w.mismatch) <= 5 {
			fmt.Fprintf(os.Stderr, "grpcwork: rpc %d %s failure=%q: code %d, expected %d: %v\n", id, m.full(), p.failure, code, expected, err)
		}
	}
	if code >= 0 && code <= 16 {
		atomic.AddInt64(&w.byCode[code], 1)
	}
	w.truth.Write(&clientTruth{
		ID: id, Kind: m.kind, Method: m.full(), Service: m.service, ShortMethod: m.short,
		ServerPort: c.port, Code: code, ExpectedCode: expected, ServerDelayNs: int64(p.delay),
		StartNs: start, EndNs: end, Nested: nestedVia != "", NestedVia: nestedVia, ParentID: parentID,
		ConnID: c.id, Churn: churn, Failure: p.failure, NMsgs: p.nmsgs,
	})
}

// drain reads a stream to its end; io.EOF means status OK.
func drain(cs grpc.ClientStream) error {
	for {
		if err := cs.RecvMsg(new(grpcharness.RawMsg)); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

// sendErr turns a SendMsg/CloseSend failure into the call's status: io.EOF means the stream
// is over and its status is found by receiving.
func sendErr(cs grpc.ClientStream, err error) error {
	if err == io.EOF {
		return drain(cs)
	}
	return err
}

func serverStreamCall(ctx context.Context, cc *grpc.ClientConn, m method, req *grpcharness.RawMsg) error {
	cs, err := cc.NewStream(ctx, m.desc, m.full())
	if err != nil {
		return err
	}
	if err := cs.SendMsg(req); err != nil {
		return sendErr(cs, err)
	}
	if err := cs.CloseSend(); err != nil {
		return sendErr(cs, err)
	}
	return drain(cs)
}

func clientStreamCall(ctx context.Context, cc *grpc.ClientConn, m method, req *grpcharness.RawMsg, n int) error {
	cs, err := cc.NewStream(ctx, m.desc, m.full())
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		msg := req
		if i > 0 {
			msg = &grpcharness.RawMsg{Data: []byte{byte(i)}}
		}
		if err := cs.SendMsg(msg); err != nil {
			return sendErr(cs, err)
		}
	}
	if err := cs.CloseSend(); err != nil {
		return sendErr(cs, err)
	}
	// Not server-streaming: one RecvMsg gets the reply and the final status.
	return cs.RecvMsg(new(grpcharness.RawMsg))
}

func bidiCall(ctx context.Context, cc *grpc.ClientConn, m method, req *grpcharness.RawMsg, n int) error {
	cs, err := cc.NewStream(ctx, m.desc, m.full())
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		msg := req
		if i > 0 {
			msg = &grpcharness.RawMsg{Data: []byte{byte(i)}}
		}
		if err := cs.SendMsg(msg); err != nil {
			return sendErr(cs, err)
		}
		if err := cs.RecvMsg(new(grpcharness.RawMsg)); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
	if err := cs.CloseSend(); err != nil {
		return sendErr(cs, err)
	}
	return drain(cs)
}

func parseMix(s string) ([]string, error) {
	var kinds []string
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, weight := part, 1
		if i := strings.IndexByte(part, '='); i >= 0 {
			name = part[:i]
			w, err := strconv.Atoi(part[i+1:])
			if err != nil || w < 0 {
				return nil, fmt.Errorf("bad weight in %q", part)
			}
			weight = w
		}
		switch name {
		case "unary", "server_stream", "client_stream", "bidi":
		default:
			return nil, fmt.Errorf("unknown kind %q (unary, server_stream, client_stream, bidi)", name)
		}
		for i := 0; i < weight; i++ {
			kinds = append(kinds, name)
		}
	}
	if len(kinds) == 0 {
		return nil, fmt.Errorf("empty mix")
	}
	return kinds, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port, nil
}

func fatal(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "grpcwork: "+format+"\n", a...)
	os.Exit(1)
}

func main() {
	var cfg config
	flag.IntVar(&cfg.servers, "servers", 2, "number of grpc servers (each its own listener on 127.0.0.1)")
	flag.IntVar(&cfg.connsPerServer, "conns-per-server", 1, "client connections per server")
	flag.IntVar(&cfg.goroutines, "goroutines", 4, "concurrent goroutines per connection")
	flag.IntVar(&cfg.rpcs, "rpcs", 20, "RPCs per goroutine")
	flag.IntVar(&cfg.churn, "churn", 0, "goroutines that repeatedly dial, make 3-10 RPCs, close")
	flag.IntVar(&cfg.churnConns, "churn-conns", 0, "connections per churn goroutine (0: keep churning until the main goroutines finish)")
	flag.IntVar(&cfg.streamMsgs, "stream-msgs", 4, "max messages per streaming call (1..n)")
	flag.StringVar(&cfg.mix, "mix", "unary=6,server_stream=2,client_stream=1,bidi=2", "kinds with weights")
	flag.Float64Var(&cfg.errors, "errors", 0.1, "fraction of RPCs whose server returns a non-OK status (codes 1..16 in turn)")
	flag.Float64Var(&cfg.clientFailures, "client-failures", 0.02, "fraction of RPCs failing client side (deadline, cancel, unavailable, deadline_past in turn)")
	flag.Float64Var(&cfg.nested, "nested", 0.05, "fraction of unary RPCs that make a nested call (from the server handler or the client interceptor, in turn)")
	flag.DurationVar(&cfg.delayMax, "delay-max", 2*time.Millisecond, "max server delay per call (uniform 0..max)")
	flag.Int64Var(&cfg.seed, "seed", 1, "random seed")
	flag.StringVar(&cfg.truth, "truth", "", "client ground truth JSON lines file")
	flag.StringVar(&cfg.serverTruth, "server-truth", "", "server ground truth JSON lines file")
	flag.BoolVar(&cfg.waitStart, "wait-start", false, "print READY <pid>, then wait for a stdin line before starting")
	flag.BoolVar(&cfg.hold, "hold", false, "after finishing print DONE and wait for a stdin line or EOF before exiting")
	flag.BoolVar(&cfg.dialEarly, "dial-early", false, "dial the long-lived connections before READY (default: after the start line)")
	flag.DurationVar(&cfg.timeout, "timeout", 30*time.Second, "per-call deadline bound for calls that should succeed")
	flag.BoolVar(&cfg.serveHTTP, "serve-http", false, "serve each grpc server through ServeHTTP under net/http's HTTP/2 server (h2c) instead of its own transport")
	flag.StringVar(&cfg.middleware, "middleware", "none", "with -serve-http: none, wrap (every request through a middleware chain) or mixed (alternate requests)")
	flag.StringVar(&cfg.h2Server, "h2-server", "nethttp", "with -serve-http: nethttp (net/http's own h2c) or xnet-h2c (x/net's h2c.NewHandler, its http2.Server)")
	flag.Parse()
	if cfg.servers < 1 || cfg.connsPerServer < 1 || cfg.goroutines < 0 || cfg.rpcs < 0 || cfg.streamMsgs < 1 {
		fatal("bad sizes")
	}
	switch cfg.middleware {
	case "none", "wrap", "mixed":
	default:
		fatal("unknown -middleware %q (none, wrap, mixed)", cfg.middleware)
	}
	if cfg.h2Server != "nethttp" && cfg.h2Server != "xnet-h2c" {
		fatal("unknown -h2-server %q (nethttp, xnet-h2c)", cfg.h2Server)
	}
	if !cfg.serveHTTP {
		cfg.middleware = "none" // grpc's own transport has no net/http handler to wrap
		cfg.h2Server = ""
	}
	kinds, err := parseMix(cfg.mix)
	if err != nil {
		fatal("%v", err)
	}
	harness.InitMonotonic()
	w := &workload{cfg: cfg, kinds: kinds, stopChurn: make(chan struct{})}
	w.errCounter = uint64(cfg.seed)
	if w.truth, err = harness.OpenTruth(cfg.truth); err != nil {
		fatal("%v", err)
	}
	if w.serverTruth, err = harness.OpenTruth(cfg.serverTruth); err != nil {
		fatal("%v", err)
	}
	for i := 0; i < cfg.servers; i++ {
		s, err := startServer(w, i)
		if err != nil {
			fatal("listen: %v", err)
		}
		w.servers = append(w.servers, s)
	}
	var mainConns []*conn
	dialAll := func() {
		for i, s := range w.servers {
			for j := 0; j < cfg.connsPerServer; j++ {
				c, err := w.dial(i, s.port)
				if err != nil {
					fatal("dial: %v", err)
				}
				mainConns = append(mainConns, c)
			}
		}
		for i, s := range w.servers {
			c, err := w.dial(i, s.port)
			if err != nil {
				fatal("dial: %v", err)
			}
			w.nestedConns = append(w.nestedConns, c)
		}
		port, err := freePort()
		if err != nil {
			fatal("%v", err)
		}
		if w.deadConn, err = w.dial(-1, port); err != nil {
			fatal("dial: %v", err)
		}
	}
	if cfg.dialEarly {
		dialAll()
	}
	if cfg.waitStart {
		harness.Announce(fmt.Sprintf("READY %d", os.Getpid()))
		harness.WaitLine()
	}
	if !cfg.dialEarly {
		dialAll()
	}

	t0 := time.Now()
	var mainWG, churnWG sync.WaitGroup
	gi := int64(0)
	for _, c := range mainConns {
		for g := 0; g < cfg.goroutines; g++ {
			gi++
			mainWG.Add(1)
			go func(c *conn, seed int64) {
				defer mainWG.Done()
				rng := rand.New(rand.NewSource(seed))
				for r := 0; r < cfg.rpcs; r++ {
					m, p := w.pick(rng)
					w.call(context.Background(), c, m, p, "", -1, false)
				}
			}(c, cfg.seed*1000003+gi)
		}
	}
	for g := 0; g < cfg.churn; g++ {
		churnWG.Add(1)
		go func(seed int64) {
			defer churnWG.Done()
			rng := rand.New(rand.NewSource(seed))
			for it := 0; cfg.churnConns == 0 && it < 100000 || it < cfg.churnConns; it++ {
				if cfg.churnConns == 0 {
					select {
					case <-w.stopChurn:
						return
					default:
					}
				}
				si := rng.Intn(len(w.servers))
				c, err := w.dial(si, w.servers[si].port)
				if err != nil {
					fatal("dial: %v", err)
				}
				n := 3 + rng.Intn(8)
				for k := 0; k < n; k++ {
					m, p := w.pick(rng)
					w.call(context.Background(), c, m, p, "", -1, true)
				}
				c.cc.Close()
			}
		}(cfg.seed*7000003 + int64(g))
	}
	mainWG.Wait()
	close(w.stopChurn)
	churnWG.Wait()
	elapsed := time.Since(t0)

	for _, c := range mainConns {
		c.cc.Close()
	}
	for _, c := range w.nestedConns {
		c.cc.Close()
	}
	w.deadConn.cc.Close()
	for _, s := range w.servers {
		s.stop(5 * time.Second)
	}
	if err := w.truth.Close(); err != nil {
		fatal("truth: %v", err)
	}
	if err := w.serverTruth.Close(); err != nil {
		fatal("server truth: %v", err)
	}
	total := w.truth.Count()
	byCode := map[string]int64{}
	var codes []int
	for i, n := range w.byCode {
		if n > 0 {
			byCode[strconv.Itoa(i)] = n
			codes = append(codes, i)
		}
	}
	sort.Ints(codes)
	summary, _ := json.Marshal(map[string]interface{}{
		"total": total, "server_handled": w.serverTruth.Count(), "by_code": byCode,
		"elapsed_s": elapsed.Seconds(), "rps": float64(total) / elapsed.Seconds(),
		"code_mismatch": atomic.LoadInt64(&w.mismatch), "connections": atomic.LoadInt64(&w.nextConn),
		"serve_http": cfg.serveHTTP, "middleware": cfg.middleware, "h2_server": cfg.h2Server,
	})
	fmt.Fprintf(os.Stderr, "SUMMARY %s\n", summary)
	if cfg.hold {
		harness.Announce("DONE")
		harness.WaitLine()
	}
}
