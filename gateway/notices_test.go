package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/piped-dev/piped/config"
	"github.com/piped-dev/piped/telemetry"
)

// fakeNotifier records notices as "connect TOKEN ID" and
// "disconnect TOKEN ID CODE REASON".
type fakeNotifier struct {
	mu  sync.Mutex
	got []string
}

func (n *fakeNotifier) NotifyConnect(_ context.Context, token, connID string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.got = append(n.got, "connect "+token+" "+connID)
}

func (n *fakeNotifier) NotifyDisconnect(_ context.Context, token, connID string, code int, reason string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.got = append(n.got, fmt.Sprintf("disconnect %s %s %d %s", token, connID, code, reason))
}

func (n *fakeNotifier) notices() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.got)
}

// fakeAuthorizer answers with its verdict, or, with block, waits until
// ctx is done and returns ctx's error.
type fakeAuthorizer struct {
	allow  bool
	reason string
	err    error
	block  bool

	mu    sync.Mutex
	asked []string // token + " " + connID
	ended chan struct{}
}

func (a *fakeAuthorizer) Authorize(ctx context.Context, token, connID string) (bool, string, error) {
	a.mu.Lock()
	a.asked = append(a.asked, token+" "+connID)
	a.mu.Unlock()
	if a.block {
		<-ctx.Done()
		if a.ended != nil {
			close(a.ended)
		}
		return false, "", ctx.Err()
	}
	return a.allow, a.reason, a.err
}

func (a *fakeAuthorizer) questions() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.asked)
}

func newLifecycleServer(t *testing.T, l config.Lifecycle, n Notifier, a Authorizer) (*testServer, *telemetry.Metrics) {
	t.Helper()
	ts := &testServer{hub: NewHub(), router: &fakeRouter{}}
	metrics := telemetry.NewMetrics()
	ts.srv = New(Options{NodeID: "n1", WS: config.Defaults().WS, Router: ts.router, Readiness: ready{}, Hub: ts.hub,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: metrics,
		Lifecycle: l, Notifier: n, Authorizer: a})
	ts.Server = httptest.NewServer(ts.srv.Handler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = ts.hub.Close(ctx)
		ts.Server.Close()
	})
	return ts, metrics
}

func (ts *testServer) connIDs() []string {
	var ids []string
	for _, id := range ts.hub.Connections() {
		ids = append(ids, id)
	}
	return ids
}

// With connect and disconnect on, every connection is announced once
// registered and again when it ends, with its id and the Disconnect it
// ended with; a switch that is off sends nothing.
func TestConnectDisconnectNotices(t *testing.T) {
	for _, tc := range []struct {
		name                string
		connect, disconnect bool
	}{
		{"both", true, true},
		{"connect only", true, false},
		{"disconnect only", false, true},
		{"off", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := &fakeNotifier{}
			ts, _ := newLifecycleServer(t, config.Lifecycle{Connect: tc.connect, Disconnect: tc.disconnect}, n, nil)
			c := ts.dial(t, "tok")
			waitFor(t, func() bool { return ts.hub.Len() == 1 })
			id := ts.connIDs()[0]
			if !strings.HasPrefix(id, "n1.") {
				t.Fatalf("connection id %q", id)
			}
			_ = c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
			waitFor(t, func() bool { return ts.hub.Len() == 0 })
			var want []string
			if tc.connect {
				want = append(want, "connect tok "+id)
			}
			if tc.disconnect {
				want = append(want, "disconnect tok "+id+" 1000 client_closed")
			}
			waitFor(t, func() bool { return len(n.notices()) == len(want) })
			if got := n.notices(); !slices.Equal(got, want) {
				t.Fatalf("notices %q, want %q", got, want)
			}
		})
	}
}

