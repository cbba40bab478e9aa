package routing

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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

// publishQueueSize is how many calls wait at most for the publisher's
// goroutine. A call that finds the queue full is answered "unavailable" at
// once. 16384 calls hold a burst of 200 connections × 80 calls, or more
// than a second of a busy node's calls, while the broker has a slow moment
// (seen: 5000 calls at once on 2 busy cores overflowed 4096); the channel
// costs 128 KiB, and the stall check still answers every queued call once
// the broker stops reading.
const publishQueueSize = 16384

// maxBurst is the most calls one burst publishes before their bytes are
// written to the socket together (see batchConn): 64 calls of a few hundred
// bytes fill a fraction of maxBurstBytes.
const maxBurst = 64

// burstSocket is the publishing connection's socket as the writer uses it
// (*batchConn): writes collect between hold and release.
type burstSocket interface {
	hold()
	release() error
}

// pubChannel is the part of *amqp.Channel the publisher writes to.
type pubChannel interface {
	GetNextPublishSeqNo() uint64
	Publish(exchange, key string, mandatory, immediate bool, msg amqp.Publishing) error
}

// pubJob is a call waiting in the publish queue. msg.Body lives in buf,
// which goes back to the router's pool once the job is done.
type pubJob struct {
	c             *call
	exchange, key string // where msg goes (from c's route)
	msg           amqp.Publishing
	span          trace.Span         // the PRODUCER span
	calls         prometheus.Counter // piped_calls_by_exchange_total of exchange
	buf           *[]byte
}

// publisher publishes calls on one confirm-mode channel. Callers only
// enqueue (enqueue never waits for the broker); one goroutine (write)
// publishes, since amqp091's Publish blocks on socket I/O and is not
// context-aware. Confirms are pipelined: any number of calls are in flight,
// and another goroutine (run) resolves their confirms and returns in order
// and answers the calls of a stalled broker.
type publisher struct {
	// Set at construction.
	r    *Router
	ch   pubChannel
	sock burstSocket   // nil: every Publish writes on its own
	jobs chan *pubJob  // the publish queue; sent to only under mu
	done chan struct{} // closed by shutdown: write returns
	stop sync.Once

	// writingSince is when the Publish under way began (Unix nanoseconds),
	// 0 between publishes. Written by write only.
	writingSince atomic.Int64

	mu sync.Mutex // never held across I/O
	// Guarded by mu.
	queue  []unconfirmed // FIFO of unconfirmed publishes, oldest at head
	head   int
	closed bool
}

// newPublisher returns the publisher of ch, whose connection's socket is
// sock (nil: none that holds writes).
func newPublisher(r *Router, ch pubChannel, sock burstSocket) *publisher {
	return &publisher{r: r, ch: ch, sock: sock, jobs: make(chan *pubJob, publishQueueSize), done: make(chan struct{})}
}

// enqueue makes the assigned call j.c pending (unless it is a notice,
// which is never pending) and queues j for the writer; it never blocks. Inserting and queueing under mu keeps the pending table
// in queue order, which is publish order, which is the order in which a
// backend that does not copy correlation ids answers. When the call cannot
// be queued it returns why, and j.c was not made pending.
func (p *publisher) enqueue(j *pubJob, now time.Time) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.closed:
		return "the broker is not connected"
	case p.stalled(now):
		return "the broker stopped reading publishes"
	case len(p.jobs) == cap(p.jobs): // only enqueue sends, under mu: a send now cannot block
		return "the node's publish queue is full"
	}
	if !j.c.notice {
		p.r.pending.insert(j.c, j.c.rt.Timeout, p.r.expire)
	}
	p.jobs <- j
	return ""
}

// stalled reports whether a Publish has been under way for longer than
// amqp.confirm_timeout at now: the broker (or the network) stopped reading.
func (p *publisher) stalled(now time.Time) bool {
	since := p.writingSince.Load()
	return since != 0 && now.UnixNano()-since > int64(p.r.confirmTimeout)
}

// write publishes queued calls, one after the other, until shutdown. Each
// wakeup publishes everything queued by then without waiting, in bursts of
// up to maxBurst calls.
func (p *publisher) write() {
	for {
		select {
		case <-p.done:
			return
		case j := <-p.jobs:
			p.burst(j)
		}
	}
}

// burst publishes j and the calls queued behind it, up to maxBurst, and
// writes them to the socket with one write (amqp091 flushes each Publish:
// without a socket that holds, each is a write of its own). The write
// counts as a publish under way for the stall check. A failed write closed
// the socket: the session ends and answers the calls (shutdown).
func (p *publisher) burst(j *pubJob) {
	if p.sock != nil {
		p.sock.hold()
	}
	p.publish(j)
more:
	for n := 1; n < maxBurst; n++ {
		select {
		case j = <-p.jobs:
			p.publish(j)
		default:
			break more
		}
	}
	if p.sock != nil {
		p.writingSince.Store(time.Now().UnixNano())
		_ = p.sock.release()
		p.writingSince.Store(0)
	}
}

