//go:build go1.24
// +build go1.24

package main

import (
	"net"
	"net/http"
)

// serveH2C serves lis with net/http's own HTTP/2 over cleartext (Go 1.24+).
func serveH2C(lis net.Listener, h http.Handler) {
	s := &http.Server{Handler: h, Protocols: new(http.Protocols)}
	s.Protocols.SetHTTP1(true)
	s.Protocols.SetUnencryptedHTTP2(true)
	go s.Serve(lis)
}

// h2cClient is net/http's client speaking h2c with prior knowledge.
func h2cClient() (*http.Client, func()) {
	t := &http.Transport{Protocols: new(http.Protocols)}
	t.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: t}, t.CloseIdleConnections
}
