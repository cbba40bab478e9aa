package gateway

import (
	"bytes"
	"net"
	"strings"
	"testing"
	"time"
)

// recordConn is a net.Conn that records writes and write deadlines, in order.
type recordConn struct {
	net.Conn
	ops []string
}

func (c *recordConn) Write(p []byte) (int, error) {
	c.ops = append(c.ops, "write "+string(bytes.Clone(p)))
	return len(p), nil
}

func (c *recordConn) SetWriteDeadline(t time.Time) error {
	c.ops = append(c.ops, "deadline "+t.Format("15:04:05"))
	return nil
}

func TestBatchConn(t *testing.T) {
	t1 := time.Date(2026, 1, 1, 10, 0, 1, 0, time.UTC)
	t2 := t1.Add(time.Second)
	big := strings.Repeat("x", maxBatchBytes)
	tests := []struct {
		name string
		run  func(b *batchConn)
		want []string
	}{
		{"not holding: writes and deadlines pass through", func(b *batchConn) {
			b.SetWriteDeadline(t1)
			b.Write([]byte("a"))
			b.Write([]byte("b"))
		}, []string{"deadline 10:00:01", "write a", "write b"}},
		{"holding: one write at release, under the last deadline", func(b *batchConn) {
			b.hold()
			b.SetWriteDeadline(t1)
			b.Write([]byte("a"))
			b.SetWriteDeadline(t2)
			b.Write([]byte("b"))
			b.release()
			b.Write([]byte("c"))
		}, []string{"deadline 10:00:02", "write ab", "write c"}},
		{"nothing collected: no write", func(b *batchConn) {
			b.hold()
			b.release()
		}, nil},
		{"a batch beyond maxBatchBytes writes what it collected first", func(b *batchConn) {
			b.hold()
			b.SetWriteDeadline(t1)
			b.Write([]byte("a"))
			b.Write([]byte(big))
			b.release()
		}, []string{"deadline 10:00:01", "write a", "deadline 10:00:01", "write " + big}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := &recordConn{}
			b := &batchConn{Conn: rc}
			tt.run(b)
			if len(rc.ops) != len(tt.want) {
				t.Fatalf("%d socket operations %.40q, want %d %.40q", len(rc.ops), rc.ops, len(tt.want), tt.want)
			}
			for i := range rc.ops {
				if rc.ops[i] != tt.want[i] {
					t.Errorf("operation %d: %.40q, want %.40q", i, rc.ops[i], tt.want[i])
				}
			}
			if b.buf != nil {
				t.Error("the connection still holds a buffer after release")
			}
		})
	}
}
