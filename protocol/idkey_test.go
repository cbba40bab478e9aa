package protocol

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func idKey(t testing.TB, raw string) (string, bool) {
	t.Helper()
	k, ok := AppendIDKey(nil, []byte(raw))
	return string(k), ok
}

// Each group holds spellings of one value; values of different groups differ.
var idGroups = [][]string{
	{`"a/1"`, `"a\/1"`, `"\u0061\u002F1"`, `"\u0061\u002f\u0031"`},
	{`"é-1"`, `"\u00e9-1"`, `"\u00E9-1"`},
	{`"😀-3"`, `"\ud83d\ude00-3"`, `"\uD83D\uDE00-3"`, `"\ud83d` + "\xf0\x9f\x98\x80"[4:] + `\ude00-3"`},
	{`"tab\there"`, "\"tab\\u0009here\""},
	{`"q\"\\\b\f\n\r\t"`, `"q\u0022\u005c\u0008\u000c\u000a\u000d\u0009"`},
	{`""`},
	{`"\ufffd"`, `"\ud800"`, `"\udc00"`, "\"\xff\"", `"` + "\ufffd" + `"`},
	{`"1"`, `"\u0031"`},
	{`"a\u0000b"`},
	{`"a"`},
	{`1500`, `1500.0`, `1.5e3`, `15E2`, `150000e-2`, `1.50e3`, `0.15e+4`, `1500.000e0`, `15000E-001`},
	{`1`, `1.0`, `1e0`, `10e-1`, `0.1e1`, `0.0001e4`},
	{`-1`, `-1.0`, `-10e-1`},
	{`0`, `-0`, `0.0`, `-0.0`, `0e99`, `0e-99999999999999999999999`, `0.000`},
	{`12345678901234567890123`, `1.2345678901234567890123e22`, `12345678901234567890123.000`},
	{`12345678901234567890124`},
	{`1.5`, `15e-1`, `0.15e1`, `150e-2`},
	{`-1.5`, `-15e-1`},
	{`0.1`, `1e-1`},
	{`1e64`, `10e63`, `0.1e65`},
	{`1e63`, `1000000000000000000000000000000000000000000000000000000000000000`},
	{`1e400`, `1E400`, `10e399`},
	{`1e99999999999999999999`, `10e99999999999999999998`, `0.1e100000000000000000000`, `1e+099999999999999999999`},
	{`1e-99999999999999999999`, `0.1e-99999999999999999998`},
	{`2e99999999999999999999`},
	{`true`},
	{`false`},
	{`null`, ``},
}

