package routing

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/piped-dev/piped/config"
	"github.com/piped-dev/piped/protocol"
	"github.com/piped-dev/piped/telemetry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeHub records broadcasts and control calls.
type fakeHub struct {
	mu     sync.Mutex
	conns  map[string]int // token → connections
	got    []string       // token + " " + message; token/connection for SendTo, * for BroadcastAll
	closed []string       // DisconnectToken calls: token/connection code reason
}

func (h *fakeHub) Broadcast(token string, msg []byte) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.got = append(h.got, token+" "+string(msg))
	return h.conns[token]
}

func (h *fakeHub) SendTo(token, connection string, msg []byte) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.got = append(h.got, token+"/"+connection+" "+string(msg))
	return min(h.conns[token], 1)
}

func (h *fakeHub) BroadcastAll(msg []byte) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.got = append(h.got, "* "+string(msg))
	n := 0
	for _, c := range h.conns {
		n += c
	}
	return n
}

func (h *fakeHub) DisconnectToken(token, connection string, code int, reason string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = append(h.closed, fmt.Sprintf("%s/%s %d %s", token, connection, code, reason))
	if connection != "" {
		return min(h.conns[token], 1)
	}
	return h.conns[token]
}

// sink is an Answerer that records answers.
type sink struct {
	mu  sync.Mutex
	got []string
}

func (s *sink) Answer(id, msg []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, string(msg))
}

func (s *sink) answers() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.got...)
}

// noopSpan stands in for a call's span where the test starts none.
var noopSpan = trace.SpanFromContext(context.Background())

func newTestRouter(hub Hub, timeout time.Duration) *Router {
	cfg := config.Defaults()
	return New(Options{NodeID: "n1", AMQP: cfg.AMQP, Timeout: timeout, Hub: hub,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: telemetry.NewMetrics()})
}

// addCall registers a pending call as Router.Call does, without a broker.
func addCall(r *Router, from *sink, token, id, method string) *call {
	c := &call{from: from, token: token, method: method, rt: r.Routes().Load().Default(), start: time.Now()}
	if id != "" {
		c.id = []byte(id)
	}
	c.span = noopSpan
	r.pending.assign(c)
	r.pending.insert(c, c.rt.Timeout, r.expire)
	return c
}

func TestDispatchRouting(t *testing.T) {
	tests := []struct {
		name       string
		corr       func(r *Router, a, b *call) string // correlation id on the result
		body       string
		redeliver  bool
		wantA      []string
		wantB      []string
		wantBcast  []string
		wantDropBy string
	}{
		{name: "by correlation id", corr: func(r *Router, a, b *call) string { return r.pending.correlationID(b) },
			body: `{"id":1,"type":"result","token":"t","method":"m"}`, wantB: []string{`{"id":1,"type":"result","method":"m"}`}},
		{name: "by token id method, oldest first",
			body: `{"id":1,"type":"result","token":"t","method":"m"}`, wantA: []string{`{"id":1,"type":"result","method":"m"}`}},
		{name: "foreign correlation id falls back to match", corr: func(*Router, *call, *call) string { return "theirs-1" },
			body: `{"id":1,"type":"result","token":"t","method":"m"}`, wantA: []string{`{"id":1,"type":"result","method":"m"}`}},
		{name: "no match: every connection of the token",
			body: `{"id":2,"type":"result","token":"t","method":"m"}`, wantBcast: []string{`t {"id":2,"type":"result","method":"m"}`}},
		{name: "no match, redelivered: dropped", redeliver: true,
			body: `{"id":2,"type":"result","token":"t","method":"m"}`, wantDropBy: "redelivered"},
		{name: "our correlation id, no call: late, dropped", corr: func(r *Router, a, b *call) string { return r.pending.prefix + "zzz.1" },
			body: `{"id":1,"type":"result","token":"t","method":"m"}`, wantDropBy: "late"},
		{name: "another token's correlation id: mismatch, dropped, the call still waits", corr: func(r *Router, a, b *call) string { return r.pending.correlationID(b) },
			body: `{"id":1,"type":"result","token":"other","method":"m"}`, wantDropBy: "mismatch"},
		{name: "a guessed correlation id: mismatch, dropped", corr: func(r *Router, a, b *call) string { return r.pending.prefix + strconv.FormatUint(b.corr, 36) + ".1" },
			body: `{"id":1,"type":"result","token":"t","method":"m"}`, wantDropBy: "mismatch"},
		{name: "event: broadcast", corr: func(r *Router, a, b *call) string { return r.pending.correlationID(a) },
			body: `{"type":"event","event":"e","token":"t"}`, wantBcast: []string{`t {"type":"event","event":"e"}`}},
		{name: "not json", body: `nope`, wantDropBy: "not_json"},
		{name: "not an object", body: `[1]`, wantDropBy: "not_object"},
		{name: "no token", body: `{"type":"event"}`, wantDropBy: "no_token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hub := &fakeHub{conns: map[string]int{"t": 2}}
			r := newTestRouter(hub, time.Minute)
			sa, sb := &sink{}, &sink{}
			a := addCall(r, sa, "t", "1", "m")
			b := addCall(r, sb, "t", "1", "m")
			del := &amqp.Delivery{Body: []byte(tc.body), Redelivered: tc.redeliver}
			if tc.corr != nil {
				del.CorrelationId = tc.corr(r, a, b)
			}
			newDispatcher(r).route(del)
			if got := sa.answers(); !slices.Equal(got, tc.wantA) {
				t.Errorf("caller a got %q, want %q", got, tc.wantA)
			}
			if got := sb.answers(); !slices.Equal(got, tc.wantB) {
				t.Errorf("caller b got %q, want %q", got, tc.wantB)
			}
			if !slices.Equal(hub.got, tc.wantBcast) {
				t.Errorf("broadcast %q, want %q", hub.got, tc.wantBcast)
			}
			if tc.wantDropBy != "" {
				if got := testutilCount(t, r, tc.wantDropBy); got != 1 {
					t.Errorf("dropped{%s} = %v, want 1", tc.wantDropBy, got)
				}
			}
			r.FailPending("x", "cleanup")
		})
	}
}

