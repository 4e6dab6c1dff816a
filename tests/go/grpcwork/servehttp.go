//go:build go1.24

package main

// -serve-http: each grpc server is served through (*grpc.Server).ServeHTTP under net/http's
// HTTP/2 server (h2c, prior knowledge) on its usual port, so every RPC is one net/http
// request on net/http's transport, not grpc's. -middleware puts in front of it the chain
// real services have: a wrapped ResponseWriter, context values, a cancelCtx of its own and
// a copied request. Go 1.24 for http.Protocols (the build line lets vet accept it although
// the grpcmods pins say go 1.22).

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
)

func (s *workServer) serveHTTP() {
	if s.w.cfg.h2Server == "xnet-h2c" {
		// The common pattern of gRPC and HTTP on one port before Go 1.24: x/net's h2c
		// handler hands prior-knowledge connections to x/net's own http2.Server.
		s.hs = &http.Server{Handler: h2c.NewHandler(s.handler(s.w.cfg.middleware),
			&http2.Server{MaxConcurrentStreams: 100000})}
		go s.hs.Serve(s.lis)
		return
	}
	// h2c only: gRPC clients open with the HTTP/2 preface (prior knowledge), no Upgrade.
	s.hs = &http.Server{
		Handler: s.handler(s.w.cfg.middleware),
		HTTP2:   &http.HTTP2Config{MaxConcurrentStreams: 100000}, // as srv's own transport
	}
	s.hs.Protocols = new(http.Protocols)
	s.hs.Protocols.SetUnencryptedHTTP2(true)
	go s.hs.Serve(s.lis)
}

// stopHTTP is stop for -serve-http. Not srv.GracefulStop: grpc's ServeHTTP transport cannot
// drain (older versions panic in Drain); net/http's Shutdown sends GOAWAY and waits for
// the streams, and Close ends them after the bound.
func (s *workServer) stopHTTP(bound time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	if s.hs.Shutdown(ctx) != nil {
		s.hs.Close()
	}
	s.srv.Stop() // ends any handler transport still registered
}

// handler is what net/http calls for each request: grpc's ServeHTTP directly (none), through
// the middleware chain (wrap), or alternately one and the other on the same connection
// (mixed), so both shapes of the stream's writer and context are in flight together.
func (s *workServer) handler(middleware string) http.Handler {
	wrapped := withFlushWriter(withValue(withCancel(withRequestCopy(s.srv))))
	switch middleware {
	case "wrap":
		return wrapped
	case "mixed":
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if (s.reqs.Add(1)-1)%2 == 0 {
				s.srv.ServeHTTP(w, r)
			} else {
				wrapped.ServeHTTP(w, r)
			}
		})
	default:
		return s.srv
	}
}

// flushWriter replaces net/http's ResponseWriter as logging and metrics middleware do, so
// the writer grpc holds is not net/http's own. grpc requires http.Flusher: delegate it.
type flushWriter struct {
	http.ResponseWriter
}

func (f *flushWriter) Flush() { f.ResponseWriter.(http.Flusher).Flush() }

// Unwrap lets http.ResponseController reach the real writer, as well-behaved wrappers do.
func (f *flushWriter) Unwrap() http.ResponseWriter { return f.ResponseWriter }

func withFlushWriter(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(&flushWriter{ResponseWriter: w}, r)
	})
}

// mwKey is the request-scoped value the middleware attaches (a request id, say).
type mwKey struct{}

func withValue(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), mwKey{}, "grpcwork")))
	})
}

// withCancel puts a cancelCtx of the middleware's own between net/http's request context
// and the stream's: cancelled when the request ends, like timeout/cleanup middleware.
func withCancel(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// withRequestCopy hands on a shallow copy of the request (and its URL), the way
// http.StripPrefix does, so grpc's *http.Request is not the one net/http built.
func withRequestCopy(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r2 := new(http.Request)
		*r2 = *r
		r2.URL = new(url.URL)
		*r2.URL = *r.URL
		next.ServeHTTP(w, r2)
	})
}
