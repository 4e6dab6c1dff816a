// h2nest: HTTP/2 servers whose handlers make calls with their request's context, for the
// agent's trace joins (tests/test_traces_http2.py). One process: a gRPC leaf server, an
// HTTP/2 (h2c) leaf server, and two front HTTP/2 servers — net/http's own HTTP/2 (h2c by
// http.Protocols) and golang.org/x/net/http2 (h2c.NewHandler). A client drives -requests
// front requests, -concurrency at a time, alternating the fronts; request i's handler
// makes i%3 gRPC calls and (i/3)%3 HTTP/2 calls to the leaves, one after another, with
// r.Context() (as handlers do), and answers 500 when i%7 == 0, else 200. Leaf calls fail on
// a schedule too (gRPC NotFound when the call index is odd, HTTP 404 every third).
//
// Request i carries a W3C traceparent when i%4 <= 1 and (i/4%7)*4 padding headers, so the
// handler's Header map has every size from a handful of fields to over 20.
// Ground truth (-truth FILE): one JSON line per front request: id, front ("nethttp" or
// "xnet"), status, the traceparent and header count the handler saw, and its children in
// order: {"kind": "grpc"|"http", "status": code}.
// Handshake: -wait-start prints "READY <pid>" and waits for a stdin line; -hold prints
// "DONE <requests>" at the end and waits for a line or EOF.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"pyhttp2probe/harness"
	"pyhttp2probe/harness/grpcharness"
)

type child struct {
	Kind   string `json:"kind"`
	Status int    `json:"status"`
}

type truthLine struct {
	ID          int     `json:"id"`
	Front       string  `json:"front"`
	Status      int     `json:"status"`
	Traceparent string  `json:"traceparent"` // as the handler received it ("": none)
	Headers     int     `json:"headers"`     // header fields the handler's request had
	Children    []child `json:"children"`
}

func die(err error) {
	fmt.Fprintln(os.Stderr, "h2nest:", err)
	os.Exit(1)
}

func listen() net.Listener {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		die(err)
	}
	return lis
}

// leafGet answers the gRPC leaf method: NotFound for odd call indexes.
func leafGet(_ interface{}, ctx context.Context, dec func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
	var in grpcharness.RawMsg
	if err := dec(&in); err != nil {
		return nil, err
	}
	n, _ := strconv.Atoi(string(in.Data))
	if n%2 == 1 {
		return nil, status.Error(codes.NotFound, "odd")
	}
	return &grpcharness.RawMsg{Data: []byte("ok")}, nil
}

