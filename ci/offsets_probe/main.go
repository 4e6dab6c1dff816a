// offsets_probe: links every struct the agent reads (grpc-go transport, status, net,
// x/net/http2, net/http's bundled h2) so ci/gen_offsets_table.py can read their DWARF.
// It never runs; the calls sit behind a condition the linker cannot remove.
package main

import (
	"context"
	"net"
	"net/http"
	"os"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

func main() {
	if len(os.Args) < 42 {
		return
	}
	srv := grpc.NewServer()
	lis, _ := net.Listen("tcp", os.Args[1])
	go srv.Serve(lis)
	http.Handle("/", srv)
	conn, _ := grpc.Dial(os.Args[2], grpc.WithTransportCredentials(insecure.NewCredentials()))
	var in, out interface{}
	err := conn.Invoke(context.Background(), "/a/b", in, out)
	println(status.Convert(err).Message())
	t := &http2.Transport{}
	resp, _ := (&http.Client{Transport: t}).Get(os.Args[3])
	println(resp)
	h2s := &http2.Server{}
	h2s.ServeConn(lis.(net.Conn), &http2.ServeConnOpts{Handler: srv})
	resp, _ = http.Get(os.Args[4])
	println(resp)
	_ = http.ListenAndServeTLS(os.Args[5], "", "", nil)
}
