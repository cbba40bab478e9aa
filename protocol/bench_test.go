package protocol

import "testing"

// Typical small messages (about 100 bytes).
var (
	benchFrame   = []byte(`{"id":17,"method":"user.get","payload":{"userId":"u-123","fields":["name","email"]}}`)
	benchInbound = []byte(`{"type":"response","id":17,"token":"conn-0123456789","payload":{"user":{"id":"u-123","name":"Ann"}}}`)
)

func BenchmarkParseFrame(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchFrame)))
	for b.Loop() {
		if _, err := ParseFrame(benchFrame); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendCall(b *testing.B) {
	f, err := ParseFrame(benchFrame)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendCall(buf[:0], &f, "conn-0123456789")
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkParseInbound(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchInbound)))
	for b.Loop() {
		if _, err := ParseInbound(benchInbound); err != nil {
			b.Fatal(err)
		}
	}
}