var leafDesc = grpc.ServiceDesc{
	ServiceName: "nest.Leaf",
	HandlerType: (*interface{})(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Get", Handler: leafGet}},
}

type truthSet struct {
	mu    sync.Mutex
	lines map[int]*truthLine
}

// nester is one front's handler state: the leaves, and the HTTP/2 client of its flavor.
type nester struct {
	leaf     *grpc.ClientConn
	leafURL  string
	h2client *http.Client
	truth    *truthSet
}

// front is both fronts' handler: the request's children, with r.Context().
func (n *nester) front(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, _ := strconv.Atoi(r.URL.Query().Get("id"))
		ctx := r.Context()
		var kids []child
		for j := 0; j < id%3; j++ {
			in := grpcharness.RawMsg{Data: []byte(strconv.Itoa(id + j))}
			err := n.leaf.Invoke(ctx, "/nest.Leaf/Get", &in, &grpcharness.RawMsg{})
			kids = append(kids, child{"grpc", int(status.Code(err))})
		}
		for j := 0; j < (id/3)%3; j++ {
			code := 200
			if (id+j)%3 == 0 {
				code = 404
			}
			req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s?code=%d", n.leafURL, code), nil)
			resp, err := n.h2client.Do(req)
			if err != nil {
				kids = append(kids, child{"http", 0})
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			kids = append(kids, child{"http", resp.StatusCode})
		}
		code := 200
		if id%7 == 0 {
			code = 500
		}
		n.truth.mu.Lock()
		n.truth.lines[id] = &truthLine{ID: id, Front: name, Status: code, Children: kids,
			Traceparent: r.Header.Get("Traceparent"), Headers: len(r.Header)}
		n.truth.mu.Unlock()
		w.WriteHeader(code)
	}
}

func main() {
	requests := flag.Int("requests", 200, "front requests")
	concurrency := flag.Int("concurrency", 8, "front requests at once")
	truthPath := flag.String("truth", "", "ground truth JSON lines")
	waitStart := flag.Bool("wait-start", false, "print READY <pid>, wait for a stdin line")
	hold := flag.Bool("hold", false, "print DONE at the end, wait for a stdin line or EOF")
	flag.Parse()

	glis := listen()
	gsrv := grpc.NewServer()
	gsrv.RegisterService(&leafDesc, nil)
	go gsrv.Serve(glis)
	leaf, err := grpc.NewClient(glis.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.CallContentSubtype(grpcharness.CodecName)))
	if err != nil {
		die(err)
	}

	// the HTTP/2 leaf: x/net's h2c, status from the query
	hlis := listen()
	leafH := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(r.URL.Query().Get("code"))
		w.WriteHeader(code)
	})
	go (&http.Server{Handler: h2c.NewHandler(leafH, &http2.Server{})}).Serve(hlis)

	// net/http's own HTTP/2 without TLS, both sides (the bundled flavor)
	var h2only http.Protocols
	h2only.SetUnencryptedHTTP2(true)
	stdClient := &http.Client{Transport: &http.Transport{Protocols: &h2only}}
	xClient := &http.Client{Transport: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}}
	truth := &truthSet{lines: map[int]*truthLine{}}
	leafURL := "http://" + hlis.Addr().String() + "/leaf"
	stdNest := &nester{leaf: leaf, leafURL: leafURL, h2client: stdClient, truth: truth}
	xNest := &nester{leaf: leaf, leafURL: leafURL, h2client: xClient, truth: truth}
	stdLis, xLis := listen(), listen()
	go (&http.Server{Handler: stdNest.front("nethttp"), Protocols: &h2only}).Serve(stdLis)
	go (&http.Server{Handler: h2c.NewHandler(xNest.front("xnet"), &http2.Server{})}).Serve(xLis)

	out, err := harness.OpenTruth(*truthPath)
	if err != nil {
		die(err)
	}
	if *waitStart {
		harness.Announce(fmt.Sprintf("READY %d", os.Getpid()))
		harness.WaitLine()
	}
	var wg sync.WaitGroup
	ids := make(chan int)
	for g := 0; g < *concurrency; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range ids {
				url, c := "http://"+stdLis.Addr().String(), stdClient
				if id%2 == 1 {
					url, c = "http://"+xLis.Addr().String(), xClient
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/front?id=%d", url, id), nil)
				if id%4 <= 1 { // a client that propagates a W3C trace context (both fronts)
					req.Header.Set("traceparent", fmt.Sprintf("00-%032x-%016x-01", id*7919+1, id*104729+1))
				}
				for j := 0; j < (id/4%7)*4; j++ { // header maps of every size up to 24 fields
					req.Header.Set(fmt.Sprintf("X-Pad-%d", j), "p")
				}
				resp, err := c.Do(req)
				if err != nil {
					die(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				cancel()
			}
		}()
	}
	for i := 1; i <= *requests; i++ {
		ids <- i
	}
	close(ids)
	wg.Wait()
	for i := 1; i <= *requests; i++ {
		out.Write(truth.lines[i])
	}
	if err := out.Close(); err != nil {
		die(err)
	}
	if *hold {
		harness.Announce(fmt.Sprintf("DONE %d", *requests))
		harness.WaitLine()
	}
}
