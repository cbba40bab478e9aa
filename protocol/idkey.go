package protocol

import (
	"math/big"
	"strconv"
	"unicode/utf8"
)

// maxPlainDigits is the longest integer, in digits, whose key is written out
// in full; longer integers and every non-integer get the mantissa/exponent
// form. It bounds the key of 1e999999 to a few bytes.
const maxPlainDigits = 64

// AppendIDKey appends the canonical key of the JSON value raw (as found in
// Frame.ID or Inbound.ID, without surrounding whitespace) to dst and returns
// the extended buffer. Two ids have equal keys exactly when they are the
// same JSON value, however they are spelled:
//
//   - A string's key is `"` followed by its unescaped UTF-8 content (no
//     closing quote): "a/1", "a\/1" and "\u0061/1" are one id; so are
//     "é", "\u00e9" and "\u00E9", and "😀" and "\ud83d\ude00". Invalid
//     UTF-8 and lone surrogates become U+FFFD, as in encoding/json.
//   - A number's key is its exact decimal value, never a float64: 1500,
//     1500.0, 1.5e3, 15E2 and 150000e-2 are one id, and
//     12345678901234567890123 and 12345678901234567890124 are two. Integers
//     of up to 64 digits are written out ("1500", "-7"); other numbers as
//     mantissa and exponent without leading or trailing zeros ("15e-1" for
//     1.5). -0 is 0.
//   - true and false are themselves.
//   - null has the empty key, the same as a missing id (raw empty).
//
// A number's key never contains a quote, so the string "1" and the number 1
// differ. ok is false, and dst is returned unchanged, for objects, arrays
// and anything that is not a JSON value: such ids have no key and match
// nothing.
//
// The common ids cost no allocation beyond dst's growth: a string without
// escapes (whose content is valid UTF-8) and an integer of at most 64 digits
// are copied from raw as they are. AppendIDKey never panics.
func AppendIDKey(dst, raw []byte) (key []byte, ok bool) {
	if len(raw) == 0 {
		return dst, true
	}
	switch c := raw[0]; {
	case c == '"':
		end, flags := scanString(raw, 0)
		if end != len(raw) {
			return dst, false
		}
		content := raw[1 : len(raw)-1]
		if flags&strEscaped == 0 && (flags&strNonASCII == 0 || utf8.Valid(content)) {
			return append(dst, raw[:len(raw)-1]...), true
		}
		return appendUnescaped(append(dst, '"'), content), true
	case c == '-' || ('0' <= c && c <= '9'):
		return appendNumberKey(dst, raw)
	case string(raw) == "true", string(raw) == "false":
		return append(dst, raw...), true
	case string(raw) == "null":
		return dst, true
	}
	return dst, false
}

// appendUnescaped appends the unescaped content raw of a JSON string (without
// its quotes) to dst: escapes resolved, invalid UTF-8 and lone surrogates
// replaced by U+FFFD. It is the one decoder behind every string this package
// compares or hands out (member names aside, which need no output): id keys,
// methods, tokens and trace context.
func appendUnescaped(dst, raw []byte) []byte {
	for i := 0; i < len(raw); {
		r, next := decodeRune(raw, i)
		if r < utf8.RuneSelf {
			dst = append(dst, byte(r))
		} else {
			dst = utf8.AppendRune(dst, r)
		}
		i = next
	}
	return dst
}

