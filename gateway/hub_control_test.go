package gateway

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// connsOf returns the registered connections of token.
func connsOf(h *Hub, token string) []*Conn {
	s := h.shard(token)
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]*Conn(nil), s.conns[token]...)
}

// closeFrame reads until the close frame and returns its code and text.
func closeFrame(t *testing.T, c *websocket.Conn) (int, string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			if ce, ok := err.(*websocket.CloseError); ok {
				return ce.Code, ce.Text
			}
			t.Fatalf("no close frame: %v", err)
		}
	}
}

// stillOpen checks that c is open: a ping is answered by the pong event.
func stillOpen(t *testing.T, c *websocket.Conn) {
	t.Helper()
	if err := c.WriteMessage(websocket.TextMessage, []byte(`{"method":"ping"}`)); err != nil {
		t.Fatalf("write: %v", err)
	}
	if got := read(t, c); got != `{"type":"event","event":"pong"}` {
		t.Fatalf("open connection got %s, want the pong", got)
	}
}

func TestHubDisconnectToken(t *testing.T) {
	long := strings.Repeat("é", 70) // 140 bytes: cut to 122, not inside a character
	tests := []struct {
		name     string
		code     int
		reason   string
		byID     bool // only the token's first connection
		wantCode int
		wantText string
	}{
		{name: "defaults", wantCode: 4001, wantText: "disconnected"},
		{name: "code and reason", code: 4321, reason: "banned", wantCode: 4321, wantText: "banned"},
		{name: "lowest and highest codes", code: 4000, reason: "x", wantCode: 4000, wantText: "x"},
		{name: "code below the range", code: 1000, wantCode: 4001, wantText: "disconnected"},
		{name: "code above the range", code: 5000, reason: "r", wantCode: 4001, wantText: "r"},
		{name: "long reason cut at a character", code: 4999, reason: long, wantCode: 4999, wantText: long[:122]},
		{name: "invalid UTF-8 replaced", reason: "a\xffb", wantCode: 4001, wantText: "a\uFFFDb"},
		{name: "by connection id", byID: true, code: 4002, reason: "one", wantCode: 4002, wantText: "one"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, nil)
			// Dialled one after the other, first is conns[0].
			first := ts.dial(t, "t1")
			waitFor(t, func() bool { return ts.hub.Len() == 1 })
			second, other := ts.dial(t, "t1"), ts.dial(t, "t2")
			waitFor(t, func() bool { return ts.hub.Len() == 3 })
			conns := connsOf(ts.hub, "t1")

			// Something queued before the disconnect is written before the close.
			ts.hub.Broadcast("t1", []byte(`{"before":1}`))
			connection, want := "", 2
			if tc.byID {
				connection, want = conns[0].ID(), 1
			}
			if n := ts.hub.DisconnectToken("t1", connection, tc.code, tc.reason); n != want {
				t.Fatalf("DisconnectToken closed %d, want %d", n, want)
			}
			// A second disconnect finds them closing: the first reason stays.
			if n := ts.hub.DisconnectToken("t1", connection, 4444, "again"); n != 0 {
				t.Fatalf("second DisconnectToken closed %d, want 0", n)
			}
			closed := []*websocket.Conn{first, second}
			if tc.byID {
				closed = closed[:1]
			}
			for _, c := range closed {
				if got := read(t, c); got != `{"before":1}` {
					t.Fatalf("got %s before the close, want the queued message", got)
				}
				code, text := closeFrame(t, c)
				if code != tc.wantCode || text != tc.wantText {
					t.Errorf("close %d %q, want %d %q", code, text, tc.wantCode, tc.wantText)
				}
				if len(text) > maxCloseText || !utf8.ValidString(text) {
					t.Errorf("close text %q: %d bytes or invalid UTF-8", text, len(text))
				}
			}
			if tc.byID {
				if got := read(t, second); got != `{"before":1}` {
					t.Fatalf("the other connection got %s", got)
				}
				stillOpen(t, second)
			}
			stillOpen(t, other)
			waitFor(t, func() bool { return ts.hub.Len() == 3-want })
			m := ts.srv.metrics.Disconnects
			if got := testutil.ToFloat64(m.WithLabelValues("disconnected")); got != float64(want) {
				t.Errorf(`piped_disconnects_total{reason="disconnected"} = %v, want %d`, got, want)
			}
			if got := testutil.CollectAndCount(m); got != 1 {
				t.Errorf("piped_disconnects_total has %d label values, want only disconnected", got)
			}
		})
	}
}

