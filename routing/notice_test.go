package routing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/piped-dev/piped/protocol"
)

// recChannel is a confirm-mode channel that records every publish and
// confirms (or nacks) each through the confirms channel run reads.
type recChannel struct {
	mu       sync.Mutex
	seq      uint64
	pubs     []recorded
	nack     bool
	confirms chan amqp.Confirmation
}

type recorded struct {
	exchange, key string
	msg           amqp.Publishing
}

func (f *recChannel) GetNextPublishSeqNo() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seq + 1
}

func (f *recChannel) Publish(exchange, key string, _, _ bool, msg amqp.Publishing) error {
	f.mu.Lock()
	f.seq++
	msg.Body = append([]byte(nil), msg.Body...)
	f.pubs = append(f.pubs, recorded{exchange, key, msg})
	conf := amqp.Confirmation{DeliveryTag: f.seq, Ack: !f.nack}
	f.mu.Unlock()
	f.confirms <- conf
	return nil
}

func (f *recChannel) published() []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recorded(nil), f.pubs...)
}

// confirmingRouter is a router whose publisher writes to a recChannel and
// resolves its confirms, both goroutines running until the test ends.
func confirmingRouter(t *testing.T, requestTimeout time.Duration) (*Router, *recChannel) {
	t.Helper()
	r := newTestRouter(&fakeHub{}, requestTimeout)
	ch := &recChannel{confirms: make(chan amqp.Confirmation, 1024)}
	p := newPublisher(r, ch, nil)
	r.pub.Store(p)
	returns := make(chan amqp.Return)
	wrote, ran := make(chan struct{}), make(chan struct{})
	go func() { defer close(wrote); p.write() }()
	go func() { defer close(ran); p.run(ch.confirms, returns) }()
	t.Cleanup(func() {
		p.shutdown()
		<-wrote // no Publish sends a confirm any more
		close(returns)
		close(ch.confirms)
		<-ran
	})
	return r, ch
}

func noticeCount(r *Router, method, result string) float64 {
	return testutil.ToFloat64(r.metrics.Notices.WithLabelValues(method, result))
}

// Notices go to the out-exchange with their method as routing key and the
// properties of the spec (no reply_to, no correlation id, no expiration),
// and their confirm or nack is counted; they are never pending.
func TestNotifyPublishesAndCounts(t *testing.T) {
	r, ch := confirmingRouter(t, time.Hour)
	r.NotifyConnect(t.Context(), `t"1`, "n1.00ff")
	r.NotifyDisconnect(t.Context(), `t"1`, "n1.00ff", 4008, "slow_client")
	waitFor(t, "two confirmed notices", func() bool {
		return noticeCount(r, protocol.MethodConnect, noticeConfirmed) == 1 && noticeCount(r, protocol.MethodDisconnect, noticeConfirmed) == 1
	})
	pubs := ch.published()
	want := []struct{ key, body string }{
		{"$connect", `{"type":"connect","method":"$connect","token":"t\"1","node":"n1","connection":"n1.00ff"}`},
		{"$disconnect", `{"type":"disconnect","method":"$disconnect","token":"t\"1","node":"n1","connection":"n1.00ff","code":4008,"reason":"slow_client"}`},
	}
	if len(pubs) != len(want) {
		t.Fatalf("%d publishes, want %d", len(pubs), len(want))
	}
	for i, w := range want {
		p := pubs[i]
		if p.exchange != r.topo.ExchangeOut || p.key != w.key || string(p.msg.Body) != w.body {
			t.Errorf("publish %d: %s %s %s, want %s %s %s", i, p.exchange, p.key, p.msg.Body, r.topo.ExchangeOut, w.key, w.body)
		}
		m := p.msg
		if m.ContentType != "application/json" || m.AppId != "piped" || m.Headers["x-piped-node"] != "n1" ||
			m.ReplyTo != "" || m.CorrelationId != "" || m.Expiration != "" || !strings.HasPrefix(m.MessageId, r.pending.prefix+"notice-") {
			t.Errorf("publish %d properties: %+v", i, m)
		}
	}
	if r.Pending() != 0 {
		t.Fatalf("%d pending after notices", r.Pending())
	}
	if n := testutil.ToFloat64(r.metrics.Calls); n != 0 {
		t.Fatalf("notices counted as %v calls", n)
	}

	ch.mu.Lock()
	ch.nack = true
	ch.mu.Unlock()
	r.Notify(t.Context(), protocol.MethodConnect, []byte(`{}`))
	waitFor(t, "a nacked notice", func() bool { return noticeCount(r, protocol.MethodConnect, noticeNack) == 1 })
}

