package main

// The raw-bytes gRPC codec of the gRPC test workloads: messages are *rawMsg carrying bytes
// verbatim, so no protoc or generated code is needed and one source builds against every
// grpc-go version from v1.40.0 on. Linked into each gRPC workload as rawcodec.go.

import (
	"fmt"

	"google.golang.org/grpc/encoding"
)

const codecName = "pyh2raw"

type rawMsg struct{ b []byte }

type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) {
	m, ok := v.(*rawMsg)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
	}
	return m.b, nil
}

func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	m, ok := v.(*rawMsg)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	m.b = append(m.b[:0], data...)
	return nil
}

func (rawCodec) Name() string { return codecName }

func init() { encoding.RegisterCodec(rawCodec{}) }
