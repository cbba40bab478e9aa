package gateway

import (
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/piped-dev/piped/config"
	"github.com/piped-dev/piped/internal/wsframe"
)

// connGoroutines counts goroutines that run a connection's code: a reader
// (readReady, readLoop) or a writer (writeLoop).
func connGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "gateway.(*Conn).read") || strings.Contains(g, "gateway.(*Conn).writeLoop") ||
			strings.Contains(g, "gateway.(*Conn).serve") {
			n++
		}
	}
	return n
}

// On Linux an idle connection holds no goroutine in the steady state:
// through several ping intervals, with clients that answer every ping
// (each pong wakes the poller, which starts a reader that must hand the
// socket back), and after calls, including several frames that arrive in
// one TCP segment. Without the poller, or with a reader that blocks for the
// next data frame after a pong, every connection would hold one.
func TestIdleConnectionsHoldNoGoroutine(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the poller is Linux-only")
	}
	const interval = 50 * time.Millisecond
	ts := newTestServer(t, func(ws *config.WS) { ws.PingInterval = interval; ws.PongTimeout = 20 * interval })
	var conns []*websocket.Conn
	var pings atomic.Int64
	for range 20 {
		c := ts.dial(t, "tok")
		c.SetPingHandler(func(data string) error {
			pings.Add(1)
			return c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		})
		conns = append(conns, c)
		go func() { // answers pings until the connection closes
			for {
				if _, _, err := c.NextReader(); err != nil {
					return
				}
			}
		}()
	}
	waitFor(t, func() bool { return ts.hub.Len() == 20 })
	waitFor(t, func() bool { return pings.Load() >= 20*4 }) // every connection pinged and ponged, several times
	assertNoConnGoroutines(t)

	// Calls, three frames in one write: one segment for the poller.
	ts2 := newTestServer(t, nil)
	c := ts2.dial(t, "calls")
	var w strings.Builder
	for j := range 3 {
		w.Write(maskedText(`{"id":` + string(rune('1'+j)) + `,"method":"m"}`))
	}
	if _, err := c.NetConn().Write([]byte(w.String())); err != nil {
		t.Fatal(err)
	}
	for j := range 3 {
		if msg := read(t, c); !strings.Contains(msg, `"result"`) {
			t.Fatalf("answer %d: %s", j, msg)
		}
	}
	assertNoConnGoroutines(t)
}

// assertNoConnGoroutines waits up to a second for no connection goroutine
// to run (readers and writers end within microseconds of their work).
func assertNoConnGoroutines(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for n := connGoroutines(); n != 0; n = connGoroutines() {
		if time.Now().After(deadline) {
			t.Fatalf("%d connection goroutines still run while every connection is idle", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// maskedText is one client text frame (masked, as clients must) of payload.
func maskedText(payload string) []byte {
	return maskedFrame(0x81, []byte(payload))
}

// maskedFrame is one client frame with first byte b0 (FIN, RSV, opcode) and
// payload, masked.
func maskedFrame(b0 byte, payload []byte) []byte {
	return wsframe.AppendClientFrame(nil, b0, [4]byte{1, 2, 3, 4}, payload)
}

// A client that sends nothing, not even a pong, is closed after
// ws.pong_timeout with 1001 pong_timeout, though no reader is parked on
// its socket to see a read deadline pass.
func TestSilentClientTimesOut(t *testing.T) {
	ts := newTestServer(t, func(ws *config.WS) {
		ws.PingInterval = 20 * time.Millisecond
		ws.PongTimeout = 100 * time.Millisecond
	})
	c := ts.dial(t, "tok")
	c.SetPingHandler(func(string) error { return nil }) // no pong
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			continue
		}
		if !websocket.IsCloseError(err, DisconnectTimeout.Code) {
			t.Fatalf("read ended with %v, want close %d", err, DisconnectTimeout.Code)
		}
		break
	}
	c.Close()
	waitFor(t, func() bool { return ts.hub.Len() == 0 })
}