// A connection the node closes is announced with the node's reason.
func TestDisconnectNoticeCarriesTheReason(t *testing.T) {
	n := &fakeNotifier{}
	ts, _ := newLifecycleServer(t, config.Lifecycle{Disconnect: true}, n, nil)
	c := ts.dial(t, "tok")
	waitFor(t, func() bool { return ts.hub.Len() == 1 })
	id := ts.connIDs()[0]
	ts.hub.each(func(c *Conn) { c.Close(DisconnectSlow) })
	if code := closeCode(t, c); code != 4008 {
		t.Fatalf("close code %d", code)
	}
	waitFor(t, func() bool { return len(n.notices()) == 1 })
	if got, want := n.notices()[0], "disconnect tok "+id+" 4008 slow_client"; got != want {
		t.Fatalf("notice %q, want %q", got, want)
	}
}

// upgrade dials token and returns the handshake's status and body.
func upgrade(t *testing.T, ts *testServer, token string) (int, string, *websocket.Conn) {
	t.Helper()
	u := "ws" + strings.TrimPrefix(ts.URL, "http") + "/api/" + token
	c, resp, err := websocket.DefaultDialer.Dial(u, nil)
	if err == nil {
		t.Cleanup(func() { c.Close() })
		return resp.StatusCode, "", c
	}
	if resp == nil {
		t.Fatalf("dial: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), nil
}

// With authorize on, the backend's verdict decides the upgrade: allowed
// connections get the id the backend was asked about and no second
// $connect; denied ones a 403 with the reason; without a verdict
// authorize_failure decides (503 or the upgrade).
func TestAuthorizeUpgrade(t *testing.T) {
	noVerdict := errors.New("no verdict")
	for _, tc := range []struct {
		name       string
		auth       *fakeAuthorizer
		failure    string
		wantStatus int
		wantBody   string
		refused    string // the piped_upgrades_refused_total reason counted, if any
		notices    func(id string) []string
	}{
		{"allow", &fakeAuthorizer{allow: true}, "deny", http.StatusSwitchingProtocols, "", "",
			func(id string) []string { return []string{"disconnect tok " + id + " 1000 client_closed"} }},
		{"deny", &fakeAuthorizer{reason: `banned "for good"`}, "deny", http.StatusForbidden, `{"error":"banned \"for good\""}`, "unauthorized",
			func(string) []string { return nil }},
		{"deny even when failures allow", &fakeAuthorizer{reason: "banned"}, "allow", http.StatusForbidden, `{"error":"banned"}`, "unauthorized",
			func(string) []string { return nil }},
		{"no verdict, deny", &fakeAuthorizer{err: noVerdict}, "deny", http.StatusServiceUnavailable, `{"error":"authorization backend did not answer"}`, "authorize_timeout",
			func(id string) []string { return []string{"disconnect tok " + id + " 1006 not_opened"} }},
		{"timeout, deny", &fakeAuthorizer{block: true}, "deny", http.StatusServiceUnavailable, `{"error":"authorization backend did not answer"}`, "authorize_timeout",
			func(id string) []string { return []string{"disconnect tok " + id + " 1006 not_opened"} }},
		{"no verdict, allow", &fakeAuthorizer{err: noVerdict}, "allow", http.StatusSwitchingProtocols, "", "",
			func(id string) []string { return []string{"disconnect tok " + id + " 1000 client_closed"} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := &fakeNotifier{}
			ts, metrics := newLifecycleServer(t, config.Lifecycle{Connect: true, Disconnect: true, Authorize: true,
				AuthorizeTimeout: 50 * time.Millisecond, AuthorizeFailure: tc.failure}, n, tc.auth)
			status, body, c := upgrade(t, ts, "tok")
			if status != tc.wantStatus || body != tc.wantBody {
				t.Fatalf("upgrade: %d %s, want %d %s", status, body, tc.wantStatus, tc.wantBody)
			}
			asked := tc.auth.questions()
			if len(asked) != 1 || !strings.HasPrefix(asked[0], "tok n1.") {
				t.Fatalf("authorizer asked %q", asked)
			}
			id := strings.TrimPrefix(asked[0], "tok ")
			if c != nil {
				waitFor(t, func() bool { return ts.hub.Len() == 1 })
				if got := ts.connIDs(); !slices.Equal(got, []string{id}) {
					t.Fatalf("connection ids %q, want the authorized %q", got, id)
				}
				_ = c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
				waitFor(t, func() bool { return ts.hub.Len() == 0 })
			}
			want := tc.notices(id)
			waitFor(t, func() bool { return len(n.notices()) == len(want) })
			if got := n.notices(); !slices.Equal(got, want) {
				t.Fatalf("notices %q, want %q", got, want)
			}
			for _, reason := range []string{"unauthorized", "authorize_timeout"} {
				want := 0.0
				if reason == tc.refused {
					want = 1
				}
				if got := testutil.ToFloat64(metrics.UpgradesRefused.WithLabelValues(reason)); got != want {
					t.Errorf("refused{%s} = %v, want %v", reason, got, want)
				}
			}
		})
	}
}

// A request that is no WebSocket handshake, or from a refused origin, is
// refused as without authorization, and the backend is not asked.
func TestAuthorizeSkipsRequestsTheUpgraderRefuses(t *testing.T) {
	a := &fakeAuthorizer{allow: true}
	l := config.Lifecycle{Authorize: true, AuthorizeTimeout: time.Second, AuthorizeFailure: "deny"}
	ts := &testServer{hub: NewHub(), router: &fakeRouter{}}
	ws := config.Defaults().WS
	ws.AllowedOrigins = []string{"https://ok.example"}
	metrics := telemetry.NewMetrics()
	ts.srv = New(Options{NodeID: "n1", WS: ws, Router: ts.router, Readiness: ready{}, Hub: ts.hub,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: metrics, Lifecycle: l, Authorizer: a})
	ts.Server = httptest.NewServer(ts.srv.Handler())
	defer ts.Server.Close()

	resp, err := http.Get(ts.URL + "/api/tok")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("plain GET: %d", resp.StatusCode)
	}
	u := "ws" + strings.TrimPrefix(ts.URL, "http") + "/api/tok"
	_, resp, err = websocket.DefaultDialer.Dial(u, http.Header{"Origin": {"https://evil.example"}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("bad origin: %v %v", resp, err)
	}
	if got := testutil.ToFloat64(metrics.UpgradesRefused.WithLabelValues("origin")); got != 1 {
		t.Fatalf("refused{origin} = %v, want 1", got)
	}
	if q := a.questions(); len(q) != 0 {
		t.Fatalf("authorizer asked %q", q)
	}
}

// A client that goes away while the backend is asked ends the wait (the
// request's context), gets no answer and leaves nothing behind (goleak in
// TestMain): only the not_opened $disconnect for the $connect that went out.
func TestAuthorizeClientGoesAway(t *testing.T) {
	a := &fakeAuthorizer{block: true, ended: make(chan struct{})}
	n := &fakeNotifier{}
	ts, _ := newLifecycleServer(t, config.Lifecycle{Disconnect: true, Authorize: true, AuthorizeTimeout: time.Hour, AuthorizeFailure: "allow"}, n, a)
	conn, err := net.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "GET /api/tok HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	waitFor(t, func() bool { return len(a.questions()) == 1 })
	conn.Close()
	select {
	case <-a.ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the authorization wait did not end when the client went away")
	}
	id := strings.TrimPrefix(a.questions()[0], "tok ")
	waitFor(t, func() bool { return len(n.notices()) == 1 })
	if got, want := n.notices()[0], "disconnect tok "+id+" 1006 not_opened"; got != want {
		t.Fatalf("notice %q, want %q", got, want)
	}
	if ts.hub.Len() != 0 {
		t.Fatalf("%d connections", ts.hub.Len())
	}
}

// Connections lists every registered connection once.
func TestHubConnections(t *testing.T) {
	ts, _ := newLifecycleServer(t, config.Lifecycle{}, nil, nil)
	for i := range 5 {
		ts.dial(t, fmt.Sprintf("tok%d", i%2))
	}
	waitFor(t, func() bool { return ts.hub.Len() == 5 })
	seen := map[string]string{}
	for token, id := range ts.hub.Connections() {
		seen[id] = token
	}
	if len(seen) != 5 {
		t.Fatalf("listed %v", seen)
	}
	n := 0
	for range ts.hub.Connections() {
		n++
		break // stopping early is allowed
	}
	if n != 1 {
		t.Fatal("early stop")
	}
}
