// grpcmini: a tiny grpc-go client and server in one process, for goelf tests.
// No protoc: a hand-written ServiceDesc and a raw-bytes codec registered as "proto".
package main

import (
	"context"
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

type echoServer interface{}

type echoImpl struct{}

func echoHandler(srv interface{}, ctx context.Context, dec func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
	var in []byte
	if err := dec(&in); err != nil {
		return nil, err
	}
	if string(in) == "fail" {
		return nil, status.Error(codes.NotFound, "no such thing")
	}
	return &in, nil
}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: "mini.Echo",
	HandlerType: (*echoServer)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Echo", Handler: echoHandler}},
	Streams:     []grpc.StreamDesc{},
	Metadata:    "mini.proto",
}

func main() {
	encoding.RegisterCodec(rawCodec{})
	n := 3
	if len(os.Args) > 1 {
		fmt.Sscanf(os.Args[1], "%d", &n)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := grpc.NewServer()
	srv.RegisterService(&serviceDesc, echoImpl{})
	go srv.Serve(lis)
	defer srv.Stop()
	conn, err := grpc.Dial(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	for i := 0; i < n; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		in := []byte("hello")
		if i%2 == 1 {
			in = []byte("fail")
		}
		var out []byte
		err := conn.Invoke(ctx, "/mini.Echo/Echo", &in, &out)
		cancel()
		fmt.Println(i, string(out), status.Code(err))
	}
}
