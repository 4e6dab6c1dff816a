package main

// The servers: two hand-written services (pyhttp2probe.test.Work and pyhttp2probe.test.Other)
// whose handlers obey the request header: sleep the delay (aborted when the call's context
// ends), optionally make a nested client call, then return the requested status.
//
// Each server runs on grpc's own HTTP/2 transport (srv.Serve) or, with -serve-http, through
// (*grpc.Server).ServeHTTP under net/http's HTTP/2 server (servehttp.go).

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"pyhttp2probe/harness"
	"pyhttp2probe/harness/grpcharness"
)

type serverTruth struct {
	Method      string `json:"method"`
	Service     string `json:"service"`
	ShortMethod string `json:"short_method"`
	Kind        string `json:"kind"`
	ServerPort  int    `json:"server_port"`
	Code        int    `json:"code"`
	StartNs     int64  `json:"server_start_ns"`
	EndNs       int64  `json:"server_end_ns"`
	ClientID    int64  `json:"client_id"` // id of the client truth line, -1 if never learned
	DelayNs     int64  `json:"server_delay_ns"`
	OpFailed    bool   `json:"op_failed"` // a stream op failed: grpc wrote the status inside it
}

type workServer struct {
	idx  int
	port int
	w    *workload
	lis  net.Listener
	srv  *grpc.Server
	hs   *http.Server  // -serve-http only: serves lis, handing requests to srv.ServeHTTP
	reqs atomic.Uint64 // -middleware mixed: requests seen, to alternate the two shapes
}

// serverCall is the bookkeeping for one handled RPC; finish writes its truth line.
type serverCall struct {
	s *workServer
	t serverTruth
}

func (s *workServer) begin(service, method, kind string) *serverCall {
	return &serverCall{s: s, t: serverTruth{
		Method: "/" + service + "/" + method, Service: service, ShortMethod: method,
		Kind: kind, ServerPort: s.port, StartNs: harness.MonoNow(), ClientID: -1,
	}}
}

func (c *serverCall) learn(h reqHeader) {
	c.t.ClientID = int64(h.ID)
	c.t.DelayNs = int64(h.DelayNs)
}

// opFailed ends a handler whose RecvMsg/SendMsg failed: the status on the wire is the one
// grpc wrote inside that call (grpcharness.OpStatus), before the handler returns.
func (c *serverCall) opFailed(err error) error {
	c.t.OpFailed = true
	return c.finish(grpcharness.OpStatus(err))
}

func (c *serverCall) finish(err error) error {
	c.t.Code = int(status.Code(err))
	c.t.EndNs = harness.MonoNow()
	c.s.w.serverTruth.Write(&c.t)
	return err
}

// sleepCtx sleeps d unless ctx ends first, in which case it returns the context's status.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}

func statusFor(h reqHeader) error {
	if h.Code == 0 {
		return nil
	}
	return status.Errorf(codes.Code(h.Code), "requested status %d", h.Code)
}

// serveUnary is shared by Work/Unary, Work/UnaryB and Other/Ping.
func (s *workServer) serveUnary(ctx context.Context, service, method string, req *grpcharness.RawMsg) (*grpcharness.RawMsg, error) {
	c := s.begin(service, method, "unary")
	h, ok := decodeHeader(req.Data)
	if !ok {
		return nil, c.finish(status.Error(codes.InvalidArgument, "bad header"))
	}
	c.learn(h)
	if err := sleepCtx(ctx, time.Duration(h.DelayNs)); err != nil {
		return nil, c.finish(err)
	}
	if h.Nested == 1 {
		s.w.nestedFromHandler(ctx, int(h.Target), int64(h.ID))
	}
	if err := statusFor(h); err != nil {
		return nil, c.finish(err)
	}
	c.finish(nil)
	return &grpcharness.RawMsg{Data: []byte("ok")}, nil
}

func unaryHandler(service, method string) func(interface{}, context.Context, func(interface{}) error, grpc.UnaryServerInterceptor) (interface{}, error) {
	return func(srv interface{}, ctx context.Context, dec func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
		req := new(grpcharness.RawMsg)
		if err := dec(req); err != nil {
			return nil, err
		}
		return srv.(*workServer).serveUnary(ctx, service, method, req)
	}
}

const workService = "pyhttp2probe.test.Work"
const otherService = "pyhttp2probe.test.Other"

