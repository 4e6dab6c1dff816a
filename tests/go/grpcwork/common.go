package main

// Shared pieces of the gRPC accuracy workload: the request header (codec: package
// grpcharness; clock, truth writer and handshake: package harness). Only grpc APIs present
// from v1.40.0 to the newest release are used (no protoc, no generated code).

import (
	"encoding/binary"
)

// ---- request header ------------------------------------------------------------------

// reqHeader is what every first request message carries (fixed 32-byte little endian):
// the status code the server must return, its delay, the number of stream messages, the
// client-side id (so server truth links to client truth) and a nested-call request.
type reqHeader struct {
	Code    uint8
	Nested  uint8 // 1: the server handler makes a nested client call
	NMsgs   uint16
	DelayNs uint64
	ID      uint64
	Target  uint32 // server index for the nested call
}

const hdrLen = 32

func (h reqHeader) encode() []byte {
	b := make([]byte, hdrLen)
	b[0] = 1 // version
	b[1] = h.Code
	b[2] = h.Nested
	binary.LittleEndian.PutUint16(b[4:], h.NMsgs)
	binary.LittleEndian.PutUint64(b[8:], h.DelayNs)
	binary.LittleEndian.PutUint64(b[16:], h.ID)
	binary.LittleEndian.PutUint32(b[24:], h.Target)
	return b
}

func decodeHeader(b []byte) (reqHeader, bool) {
	if len(b) < hdrLen || b[0] != 1 {
		return reqHeader{}, false
	}
	return reqHeader{
		Code:    b[1],
		Nested:  b[2],
		NMsgs:   binary.LittleEndian.Uint16(b[4:]),
		DelayNs: binary.LittleEndian.Uint64(b[8:]),
		ID:      binary.LittleEndian.Uint64(b[16:]),
		Target:  binary.LittleEndian.Uint32(b[24:]),
	}, true
}
