package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/piped-dev/piped/config"
	"github.com/piped-dev/piped/telemetry"
)

// fakeVerifier maps tokens to identities; any other token is refused with
// an error that quotes nothing of it.
type fakeVerifier map[string]Identity

func (f fakeVerifier) Verify(_ context.Context, token string) (Identity, error) {
	id, ok := f[token]
	if !ok {
		return Identity{}, errors.New("test: signature is invalid")
	}
	return id, nil
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type verifyServer struct {
	*testServer
	metrics *telemetry.Metrics
	log     *syncBuffer
}

func newVerifyServer(t *testing.T, v Verifier) *verifyServer {
	t.Helper()
	vs := &verifyServer{testServer: &testServer{hub: NewHub(), router: &fakeRouter{}}, metrics: telemetry.NewMetrics(), log: &syncBuffer{}}
	vs.srv = New(Options{WS: config.Defaults().WS, Router: vs.router, Readiness: ready{}, Hub: vs.hub, Verifier: v,
		Logger: slog.New(slog.NewJSONHandler(vs.log, &slog.HandlerOptions{Level: slog.LevelDebug})), Metrics: vs.metrics})
	vs.Server = httptest.NewServer(vs.srv.Handler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = vs.hub.Close(ctx)
		vs.Server.Close()
	})
	return vs
}

// A token the verifier refuses, or whose subject is no usable address, gets
// HTTP 401 {"error":"invalid token"} before the upgrade, counted as
// reason "auth"; the reason is logged at debug level without the token.
func TestVerifierRefuses(t *testing.T) {
	vs := newVerifyServer(t, fakeVerifier{
		"empty-sub":  {Subject: ""},
		"slash-sub":  {Subject: "a/b"},
		"space-sub":  {Subject: "a b"},
		"long-sub":   {Subject: strings.Repeat("s", 257)},
		"good-token": {Subject: "alice"},
	})
	for i, token := range []string{"forged.jwt.token", "empty-sub", "slash-sub", "space-sub", "long-sub"} {
		t.Run(token, func(t *testing.T) {
			u := "ws" + strings.TrimPrefix(vs.URL, "http") + "/api/" + token
			_, resp, err := websocket.DefaultDialer.Dial(u, nil)
			if err == nil || resp == nil {
				t.Fatalf("dial: %v, want a refusal", err)
			}
			defer resp.Body.Close()
			var body map[string]string
			_ = json.NewDecoder(resp.Body).Decode(&body)
			if resp.StatusCode != http.StatusUnauthorized || body["error"] != "invalid token" {
				t.Errorf("HTTP %d %v, want 401 {\"error\":\"invalid token\"}", resp.StatusCode, body)
			}
			if got := testutil.ToFloat64(vs.metrics.UpgradesRefused.WithLabelValues("auth")); got != float64(i+1) {
				t.Errorf("piped_upgrades_refused_total{reason=\"auth\"} = %v, want %d", got, i+1)
			}
		})
	}
	log := vs.log.String()
	if !strings.Contains(log, "upgrade refused: invalid token") || !strings.Contains(log, "signature is invalid") || !strings.Contains(log, "subject: has characters") {
		t.Errorf("the refusals are not logged with their reasons:\n%s", log)
	}
	for _, token := range []string{"forged.jwt.token", "empty-sub", "slash-sub", "space-sub", "long-sub"} {
		if strings.Contains(log, token) {
			t.Errorf("the log contains the token %q:\n%s", token, log)
		}
	}
	if vs.hub.Len() != 0 {
		t.Errorf("%d connections registered", vs.hub.Len())
	}
}

// A verified connection's address is its subject: the hub finds it under
// the subject, not the token, and its calls carry the subject.
func TestVerifierSubject(t *testing.T) {
	vs := newVerifyServer(t, fakeVerifier{"jwt.for.alice": {Subject: "alice"}})
	c := vs.dial(t, "jwt.for.alice")
	waitFor(t, func() bool { return vs.hub.Len() == 1 })
	if n := vs.hub.Broadcast("jwt.for.alice", []byte(`{"e":"raw"}`)); n != 0 {
		t.Errorf("the raw token addresses %d connections", n)
	}
	if n := vs.hub.Broadcast("alice", []byte(`{"e":"sub"}`)); n != 1 {
		t.Fatalf("the subject addresses %d connections, want 1", n)
	}
	if got := read(t, c); got != `{"e":"sub"}` {
		t.Fatalf("got %s", got)
	}
	if err := c.WriteMessage(websocket.TextMessage, []byte(`{"id":1,"method":"m"}`)); err != nil {
		t.Fatal(err)
	}
	read(t, c)
	vs.router.mu.Lock()
	calls := append([]string(nil), vs.router.calls...)
	vs.router.mu.Unlock()
	if len(calls) != 1 || calls[0] != `alice {"id":1,"method":"m","token":"alice"}` {
		t.Errorf("router got %q, want the call of alice", calls)
	}
}

// A connection whose identity expires is closed with 4003 token_expired;
// one without an expiry, or expiring later, stays open.
func TestTokenExpiredClose(t *testing.T) {
	vs := newVerifyServer(t, fakeVerifier{
		"soon":  {Subject: "s", Expires: time.Now().Add(300 * time.Millisecond)},
		"past":  {Subject: "p", Expires: time.Now().Add(-time.Second)}, // accepted within a verifier's leeway
		"later": {Subject: "l", Expires: time.Now().Add(time.Hour)},
		"never": {Subject: "n"},
	})
	soon, past := vs.dial(t, "soon"), vs.dial(t, "past")
	later, never := vs.dial(t, "later"), vs.dial(t, "never")
	for name, c := range map[string]*websocket.Conn{"soon": soon, "past": past} {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _, err := c.ReadMessage()
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != 4003 || ce.Text != "token_expired" {
			t.Errorf("%s: %v, want close 4003 token_expired", name, err)
		}
	}
	waitFor(t, func() bool { return vs.hub.Len() == 2 })
	if got := testutil.ToFloat64(vs.metrics.Disconnects.WithLabelValues("token_expired")); got != 2 {
		t.Errorf("piped_disconnects_total{reason=\"token_expired\"} = %v, want 2", got)
	}
	for _, c := range []*websocket.Conn{later, never} {
		if err := c.WriteMessage(websocket.TextMessage, []byte(`{"method":"ping"}`)); err != nil {
			t.Fatal(err)
		}
		if got := read(t, c); got != `{"type":"event","event":"pong"}` {
			t.Errorf("got %s", got)
		}
	}
}

// A connection that ends before its expiry stops its timer, so nothing
// outlives the connection.
func TestExpiryStoppedWithConnection(t *testing.T) {
	vs := newVerifyServer(t, fakeVerifier{"t": {Subject: "s", Expires: time.Now().Add(time.Hour)}})
	c := vs.dial(t, "t")
	var conn *Conn
	waitFor(t, func() bool {
		vs.hub.each(func(c *Conn) { conn = c })
		return conn != nil
	})
	c.Close()
	waitFor(t, func() bool { return vs.hub.Len() == 0 })
	conn.mu.Lock()
	defer conn.mu.Unlock()
	if conn.expiry == nil {
		t.Fatal("no expiry timer was armed")
	}
	if conn.expiry.Stop() {
		t.Error("the expiry timer was still armed after the connection ended")
	}
}
