package main

// The status grpc-go writes when a server stream's RecvMsg/SendMsg fails: its deferred
// WriteStatus sends it from inside that call, before the handler returns, so it is the
// status on the wire (the handler's own return repeats it). Shared by the gRPC workloads'
// server truth, which records it and marks the call op_failed. Linked as opstatus.go.

import (
	"context"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// opStatus is err as grpc's toRPCErr converts it into the status it writes.
func opStatus(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch err {
	case context.Canceled, context.DeadlineExceeded:
		return status.FromContextError(err).Err()
	case io.ErrUnexpectedEOF:
		return status.Error(codes.Internal, err.Error())
	default:
		return status.Error(codes.Unknown, err.Error())
	}
}