func TestHubDisconnectTokenMisses(t *testing.T) {
	ts := newTestServer(t, nil)
	c := ts.dial(t, "t1")
	waitFor(t, func() bool { return ts.hub.Len() == 1 })
	id := connsOf(ts.hub, "t1")[0].ID()
	for _, tc := range []struct{ token, connection string }{
		{"nobody", ""},
		{"t1", "n.0000000000000000"},
		{"t2", id}, // the id of another token's connection
	} {
		if n := ts.hub.DisconnectToken(tc.token, tc.connection, 0, ""); n != 0 {
			t.Errorf("DisconnectToken(%q, %q) closed %d, want 0", tc.token, tc.connection, n)
		}
	}
	stillOpen(t, c)
}

func TestHubSendTo(t *testing.T) {
	ts := newTestServer(t, nil)
	a, b := ts.dial(t, "t1"), ts.dial(t, "t1")
	waitFor(t, func() bool { return ts.hub.Len() == 2 })
	for _, c := range connsOf(ts.hub, "t1") {
		if n := ts.hub.SendTo("t1", c.ID(), []byte(`"`+c.ID()+`"`)); n != 1 {
			t.Fatalf("SendTo reached %d", n)
		}
	}
	got := map[string]bool{read(t, a): true, read(t, b): true}
	if len(got) != 2 {
		t.Fatalf("both connections got the same message: %v", got)
	}
	if n := ts.hub.SendTo("t1", "n.0000000000000000", []byte(`{}`)); n != 0 {
		t.Fatalf("SendTo an unknown id reached %d", n)
	}
	if n := ts.hub.SendTo("t2", connsOf(ts.hub, "t1")[0].ID(), []byte(`{}`)); n != 0 {
		t.Fatalf("SendTo another token's connection reached %d", n)
	}
	stillOpen(t, a)
	stillOpen(t, b)
}

func TestHubBroadcastAll(t *testing.T) {
	ts := newTestServer(t, nil)
	var conns []*websocket.Conn
	for i := range 20 {
		conns = append(conns, ts.dial(t, "t"+strings.Repeat("x", i%7)))
	}
	waitFor(t, func() bool { return ts.hub.Len() == len(conns) })
	msg := []byte(`{"type":"event","event":"all"}`)
	if n := ts.hub.BroadcastAll(msg); n != len(conns) {
		t.Fatalf("BroadcastAll reached %d, want %d", n, len(conns))
	}
	for _, c := range conns {
		if got := read(t, c); got != string(msg) {
			t.Fatalf("got %s", got)
		}
		stillOpen(t, c) // exactly once: the next frame is the pong
	}
}

func TestCloseText(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "disconnected"},
		{"bye", "bye"},
		{strings.Repeat("a", 123), strings.Repeat("a", 123)},
		{strings.Repeat("a", 124), strings.Repeat("a", 123)},
		{strings.Repeat("a", 122) + "é", strings.Repeat("a", 122)},
		{strings.Repeat("a", 121) + "é", strings.Repeat("a", 121) + "é"},
		{strings.Repeat("a", 120) + "😀", strings.Repeat("a", 120)},
		{"\xff", "\uFFFD"},
	} {
		if got := closeText(tc.in); got != tc.want {
			t.Errorf("closeText(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