// publish sends one queued call. Its unconfirmed entry goes in before the
// Publish (the confirm may be read before Publish returns) and comes out
// again when it fails.
func (p *publisher) publish(j *pubJob) {
	defer p.r.putBuf(j)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.fail(j.c, j.span, "the broker connection was lost before the call was published")
		return
	}
	seq := p.ch.GetNextPublishSeqNo() // only write publishes: the number stays ours
	p.queue = append(p.queue, unconfirmed{seq: seq, c: j.c, at: time.Now(), span: j.span})
	p.mu.Unlock()

	p.writingSince.Store(time.Now().UnixNano())
	err := p.ch.Publish(j.exchange, j.key, true, false, j.msg)
	p.writingSince.Store(0)
	if err != nil {
		p.mu.Lock()
		_, mine := p.removeLocked(seq) // else the confirm timeout or shutdown answered it
		p.mu.Unlock()
		if mine {
			p.fail(j.c, j.span, "the broker is not connected")
		}
		return
	}
	if !j.c.notice {
		p.r.metrics.Calls.Inc()
		j.calls.Inc()
	}
}

// reasonNack is why a call the broker refused fails.
const reasonNack = "the broker refused the call (nack)"

// fail ends the publish span of a call that will not be confirmed and
// answers the call c "unavailable" if it is still pending; a notice's
// failure is counted and logged instead.
func (p *publisher) fail(c *call, span trace.Span, reason string) {
	endError(span, protocol.CodeUnavailable)
	if c.notice {
		p.r.noticeFailed(c, reason)
		return
	}
	if p.r.pending.take(c) {
		p.r.answerError(c, protocol.CodeUnavailable, reason)
	}
}

// drain answers every queued call "unavailable" without publishing it.
// It may run while write receives too: each job is received once.
func (p *publisher) drain(reason string) int {
	n := 0
	for {
		select {
		case j := <-p.jobs:
			p.fail(j.c, j.span, reason)
			p.r.putBuf(j)
			n++
		default:
			return n
		}
	}
}

// removeLocked removes the unconfirmed entry with seq, if it is still there.
func (p *publisher) removeLocked(seq uint64) (unconfirmed, bool) {
	for i := len(p.queue) - 1; i >= p.head; i-- {
		if u := p.queue[i]; u.seq == seq {
			copy(p.queue[i:], p.queue[i+1:])
			p.queue[len(p.queue)-1] = unconfirmed{}
			p.queue = p.queue[:len(p.queue)-1]
			return u, true
		}
	}
	return unconfirmed{}, false
}

// popLocked removes the entries up to and including seq and returns the one
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
	stalled := false
	for confirms != nil || returns != nil {
		select {
		case ret, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			// A return comes before the confirm of the same message.
			if ref, ok := p.r.pending.parseCorrelation(ret.CorrelationId); ok {
				p.markReturned(ref.n)
				if c, _ := p.r.pending.takeByCorr(ref, ""); c != nil {
					p.r.answerError(c, protocol.CodeUnroutable, unroutable(ret.Exchange, ret.RoutingKey))
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
				p.fail(u.c, u.span, reasonNack)
				continue
			}
			u.span.End()
			if u.c.notice {
				p.r.noticeDone(u.c, noticeConfirmed)
			}
		case now := <-tick.C:
			p.mu.Lock()
			late := p.expiredLocked(now.Add(-p.r.confirmTimeout))
			p.mu.Unlock()
			for _, u := range late {
				p.fail(u.c, u.span, "the broker did not confirm the call in time")
			}
			stalled = p.checkStall(now, stalled)
		}
	}
}

// unroutable is the message of an unroutable error: the broker returned a
// mandatory publish because no queue is bound to receive it.
func unroutable(exchange, key string) string {
	if exchange == "" {
		return "no queue named " + strconv.Quote(key) + " exists: no backend can receive this call"
	}
	return "no queue is bound to " + exchange + " for routing key " + strconv.Quote(key) + ": no backend can receive this call"
}

// checkStall answers the queued calls "unavailable" while the writer is
// stuck in a Publish (see stalled), so that no call waits for a stalled
// broker longer than about amqp.confirm_timeout; enqueue refuses new ones
// meanwhile. It logs when a stall begins and ends; was is the state at the
// previous tick.
func (p *publisher) checkStall(now time.Time, was bool) bool {
	is := p.stalled(now)
	if is {
		n := p.drain("the broker stopped reading publishes")
		if !was {
			p.r.log.Warn("broker stopped reading publishes; calls fail with unavailable until it reads again",
				"stalled_for", time.Duration(now.UnixNano()-p.writingSince.Load()).Round(time.Millisecond).String(), "queued_calls_failed", n)
		}
	} else if was {
		p.r.log.Info("broker reads publishes again")
	}
	return is
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

// shutdown stops publishing and answers every queued and unconfirmed call:
// an unconfirmed one may or may not have reached the broker, and the client
// must not wait for a timeout. It is idempotent, never waits for the writer,
// and does not stop a Publish under way (closing the connection does).
func (p *publisher) shutdown() {
	p.stop.Do(func() { close(p.done) })
	p.mu.Lock()
	p.closed = true
	rest := p.queue[p.head:]
	p.queue, p.head = nil, 0
	p.mu.Unlock()
	for _, u := range rest {
		p.fail(u.c, u.span, "the broker connection was lost before the call was confirmed")
	}
	p.drain("the broker connection was lost before the call was published")
}
