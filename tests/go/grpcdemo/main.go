// grpcdemo: the program behind `python -m pyhttp2probe demo`. One process serves two gRPC
// services and drives steady client load against itself for -duration at -qps, with random
// latencies (0.1-20 ms, a different profile per method) and ~5% errors of a few codes, so
// the agent's per-method table has something to show. No generated code: a raw-bytes codec
// and hand-written service descriptors keep it buildable against any grpc-go since v1.40.
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/status"
)

const codecName = "pyh2demo"

type rawMsg struct{ b []byte }
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return v.(*rawMsg).b, nil }
func (rawCodec) Unmarshal(d []byte, v interface{}) error {
	v.(*rawMsg).b = append([]byte(nil), d...)
	return nil
}
func (rawCodec) Name() string { return codecName }

func init() { encoding.RegisterCodec(rawCodec{}) }

// request: code (1 byte), stream messages (1 byte), delay ns (8 bytes)
func encodeReq(code codes.Code, n int, d time.Duration) *rawMsg {
	b := make([]byte, 10)
	b[0], b[1] = byte(code), byte(n)
	binary.LittleEndian.PutUint64(b[2:], uint64(d))
	return &rawMsg{b: b}
}

func decodeReq(m *rawMsg) (codes.Code, int, time.Duration) {
	if len(m.b) < 10 {
		return codes.InvalidArgument, 0, 0
	}
	return codes.Code(m.b[0]), int(m.b[1]), time.Duration(binary.LittleEndian.Uint64(m.b[2:]))
}

func behave(ctx context.Context, req *rawMsg) (int, error) {
	code, n, d := decodeReq(req)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return 0, status.FromContextError(ctx.Err()).Err()
	}
	if code != codes.OK {
		return 0, status.Errorf(code, "demo error %s", code)
	}
	return n, nil
}

func unary(srv interface{}, ctx context.Context, dec func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
	req := new(rawMsg)
	if err := dec(req); err != nil {
		return nil, err
	}
	if _, err := behave(ctx, req); err != nil {
		return nil, err
	}
	return &rawMsg{b: []byte("ok")}, nil
}

func list(srv interface{}, stream grpc.ServerStream) error {
	req := new(rawMsg)
	if err := stream.RecvMsg(req); err != nil {
		return err
	}
	n, err := behave(stream.Context(), req)
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		if err := stream.SendMsg(&rawMsg{b: []byte{byte(i)}}); err != nil {
			return err
		}
	}
	return nil
}

var greeter = grpc.ServiceDesc{
	ServiceName: "demo.Greeter",
	HandlerType: (*interface{})(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "SayHello", Handler: unary},
		{MethodName: "SayBye", Handler: unary},
	},
	Metadata: "demo.proto",
}

var store = grpc.ServiceDesc{
	ServiceName: "demo.Store",
	HandlerType: (*interface{})(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "Get", Handler: unary},
		{MethodName: "Put", Handler: unary},
	},
	Streams: []grpc.StreamDesc{
		{StreamName: "List", Handler: list, ServerStreams: true},
	},
	Metadata: "demo.proto",
}

// A method's traffic share and latency profile (log-uniform between lo and hi).
type profile struct {
	method string
	weight int
	lo, hi time.Duration
	stream bool
}

var profiles = []profile{
	{"/demo.Greeter/SayHello", 5, 100 * time.Microsecond, 2 * time.Millisecond, false},
	{"/demo.Greeter/SayBye", 1, 200 * time.Microsecond, 5 * time.Millisecond, false},
	{"/demo.Store/Get", 4, 300 * time.Microsecond, 8 * time.Millisecond, false},
	{"/demo.Store/Put", 2, 1 * time.Millisecond, 20 * time.Millisecond, false},
	{"/demo.Store/List", 1, 2 * time.Millisecond, 20 * time.Millisecond, true},
}

var errCodes = []codes.Code{codes.NotFound, codes.NotFound, codes.Unavailable, codes.Internal, codes.InvalidArgument, codes.DeadlineExceeded}

var listDesc = &grpc.StreamDesc{StreamName: "List", ServerStreams: true}

