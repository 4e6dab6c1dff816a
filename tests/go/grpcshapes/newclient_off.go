//go:build !newclient

package main

// Without -tags newclient (grpc-go < 1.63 has no grpc.NewClient) the case is absent.
var newClientCase func(*app)
