package gateway

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/piped-dev/piped/config"
	"github.com/piped-dev/piped/protocol"
	"github.com/piped-dev/piped/routetable"
	"github.com/piped-dev/piped/telemetry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeRouter answers every call with its method echoed, unless hold is set,
// in which case it keeps the answerers until release.
type fakeRouter struct {
	mu       sync.Mutex
	hold     bool
	held     []func()
	calls    []string
	routes   []string // the route name of each call
	traceIDs []string
	ctxs     []context.Context
}

func (r *fakeRouter) Call(ctx context.Context, token string, f *protocol.Frame, rt *routetable.Route, from protocol.Answerer) {
	id := append([]byte(nil), f.ID...)
	if f.ID == nil {
		id = nil
	}
	msg := []byte(`{"type":"result","method":"` + f.Method + `"}`)
	r.mu.Lock()
	r.calls = append(r.calls, token+" "+string(protocol.AppendCall(nil, f, token)))
	r.routes = append(r.routes, rt.Name)
	r.ctxs = append(r.ctxs, ctx)
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.traceIDs = append(r.traceIDs, sc.TraceID().String())
	}
	if r.hold {
		r.held = append(r.held, func() { from.Answer(id, msg) })
		r.mu.Unlock()
		return
	}
	r.mu.Unlock()
	from.Answer(id, msg)
}

func (r *fakeRouter) release() {
	r.mu.Lock()
	held := r.held
	r.held = nil
	r.mu.Unlock()
	for _, f := range held {
		f()
	}
}

type ready struct{ err error }

func (r ready) Ready() error { return r.err }

type testServer struct {
	*httptest.Server
	hub    *Hub
	router *fakeRouter
	srv    *Server
}

func newTestServer(t testing.TB, tweak func(*config.WS)) *testServer {
	return newTracedTestServer(t, tweak, nil)
}

func newTracedTestServer(t testing.TB, tweak func(*config.WS), tracing *telemetry.Tracing) *testServer {
	return newRoutedTestServer(t, tweak, tracing, nil)
}

// newRoutedTestServer is a test server whose calls are looked up in routes
// (nil: Options.Routes left nil).
func newRoutedTestServer(t testing.TB, tweak func(*config.WS), tracing *telemetry.Tracing, routes Routes) *testServer {
	t.Helper()
	ws := config.Defaults().WS
	if tweak != nil {
		tweak(&ws)
	}
	ts := &testServer{hub: NewHub(), router: &fakeRouter{}}
	ts.srv = New(Options{WS: ws, Routes: routes, Router: ts.router, Readiness: ready{}, Hub: ts.hub,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: telemetry.NewMetrics(), Tracing: tracing})
	ts.Server = httptest.NewServer(ts.srv.Handler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = ts.hub.Close(ctx)
		ts.Server.Close()
	})
	return ts
}

func (ts *testServer) dial(t testing.TB, token string) *websocket.Conn {
	t.Helper()
	u := "ws" + strings.TrimPrefix(ts.URL, "http") + "/api/" + token
	c, _, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// serverConn is the server's side of the only connection of token.
func serverConn(t testing.TB, ts *testServer, token string) *Conn {
	t.Helper()
	var c *Conn
	waitFor(t, func() bool {
		ts.hub.each(func(x *Conn) {
			if x.token == token {
				c = x
			}
		})
		return c != nil
	})
	return c
}

func read(t *testing.T, c *websocket.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, b, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(b)
}

func closeCode(t *testing.T, c *websocket.Conn) int {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			if ce, ok := err.(*websocket.CloseError); ok {
				return ce.Code
			}
			t.Fatalf("no close frame: %v", err)
		}
	}
}

func TestFrames(t *testing.T) {
	ts := newTestServer(t, nil)
	c := ts.dial(t, "tok")
	for _, tc := range []struct{ send, want string }{
		{`{"id":1,"method":"m","payload":{"a":1}}`, `{"type":"result","method":"m"}`},
		{`{"method":"ping"}`, `{"type":"event","event":"pong"}`},
		{`{"id":"x","method":"ping"}`, `{"type":"event","event":"pong","id":"x"}`},
		{`{"id":2}`, `{"type":"error","id":2,"error":{"code":"bad_request","message":"method is required"}}`},
		{`nope`, `{"type":"error","error":{"code":"bad_request","message":"invalid JSON"}}`},
	} {
		if err := c.WriteMessage(websocket.TextMessage, []byte(tc.send)); err != nil {
			t.Fatal(err)
		}
		if got := read(t, c); got != tc.want {
			t.Errorf("send %s: got %s, want %s", tc.send, got, tc.want)
		}
	}
	ts.router.mu.Lock()
	defer ts.router.mu.Unlock()
	if len(ts.router.calls) != 1 || ts.router.calls[0] != `tok {"id":1,"method":"m","token":"tok","payload":{"a":1}}` {
		t.Fatalf("router got %q", ts.router.calls)
	}
}

