// Package wsframe is RFC 6455 framing for a WebSocket server: it parses
// the frames a client sends (masked, with the checks of sections 5.1–5.5),
// unmasks payloads and close frames, and appends the headers of the frames
// a server sends. It holds no state and does no I/O: the gateway's reader
// feeds it bytes from a non-blocking socket, so that a connection can hand
// its socket back to the poller after every frame. No extension is
// negotiated, so every reserved bit must be zero.
package wsframe

import (
	"encoding/binary"
	"unicode/utf8"
)

// Opcodes (RFC 6455 section 5.2).
const (
	OpContinuation byte = 0x0
	OpText         byte = 0x1
	OpBinary       byte = 0x2
	OpClose        byte = 0x8
	OpPing         byte = 0x9
	OpPong         byte = 0xA
)

// Close codes the server sends or checks (RFC 6455 section 7.4.1).
const (
	CloseNormal        = 1000
	CloseProtocol      = 1002
	CloseNoStatus      = 1005 // never sent: a close frame without a payload
	CloseInvalidData   = 1007
	CloseMessageTooBig = 1009
)

// MaxControlPayload is the longest payload of a control frame.
const MaxControlPayload = 125

// MaxServerHeader is the longest header AppendHeader writes.
const MaxServerHeader = 10

// MaxClientHeader is the longest header of a client frame: 2 bytes, an
// 8-byte length and the 4-byte mask key.
const MaxClientHeader = 14

// Header is a client frame's header.
type Header struct {
	Fin    bool
	Op     byte
	Mask   [4]byte
	Length int64 // the payload's length
}

// IsControl reports whether the frame is a control frame (close, ping, pong).
func (h Header) IsControl() bool { return h.Op&0x8 != 0 }

// Error is a violation of the protocol by the client: Code is the close
// code to fail the connection with (1002, 1007 or 1009), Reason says why.
type Error struct {
	Code   int
	Reason string
}

func (e *Error) Error() string { return "wsframe: " + e.Reason }

// The violations ParseHeader and ParseClose report.
var (
	ErrReservedBits      = &Error{CloseProtocol, "reserved bits set"}
	ErrOpcode            = &Error{CloseProtocol, "unknown opcode"}
	ErrFragmentedControl = &Error{CloseProtocol, "fragmented control frame"}
	ErrControlTooLong    = &Error{CloseProtocol, "control frame payload over 125 bytes"}
	ErrNotMasked         = &Error{CloseProtocol, "client frame not masked"}
	ErrLength            = &Error{CloseProtocol, "payload length has its most significant bit set"}
	ErrCloseLength       = &Error{CloseProtocol, "close frame payload of 1 byte"}
	ErrCloseCode         = &Error{CloseProtocol, "invalid close code"}
	ErrCloseReason       = &Error{CloseInvalidData, "close reason is not valid UTF-8"}
)

// ParseHeader parses the header of the client frame at the start of b and
// returns it with its length in bytes; n is 0 (with a nil error) while b
// holds only part of it. It fails on anything RFC 6455 forbids in a
// header: reserved bits, unknown opcodes, a control frame that is
// fragmented or longer than 125 bytes, an unmasked frame, a 64-bit length
// with its top bit set. The payload's size limit is the caller's.
func ParseHeader(b []byte) (h Header, n int, err error) {
	if len(b) < 2 {
		return Header{}, 0, nil
	}
	b0, b1 := b[0], b[1]
	if b0&0x70 != 0 {
		return Header{}, 0, ErrReservedBits
	}
	h.Fin = b0&0x80 != 0
	h.Op = b0 & 0x0f
	switch h.Op {
	case OpContinuation, OpText, OpBinary:
	case OpClose, OpPing, OpPong:
		if !h.Fin {
			return Header{}, 0, ErrFragmentedControl
		}
	default:
		return Header{}, 0, ErrOpcode
	}
	if b1&0x80 == 0 {
		return Header{}, 0, ErrNotMasked
	}
	n = 2
	switch l := b1 & 0x7f; l {
	case 126:
		if len(b) < 4 {
			return Header{}, 0, nil
		}
		h.Length = int64(binary.BigEndian.Uint16(b[2:]))
		n = 4
	case 127:
		if len(b) < 10 {
			return Header{}, 0, nil
		}
		u := binary.BigEndian.Uint64(b[2:])
		if u>>63 != 0 {
			return Header{}, 0, ErrLength
		}
		h.Length = int64(u)
		n = 10
	default:
		h.Length = int64(l)
	}
	if h.IsControl() && h.Length > MaxControlPayload {
		return Header{}, 0, ErrControlTooLong
	}
	if len(b) < n+4 {
		return Header{}, 0, nil
	}
	copy(h.Mask[:], b[n:n+4])
	return h, n + 4, nil
}

