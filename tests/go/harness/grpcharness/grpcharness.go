// Package grpcharness is what the gRPC test workloads share on top of package harness: the
// raw-bytes codec (no protoc, no generated code) and OpStatus. Only grpc APIs present from
// v1.40.0 to the newest pin are used, so one source builds against every grpcmods pin.
package grpcharness
