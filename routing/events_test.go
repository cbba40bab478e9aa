package routing

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/piped-dev/piped/config"
	"github.com/piped-dev/piped/telemetry"
)

// fakeClock is an afterFuncer whose time moves only when advance is called.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Duration
	timers []*fakeTimer
}

type fakeTimer struct {
	c       *fakeClock
	at      time.Duration
	f       func()
	stopped bool // stopped or fired
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) stopper {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now + d, f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

// advance moves the time by d and runs the functions of the timers due,
// in order, outside the clock's lock (as time.AfterFunc runs them on
// goroutines of their own).
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now += d
	var due []*fakeTimer
	keep := c.timers[:0]
	for _, t := range c.timers {
		switch {
		case t.stopped:
		case t.at <= c.now:
			t.stopped = true
			due = append(due, t)
		default:
			keep = append(keep, t)
		}
	}
	c.timers = keep
	c.mu.Unlock()
	sort.SliceStable(due, func(i, j int) bool { return due[i].at < due[j].at })
	for _, t := range due {
		t.f()
	}
}

// fakeBroker is a bindChannel that keeps the bindings as a broker would
// and logs every operation ("bind k", "bind k nowait", "unbind k").
type fakeBroker struct {
	mu       sync.Mutex
	bindings map[string]bool
	log      []string
	failAt   int // the operation number (from 1) that fails and every one after; 0: none
	ops      int
}

var errChannelClosed = errors.New("fake: channel closed")

func newFakeBroker() *fakeBroker { return &fakeBroker{bindings: map[string]bool{}} }

func (f *fakeBroker) op(entry string) error {
	f.ops++
	if f.failAt > 0 && f.ops >= f.failAt {
		return errChannelClosed
	}
	f.log = append(f.log, entry)
	return nil
}

func (f *fakeBroker) ExchangeBind(destination, key, source string, noWait bool, _ amqp.Table) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	entry := "bind " + key
	if noWait {
		entry += " nowait"
	}
	if err := f.op(entry); err != nil {
		return err
	}
	f.bindings[key] = true
	return nil
}

func (f *fakeBroker) ExchangeUnbind(destination, key, source string, _ bool, _ amqp.Table) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.op("unbind " + key); err != nil {
		return err
	}
	delete(f.bindings, key)
	return nil
}

// takeLog returns the operations since the last call, without nowait marks.
func (f *fakeBroker) takeLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, len(f.log))
	for i, e := range f.log {
		out[i] = strings.TrimSuffix(e, " nowait")
	}
	f.log = nil
	return out
}

