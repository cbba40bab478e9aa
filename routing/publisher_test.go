package routing

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/piped-dev/piped/protocol"
)

// fakeChannel is a confirm-mode channel that records what is published and
// can hold every Publish (a broker that stopped reading) until released.
type fakeChannel struct {
	mu        sync.Mutex
	seq       uint64
	published [][]byte      // bodies, in publish order
	pubs      []fakePub     // where each went, in publish order
	discard   bool          // record nothing (benchmarks)
	hold      chan struct{} // when not nil, Publish waits until it is closed
	entered   chan struct{} // receives once per Publish that waits on hold
}

func newFakeChannel(hold bool) *fakeChannel {
	f := &fakeChannel{seq: 1, entered: make(chan struct{}, 1<<14)}
	if hold {
		f.hold = make(chan struct{})
	}
	return f
}

func (f *fakeChannel) GetNextPublishSeqNo() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seq
}

func (f *fakeChannel) Publish(exchange, key string, mandatory, immediate bool, msg amqp.Publishing) error {
	f.mu.Lock()
	hold := f.hold
	f.mu.Unlock()
	if hold != nil {
		f.entered <- struct{}{}
		<-hold
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	if f.discard {
		return nil
	}
	f.published = append(f.published, append([]byte(nil), msg.Body...))
	msg.Body = nil
	f.pubs = append(f.pubs, fakePub{exchange: exchange, key: key, mandatory: mandatory, msg: msg})
	return nil
}

// fakePub is one publish a fakeChannel took (without its body).
type fakePub struct {
	exchange, key string
	mandatory     bool
	msg           amqp.Publishing
}

func (f *fakeChannel) publishes() []fakePub {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakePub(nil), f.pubs...)
}

func (f *fakeChannel) release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hold != nil {
		close(f.hold)
		f.hold = nil
	}
}

func (f *fakeChannel) publishedBodies() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]byte(nil), f.published...)
}

// queueRouter is a router whose publisher writes to ch, with its writer
// goroutine running until the test ends (shutdown, then wait).
func queueRouter(t testing.TB, ch *fakeChannel, confirmTimeout time.Duration) (*Router, *publisher) {
	t.Helper()
	r := newTestRouter(&fakeHub{}, time.Hour)
	r.confirmTimeout = confirmTimeout
	p := newPublisher(r, ch, nil)
	r.pub.Store(p)
	done := make(chan struct{})
	go func() { defer close(done); p.write() }()
	t.Cleanup(func() {
		p.shutdown()
		ch.release()
		<-done
	})
	return r, p
}

// callAll makes n calls with ids from one goroutine and fails the test if
// they do not all return: Call must never wait for the broker.
func callAll(t *testing.T, r *Router, from protocol.Answerer, n int) {
	t.Helper()
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		for i := range n {
			r.Call(t.Context(), "tok", &protocol.Frame{ID: fmt.Appendf(nil, "%d", i), Method: "m"}, r.Routes().Load().Default(), from)
		}
	}()
	select {
	case <-returned:
	case <-time.After(30 * time.Second):
		t.Fatalf("Call blocked: %d calls did not return while the broker does not read", n)
	}
}

// countAnswers counts the error answers in got by message.
func countAnswers(got []string) map[string]int {
	out := map[string]int{}
	for _, a := range got {
		_, msg, _ := strings.Cut(a, `"message":"`)
		msg, _, _ = strings.Cut(msg, `"`)
		out[msg]++
	}
	return out
}

// waitFor polls cond until it holds, failing after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// While a Publish is stuck, calls fill the queue and then fail at once;
// once the stall outlasts amqp.confirm_timeout the queued calls fail and
// new ones are refused; when the broker reads again, calls flow. Every call
// gets exactly one answer.
func TestCallNeverWaitsForAStuckPublish(t *testing.T) {
	ch := newFakeChannel(true)
	r, p := queueRouter(t, ch, time.Hour) // the stall is checked by hand below
	s := &sink{}

	extra := 10
	r.Call(t.Context(), "tok", &protocol.Frame{ID: []byte(`"first"`), Method: "m"}, r.Routes().Load().Default(), s)
	<-ch.entered // the writer is stuck in the first Publish
	callAll(t, r, s, publishQueueSize+extra)
	got := countAnswers(s.answers())
	if got["the node's publish queue is full"] != extra || len(s.answers()) != extra {
		t.Fatalf("with the queue full: answers %v, want %d × queue full", got, extra)
	}
	if r.Ready() != nil {
		t.Fatalf("Ready = %v before the stall lasted confirm_timeout", r.Ready())
	}

	// The stall outlasts confirm_timeout: queued calls fail, new calls fail at once.
	r.confirmTimeout = time.Millisecond
	waitFor(t, "the publish to count as stalled", func() bool { return p.stalled(time.Now()) })
	if !p.checkStall(time.Now(), false) {
		t.Fatal("checkStall did not see the stall")
	}
	callAll(t, r, s, 5)
	got = countAnswers(s.answers())
	if got["the broker stopped reading publishes"] != publishQueueSize+5 {
		t.Fatalf("after the stall: answers %v, want %d × stopped reading", got, publishQueueSize+5)
	}
	if r.Ready() != ErrStalled {
		t.Fatalf("Ready = %v while stalled, want ErrStalled", r.Ready())
	}

	// The broker reads again: the stuck call is published, new calls too.
	ch.release()
	waitFor(t, "the stuck publish to return", func() bool { return !p.stalled(time.Now()) })
	r.confirmTimeout = time.Hour
	r.Call(t.Context(), "tok", &protocol.Frame{ID: []byte(`"after"`), Method: "m"}, r.Routes().Load().Default(), s)
	waitFor(t, "the call after the stall to be published", func() bool { return len(ch.publishedBodies()) == 2 })
	if r.Ready() != nil {
		t.Fatalf("Ready = %v after the stall", r.Ready())
	}
	if n := len(s.answers()); n != extra+publishQueueSize+5 {
		t.Fatalf("%d answers, want %d (one per refused call, none for the two published)", n, extra+publishQueueSize+5)
	}
	if r.Pending() != 2 {
		t.Fatalf("%d calls pending, want the 2 published", r.Pending())
	}
}