func TestHubBroadcast(t *testing.T) {
	ts := newTestServer(t, nil)
	a, b, other := ts.dial(t, "t1"), ts.dial(t, "t1"), ts.dial(t, "t2")
	waitFor(t, func() bool { return ts.hub.Len() == 3 })
	if n := ts.hub.Broadcast("t1", []byte(`{"e":1}`)); n != 2 {
		t.Fatalf("broadcast reached %d", n)
	}
	for _, c := range []*websocket.Conn{a, b} {
		if got := read(t, c); got != `{"e":1}` {
			t.Fatalf("got %s", got)
		}
	}
	_ = other.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, _, err := other.ReadMessage(); err == nil {
		t.Fatal("other token got the event")
	}
	a.Close()
	waitFor(t, func() bool { return ts.hub.Len() == 2 })
}

// A client that does not read is closed with 4008 once its queue is full;
// others are unaffected and Broadcast never blocks.
func TestSlowClientClosed(t *testing.T) {
	ts := newTestServer(t, func(ws *config.WS) { ws.SendQueueBytes = 8 << 10 })
	slow := ts.dial(t, "slow")
	fast := ts.dial(t, "fast")
	waitFor(t, func() bool { return ts.hub.Len() == 2 })
	msg := []byte(`{"type":"event","payload":"` + strings.Repeat("x", 1000) + `"}`)
	start := time.Now()
	for range 20000 {
		ts.hub.Broadcast("slow", msg)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("broadcast blocked: %v", d)
	}
	ts.hub.Broadcast("fast", []byte(`{"ok":1}`))
	if got := read(t, fast); got != `{"ok":1}` {
		t.Fatalf("fast got %s", got)
	}
	if code := closeCode(t, slow); code != DisconnectSlow.Code {
		t.Fatalf("slow closed with %d", code)
	}
}

