// h2work: the HTTP/2 accuracy workload of pyhttp2probe (issue 5). One process runs K HTTP
// servers of four stacks and loads them with three client stacks, writing ground truth: one
// JSON line per client request (-truth) and per server request (-server-truth), with
// CLOCK_MONOTONIC timestamps comparable with bpf_ktime_get_ns.
//
// Server stacks (server i gets stack i mod 4):
//
//	nethttp-tls  net/http.Server over TLS (bundled HTTP/2, and HTTP/1.1 for h1 clients)
//	nethttp-h2c  net/http.Server with Protocols{HTTP1, UnencryptedHTTP2} (bundled h2c;
//	             before Go 1.24, which has no Protocols, see h2c_old.go)
//	xnet-tls     golang.org/x/net/http2.Server.ServeConn on TLS connections (h2 only)
//	xnet-h2c     net/http.Server with golang.org/x/net/http2/h2c.NewHandler (x/net h2c)
//
// Client stacks: nethttp (http.Transport, ForceAttemptHTTP2 over TLS; Protocols
// UnencryptedHTTP2 for h2c, or before Go 1.24 the bundled http2Transport), xnet
// (x/net/http2.Transport over TLS; AllowHTTP for h2c) and http1 (http.Transport with
// HTTP/2 disabled: HTTP/1.1 traffic that must yield no h2 span).
package main

import (
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
	mrand "math/rand"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"

	"pyhttp2probe/harness"
)

var serverStacks = []string{"nethttp-tls", "nethttp-h2c", "xnet-tls", "xnet-h2c"}

type clientTruth struct {
	ID            int64  `json:"id"`
	Method        string `json:"method"`
	Path          string `json:"path"`
	Status        int    `json:"status"` // observed; 0 when the request failed
	ExpectedCode  int    `json:"expected_status"`
	Error         string `json:"error"`
	ServerPort    int    `json:"server_port"`
	Side          string `json:"side"`
	Proto         string `json:"proto"` // "HTTP/2.0" | "HTTP/1.1" (from the response)
	TLS           bool   `json:"tls"`
	ClientStack   string `json:"client_stack"`
	ServerStack   string `json:"server_stack"`
	ServerDelayNs int64  `json:"server_delay_ns"`
	StartNs       int64  `json:"client_start_ns"`
	EndNs         int64  `json:"client_end_ns"`
	ConnID        int    `json:"conn_id"` // client transport instance
	Churn         bool   `json:"churn"`
	ReqBytes      int    `json:"req_bytes"`
	RespBytes     int    `json:"resp_bytes"`
}

type serverTruth struct {
	Method      string `json:"method"`
	Path        string `json:"path"`
	Status      int    `json:"status"`
	ServerPort  int    `json:"server_port"`
	Side        string `json:"side"`
	Proto       string `json:"proto"`
	TLS         bool   `json:"tls"`
	ServerStack string `json:"server_stack"`
	StartNs     int64  `json:"server_start_ns"`
	EndNs       int64  `json:"server_end_ns"`
	ClientID    int64  `json:"client_id"`
	DelayNs     int64  `json:"server_delay_ns"`
	Writer      string `json:"writer"` // ResponseWriter type: proves which HTTP/2 stack served
}

type server struct {
	idx   int
	stack string
	tls   bool
	port  int
	lis   net.Listener
	hs    *http.Server // nil for xnet-tls
	mu    sync.Mutex
	conns map[net.Conn]struct{} // xnet-tls only
}

type workload struct {
	servers     []*server
	truth       *harness.TruthWriter
	serverTruth *harness.TruthWriter
	nextID      int64
	nextConn    int64
	errCounter  uint64
	errors      float64
	delayMax    time.Duration
	byStatus    sync.Map // int -> *int64
	failed      int64
	mismatch    int64
}

// ---- server side -------------------------------------------------------------------------