// Unmask XORs p with the mask key, p being the payload's bytes from offset
// pos on (pos is 0 for a whole payload).
func Unmask(p []byte, key [4]byte, pos int) {
	// Rotate the key so that it starts at pos.
	var k [8]byte
	for i := range k {
		k[i] = key[(pos+i)&3]
	}
	k64 := binary.LittleEndian.Uint64(k[:])
	for len(p) >= 32 {
		_ = p[31] // one bounds check for the four words
		binary.LittleEndian.PutUint64(p[0:], binary.LittleEndian.Uint64(p[0:])^k64)
		binary.LittleEndian.PutUint64(p[8:], binary.LittleEndian.Uint64(p[8:])^k64)
		binary.LittleEndian.PutUint64(p[16:], binary.LittleEndian.Uint64(p[16:])^k64)
		binary.LittleEndian.PutUint64(p[24:], binary.LittleEndian.Uint64(p[24:])^k64)
		p = p[32:]
	}
	for len(p) >= 8 {
		binary.LittleEndian.PutUint64(p, binary.LittleEndian.Uint64(p)^k64)
		p = p[8:]
	}
	// A multiple of 8 bytes was consumed: the key is still aligned.
	for i := range p {
		p[i] ^= k[i]
	}
}

// ParseClose returns the code and reason of a close frame's (unmasked)
// payload; an empty payload has code CloseNoStatus. It fails on a 1-byte
// payload, a code that may not be sent (RFC 6455 section 7.4, the IANA
// registry: 1004–1006, 1014–2999 but 1012/1013, 5000 and above) and a
// reason that is not valid UTF-8.
func ParseClose(p []byte) (code int, reason []byte, err error) {
	switch len(p) {
	case 0:
		return CloseNoStatus, nil, nil
	case 1:
		return 0, nil, ErrCloseLength
	}
	code = int(binary.BigEndian.Uint16(p))
	if !validCloseCode(code) {
		return 0, nil, ErrCloseCode
	}
	if !utf8.Valid(p[2:]) {
		return 0, nil, ErrCloseReason
	}
	return code, p[2:], nil
}

// validCloseCode reports whether a peer may send code (as gorilla/websocket
// checks it).
func validCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1013:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// AppendHeader appends the header of a final, unmasked server frame of op
// with an n-byte payload.
func AppendHeader(dst []byte, op byte, n int) []byte {
	b0 := 0x80 | op
	switch {
	case n < 126:
		return append(dst, b0, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(dst, b0, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(dst, b0, 127), uint64(n))
	}
}

// AppendClientFrame appends a client frame: first byte b0 exactly as given
// (FIN, reserved bits and opcode, so that tests can break the rules too),
// the shortest length encoding, and payload masked with key.
func AppendClientFrame(dst []byte, b0 byte, key [4]byte, payload []byte) []byte {
	start := len(dst)
	dst = AppendHeader(dst, 0, len(payload))
	dst[start] = b0
	dst[start+1] |= 0x80 // masked
	dst = append(dst, key[:]...)
	p := len(dst)
	dst = append(dst, payload...)
	Unmask(dst[p:], key, 0)
	return dst
}

// AppendFrame appends a whole final, unmasked server frame of op.
func AppendFrame(dst []byte, op byte, payload []byte) []byte {
	return append(AppendHeader(dst, op, len(payload)), payload...)
}

// AppendClosePayload appends a close frame's payload: code and text, the
// text cut to fit the 125 bytes of a control frame (at a rune boundary).
// CloseNoStatus appends nothing: the close frame then has no payload.
func AppendClosePayload(dst []byte, code int, text string) []byte {
	if code == CloseNoStatus {
		return dst
	}
	if max := MaxControlPayload - 2; len(text) > max {
		text = text[:max]
		for len(text) > 0 && !utf8.ValidString(text) {
			text = text[:len(text)-1]
		}
	}
	return append(binary.BigEndian.AppendUint16(dst, uint16(code)), text...)
}
