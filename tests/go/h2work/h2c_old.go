//go:build !go1.24

package main

// net/http's bundled HTTP/2 over cleartext before Go 1.24, which has no http.Protocols.
//
// The bundled server and transport (net/http.http2Server, net/http.http2Transport) are
// unexported but complete: their ServeConn/RoundTrip are the very code that serves TLS
// connections (and that Go 1.24's h2c reaches), so the probed functions are the same.
// Their types are found by reflection and fresh zero values made (zero is their default
// configuration, like x/net's &http2.Server{} and &http2.Transport{}):
//
//   - the transport's type from http.Transport's h2transport field;
//   - the server's type from one request served by net/http over TLS at startup
//     (ResponseWriter *http2responseWriter -> rws -> conn -> srv *http2Server), before
//     the workload prints READY, so before any tracer attaches.
//
// The server sniffs each accepted connection: the HTTP/2 client preface goes to the
// bundled server's ServeConn, anything else to an http.Server (HTTP/1.1), as Go 1.24's
// Protocols{HTTP1, UnencryptedHTTP2} does.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"reflect"
	"sync"
	"time"
)

const h2ClientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

var (
	bundledServerOnce sync.Once
	bundledServerType reflect.Type // *net/http.http2Server
)

func bundledH2ServerType() reflect.Type {
	bundledServerOnce.Do(func() {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fatal("h2c bootstrap: %v", err)
		}
		found := make(chan reflect.Type, 1)
		hs := &http.Server{
			Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
				v := reflect.ValueOf(rw)
				for _, f := range []string{"rws", "conn", "srv"} {
					if v.Kind() != reflect.Ptr || v.Elem().Kind() != reflect.Struct {
						break
					}
					v = v.Elem().FieldByName(f)
				}
				if v.IsValid() && v.Type().String() == "*http.http2Server" {
					found <- v.Type()
				}
			}),
			TLSConfig: &tls.Config{Certificates: []tls.Certificate{selfSigned()},
				NextProtos: []string{"h2"}},
		}
		go hs.ServeTLS(lis, "", "")
		tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
			ForceAttemptHTTP2: true}
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(
			"https://" + lis.Addr().String() + "/")
		if err != nil {
			fatal("h2c bootstrap request: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		tr.CloseIdleConnections()
		hs.Close()
		select {
		case bundledServerType = <-found:
		default:
			fatal("h2c bootstrap: no *http.http2Server behind %s's ResponseWriter", resp.Proto)
		}
	})
	return bundledServerType
}

// bundledH2Server returns ServeConn of a fresh, zero net/http.http2Server, with opts
// {Handler: h, BaseConfig: base} (what net/http passes for a TLS connection).
func bundledH2Server(h http.Handler, base *http.Server) func(net.Conn) {
	serveConn := reflect.New(bundledH2ServerType().Elem()).MethodByName("ServeConn")
	optsType := serveConn.Type().In(1) // *http2ServeConnOpts
	return func(c net.Conn) {
		opts := reflect.New(optsType.Elem())
		opts.Elem().FieldByName("Handler").Set(reflect.ValueOf(&h).Elem())
		opts.Elem().FieldByName("BaseConfig").Set(reflect.ValueOf(base))
		serveConn.Call([]reflect.Value{reflect.ValueOf(&c).Elem(), opts})
	}
}

// peekedConn reads through the bufio.Reader that sniffed the connection's first bytes.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// connListener hands the HTTP/1.1 connections to an http.Server; Close closes the real
// listener too.
type connListener struct {
	real      net.Listener
	conns     chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.closeOnce.Do(func() { close(l.done); l.real.Close() })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.real.Addr() }

// serveNetHTTPH2C serves s.lis: h2c with prior knowledge by the bundled HTTP/2 server,
// HTTP/1.1 by net/http. Shutting s.hs down closes the listener and the h2c connections.
func (s *server) serveNetHTTPH2C(h http.Handler) {
	s.hs = &http.Server{Handler: h}
	serveH2 := bundledH2Server(h, s.hs)
	h1 := &connListener{real: s.lis, conns: make(chan net.Conn), done: make(chan struct{})}
	s.hs.RegisterOnShutdown(func() {
		h1.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	})
	go s.hs.Serve(h1)
	go func() {
		for {
			c, err := s.lis.Accept()
			if err != nil {
				h1.Close()
				return
			}
			go func() {
				br := bufio.NewReader(c)
				pc := &peekedConn{Conn: c, r: br}
				for n := 1; n <= len(h2ClientPreface); n++ {
					b, err := br.Peek(n)
					if err != nil {
						c.Close()
						return
					}
					if !bytes.HasPrefix([]byte(h2ClientPreface), b) {
						select { // HTTP/1.x
						case h1.conns <- pc:
						case <-h1.done:
							c.Close()
						}
						return
					}
				}
				s.mu.Lock()
				s.conns[c] = struct{}{}
				s.mu.Unlock()
				defer func() {
					c.Close()
					s.mu.Lock()
					delete(s.conns, c)
					s.mu.Unlock()
				}()
				serveH2(pc)
			}()
		}
	}()
}

var (
	bundledTransportOnce sync.Once
	bundledTransportType reflect.Type // *net/http.http2Transport
)

// netHTTPH2CTransport is a fresh net/http.http2Transport with AllowHTTP and a cleartext
// dial: net/http's own HTTP/2 client speaking h2c with prior knowledge.
func netHTTPH2CTransport() (http.RoundTripper, func()) {
	bundledTransportOnce.Do(func() {
		t := &http.Transport{}
		t.CloseIdleConnections() // sets up t.h2transport, a *http2Transport
		f := reflect.ValueOf(t).Elem().FieldByName("h2transport")
		if !f.IsValid() || f.IsNil() || f.Elem().Type().String() != "*http.http2Transport" {
			fatal("h2c: http.Transport has no bundled *http.http2Transport (%v)", f)
		}
		bundledTransportType = f.Elem().Type()
	})
	v := reflect.New(bundledTransportType.Elem())
	v.Elem().FieldByName("AllowHTTP").SetBool(true)
	v.Elem().FieldByName("DialTLSContext").Set(reflect.ValueOf(
		func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}))
	t, ok := v.Interface().(interface {
		http.RoundTripper
		CloseIdleConnections()
	})
	if !ok {
		fatal("h2c: *http.http2Transport is not a RoundTripper")
	}
	return t, t.CloseIdleConnections
}
