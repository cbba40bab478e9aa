package gateway

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/piped-dev/piped/config"
	"github.com/piped-dev/piped/telemetry"
)

// fakeBinder records "bind TOKEN" and "release TOKEN" in the notifier's
// log, so that the order against the notices shows, and notes how many
// connections the hub had and how many questions the authorizer had been
// asked at each bind.
type fakeBinder struct {
	log  *fakeNotifier
	hub  *Hub
	auth *fakeAuthorizer
	err  error // what BindToken returns

	atBind []string // "hub=N asked=M" at each BindToken
}

func (b *fakeBinder) BindToken(_ context.Context, token string) error {
	asked := 0
	if b.auth != nil {
		asked = len(b.auth.questions())
	}
	b.log.mu.Lock()
	defer b.log.mu.Unlock()
	b.log.got = append(b.log.got, "bind "+token)
	b.atBind = append(b.atBind, "hub="+strconv.Itoa(b.hub.Len())+" asked="+strconv.Itoa(asked))
	return b.err
}

func (b *fakeBinder) ReleaseToken(token string) {
	b.log.mu.Lock()
	defer b.log.mu.Unlock()
	b.log.got = append(b.log.got, "release "+token)
}

func (b *fakeBinder) binds() []string {
	b.log.mu.Lock()
	defer b.log.mu.Unlock()
	return slices.Clone(b.atBind)
}

func newBinderServer(t *testing.T, l config.Lifecycle, a *fakeAuthorizer, bindErr error) (*testServer, *fakeNotifier, *fakeBinder, *telemetry.Metrics) {
	t.Helper()
	ts := &testServer{hub: NewHub(), router: &fakeRouter{}}
	n := &fakeNotifier{}
	b := &fakeBinder{log: n, hub: ts.hub, auth: a, err: bindErr}
	metrics := telemetry.NewMetrics()
	o := Options{NodeID: "n1", WS: config.Defaults().WS, Router: ts.router, Readiness: ready{}, Hub: ts.hub,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: metrics,
		Lifecycle: l, Notifier: n, Binder: b}
	if a != nil {
		o.Authorizer = a
	}
	ts.srv = New(o)
	ts.Server = httptest.NewServer(ts.srv.Handler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = ts.hub.Close(ctx)
		ts.Server.Close()
	})
	return ts, n, b, metrics
}

// The token is bound before the connection is registered and before it is
// announced (the $connect notice, or the authorization call that is one),
// and released once when the connection ends, or at once when it does not
// open.
func TestBindTokenBeforeConnect(t *testing.T) {
	on := config.Lifecycle{Connect: true, Disconnect: true}
	authz := config.Lifecycle{Connect: true, Disconnect: true, Authorize: true, AuthorizeTimeout: time.Second, AuthorizeFailure: "deny"}
	for _, tc := range []struct {
		name       string
		l          config.Lifecycle
		auth       *fakeAuthorizer
		bindErr    error
		wantStatus int
		wantBody   string
		want       func(id string) []string // the log: binds, releases and notices
		refused    float64                  // piped_upgrades_refused_total{reason="event_binding"}
	}{
		{name: "opens: bind, connect … release, disconnect", l: on, wantStatus: http.StatusSwitchingProtocols,
			want: func(id string) []string {
				return []string{"bind tok", "connect tok " + id, "release tok", "disconnect tok " + id + " 1000 client_closed"}
			}},
		{name: "authorize: bound before the backend is asked", l: authz, auth: &fakeAuthorizer{allow: true}, wantStatus: http.StatusSwitchingProtocols,
			want: func(id string) []string {
				return []string{"bind tok", "release tok", "disconnect tok " + id + " 1000 client_closed"}
			}},
		{name: "denied by the backend: released", l: authz, auth: &fakeAuthorizer{reason: "no"}, wantStatus: http.StatusForbidden, wantBody: `{"error":"no"}`,
			want: func(string) []string { return []string{"bind tok", "release tok"} }},
		{name: "binding fails: 503, released, nothing announced", l: on, bindErr: errors.New("routing: bind the token's events: context deadline exceeded"),
			wantStatus: http.StatusServiceUnavailable, wantBody: `{"error":"` + reasonNoBinding + `"}`, refused: 1,
			want: func(string) []string { return []string{"bind tok", "release tok"} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts, n, b, metrics := newBinderServer(t, tc.l, tc.auth, tc.bindErr)
			status, body, c := upgrade(t, ts, "tok")
			if status != tc.wantStatus || body != tc.wantBody {
				t.Fatalf("upgrade: %d %s, want %d %s", status, body, tc.wantStatus, tc.wantBody)
			}
			id := ""
			if c != nil {
				waitFor(t, func() bool { return ts.hub.Len() == 1 })
				id = ts.connIDs()[0]
				_ = c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
				waitFor(t, func() bool { return ts.hub.Len() == 0 })
			}
			want := tc.want(id)
			waitFor(t, func() bool { return len(n.notices()) == len(want) })
			if got := n.notices(); !slices.Equal(got, want) {
				t.Fatalf("log %q, want %q", got, want)
			}
			if got := b.binds(); !slices.Equal(got, []string{"hub=0 asked=0"}) {
				t.Fatalf("at the bind: %q, want no connection registered and no question asked yet", got)
			}
			if got := testutil.ToFloat64(metrics.UpgradesRefused.WithLabelValues("event_binding")); got != tc.refused {
				t.Fatalf("refused{event_binding} = %v, want %v", got, tc.refused)
			}
		})
	}
}

// A request the upgrader refuses anyway (no WebSocket handshake) binds nothing.
func TestBindTokenSkipsPlainRequests(t *testing.T) {
	ts, n, _, _ := newBinderServer(t, config.Lifecycle{}, nil, nil)
	resp, err := http.Get(ts.URL + "/api/tok")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("plain GET: %d", resp.StatusCode)
	}
	if got := n.notices(); len(got) != 0 {
		t.Fatalf("log %q, want nothing", got)
	}
}
