package wsframe

import (
	"bytes"
	"errors"
	"testing"
)

func TestParseHeader(t *testing.T) {
	key := []byte{1, 2, 3, 4}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	tests := []struct {
		name string
		in   []byte
		want Header
		n    int
		err  error
	}{
		{"empty", nil, Header{}, 0, nil},
		{"one byte", []byte{0x81}, Header{}, 0, nil},
		{"no mask key yet", []byte{0x81, 0x85, 1, 2}, Header{}, 0, nil},
		{"text, 5 bytes", cat([]byte{0x81, 0x85}, key), Header{Fin: true, Op: OpText, Mask: [4]byte{1, 2, 3, 4}, Length: 5}, 6, nil},
		{"first fragment", cat([]byte{0x01, 0x80}, key), Header{Op: OpText, Mask: [4]byte{1, 2, 3, 4}}, 6, nil},
		{"16-bit length", cat([]byte{0x82, 0xfe, 0x01, 0x00}, key), Header{Fin: true, Op: OpBinary, Mask: [4]byte{1, 2, 3, 4}, Length: 256}, 8, nil},
		{"16-bit length, partial", []byte{0x82, 0xfe, 0x01}, Header{}, 0, nil},
		{"64-bit length", cat([]byte{0x80, 0xff, 0, 0, 0, 0, 0, 1, 0, 0}, key), Header{Fin: true, Mask: [4]byte{1, 2, 3, 4}, Length: 65536}, 14, nil},
		{"64-bit length, top bit", cat([]byte{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0}, key), Header{}, 0, ErrLength},
		{"ping", cat([]byte{0x89, 0x80 | 125}, key), Header{Fin: true, Op: OpPing, Mask: [4]byte{1, 2, 3, 4}, Length: 125}, 6, nil},
		{"ping of 126 bytes", cat([]byte{0x89, 0xfe, 0, 126}, key), Header{}, 0, ErrControlTooLong},
		{"fragmented ping", cat([]byte{0x09, 0x80}, key), Header{}, 0, ErrFragmentedControl},
		{"rsv1", []byte{0xc1, 0x80}, Header{}, 0, ErrReservedBits},
		{"rsv3", []byte{0x91, 0x80}, Header{}, 0, ErrReservedBits},
		{"opcode 3", []byte{0x83, 0x80}, Header{}, 0, ErrOpcode},
		{"opcode 0xb", []byte{0x8b, 0x80}, Header{}, 0, ErrOpcode},
		{"not masked", []byte{0x81, 0x05}, Header{}, 0, ErrNotMasked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, n, err := ParseHeader(tt.in)
			if !errors.Is(err, tt.err) || n != tt.n || h != tt.want {
				t.Fatalf("ParseHeader(% x) = %+v, %d, %v; want %+v, %d, %v", tt.in, h, n, err, tt.want, tt.n, tt.err)
			}
		})
	}
}

func TestUnmask(t *testing.T) {
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	for _, size := range []int{0, 1, 7, 8, 9, 31, 100} {
		for _, pos := range []int{0, 1, 3, 5} {
			p := make([]byte, size)
			for i := range p {
				p[i] = byte(i * 7)
			}
			want := bytes.Clone(p)
			for i := range want {
				want[i] ^= key[(pos+i)&3]
			}
			Unmask(p, key, pos)
			if !bytes.Equal(p, want) {
				t.Fatalf("size %d pos %d: % x, want % x", size, pos, p, want)
			}
		}
	}
}

