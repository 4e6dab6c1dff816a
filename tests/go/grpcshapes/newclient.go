//go:build newclient

package main

// grpc.NewClient exists from grpc-go v1.63; build with -tags newclient on those pins.

import (
	"fmt"
	"time"

	"google.golang.org/grpc"

	"pyhttp2probe/harness/grpcharness"
)

// newClientCase: a dns:/// target through grpc.NewClient, which starts idle and connects on
// the first call; a short idle timeout sends the channel idle between the two bursts, so
// the second burst runs on a new transport made while leaving idle mode.
var newClientCase = func(a *app) {
	s := a.server("newclient", "tcp", "127.0.0.1:0")
	cc, err := grpc.NewClient(fmt.Sprintf("dns:///localhost:%d", s.port), insecureOpt(),
		grpc.WithDefaultCallOptions(grpc.CallContentSubtype(grpcharness.CodecName)),
		grpc.WithIdleTimeout(300*time.Millisecond))
	if err != nil {
		a.fail("newclient: %v", err)
	}
	c := &conn{cc: cc, cas: s.name, address: s.address, port: s.port}
	defer cc.Close()
	a.mix(c, 3)
	time.Sleep(900 * time.Millisecond)
	a.mix(c, 3)
}
