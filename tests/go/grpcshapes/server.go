package main

// The shapes server: one service (pyhttp2probe.shapes.Svc) whose handlers obey the request
// header, served by one grpc.Server per case so every case has its own listener (port, or
// Unix socket path) and spans of different cases never share a match key.

import (
	"context"
	"io"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"pyhttp2probe/harness"
	"pyhttp2probe/harness/grpcharness"
)

const svc = "pyhttp2probe.shapes.Svc"

type serverTruth struct {
	Case          string `json:"case"`
	Method        string `json:"method"`
	Kind          string `json:"kind"`
	ServerAddress string `json:"server_address"`
	ServerPort    int    `json:"server_port"`
	Code          int    `json:"code"`
	StartNs       int64  `json:"server_start_ns"`
	EndNs         int64  `json:"server_end_ns"`
	ClientID      int64  `json:"client_id"`
	Attempt       int    `json:"attempt"`
	OpFailed      bool   `json:"op_failed"` // a stream op failed: grpc wrote a status inside it
}

type shapeServer struct {
	name    string
	address string // listener IP, or the Unix socket path
	port    int    // 0 for a Unix socket
	lis     net.Listener
	srv     *grpc.Server
	truth   *harness.TruthWriter
	tries   sync.Map // client id -> *int64 attempts seen (retry case)
	triesMu sync.Mutex
}

type call struct {
	s *shapeServer
	t serverTruth
}

func (s *shapeServer) begin(method, kind string) *call {
	return &call{s: s, t: serverTruth{Case: s.name, Method: "/" + svc + "/" + method, Kind: kind,
		ServerAddress: s.address, ServerPort: s.port, StartNs: harness.MonoNow(), ClientID: -1}}
}

// finish records the handler's outcome; handlers return only status errors (or nil) so the
// code here is the code grpc writes.
func (c *call) finish(err error) error {
	c.t.Code = int(status.Code(err))
	c.t.EndNs = harness.MonoNow()
	c.s.truth.Write(&c.t)
	return err
}

// opFailed ends a handler whose RecvMsg/SendMsg failed. grpc then writes a status from
// inside that call already (serverStream's deferred WriteStatus): the status on the wire
// is that one, written before the handler returns, and the handler's own is a repeat.
// The truth's code is that first status: the op's error as grpc's toRPCErr converts it.
func (c *call) opFailed(err error) error {
	c.t.OpFailed = true
	return c.finish(grpcharness.OpStatus(err))
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctxErr(ctx)
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

func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return status.FromContextError(err).Err()
	}
	return nil
}

func statusFor(h reqHeader) error {
	if h.Code == 0 {
		return nil
	}
	return status.Errorf(codes.Code(h.Code), "requested status %d", h.Code)
}

func reply(h reqHeader) *grpcharness.RawMsg {
	n := int(h.RespLen)
	if n < 2 {
		n = 2
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 13)
	}
	return &grpcharness.RawMsg{Data: b}
}

// attempt counts attempts of one client id (retry case: the first FailFirst fail).
func (s *shapeServer) attempt(id uint64) int {
	s.triesMu.Lock()
	defer s.triesMu.Unlock()
	v, _ := s.tries.LoadOrStore(id, new(int))
	p := v.(*int)
	*p++
	return *p
}

