// grpcservehttp: a grpc-go server reached two ways in one process — grpc's own transport
// (the target of ghz) and (*grpc.Server).ServeHTTP under net/http's HTTP/2 server (h2c) —
// plus clients that call the ServeHTTP listener and write one truth line per call. The
// net/http listener (h2c) and a second one over TLS also answer plain HTTP/2 requests
// (the target of h2load): /status/NNN answers NNN, anything else 200. It serves only grpc.health.v1.Health (so ghz can use the public proto):
// Check("") answers OK, Check("missing") answers NotFound.
//
// Handshake like the other workloads: prints "READY <pid> <grpc-port> <http-port>", waits
// for a stdin line, runs its calls (if any), prints DONE (with -hold) and waits for EOF.
package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

type truth struct {
	Method string `json:"method"`
	Code   int    `json:"code"`
	Port   int    `json:"server_port"`
	Conn   int    `json:"conn"`
}

func main() {
	conns := flag.Int("conns", 2, "client connections to the ServeHTTP listener")
	goroutines := flag.Int("goroutines", 4, "concurrent goroutines per connection")
	rpcs := flag.Int("rpcs", 20, "calls per goroutine")
	truthPath := flag.String("truth", "", "client truth JSON lines")
	waitStart := flag.Bool("wait-start", false, "print READY, wait for a stdin line")
	hold := flag.Bool("hold", false, "print DONE, wait for EOF before exiting")
	h2Goroutines := flag.Int("h2-goroutines", 0, "goroutines making net/http HTTP/2 (h2c) requests to the own listener")
	h2Requests := flag.Int("h2-requests", 20, "requests per -h2-goroutines goroutine")
	h2TruthPath := flag.String("h2-truth", "", "HTTP/2 client truth JSON lines")
	h2Panics := flag.Int("h2-panics", 0, "extra requests per -h2-goroutines goroutine to /panic/* paths (handler panics)")
	portsPath := flag.String("ports", "", "write \"<grpc-port> <h2c-port> <tls-port>\" to this file before READY")
	flag.Parse()

	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())

	glis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go srv.Serve(glis)

	hlis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	mux := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			srv.ServeHTTP(w, r)
			return
		}
		switch r.URL.Path {
		case "/panic/before-header": // net/http resets the stream: the client sees no status
			panic("grpcservehttp: handler panic")
		case "/panic/abort": // the sentinel reverse proxies use: same reset, nothing logged
			panic(http.ErrAbortHandler)
		case "/panic/after-header": // 200 went out (flushed), then the reset
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			panic("grpcservehttp: handler panic after the header")
		}
		code := 200
		if v, ok := strings.CutPrefix(r.URL.Path, "/sleep/"); ok {
			ms, _ := strconv.Atoi(v)
			select {
			case <-time.After(time.Duration(ms) * time.Millisecond):
			case <-r.Context().Done():
			}
		}
		if v, ok := strings.CutPrefix(r.URL.Path, "/status/"); ok {
			if n, err := strconv.Atoi(v); err == nil && n >= 200 && n <= 599 {
				code = n
			}
		}
		w.WriteHeader(code)
		if code != http.StatusNoContent {
			w.Write([]byte("ok\n"))
		}
	})
	hs := &http.Server{Handler: mux}
	hs.Protocols = new(http.Protocols)
	hs.Protocols.SetUnencryptedHTTP2(true)
	go hs.Serve(hlis)
	hport := hlis.Addr().(*net.TCPAddr).Port

	tlis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	ts := &http.Server{Handler: mux, TLSConfig: &tls.Config{Certificates: []tls.Certificate{selfSigned()},
		NextProtos: []string{"h2", "http/1.1"}}}
	go ts.ServeTLS(tlis, "", "")
	tport := tlis.Addr().(*net.TCPAddr).Port

	if *portsPath != "" {
		ports := fmt.Sprintf("%d %d %d\n", glis.Addr().(*net.TCPAddr).Port, hport, tport)
		if err := os.WriteFile(*portsPath, []byte(ports), 0o644); err != nil {
			panic(err)
		}
	}
	in := bufio.NewReader(os.Stdin)
	if *waitStart {
		fmt.Printf("READY %d %d %d\n", os.Getpid(), glis.Addr().(*net.TCPAddr).Port, hport)
		in.ReadString('\n')
	}

	var mu sync.Mutex
	var lines []truth
	var wg sync.WaitGroup
	for c := 0; c < *conns; c++ {
		cc, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", hport),
			grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			panic(err)
		}
		defer cc.Close()
		client := healthpb.NewHealthClient(cc)
		for g := 0; g < *goroutines; g++ {
			wg.Add(1)
			go func(c, g int) {
				defer wg.Done()
				for i := 0; i < *rpcs; i++ {
					svc := ""
					if (g+i)%3 == 2 {
						svc = "missing"
					}
					_, err := client.Check(context.Background(), &healthpb.HealthCheckRequest{Service: svc})
					mu.Lock()
					lines = append(lines, truth{Method: "/grpc.health.v1.Health/Check",
						Code: int(status.Code(err)), Port: hport, Conn: c})
					mu.Unlock()
				}
			}(c, g)
		}
	}
	type h2truth struct {
		Method string `json:"method"`
		Path   string `json:"path"`
		Status int    `json:"status"`
		Error  bool   `json:"error"`
		Port   int    `json:"server_port"`
	}
	var h2lines []h2truth
	if *h2Goroutines > 0 {
		tr := &http.Transport{Protocols: new(http.Protocols)}
		tr.Protocols.SetUnencryptedHTTP2(true)
		hc := &http.Client{Transport: tr}
		for g := 0; g < *h2Goroutines; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				for i := 0; i < *h2Requests+*h2Panics; i++ {
					// every 5th request is abandoned by the client (timeout before headers)
					path, method, timeout := "/status/200", "GET", 10*time.Second
					switch (g + i) % 5 {
					case 1:
						path = "/status/404"
					case 2:
						path, method = "/status/503", "POST"
					case 3:
						path, timeout = "/sleep/200", 20*time.Millisecond
					}
					if i >= *h2Requests {
						path = []string{"/panic/before-header", "/panic/abort", "/panic/after-header"}[(g+i)%3]
					}
					ctx, cancel := context.WithTimeout(context.Background(), timeout)
					req, _ := http.NewRequestWithContext(ctx, method,
						fmt.Sprintf("http://127.0.0.1:%d%s", hport, path), strings.NewReader("x"))
					t := h2truth{Method: method, Path: path, Port: hport}
					resp, err := hc.Do(req)
					if err == nil {
						t.Status = resp.StatusCode
						_, err = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
					cancel()
					t.Error = err != nil
					mu.Lock()
					h2lines = append(h2lines, t)
					mu.Unlock()
				}
			}(g)
		}
	}
	wg.Wait()
	if *h2TruthPath != "" {
		f, err := os.Create(*h2TruthPath)
		if err != nil {
			panic(err)
		}
		enc := json.NewEncoder(f)
		for _, l := range h2lines {
			enc.Encode(l)
		}
		f.Close()
	}
	if *truthPath != "" {
		f, err := os.Create(*truthPath)
		if err != nil {
			panic(err)
		}
		enc := json.NewEncoder(f)
		for _, l := range lines {
			enc.Encode(l)
		}
		f.Close()
	}
	if *hold {
		fmt.Println("DONE")
		for {
			if _, err := in.ReadString('\n'); err != nil {
				break
			}
		}
	}
}

// selfSigned makes a throwaway certificate for 127.0.0.1 (h2load does not verify it).
func selfSigned() tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
