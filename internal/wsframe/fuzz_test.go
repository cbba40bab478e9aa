package wsframe

import (
	"bytes"
	"testing"
	"unicode/utf8"
)

// FuzzParseHeader feeds arbitrary bytes to the parsers: they never panic,
// never claim more bytes than they were given, and what they accept obeys
// RFC 6455 (control frames final and at most 125 bytes, valid close codes,
// UTF-8 reasons); unmasking twice gives the bytes back.
func FuzzParseHeader(f *testing.F) {
	f.Add([]byte{0x81, 0x85, 1, 2, 3, 4, 'h', 'e', 'l', 'l', 'o'})
	f.Add([]byte{0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8})
	f.Add([]byte{0x02, 0xfe, 0x01, 0x00, 9, 9, 9, 9})
	f.Add([]byte{0x80, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := ParseHeader(b)
		switch {
		case err != nil:
			if n != 0 {
				t.Fatalf("error %v with n = %d", err, n)
			}
		case n == 0:
			if len(b) >= MaxClientHeader {
				t.Fatalf("%d bytes and no header", len(b))
			}
		default:
			if n > len(b) || (n != 6 && n != 8 && n != 14) {
				t.Fatalf("header of %d bytes from %d", n, len(b))
			}
			if h.IsControl() && (!h.Fin || h.Length > MaxControlPayload) {
				t.Fatalf("control frame accepted: %+v", h)
			}
			if h.Length < 0 {
				t.Fatalf("negative length %d", h.Length)
			}
		}
		if code, reason, err := ParseClose(b); err == nil && len(b) >= 2 {
			if !validCloseCode(code) || !utf8.Valid(reason) {
				t.Fatalf("close %d %q accepted", code, reason)
			}
		}
		p := bytes.Clone(b)
		key := [4]byte{0xde, 0xad, 0xbe, 0xef}
		Unmask(p, key, 3)
		Unmask(p, key, 3)
		if !bytes.Equal(p, b) {
			t.Fatal("unmasking twice changed the bytes")
		}
	})
}