// Without a broker a notice is dropped at once and counted: it never blocks.
func TestNotifyWhileDisconnected(t *testing.T) {
	r := newTestRouter(&fakeHub{}, time.Hour)
	r.NotifyDisconnect(t.Context(), "t", "n1.0a", 1000, "client_closed")
	if got := noticeCount(r, protocol.MethodDisconnect, noticeUnavailable); got != 1 {
		t.Fatalf("unavailable = %v, want 1", got)
	}
}

// A notice still queued or unconfirmed when the session ends is counted
// unavailable, once.
func TestNoticeLostAtShutdown(t *testing.T) {
	ch := newFakeChannel(true)
	r, p := queueRouter(t, ch, time.Hour)
	r.NotifyConnect(t.Context(), "t", "n1.01") // the writer takes it and hangs in Publish
	<-ch.entered
	r.NotifyConnect(t.Context(), "t", "n1.02") // queued
	p.shutdown()
	ch.release()
	waitFor(t, "both notices counted", func() bool { return noticeCount(r, protocol.MethodConnect, noticeUnavailable) == 2 })
	if got := noticeCount(r, protocol.MethodConnect, noticeConfirmed); got != 0 {
		t.Fatalf("confirmed = %v", got)
	}
}

// fakeConns lists n connections.
type fakeConns int

func (n fakeConns) Connections() iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		for i := range int(n) {
			if !yield(fmt.Sprintf("t%d", i), fmt.Sprintf("n1.%016x", i)) {
				return
			}
		}
	}
}

// A presence round lists every connection in chunks of 1000, numbered from
// 0, only the final one "last"; a node without connections sends one.
func TestPresenceRound(t *testing.T) {
	for _, tc := range []struct {
		conns      int
		wantChunks []int
	}{
		{0, []int{0}},
		{1, []int{1}},
		{1000, []int{1000}},
		{1001, []int{1000, 1}},
		{2500, []int{1000, 1000, 500}},
	} {
		t.Run(fmt.Sprint(tc.conns), func(t *testing.T) {
			r, ch := confirmingRouter(t, time.Hour)
			r.presenceRound(t.Context(), fakeConns(tc.conns), nil)
			waitFor(t, "the round confirmed", func() bool {
				return noticeCount(r, protocol.MethodPresence, noticeConfirmed) == float64(len(tc.wantChunks))
			})
			seen := map[string]bool{}
			for i, p := range ch.published() {
				var n struct {
					Type, Method, Node string
					Connections        []struct{ Token, Connection string }
					Seq                *int
					Last               *bool
				}
				if err := json.Unmarshal(p.msg.Body, &n); err != nil {
					t.Fatalf("notice %d: %v", i, err)
				}
				last := i == len(tc.wantChunks)-1
				if n.Type != "presence" || n.Method != "$presence" || n.Node != "n1" || p.key != "$presence" ||
					n.Seq == nil || *n.Seq != i || n.Last == nil || *n.Last != last || len(n.Connections) != tc.wantChunks[i] {
					t.Fatalf("notice %d: %+v (%d connections), want seq %d last %v with %d", i, n, len(n.Connections), i, last, tc.wantChunks[i])
				}
				for _, c := range n.Connections {
					seen[c.Token+" "+c.Connection] = true
				}
			}
			if len(seen) != tc.conns {
				t.Fatalf("%d distinct connections listed, want %d", len(seen), tc.conns)
			}
		})
	}
}

