package gateway

import (
	"io"
	"testing"
)

// BenchmarkSendSmall is the delivery of one small event to an idle
// connection whose client reads everything: what fanout costs the node per
// event on the gateway's side (one inline write).
func BenchmarkSendSmall(b *testing.B) {
	ts := newTestServer(b, nil)
	client := ts.dial(b, "bench")
	read := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, client.NetConn()); close(read) }()
	c := serverConn(b, ts, "bench")
	msg := []byte(`{"type":"event","event":"bench","payload":{"n":12345}}`)
	b.ReportAllocs()
	for b.Loop() {
		if !c.Send(msg) {
			b.Fatal("not accepted")
		}
	}
	b.StopTimer()
	client.Close()
	<-read
}
