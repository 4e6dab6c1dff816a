// grpcshapes: gRPC programs of shapes grpcwork does not have, one case after another in
// one process, each case with its own server (own listener) so spans never mix across
// cases. Cases (-cases, comma list; default all that the build has):
//
//	tls         TLS transport credentials, self-signed certificate made at start
//	newclient   grpc.NewClient with a dns:/// target and a short idle timeout (the channel
//	            goes idle between two bursts and leaves idle mode on the next call);
//	            built only with -tags newclient (grpc-go >= 1.63), see newclient.go
//	unix        server and client on a Unix domain socket (peer is a *net.UnixAddr)
//	ipv6        server on [::1]
//	retry       service config retry policy on UNAVAILABLE; the server fails the first
//	            attempt(s); one call ends UNAVAILABLE after all attempts
//	gzip        gzip compressor on every call, 1 MiB requests and replies
//	interceptors unary and stream client interceptors, unary and stream server interceptors
//	keepalive   client and server keepalive parameters, an idle gap with pings in between
//	manyconns   50 connections to one server, a few calls on each, concurrently
//	workers     server with NumStreamWorkers(2) and MaxConcurrentStreams(4), 16 callers
//	cancel      server-streaming calls cancelled by the client halfway
//	longlived   bidi streams opened first and ended last: one by CloseSend, one by the
//	            ClientConn's Close
//
// Client truth line per RPC: id, case, kind, method, server_address, server_port (the peer
// the client reached; 0 for a Unix socket), code (status.Code of the call), expected_code,
// server_delay_ns, client_start_ns, client_end_ns (CLOCK_MONOTONIC), failure ("" | cancel
// | closed), fail_first (attempts the server fails, retry case).
// Server truth line per handler run (one per attempt): see serverTruth in server.go.
// Handshake: -wait-start / -hold as in grpcwork (tests/truth.py).
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"pyhttp2probe/harness"
	"pyhttp2probe/harness/grpcharness"
)

type clientTruth struct {
	ID            int64  `json:"id"`
	Case          string `json:"case"`
	Kind          string `json:"kind"`
	Method        string `json:"method"`
	ServerAddress string `json:"server_address"`
	ServerPort    int    `json:"server_port"`
	Code          int    `json:"code"`
	ExpectedCode  int    `json:"expected_code"`
	ServerDelayNs int64  `json:"server_delay_ns"`
	StartNs       int64  `json:"client_start_ns"`
	EndNs         int64  `json:"client_end_ns"`
	Failure       string `json:"failure"`
	FailFirst     int    `json:"fail_first"`
}

var (
	descServerStream = &grpc.StreamDesc{StreamName: "ServerStream", ServerStreams: true}
	descBidi         = &grpc.StreamDesc{StreamName: "Bidi", ServerStreams: true, ClientStreams: true}
)

type app struct {
	truth, serverTruth *harness.TruthWriter
	nextID             int64
	mismatch           int64
	servers            []*shapeServer
	tmp                string
}

// conn is one ClientConn of a case and the peer its spans should report.
type conn struct {
	cc      *grpc.ClientConn
	cas     string
	address string
	port    int
}

func (a *app) fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "grpcshapes: "+format+"\n", args...)
	os.Exit(1)
}

func (a *app) server(name, network, addr string, opts ...grpc.ServerOption) *shapeServer {
	s, err := startServer(name, network, addr, a.serverTruth, opts...)
	if err != nil {
		a.fail("%s: listen: %v", name, err)
	}
	a.servers = append(a.servers, s)
	return s
}

func (a *app) dial(s *shapeServer, target string, opts ...grpc.DialOption) *conn {
	opts = append([]grpc.DialOption{grpc.WithDefaultCallOptions(grpc.CallContentSubtype(grpcharness.CodecName))}, opts...)
	cc, err := grpc.Dial(target, opts...)
	if err != nil {
		a.fail("%s: dial %s: %v", s.name, target, err)
	}
	return &conn{cc: cc, cas: s.name, address: s.address, port: s.port}
}

func insecureOpt() grpc.DialOption {
	return grpc.WithTransportCredentials(insecure.NewCredentials())
}

func tcpTarget(s *shapeServer) string {
	return net.JoinHostPort(s.address, fmt.Sprint(s.port))
}

// spec is one RPC to make.
type spec struct {
	kind      string // unary | flaky | server_stream | bidi
	code      uint8
	delay     time.Duration
	nmsgs     int
	pad       int // request padding bytes
	respLen   int
	failFirst int
	cancelAt  int // server_stream: cancel after this many replies (0: never)
	failure   string
}

