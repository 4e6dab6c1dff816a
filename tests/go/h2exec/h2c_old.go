//go:build !go1.24
// +build !go1.24

package main

// Before Go 1.24 net/http has no h2c: HTTP/1.1 only. Such builds (go1.16.15 in the fault
// tests) are refused by the agent for their Go version before any protocol matters.

import (
	"net"
	"net/http"
)

func serveH2C(lis net.Listener, h http.Handler) {
	go http.Serve(lis, h)
}

func h2cClient() (*http.Client, func()) {
	t := &http.Transport{}
	return &http.Client{Transport: t}, t.CloseIdleConnections
}