func TestAppendIDKey(t *testing.T) {
	keys := map[string]int{}
	for gi, g := range idGroups {
		want, ok := idKey(t, g[0])
		if !ok {
			t.Fatalf("%s: no key", g[0])
		}
		for _, raw := range g[1:] {
			if got, ok := idKey(t, raw); !ok || got != want {
				t.Errorf("key(%s) = %q, %v; want %q like %s", raw, got, ok, want, g[0])
			}
		}
		if other, dup := keys[want]; dup {
			t.Errorf("groups %v and %v share the key %q", idGroups[other], g, want)
		}
		keys[want] = gi
	}
	for _, tc := range []struct{ raw, key string }{
		{`"a\/1"`, `"a/1`},
		{`1.5e3`, `1500`},
		{`-0`, `0`},
		{`1.5`, `15e-1`},
		{`-120e-3`, `-12e-2`},
		{`1e64`, `1e64`},
		{`1e63`, "1" + strings.Repeat("0", 63)},
		{`1e99999999999999999999`, `1e99999999999999999999`},
		{`true`, `true`},
		{`null`, ``},
	} {
		if got, _ := idKey(t, tc.raw); got != tc.key {
			t.Errorf("key(%s) = %q, want %q", tc.raw, got, tc.key)
		}
	}
	for _, raw := range []string{`{}`, `{"a":1}`, `[1]`, `[]`, `nul`, `01`, `1.`, `.5`, `1e`, `-`, `+1`, `"a`, `"a" `, ` 1`, `1 `, `tru`, `"\`} {
		if k, ok := AppendIDKey([]byte("x"), []byte(raw)); ok || string(k) != "x" {
			t.Errorf("AppendIDKey(%q) = %q, %v; want no key and dst unchanged", raw, k, ok)
		}
	}
}

// The common ids (plain strings, integers) and the usual others cost no
// allocation when dst has room. Run without -race (make unit does).
func TestAppendIDKeyAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	buf := make([]byte, 0, 128)
	for _, raw := range []string{`"c-17"`, `"é"`, `12345`, `-7`, `"a\/1\u00e9\ud83d\ude00"`, `1.50e3`, `0.25`} {
		b := []byte(raw)
		if n := testing.AllocsPerRun(100, func() { buf, _ = AppendIDKey(buf[:0], b) }); n != 0 {
			t.Errorf("AppendIDKey(%s) allocs = %v, want 0", raw, n)
		}
	}
}

func BenchmarkAppendIDKey(b *testing.B) {
	for _, bc := range []struct{ name, raw string }{
		{"plain_string", `"c-0123456789"`},
		{"integer", `1234567`},
		{"escaped_string", `"a\/1-\u00e9-\ud83d\ude00"`},
		{"decimal_number", `1.50e3`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			raw := []byte(bc.raw)
			buf := make([]byte, 0, 64)
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				buf, _ = AppendIDKey(buf[:0], raw)
			}
		})
	}
}

// refIDValue decodes a JSON scalar the slow, obviously right way:
// encoding/json with UseNumber, numbers as exact big.Rat. skip is true for
// values the reference does not judge: non-scalars, invalid JSON, and
// numbers with exponents beyond ±10000 (a big.Rat of 1e99999999 is too
// costly; the table test covers those).
func refIDValue(raw []byte) (v any, skip bool) {
	if len(raw) == 0 {
		return nil, false
	}
	if !json.Valid(raw) || len(bytes.TrimLeft(raw, " \t\r\n")) != len(raw) || len(bytes.TrimRight(raw, " \t\r\n")) != len(raw) {
		return nil, true
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		panic(fmt.Sprintf("reference: decode valid %q: %v", raw, err))
	}
	switch x := v.(type) {
	case string, bool, nil:
		return x, false
	case json.Number:
		s := string(x)
		if i := strings.IndexAny(s, "eE"); i >= 0 {
			e, err := strconv.Atoi(s[i+1:])
			if err != nil || e > 10000 || e < -10000 {
				return nil, true
			}
		}
		r, ok := new(big.Rat).SetString(s)
		if !ok {
			panic(fmt.Sprintf("reference: big.Rat cannot read %q", s))
		}
		return r, false
	}
	return nil, true // object or array
}

// refIDEqual reports whether two decoded reference values are one id.
func refIDEqual(a, b any) bool {
	ra, aNum := a.(*big.Rat)
	rb, bNum := b.(*big.Rat)
	if aNum || bNum {
		return aNum && bNum && ra.Cmp(rb) == 0
	}
	return a == b
}

// respellID writes the JSON scalar raw differently with the same value, as
// another encoder might: strings re-escaped rune by rune, numbers with the
// decimal point moved, zeros added, the exponent re-spelled.
func respellID(raw []byte, rng *rand.Rand) []byte {
	v, _ := refIDValue(raw)
	switch x := v.(type) {
	case string:
		return respellString(x, rng)
	case *big.Rat:
		return respellNumber(string(raw), rng)
	}
	return raw
}

func respellString(s string, rng *rand.Rand) []byte {
	out := []byte{'"'}
	short := map[rune]string{'"': `\"`, '\\': `\\`, '/': `\/`, '\b': `\b`, '\f': `\f`, '\n': `\n`, '\r': `\r`, '\t': `\t`}
	hex := func(r rune) string {
		h := fmt.Sprintf(`\u%04x`, r)
		if rng.IntN(2) == 0 {
			h = `\u` + strings.ToUpper(h[2:])
		}
		return h
	}
	for _, r := range s {
		must := r < 0x20 || r == '"' || r == '\\'
		switch choice := rng.IntN(3); {
		case choice == 0 && !must:
			out = utf8.AppendRune(out, r)
		case choice == 1 && short[r] != "":
			out = append(out, short[r]...)
		case r > 0xFFFF:
			r1, r2 := utf16Pair(r)
			out = append(out, hex(r1)+hex(r2)...)
		default:
			out = append(out, hex(r)...)
		}
	}
	return append(out, '"')
}

func utf16Pair(r rune) (rune, rune) {
	r -= 0x10000
	return 0xD800 + (r>>10)&0x3FF, 0xDC00 + r&0x3FF
}

func respellNumber(s string, rng *rand.Rand) []byte {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	mant, expStr := s, "0"
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		mant, expStr = s[:i], s[i+1:]
	}
	exp, _ := new(big.Int).SetString(strings.TrimPrefix(expStr, "+"), 10)
	digits := mant
	if i := strings.IndexByte(mant, '.'); i >= 0 {
		digits = mant[:i] + mant[i+1:]
		exp.Sub(exp, big.NewInt(int64(len(mant)-i-1)))
	}
	// value = digits × 10^exp; add trailing zeros, then place the point.
	z := rng.IntN(4)
	digits += strings.Repeat("0", z)
	exp.Sub(exp, big.NewInt(int64(z)))
	p := rng.IntN(len(digits) + 1)
	intPart, frac := strings.TrimLeft(digits[:p], "0"), digits[p:]
	if intPart == "" {
		intPart = "0"
	}
	exp.Add(exp, big.NewInt(int64(len(frac))))
	out := ""
	if neg || (strings.Trim(digits, "0") == "" && rng.IntN(2) == 0) {
		out = "-"
	}
	out += intPart
	if frac != "" {
		out += "." + frac
	}
	if exp.Sign() != 0 || rng.IntN(2) == 0 {
		out += [...]string{"e", "E"}[rng.IntN(2)]
		e := exp.String()
		if exp.Sign() >= 0 && rng.IntN(2) == 0 {
			e = "+" + e
		}
		if rng.IntN(3) == 0 {
			e = strings.Replace(e, strings.TrimLeft(e, "+-"), "00"+strings.TrimLeft(e, "+-"), 1)
		}
		out += e
	}
	return []byte(out)
}

