package protocol

import (
	"fmt"
	"strconv"
)

// The types of backend control messages: in-queue messages the node carries
// out itself instead of passing them to a client.
const (
	TypeDisconnect = "disconnect"
	TypeBroadcast  = "broadcast"
)

// ValidCloseCode reports whether a disconnect may close connections with
// code: 4000–4999, the WebSocket close codes RFC 6455 leaves to
// applications (the node's own are listed in docs/protocol.md).
func ValidCloseCode(code int) bool { return code >= 4000 && code <= 4999 }

// Control is a parsed backend control message. Byte slices alias the input
// given to ParseControl.
//
//	{"type":"disconnect","token":T,"connection"?:ID,"code"?:4xxx,"reason"?:"…"}
//	{"type":"broadcast","event":E,"payload"?:P}
type Control struct {
	// Type is TypeDisconnect or TypeBroadcast.
	Type string

	// Token is the disconnect's target, unescaped and never empty. A
	// broadcast needs none: its Token is "" whatever the message holds.
	Token string
	// Connection, when not "", limits a disconnect to the token's one
	// connection with this id.
	Connection string
	// Code is the disconnect's "code" when it is a JSON number written as
	// an integer (no fraction, no exponent) of at most 9 digits, else 0.
	// CodeSet reports whether "code" was a number at all; whether the code
	// is acceptable as a close code is for the caller to decide.
	Code    int
	CodeSet bool
	// Reason is the disconnect's "reason", unescaped; "" when absent.
	Reason string

	// Event is the broadcast's "event", the raw JSON string as the backend
	// wrote it (quotes and escapes included); its content is not empty.
	Event []byte
	// Payload is the broadcast's raw "payload" (any JSON value, null
	// included) when present, else nil.
	Payload []byte
}

// ParseControl parses a control message (one whose "type" is TypeDisconnect
// or TypeBroadcast). Keys are compared after unescaping and the last
// occurrence of a key wins, as in ParseInbound; members it does not know
// are ignored, and a member whose value is null counts as absent.
//
// It returns an error wrapping ErrNotJSON or ErrNotObject as ParseInbound
// does, and ErrBadControl, with what is wrong, when the type is not a
// control type, a disconnect's "token" is not a non-empty string, its
// "connection" not a non-empty string, its "code" not a number or its
// "reason" not a string, or a broadcast's "event" is not a non-empty
// string. ParseControl never panics.
func ParseControl(b []byte) (Control, error) {
	var s objectScanner
	if err := s.open(b); err != nil {
		return Control{}, err
	}
	var typ, token, conn, code, reason, event, payload span
	var m member
	for {
		st := s.next(&m)
		if st == scanEnd {
			break
		}
		if st != scanOK {
			return Control{}, ErrNotJSON
		}
		v := span{start: m.valStart, end: m.valEnd, set: true}
		if b[v.start] == 'n' && m.valEnd-m.valStart == 4 {
			v = span{} // null: absent (a later member may set it again)
		}
		switch classifyKey(b[m.keyStart:m.keyEnd], m.keyFlags) {
		case keyType:
			typ = v
		case keyToken:
			token = v
		case keyConnection:
			conn = v
		case keyCode:
			code = v
		case keyReason:
			reason = v
		case keyEvent:
			event = v
		case keyPayload:
			payload = span{start: m.valStart, end: m.valEnd, set: true} // null is a payload
		}
	}

	var c Control
	if typ.set && b[typ.start] == '"' {
		c.Type = unquoteValue(b, typ)
	}
	switch c.Type {
	case TypeDisconnect:
		if !isNonEmptyString(b, token) {
			return Control{}, badControl("a disconnect needs a token (a non-empty string)")
		}
		c.Token = unquoteValue(b, token)
		if conn.set {
			if !isNonEmptyString(b, conn) {
				return Control{}, badControl("connection must be a non-empty string")
			}
			c.Connection = unquoteValue(b, conn)
		}
		if code.set {
			raw := b[code.start:code.end]
			if !isNumberStartByte(raw[0]) {
				return Control{}, badControl("code must be a number")
			}
			c.CodeSet = true
			c.Code = smallInt(raw)
		}
		if reason.set {
			if b[reason.start] != '"' {
				return Control{}, badControl("reason must be a string")
			}
			c.Reason = unquoteValue(b, reason)
		}
	case TypeBroadcast:
		if !isNonEmptyString(b, event) {
			return Control{}, badControl("a broadcast needs an event (a non-empty string)")
		}
		c.Event = b[event.start:event.end]
		if payload.set {
			c.Payload = b[payload.start:payload.end]
		}
	default:
		return Control{}, badControl(fmt.Sprintf("type %s is not a control type", strconv.Quote(c.Type)))
	}
	return c, nil
}

func badControl(why string) error { return fmt.Errorf("%w: %s", ErrBadControl, why) }

// isNonEmptyString reports whether v is set and a JSON string other than "".
func isNonEmptyString(b []byte, v span) bool {
	return v.set && b[v.start] == '"' && v.end-v.start > 2
}

func isNumberStartByte(c byte) bool { return c == '-' || c >= '0' && c <= '9' }

// smallInt returns the value of the JSON number raw when it is an integer
// of at most 9 digits without fraction or exponent, else 0.
func smallInt(raw []byte) int {
	if len(raw) == 0 || len(raw) > 10 {
		return 0
	}
	n, err := strconv.Atoi(string(raw))
	if err != nil || n > 999999999 || n < -999999999 {
		return 0
	}
	return n
}

// AppendEvent appends to dst the frame a broadcast sends to every client
// and returns the extended slice:
//
//	{"type":"event","event":<event>,"payload":<payload>}
//
// event must be a raw JSON string and payload raw JSON (nil: no "payload"
// member); both are copied verbatim.
func AppendEvent(dst, event, payload []byte) []byte {
	dst = append(dst, `{"type":"event","event":`...)
	dst = append(dst, event...)
	if payload != nil {
		dst = append(dst, `,"payload":`...)
		dst = append(dst, payload...)
	}
	return append(dst, '}')
}
