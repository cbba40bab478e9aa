package gateway

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/piped-dev/piped/config"
)

// gorillaReader finds gorilla's read buffer: without it no connection gives
// up its read goroutine.
func TestGorillaReader(t *testing.T) {
	ts := newTestServer(t, nil)
	c := ts.dial(t, "tok")
	waitFor(t, func() bool { return ts.hub.Len() == 1 })
	var conn *Conn
	ts.hub.each(func(x *Conn) { conn = x })
	if br := gorillaReader(conn.ws); br == nil || br.Size() < 125 {
		t.Fatalf("gorillaReader found no read buffer in gorilla's Conn")
	}
	c.Close()
	waitFor(t, func() bool { return ts.hub.Len() == 0 })
}

// readGoroutines counts goroutines with a reader of this package on their stack.
func readGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "gateway.(*Conn).readOne") || strings.Contains(g, "gateway.(*Conn).serve") {
			n++
		}
	}
	return n
}

// On Linux idle connections park no reader goroutine, and still answer
// calls, including several frames that arrive in one TCP segment (gorilla
// then holds the following ones in its buffer).
func TestIdleConnectionsParkNoReader(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the poller is Linux-only")
	}
	ts := newTestServer(t, nil)
	var conns []*websocket.Conn
	for range 20 {
		conns = append(conns, ts.dial(t, "tok"))
	}
	waitFor(t, func() bool { return ts.hub.Len() == 20 })
	waitFor(t, func() bool { return readGoroutines() == 0 })
	for i, c := range conns {
		// Three frames in one write: one segment for the poller.
		var w strings.Builder
		for j := range 3 {
			w.Write(maskedText(`{"id":` + string(rune('1'+j)) + `,"method":"m` + string(rune('a'+i%26)) + `"}`))
		}
		if _, err := c.NetConn().Write([]byte(w.String())); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		for j := range 3 {
			if _, msg, err := c.ReadMessage(); err != nil {
				t.Fatalf("conn %d answer %d: %v", i, j, err)
			} else if !strings.Contains(string(msg), `"result"`) {
				t.Fatalf("conn %d answer %d: %s", i, j, msg)
			}
		}
	}
	waitFor(t, func() bool { return readGoroutines() == 0 })
	for _, c := range conns {
		c.Close()
	}
	waitFor(t, func() bool { return ts.hub.Len() == 0 })
}

// maskedText is one client text frame (masked, as clients must) of payload.
func maskedText(payload string) []byte {
	key := [4]byte{1, 2, 3, 4}
	f := []byte{0x81, 0x80 | byte(len(payload))}
	f = append(f, key[:]...)
	for i := range len(payload) {
		f = append(f, payload[i]^key[i%4])
	}
	return f
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