func (f *fakeBroker) bound() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for k := range f.bindings {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// harnessE drives eventBindings the way the session and the gateway do,
// one step at a time: hold waits for its binding, made by a synchronous
// flush standing in for the binder.
type harnessE struct {
	t      *testing.T
	e      *eventBindings
	clock  *fakeClock
	broker *fakeBroker
}

func newHarnessE(t *testing.T, delay time.Duration) *harnessE {
	clock := &fakeClock{}
	return &harnessE{t: t, e: newEventBindings("q", "x", delay, clock, nil), clock: clock, broker: newFakeBroker()}
}

func (h *harnessE) refs(key string) int {
	h.e.mu.Lock()
	defer h.e.mu.Unlock()
	if b := h.e.keys[key]; b != nil {
		return b.refs
	}
	return 0
}

// hold holds key and returns hold's error, flushing while it waits.
func (h *harnessE) hold(key string) error {
	h.t.Helper()
	before := h.refs(key)
	done := make(chan error, 1)
	go func() { done <- h.e.hold(context.Background(), key) }()
	for h.refs(key) == before {
		time.Sleep(time.Millisecond)
	}
	for {
		select {
		case err := <-done:
			return err
		case <-time.After(2 * time.Second):
			h.t.Fatalf("hold %s did not return", key)
		default:
			if h.attached() {
				if err := h.e.flush(h.broker); err != nil {
					h.t.Fatalf("flush: %v", err)
				}
			}
			time.Sleep(time.Millisecond)
		}
	}
}

func (h *harnessE) attached() bool {
	h.e.mu.Lock()
	defer h.e.mu.Unlock()
	return h.e.attached
}

// do carries out one step: "hold k", "release k", "tick 10s", "connect"
// (attach and flush), "disconnect" (detach), "stop" (the node stops:
// unbindReleased and flush), then flushes when attached.
func (h *harnessE) do(step string) {
	h.t.Helper()
	verb, arg, _ := strings.Cut(step, " ")
	switch verb {
	case "hold":
		if err := h.hold(arg); err != nil {
			h.t.Fatalf("%s: %v", step, err)
		}
	case "release":
		h.e.release(arg)
	case "tick":
		d, err := time.ParseDuration(arg)
		if err != nil {
			h.t.Fatal(err)
		}
		h.clock.advance(d)
	case "connect":
		h.e.attach()
	case "disconnect":
		h.e.detach()
	case "stop":
		h.e.unbindReleased()
	default:
		h.t.Fatalf("unknown step %q", step)
	}
	if h.attached() {
		if err := h.e.flush(h.broker); err != nil {
			h.t.Fatalf("%s: flush: %v", step, err)
		}
	}
}

// TestEventBindingsSteps walks through reference counting, the unbind
// delay, reconnects and the stop, checking the broker's operations and
// bindings after each step.
func TestEventBindingsSteps(t *testing.T) {
	type step struct {
		do    string
		ops   string // the broker operations the step caused, sorted, joined by ", "
		bound string // the bindings afterwards, sorted, joined by " "
	}
	tests := []struct {
		name  string
		delay time.Duration
		steps []step
	}{
		{"one bind per key, unbind after the delay", 30 * time.Second, []step{
			{"connect", "", ""},
			{"hold a", "bind a", "a"},
			{"hold a", "", "a"},
			{"release a", "", "a"},
			{"release a", "", "a"},
			{"tick 29s", "", "a"},
			{"tick 1s", "unbind a", ""},
		}},
		{"back within the delay: no unbind, and the delay starts again", 30 * time.Second, []step{
			{"connect", "", ""},
			{"hold a", "bind a", "a"},
			{"release a", "", "a"},
			{"tick 20s", "", "a"},
			{"hold a", "", "a"},
			{"tick 20s", "", "a"},
			{"release a", "", "a"},
			{"tick 20s", "", "a"},
			{"tick 10s", "unbind a", ""},
		}},
		{"delay 0 unbinds at once", 0, []step{
			{"connect", "", ""},
			{"hold a", "bind a", "a"},
			{"hold b", "bind b", "a b"},
			{"release a", "unbind a", "b"},
			{"hold a", "bind a", "a b"},
		}},
		{"held while disconnected: bound at connect", 30 * time.Second, []step{
			{"hold a", "", ""},
			{"hold b", "", ""},
			{"connect", "bind a, bind b", "a b"},
		}},
		{"every held key bound again after a reconnect", 30 * time.Second, []step{
			{"connect", "", ""},
			{"hold a", "bind a", "a"},
			{"hold b", "bind b", "a b"},
			{"release b", "", "a b"}, // within its delay: bound again too
			{"disconnect", "", "a b"},
			{"connect", "bind a, bind b", "a b"},
			{"tick 30s", "unbind b", "a"},
		}},
		{"delay over while disconnected: unbound at connect", 30 * time.Second, []step{
			{"connect", "", ""},
			{"hold a", "bind a", "a"},
			{"disconnect", "", "a"},
			{"release a", "", "a"},
			{"tick 30s", "", "a"},
			{"connect", "unbind a", ""},
		}},
		{"released and held again while disconnected: bound at connect", 0, []step{
			{"connect", "", ""},
			{"hold a", "bind a", "a"},
			{"disconnect", "", "a"},
			{"release a", "", "a"},
			{"hold a", "", "a"},
			{"connect", "bind a", "a"},
		}},
		{"stop removes the bindings within their delay, keeps the held ones", time.Minute, []step{
			{"connect", "", ""},
			{"hold a", "bind a", "a"},
			{"hold b", "bind b", "a b"},
			{"release a", "", "a b"},
			{"stop", "unbind a", "b"},
			{"tick 1m", "", "b"},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarnessE(t, tc.delay)
			for i, s := range tc.steps {
				h.do(s.do)
				ops := h.broker.takeLog()
				slices.Sort(ops) // attach goes through a map
				if got := strings.Join(ops, ", "); got != s.ops {
					t.Fatalf("step %d %q: operations %q, want %q", i, s.do, got, s.ops)
				}
				if got := strings.Join(h.broker.bound(), " "); got != s.bound {
					t.Fatalf("step %d %q: bindings %q, want %q", i, s.do, got, s.bound)
				}
				if _, n := h.e.stats(); n != len(h.broker.bound()) {
					t.Fatalf("step %d %q: %d keys counted bound, the broker has %d", i, s.do, n, len(h.broker.bound()))
				}
			}
		})
	}
}

// TestEventBindingsForget checks that a key that wants nothing and has
// nothing is forgotten, so the table does not grow with every token seen.
func TestEventBindingsForget(t *testing.T) {
	h := newHarnessE(t, time.Second)
	h.do("connect")
	for i := range 100 {
		k := fmt.Sprint("k", i)
		h.do("hold " + k)
		h.do("release " + k)
	}
	h.do("tick 1s")
	h.e.mu.Lock()
	n := len(h.e.keys)
	h.e.mu.Unlock()
	if n != 0 || len(h.broker.bound()) != 0 {
		t.Fatalf("%d keys kept, %d bindings left; want none", n, len(h.broker.bound()))
	}
}

// TestEventBindingsBatch checks one batch: binds first and pipelined (all
// but the batch's last operation without waiting), unbinds after them.
func TestEventBindingsBatch(t *testing.T) {
	tests := []struct {
		name    string
		release []string // held keys released (delay 0) before the batch
		hold    []string // keys held before the batch
		want    []string
	}{
		{"binds only: the last waits", nil, []string{"a", "b", "c"},
			[]string{"bind a nowait", "bind b nowait", "bind c"}},
		{"binds and unbinds: every bind pipelined, unbinds after", []string{"x", "y"}, []string{"a", "b"},
			[]string{"bind a nowait", "bind b nowait", "unbind x", "unbind y"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarnessE(t, 0)
			h.do("connect")
			for _, k := range tc.release {
				h.do("hold " + k)
			}
			h.broker.takeLog()
			// Queue everything, then flush once.
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			for i, k := range tc.hold {
				if i < len(tc.release) {
					h.e.release(tc.release[i])
				}
				wg.Add(1)
				go func() { defer wg.Done(); _ = h.e.hold(ctx, k) }()
				for h.refs(k) == 0 {
					time.Sleep(time.Millisecond)
				}
			}
			if err := h.e.flush(h.broker); err != nil {
				t.Fatal(err)
			}
			cancel()
			wg.Wait()
			h.broker.mu.Lock()
			got := h.broker.log
			h.broker.mu.Unlock()
			if !slices.Equal(got, tc.want) {
				t.Fatalf("operations %q, want %q", got, tc.want)
			}
		})
	}
}

// TestEventBindingsFailedBatch checks that a batch the channel fails is
// redone by the next session, and that waiters are let go at detach.
func TestEventBindingsFailedBatch(t *testing.T) {
	h := newHarnessE(t, 0)
	h.do("connect")
	h.broker.failAt = 1
	done := make(chan error, 1)
	go func() { done <- h.e.hold(context.Background(), "a") }()
	for h.refs("a") == 0 {
		time.Sleep(time.Millisecond)
	}
	if err := h.e.flush(h.broker); !errors.Is(err, errChannelClosed) {
		t.Fatalf("flush: %v, want the channel's error", err)
	}
	select {
	case err := <-done:
		t.Fatalf("hold returned %v before the session ended", err)
	case <-time.After(20 * time.Millisecond):
	}
	h.e.detach()
	if err := <-done; err != nil {
		t.Fatalf("hold after detach: %v, want nil (bound before the next session is ready)", err)
	}
	h.broker.failAt = 0
	h.do("connect")
	if got := h.broker.bound(); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("bindings after the next connect: %q, want [a]", got)
	}
}