func (sp spec) method() (string, *grpc.StreamDesc, string) {
	switch sp.kind {
	case "flaky":
		return "/" + svc + "/Flaky", nil, "unary"
	case "server_stream":
		return "/" + svc + "/ServerStream", descServerStream, "server_stream"
	case "bidi":
		return "/" + svc + "/Bidi", descBidi, "bidi"
	}
	return "/" + svc + "/Unary", nil, "unary"
}

// do makes one RPC and writes its truth line.
func (a *app) do(c *conn, sp spec) {
	id := atomic.AddInt64(&a.nextID, 1) - 1
	full, desc, kind := sp.method()
	hdr := reqHeader{Code: sp.code, FailFirst: uint8(sp.failFirst), NMsgs: uint16(sp.nmsgs),
		DelayNs: uint64(sp.delay), ID: uint64(id), RespLen: uint32(sp.respLen)}
	req := &grpcharness.RawMsg{Data: hdr.encode(sp.pad)}
	expected, failure := int(sp.code), sp.failure
	delay := sp.delay
	if kind == "server_stream" {
		delay = sp.delay * time.Duration(sp.nmsgs)
	}
	if sp.cancelAt > 0 {
		expected, failure, delay = 1, "cancel", 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := harness.MonoNow()
	var err error
	switch kind {
	case "unary":
		err = c.cc.Invoke(ctx, full, req, new(grpcharness.RawMsg))
	case "server_stream":
		err = serverStream(ctx, cancel, c.cc, desc, full, req, sp.cancelAt)
	default:
		err = bidi(ctx, c.cc, desc, full, req, sp.nmsgs)
	}
	end := harness.MonoNow()
	a.record(c, id, kind, full, err, expected, int64(delay), start, end, failure, sp.failFirst)
}

func (a *app) record(c *conn, id int64, kind, full string, err error, expected int, delay, start, end int64, failure string, failFirst int) {
	code := int(status.Code(err))
	if code != expected && atomic.AddInt64(&a.mismatch, 1) <= 5 {
		fmt.Fprintf(os.Stderr, "grpcshapes: %s rpc %d %s: code %d, expected %d: %v\n", c.cas, id, full, code, expected, err)
	}
	a.truth.Write(&clientTruth{ID: id, Case: c.cas, Kind: kind, Method: full,
		ServerAddress: c.address, ServerPort: c.port, Code: code, ExpectedCode: expected,
		ServerDelayNs: delay, StartNs: start, EndNs: end, Failure: failure, FailFirst: failFirst})
}

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

func sendErr(cs grpc.ClientStream, err error) error {
	if err == io.EOF {
		return drain(cs)
	}
	return err
}

// serverStream reads replies; with cancelAt > 0 it cancels the call after that many and
// then receives until the call reports its end (so the end time follows grpc's finish).
func serverStream(ctx context.Context, cancel context.CancelFunc, cc *grpc.ClientConn, desc *grpc.StreamDesc, full string, req *grpcharness.RawMsg, cancelAt int) error {
	cs, err := cc.NewStream(ctx, desc, full)
	if err != nil {
		return err
	}
	if err := cs.SendMsg(req); err != nil {
		return sendErr(cs, err)
	}
	if err := cs.CloseSend(); err != nil {
		return sendErr(cs, err)
	}
	if cancelAt > 0 {
		for i := 0; i < cancelAt; i++ {
			if err := cs.RecvMsg(new(grpcharness.RawMsg)); err != nil {
				return err
			}
		}
		cancel()
	}
	return drain(cs)
}

func bidi(ctx context.Context, cc *grpc.ClientConn, desc *grpc.StreamDesc, full string, req *grpcharness.RawMsg, n int) error {
	cs, err := cc.NewStream(ctx, desc, full)
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		if err := cs.SendMsg(req); err != nil {
			return sendErr(cs, err)
		}
		if err := cs.RecvMsg(new(grpcharness.RawMsg)); err != nil {
			return err
		}
	}
	if err := cs.CloseSend(); err != nil {
		return sendErr(cs, err)
	}
	return drain(cs)
}

// mix runs the standard set of calls on c from `par` goroutines.
func (a *app) mix(c *conn, par int, extra ...spec) {
	specs := []spec{
		{kind: "unary"}, {kind: "unary", delay: time.Millisecond}, {kind: "unary", code: 5},
		{kind: "unary", code: 13}, {kind: "server_stream", nmsgs: 3},
		{kind: "server_stream", nmsgs: 2, code: 9}, {kind: "bidi", nmsgs: 3},
		{kind: "bidi", nmsgs: 1, code: 7},
	}
	specs = append(specs, extra...)
	a.parallel(par, func(g int) {
		for _, sp := range specs {
			a.do(c, sp)
		}
	})
}

