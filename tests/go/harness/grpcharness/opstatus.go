package grpcharness

import (
	"context"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// OpStatus is the status grpc-go writes when a server stream's RecvMsg/SendMsg fails with
// err: its deferred WriteStatus sends it from inside that call, before the handler returns,
// so it is the status on the wire (the handler's own return repeats it). The workloads'
// server truth records it and marks the call op_failed. It converts err as grpc's toRPCErr
// does.
func OpStatus(err error) error {
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