// TestEventBindingsHoldTimeout checks that hold gives up when its context
// ends (no binder runs), and that the connection stays counted.
func TestEventBindingsHoldTimeout(t *testing.T) {
	h := newHarnessE(t, 0)
	h.e.attach()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := h.e.hold(ctx, "a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hold: %v, want the deadline", err)
	}
	if n := h.refs("a"); n != 1 {
		t.Fatalf("refs %d after a failed hold, want 1 (the caller releases)", n)
	}
	h.e.release("a")
	h.e.detach()
}

// TestEventBindingsConcurrent runs the binder as the session does while
// many goroutines hold and release keys; at the end every binding of a
// released key is gone and the held ones exist. Run with -race.
func TestEventBindingsConcurrent(t *testing.T) {
	broker := newFakeBroker()
	m := telemetry.NewMetrics()
	e := newEventBindings("q", "x", time.Millisecond, realClock{}, m)
	e.attach()
	ctx, cancel := context.WithCancel(context.Background())
	stop := make(chan struct{})
	binderDone := make(chan error, 1)
	go func() { binderDone <- e.run(ctx, broker, stop) }()

	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for range 300 {
				k := fmt.Sprint("k", rng.IntN(20))
				if err := e.hold(context.Background(), k); err != nil {
					t.Errorf("hold: %v", err)
				}
				broker.mu.Lock()
				ok := broker.bindings[k]
				broker.mu.Unlock()
				if !ok {
					t.Errorf("hold %s returned before the broker had the binding", k)
				}
				if rng.IntN(4) == 0 {
					time.Sleep(time.Duration(rng.IntN(2000)) * time.Microsecond)
				}
				e.release(k)
			}
		}()
	}
	wg.Wait()
	if err := e.hold(context.Background(), "kept"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !slices.Equal(broker.bound(), []string{"kept"}) {
		if time.Now().After(deadline) {
			t.Fatalf("bindings %q after every other key was released, want [kept]", broker.bound())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel() // the node stops: released keys are unbound, held ones stay
	if err := <-binderDone; err != nil {
		t.Fatal(err)
	}
	close(stop)
	e.detach()
	if got := testutil.ToFloat64(m.EventBindings); got != 1 {
		t.Errorf("piped_event_bindings = %v, want 1", got)
	}
	binds := testutil.ToFloat64(m.EventBindingOps.WithLabelValues("bind"))
	unbinds := testutil.ToFloat64(m.EventBindingOps.WithLabelValues("unbind"))
	if binds-unbinds != 1 || binds < 21 {
		t.Errorf("ops: %v binds, %v unbinds; want one more bind than unbinds, at least 21", binds, unbinds)
	}
	t.Logf("16 goroutines × 300 connections over 20 keys (1 ms delay): %v binds, %v unbinds", binds, unbinds)
}

// TestBindTokenKey checks that the key of a token is its TokenHash: the
// raw token never reaches a binding.
func TestBindTokenKey(t *testing.T) {
	cfg := config.Defaults().AMQP
	cfg.EventsExchange = "events"
	r := New(Options{NodeID: "n1", AMQP: cfg, Timeout: time.Minute, Hub: &fakeHub{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: telemetry.NewMetrics()})
	const token = "secret-session-token"
	if err := r.BindToken(context.Background(), token); err != nil { // not connected: returns at once
		t.Fatal(err)
	}
	r.events.mu.Lock()
	_, byHash := r.events.keys[telemetry.TokenHash(token)]
	_, byToken := r.events.keys[token]
	r.events.mu.Unlock()
	if !byHash || byToken {
		t.Fatalf("keyed by hash %v, by token %v; want the hash only", byHash, byToken)
	}
	if k := telemetry.TokenHash(token); len(k) != 12 {
		t.Fatalf("key %q: want 12 hex digits", k)
	}
	r.ReleaseToken(token)
	off := newTestRouter(&fakeHub{}, time.Minute)
	if off.events != nil || off.BindToken(context.Background(), token) != nil {
		t.Fatal("events_exchange empty: want no bindings")
	}
	off.ReleaseToken(token)
}
