package main

// Shared pieces of grpcshapes (same codec, clock, truth writer and stdin handshake as
// grpcwork, from packages grpcharness and harness; its own request header). Only grpc APIs
// present from v1.40.0 on are used here.

import (
	"encoding/binary"
)

// ---- request header ------------------------------------------------------------------

// reqHeader leads every first request message (fixed 32 bytes, little endian): the status
// the server returns, how many attempts of this call id it fails with UNAVAILABLE first
// (retry case), stream message count, per-message delay, the client id and reply size.
type reqHeader struct {
	Code      uint8
	FailFirst uint8
	NMsgs     uint16
	DelayNs   uint64
	ID        uint64
	RespLen   uint32
}

const hdrLen = 32

func (h reqHeader) encode(pad int) []byte {
	b := make([]byte, hdrLen+pad)
	b[0] = 1 // version
	b[1] = h.Code
	b[2] = h.FailFirst
	binary.LittleEndian.PutUint16(b[4:], h.NMsgs)
	binary.LittleEndian.PutUint64(b[8:], h.DelayNs)
	binary.LittleEndian.PutUint64(b[16:], h.ID)
	binary.LittleEndian.PutUint32(b[24:], h.RespLen)
	for i := hdrLen; i < len(b); i++ {
		b[i] = byte(i * 7)
	}
	return b
}

func decodeHeader(b []byte) (reqHeader, bool) {
	if len(b) < hdrLen || b[0] != 1 {
		return reqHeader{}, false
	}
	return reqHeader{
		Code:      b[1],
		FailFirst: b[2],
		NMsgs:     binary.LittleEndian.Uint16(b[4:]),
		DelayNs:   binary.LittleEndian.Uint64(b[8:]),
		ID:        binary.LittleEndian.Uint64(b[16:]),
		RespLen:   binary.LittleEndian.Uint32(b[24:]),
	}, true
}
