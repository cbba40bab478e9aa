package protocol

import "encoding/json"

// Frame is a parsed client call frame.
//
// Byte slices alias the input buffer given to ParseFrame; callers copy what
// they keep beyond the buffer's lifetime.
type Frame struct {
	// ID is the raw JSON of "id" exactly as sent (a JSON string or number);
	// nil when absent or null. Compare ids by value with AppendIDKey.
	ID []byte
	// Method is the unescaped method name; never empty and at most
	// MaxMethodLength bytes long.
	Method string
	// Payload is the raw JSON of "payload" exactly as sent (a JSON object);
	// nil when absent or null.
	Payload []byte
	// TraceParent is the optional "traceparent" string member (W3C trace
	// context a client may send); "" when absent.
	TraceParent string
	// TraceState is the optional "tracestate" string member; "" when absent.
	TraceState string
}

// span locates one member value inside the parsed buffer.
type span struct {
	start, end int
	set        bool
}

// ParseFrame validates and parses a client text frame.
//
// The frame must be a JSON object with a non-empty string "method" of at
// most MaxMethodLength bytes, an optional "id" (string or number), an
// optional "payload" (object), and optional "traceparent" and "tracestate"
// strings. A null "id" or "payload" counts as absent. Other members are
// ignored. Keys are compared after unescaping, and when a key occurs more
// than once the last occurrence wins, as with JavaScript's JSON.parse.
//
// Any failure returns a *FrameError whose ID carries the frame's "id" when
// it could be read. ParseFrame never panics; the only allocations on success
// are the Method, TraceParent and TraceState strings.
func ParseFrame(b []byte) (Frame, error) {
	if !json.Valid(b) {
		return Frame{}, &FrameError{Reason: reasonInvalidJSON}
	}
	var s objectScanner
	switch s.init(b) {
	case scanOK:
	case scanNotObject:
		return Frame{}, &FrameError{Reason: reasonNotObject}
	default:
		return Frame{}, &FrameError{Reason: reasonInvalidJSON}
	}

	var id, method, payload, traceParent, traceState span
	var methodFlags, parentFlags, stateFlags uint8
	var m member
	for {
		st := s.next(&m)
		if st == scanEnd {
			break
		}
		if st != scanOK {
			return Frame{}, &FrameError{Reason: reasonInvalidJSON}
		}
		v := span{start: m.valStart, end: m.valEnd, set: true}
		switch classifyKey(b[m.keyStart:m.keyEnd], m.keyFlags) {
		case keyID:
			id = v
		case keyMethod:
			method = v
			methodFlags = stringFlags(b, v)
		case keyPayload:
			payload = v
		case keyTraceParent:
			traceParent = v
			parentFlags = stringFlags(b, v)
		case keyTraceState:
			traceState = v
			stateFlags = stringFlags(b, v)
		}
	}

	var f Frame

	// Read the id first so that every error below can echo it. Errors are
	// reported in a fixed order: method, id, payload, traceparent, tracestate.
	// An id longer than MaxIDLength is never echoed: it is not an id a
	// client can be waiting for, and sending it back would cost its size.
	var idErr, idLong bool
	if id.set {
		switch b[id.start] {
		case 'n': // null: absent
		case '"', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
			if id.end-id.start > MaxIDLength {
				idLong = true
			} else {
				f.ID = b[id.start:id.end]
			}
		default:
			idErr = true
		}
	}

	switch {
	case !method.set:
		return Frame{}, &FrameError{ID: f.ID, Reason: reasonMethodRequired}
	case b[method.start] != '"':
		return Frame{}, &FrameError{ID: f.ID, Reason: reasonMethodNotString}
	case method.end-method.start == 2:
		return Frame{}, &FrameError{ID: f.ID, Reason: reasonMethodEmpty}
	}
	raw := b[method.start+1 : method.end-1]
	// Every unescaped byte needs at least one and at most six input bytes
	// (\u0041), so the length can often be decided without decoding.
	if methodFlags == 0 {
		if len(raw) > MaxMethodLength {
			return Frame{}, &FrameError{ID: f.ID, Reason: reasonMethodTooLong}
		}
	} else if len(raw) > 6*MaxMethodLength || unquotedLen(raw) > MaxMethodLength {
		return Frame{}, &FrameError{ID: f.ID, Reason: reasonMethodTooLong}
	}
	// A method becomes a routing key and a log field: no NUL, newline or
	// other control character (JSON lets them in as escapes, and DEL raw).
	if methodFlags != 0 {
		f.Method = unquote(raw, methodFlags)
		if hasControl(f.Method) {
			return Frame{}, &FrameError{ID: f.ID, Reason: reasonMethodControl}
		}
	} else if hasControl(raw) {
		return Frame{}, &FrameError{ID: f.ID, Reason: reasonMethodControl}
	}

	if idErr {
		var echo []byte
		if id.end-id.start <= MaxIDLength {
			echo = b[id.start:id.end]
		}
		return Frame{}, &FrameError{ID: echo, Reason: reasonIDType}
	}
	if idLong {
		return Frame{}, &FrameError{Reason: reasonIDTooLong}
	}

	if payload.set {
		switch b[payload.start] {
		case 'n': // null: absent
		case '{':
			f.Payload = b[payload.start:payload.end]
		default:
			return Frame{}, &FrameError{ID: f.ID, Reason: reasonPayloadType}
		}
	}

	if traceParent.set && b[traceParent.start] != '"' {
		return Frame{}, &FrameError{ID: f.ID, Reason: reasonTraceParentType}
	}
	if traceState.set && b[traceState.start] != '"' {
		return Frame{}, &FrameError{ID: f.ID, Reason: reasonTraceStateType}
	}

	if f.Method == "" { // not unquoted above: no escapes
		f.Method = unquote(raw, methodFlags)
	}
	if traceParent.set {
		f.TraceParent = unquote(b[traceParent.start+1:traceParent.end-1], parentFlags)
	}
	if traceState.set {
		f.TraceState = unquote(b[traceState.start+1:traceState.end-1], stateFlags)
	}
	return f, nil
}

// stringFlags returns the scanString flags of the value v when it is a JSON
// string, else 0.
func stringFlags(b []byte, v span) uint8 {
	if v.start < len(b) && b[v.start] == '"' {
		_, flags := scanString(b, v.start)
		return flags
	}
	return 0
}

// hasControl reports whether s has a C0 control character or DEL.
func hasControl[S string | []byte](s S) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return true
		}
	}
	return false
}
