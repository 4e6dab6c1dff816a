package main

// Clients A (traced) and D (untraced: the same code, run from a binary the agent does not
// select). -calls N calls to B from -concurrency K goroutines over -conns connections; for
// the calls whose plan says so, a W3C traceparent with fresh random ids goes in the
// outgoing metadata. One truth line per call, with the complete expected tree below it.

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"pyhttp2probe/harness"
	"pyhttp2probe/harness/grpcharness"
)

type traceparentTruth struct {
	TraceID  string `json:"trace_id"`
	ParentID string `json:"parent_id"`
}

// clientTruth is one call from the client to B.
type clientTruth struct {
	Call         string            `json:"call"`   // "<client>-<index>", also sent as x-call-id
	Client       string            `json:"client"` // -name
	Role         string            `json:"role"`   // a | d
	Index        int               `json:"index"`
	Method       string            `json:"method"`
	Kind         string            `json:"kind"`
	Traceparent  *traceparentTruth `json:"traceparent"` // null: none sent
	Code         int               `json:"code"`        // status.Code of the call's error
	ExpectedCode int               `json:"expected_code"`
	Received     int               `json:"received"` // stream messages received
	Fanout       bool              `json:"fanout"`
	Conn         int               `json:"conn"`
	StartNs      int64             `json:"start_ns"` // CLOCK_MONOTONIC around the call
	EndNs        int64             `json:"end_ns"`
	Tree         *node             `json:"tree"` // this call's client span and all below it
}

type clientConfig struct {
	name, role               string
	calls, concurrency       int
	seed                     int64
	traceparentFrac, fanFrac float64
	timeout                  time.Duration
}

type clientStats struct {
	calls, mismatches, withTraceparent atomic.Int64
	byCode                             [17]atomic.Int64
}

func runClient(cfg clientConfig, conns []*grpc.ClientConn, truth *harness.TruthWriter) *clientStats {
	st := &clientStats{}
	var next atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < cfg.concurrency; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= cfg.calls {
					return
				}
				t := oneCall(cfg, conns, i)
				truth.Write(&t)
				st.calls.Add(1)
				if t.Code != t.ExpectedCode {
					st.mismatches.Add(1)
				}
				if t.Traceparent != nil {
					st.withTraceparent.Add(1)
				}
				if t.Code < len(st.byCode) {
					st.byCode[t.Code].Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return st
}

func oneCall(cfg clientConfig, conns []*grpc.ClientConn, i int) clientTruth {
	p := makePlan(cfg.seed, cfg.role, cfg.name, i, cfg.traceparentFrac, cfg.fanFrac)
	full := "/" + bService + "/" + p.Method
	t := clientTruth{Call: p.Call, Client: cfg.name, Role: cfg.role, Index: i, Method: full,
		Kind: kindOf(p.Stream), ExpectedCode: p.expectedCode(), Fanout: p.Fanout,
		Conn: i % len(conns), Tree: p.expectedTree(cfg.role)}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.timeout)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "x-call-id", p.Call)
	if p.Traceparent {
		header, traceID, parentID := newTraceparent()
		ctx = metadata.AppendToOutgoingContext(ctx, "traceparent", header)
		t.Traceparent = &traceparentTruth{TraceID: traceID, ParentID: parentID}
	}
	payload, _ := json.Marshal(p)
	cc := conns[t.Conn]
	t.StartNs = harness.MonoNow()
	var err error
	if p.Stream {
		t.Received, err = recvAll(ctx, cc, full, p.Method, payload)
	} else {
		err = cc.Invoke(ctx, full, &grpcharness.RawMsg{Data: payload}, new(grpcharness.RawMsg))
	}
	t.EndNs = harness.MonoNow()
	t.Code = int(status.Code(err))
	return t
}
