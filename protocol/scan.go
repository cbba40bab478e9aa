package protocol

import (
	"encoding/json"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// This file holds the small hand scanner shared by ParseFrame and
// ParseInbound. It runs only after encoding/json's Valid has accepted the
// input, so it does not report syntax errors in detail; it is nevertheless
// bounds-checked everywhere and returns -1 (or a zero value) instead of
// panicking if it ever meets malformed input. It never recurses, so nesting
// depth cannot exhaust the stack.

// String flags reported by scanString.
const (
	strEscaped  = 1 << iota // the string contains a backslash escape
	strNonASCII             // the string contains a byte >= 0x80
)

// isWS reports whether c is JSON insignificant whitespace.
func isWS(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r'
}

// skipWS returns the index of the first non-whitespace byte of b at or after
// i, or len(b).
func skipWS(b []byte, i int) int {
	for i < len(b) && isWS(b[i]) {
		i++
	}
	return i
}

// scanString scans the JSON string whose opening quote is at b[i]. It
// returns the index just past the closing quote and the strEscaped and
// strNonASCII flags, or -1 if the string is unterminated.
func scanString(b []byte, i int) (end int, flags uint8) {
	if i < 0 || i >= len(b) || b[i] != '"' {
		return -1, 0
	}
	for i++; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return i + 1, flags
		case c == '\\':
			flags |= strEscaped
			i++ // skip the escaped byte; \uXXXX digits are plain bytes
		case c >= utf8.RuneSelf:
			flags |= strNonASCII
		}
	}
	return -1, 0
}

// skipString returns the index just past the JSON string whose opening quote
// is at b[i], or -1. It is scanString without the flags, for skipping.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '"':
			return i + 1
		case '\\':
			i++
		}
	}
	return -1
}

// skipValue returns the index just past the JSON value starting at b[i]
// (which must not be whitespace), or -1 if the value is malformed. Nested
// objects and arrays are skipped with a depth counter, not recursion.
func skipValue(b []byte, i int) int {
	if i < 0 || i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				if i < 0 {
					return -1
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return -1
	case '}', ']', ',', ':':
		return -1
	default:
		// Number or literal: runs to the next delimiter.
		start := i
		for i < len(b) {
			switch c := b[i]; c {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i
			case '"', '{', '[', ':':
				return -1
			}
			i++
		}
		if i == start {
			return -1
		}
		return i
	}
}

// member is one member of a top-level JSON object. The key span excludes the
// quotes.
type member struct {
	keyStart, keyEnd int   // key content, b[keyStart-1] is the opening quote
	keyFlags         uint8 // scanString flags of the key
	valStart, valEnd int   // the value's bytes
}

// objectScanner walks the members of a top-level JSON object.
type objectScanner struct {
	b    []byte
	i    int  // next byte to look at
	done bool // the closing brace was consumed
}

// scanStatus is the outcome of objectScanner.init and objectScanner.next.
type scanStatus uint8

const (
	scanOK        scanStatus = iota // a member was read / the object was opened
	scanEnd                         // no more members
	scanNotObject                   // the top-level value is not an object
	scanBad                         // malformed input (impossible after json.Valid)
)

// init positions s at the first member of the object in b.
// open validates b as JSON and starts scanning it as an object: it returns
// ErrNotJSON or ErrNotObject (the backend message errors) when it cannot.
func (s *objectScanner) open(b []byte) error {
	if !json.Valid(b) {
		return ErrNotJSON
	}
	switch s.init(b) {
	case scanOK:
		return nil
	case scanNotObject:
		return ErrNotObject
	default:
		return ErrNotJSON
	}
}

func (s *objectScanner) init(b []byte) scanStatus {
	s.b = b
	s.done = false
	i := skipWS(b, 0)
	if i >= len(b) {
		return scanBad
	}
	if b[i] != '{' {
		return scanNotObject
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		s.done = true
		i++
	}
	s.i = i
	return scanOK
}

// next reads the next member into m.
func (s *objectScanner) next(m *member) scanStatus {
	if s.done {
		return scanEnd
	}
	b, i := s.b, s.i
	if i >= len(b) || b[i] != '"' {
		return scanBad
	}
	end, flags := scanString(b, i)
	if end < 0 {
		return scanBad
	}
	m.keyStart, m.keyEnd, m.keyFlags = i+1, end-1, flags
	i = skipWS(b, end)
	if i >= len(b) || b[i] != ':' {
		return scanBad
	}
	i = skipWS(b, i+1)
	m.valStart = i
	end = skipValue(b, i)
	if end < 0 {
		return scanBad
	}
	m.valEnd = end
	i = skipWS(b, end)
	if i >= len(b) {
		return scanBad
	}
	switch b[i] {
	case ',':
		i = skipWS(b, i+1)
	case '}':
		s.done = true
		i++
	default:
		return scanBad
	}
	s.i = i
	return scanOK
}

