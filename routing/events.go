package routing

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/piped-dev/piped/telemetry"
)

// Targeted events (amqp.events_exchange): while the node holds at least one
// connection of a token, its own events exchange (Topology.NodeEvents, a
// non-durable fanout bound to the in-queue) is bound to the events exchange
// (a durable direct exchange) with the token's key, telemetry.TokenHash(token),
// so that an event a backend publishes there with that routing key reaches
// only the nodes that hold the token. The binding is transient (its
// destination is not durable): no disk transaction per token. The raw
// token never appears in a binding.
//
// eventBindings counts the connections of each key and says which bindings
// should exist; one binder per broker session (run, on a channel of its
// own) makes the broker agree, in batches. The gateway holds a token before
// it announces a connection ($connect) and releases it when the connection
// ends; the binding goes amqp.events_unbind_delay after the last release,
// unless the token is held again meanwhile.

// BindToken counts a connection of token for targeted events and returns
// once this node's events exchange is bound to amqp.events_exchange with the
// token's key (or at once when the mode is off or the broker is not
// connected: the next session binds every held token before the node is
// ready), or with an error when ctx is done first. The gateway calls it
// before it announces the connection ($connect), so that a backend that
// learnt of the connection can reach it. Every call, whatever it returned,
// is matched by one ReleaseToken.
func (r *Router) BindToken(ctx context.Context, token string) error {
	if r.events == nil {
		return nil
	}
	return r.events.hold(ctx, telemetry.TokenHash(token))
}

// ReleaseToken undoes one BindToken when its connection ended: after the
// token's last connection on the node, its binding goes once
// amqp.events_unbind_delay has passed without a new one. It never blocks.
func (r *Router) ReleaseToken(token string) {
	if r.events != nil {
		r.events.release(telemetry.TokenHash(token))
	}
}

// maxBindBatch bounds the operations one batch carries: binds are pipelined
// (sent without waiting for bind-ok), and a batch ends with one operation
// that waits, so a batch costs one round trip plus the broker's work.
const maxBindBatch = 256

// afterFuncer is the time source of the unbind delay: realClock, or a fake
// in tests.
type afterFuncer interface {
	AfterFunc(d time.Duration, f func()) stopper
}

// stopper is a timer AfterFunc started (*time.Timer).
type stopper interface{ Stop() bool }

// realClock is afterFuncer on package time.
type realClock struct{}

func (realClock) AfterFunc(d time.Duration, f func()) stopper { return time.AfterFunc(d, f) }

// bindChannel is the part of *amqp.Channel the binder uses.
type bindChannel interface {
	ExchangeBind(destination, key, source string, noWait bool, args amqp.Table) error
	ExchangeUnbind(destination, key, source string, noWait bool, args amqp.Table) error
}

// bindOp is a binding operation a batch carries out for a key.
type bindOp uint8

const (
	opNone bindOp = iota
	opBind
	opUnbind
)

// tokenBinding is the state of one key; every field is guarded by
// eventBindings.mu.
type tokenBinding struct {
	key      string
	refs     int           // connections of the key on this node
	want     bool          // the binding should exist: refs > 0, or the unbind delay runs
	bound    bool          // the broker has the binding, as far as the node knows
	queued   bool          // in eventBindings.dirty
	inflight bindOp        // what a running batch does for the key; opNone when nothing
	delay    stopper       // the unbind delay's timer; nil when none runs
	delayGen uint64        // tells the current delay's callback from a stopped one's
	ready    chan struct{} // closed once bound (hold waits on it); nil when nobody waits
}

// eventBindings keeps the node exchange's bindings to the events exchange in
// step with the tokens the node holds. hold and release may be called from
// any goroutine; attach, flush, run and detach belong to the broker
// session (one at a time). The zero value is not usable; use
// newEventBindings.
type eventBindings struct {
	// Set at construction: the node's events exchange (the bindings'
	// destination) and amqp.events_exchange (their source).
	dest, exchange string
	delay          time.Duration
	clock          afterFuncer
	gauge          interface{ Set(float64) }
	binds, unbinds interface{ Inc() }
	wake           chan struct{} // capacity 1: something was queued

	mu sync.Mutex
	// Guarded by mu.
	keys     map[string]*tokenBinding
	dirty    []*tokenBinding // keys whose binding may differ from what they want, in order
	attached bool            // a session's binder runs (between attach and detach)
	nbound   int             // keys with bound set: the gauge
}