func (w *workload) handler(s *server) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		t := serverTruth{Method: r.Method, Path: r.URL.Path, ServerPort: s.port, Side: "server",
			Proto: r.Proto, TLS: r.TLS != nil, ServerStack: s.stack, StartNs: harness.MonoNow(), ClientID: -1,
			Writer: fmt.Sprintf("%T", rw)}
		if v, err := strconv.ParseInt(r.Header.Get("X-Req-Id"), 10, 64); err == nil {
			t.ClientID = v
		}
		status := 200
		if v, err := strconv.Atoi(r.Header.Get("X-Status")); err == nil && v >= 200 && v <= 599 {
			status = v
		}
		delay, _ := strconv.ParseInt(r.Header.Get("X-Delay-Ns"), 10, 64)
		respBytes, _ := strconv.Atoi(r.Header.Get("X-Resp-Bytes"))
		t.DelayNs = delay
		io.Copy(io.Discard, r.Body)
		if delay > 0 {
			tm := time.NewTimer(time.Duration(delay))
			select {
			case <-tm.C:
			case <-r.Context().Done():
			}
			tm.Stop()
		}
		if status == http.StatusNoContent || r.Method == http.MethodHead {
			respBytes = 0
		}
		rw.Header().Set("Content-Type", "application/octet-stream")
		rw.Header().Set("Content-Length", strconv.Itoa(respBytes))
		rw.WriteHeader(status)
		if respBytes > 0 {
			rw.Write(make([]byte, respBytes))
		}
		t.Status = status
		t.EndNs = harness.MonoNow()
		w.serverTruth.Write(&t)
	})
}

func selfSigned() tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "pyhttp2probe-h2work"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func (w *workload) startServer(idx int, cert tls.Certificate) (*server, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &server{idx: idx, stack: serverStacks[idx%len(serverStacks)], lis: lis,
		port: lis.Addr().(*net.TCPAddr).Port, conns: map[net.Conn]struct{}{}}
	h := w.handler(s)
	switch s.stack {
	case "nethttp-tls":
		s.tls = true
		s.hs = &http.Server{Handler: h, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert},
			NextProtos: []string{"h2", "http/1.1"}}}
		go s.hs.ServeTLS(lis, "", "")
	case "nethttp-h2c":
		s.serveNetHTTPH2C(h) // h2c_go124.go; h2c_old.go before Go 1.24
	case "xnet-tls":
		s.tls = true
		h2s := &http2.Server{MaxConcurrentStreams: 1000}
		tl := tls.NewListener(lis, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}})
		go func() {
			for {
				c, err := tl.Accept()
				if err != nil {
					return
				}
				s.mu.Lock()
				s.conns[c] = struct{}{}
				s.mu.Unlock()
				go func() {
					defer func() {
						c.Close()
						s.mu.Lock()
						delete(s.conns, c)
						s.mu.Unlock()
					}()
					tc := c.(*tls.Conn)
					if err := tc.Handshake(); err != nil {
						return
					}
					h2s.ServeConn(tc, &http2.ServeConnOpts{Handler: h, BaseConfig: &http.Server{}})
				}()
			}
		}()
	case "xnet-h2c":
		s.hs = &http.Server{Handler: h2c.NewHandler(h, &http2.Server{MaxConcurrentStreams: 1000})}
		go s.hs.Serve(lis)
	}
	return s, nil
}

func (s *server) stop() {
	if s.hs != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if s.hs.Shutdown(ctx) != nil {
			s.hs.Close()
		}
		return
	}
	s.lis.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
}

// ---- client side -------------------------------------------------------------------------

type client struct {
	id     int
	stack  string // nethttp | xnet | http1
	srv    *server
	hc     *http.Client
	closer func()
	churn  bool
}

// stacksFor lists the client stacks that can talk to a server.
func stacksFor(s *server, wanted []string) []string {
	var out []string
	for _, c := range wanted {
		if c == "http1" && s.stack == "xnet-tls" {
			continue // ServeConn speaks h2 only
		}
		out = append(out, c)
	}
	return out
}

