package routing

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/piped-dev/piped/protocol"
)

// When a caller's context is done (its connection ended), its calls to a
// silent backend leave the pending table at once, without any answer, timers
// stopped: across the real broker. A call of a live connection, made after
// them, still gets its timeout; by the time it does, the abandoned calls'
// own (earlier) timeouts would have fired.
func TestCallsDroppedWhenCallerEnds(t *testing.T) {
	const n = 20
	const timeout = 3 * time.Second
	r := startBrokerRouter(t, timeout) // nothing consumes the out-queue: a silent backend
	ctx, cancel := context.WithCancel(context.Background())
	gone := &sink{}
	for i := range n {
		f := parseTestFrame(t, fmt.Sprintf(`{"id":%d,"method":"m"}`, i))
		r.Call(ctx, "tok-gone", &f, r.Routes().Load().Default(), gone)
	}
	live := &sink{}
	f := parseTestFrame(t, `{"id":"live","method":"m"}`)
	r.Call(context.Background(), "tok-live", &f, r.Routes().Load().Default(), live)
	waitUntil(t, timeout/2, "every call pending", func() bool { return r.Pending() == n+1 })

	cancel()
	waitUntil(t, 2*timeout, "the ended caller's calls leave the pending table", func() bool { return r.Pending() == 1 })
	if got := live.answers(); len(got) != 0 {
		t.Fatalf("the live call was answered before the abandoned calls left: %q", got)
	}
	if got := testutil.ToFloat64(r.metrics.CallsAbandoned); got != n {
		t.Fatalf("piped_calls_abandoned_total %v, want %d", got, n)
	}

	waitUntil(t, 3*timeout, "the live call's timeout", func() bool { return len(live.answers()) == 1 })
	if got := live.answers()[0]; !strings.Contains(got, `"code":"timeout"`) {
		t.Fatalf("live call answered %s", got)
	}
	if got := gone.answers(); len(got) != 0 {
		t.Fatalf("the ended caller got %d answers, first %s", len(got), got[0])
	}
	if got := testutil.ToFloat64(r.metrics.CallErrors.WithLabelValues(protocol.CodeTimeout)); got != 1 {
		t.Fatalf("timeouts counted %v, want 1 (the live call's)", got)
	}
	if r.Pending() != 0 {
		t.Fatalf("pending %d after the live call's timeout", r.Pending())
	}
}

// A call answered before its caller ends unregisters from the caller's
// context: ending the caller later abandons nothing.
func TestAnsweredCallLeavesCallerContext(t *testing.T) {
	r := newTestRouter(&fakeHub{}, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	from := &sink{}
	c := addCall(r, from, "tok", "1", "m")
	r.pending.dropOnDone(ctx, c, r.abandon)
	if got, _ := r.pending.takeByCorr(corrRef{c.corr, c.secret}, c.token); got != c {
		t.Fatal("call not pending")
	}
	if c.stopDrop() {
		t.Fatal("taking the call did not unregister it from the caller's context")
	}
	cancel()
	if got := testutil.ToFloat64(r.metrics.CallsAbandoned); got != 0 {
		t.Fatalf("abandoned %v after the call was answered", got)
	}
}

func parseTestFrame(t *testing.T, s string) protocol.Frame {
	t.Helper()
	f, err := protocol.ParseFrame([]byte(s))
	if err != nil {
		t.Fatalf("ParseFrame(%s): %v", s, err)
	}
	return f
}

func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// BenchmarkPendingCallerContext measures a call's life in the pending table
// (assign, insert, answered by correlation id) with and without tying it to
// a cancellable caller context, the connection's.
func BenchmarkPendingCallerContext(b *testing.B) {
	for _, tc := range []struct {
		name string
		ctx  context.Context
	}{{"background", context.Background()}, {"connection", liveUntilEnd(b)}} {
		b.Run(tc.name, func(b *testing.B) {
			r := newTestRouter(&fakeHub{}, time.Hour)
			b.ReportAllocs()
			for b.Loop() {
				c := &call{from: nopAnswerer{}, token: "0123456789abcdef", id: []byte("1"), method: "get-article", start: time.Now(), span: noopSpan}
				r.pending.assign(c)
				r.pending.dropOnDone(tc.ctx, c, r.abandon)
				r.pending.insert(c, time.Hour, r.expire)
				r.pending.takeByCorr(corrRef{c.corr, c.secret}, c.token)
			}
		})
	}
}

// liveUntilEnd returns a context cancelled when b ends.
func liveUntilEnd(b *testing.B) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	return ctx
}