func TestParseClose(t *testing.T) {
	tests := []struct {
		name   string
		in     []byte
		code   int
		reason string
		err    error
	}{
		{"empty", nil, CloseNoStatus, "", nil},
		{"one byte", []byte{0x03}, 0, "", ErrCloseLength},
		{"1000", []byte{0x03, 0xe8}, 1000, "", nil},
		{"1000 with reason", []byte{0x03, 0xe8, 'o', 'k'}, 1000, "ok", nil},
		{"1013", []byte{0x03, 0xf5}, 1013, "", nil},
		{"3000", []byte{0x0b, 0xb8}, 3000, "", nil},
		{"4999", []byte{0x13, 0x87}, 4999, "", nil},
		{"0", []byte{0, 0}, 0, "", ErrCloseCode},
		{"999", []byte{0x03, 0xe7}, 0, "", ErrCloseCode},
		{"1004", []byte{0x03, 0xec}, 0, "", ErrCloseCode},
		{"1005", []byte{0x03, 0xed}, 0, "", ErrCloseCode},
		{"1006", []byte{0x03, 0xee}, 0, "", ErrCloseCode},
		{"1014", []byte{0x03, 0xf6}, 0, "", ErrCloseCode},
		{"1016", []byte{0x03, 0xf8}, 0, "", ErrCloseCode},
		{"2999", []byte{0x0b, 0xb7}, 0, "", ErrCloseCode},
		{"5000", []byte{0x13, 0x88}, 0, "", ErrCloseCode},
		{"invalid UTF-8 reason", []byte{0x03, 0xe8, 0xce, 0xba, 0xe1, 0xbd}, 0, "", ErrCloseReason},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, reason, err := ParseClose(tt.in)
			if code != tt.code || string(reason) != tt.reason || !errors.Is(err, tt.err) {
				t.Fatalf("ParseClose(% x) = %d, %q, %v; want %d, %q, %v", tt.in, code, reason, err, tt.code, tt.reason, tt.err)
			}
		})
	}
}

func TestAppendHeader(t *testing.T) {
	tests := []struct {
		op   byte
		n    int
		want []byte
	}{
		{OpText, 0, []byte{0x81, 0}},
		{OpText, 125, []byte{0x81, 125}},
		{OpText, 126, []byte{0x81, 126, 0, 126}},
		{OpText, 1000, []byte{0x81, 126, 0x03, 0xe8}},
		{OpText, 65535, []byte{0x81, 126, 0xff, 0xff}},
		{OpText, 65536, []byte{0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
		{OpPong, 3, []byte{0x8a, 3}},
		{OpClose, 2, []byte{0x88, 2}},
	}
	for _, tt := range tests {
		if got := AppendHeader(nil, tt.op, tt.n); !bytes.Equal(got, tt.want) {
			t.Errorf("header of op %x, %d bytes: % x, want % x", tt.op, tt.n, got, tt.want)
		}
	}
}

// A client frame appended is parsed back, with its payload.
func TestAppendClientFrame(t *testing.T) {
	key := [4]byte{9, 8, 7, 6}
	for _, n := range []int{0, 5, 125, 126, 65535, 65536} {
		payload := bytes.Repeat([]byte("ab"), n)[:n]
		f := AppendClientFrame([]byte("prefix"), 0x82, key, payload)[len("prefix"):]
		h, hn, err := ParseHeader(f)
		if err != nil || hn == 0 || h.Op != OpBinary || !h.Fin || h.Mask != key || h.Length != int64(n) {
			t.Fatalf("%d bytes: %+v, %d, %v", n, h, hn, err)
		}
		p := f[hn:]
		Unmask(p, key, 0)
		if !bytes.Equal(p, payload) {
			t.Fatalf("%d bytes: payload differs", n)
		}
	}
}

func TestAppendClosePayload(t *testing.T) {
	long := string(bytes.Repeat([]byte("é"), 100)) // 200 bytes
	tests := []struct {
		code int
		text string
		want int // payload length
	}{
		{CloseNoStatus, "ignored", 0},
		{1000, "", 2},
		{4001, "bye", 5},
		{1000, long, 2 + 122}, // 123 bytes would split a rune
	}
	for _, tt := range tests {
		p := AppendClosePayload(nil, tt.code, tt.text)
		if len(p) != tt.want {
			t.Errorf("code %d, %d bytes of text: payload of %d bytes, want %d", tt.code, len(tt.text), len(p), tt.want)
		}
		if len(p) > 0 {
			if code, _, err := ParseClose(p); err != nil || code != tt.code {
				t.Errorf("code %d: ParseClose gives %d, %v", tt.code, code, err)
			}
		}
	}
}

func BenchmarkUnmask(b *testing.B) {
	p := make([]byte, 512)
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		Unmask(p, [4]byte{1, 2, 3, 4}, 0)
	}
}
