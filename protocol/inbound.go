package protocol

import "encoding/json"

// Inbound is a parsed message from the node's in-queue. Byte slices alias
// the input given to ParseInbound, except Body, which is a fresh buffer.
type Inbound struct {
	// Token is the value of the "token" member (required, a non-empty JSON
	// string, unescaped). It identifies the client connection to deliver to.
	Token string
	// Type is the value of "type" when it is a JSON string, else "".
	Type string
	// ID is the raw JSON of "id" when present (any JSON value, including
	// null), else nil. Compare ids by value with AppendIDKey.
	ID []byte
	// Method is the value of "method" when it is a JSON string, else "".
	Method string
	// Body is the whole message with every top-level "token" member
	// removed. Every other byte is untouched: key order, whitespace, number
	// spelling and escapes are all preserved, and Body is valid JSON.
	Body []byte
}

// ParseInbound parses an in-queue message: a JSON object carrying the
// "token" of the client it is addressed to.
//
// It returns an error wrapping ErrNotJSON when b is not valid JSON,
// ErrNotObject when it is not a JSON object, and ErrNoToken when the
// "token" member is missing, is not a JSON string, or is empty. Keys are
// compared after unescaping; when a key occurs more than once the last
// occurrence wins (but every "token" member is removed from Body).
//
// The only allocations on success are Body and the Token, Type and Method
// strings. ParseInbound never panics.
func ParseInbound(b []byte) (Inbound, error) {
	if !json.Valid(b) {
		return Inbound{}, ErrNotJSON
	}
	var s objectScanner
	switch s.init(b) {
	case scanOK:
	case scanNotObject:
		return Inbound{}, ErrNotObject
	default:
		return Inbound{}, ErrNotJSON
	}

	var token, typ, method span
	var in Inbound
	var body []byte
	// Body is the input minus the token members. It is assembled from
	// contiguous input ranges; [pendStart, pendEnd) is the range not yet
	// copied. A kept member contributes its bytes, preceded by the original
	// separator in front of it unless it is the first kept member. The
	// prefix up to the first key and the suffix after the last value are
	// always kept.
	pendStart, pendEnd := 0, 0
	prevEnd := -1 // end of the previous member's value
	kept := false
	var m member
	for {
		st := s.next(&m)
		if st == scanEnd {
			break
		}
		if st != scanOK {
			return Inbound{}, ErrNotJSON
		}
		if prevEnd < 0 {
			pendEnd = m.keyStart - 1 // prefix: "{" and whitespace
		}
		v := span{start: m.valStart, end: m.valEnd, set: true}
		kind := classifyKey(b[m.keyStart:m.keyEnd], m.keyFlags)
		if kind == keyToken {
			token = v
		} else {
			from := prevEnd
			if !kept {
				from = m.keyStart - 1
				kept = true
			}
			if from != pendEnd {
				if body == nil {
					body = make([]byte, 0, len(b))
				}
				body = append(body, b[pendStart:pendEnd]...)
				pendStart = from
			}
			pendEnd = m.valEnd
			switch kind {
			case keyType:
				typ = v
			case keyMethod:
				method = v
			case keyID:
				in.ID = b[v.start:v.end]
			}
		}
		prevEnd = m.valEnd
	}

	if !token.set || b[token.start] != '"' || token.end-token.start == 2 {
		return Inbound{}, ErrNoToken
	}

	// Suffix: whitespace, "}" and trailing whitespace after the last value.
	if prevEnd != pendEnd {
		if body == nil {
			body = make([]byte, 0, len(b))
		}
		body = append(body, b[pendStart:pendEnd]...)
		pendStart = prevEnd
	}
	if body == nil {
		body = make([]byte, 0, len(b)-pendStart)
	}
	in.Body = append(body, b[pendStart:]...)

	in.Token = unquoteValue(b, token)
	if typ.set && b[typ.start] == '"' {
		in.Type = unquoteValue(b, typ)
	}
	if method.set && b[method.start] == '"' {
		in.Method = unquoteValue(b, method)
	}
	return in, nil
}

// unquoteValue returns the unescaped content of the JSON string value v.
func unquoteValue(b []byte, v span) string {
	_, flags := scanString(b, v.start)
	return unquote(b[v.start+1:v.end-1], flags)
}
