package routing

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"testing"
)

// recordConn is a net.Conn that records each Write, or fails them with err.
type recordConn struct {
	net.Conn
	writes [][]byte
	err    error
	closed bool
}

func (c *recordConn) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

func (c *recordConn) Close() error { c.closed = true; return nil }

func TestBatchConn(t *testing.T) {
	big := strings.Repeat("x", maxBurstBytes)
	tests := []struct {
		name string
		run  func(b *batchConn)
		want []string // the socket's writes
	}{
		{"not held: each write passes through", func(b *batchConn) {
			b.Write([]byte("a"))
			b.Write([]byte("b"))
		}, []string{"a", "b"}},
		{"held: one write at release", func(b *batchConn) {
			b.hold()
			b.Write([]byte("a"))
			b.Write([]byte("b"))
			b.release()
			b.Write([]byte("c"))
		}, []string{"ab", "c"}},
		{"release with nothing held writes nothing", func(b *batchConn) {
			b.hold()
			b.release()
		}, nil},
		{"a burst that would pass maxBurstBytes writes what it held first", func(b *batchConn) {
			b.hold()
			b.Write([]byte("a"))
			b.Write([]byte(big[1:]))
			b.Write([]byte("b"))
			b.release()
		}, []string{"a" + big[1:], "b"}},
		{"a write of maxBurstBytes passes through, in order", func(b *batchConn) {
			b.hold()
			b.Write([]byte("a"))
			b.Write([]byte(big))
			b.release()
		}, []string{"a", big}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := &recordConn{}
			b := &batchConn{Conn: rc}
			tt.run(b)
			var got []string
			for _, w := range rc.writes {
				got = append(got, string(w))
			}
			if len(got) != len(tt.want) {
				t.Fatalf("%d writes, want %d", len(got), len(tt.want))
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("write %d: %d bytes %.10q…, want %d bytes %.10q…", i, len(got[i]), got[i], len(tt.want[i]), tt.want[i])
				}
			}
		})
	}
}

// A failed write at release is sticky and closes the socket, so the
// library sees its connection end although it counted the bytes written.
func TestBatchConnFailedReleaseIsSticky(t *testing.T) {
	broken := errors.New("broken pipe")
	rc := &recordConn{}
	b := &batchConn{Conn: rc}
	b.hold()
	if n, err := b.Write([]byte("publish")); n != 7 || err != nil {
		t.Fatalf("held Write = %d, %v; want 7, nil", n, err)
	}
	rc.err = broken
	if err := b.release(); !errors.Is(err, broken) {
		t.Fatalf("release = %v, want %v", err, broken)
	}
	if !rc.closed {
		t.Error("the socket was not closed after a failed write")
	}
	rc.err = nil
	if _, err := b.Write([]byte("heartbeat")); !errors.Is(err, broken) {
		t.Errorf("Write after a failed release = %v, want %v", err, broken)
	}
	if len(rc.writes) != 0 {
		t.Errorf("%d writes reached the socket after the failure", len(rc.writes))
	}
}