func (w *workload) newClient(stack string, s *server, churn bool) *client {
	insecureTLS := &tls.Config{InsecureSkipVerify: true}
	c := &client{id: int(atomic.AddInt64(&w.nextConn, 1) - 1), stack: stack, srv: s, churn: churn}
	var rt http.RoundTripper
	switch {
	case stack == "nethttp" && s.tls:
		t := &http.Transport{TLSClientConfig: insecureTLS, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64}
		rt, c.closer = t, t.CloseIdleConnections
	case stack == "nethttp":
		rt, c.closer = netHTTPH2CTransport() // h2c_go124.go; h2c_old.go before Go 1.24
	case stack == "xnet" && s.tls:
		t := &http2.Transport{TLSClientConfig: insecureTLS}
		rt, c.closer = t, t.CloseIdleConnections
	case stack == "xnet":
		t := &http2.Transport{AllowHTTP: true,
			DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			}}
		rt, c.closer = t, t.CloseIdleConnections
	default: // http1: HTTP/2 disabled by a non-nil, empty TLSNextProto
		t := &http.Transport{TLSClientConfig: insecureTLS, MaxIdleConnsPerHost: 64,
			TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
		rt, c.closer = t, t.CloseIdleConnections
	}
	c.hc = &http.Client{Transport: rt, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return c
}

var (
	methods   = []string{"GET", "GET", "GET", "POST", "POST", "PUT", "DELETE"}
	paths     = []string{"/", "/health", "/api/items", "/api/items/42", "/v1/users/7/orders", "/static/app.js"}
	okCodes   = []int{200, 200, 200, 200, 201, 202, 204}
	errCodes  = []int{400, 401, 403, 404, 409, 429, 500, 502, 503, 504}
	bodyBytes = make([]byte, 4096)
)

func (w *workload) request(c *client, rng *mrand.Rand) {
	id := atomic.AddInt64(&w.nextID, 1) - 1
	method := methods[rng.Intn(len(methods))]
	path := paths[rng.Intn(len(paths))]
	status := okCodes[rng.Intn(len(okCodes))]
	if rng.Float64() < w.errors {
		status = errCodes[atomic.AddUint64(&w.errCounter, 1)%uint64(len(errCodes))]
	}
	var delay time.Duration
	if w.delayMax > 0 {
		delay = time.Duration(rng.Int63n(int64(w.delayMax) + 1))
	}
	reqBytes := 0
	if method == "POST" || method == "PUT" {
		reqBytes = rng.Intn(len(bodyBytes))
	}
	respBytes := rng.Intn(2048)
	scheme := "http"
	if c.srv.tls {
		scheme = "https"
	}
	url := fmt.Sprintf("%s://127.0.0.1:%d%s?id=%d", scheme, c.srv.port, path, id)
	var body io.Reader
	if reqBytes > 0 {
		body = strings.NewReader(string(bodyBytes[:reqBytes]))
	}
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		panic(err)
	}
	req.Header.Set("X-Req-Id", strconv.FormatInt(id, 10))
	req.Header.Set("X-Status", strconv.Itoa(status))
	req.Header.Set("X-Delay-Ns", strconv.FormatInt(int64(delay), 10))
	req.Header.Set("X-Resp-Bytes", strconv.Itoa(respBytes))
	t := clientTruth{ID: id, Method: method, Path: path, ExpectedCode: status, ServerPort: c.srv.port,
		Side: "client", TLS: c.srv.tls, ClientStack: c.stack, ServerStack: c.srv.stack,
		ServerDelayNs: int64(delay), ConnID: c.id, Churn: c.churn, ReqBytes: reqBytes}
	t.StartNs = harness.MonoNow()
	resp, err := c.hc.Do(req)
	if err == nil {
		n, rerr := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		t.Status, t.Proto, t.RespBytes = resp.StatusCode, resp.Proto, int(n)
		if rerr != nil {
			err = rerr
		}
	}
	t.EndNs = harness.MonoNow()
	if err != nil {
		t.Error = err.Error()
		atomic.AddInt64(&w.failed, 1)
	}
	if t.Status != status {
		if atomic.AddInt64(&w.mismatch, 1) <= 5 {
			fmt.Fprintf(os.Stderr, "h2work: request %d %s %s via %s->%s: status %d, expected %d: %v\n",
				id, method, url, c.stack, c.srv.stack, t.Status, status, err)
		}
	}
	v, _ := w.byStatus.LoadOrStore(t.Status, new(int64))
	atomic.AddInt64(v.(*int64), 1)
	w.truth.Write(&t)
}

func fatal(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "h2work: "+format+"\n", a...)
	os.Exit(1)
}