// appendNumberKey appends the key of the JSON number raw (see AppendIDKey).
func appendNumberKey(dst, raw []byte) ([]byte, bool) {
	i := 0
	neg := raw[0] == '-'
	if neg {
		i++
	}
	intStart := i
	for i < len(raw) && isDigit(raw[i]) {
		i++
	}
	intEnd := i
	if intEnd == intStart || (raw[intStart] == '0' && intEnd-intStart > 1) {
		return dst, false
	}
	fracStart, fracEnd := i, i
	if i < len(raw) && raw[i] == '.' {
		i++
		fracStart = i
		for i < len(raw) && isDigit(raw[i]) {
			i++
		}
		fracEnd = i
		if fracEnd == fracStart {
			return dst, false
		}
	}
	expStart, expEnd := i, i
	if i < len(raw) && (raw[i] == 'e' || raw[i] == 'E') {
		i++
		expStart = i
		if i < len(raw) && (raw[i] == '+' || raw[i] == '-') {
			i++
		}
		digits := i
		for i < len(raw) && isDigit(raw[i]) {
			i++
		}
		if i == digits {
			return dst, false
		}
		expEnd = i
	}
	if i != len(raw) {
		return dst, false
	}

	// Fast path: a plain integer is its own key (but -0 is 0).
	if fracStart == fracEnd && expStart == expEnd && intEnd-intStart <= maxPlainDigits {
		if neg && raw[intStart] == '0' {
			return append(dst, '0'), true
		}
		return append(dst, raw...), true
	}

	// The value is ±d × 10^exp, with d the digits of the integer and
	// fraction parts; trim d to its significant digits.
	intPart, frac := raw[intStart:intEnd], raw[fracStart:fracEnd]
	lead := 0 // leading zeros of intPart ++ frac
	for lead < len(intPart) && intPart[lead] == '0' {
		lead++
	}
	if lead == len(intPart) {
		for lead-len(intPart) < len(frac) && frac[lead-len(intPart)] == '0' {
			lead++
		}
	}
	total := len(intPart) + len(frac)
	if lead == total {
		return append(dst, '0'), true // every digit is zero: 0, -0.0, 0e7
	}
	trail := 0 // trailing zeros of intPart ++ frac
	for trail < total-lead && digitAt(intPart, frac, total-1-trail) == '0' {
		trail++
	}
	// exp = literal exponent - len(frac) + trail; |len(frac)|, trail < len(raw).
	adjust := int64(trail) - int64(len(frac))
	nd := total - lead - trail // significant digits

	if neg {
		dst = append(dst, '-')
	}
	lit, small := parseExponent(raw[expStart:expEnd])
	if !small {
		// |literal| ≥ 10^18 dwarfs adjust and maxPlainDigits: always the
		// exponent form, computed exactly.
		dst = appendDigits(dst, intPart, frac, lead, lead+nd)
		e := new(big.Int)
		e.SetString(string(raw[expStart:expEnd]), 10)
		e.Add(e, big.NewInt(adjust))
		return e.Append(append(dst, 'e'), 10), true
	}
	exp := lit + adjust
	if exp >= 0 && int64(nd)+exp <= maxPlainDigits {
		dst = appendDigits(dst, intPart, frac, lead, lead+nd)
		for range exp {
			dst = append(dst, '0')
		}
		return dst, true
	}
	dst = appendDigits(dst, intPart, frac, lead, lead+nd)
	return strconv.AppendInt(append(dst, 'e'), exp, 10), true
}

// parseExponent parses the exponent digits e (with optional sign; empty is
// 0). small is false when |e| may not fit: more than 18 significant digits.
func parseExponent(e []byte) (v int64, small bool) {
	neg := false
	if len(e) > 0 && (e[0] == '+' || e[0] == '-') {
		neg = e[0] == '-'
		e = e[1:]
	}
	for len(e) > 0 && e[0] == '0' {
		e = e[1:]
	}
	if len(e) > 18 {
		return 0, false
	}
	for _, c := range e {
		v = v*10 + int64(c-'0')
	}
	if neg {
		v = -v
	}
	return v, true
}

// digitAt returns digit k of the concatenation of a and b.
func digitAt(a, b []byte, k int) byte {
	if k < len(a) {
		return a[k]
	}
	return b[k-len(a)]
}

// appendDigits appends digits [from, to) of the concatenation of a and b.
func appendDigits(dst, a, b []byte, from, to int) []byte {
	if from < len(a) {
		dst = append(dst, a[from:min(to, len(a))]...)
	}
	if to > len(a) {
		dst = append(dst, b[max(from-len(a), 0):to-len(a)]...)
	}
	return dst
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