func unaryHandler(method string) func(interface{}, context.Context, func(interface{}) error, grpc.UnaryServerInterceptor) (interface{}, error) {
	return func(srv interface{}, ctx context.Context, dec func(interface{}) error, icpt grpc.UnaryServerInterceptor) (interface{}, error) {
		req := new(grpcharness.RawMsg)
		if err := dec(req); err != nil {
			return nil, err
		}
		s := srv.(*shapeServer)
		h := func(ctx context.Context, r interface{}) (interface{}, error) {
			return s.serveUnary(ctx, method, r.(*grpcharness.RawMsg))
		}
		if icpt == nil {
			return h(ctx, req)
		}
		return icpt(ctx, req, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/" + svc + "/" + method}, h)
	}
}

func (s *shapeServer) serveUnary(ctx context.Context, method string, req *grpcharness.RawMsg) (*grpcharness.RawMsg, error) {
	c := s.begin(method, "unary")
	h, ok := decodeHeader(req.Data)
	if !ok {
		return nil, c.finish(status.Error(codes.InvalidArgument, "bad header"))
	}
	c.t.ClientID = int64(h.ID)
	if h.FailFirst > 0 {
		c.t.Attempt = s.attempt(h.ID)
		if c.t.Attempt <= int(h.FailFirst) {
			return nil, c.finish(status.Errorf(codes.Unavailable, "attempt %d fails", c.t.Attempt))
		}
	}
	if err := sleepCtx(ctx, time.Duration(h.DelayNs)); err != nil {
		return nil, c.finish(err)
	}
	if err := statusFor(h); err != nil {
		return nil, c.finish(err)
	}
	c.finish(nil)
	return reply(h), nil
}

// serverStreamHandler sends NMsgs replies, sleeping DelayNs before each.
func serverStreamHandler(srv interface{}, stream grpc.ServerStream) error {
	s := srv.(*shapeServer)
	c := s.begin("ServerStream", "server_stream")
	ctx := stream.Context()
	req := new(grpcharness.RawMsg)
	if err := stream.RecvMsg(req); err != nil {
		return c.opFailed(err)
	}
	h, ok := decodeHeader(req.Data)
	if !ok {
		return c.finish(status.Error(codes.InvalidArgument, "bad header"))
	}
	c.t.ClientID = int64(h.ID)
	for i := 0; i < int(h.NMsgs); i++ {
		if err := sleepCtx(ctx, time.Duration(h.DelayNs)); err != nil {
			return c.finish(err)
		}
		if err := stream.SendMsg(reply(h)); err != nil {
			return c.opFailed(err)
		}
	}
	return c.finish(statusFor(h))
}

// bidiHandler echoes every message until the client half-closes; then the header's status.
func bidiHandler(srv interface{}, stream grpc.ServerStream) error {
	s := srv.(*shapeServer)
	c := s.begin("Bidi", "bidi")
	m := new(grpcharness.RawMsg)
	if err := stream.RecvMsg(m); err != nil {
		return c.opFailed(err)
	}
	h, ok := decodeHeader(m.Data)
	if !ok {
		return c.finish(status.Error(codes.InvalidArgument, "bad header"))
	}
	c.t.ClientID = int64(h.ID)
	for {
		if err := stream.SendMsg(reply(h)); err != nil {
			return c.opFailed(err)
		}
		err := stream.RecvMsg(m)
		if err == io.EOF {
			return c.finish(statusFor(h))
		}
		if err != nil {
			return c.opFailed(err)
		}
	}
}

var svcDesc = grpc.ServiceDesc{
	ServiceName: svc,
	HandlerType: (*interface{})(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "Unary", Handler: unaryHandler("Unary")},
		{MethodName: "Flaky", Handler: unaryHandler("Flaky")},
	},
	Streams: []grpc.StreamDesc{
		{StreamName: "ServerStream", Handler: serverStreamHandler, ServerStreams: true},
		{StreamName: "Bidi", Handler: bidiHandler, ServerStreams: true, ClientStreams: true},
	},
	Metadata: "pyhttp2probe/shapes.proto",
}

func startServer(name, network, addr string, truth *harness.TruthWriter, opts ...grpc.ServerOption) (*shapeServer, error) {
	lis, err := net.Listen(network, addr)
	if err != nil {
		return nil, err
	}
	s := &shapeServer{name: name, lis: lis, truth: truth}
	switch a := lis.Addr().(type) {
	case *net.TCPAddr:
		s.address, s.port = a.IP.String(), a.Port
	case *net.UnixAddr:
		s.address = a.Name
	}
	s.srv = grpc.NewServer(opts...)
	s.srv.RegisterService(&svcDesc, s)
	go s.srv.Serve(lis)
	return s, nil
}

// stop drains gracefully, but never hangs: after a bound it closes everything.
func (s *shapeServer) stop(bound time.Duration) {
	done := make(chan struct{})
	go func() { s.srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(bound):
		s.srv.Stop()
		<-done
	}
}
