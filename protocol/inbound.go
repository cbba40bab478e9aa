package protocol

// Inbound is a parsed message from the node's in-queue. Byte slices alias
// the input given to ParseInbound, except Body, which is a fresh buffer.
type Inbound struct {
	// Token is the value of the "token" member (required by ParseInbound, a
	// non-empty JSON string, unescaped). It identifies the client
	// connections to deliver to. ParseMessage leaves it "" when the message
	// has no usable token.
	Token string
	// Type is the value of "type" when it is a JSON string, else "".
	Type string
	// ID is the raw JSON of "id" when present (any JSON value, including
	// null), else nil. Compare ids by value with AppendIDKey.
	ID []byte
	// Method is the value of "method" when it is a JSON string, else "".
	Method string
	// Connection is the value of "connection" when it is a JSON string
	// (unescaped), else "": the one connection of the token an event is
	// for. HasConnection reports whether the member is there at all with a
	// value other than null, so HasConnection with Connection == "" is a
	// "connection" that is not a non-empty string.
	Connection    string
	HasConnection bool
	// Body is the whole message with every top-level "token" member
	// removed. Every other byte is untouched: key order, whitespace, number
	// spelling and escapes are all preserved (a "connection" member too),
	// and Body is valid JSON.
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
// The only allocations on success are Body and the Token, Type, Method and
// Connection strings. ParseInbound never panics.
func ParseInbound(b []byte) (Inbound, error) { return parseInbound(b, true) }

// ParseMessage is ParseInbound for messages that need no token (a
// broadcast): a missing, non-string or empty "token" is not an error, and
// Token is then "". Everything else, errors included, is as ParseInbound's:
// ParseInbound(b) succeeds exactly when ParseMessage(b) does with a
// non-empty Token, and then returns the same Inbound.
func ParseMessage(b []byte) (Inbound, error) { return parseInbound(b, false) }

func parseInbound(b []byte, needToken bool) (Inbound, error) {
	var s objectScanner
	if err := s.open(b); err != nil {
		return Inbound{}, err
	}

	var token, typ, method, conn span
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
			case keyConnection:
				conn = v
			}
		}
		prevEnd = m.valEnd
	}

	hasToken := token.set && b[token.start] == '"' && token.end-token.start > 2
	if needToken && !hasToken {
		return Inbound{}, ErrNoToken
	}

	if prevEnd < 0 {
		// No members at all (only ParseMessage gets here): all is kept.
		in.Body = append(make([]byte, 0, len(b)), b...)
	} else {
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
	}

	if hasToken {
		in.Token = unquoteValue(b, token)
	}
	if typ.set && b[typ.start] == '"' {
		in.Type = unquoteValue(b, typ)
	}
	if method.set && b[method.start] == '"' {
		in.Method = unquoteValue(b, method)
	}
	if conn.set && b[conn.start] != 'n' {
		in.HasConnection = true
		if b[conn.start] == '"' {
			in.Connection = unquoteValue(b, conn)
		}
	}
	return in, nil
}

// unquoteValue returns the unescaped content of the JSON string value v.
func unquoteValue(b []byte, v span) string {
	_, flags := scanString(b, v.start)
	return unquote(b[v.start+1:v.end-1], flags)
}