func (a *app) parallel(n int, f func(g int)) {
	var wg sync.WaitGroup
	for g := 0; g < n; g++ {
		wg.Add(1)
		go func(g int) { defer wg.Done(); f(g) }(g)
	}
	wg.Wait()
}

// ---- cases ------------------------------------------------------------------------------

func selfSigned() (tls.Certificate, *x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool, nil
}

func (a *app) caseTLS() {
	cert, pool, err := selfSigned()
	if err != nil {
		a.fail("tls: %v", err)
	}
	s := a.server("tls", "tcp", "127.0.0.1:0",
		grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}})))
	c := a.dial(s, tcpTarget(s), grpc.WithTransportCredentials(
		credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "localhost"})))
	defer c.cc.Close()
	a.mix(c, 4)
}

func (a *app) caseUnix() {
	path := filepath.Join(a.tmp, "shapes.sock")
	s := a.server("unix", "unix", path)
	c := a.dial(s, "unix://"+path, insecureOpt())
	defer c.cc.Close()
	a.mix(c, 4)
	// nothing listens at this path: Unavailable before any stream exists
	dead := a.dial(&shapeServer{name: "unix", address: path + ".none"}, "unix://"+path+".none", insecureOpt())
	defer dead.cc.Close()
	a.deadCalls(dead)
}

// deadCalls: calls on a connection that cannot connect fail with Unavailable.
func (a *app) deadCalls(c *conn) {
	for i := 0; i < 3; i++ {
		a.do(c, spec{kind: "unary", code: 14, failure: "unavailable"})
		a.do(c, spec{kind: "server_stream", nmsgs: 1, code: 14, failure: "unavailable"})
	}
}

func (a *app) caseIPv6() {
	s := a.server("ipv6", "tcp", "[::1]:0")
	c := a.dial(s, tcpTarget(s), insecureOpt())
	defer c.cc.Close()
	a.mix(c, 4)
	lis, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		a.fail("ipv6: %v", err)
	}
	port := lis.Addr().(*net.TCPAddr).Port
	lis.Close()
	// nothing listens there: Unavailable before any stream exists; the peer is the target's
	dead := a.dial(&shapeServer{name: "ipv6", address: "::1", port: port},
		fmt.Sprintf("dns:///[::1]:%d", port), insecureOpt())
	defer dead.cc.Close()
	a.deadCalls(dead)
}

const retryConfig = `{"methodConfig": [{"name": [{"service": "` + svc + `", "method": "Flaky"}],
 "retryPolicy": {"maxAttempts": 4, "initialBackoff": "0.005s", "maxBackoff": "0.02s",
  "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]}`

func (a *app) caseRetry() {
	s := a.server("retry", "tcp", "127.0.0.1:0")
	c := a.dial(s, tcpTarget(s), insecureOpt(), grpc.WithDefaultServiceConfig(retryConfig))
	defer c.cc.Close()
	a.parallel(4, func(g int) {
		for i := 0; i < 6; i++ {
			a.do(c, spec{kind: "flaky", failFirst: 1 + (g+i)%3, delay: time.Millisecond})
			a.do(c, spec{kind: "flaky"}) // no failure: one attempt
		}
		// every attempt fails: UNAVAILABLE after maxAttempts
		c2 := spec{kind: "flaky", failFirst: 10, code: 14}
		a.do(c, c2)
	})
	// Nothing listens: every attempt fails before a stream exists and is retried by the
	// policy; the call ends UNAVAILABLE after the last attempt.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		a.fail("retry: %v", err)
	}
	port := lis.Addr().(*net.TCPAddr).Port
	lis.Close()
	dead := a.dial(&shapeServer{name: "retry", address: "127.0.0.1", port: port},
		fmt.Sprintf("127.0.0.1:%d", port), insecureOpt(), grpc.WithDefaultServiceConfig(retryConfig))
	defer dead.cc.Close()
	for i := 0; i < 4; i++ {
		a.do(dead, spec{kind: "flaky", code: 14, failure: "unavailable"})
	}
}