func testutilCount(t *testing.T, r *Router, reason string) float64 {
	t.Helper()
	return testutil.ToFloat64(r.metrics.Dropped.WithLabelValues(reason))
}

func TestTimeoutAnswersOnceAndLateResultIsDropped(t *testing.T) {
	hub := &fakeHub{conns: map[string]int{"t": 1}}
	r := newTestRouter(hub, 20*time.Millisecond)
	s := &sink{}
	c := addCall(r, s, "t", "7", "m")
	deadline := time.Now().Add(5 * time.Second)
	for len(s.answers()) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	got := s.answers()
	if len(got) != 1 || !bytes.Contains([]byte(got[0]), []byte(`"code":"timeout"`)) || !bytes.Contains([]byte(got[0]), []byte(`"id":7`)) {
		t.Fatalf("answers %q", got)
	}
	newDispatcher(r).route(&amqp.Delivery{CorrelationId: r.pending.correlationID(c),
		Body: []byte(`{"id":7,"type":"result","token":"t","method":"m"}`)})
	if got := s.answers(); len(got) != 1 {
		t.Fatalf("late result delivered: %q", got)
	}
	if len(hub.got) != 0 {
		t.Fatalf("late result broadcast: %q", hub.got)
	}
	if r.Pending() != 0 {
		t.Fatalf("pending %d", r.Pending())
	}
}

func TestCallWhileDisconnectedIsUnavailable(t *testing.T) {
	r := newTestRouter(&fakeHub{}, time.Minute)
	s := &sink{}
	f := protocol.Frame{ID: []byte(`"a"`), Method: "m"}
	r.Call(t.Context(), "t", &f, r.Routes().Load().Default(), s)
	got := s.answers()
	if len(got) != 1 || got[0] != `{"type":"error","id":"a","error":{"code":"unavailable","message":"the broker is not connected"}}` {
		t.Fatalf("got %q", got)
	}
	if r.Ready() == nil {
		t.Fatal("ready without a broker")
	}
}

func TestPendingTable(t *testing.T) {
	r := newTestRouter(&fakeHub{}, time.Minute)
	s := &sink{}
	calls := []*call{addCall(r, s, "t", "1", "m"), addCall(r, s, "t", "1", "m"), addCall(r, s, "u", "1", "m")}
	if r.Pending() != 3 {
		t.Fatalf("pending %d", r.Pending())
	}
	for _, c := range calls {
		ref, ok := r.pending.parseCorrelation(r.pending.correlationID(c))
		if !ok || ref != (corrRef{c.corr, c.secret}) {
			t.Fatalf("correlation id does not round-trip: %v %v", ref, ok)
		}
	}
	if _, ok := r.pending.parseCorrelation("other.1"); ok {
		t.Fatal("foreign correlation id parsed as ours")
	}
	if got := r.pending.takeByKey("t", []byte("1"), "m"); got != calls[0] {
		t.Fatal("takeByKey is not FIFO")
	}
	if r.pending.take(calls[0]) {
		t.Fatal("a call was taken twice")
	}
	ref1 := corrRef{calls[1].corr, calls[1].secret}
	for _, miss := range []struct {
		ref   corrRef
		token string
	}{{corrRef{calls[1].corr, calls[1].secret + 1}, "t"}, {ref1, "u"}} {
		if got, why := r.pending.takeByCorr(miss.ref, miss.token); got != nil || why != "mismatch" {
			t.Fatalf("takeByCorr with a wrong secret or token: %v, %q; want nil, mismatch", got, why)
		}
	}
	if got, _ := r.pending.takeByCorr(ref1, "t"); got != calls[1] {
		t.Fatal("takeByCorr: the call's own secret and token did not find it")
	}
	if got, why := r.pending.takeByCorr(ref1, "t"); got != nil || why != "late" {
		t.Fatalf("takeByCorr a second time: %v, %q; want nil, late", got, why)
	}
	if got := r.pending.takeByKey("t", []byte("1"), "m"); got != nil {
		t.Fatal("takeByKey found a call taken by correlation")
	}
	if n := r.FailPending(protocol.CodeShuttingDown, "bye"); n != 1 || r.Pending() != 0 {
		t.Fatalf("FailPending %d, pending %d", n, r.Pending())
	}
}