func serverStreamHandler(srv interface{}, stream grpc.ServerStream) error {
	s := srv.(*workServer)
	c := s.begin(workService, "ServerStream", "server_stream")
	req := new(grpcharness.RawMsg)
	if err := stream.RecvMsg(req); err != nil {
		return c.opFailed(err)
	}
	h, ok := decodeHeader(req.Data)
	if !ok {
		return c.finish(status.Error(codes.InvalidArgument, "bad header"))
	}
	c.learn(h)
	if err := sleepCtx(stream.Context(), time.Duration(h.DelayNs)); err != nil {
		return c.finish(err)
	}
	for i := 0; i < int(h.NMsgs); i++ {
		if err := stream.SendMsg(&grpcharness.RawMsg{Data: []byte{byte(i)}}); err != nil {
			return c.opFailed(err)
		}
	}
	return c.finish(statusFor(h))
}

func clientStreamHandler(srv interface{}, stream grpc.ServerStream) error {
	s := srv.(*workServer)
	c := s.begin(workService, "ClientStream", "client_stream")
	var h reqHeader
	first := true
	for {
		m := new(grpcharness.RawMsg)
		err := stream.RecvMsg(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			return c.opFailed(err)
		}
		if first {
			var ok bool
			if h, ok = decodeHeader(m.Data); !ok {
				return c.finish(status.Error(codes.InvalidArgument, "bad header"))
			}
			c.learn(h)
			first = false
		}
	}
	if first {
		return c.finish(status.Error(codes.InvalidArgument, "no messages"))
	}
	if err := sleepCtx(stream.Context(), time.Duration(h.DelayNs)); err != nil {
		return c.finish(err)
	}
	if err := statusFor(h); err != nil {
		return c.finish(err)
	}
	if err := stream.SendMsg(&grpcharness.RawMsg{Data: []byte("ok")}); err != nil {
		return c.opFailed(err)
	}
	return c.finish(nil)
}

func bidiHandler(srv interface{}, stream grpc.ServerStream) error {
	s := srv.(*workServer)
	c := s.begin(workService, "Bidi", "bidi")
	m := new(grpcharness.RawMsg)
	if err := stream.RecvMsg(m); err != nil {
		return c.opFailed(err)
	}
	h, ok := decodeHeader(m.Data)
	if !ok {
		return c.finish(status.Error(codes.InvalidArgument, "bad header"))
	}
	c.learn(h)
	if err := sleepCtx(stream.Context(), time.Duration(h.DelayNs)); err != nil {
		return c.finish(err)
	}
	if err := statusFor(h); err != nil {
		return c.finish(err)
	}
	// Echo the first message and every later one until the client half-closes.
	for {
		if err := stream.SendMsg(&grpcharness.RawMsg{Data: []byte("echo")}); err != nil {
			return c.opFailed(err)
		}
		err := stream.RecvMsg(m)
		if err == io.EOF {
			return c.finish(nil)
		}
		if err != nil {
			return c.opFailed(err)
		}
	}
}

var workDesc = grpc.ServiceDesc{
	ServiceName: workService,
	HandlerType: (*interface{})(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "Unary", Handler: unaryHandler(workService, "Unary")},
		{MethodName: "UnaryB", Handler: unaryHandler(workService, "UnaryB")},
	},
	Streams: []grpc.StreamDesc{
		{StreamName: "ServerStream", Handler: serverStreamHandler, ServerStreams: true},
		{StreamName: "ClientStream", Handler: clientStreamHandler, ClientStreams: true},
		{StreamName: "Bidi", Handler: bidiHandler, ServerStreams: true, ClientStreams: true},
	},
	Metadata: "pyhttp2probe/test.proto",
}

var otherDesc = grpc.ServiceDesc{
	ServiceName: otherService,
	HandlerType: (*interface{})(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "Ping", Handler: unaryHandler(otherService, "Ping")},
	},
	Metadata: "pyhttp2probe/test.proto",
}

func startServer(w *workload, idx int) (*workServer, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &workServer{idx: idx, port: lis.Addr().(*net.TCPAddr).Port, w: w, lis: lis}
	s.srv = grpc.NewServer(grpc.MaxConcurrentStreams(100000))
	s.srv.RegisterService(&workDesc, s)
	s.srv.RegisterService(&otherDesc, s)
	if w.cfg.serveHTTP {
		s.serveHTTP()
	} else {
		go s.srv.Serve(lis)
	}
	return s, nil
}

// stop drains gracefully, but never hangs: after a bound it closes everything.
func (s *workServer) stop(bound time.Duration) {
	if s.hs != nil {
		s.stopHTTP(bound)
		return
	}
	done := make(chan struct{})
	go func() { s.srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(bound):
		s.srv.Stop()
		<-done
	}
}
