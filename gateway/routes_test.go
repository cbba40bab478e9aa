package gateway

import (
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/piped-dev/piped/config"
	"github.com/piped-dev/piped/routetable"
)

func testRoutes(t *testing.T, defaultRoute bool, routes ...config.Route) *routetable.Holder {
	t.Helper()
	tab, err := routetable.Compile(routes, routetable.Default{NodeID: "n1", Exchange: "exchange-out-n1", Timeout: time.Minute, Enabled: defaultRoute})
	if err != nil {
		t.Fatal(err)
	}
	return routetable.NewHolder(tab)
}

func send(t *testing.T, c *websocket.Conn, frame string) {
	t.Helper()
	if err := c.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		t.Fatal(err)
	}
}

// Each call is looked up; what no route takes, what is reserved, what is
// too fast or too large for its route is answered here and never reaches
// the router.
func TestCallRoutes(t *testing.T) {
	routes := testRoutes(t, false,
		config.Route{Match: "billing.*", Exchange: "billing", Rate: 1, Burst: 2},
		config.Route{Match: "upload", Exchange: "files", MaxPayloadBytes: 10},
		config.Route{Match: "open", Exchange: "x"},
	)
	ts := newRoutedTestServer(t, nil, nil, routes)
	c := ts.dial(t, "tok")
	for _, tc := range []struct{ send, want string }{
		{`{"id":1,"method":"billing.pay"}`, `{"type":"result","method":"billing.pay"}`},
		{`{"id":2,"method":"billing.refund"}`, `{"type":"result","method":"billing.refund"}`},
		{`{"id":3,"method":"billing.pay"}`, `{"type":"error","id":3,"error":{"code":"too_many_requests","message":"call rate limit of routes[0] billing.* exceeded (1 calls/s, burst 2)"}}`},
		{`{"id":4,"method":"open"}`, `{"type":"result","method":"open"}`}, // other routes are not limited by billing's rate
		{`{"id":5,"method":"nothing"}`, `{"type":"error","id":5,"error":{"code":"unknown_method","message":"no route for method \"nothing\""}}`},
		{`{"id":6,"method":"$connect"}`, `{"type":"error","id":6,"error":{"code":"bad_request","message":"methods starting with $ are reserved"}}`},
		{`{"id":7,"method":"upload","payload":{"a":"1234"}}`, `{"type":"error","id":7,"error":{"code":"payload_too_large","message":"payload is 12 bytes; routes[1] upload takes at most 10 (max_payload_bytes)"}}`},
		{`{"id":8,"method":"upload","payload":{"a":"1"}}`, `{"type":"result","method":"upload"}`},
	} {
		send(t, c, tc.send)
		if got := read(t, c); got != tc.want {
			t.Errorf("send %s:\n got %s\nwant %s", tc.send, got, tc.want)
		}
	}
	ts.router.mu.Lock()
	defer ts.router.mu.Unlock()
	want := "routes[0] billing.*,routes[0] billing.*,routes[2] open,routes[1] upload"
	if got := strings.Join(ts.router.routes, ","); got != want {
		t.Errorf("router got routes %s, want %s", got, want)
	}
}

// Per-route buckets are per connection.
func TestRouteRatePerConnection(t *testing.T) {
	ts := newRoutedTestServer(t, nil, nil, testRoutes(t, true, config.Route{Match: "slow", Exchange: "x", Rate: 0.001}))
	a, b := ts.dial(t, "a"), ts.dial(t, "b")
	for _, c := range []*websocket.Conn{a, b} {
		send(t, c, `{"id":1,"method":"slow"}`)
		if got := read(t, c); got != `{"type":"result","method":"slow"}` {
			t.Errorf("first call on a connection: %s", got)
		}
	}
	send(t, a, `{"id":2,"method":"slow"}`)
	if got := read(t, a); !strings.Contains(got, "too_many_requests") {
		t.Errorf("second call: %s, want too_many_requests", got)
	}
}

// A reload's new route (a new *Route) applies to the next call of an open
// connection; SetLimits changes max_inflight and the call rate of open
// connections.
func TestReloadOpenConnection(t *testing.T) {
	routes := testRoutes(t, true)
	ts := newRoutedTestServer(t, nil, nil, routes)
	ts.router.hold = true
	c := ts.dial(t, "tok")
	send(t, c, `{"id":1,"method":"m"}`)
	send(t, c, `{"id":2,"method":"m"}`)
	waitFor(t, func() bool { ts.router.mu.Lock(); defer ts.router.mu.Unlock(); return len(ts.router.held) == 2 })

	l := LimitsOf(config.Defaults().WS)
	l.MaxInflight = 2
	ts.srv.SetLimits(l)
	send(t, c, `{"id":3,"method":"m"}`)
	if got := read(t, c); !strings.Contains(got, "ws.max_inflight") {
		t.Errorf("third call with max_inflight 2: %s", got)
	}
	ts.router.release()
	read(t, c)
	read(t, c)

	ts.router.mu.Lock()
	ts.router.hold = false
	ts.router.mu.Unlock()
	next := testRoutes(t, true, config.Route{Match: "m", Exchange: "new"})
	routes.Store(next.Load())
	l.RatePerSecond, l.RateBurst = 0.001, 1
	ts.srv.SetLimits(l)
	send(t, c, `{"id":4,"method":"m"}`)
	read(t, c)
	send(t, c, `{"id":5,"method":"m"}`)
	if got := read(t, c); !strings.Contains(got, "ws.rate_per_second") {
		t.Errorf("second call at rate 0.001/s: %s", got)
	}
	ts.router.mu.Lock()
	defer ts.router.mu.Unlock()
	if got := strings.Join(ts.router.routes, ","); got != "default,default,routes[0] m" {
		t.Errorf("routes %s: want the new route after the reload", got)
	}
}

// SetLimits changes ws.max_connections for new upgrades.
func TestReloadMaxConnections(t *testing.T) {
	ts := newRoutedTestServer(t, nil, nil, nil)
	ts.dial(t, "a")
	waitFor(t, func() bool { return ts.hub.Len() == 1 })
	l := LimitsOf(config.Defaults().WS)
	l.MaxConnections = 1
	ts.srv.SetLimits(l)
	u := "ws" + strings.TrimPrefix(ts.URL, "http") + "/api/b"
	_, resp, err := websocket.DefaultDialer.Dial(u, nil)
	if err == nil || resp == nil || resp.StatusCode != 503 {
		t.Fatalf("dial beyond max_connections: %v %v, want 503", err, resp)
	}
}