func main() {
	nServers := flag.Int("servers", 4, "number of HTTP servers; server i uses stack i mod 4 (nethttp-tls, nethttp-h2c, xnet-tls, xnet-h2c)")
	connsPer := flag.Int("conns-per-server", 1, "client transports per (server, client stack)")
	goroutines := flag.Int("goroutines", 4, "concurrent goroutines per client transport")
	rpcs := flag.Int("rpcs", 20, "requests per goroutine")
	churn := flag.Int("churn", 0, "goroutines that repeatedly create a transport, make 3-10 requests, close it")
	churnConns := flag.Int("churn-conns", 0, "transports per churn goroutine (0: until the main goroutines finish)")
	clientsFlag := flag.String("clients", "nethttp,xnet,http1", "client stacks: nethttp, xnet, http1")
	errs := flag.Float64("errors", 0.1, "fraction of requests answered with a 4xx/5xx status (in turn)")
	delayMax := flag.Duration("delay-max", 2*time.Millisecond, "max server delay per request (uniform 0..max)")
	seed := flag.Int64("seed", 1, "random seed")
	truthPath := flag.String("truth", "", "client ground truth JSON lines file")
	serverTruthPath := flag.String("server-truth", "", "server ground truth JSON lines file")
	waitStart := flag.Bool("wait-start", false, "print READY <pid>, wait for a stdin line before starting")
	hold := flag.Bool("hold", false, "after finishing print DONE and wait for a stdin line or EOF before exiting")
	flag.Parse()
	var wanted []string
	for _, c := range strings.Split(*clientsFlag, ",") {
		switch c = strings.TrimSpace(c); c {
		case "nethttp", "xnet", "http1":
			wanted = append(wanted, c)
		case "":
		default:
			fatal("unknown client stack %q", c)
		}
	}
	if *nServers < 1 || *connsPer < 1 || len(wanted) == 0 {
		fatal("bad sizes")
	}
	harness.InitMonotonic()
	w := &workload{errors: *errs, delayMax: *delayMax}
	var err error
	if w.truth, err = harness.OpenTruth(*truthPath); err != nil {
		fatal("%v", err)
	}
	if w.serverTruth, err = harness.OpenTruth(*serverTruthPath); err != nil {
		fatal("%v", err)
	}
	cert := selfSigned()
	for i := 0; i < *nServers; i++ {
		s, err := w.startServer(i, cert)
		if err != nil {
			fatal("listen: %v", err)
		}
		w.servers = append(w.servers, s)
	}
	if *waitStart {
		harness.Announce(fmt.Sprintf("READY %d", os.Getpid()))
		harness.WaitLine()
	}

	t0 := time.Now()
	var mainWG, churnWG sync.WaitGroup
	var clients []*client
	gi := int64(0)
	for _, s := range w.servers {
		for _, stack := range stacksFor(s, wanted) {
			for k := 0; k < *connsPer; k++ {
				c := w.newClient(stack, s, false)
				clients = append(clients, c)
				for g := 0; g < *goroutines; g++ {
					gi++
					mainWG.Add(1)
					go func(seed int64) {
						defer mainWG.Done()
						rng := mrand.New(mrand.NewSource(seed))
						for r := 0; r < *rpcs; r++ {
							w.request(c, rng)
						}
					}(*seed*1000003 + gi)
				}
			}
		}
	}
	stop := make(chan struct{})
	for g := 0; g < *churn; g++ {
		churnWG.Add(1)
		go func(seed int64) {
			defer churnWG.Done()
			rng := mrand.New(mrand.NewSource(seed))
			for it := 0; (*churnConns == 0 && it < 100000) || it < *churnConns; it++ {
				if *churnConns == 0 {
					select {
					case <-stop:
						return
					default:
					}
				}
				s := w.servers[rng.Intn(len(w.servers))]
				stacks := stacksFor(s, wanted)
				if len(stacks) == 0 {
					continue
				}
				c := w.newClient(stacks[rng.Intn(len(stacks))], s, true)
				n := 3 + rng.Intn(8)
				for k := 0; k < n; k++ {
					w.request(c, rng)
				}
				c.closer()
			}
		}(*seed*7000003 + int64(g))
	}
	mainWG.Wait()
	close(stop)
	churnWG.Wait()
	elapsed := time.Since(t0)
	for _, c := range clients {
		c.closer()
	}
	for _, s := range w.servers {
		s.stop()
	}
	if err := w.truth.Close(); err != nil {
		fatal("truth: %v", err)
	}
	if err := w.serverTruth.Close(); err != nil {
		fatal("server truth: %v", err)
	}
	byStatus := map[string]int64{}
	w.byStatus.Range(func(k, v interface{}) bool {
		byStatus[strconv.Itoa(k.(int))] = atomic.LoadInt64(v.(*int64))
		return true
	})
	total := w.truth.Count()
	summary, _ := json.Marshal(map[string]interface{}{
		"total": total, "server_handled": w.serverTruth.Count(), "by_status": byStatus,
		"failed": atomic.LoadInt64(&w.failed), "status_mismatch": atomic.LoadInt64(&w.mismatch),
		"elapsed_s": elapsed.Seconds(), "rps": float64(total) / elapsed.Seconds(),
		"transports": atomic.LoadInt64(&w.nextConn),
	})
	fmt.Fprintf(os.Stderr, "SUMMARY %s\n", summary)
	if *hold {
		harness.Announce("DONE")
		harness.WaitLine()
	}
}