// RunPresence publishes a round per interval and returns when stopped.
func TestRunPresenceStops(t *testing.T) {
	r, _ := confirmingRouter(t, time.Hour)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.RunPresence(ctx, 5*time.Millisecond, fakeConns(3)) }()
	waitFor(t, "two rounds", func() bool { return noticeCount(r, protocol.MethodPresence, noticeConfirmed) >= 2 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// The backend's answer to $connect decides; anything that is no verdict denies.
func TestVerdict(t *testing.T) {
	r := newTestRouter(&fakeHub{}, time.Hour)
	for _, tc := range []struct {
		name, msg  string
		allow      bool
		reason     string
		noVerdict  bool
		badCounted bool
	}{
		{"allow", `{"type":"result","id":"x","payload":{"allow":true}}`, true, "", false, false},
		{"deny with reason", `{"type":"result","id":"x","payload":{"allow":false,"reason":"banned \"you\""}}`, false, `banned "you"`, false, false},
		{"deny without reason", `{"type":"result","payload":{"allow":false}}`, false, reasonNotAuthorized, false, false},
		{"no payload", `{"type":"result","id":"x"}`, false, reasonBadAnswer, false, true},
		{"allow not a bool", `{"type":"result","payload":{"allow":"yes"}}`, false, reasonBadAnswer, false, true},
		{"payload not an object", `{"type":"result","payload":[true]}`, false, reasonBadAnswer, false, true},
		{"reason not a string", `{"type":"result","payload":{"allow":false,"reason":7}}`, false, reasonBadAnswer, false, true},
		{"timeout error frame", `{"type":"error","id":"x","error":{"code":"timeout","message":"no result within 1s"}}`, false, "", true, false},
		{"unroutable error frame", `{"type":"error","id":"x","error":{"code":"unroutable","message":"no queue"}}`, false, "", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := testutilCount(t, r, "bad_authorize_answer")
			allow, reason, err := r.verdict([]byte(tc.msg))
			if allow != tc.allow || reason != tc.reason || errors.Is(err, ErrNoVerdict) != tc.noVerdict || (err != nil && !tc.noVerdict) {
				t.Fatalf("verdict = %v %q %v, want %v %q no verdict %v", allow, reason, err, tc.allow, tc.reason, tc.noVerdict)
			}
			if counted := testutilCount(t, r, "bad_authorize_answer") > before; counted != tc.badCounted {
				t.Fatalf("counted as bad answer: %v, want %v", counted, tc.badCounted)
			}
		})
	}
}

// Authorize publishes $connect as a call and returns the verdict of the
// result, matched by correlation id or by token and id (with or without a
// method); without an answer it gives up when ctx ends and holds nothing.
func TestAuthorize(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer func(r *Router, m amqp.Publishing) *amqp.Delivery // nil: silent backend
		allow  bool
		reason string
	}{
		{"by correlation id", func(r *Router, m amqp.Publishing) *amqp.Delivery {
			return &amqp.Delivery{CorrelationId: m.CorrelationId, Body: []byte(`{"type":"result","token":"tok","payload":{"allow":true}}`)}
		}, true, ""},
		{"by token and id, no method", func(r *Router, m amqp.Publishing) *amqp.Delivery {
			return &amqp.Delivery{Body: []byte(`{"type":"result","token":"tok","id":"n1.00aa","payload":{"allow":false,"reason":"banned"}}`)}
		}, false, "banned"},
		{"by token, id and method", func(r *Router, m amqp.Publishing) *amqp.Delivery {
			return &amqp.Delivery{Body: []byte(`{"type":"result","token":"tok","id":"n1.00aa","method":"$connect","payload":{"allow":true}}`)}
		}, true, ""},
		{"silent backend", nil, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, ch := confirmingRouter(t, time.Hour)
			timeout := time.Hour
			if tc.answer == nil {
				timeout = 50 * time.Millisecond
			}
			ctx, cancel := context.WithTimeout(t.Context(), timeout)
			defer cancel()
			type res struct {
				allow  bool
				reason string
				err    error
			}
			done := make(chan res, 1)
			go func() {
				a, rs, err := r.Authorize(ctx, "tok", "n1.00aa")
				done <- res{a, rs, err}
			}()
			waitFor(t, "the $connect call published", func() bool { return len(ch.published()) == 1 })
			p := ch.published()[0]
			m := p.msg
			if p.key != "$connect" || string(m.Body) != `{"type":"connect","method":"$connect","token":"tok","node":"n1","connection":"n1.00aa","id":"n1.00aa"}` ||
				m.ReplyTo != r.topo.QueueIn || m.CorrelationId == "" || m.Expiration == "" || m.Expiration == r.routes.Load().ForNotice("$connect").Expiration {
				t.Fatalf("published %s %s %+v", p.key, m.Body, m)
			}
			if tc.answer != nil {
				newDispatcher(r).route(tc.answer(r, m))
			}
			got := <-done
			if tc.answer == nil {
				if !errors.Is(got.err, ErrNoVerdict) {
					t.Fatalf("silent backend: %v %q %v, want ErrNoVerdict", got.allow, got.reason, got.err)
				}
			} else if got.allow != tc.allow || got.reason != tc.reason || got.err != nil {
				t.Fatalf("got %v %q %v, want %v %q", got.allow, got.reason, got.err, tc.allow, tc.reason)
			}
			waitFor(t, "nothing pending", func() bool { return r.Pending() == 0 })
		})
	}
}

// Without a broker Authorize returns at once with no verdict.
func TestAuthorizeWhileDisconnected(t *testing.T) {
	r := newTestRouter(&fakeHub{}, time.Hour)
	if _, _, err := r.Authorize(t.Context(), "t", "n1.01"); !errors.Is(err, ErrNoVerdict) {
		t.Fatalf("err = %v, want ErrNoVerdict", err)
	}
	if r.Pending() != 0 {
		t.Fatalf("pending %d", r.Pending())
	}
}