// Drain closes idle connections at once and busy ones after their answers.
func TestDrain(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.router.hold = true
	busy, idle := ts.dial(t, "b"), ts.dial(t, "i")
	if err := busy.WriteMessage(websocket.TextMessage, []byte(`{"id":1,"method":"slow"}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { ts.router.mu.Lock(); defer ts.router.mu.Unlock(); return len(ts.router.held) == 1 })
	ts.hub.Drain()
	if code := closeCode(t, idle); code != websocket.CloseServiceRestart {
		t.Fatalf("idle closed with %d", code)
	}
	// A new call on a draining connection is refused; the held one completes.
	if err := busy.WriteMessage(websocket.TextMessage, []byte(`{"id":2,"method":"late"}`)); err != nil {
		t.Fatal(err)
	}
	if got := read(t, busy); !strings.Contains(got, `"shutting_down"`) {
		t.Fatalf("call during drain: %s", got)
	}
	ts.router.release()
	if got := read(t, busy); got != `{"type":"result","method":"slow"}` {
		t.Fatalf("busy got %s", got)
	}
	if code := closeCode(t, busy); code != websocket.CloseServiceRestart {
		t.Fatalf("busy closed with %d", code)
	}
	// New upgrades get their TCP connection reset, without a response.
	assertReset(t, ts.URL+"/api/x")
}

func TestValidToken(t *testing.T) {
	for _, tc := range []struct {
		token string
		ok    bool
	}{
		{"123e4567-e89b-12d3-a456-426655440000", true},
		{"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc_-", true},
		{"a+b=c:d~e", true},
		{"", false},
		{"has space", false},
		{"slash/inside", false},
		{strings.Repeat("a", 257), false},
	} {
		if got := validToken(tc.token, 256) == ""; got != tc.ok {
			t.Errorf("validToken(%q) ok=%v, want %v", tc.token, got, tc.ok)
		}
	}
}

func TestTokenBucket(t *testing.T) {
	b := newTokenBucket(10, 2)
	now := time.Unix(0, 0)
	got := []bool{b.allow(now), b.allow(now), b.allow(now), b.allow(now.Add(100 * time.Millisecond))}
	want := []bool{true, true, false, true}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("allow #%d = %v, want %v", i, got[i], want[i])
		}
	}
	off := newTokenBucket(0, 0)
	for range 100 {
		if !off.allow(now) {
			t.Fatal("a zero rate must not limit")
		}
	}
}

func TestReadyz(t *testing.T) {
	ts := newTestServer(t, nil)
	resp, err := http.Get(ts.URL + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("readyz %v %v", err, resp)
	}
	resp.Body.Close()
	ts.hub.Drain()
	resp, err = http.Get(ts.URL + "/readyz")
	if err != nil || resp.StatusCode != 503 {
		t.Fatalf("readyz while draining %v %v", err, resp)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "draining") {
		t.Fatalf("readyz body %s", body)
	}
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A rejected frame gets a span with an error status, under the client's
// traceparent when the frame carried one.
func TestRejectSpan(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	ts := newTracedTestServer(t, nil, telemetry.NewTestTracing(tp))
	c := ts.dial(t, "tok")
	if err := c.WriteMessage(websocket.TextMessage, []byte(`{"id":1,"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}`)); err != nil {
		t.Fatal(err)
	}
	read(t, c)
	waitFor(t, func() bool { return len(rec.Ended()) == 1 })
	s := rec.Ended()[0]
	if s.Name() != "reject" || s.Status().Code != codes.Error || s.Status().Description != "bad_request" {
		t.Fatalf("span %q status %+v", s.Name(), s.Status())
	}
	// The frame was rejected before its traceparent was read: a root span.
	if s.Parent().IsValid() {
		t.Fatalf("reject span has parent %v", s.Parent())
	}
	// A valid call frame's traceparent reaches the router's context.
	if err := c.WriteMessage(websocket.TextMessage, []byte(`{"id":2,"method":"m","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}`)); err != nil {
		t.Fatal(err)
	}
	read(t, c)
	ts.router.mu.Lock()
	defer ts.router.mu.Unlock()
	if got := ts.router.traceIDs; len(got) != 1 || got[0] != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("router saw trace ids %q", got)
	}
}

func TestEmptyTokenIs400(t *testing.T) {
	ts := newTestServer(t, nil)
	resp, err := http.Get(ts.URL + "/api/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "token is empty") {
		t.Fatalf("GET /api/: %d %s", resp.StatusCode, body)
	}
}

func TestFrameBudget(t *testing.T) {
	start := time.Unix(1000, 0)
	tests := []struct {
		name     string
		rate     float64
		burst    int
		frames   int           // drawn at once, at start
		after    time.Duration // then one more, this long after
		wantOK   bool          // of the last frame
		wantOver bool
	}{
		{"within the burst", 10, 5, 5, 0, true, false},
		{"beyond the burst: refused", 10, 5, 6, 0, false, false},
		{"burst more refused: over", 10, 5, 10, 0, false, false},
		{"burst more and one: over", 10, 5, 11, 0, false, true},
		{"the budget refills", 10, 5, 10, time.Second, true, false},
		{"off", 0, 0, 100000, 0, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newFrameBudget(tt.rate, tt.burst)
			var ok, over bool
			for range tt.frames {
				ok, over = b.take(start)
			}
			if tt.after > 0 {
				ok, over = b.take(start.Add(tt.after))
			}
			if ok != tt.wantOK || over != tt.wantOver {
				t.Fatalf("last frame: ok %v over %v, want %v %v", ok, over, tt.wantOK, tt.wantOver)
			}
		})
	}
}

// A client that floods frames — pings, calls, refused ones alike — gets its
// budget answered, then too_many_requests with each call's id, then, after
// ws.frame_burst more, close 1008 rate_limited.
func TestFrameFloodClosed(t *testing.T) {
	ts := newTestServer(t, func(ws *config.WS) { ws.FrameRate = 1; ws.FrameBurst = 10; ws.RatePerSecond = 0 })
	c := ts.dial(t, "flood")
	var frames []byte
	for i := range 40 {
		method := "ping"
		if i%2 == 1 {
			method = "m"
		}
		frames = append(frames, maskedText(`{"id":`+strconv.Itoa(i)+`,"method":"`+method+`"}`)...)
	}
	if _, err := c.NetConn().Write(frames); err != nil {
		t.Fatal(err)
	}
	answered, refused := 0, 0
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			if !websocket.IsCloseError(err, DisconnectRateLimited.Code) {
				t.Fatalf("after %d answers and %d refusals: %v, want close 1008", answered, refused, err)
			}
			break
		}
		switch msg := string(b); {
		case strings.Contains(msg, `"too_many_requests"`) && strings.Contains(msg, `frame rate limit exceeded (ws.frame_rate)`):
			if want := `"id":` + strconv.Itoa(answered+refused); !strings.Contains(msg, want) {
				t.Fatalf("refusal %s lacks %s", msg, want)
			}
			refused++
		default:
			answered++
		}
	}
	if answered != 10 || refused != 10 {
		t.Fatalf("%d answered, %d refused before the close; want 10 and 10 (ws.frame_burst each)", answered, refused)
	}
}
