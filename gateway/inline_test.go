//go:build linux

package gateway

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/piped-dev/piped/config"
	"github.com/piped-dev/piped/internal/wsframe"
)

// A small message to an idle connection is written by the sender itself:
// no writer goroutine is started, and the client reads it whole.
func TestSmallMessageWrittenInline(t *testing.T) {
	ts := newTestServer(t, nil)
	client := ts.dial(t, "inline")
	c := serverConn(t, ts, "inline")
	waitFor(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.fd >= 0 })
	for i, msg := range []string{`{"a":1}`, strings.Repeat("y", 126), strings.Repeat("z", maxInlineFrame-wsframe.MaxServerHeader)} {
		c.mu.Lock()
		ok := c.sendLocked([]byte(msg))
		writing := c.out.writing
		c.mu.Unlock()
		if !ok || writing {
			t.Fatalf("message %d: accepted %v, writer started %v; want written inline", i, ok, writing)
		}
		if got := read(t, client); got != msg {
			t.Fatalf("message %d: client read %.40q, want %.40q", i, got, msg)
		}
	}
}

// While the client does not read, the socket's buffers fill (about 20 MB
// are sent): inline writes
// leave tails for the writer, messages queue behind them, the client's
// pings are answered in between; once it reads, every message arrives
// whole and in order.
func TestInlineTailsKeepOrder(t *testing.T) {
	ts := newTestServer(t, func(ws *config.WS) { ws.SendQueueBytes = 64 << 20 })
	client := ts.dial(t, "order")
	c := serverConn(t, ts, "order")
	waitFor(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.fd >= 0 })
	pongs := 0
	client.SetPongHandler(func(string) error { pongs++; return nil })
	const n = 20000
	start := time.Now()
	tails := 0
	for i := range n {
		size := 200 + i%1800
		if i > n/2 && i%997 == 0 {
			size = 5000 // through the writer goroutine
		}
		msg := fmt.Appendf(nil, "%06d%s", i, strings.Repeat("m", size))
		c.mu.Lock()
		c.sendLocked(msg)
		if c.out.tail != nil {
			tails++
		}
		c.mu.Unlock()
		if i > n/2 && i%2000 == 0 {
			if err := client.WriteControl(websocket.PingMessage, []byte("p"), time.Now().Add(time.Second)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if tails == 0 {
		t.Fatal("the socket took every write at once; the test needs a full buffer to leave tails")
	}
	t.Logf("sent in %v, %d tails", time.Since(start), tails)
	for i := range n {
		_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, b, err := client.ReadMessage()
		if err != nil {
			t.Fatalf("message %d after %v: %v", i, time.Since(start), err)
		}
		got := string(b)
		if want := fmt.Sprintf("%06d", i); !strings.HasPrefix(got, want) {
			t.Fatalf("message %d starts %.10q", i, got)
		}
	}
	if pongs == 0 {
		t.Error("no pong came back for the client's pings")
	}
}