func (a *app) caseGzip() {
	s := a.server("gzip", "tcp", "127.0.0.1:0")
	c := a.dial(s, tcpTarget(s), insecureOpt(), grpc.WithDefaultCallOptions(grpc.UseCompressor(gzip.Name)))
	defer c.cc.Close()
	const mib = 1 << 20
	a.parallel(3, func(g int) {
		for i := 0; i < 3; i++ {
			a.do(c, spec{kind: "unary", pad: mib, respLen: mib})
			a.do(c, spec{kind: "unary", pad: mib, respLen: 16, code: 3})
			a.do(c, spec{kind: "server_stream", nmsgs: 3, respLen: mib})
			a.do(c, spec{kind: "bidi", nmsgs: 2, pad: mib, respLen: mib})
		}
	})
}

func (a *app) caseInterceptors() {
	var uHits, sHits int64
	s := a.server("interceptors", "tcp", "127.0.0.1:0",
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req interface{}, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (interface{}, error) {
			atomic.AddInt64(&sHits, 1)
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv interface{}, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			atomic.AddInt64(&sHits, 1)
			return h(srv, ss)
		}))
	unary := func(ctx context.Context, method string, req, reply interface{}, cc *grpc.ClientConn, inv grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		atomic.AddInt64(&uHits, 1)
		return inv(ctx, method, req, reply, cc, opts...)
	}
	stream := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, st grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		atomic.AddInt64(&uHits, 1)
		cs, err := st(ctx, desc, cc, method, opts...)
		if err != nil {
			return nil, err
		}
		return &wrapped{ClientStream: cs}, nil
	}
	c := a.dial(s, tcpTarget(s), insecureOpt(), grpc.WithChainUnaryInterceptor(unary, unary),
		grpc.WithChainStreamInterceptor(stream))
	defer c.cc.Close()
	a.mix(c, 4)
	if atomic.LoadInt64(&uHits) == 0 || atomic.LoadInt64(&sHits) == 0 {
		a.fail("interceptors did not run")
	}
}

type wrapped struct{ grpc.ClientStream }

func (w *wrapped) RecvMsg(m interface{}) error { return w.ClientStream.RecvMsg(m) }

func (a *app) caseKeepalive() {
	s := a.server("keepalive", "tcp", "127.0.0.1:0",
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: time.Second, Timeout: time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 500 * time.Millisecond, PermitWithoutStream: true}))
	c := a.dial(s, tcpTarget(s), insecureOpt(), grpc.WithKeepaliveParams(
		keepalive.ClientParameters{Time: 10 * time.Second, Timeout: time.Second, PermitWithoutStream: true}))
	defer c.cc.Close()
	a.mix(c, 2)
	time.Sleep(1300 * time.Millisecond) // the server pings the idle connection
	a.mix(c, 2)
}

func (a *app) caseManyConns() {
	s := a.server("manyconns", "tcp", "127.0.0.1:0")
	conns := make([]*conn, 50)
	for i := range conns {
		conns[i] = a.dial(s, tcpTarget(s), insecureOpt())
	}
	a.parallel(len(conns), func(g int) {
		c := conns[g]
		a.do(c, spec{kind: "unary"})
		a.do(c, spec{kind: "unary", code: uint8(1 + g%16)})
		a.do(c, spec{kind: "server_stream", nmsgs: 2})
		a.do(c, spec{kind: "bidi", nmsgs: 2})
	})
	for _, c := range conns {
		c.cc.Close()
	}
}

// caseWorkers: the server runs handlers on a fixed pool of stream workers and lets a
// connection have only 4 streams at once, so 16 goroutines queue for stream quota.
func (a *app) caseWorkers() {
	s := a.server("workers", "tcp", "127.0.0.1:0", grpc.NumStreamWorkers(2), grpc.MaxConcurrentStreams(4))
	c := a.dial(s, tcpTarget(s), insecureOpt())
	defer c.cc.Close()
	a.mix(c, 16)
}

func (a *app) caseCancel() {
	s := a.server("cancel", "tcp", "127.0.0.1:0")
	c := a.dial(s, tcpTarget(s), insecureOpt())
	defer c.cc.Close()
	a.parallel(4, func(g int) {
		for i := 0; i < 4; i++ {
			a.do(c, spec{kind: "server_stream", nmsgs: 40, delay: 2 * time.Millisecond, cancelAt: 3 + i})
			a.do(c, spec{kind: "server_stream", nmsgs: 3}) // the connection still works
		}
	})
}

