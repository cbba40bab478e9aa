package gateway

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/piped-dev/piped/config"
	"github.com/piped-dev/piped/telemetry"
)

// assertReset dials url as a WebSocket and fails unless the node reset the
// connection without any HTTP response.
func assertReset(t *testing.T, url string) {
	t.Helper()
	u := "ws" + strings.TrimPrefix(url, "http")
	_, resp, err := websocket.DefaultDialer.Dial(u, nil)
	if resp != nil {
		t.Fatalf("dial %s while draining: HTTP %d, want a reset connection", url, resp.StatusCode)
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("dial %s while draining: %v, want connection reset by peer", url, err)
	}
}

// The client and internal handlers split the routes; Handler serves all.
func TestHandlers(t *testing.T) {
	hub := NewHub()
	srv := New(Options{WS: config.Defaults().WS, Router: &fakeRouter{}, Readiness: ready{}, Hub: hub,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: telemetry.NewMetrics()})
	for _, tc := range []struct {
		name    string
		handler http.Handler
		want    map[string]int // path → status of a plain GET
	}{
		{"all", srv.Handler(), map[string]int{"/api/": 400, "/healthz": 200, "/readyz": 200, "/metrics": 200, "/other": 404}},
		{"client", srv.ClientHandler(), map[string]int{"/api/": 400, "/api/tok": 400, "/healthz": 404, "/readyz": 404, "/metrics": 404}},
		{"internal", srv.InternalHandler(), map[string]int{"/api/": 404, "/api/tok": 404, "/healthz": 200, "/readyz": 200, "/metrics": 200}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for path, want := range tc.want {
				rec := httptest.NewRecorder()
				tc.handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
				if rec.Code != want {
					t.Errorf("GET %s: %d, want %d (%s)", path, rec.Code, want, rec.Body)
				}
			}
		})
	}
}

// From the first moment of a drain, every request to /api/ (a valid upgrade,
// a bad token, no token) gets its connection reset, on the one-port handler
// and on the client handler, while /readyz answers 503.
func TestDrainResetsUpgrades(t *testing.T) {
	hub := NewHub()
	srv := New(Options{WS: config.Defaults().WS, Router: &fakeRouter{}, Readiness: ready{}, Hub: hub,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: telemetry.NewMetrics()})
	all := httptest.NewServer(srv.Handler())
	defer all.Close()
	client := httptest.NewServer(srv.ClientHandler())
	defer client.Close()
	hub.Drain()
	for _, base := range []string{all.URL, client.URL} {
		for _, path := range []string{"/api/tok", "/api/bad%20token", "/api/"} {
			assertReset(t, base+path)
		}
	}
	resp, err := http.Get(all.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("readyz while draining: %d, want 503", resp.StatusCode)
	}
	// Without a hijackable connection the answer is a 503.
	rec := httptest.NewRecorder()
	srv.ServeWS(rec, httptest.NewRequest(http.MethodGet, "/api/tok", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("unhijackable request while draining: %d, want 503", rec.Code)
	}
}
