//go:build go1.24

package main

// net/http's own h2c (bundled HTTP/2 over cleartext), Go 1.24+: http.Protocols. Before
// Go 1.24 net/http has no h2c at all; h2c_old.go reaches the same bundled code there.

import "net/http"

// serveNetHTTPH2C serves s.lis with net/http: HTTP/1.1 and h2c with prior knowledge.
func (s *server) serveNetHTTPH2C(h http.Handler) {
	s.hs = &http.Server{Handler: h, Protocols: new(http.Protocols)}
	s.hs.Protocols.SetHTTP1(true)
	s.hs.Protocols.SetUnencryptedHTTP2(true)
	go s.hs.Serve(s.lis)
}

// netHTTPH2CTransport is net/http's client speaking h2c with prior knowledge.
func netHTTPH2CTransport() (http.RoundTripper, func()) {
	t := &http.Transport{Protocols: new(http.Protocols), MaxIdleConnsPerHost: 64}
	t.Protocols.SetUnencryptedHTTP2(true)
	return t, t.CloseIdleConnections
}
