// h2tp: HTTP/2 (h2c, golang.org/x/net/http2 on both sides) requests that carry a W3C
// traceparent header among a varying number of other fields, for the agent's read of the
// server request's Header map (tests/test_traces_http2.py). Built with Go <= 1.23 (map
// buckets) and >= 1.24 (swiss tables). Request i sends a traceparent unless i%5 == 0, and
// i%40 padding fields (1..44 header fields in all). Truth (-truth FILE): one JSON line per
// request as the handler saw it: id, traceparent ("" when none), headers (field count).
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

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"pyhttp2probe/harness"
)

type truthLine struct {
	ID          int    `json:"id"`
	Traceparent string `json:"traceparent"`
	Headers     int    `json:"headers"`
}

func die(err error) {
	fmt.Fprintln(os.Stderr, "h2tp:", err)
	os.Exit(1)
}

func main() {
	requests := flag.Int("requests", 200, "requests")
	concurrency := flag.Int("concurrency", 4, "requests at once")
	truthPath := flag.String("truth", "", "ground truth JSON lines")
	waitStart := flag.Bool("wait-start", false, "print READY <pid>, wait for a stdin line")
	hold := flag.Bool("hold", false, "print DONE at the end, wait for a stdin line or EOF")
	flag.Parse()

	var mu sync.Mutex
	truth := map[int]truthLine{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := strconv.Atoi(r.URL.Query().Get("id"))
		mu.Lock()
		truth[id] = truthLine{ID: id, Traceparent: r.Header.Get("Traceparent"), Headers: len(r.Header)}
		mu.Unlock()
	})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		die(err)
	}
	go (&http.Server{Handler: h2c.NewHandler(h, &http2.Server{})}).Serve(lis)
	client := &http.Client{Transport: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}}
	out, err := harness.OpenTruth(*truthPath)
	if err != nil {
		die(err)
	}
	if *waitStart {
		harness.Announce(fmt.Sprintf("READY %d", os.Getpid()))
		harness.WaitLine()
	}
	ids := make(chan int)
	var wg sync.WaitGroup
	for g := 0; g < *concurrency; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range ids {
				req, _ := http.NewRequest("GET", fmt.Sprintf("http://%s/tp?id=%d", lis.Addr(), id), nil)
				if id%5 != 0 {
					req.Header.Set("traceparent", fmt.Sprintf("00-%032x-%016x-01", id*7919+1, id*104729+1))
				}
				for j := 0; j < id%40; j++ {
					req.Header.Set(fmt.Sprintf("X-Pad-%d", j), "p")
				}
				resp, err := client.Do(req)
				if err != nil {
					die(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	for i := 1; i <= *requests; i++ {
		ids <- i
	}
	close(ids)
	wg.Wait()
	for i := 1; i <= *requests; i++ {
		out.Write(truth[i])
	}
	if err := out.Close(); err != nil {
		die(err)
	}
	if *hold {
		harness.Announce(fmt.Sprintf("DONE %d", *requests))
		harness.WaitLine()
	}
}
