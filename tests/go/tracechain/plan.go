package main

// The plan of one call from a client (A or D) to B: what B does (its status, its stream
// messages, its child calls to C, in sequence or fanned out on goroutines) and what each
// child asks C for. The client derives it from (seed, role, call index) alone and sends it
// as the request payload; B and C obey it. So the client knows the whole tree below its call
// before making it, and writes it as ground truth.

import (
	"crypto/rand"
	"encoding/hex"
	"hash/fnv"
	mrand "math/rand"
	"strconv"

	"google.golang.org/grpc"
)

const (
	bService = "tracechain.B"
	cService = "tracechain.C"
)

// Eight methods per service, five unary and three server-streaming: a call's tree is told
// apart by its methods, so a child put under the wrong parent changes the shape.
type methodDef struct {
	name   string
	stream bool
}

var bMethods = []methodDef{
	{"Checkout", false}, {"Quote", false}, {"Reserve", false}, {"Cancel", false},
	{"Refund", false}, {"WatchOrder", true}, {"ListItems", true}, {"Export", true},
}

var cMethods = []methodDef{
	{"Lookup", false}, {"Charge", false}, {"Hold", false}, {"Release", false},
	{"Audit", false}, {"Scan", true}, {"Tail", true}, {"Dump", true},
}

// Status codes the services return on purpose: none that grpc-go also makes up by itself
// (Canceled, DeadlineExceeded, Unavailable, Internal, Unknown...), so a code in the truth
// can only come from the plan.
var (
	cErrCodes = []int{3, 5, 7, 9}   // InvalidArgument, NotFound, PermissionDenied, FailedPrecondition
	bErrCodes = []int{6, 8, 10, 11} // AlreadyExists, ResourceExhausted, Aborted, OutOfRange
)

func kindOf(stream bool) string {
	if stream {
		return "server_stream"
	}
	return "unary"
}

// childPlan is the payload of one call from B to C.
type childPlan struct {
	Call    string `json:"call"` // "<client call id>.<child index>"
	Method  string `json:"method"`
	Stream  bool   `json:"stream"`
	Code    int    `json:"code"`
	NMsgs   int    `json:"nmsgs"`
	DelayUs int    `json:"delay_us"`
}

// callPlan is the payload of one call from a client to B.
type callPlan struct {
	Call     string      `json:"call"` // "<client>-<index>"
	Method   string      `json:"method"`
	Stream   bool        `json:"stream"`
	Code     int         `json:"code"` // B's own error, 0: none
	Pass     int         `json:"pass"` // -1, else the child whose error B returns as its own
	NMsgs    int         `json:"nmsgs"`
	Fanout   bool        `json:"fanout"` // children made concurrently, one goroutine each
	Children []childPlan `json:"children"`
	// Not sent to B's logic, only decided here: whether the client sends a traceparent.
	Traceparent bool `json:"-"`
}

// expectedCode is the status B returns, and so the one the client sees.
func (p callPlan) expectedCode() int {
	if p.Code != 0 {
		return p.Code
	}
	if p.Pass >= 0 {
		return p.Children[p.Pass].Code
	}
	return 0
}

func planRand(seed int64, role string, i int) *mrand.Rand {
	h := fnv.New64a()
	h.Write([]byte(role))
	return mrand.New(mrand.NewSource(seed*1000003 ^ int64(h.Sum64()) ^ int64(i)*7919))
}

// makePlan is deterministic in (seed, role, i) and the two fractions (a run is repeated
// by its flags, whatever the client's name); the call id is "<name>-<i>".
func makePlan(seed int64, role, name string, i int, traceparentFrac, fanoutFrac float64) callPlan {
	rng := planRand(seed, role, i)
	bm := bMethods[rng.Intn(len(bMethods))]
	p := callPlan{Call: callID(name, i), Method: bm.name, Stream: bm.stream, Pass: -1}
	if bm.stream {
		p.NMsgs = rng.Intn(4)
	}
	n := rng.Intn(4)
	firstFailed := -1
	for k := 0; k < n; k++ {
		cm := cMethods[rng.Intn(len(cMethods))]
		c := childPlan{Call: childID(p.Call, k), Method: cm.name, Stream: cm.stream,
			DelayUs: rng.Intn(500)}
		if cm.stream {
			c.NMsgs = rng.Intn(4)
		}
		if rng.Float64() < 0.25 {
			c.Code = cErrCodes[rng.Intn(len(cErrCodes))]
			if firstFailed < 0 {
				firstFailed = k
			}
		}
		p.Children = append(p.Children, c)
	}
	switch r := rng.Float64(); {
	case r < 0.15:
		p.Code = bErrCodes[rng.Intn(len(bErrCodes))]
	case firstFailed >= 0 && r < 0.6:
		p.Pass = firstFailed // B hands C's error back unchanged
	}
	p.Fanout = n >= 2 && rng.Float64() < fanoutFrac
	p.Traceparent = rng.Float64() < traceparentFrac
	if p.Children == nil {
		p.Children = []childPlan{}
	}
	return p
}

func callID(client string, i int) string { return client + "-" + strconv.Itoa(i) }

func childID(call string, k int) string { return call + "." + strconv.Itoa(k) }

// newTraceparent is a W3C traceparent with fresh random ids (never all zero), sampled.
func newTraceparent() (header, traceID, parentID string) {
	var t [16]byte
	var s [8]byte
	for {
		rand.Read(t[:])
		rand.Read(s[:])
		if t != [16]byte{} && s != [8]byte{} {
			break
		}
	}
	traceID, parentID = hex.EncodeToString(t[:]), hex.EncodeToString(s[:])
	return "00-" + traceID + "-" + parentID + "-01", traceID, parentID
}

func streamDesc(name string) *grpc.StreamDesc {
	return &grpc.StreamDesc{StreamName: name, ServerStreams: true}
}

// node is one span of the expected tree, as the truth files write it: which process
// (role), which side, which RPC, which status code, and the spans under it.
type node struct {
	Role     string  `json:"role"` // a, b, c, d
	Side     string  `json:"side"` // client | server
	Method   string  `json:"method"`
	Kind     string  `json:"kind"`
	Code     int     `json:"code"`
	Children []*node `json:"children"`
}

// expectedTree is the tree below (and including) the client's own call; role: a or d.
func (p callPlan) expectedTree(role string) *node {
	full := "/" + bService + "/" + p.Method
	bServer := &node{Role: "b", Side: "server", Method: full, Kind: kindOf(p.Stream),
		Code: p.expectedCode(), Children: []*node{}}
	for _, c := range p.Children {
		cfull := "/" + cService + "/" + c.Method
		kind := kindOf(c.Stream)
		cServer := &node{Role: "c", Side: "server", Method: cfull, Kind: kind, Code: c.Code,
			Children: []*node{}}
		bServer.Children = append(bServer.Children, &node{Role: "b", Side: "client",
			Method: cfull, Kind: kind, Code: c.Code, Children: []*node{cServer}})
	}
	return &node{Role: role, Side: "client", Method: full, Kind: kindOf(p.Stream),
		Code: p.expectedCode(), Children: []*node{bServer}}
}
