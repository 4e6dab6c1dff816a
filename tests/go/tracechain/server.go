package main

// Services B and C. Both obey the plan in the request payload. C sleeps a little, sends the
// planned stream messages and returns the planned status. B's handler calls C with its own
// context (ctx passed on, a metadata entry appended, as real code does): the planned
// children one after another, or each on a goroutine of its own when the plan fans out;
// then B sends its stream messages and returns its own planned error, or the error of the
// planned child unchanged, or OK. Each server writes one truth line per call it served.

import (
	"context"
	"encoding/json"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"pyhttp2probe/harness"
	"pyhttp2probe/harness/grpcharness"
)

// serverTruth is one call a server handled.
type serverTruth struct {
	Role        string       `json:"role"`        // b | c
	Call        string       `json:"call"`        // from the x-call-id metadata ("" if none came)
	PlanCall    string       `json:"plan_call"`   // from the payload: equal to call
	Method      string       `json:"method"`      // "/tracechain.B/Quote"
	Kind        string       `json:"kind"`        // unary | server_stream
	Code        int          `json:"code"`        // the status the handler returned
	Traceparent string       `json:"traceparent"` // the traceparent metadata received ("")
	Sent        int          `json:"sent"`        // stream messages sent
	Children    []childTruth `json:"children"`    // B: its calls to C, in plan order
	StartNs     int64        `json:"start_ns"`    // handler entry and exit, CLOCK_MONOTONIC
	EndNs       int64        `json:"end_ns"`
}

// childTruth is one call B's handler made to C.
type childTruth struct {
	Call     string `json:"call"`
	Method   string `json:"method"`
	Kind     string `json:"kind"`
	Code     int    `json:"code"` // status.Code of the call's error as B saw it
	Received int    `json:"received"`
	StartNs  int64  `json:"start_ns"`
	EndNs    int64  `json:"end_ns"`
}

type service struct {
	role   string
	truth  *harness.TruthWriter
	toC    []*grpc.ClientConn // B only
	next   atomic.Uint64
	served atomic.Int64
	byCode [17]atomic.Int64
}