var idSeeds = [][2]string{
	{`"a/1"`, `"a\/1"`},
	{`"é-1"`, `"\u00e9-1"`},
	{`"😀"`, `"\ud83d\ude00"`},
	{`"1"`, `1`},
	{`1.50e3`, `1500.0`},
	{`12345678901234567890123`, `12345678901234567890124`},
	{`-0`, `0`},
	{`0.1`, `1e-1`},
	{`true`, `false`},
	{`null`, `""`},
	{`"\ud800"`, `"\ufffd"`},
	{`1e64`, `1e63`},
	{`{"a":1}`, `[1]`},
	{`0e10000`, `0`},
}

// FuzzCanonicalID checks that AppendIDKey gives equal keys exactly to equal
// values: for two arbitrary inputs against the encoding/json + math/big
// reference, and for an input against a re-spelling of it.
func FuzzCanonicalID(f *testing.F) {
	for i, s := range idSeeds {
		f.Add([]byte(s[0]), []byte(s[1]), uint64(i))
	}
	f.Fuzz(func(t *testing.T, a, b []byte, seed uint64) {
		ka, okA := AppendIDKey(nil, a)
		kb, okB := AppendIDKey(nil, b)
		va, skipA := refIDValue(a)
		vb, skipB := refIDValue(b)
		for _, c := range []struct {
			raw      []byte
			ok, skip bool
		}{{a, okA, skipA}, {b, okB, skipB}} {
			if !c.skip && !c.ok {
				t.Fatalf("no key for the scalar %q", c.raw)
			}
		}
		if skipA || skipB {
			return
		}
		if eq, keq := refIDEqual(va, vb), bytes.Equal(ka, kb); eq != keq {
			t.Fatalf("%q and %q: values equal %v, keys equal %v (%q, %q)", a, b, eq, keq, ka, kb)
		}
		rng := rand.New(rand.NewPCG(seed, seed>>1|1))
		r := respellID(a, rng)
		vr, skipR := refIDValue(r)
		if skipR {
			return // the re-spelled exponent left the reference's range
		}
		if !refIDEqual(va, vr) {
			t.Fatalf("respelling %q as %q changed its value (test bug)", a, r)
		}
		if kr, ok := AppendIDKey(nil, r); !ok || !bytes.Equal(ka, kr) {
			t.Fatalf("%q and its respelling %q: keys %q and %q", a, r, ka, kr)
		}
	})
}
