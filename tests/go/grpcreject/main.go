// grpcreject: a grpc-go server whose InTapHandle rejects some RPCs before any handler runs
// (grpc-go answers those from the loopy writer via earlyAbortStreamHandler), and a client
// that makes a known number of accepted and rejected calls on two connections.
// Handshake of tests/truth.py: -wait-start (READY <pid>, wait for a line), -hold (DONE,
// wait), SUMMARY {json} on stderr. No protoc: hand-written ServiceDesc, raw-bytes codec.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
)

type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

type svc interface{}

func echo(_ interface{}, _ context.Context, dec func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
	var in []byte
	if err := dec(&in); err != nil {
		return nil, err
	}
	return &in, nil
}

var desc = grpc.ServiceDesc{
	ServiceName: "reject.Svc",
	HandlerType: (*svc)(nil),
	Methods: []grpc.MethodDesc{{MethodName: "Ok", Handler: echo},
		{MethodName: "Denied", Handler: echo}, {MethodName: "Busy", Handler: echo}},
	Metadata: "reject.proto",
}

// tapHandle refuses Denied (PermissionDenied) and Busy (ResourceExhausted) before any
// handler: the server never calls handleStream for them.
func tapHandle(ctx context.Context, info *tap.Info) (context.Context, error) {
	switch info.FullMethodName {
	case "/reject.Svc/Denied":
		return nil, status.Error(codes.PermissionDenied, "denied by tap")
	case "/reject.Svc/Busy":
		return nil, status.Error(codes.ResourceExhausted, "busy")
	}
	return ctx, nil
}

func main() {
	okN := flag.Int("ok", 40, "accepted calls")
	deniedN := flag.Int("denied", 7, "calls rejected with PermissionDenied")
	busyN := flag.Int("busy", 5, "calls rejected with ResourceExhausted")
	waitStart := flag.Bool("wait-start", false, "print READY <pid>, wait for a line")
	hold := flag.Bool("hold", false, "print DONE at the end, wait for a line or EOF")
	flag.Parse()
	encoding.RegisterCodec(rawCodec{})
	stdin := bufio.NewReader(os.Stdin)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := grpc.NewServer(grpc.InTapHandle(tapHandle))
	srv.RegisterService(&desc, struct{}{})
	go srv.Serve(lis)
	var conns []*grpc.ClientConn
	for i := 0; i < 2; i++ {
		c, err := grpc.Dial(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			panic(err)
		}
		conns = append(conns, c)
	}
	if *waitStart {
		fmt.Printf("READY %d\n", os.Getpid())
		stdin.ReadString('\n')
	}
	got := map[string]int{}
	mismatch := 0
	calls := []struct {
		method string
		n      int
		want   codes.Code
	}{{"Ok", *okN, codes.OK}, {"Denied", *deniedN, codes.PermissionDenied},
		{"Busy", *busyN, codes.ResourceExhausted}}
	i := 0
	for round := 0; ; round++ { // interleaved: accepted and rejected calls alternate
		left := false
		for _, c := range calls {
			if round >= c.n {
				continue
			}
			left = true
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			in, out := []byte("x"), []byte(nil)
			err := conns[i%2].Invoke(ctx, "/reject.Svc/"+c.method, &in, &out)
			cancel()
			i++
			code := status.Code(err)
			got[code.String()]++
			if code != c.want {
				mismatch++
			}
		}
		if !left {
			break
		}
	}
	for _, c := range conns {
		c.Close()
	}
	srv.Stop()
	if *hold {
		fmt.Println("DONE")
		stdin.ReadString('\n')
	}
	b, _ := json.Marshal(map[string]interface{}{"codes": got, "code_mismatch": mismatch,
		"ok": *okN, "denied": *deniedN, "busy": *busyN})
	fmt.Fprintf(os.Stderr, "SUMMARY %s\n", b)
}