func first(md metadata.MD, key string) string {
	if v := md.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func statusOf(code int) error {
	if code == 0 {
		return nil
	}
	return status.Errorf(codes.Code(code), "planned status %d", code)
}

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

// serve runs one call: payload is the first request message; send (nil for unary) sends
// one stream message.
func (s *service) serve(ctx context.Context, full, kind string, payload []byte, send func() error) error {
	t := serverTruth{Role: s.role, Method: full, Kind: kind, StartNs: harness.MonoNow(),
		Children: []childTruth{}}
	md, _ := metadata.FromIncomingContext(ctx)
	t.Call, t.Traceparent = first(md, "x-call-id"), first(md, "traceparent")
	err := s.obey(ctx, &t, payload, send)
	t.Code = int(status.Code(err))
	t.EndNs = harness.MonoNow()
	s.truth.Write(&t)
	s.served.Add(1)
	if t.Code < len(s.byCode) {
		s.byCode[t.Code].Add(1)
	}
	return err
}

func (s *service) obey(ctx context.Context, t *serverTruth, payload []byte, send func() error) error {
	var nmsgs int
	var result error
	if s.role == "c" {
		var c childPlan
		if err := json.Unmarshal(payload, &c); err != nil {
			return status.Errorf(codes.InvalidArgument, "bad plan: %v", err)
		}
		t.PlanCall, nmsgs = c.Call, c.NMsgs
		if err := sleepCtx(ctx, time.Duration(c.DelayUs)*time.Microsecond); err != nil {
			return err
		}
		result = statusOf(c.Code)
	} else {
		var p callPlan
		if err := json.Unmarshal(payload, &p); err != nil {
			return status.Errorf(codes.InvalidArgument, "bad plan: %v", err)
		}
		t.PlanCall, nmsgs = p.Call, p.NMsgs
		errs := s.callChildren(ctx, p, t)
		switch {
		case p.Code != 0:
			result = statusOf(p.Code)
		case p.Pass >= 0 && p.Pass < len(errs):
			result = errs[p.Pass] // C's error, handed back unchanged
		}
	}
	if send != nil {
		for ; t.Sent < nmsgs; t.Sent++ {
			if err := send(); err != nil {
				return grpcharness.OpStatus(err)
			}
		}
	}
	return result
}

// callChildren makes the plan's calls to C with the handler's ctx; their truth goes into
// t.Children in plan order; it returns each call's error.
func (s *service) callChildren(ctx context.Context, p callPlan, t *serverTruth) []error {
	n := len(p.Children)
	errs := make([]error, n)
	t.Children = make([]childTruth, n)
	if !p.Fanout {
		for k, c := range p.Children {
			t.Children[k], errs[k] = s.callC(ctx, c)
		}
		return errs
	}
	var wg sync.WaitGroup
	for k, c := range p.Children {
		wg.Add(1)
		go func(k int, c childPlan) {
			defer wg.Done()
			t.Children[k], errs[k] = s.callC(ctx, c)
		}(k, c)
	}
	wg.Wait()
	return errs
}

func (s *service) callC(ctx context.Context, c childPlan) (childTruth, error) {
	full := "/" + cService + "/" + c.Method
	ct := childTruth{Call: c.Call, Method: full, Kind: kindOf(c.Stream), StartNs: harness.MonoNow()}
	payload, _ := json.Marshal(c)
	ctx = metadata.AppendToOutgoingContext(ctx, "x-call-id", c.Call)
	cc := s.toC[int(s.next.Add(1))%len(s.toC)]
	var err error
	if c.Stream {
		ct.Received, err = recvAll(ctx, cc, full, c.Method, payload)
	} else {
		err = cc.Invoke(ctx, full, &grpcharness.RawMsg{Data: payload}, new(grpcharness.RawMsg))
	}
	ct.Code = int(status.Code(err))
	ct.EndNs = harness.MonoNow()
	return ct, err
}

// recvAll makes one server-streaming call: one request, then every reply until the status
// (io.EOF for OK, returned as nil).
func recvAll(ctx context.Context, cc *grpc.ClientConn, full, name string, payload []byte) (int, error) {
	cs, err := cc.NewStream(ctx, streamDesc(name), full)
	if err != nil {
		return 0, err
	}
	if err := cs.SendMsg(&grpcharness.RawMsg{Data: payload}); err != nil && err != io.EOF {
		return 0, err
	}
	if err := cs.CloseSend(); err != nil {
		return 0, err
	}
	n := 0
	for {
		err := cs.RecvMsg(new(grpcharness.RawMsg))
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		n++
	}
}

// desc is the hand-written service description of B or C (no protoc).
func (s *service) desc() *grpc.ServiceDesc {
	name, methods := bService, bMethods
	if s.role == "c" {
		name, methods = cService, cMethods
	}
	d := &grpc.ServiceDesc{ServiceName: name, HandlerType: (*interface{})(nil),
		Metadata: "tracechain.proto"}
	for _, m := range methods {
		full := "/" + name + "/" + m.name
		if m.stream {
			d.Streams = append(d.Streams, grpc.StreamDesc{StreamName: m.name, ServerStreams: true,
				Handler: func(_ interface{}, stream grpc.ServerStream) error {
					req := new(grpcharness.RawMsg)
					if err := stream.RecvMsg(req); err != nil {
						return grpcharness.OpStatus(err)
					}
					send := func() error { return stream.SendMsg(&grpcharness.RawMsg{Data: []byte("m")}) }
					return s.serve(stream.Context(), full, "server_stream", req.Data, send)
				}})
			continue
		}
		d.Methods = append(d.Methods, grpc.MethodDesc{MethodName: m.name,
			Handler: func(_ interface{}, ctx context.Context, dec func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
				req := new(grpcharness.RawMsg)
				if err := dec(req); err != nil {
					return nil, err
				}
				if err := s.serve(ctx, full, "unary", req.Data, nil); err != nil {
					return nil, err
				}
				return &grpcharness.RawMsg{Data: []byte("ok")}, nil
			}})
	}
	return d
}
