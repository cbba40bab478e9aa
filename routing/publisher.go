package routing

import (
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/piped-dev/piped/protocol"
)

// unconfirmed is a call published but not yet confirmed by the broker.
type unconfirmed struct {
	seq  uint64
	c    *call
	at   time.Time
	span trace.Span // the PRODUCER span, ended at the confirm
}

// publisher publishes calls on one confirm-mode channel. Confirms are
// pipelined: any number of calls are in flight, and one goroutine (run)
// resolves their confirms and returns in order.
type publisher struct {
	// Set at construction.
	r  *Router
	ch *amqp.Channel

	mu sync.Mutex // serialises publishes so that sequence numbers match confirms
	// Guarded by mu.
	queue  []unconfirmed // FIFO of unconfirmed publishes, oldest at head
	head   int
	closed bool
}

func newPublisher(r *Router, ch *amqp.Channel) *publisher {
	return &publisher{r: r, ch: ch}
}

// publish makes the assigned call c pending and sends msg for it.
// Inserting under the publish lock keeps the pending table in publish
// order, which is the order in which a backend that does not copy
// correlation ids answers. On error c is still pending; the caller takes it
// and answers.
func (p *publisher) publish(c *call, msg *amqp.Publishing, span trace.Span) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.r.pending.insert(c, p.r.timeout, p.r.expire)
	if p.closed {
		return amqp.ErrClosed
	}
	seq := p.ch.GetNextPublishSeqNo()
	if err := p.ch.Publish(p.r.topo.ExchangeOut, routingKey(c.method), true, false, *msg); err != nil {
		return err
	}
	p.queue = append(p.queue, unconfirmed{seq: seq, c: c, at: time.Now(), span: span})
	return nil
}

// routingKey is the method, cut to AMQP's 255-byte short string limit. The
// out-exchange is fanout and ignores it; it shows in the management UI and traces.
func routingKey(method string) string {
	if len(method) > 255 {
		return method[:255]
	}
	return method
}

// popThrough removes the entries up to and including seq and returns the one
// with seq, if any. Older entries without a confirm cannot exist with the
// library's in-order confirms; they were removed by the confirm timeout.
func (p *publisher) popLocked(seq uint64) (unconfirmed, bool) {
	for p.head < len(p.queue) {
		u := p.queue[p.head]
		if u.seq > seq {
			break
		}
		p.queue[p.head] = unconfirmed{}
		p.head++
		if u.seq == seq {
			p.compactLocked()
			return u, true
		}
	}
	p.compactLocked()
	return unconfirmed{}, false
}

func (p *publisher) compactLocked() {
	if p.head == len(p.queue) {
		p.queue = p.queue[:0]
		p.head = 0
	} else if p.head > 1024 && p.head > len(p.queue)/2 {
		n := copy(p.queue, p.queue[p.head:])
		p.queue = p.queue[:n]
		p.head = 0
	}
}

// expiredLocked removes and returns the entries published before deadline.
func (p *publisher) expiredLocked(deadline time.Time) []unconfirmed {
	var out []unconfirmed
	for p.head < len(p.queue) && p.queue[p.head].at.Before(deadline) {
		out = append(out, p.queue[p.head])
		p.queue[p.head] = unconfirmed{}
		p.head++
	}
	p.compactLocked()
	return out
}

// run resolves confirms and returns until the library closes both channels
// (when the channel or connection closes: it drains them to the end, so the
// library never waits on a full one), then answers every call still
// unconfirmed with "unavailable". It owns nothing else.
func (p *publisher) run(confirms <-chan amqp.Confirmation, returns <-chan amqp.Return) {
	tick := time.NewTicker(p.r.confirmTimeout / 4)
	defer tick.Stop()
	defer p.shutdown()
	for confirms != nil || returns != nil {
		select {
		case ret, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			// A return comes before the confirm of the same message.
			if n, ok := p.r.pending.parseCorrelation(ret.CorrelationId); ok {
				p.markReturned(n)
				if c := p.r.pending.takeByCorr(n); c != nil {
					p.r.answerError(c, protocol.CodeUnroutable, "no queue is bound to "+ret.Exchange+": no backend can receive this call")
				}
			}
		case conf, ok := <-confirms:
			if !ok {
				confirms = nil
				continue
			}
			p.mu.Lock()
			u, found := p.popLocked(conf.DeliveryTag)
			p.mu.Unlock()
			if !found {
				continue
			}
			p.r.metrics.ConfirmDuration.Observe(time.Since(u.at).Seconds())
			if !conf.Ack {
				endError(u.span, protocol.CodeUnavailable)
				if p.r.pending.take(u.c) {
					p.r.answerError(u.c, protocol.CodeUnavailable, "the broker refused the call (nack)")
				}
				continue
			}
			u.span.End()
		case now := <-tick.C:
			p.mu.Lock()
			late := p.expiredLocked(now.Add(-p.r.confirmTimeout))
			p.mu.Unlock()
			for _, u := range late {
				endError(u.span, protocol.CodeUnavailable)
				if p.r.pending.take(u.c) {
					p.r.answerError(u.c, protocol.CodeUnavailable, "the broker did not confirm the call in time")
				}
			}
		}
	}
}

// markReturned sets an error status on the publish span of the call with
// correlation number n; the confirm that follows the return ends it.
func (p *publisher) markReturned(n uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, u := range p.queue[p.head:] {
		if u.c.corr == n {
			u.span.SetStatus(codes.Error, protocol.CodeUnroutable)
			return
		}
	}
}

// shutdown stops publishing and answers every unconfirmed call: it may or may
// not have reached the broker, and the client must not wait for a timeout.
func (p *publisher) shutdown() {
	p.mu.Lock()
	p.closed = true
	rest := p.queue[p.head:]
	p.queue, p.head = nil, 0
	p.mu.Unlock()
	for _, u := range rest {
		endError(u.span, protocol.CodeUnavailable)
		if p.r.pending.take(u.c) {
			p.r.answerError(u.c, protocol.CodeUnavailable, "the broker connection was lost before the call was confirmed")
		}
	}
}