// longLived opens two bidi streams now; the returned func ends them at exit: one with
// CloseSend (OK), one by closing its ClientConn (Canceled: the connection is closing).
func (a *app) longLived() func() {
	s := a.server("longlived", "tcp", "127.0.0.1:0")
	open := func(c *conn) (grpc.ClientStream, int64, int64, string) {
		id := atomic.AddInt64(&a.nextID, 1) - 1
		full := "/" + svc + "/Bidi"
		start := harness.MonoNow()
		cs, err := c.cc.NewStream(context.Background(), descBidi, full)
		if err == nil {
			hdr := reqHeader{ID: uint64(id), NMsgs: 1}
			if err = cs.SendMsg(&grpcharness.RawMsg{Data: hdr.encode(0)}); err == nil {
				err = cs.RecvMsg(new(grpcharness.RawMsg))
			}
		}
		if err != nil {
			a.fail("longlived: %v", err)
		}
		return cs, id, start, full
	}
	c1 := a.dial(s, tcpTarget(s), insecureOpt())
	c2 := a.dial(s, tcpTarget(s), insecureOpt())
	cs1, id1, st1, full := open(c1)
	cs2, id2, st2, _ := open(c2)
	got2 := make(chan error, 1)
	go func() { got2 <- drain(cs2) }()
	return func() {
		err := cs1.CloseSend()
		if err == nil {
			err = drain(cs1)
		}
		a.record(c1, id1, "bidi", full, err, 0, 0, st1, harness.MonoNow(), "", 0)
		c1.cc.Close()
		c2.cc.Close()
		err = <-got2
		// Canceled (the ClientConn is closing) or, before grpc-go ~1.4x, Unavailable
		// (the transport's read error) when that reaches RecvMsg first: grpc's choice.
		expected := 1
		if status.Code(err) == 14 {
			expected = 14
		}
		a.record(c2, id2, "bidi", full, err, expected, 0, st2, harness.MonoNow(), "closed", 0)
	}
}

var cases = map[string]func(*app){
	"tls": (*app).caseTLS, "unix": (*app).caseUnix, "ipv6": (*app).caseIPv6,
	"retry": (*app).caseRetry, "gzip": (*app).caseGzip, "interceptors": (*app).caseInterceptors,
	"keepalive": (*app).caseKeepalive, "manyconns": (*app).caseManyConns, "cancel": (*app).caseCancel,
	"workers": (*app).caseWorkers,
}

var order = []string{"tls", "newclient", "unix", "ipv6", "retry", "gzip", "interceptors",
	"keepalive", "manyconns", "workers", "cancel", "longlived"}

func main() {
	truthPath := flag.String("truth", "", "client truth JSON lines")
	serverPath := flag.String("server-truth", "", "server truth JSON lines")
	list := flag.String("cases", "", "comma list of cases (default: every case this build has)")
	waitStart := flag.Bool("wait-start", false, "print READY <pid>, wait for a stdin line")
	hold := flag.Bool("hold", false, "print DONE at the end, wait for a stdin line or EOF")
	flag.Parse()
	harness.InitMonotonic()
	if newClientCase != nil {
		cases["newclient"] = newClientCase
	}
	var want []string
	if *list == "" {
		for _, n := range order {
			if _, ok := cases[n]; ok || n == "longlived" {
				want = append(want, n)
			}
		}
	} else {
		want = strings.Split(*list, ",")
	}
	a := &app{}
	var err error
	if a.truth, err = harness.OpenTruth(*truthPath); err != nil {
		a.fail("%v", err)
	}
	if a.serverTruth, err = harness.OpenTruth(*serverPath); err != nil {
		a.fail("%v", err)
	}
	if a.tmp, err = os.MkdirTemp("", "grpcshapes-"); err != nil {
		a.fail("%v", err)
	}
	defer os.RemoveAll(a.tmp)
	for _, n := range want {
		if _, ok := cases[n]; !ok && n != "longlived" {
			a.fail("unknown case %q (or not in this build)", n)
		}
	}
	if *waitStart {
		harness.Announce(fmt.Sprintf("READY %d", os.Getpid()))
		harness.WaitLine()
	}
	endLong := func() {}
	for _, n := range want {
		if n == "longlived" {
			endLong = a.longLived()
		}
	}
	for _, n := range want {
		if n != "longlived" {
			cases[n](a)
		}
	}
	endLong()
	for _, s := range a.servers {
		s.stop(5 * time.Second)
	}
	if err := a.truth.Close(); err != nil {
		a.fail("truth: %v", err)
	}
	if err := a.serverTruth.Close(); err != nil {
		a.fail("server truth: %v", err)
	}
	summary, _ := json.Marshal(map[string]interface{}{
		"total": a.truth.Count(), "server_handled": a.serverTruth.Count(),
		"code_mismatch": atomic.LoadInt64(&a.mismatch), "cases": want,
	})
	fmt.Fprintf(os.Stderr, "SUMMARY %s\n", summary)
	if *hold {
		harness.Announce("DONE")
		harness.WaitLine()
	}
}