// keyKind identifies the member names this package cares about.
type keyKind uint8

const (
	keyOther keyKind = iota
	keyID
	keyMethod
	keyPayload
	keyTraceParent
	keyTraceState
	keyToken
	keyType
	keyConnection
	keyEvent
	keyCode
	keyReason
)

// maxKnownKey is the length of the longest known member name ("traceparent").
const maxKnownKey = len("traceparent")

// classifyKey returns the kind of the (still escaped) key content raw.
// It never allocates: unescaped keys are compared as raw bytes, and escaped
// ones are decoded into a small stack buffer.
func classifyKey(raw []byte, flags uint8) keyKind {
	if flags&strEscaped == 0 {
		return lookupKey(raw)
	}
	var buf [maxKnownKey]byte
	n := 0
	for i := 0; i < len(raw); {
		r, next := decodeRune(raw, i)
		if r >= utf8.RuneSelf || n == len(buf) {
			return keyOther // every known name is short ASCII
		}
		buf[n] = byte(r)
		n++
		i = next
	}
	return lookupKey(buf[:n])
}

// lookupKey maps an unescaped key to its kind. The switch on string(key)
// does not allocate.
func lookupKey(key []byte) keyKind {
	switch string(key) {
	case "id":
		return keyID
	case "method":
		return keyMethod
	case "payload":
		return keyPayload
	case "traceparent":
		return keyTraceParent
	case "tracestate":
		return keyTraceState
	case "token":
		return keyToken
	case "type":
		return keyType
	case "connection":
		return keyConnection
	case "event":
		return keyEvent
	case "code":
		return keyCode
	case "reason":
		return keyReason
	}
	return keyOther
}

// decodeRune decodes the character starting at raw[i] inside the content of
// a JSON string (without quotes), resolving escapes. It returns the rune and
// the index of the next character. Invalid UTF-8 bytes, lone surrogates and
// malformed escapes decode as utf8.RuneError, like encoding/json. next is
// always greater than i.
func decodeRune(raw []byte, i int) (r rune, next int) {
	c := raw[i]
	if c != '\\' {
		if c < utf8.RuneSelf {
			return rune(c), i + 1
		}
		r, size := utf8.DecodeRune(raw[i:])
		return r, i + size
	}
	if i+1 >= len(raw) {
		return utf8.RuneError, len(raw)
	}
	switch raw[i+1] {
	case '"', '\\', '/':
		return rune(raw[i+1]), i + 2
	case 'b':
		return '\b', i + 2
	case 'f':
		return '\f', i + 2
	case 'n':
		return '\n', i + 2
	case 'r':
		return '\r', i + 2
	case 't':
		return '\t', i + 2
	case 'u':
		r := hex4(raw, i+2)
		if r < 0 {
			return utf8.RuneError, i + 2
		}
		if utf16.IsSurrogate(r) {
			if i+7 < len(raw) && raw[i+6] == '\\' && raw[i+7] == 'u' {
				if r2 := hex4(raw, i+8); r2 >= 0 {
					if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
						return dec, i + 12
					}
				}
			}
			return utf8.RuneError, i + 6
		}
		return r, i + 6
	}
	return utf8.RuneError, i + 2
}

// hex4 parses the four hex digits at raw[i:i+4], or returns -1.
func hex4(raw []byte, i int) rune {
	if i < 0 || i+4 > len(raw) {
		return -1
	}
	var r rune
	for _, c := range raw[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

// unquote returns the unescaped content raw of a JSON string with the given
// scanString flags, decoded by appendUnescaped (as id keys are). It costs
// exactly one allocation (none when empty).
func unquote(raw []byte, flags uint8) string {
	if flags == 0 {
		return string(raw)
	}
	b := appendUnescaped(make([]byte, 0, unquotedLen(raw)), raw)
	if len(b) == 0 {
		return ""
	}
	// b is never written again: the string may share its memory, as
	// strings.Builder's does.
	return unsafe.String(&b[0], len(b))
}

// unquotedLen returns the length in bytes of unquote's result for raw.
func unquotedLen(raw []byte) int {
	n := 0
	for i := 0; i < len(raw); {
		r, next := decodeRune(raw, i)
		n += utf8.RuneLen(r)
		i = next
	}
	return n
}
