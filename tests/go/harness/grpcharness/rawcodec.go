package grpcharness

import (
	"fmt"

	"google.golang.org/grpc/encoding"
)

// CodecName is the content subtype of the raw codec: clients select it with
// grpc.CallContentSubtype(CodecName); servers pick it from the request.
const CodecName = "pyh2raw"

// RawMsg is every request and reply message: Data travels verbatim.
type RawMsg struct{ Data []byte }

type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) {
	m, ok := v.(*RawMsg)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
	}
	return m.Data, nil
}

func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	m, ok := v.(*RawMsg)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	m.Data = append(m.Data[:0], data...)
	return nil
}

func (rawCodec) Name() string { return CodecName }

// Registered on import: a workload that uses RawMsg has the codec, as with the linked
// source it replaces.
func init() { encoding.RegisterCodec(rawCodec{}) }