// newEventBindings returns the bindings of dest to exchange, with the
// unbind delay delay, recording into m (nil: nowhere, for tests).
func newEventBindings(dest, exchange string, delay time.Duration, clock afterFuncer, m *telemetry.Metrics) *eventBindings {
	e := &eventBindings{
		dest: dest, exchange: exchange, delay: delay, clock: clock,
		gauge: nopMetric{}, binds: nopMetric{}, unbinds: nopMetric{},
		wake: make(chan struct{}, 1),
		keys: make(map[string]*tokenBinding),
	}
	if m != nil {
		e.gauge = m.EventBindings
		e.binds = m.EventBindingOps.WithLabelValues("bind")
		e.unbinds = m.EventBindingOps.WithLabelValues("unbind")
	}
	return e
}

type nopMetric struct{}

func (nopMetric) Set(float64) {}
func (nopMetric) Inc()        {}

// hold counts one more connection of key and returns once the binding of
// key exists on the broker, or at once when no broker session runs (the
// next session binds every held key before the node is ready), or when a
// session ends while it waits (the same), or with ctx's error when ctx is
// done first. Whatever it returns, the connection is counted: release must
// follow.
func (e *eventBindings) hold(ctx context.Context, key string) error {
	e.mu.Lock()
	b := e.keys[key]
	if b == nil {
		b = &tokenBinding{key: key}
		e.keys[key] = b
	}
	b.refs++
	e.stopDelayLocked(b) // back within the delay: no unbind
	b.want = true
	if !e.attached || b.bound && b.inflight == opNone {
		e.mu.Unlock()
		return nil
	}
	e.queueLocked(b)
	if b.ready == nil {
		b.ready = make(chan struct{})
	}
	ready := b.ready
	e.mu.Unlock()
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("routing: bind the token's events: %w", ctx.Err())
	}
}

// release counts one connection of key less; after the last one the
// binding goes once the unbind delay has passed without a new hold. It
// never blocks.
func (e *eventBindings) release(key string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	b := e.keys[key]
	if b == nil || b.refs == 0 {
		return // not held: a caller's bug, and nothing to undo
	}
	b.refs--
	if b.refs > 0 {
		return
	}
	if e.delay > 0 {
		b.delayGen++
		gen := b.delayGen
		b.delay = e.clock.AfterFunc(e.delay, func() { e.expire(b, gen) })
		return
	}
	b.want = false
	e.settleLocked(b)
}

// expire ends the unbind delay gen of b: unless b was held again
// meanwhile, its binding is no longer wanted.
func (e *eventBindings) expire(b *tokenBinding, gen uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if b.delayGen != gen || b.refs > 0 {
		return // stopped, or held again
	}
	b.delay = nil
	b.want = false
	e.settleLocked(b)
}

// stopDelayLocked stops b's unbind delay, if one runs.
func (e *eventBindings) stopDelayLocked(b *tokenBinding) {
	if b.delay != nil {
		b.delay.Stop()
		b.delay = nil
		b.delayGen++ // a callback that already fired finds another generation
	}
}

// settleLocked queues b for the binder when its binding differs from what
// it wants, or forgets b when it wants nothing and has nothing. A key a
// batch is working on is settled when the batch ends.
func (e *eventBindings) settleLocked(b *tokenBinding) {
	switch {
	case b.inflight != opNone:
	case b.want != b.bound:
		if e.attached {
			e.queueLocked(b)
		} // else: attach queues it
	case !b.want && b.refs == 0 && b.delay == nil:
		delete(e.keys, b.key)
	}
}

// queueLocked adds b to the binder's work and wakes the binder.
func (e *eventBindings) queueLocked(b *tokenBinding) {
	if b.queued || b.inflight != opNone {
		return
	}
	b.queued = true
	e.dirty = append(e.dirty, b)
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// setBoundLocked sets b.bound and keeps the count and the gauge.
func (e *eventBindings) setBoundLocked(b *tokenBinding, bound bool) {
	if b.bound == bound {
		return
	}
	b.bound = bound
	if bound {
		e.nbound++
	} else {
		e.nbound--
	}
	e.gauge.Set(float64(e.nbound))
}

// attach starts a broker session's binding maintenance: every wanted key is
// bound again (the broker may have lost the binding: a broker restart, the
// in-queue expired and the node exchange with it,
// or the session is on another broker node; binding again is harmless),
// and every key whose unbind could not be done meanwhile is unbound. The
// session calls flush next, before it is ready.
func (e *eventBindings) attach() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.attached = true
	for _, b := range e.keys {
		if b.want {
			e.setBoundLocked(b, false)
		}
		e.settleLocked(b)
	}
}

// detach ends a session's binding maintenance, after its binder stopped:
// waiters are let go (the next session binds their keys before the node is
// ready), and what a failed batch left unsure is redone by the next attach.
func (e *eventBindings) detach() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.attached = false
	clear(e.dirty)
	e.dirty = e.dirty[:0]
	for _, b := range e.keys {
		b.queued, b.inflight = false, opNone
		if b.ready != nil {
			close(b.ready)
			b.ready = nil
		}
		e.settleLocked(b)
	}
}

