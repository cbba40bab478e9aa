package shutdown

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is the sink every fake writes its steps to, in order.
type recorder struct {
	mu    sync.Mutex
	steps []string
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.steps = append(r.steps, s)
}

func (r *recorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.steps)
}

// fakeHub empties after emptyAfter calls of Len (never when negative).
type fakeHub struct {
	rec        *recorder
	emptyAfter int
	lens       int
	closeErr   error
	closeCtx   context.Context
}

func (h *fakeHub) Drain() { h.rec.add("hub.Drain") }
func (h *fakeHub) Len() int {
	h.lens++
	if h.emptyAfter >= 0 && h.lens > h.emptyAfter {
		return 0
	}
	return 3
}

func (h *fakeHub) Close(ctx context.Context) error {
	h.closeCtx = ctx
	h.rec.add("hub.Close")
	return h.closeErr
}

type fakeCalls struct {
	rec *recorder
	n   int
}

func (c *fakeCalls) FailPending(code, msg string) int {
	c.rec.add("FailPending " + code)
	return c.n
}

type fakeCloser struct {
	rec  *recorder
	name string
	err  error
}

func (c fakeCloser) Close() error { c.rec.add("close " + c.name); return c.err }

type fakeServer struct {
	rec  *recorder
	name string
	err  error
}

func (s fakeServer) Shutdown(ctx context.Context) error {
	s.rec.add("shutdown " + s.name)
	return s.err
}

type fakeBroker struct {
	rec *recorder
	err error
}

func (b fakeBroker) Stop(ctx context.Context) error { b.rec.add("broker.Stop"); return b.err }

type logSink struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logSink) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.buf.String() }

func newPlan(rec *recorder, hub *fakeHub, log io.Writer) *Plan {
	return &Plan{
		Hub:           hub,
		Calls:         &fakeCalls{rec: rec},
		StopAccepting: []io.Closer{fakeCloser{rec: rec, name: "client listener"}},
		Servers:       []Server{fakeServer{rec: rec, name: "client"}, fakeServer{rec: rec, name: "internal"}},
		Broker:        fakeBroker{rec: rec},
		DrainTimeout:  time.Hour,
		FailCode:      "shutting_down",
		FailMessage:   "bye",
		Poll:          time.Millisecond,
		Log:           slog.New(slog.NewTextHandler(log, nil)),
	}
}

var wantOrder = []string{
	"hub.Drain", "close client listener",
	"FailPending shutting_down", "hub.Close",
	"shutdown client", "shutdown internal",
	"broker.Stop",
}

func TestShutdownOrder(t *testing.T) {
	for _, tc := range []struct {
		name       string
		emptyAfter int // Len calls before the hub is empty; -1: never
		drain      time.Duration
		outer      time.Duration // the shutdown ctx's timeout
	}{
		{"hub already empty", 0, time.Hour, time.Hour},
		{"hub empties while waiting", 5, time.Hour, time.Hour},
		{"drain timeout ends the wait", -1, 30 * time.Millisecond, time.Hour},
		{"shutdown deadline ends the wait", -1, time.Hour, 30 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			hub := &fakeHub{rec: rec, emptyAfter: tc.emptyAfter}
			p := newPlan(rec, hub, io.Discard)
			p.DrainTimeout = tc.drain
			ctx, cancel := context.WithTimeout(context.Background(), tc.outer)
			defer cancel()
			if err := p.Shutdown(ctx); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			if got := rec.got(); !slices.Equal(got, wantOrder) {
				t.Errorf("steps\n got %q\nwant %q", got, wantOrder)
			}
			if tc.emptyAfter > 0 && hub.lens != tc.emptyAfter+1 {
				t.Errorf("hub polled %d times, want %d (until empty, then no more)", hub.lens, tc.emptyAfter+1)
			}
			// Hub.Close gets the shutdown deadline, not the drain's.
			want, _ := ctx.Deadline()
			if got, ok := hub.closeCtx.Deadline(); !ok || !got.Equal(want) {
				t.Errorf("Hub.Close deadline %v (%v), want the shutdown deadline %v", got, ok, want)
			}
		})
	}
}

// Problems of the later steps are logged and the steps after them still run;
// only the broker's error is returned.
func TestShutdownErrors(t *testing.T) {
	rec := &recorder{}
	var log logSink
	hub := &fakeHub{rec: rec, closeErr: errors.New("cut 2 connections")}
	p := newPlan(rec, hub, &log)
	p.Calls = &fakeCalls{rec: rec, n: 4}
	p.StopAccepting = []io.Closer{fakeCloser{rec: rec, name: "client listener", err: net.ErrClosed}}
	p.Servers = []Server{fakeServer{rec: rec, name: "client", err: errors.New("busy")}, fakeServer{rec: rec, name: "internal"}}
	brokerErr := errors.New("topology conflict")
	p.Broker = fakeBroker{rec: rec, err: brokerErr}

	err := p.Shutdown(context.Background())
	if !errors.Is(err, brokerErr) {
		t.Fatalf("Shutdown: %v, want the broker's error", err)
	}
	if got := rec.got(); !slices.Equal(got, wantOrder) {
		t.Errorf("steps\n got %q\nwant %q", got, wantOrder)
	}
	out := log.String()
	for _, want := range []string{"calls unanswered at the end of the drain", "calls=4", "cut 2 connections", "busy"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "closing the client listener") {
		t.Errorf("an already closed listener was logged:\n%s", out)
	}
}

func TestTask(t *testing.T) {
	t.Run("stop cancels and returns the error", func(t *testing.T) {
		want := errors.New("stopped")
		task := Go(func(ctx context.Context) error { <-ctx.Done(); return want })
		if err := task.Stop(context.Background()); !errors.Is(err, want) {
			t.Fatalf("Stop: %v", err)
		}
		<-task.Done()
		if !errors.Is(task.Err(), want) {
			t.Fatalf("Err: %v", task.Err())
		}
	})
	t.Run("stop is bounded by ctx", func(t *testing.T) {
		release := make(chan struct{})
		task := Go(func(ctx context.Context) error { <-release; return nil })
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := task.Stop(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("Stop: %v, want context.Canceled", err)
		}
		close(release)
		<-task.Done()
	})
}

func TestOnceListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := OnceListener(ln)
	if err := l.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Fatal("dial after Close succeeded")
	}
}
