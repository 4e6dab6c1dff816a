// grpcmethods: a grpc-go server with no service at all and a client that calls -methods N
// distinct methods on it, one after another, each answered Unimplemented: a peer making up
// method names, for the agent's label-set cap (tests/test_service_faults.py). With
// -methods 0 it only serves: a running grpc-go process, e.g. for a stripped build whose
// grpc-go version the agent has no offsets for. No protoc: a raw-bytes codec named "proto".
//
// Handshake of the test workloads: -wait-start prints "READY <pid>" and waits for a stdin
// line; -hold prints "DONE <calls> <unimplemented>" at the end and waits for a line or EOF.
// -literals N then calls two methods named by constants (as generated clients do), N times
// each: string literals in the binary's read-only data, which the agent reads by address.
package main

import (
	"bufio"
	"context"
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
)

type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

func main() {
	methods := flag.Int("methods", 1000, "distinct methods to call (each once)")
	waitStart := flag.Bool("wait-start", false, "print READY <pid>, wait for a stdin line")
	hold := flag.Bool("hold", false, "print DONE at the end, wait for a stdin line or EOF")
	literals := flag.Int("literals", 0, "calls of each of two methods named by constants")
	flag.Parse()
	encoding.RegisterCodec(rawCodec{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpcmethods:", err)
		os.Exit(1)
	}
	srv := grpc.NewServer()
	go srv.Serve(lis)
	conn, err := grpc.Dial(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpcmethods:", err)
		os.Exit(1)
	}
	stdin := bufio.NewReader(os.Stdin)
	if *waitStart {
		fmt.Printf("READY %d\n", os.Getpid())
		stdin.ReadString('\n')
	}
	unimplemented := 0
	for i := 0; i < *methods; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		in, out := []byte("x"), []byte(nil)
		err := conn.Invoke(ctx, fmt.Sprintf("/made.up%d.Service/Method%d", i, i), &in, &out)
		cancel()
		if status.Code(err) == codes.Unimplemented {
			unimplemented++
		}
	}
	const first, second = "/made.up.Literal/First", "/made.up.Literal/Second"
	for i := 0; i < 2**literals; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		in, out := []byte("x"), []byte(nil)
		method := first
		if i%2 == 1 {
			method = second
		}
		err := conn.Invoke(ctx, method, &in, &out)
		cancel()
		if status.Code(err) == codes.Unimplemented {
			unimplemented++
		}
	}
	conn.Close()
	srv.Stop()
	if *hold {
		fmt.Printf("DONE %d %d\n", *methods+2**literals, unimplemented)
		stdin.ReadString('\n')
	}
}