func doCall(cc *grpc.ClientConn, p profile, req *rawMsg) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if !p.stream {
		return cc.Invoke(ctx, p.method, req, new(rawMsg))
	}
	cs, err := cc.NewStream(ctx, listDesc, p.method)
	if err != nil {
		return err
	}
	if err := cs.SendMsg(req); err != nil && err != io.EOF {
		return err
	}
	if err := cs.CloseSend(); err != nil && err != io.EOF {
		return err
	}
	for {
		if err := cs.RecvMsg(new(rawMsg)); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

func main() {
	duration := flag.Duration("duration", 20*time.Second, "how long to drive load")
	qps := flag.Float64("qps", 300, "client calls per second")
	errRate := flag.Float64("errors", 0.05, "fraction of calls answered with an error status")
	conns := flag.Int("conns", 2, "client connections")
	addr := flag.String("listen", "127.0.0.1:0", "server listen address")
	seed := flag.Int64("seed", 1, "random seed")
	waitStart := flag.Bool("wait-start", false, "print READY <pid>, wait for a stdin line before the load starts")
	hold := flag.Bool("hold", false, "after the load print DONE and wait for a stdin line or EOF before exiting")
	flag.Parse()

	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "grpcdemo: %v\n", err)
		os.Exit(1)
	}
	srv := grpc.NewServer()
	srv.RegisterService(&greeter, struct{}{})
	srv.RegisterService(&store, struct{}{})
	go srv.Serve(lis)
	port := lis.Addr().(*net.TCPAddr).Port
	fmt.Fprintf(os.Stderr, "grpcdemo: pid %d serving demo.Greeter and demo.Store on 127.0.0.1:%d\n", os.Getpid(), port)

	stdin := bufio.NewReader(os.Stdin)
	if *waitStart {
		fmt.Printf("READY %d\n", os.Getpid())
		os.Stdout.Sync()
		stdin.ReadString('\n')
	} else {
		fmt.Printf("PID %d\n", os.Getpid())
		os.Stdout.Sync()
	}

	var ccs []*grpc.ClientConn
	for i := 0; i < *conns; i++ {
		cc, err := grpc.Dial(fmt.Sprintf("127.0.0.1:%d", port),
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.CallContentSubtype(codecName)))
		if err != nil {
			fmt.Fprintf(os.Stderr, "grpcdemo: dial: %v\n", err)
			os.Exit(1)
		}
		ccs = append(ccs, cc)
	}
	var weighted []profile
	for _, p := range profiles {
		for i := 0; i < p.weight; i++ {
			weighted = append(weighted, p)
		}
	}
	rng := rand.New(rand.NewSource(*seed))
	var total, failed int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 512)
	interval := time.Duration(float64(time.Second) / math.Max(*qps, 0.1))
	start := time.Now()
	next := start
	for i := 0; time.Since(start) < *duration; i++ {
		p := weighted[rng.Intn(len(weighted))]
		code := codes.OK
		if rng.Float64() < *errRate {
			code = errCodes[rng.Intn(len(errCodes))]
		}
		lo, hi := math.Log(float64(p.lo)), math.Log(float64(p.hi))
		d := time.Duration(math.Exp(lo + rng.Float64()*(hi-lo)))
		req := encodeReq(code, 1+rng.Intn(5), d)
		cc := ccs[i%len(ccs)]
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			atomic.AddInt64(&total, 1)
			if err := doCall(cc, p, req); err != nil {
				atomic.AddInt64(&failed, 1)
			}
		}()
		next = next.Add(interval)
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	for _, cc := range ccs {
		cc.Close()
	}
	srv.Stop()
	s, _ := json.Marshal(map[string]interface{}{"total": total, "errors": failed,
		"elapsed_s": elapsed.Seconds(), "rps": float64(total) / elapsed.Seconds(), "port": port})
	fmt.Fprintf(os.Stderr, "SUMMARY %s\n", s)
	if *hold {
		fmt.Println("DONE")
		os.Stdout.Sync()
		stdin.ReadString('\n')
	}
}
