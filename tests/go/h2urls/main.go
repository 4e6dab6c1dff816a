// h2urls: HTTP/2 client requests (h2c, golang.org/x/net/http2 on both sides) whose URLs have
// the shapes that decide how the agent copies a request's host and path
// (bpf_src/http2.bpf.c read_request): host and path adjacent in memory as url.Parse leaves
// them (one read), an escaped path (Path is a new string), a URL built field by field, a
// userinfo, hosts and paths at and past the record's sizes (64 and 128 bytes), an empty path,
// and a URL without a host whose Request.Host is set. Every request is dialled to the one
// local server whatever its host. Truth (-truth FILE): one JSON line per request as the
// client sent it: host (URL.Host, else Request.Host) and path (URL.Path).
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
	"net/url"
	"os"
	"strings"
	"sync"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"pyhttp2probe/harness"
)

type truthLine struct {
	Shape string `json:"shape"`
	Host  string `json:"host"`
	Path  string `json:"path"`
}

func die(err error) {
	fmt.Fprintln(os.Stderr, "h2urls:", err)
	os.Exit(1)
}

// request i of shape s, for a server at port.
func request(s string, i int, port int) *http.Request {
	long := strings.Repeat("x", 60)
	var raw string
	switch s {
	case "adjacent":
		raw = fmt.Sprintf("http://127.0.0.1:%d/plain/path/%d?id=%d", port, i, i)
	case "escaped":
		raw = fmt.Sprintf("http://127.0.0.1:%d/a%%20b/%d", port, i)
	case "userinfo":
		raw = fmt.Sprintf("http://user:pw@127.0.0.1:%d/ui/%d", port, i)
	case "host-64": // 64 bytes of host exactly, the path right after it
		h := fmt.Sprintf("h%d.", i%10) + long
		raw = fmt.Sprintf("http://%s:%d/h64", h[:64-6], port)
	case "host-long":
		raw = fmt.Sprintf("http://%s%d.example.internal:%d/after/long/host", long, i%10, port)
	case "path-128":
		raw = fmt.Sprintf("http://127.0.0.1:%d/%s", port, strings.Repeat("p", 127))
	case "path-long":
		raw = fmt.Sprintf("http://127.0.0.1:%d/%s/%d", port, strings.Repeat("q", 150), i)
	case "empty-path":
		raw = fmt.Sprintf("http://127.0.0.1:%d", port)
	case "built":
		req, _ := http.NewRequest("GET", "http://placeholder/", nil)
		req.URL = &url.URL{Scheme: "http", Host: fmt.Sprintf("built-%d.svc:%d", i%10, port),
			Path: fmt.Sprintf("/built/%d", i)}
		return req
	case "host-header": // no URL host: Request.Host names it
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/hh/%d", port, i), nil)
		req.URL.Host = ""
		req.Host = fmt.Sprintf("named-%d.example:%d", i%10, port)
		return req
	default:
		die(fmt.Errorf("shape %q", s))
	}
	req, err := http.NewRequest("GET", raw, nil)
	if err != nil {
		die(err)
	}
	return req
}

var shapes = []string{"adjacent", "escaped", "userinfo", "host-64", "host-long", "path-128",
	"path-long", "empty-path", "built", "host-header"}

func main() {
	rounds := flag.Int("rounds", 20, "requests of each shape")
	concurrency := flag.Int("concurrency", 4, "requests at once")
	truthPath := flag.String("truth", "", "ground truth JSON lines")
	waitStart := flag.Bool("wait-start", false, "print READY <pid>, wait for a stdin line")
	hold := flag.Bool("hold", false, "print DONE at the end, wait for a stdin line or EOF")
	flag.Parse()

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		die(err)
	}
	port := lis.Addr().(*net.TCPAddr).Port
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	go (&http.Server{Handler: h2c.NewHandler(h, &http2.Server{})}).Serve(lis)
	client := &http.Client{Transport: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, _ string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, lis.Addr().String())
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
	var mu sync.Mutex
	type job struct {
		shape string
		i     int
	}
	jobs := make(chan job)
	var wg sync.WaitGroup
	for g := 0; g < *concurrency; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				req := request(j.shape, j.i, port)
				host := req.URL.Host
				if host == "" {
					host = req.Host
				}
				t := truthLine{Shape: j.shape, Host: host, Path: req.URL.Path}
				resp, err := client.Do(req)
				if err != nil {
					die(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				out.Write(t)
				mu.Unlock()
			}
		}()
	}
	n := 0
	for i := 0; i < *rounds; i++ {
		for _, s := range shapes {
			jobs <- job{s, i}
			n++
		}
	}
	close(jobs)
	wg.Wait()
	if err := out.Close(); err != nil {
		die(err)
	}
	if *hold {
		harness.Announce(fmt.Sprintf("DONE %d", n))
		harness.WaitLine()
	}
}
