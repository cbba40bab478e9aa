package protocol

import "unicode/utf8"

// AppendCall appends to dst the message published to the broker for frame f
// made by the client identified by token, and returns the extended slice:
//
//	{"id":<raw id>,"method":<method>,"token":<token>,"payload":<raw payload>}
//
// "id" and "payload" are omitted when nil; no other members are written.
// The ID and Payload bytes are copied verbatim; method and token are encoded
// as JSON strings.
func AppendCall(dst []byte, f *Frame, token string) []byte {
	dst = append(dst, '{')
	if f.ID != nil {
		dst = append(dst, `"id":`...)
		dst = append(dst, f.ID...)
		dst = append(dst, ',')
	}
	dst = append(dst, `"method":`...)
	dst = appendQuoted(dst, f.Method)
	dst = append(dst, `,"token":`...)
	dst = appendQuoted(dst, token)
	if f.Payload != nil {
		dst = append(dst, `,"payload":`...)
		dst = append(dst, f.Payload...)
	}
	return append(dst, '}')
}

// AppendError appends to dst an error frame for the client and returns the
// extended slice:
//
//	{"type":"error","id":<raw id>,"error":{"code":<code>,"message":<message>}}
//
// "id" is omitted when nil and otherwise copied verbatim; code and message
// are encoded as JSON strings.
func AppendError(dst []byte, id []byte, code, message string) []byte {
	dst = append(dst, `{"type":"error",`...)
	if id != nil {
		dst = append(dst, `"id":`...)
		dst = append(dst, id...)
		dst = append(dst, ',')
	}
	dst = append(dst, `"error":{"code":`...)
	dst = appendQuoted(dst, code)
	dst = append(dst, `,"message":`...)
	dst = appendQuoted(dst, message)
	return append(dst, "}}"...)
}

// AppendPong appends to dst the gateway's local answer to
// {"method":"ping"} and returns the extended slice:
// {"type":"event","event":"pong"}, or, when id is not nil,
// {"type":"event","event":"pong","id":<raw id>} with id copied verbatim.
func AppendPong(dst []byte, id []byte) []byte {
	if id == nil {
		return append(dst, `{"type":"event","event":"pong"}`...)
	}
	dst = append(dst, `{"type":"event","event":"pong","id":`...)
	dst = append(dst, id...)
	return append(dst, '}')
}

// hexDigits are the digits of \u00XX escapes.
const hexDigits = "0123456789abcdef"

// appendQuoted appends s to dst as a JSON string. Quotes, backslashes and
// control characters are escaped, as are U+2028 and U+2029 (so the output is
// also safe inside JavaScript source). Invalid UTF-8 is replaced by U+FFFD.
// HTML characters (<, >, &) are not escaped. strconv.AppendQuote is not used
// because its escapes (\x.., \U........) are not valid JSON.
func appendQuoted(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0 // s[start:i] is pending and needs no escaping
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