// A call refused unavailable (the publish queue is full) is answered once
// and let go at once: when its connection ends later, nothing is left to
// abandon (before, the caller's context kept every refused call until then,
// and ending it counted each as abandoned and ended its span again).
func TestRefusedCallLeavesAtOnce(t *testing.T) {
	ch := newFakeChannel(true)
	r, _ := queueRouter(t, ch, time.Hour)
	s := &sink{}
	r.Call(t.Context(), "tok", &protocol.Frame{ID: []byte(`"first"`), Method: "m"}, r.Routes().Load().Default(), s)
	<-ch.entered // the writer is stuck: the queue fills
	callAll(t, r, s, publishQueueSize)
	ctx, cancel := context.WithCancel(context.Background())
	const refused = 5
	for i := range refused {
		r.Call(ctx, "tok-refused", &protocol.Frame{ID: fmt.Appendf(nil, "%d", i), Method: "m"}, r.Routes().Load().Default(), s)
	}
	if got := countAnswers(s.answers()); got["the node's publish queue is full"] != refused {
		t.Fatalf("answers %v, want %d × queue full", got, refused)
	}
	cancel()
	time.Sleep(100 * time.Millisecond) // the context's AfterFuncs would run now
	if got := testutil.ToFloat64(r.metrics.CallsAbandoned); got != 0 {
		t.Fatalf("piped_calls_abandoned_total %v after the refused calls' caller ended, want 0", got)
	}
	if n := len(s.answers()); n != refused {
		t.Fatalf("%d answers, want %d", n, refused)
	}
}

// Shutdown answers every queued and every unconfirmed call "unavailable",
// once, and the writer stops even with a Publish under way.
func TestShutdownAnswersQueuedCalls(t *testing.T) {
	ch := newFakeChannel(true)
	r, p := queueRouter(t, ch, time.Hour)
	s := &sink{}
	r.Call(t.Context(), "tok", &protocol.Frame{ID: []byte("0"), Method: "m"}, r.Routes().Load().Default(), s)
	<-ch.entered
	callAll(t, r, s, 100)
	p.shutdown()
	got := countAnswers(s.answers())
	want := map[string]int{
		"the broker connection was lost before the call was confirmed": 1,
		"the broker connection was lost before the call was published": 100,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("answers after shutdown %v, want %v", got, want)
	}
	if r.Pending() != 0 {
		t.Fatalf("%d calls still pending", r.Pending())
	}
	p.shutdown() // idempotent
	ch.release()
	r.Call(t.Context(), "tok", &protocol.Frame{ID: []byte("late"), Method: "m"}, r.Routes().Load().Default(), s)
	if n := countAnswers(s.answers())["the broker is not connected"]; n != 1 {
		t.Fatalf("a call after shutdown: %v", countAnswers(s.answers()))
	}
}

// Calls made concurrently by many connections of one token with the same id
// and method are published in the order they became pending, so results
// without our correlation id reach them oldest first, in publish order.
func TestPublishOrderIsPendingOrder(t *testing.T) {
	ch := newFakeChannel(false)
	r, _ := queueRouter(t, ch, time.Hour)
	const senders, each = 8, 50
	var mu sync.Mutex
	sinks := map[string]*sink{} // payload → the caller's sink
	var wg sync.WaitGroup
	for g := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range each {
				s := &sink{}
				payload := fmt.Sprintf(`{"g":%d,"k":%d}`, g, k)
				mu.Lock()
				sinks[payload] = s
				mu.Unlock()
				r.Call(t.Context(), "tok", &protocol.Frame{ID: []byte("1"), Method: "m", Payload: []byte(payload)}, r.Routes().Load().Default(), s)
			}
		}()
	}
	wg.Wait()
	waitFor(t, "every call to be published", func() bool { return len(ch.publishedBodies()) == senders*each })

	d := newDispatcher(r)
	for i, body := range ch.publishedBodies() {
		var m struct{ Payload json.RawMessage }
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("published %q: %v", body, err)
		}
		d.route(&amqp.Delivery{Body: []byte(`{"id":1,"type":"result","token":"tok","method":"m","payload":{}}`)})
		if n := len(sinks[string(m.Payload)].answers()); n != 1 {
			t.Fatalf("the result for the call published %d-th went to another call (its caller has %d answers)", i, n)
		}
	}
}

// FlushNotices waits until every queued notice has ended: not while the
// broker holds the publishes; at once when they fail (the session ends).
// Every notice queued is counted out exactly once.
func TestFlushNotices(t *testing.T) {
	ch := newFakeChannel(true)
	r, p := queueRouter(t, ch, time.Hour)
	for i := range 5 {
		r.NotifyDisconnect(context.Background(), "tok", fmt.Sprintf("c%d", i), 1000, "client_closed")
	}
	held, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := r.FlushNotices(held); err == nil {
		t.Fatal("FlushNotices returned while the broker held every publish")
	}
	ch.release()
	p.shutdown() // the session ends: the notices not confirmed fail
	ctx, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if err := r.FlushNotices(ctx); err != nil {
		t.Fatalf("after the session ended: %v", err)
	}
	if n := r.notices.Load(); n != 0 {
		t.Fatalf("%d notices counted in flight after the flush", n)
	}
}