// take returns the next batch, binds first, and marks its keys in flight.
func (e *eventBindings) take(buf []bindJob) []bindJob {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for ; n < len(e.dirty) && len(buf) < maxBindBatch; n++ {
		b := e.dirty[n]
		e.dirty[n] = nil
		b.queued = false
		var op bindOp
		switch {
		case b.want && !b.bound:
			op = opBind
		case !b.want && b.bound:
			op = opUnbind
		default:
			e.settleLocked(b) // changed its mind meanwhile
			continue
		}
		b.inflight = op
		buf = append(buf, bindJob{b: b, op: op})
	}
	// Binds first (apply pipelines them), each kind in the order queued.
	slices.SortStableFunc(buf, func(a, b bindJob) int { return int(a.op) - int(b.op) })
	e.dirty = e.dirty[n:]
	if len(e.dirty) == 0 {
		e.dirty = e.dirty[:0:0] // let the backing array go after a burst
	}
	return buf
}

// bindJob is one operation of a batch.
type bindJob struct {
	b  *tokenBinding
	op bindOp
}

// apply carries out batch on ch, binds first. A channel handles its
// methods in order, and a failed one closes it, so the binds are sent
// without waiting for bind-ok and the batch's first operation that waits
// (the last bind, or an unbind: unbinds wait, so that a failed batch
// knows which of them completed)
// confirms those before it. It returns how many operations surely
// completed, and the channel's error.
func (e *eventBindings) apply(ch bindChannel, batch []bindJob) (int, error) {
	binds := 0
	for binds < len(batch) && batch[binds].op == opBind {
		binds++
	}
	for i := range binds {
		noWait := i < len(batch)-1 // the batch's last operation waits
		if err := ch.ExchangeBind(e.dest, batch[i].b.key, e.exchange, noWait, nil); err != nil {
			return 0, fmt.Errorf("routing: bind exchange %s to %s: %w", e.dest, e.exchange, err)
		}
	}
	for i := binds; i < len(batch); i++ {
		if err := ch.ExchangeUnbind(e.dest, batch[i].b.key, e.exchange, false, nil); err != nil {
			done := 0
			if i > binds {
				done = i // the first unbind's answer confirmed every bind
			}
			return done, fmt.Errorf("routing: unbind exchange %s from %s: %w", e.dest, e.exchange, err)
		}
	}
	return len(batch), nil
}

// done records the first n operations of batch as completed and settles
// every key of the batch; those past n are left unsure for detach.
func (e *eventBindings) done(batch []bindJob, n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, j := range batch[:n] {
		b := j.b
		b.inflight = opNone
		if j.op == opBind {
			e.setBoundLocked(b, true)
			e.binds.Inc()
			if b.ready != nil {
				close(b.ready)
				b.ready = nil
			}
		} else {
			e.setBoundLocked(b, false)
			e.unbinds.Inc()
		}
		e.settleLocked(b)
		batch[i] = bindJob{}
	}
}

// flush carries out batches on ch until no work is left, and returns the
// channel's error if one fails (the session must end: detach and the next
// attach sort out what the failed batch left).
func (e *eventBindings) flush(ch bindChannel) error {
	var buf []bindJob
	for {
		buf = e.take(buf[:0])
		if len(buf) == 0 {
			return nil
		}
		n, err := e.apply(ch, buf)
		e.done(buf, n)
		if err != nil {
			return err
		}
	}
}

// run is the session's binder: it carries out the work hold and release
// queue, on ch, until stop is closed (the session ended: the bindings stay
// for the next one) or ctx is done (the node stops: the bindings of keys
// that no connection holds any more are removed first, so that the delay
// does not leave them behind). It returns the channel's error if a batch
// fails. The session owns the goroutine that runs it.
func (e *eventBindings) run(ctx context.Context, ch bindChannel, stop <-chan struct{}) error {
	for {
		if err := e.flush(ch); err != nil {
			return err
		}
		select {
		case <-stop:
			return nil
		case <-ctx.Done():
			e.unbindReleased()
			return e.flush(ch)
		case <-e.wake:
		}
	}
}

// unbindReleased ends the unbind delay of every key no connection holds.
func (e *eventBindings) unbindReleased() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, b := range e.keys {
		if b.refs == 0 && b.delay != nil {
			e.stopDelayLocked(b)
			b.want = false
			e.settleLocked(b)
		}
	}
}

// stats returns how many keys are held and bound (for tests).
func (e *eventBindings) stats() (held, bound int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, b := range e.keys {
		if b.refs > 0 {
			held++
		}
	}
	return held, e.nbound
}
