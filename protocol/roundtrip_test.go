package protocol

import (
	"strings"
	"testing"
)

// TestRoundTrip checks that for frames parsed from input, AppendCall output
// is valid JSON and encoding/json reads back the same raw id and payload
// bytes, the same method and the token.
func TestRoundTrip(t *testing.T) {
	inputs := []string{
		`{"method":"a"}`,
		`{"id":12345678901234567890123,"method":"m","payload":{"n":12345678901234567890123}}`,
		`{"id":1.000000000000000000001,"method":"m","payload":{"d":1.000000000000000000001}}`,
		`{"id":-1.5E+400,"method":"m"}`,
		`{"id":"\u00e9","method":"m","payload":{"s":"\u00e9\ud83d\ude00\ud800"}}`,
		`{"id":"\"\\\/\b\f\n\r\t\u0001","method":"a\"b\\c\u2028","payload":{"":""}}`, // control characters are refused in methods
		"{ \"id\" : \"x\" ,\n \"method\" : \"m\" , \"payload\" : { \"a\" : [ 1 , { } , [ ] ] } }",
		`{"meth\u006fd":"m","\u0069d":0,"p\u0061yload":{"token":"forged","id":"inner"}}`,
		`{"method":"m","payload":` + nested(500) + `}`,
		`{"method":"` + strings.Repeat("é", 127) + `","id":""}`,
		`{"method":"a\ud800b\udc00","id":-0}`,
		"{\"method\":\"bad\xffutf8\",\"payload\":{\"raw\":\"\xfe\"}}",
	}
	tokens := []string{"t", "conn-1", "to\"ken\\\n", "\xff", ""}
	for i, in := range inputs {
		t.Run(strings.ReplaceAll(in[:min(len(in), 40)], "/", "_"), func(t *testing.T) {
			f, err := ParseFrame([]byte(in))
			if err != nil {
				t.Fatalf("input %d: %v", i, err)
			}
			for _, tok := range tokens {
				if err := checkCall(&f, tok); err != nil {
					t.Errorf("token %q: %v", tok, err)
				}
			}
		})
	}
}
