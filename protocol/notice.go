package protocol

import "strconv"

// The lifecycle methods: the node publishes notices with these methods
// about its connections (see docs/lifecycle.md). Clients cannot call them.
const (
	MethodConnect    = "$connect"
	MethodDisconnect = "$disconnect"
	MethodPresence   = "$presence"
)

// PresenceChunk is the most connections one $presence notice lists; a node
// with more sends several, numbered by "seq", the final one with "last":true.
const PresenceChunk = 1000

// AppendConnectNotice appends to dst the $connect notice of connection conn
// of token on node and returns the extended slice:
//
//	{"type":"connect","method":"$connect","token":T,"node":N,"connection":ID}
//
// With asCall (lifecycle.authorize) it also carries "id": conn, so that the
// backend answers it like a call:
//
//	{"type":"connect","method":"$connect","token":T,"node":N,"connection":ID,"id":ID}
//
// Every value is encoded as a JSON string.
func AppendConnectNotice(dst []byte, token, node, conn string, asCall bool) []byte {
	dst = append(dst, `{"type":"connect","method":"$connect","token":`...)
	dst = appendQuoted(dst, token)
	dst = append(dst, `,"node":`...)
	dst = appendQuoted(dst, node)
	dst = append(dst, `,"connection":`...)
	dst = appendQuoted(dst, conn)
	if asCall {
		dst = append(dst, `,"id":`...)
		dst = appendQuoted(dst, conn)
	}
	return append(dst, '}')
}

// AppendDisconnectNotice appends to dst the $disconnect notice of
// connection conn of token on node, which closed with the WebSocket close
// code and reason, and returns the extended slice:
//
//	{"type":"disconnect","method":"$disconnect","token":T,"node":N,"connection":ID,"code":4001,"reason":"..."}
func AppendDisconnectNotice(dst []byte, token, node, conn string, code int, reason string) []byte {
	dst = append(dst, `{"type":"disconnect","method":"$disconnect","token":`...)
	dst = appendQuoted(dst, token)
	dst = append(dst, `,"node":`...)
	dst = appendQuoted(dst, node)
	dst = append(dst, `,"connection":`...)
	dst = appendQuoted(dst, conn)
	dst = append(dst, `,"code":`...)
	dst = strconv.AppendInt(dst, int64(code), 10)
	dst = append(dst, `,"reason":`...)
	dst = appendQuoted(dst, reason)
	return append(dst, '}')
}

// Presence is one connection listed in a $presence notice.
type Presence struct {
	Token, Connection string
}

// AppendPresenceNotice appends to dst one $presence notice of node listing
// conns (at most PresenceChunk of them, by convention) and returns the
// extended slice:
//
//	{"type":"presence","method":"$presence","node":N,"connections":[{"token":T,"connection":ID},...],"seq":0,"last":true}
//
// seq numbers the notices of one round from 0; last is true on the round's
// final notice (a node without connections sends one, with an empty list).
func AppendPresenceNotice(dst []byte, node string, conns []Presence, seq int, last bool) []byte {
	dst = append(dst, `{"type":"presence","method":"$presence","node":`...)
	dst = appendQuoted(dst, node)
	dst = append(dst, `,"connections":[`...)
	for i, p := range conns {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"token":`...)
		dst = appendQuoted(dst, p.Token)
		dst = append(dst, `,"connection":`...)
		dst = appendQuoted(dst, p.Connection)
		dst = append(dst, '}')
	}
	dst = append(dst, `],"seq":`...)
	dst = strconv.AppendInt(dst, int64(seq), 10)
	dst = append(dst, `,"last":`...)
	dst = strconv.AppendBool(dst, last)
	return append(dst, '}')
}
