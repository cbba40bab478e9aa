package routing

import (
	"errors"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/piped-dev/piped/protocol"
)

// dispatcher routes in-queue deliveries to connections. It runs on the
// session goroutine only and never blocks on a connection.
type dispatcher struct {
	r *Router
}

func newDispatcher(r *Router) *dispatcher { return &dispatcher{r: r} }

// ackBatch is the most deliveries acknowledged at once; it must stay well
// below amqp.prefetch so the broker never waits for an ack.
const ackBatch = 64

// acker is the part of *amqp.Channel the dispatcher acknowledges with.
type acker interface {
	Ack(tag uint64, multiple bool) error
}

// dispatchBatch routes first and whatever deliveries are already waiting
// (up to ackBatch), then acknowledges them all with one multiple-ack: under
// load one ack frame serves many messages, when idle each is acked at once.
// It reports false when deliveries was closed.
func (d *dispatcher) dispatchBatch(ch acker, first *amqp.Delivery, deliveries <-chan amqp.Delivery) bool {
	d.route(first)
	last, open := first.DeliveryTag, true
batch:
	for n := 1; n < ackBatch; n++ {
		select {
		case del, ok := <-deliveries:
			if !ok {
				open = false
				break batch
			}
			d.route(&del)
			last = del.DeliveryTag
		default:
			break batch
		}
	}
	if err := ch.Ack(last, true); err != nil {
		d.r.log.Debug("ack failed; the session is ending", "error", err)
	}
	return open
}

func (d *dispatcher) route(del *amqp.Delivery) {
	r := d.r
	in, err := protocol.ParseInbound(del.Body)
	if err != nil {
		reason := "not_json"
		switch {
		case errors.Is(err, protocol.ErrNotObject):
			reason = "not_object"
		case errors.Is(err, protocol.ErrNoToken):
			reason = "no_token"
		}
		r.metrics.Dropped.WithLabelValues(reason).Inc()
		r.log.Warn("dropped malformed backend message", "reason", reason, "error", err,
			"bytes", len(del.Body), "correlation_id", del.CorrelationId, "message_id", del.MessageId)
		return
	}
	if in.Type != "result" {
		r.metrics.Events.Inc()
		if r.hub.Broadcast(in.Token, in.Body) == 0 {
			r.metrics.Dropped.WithLabelValues("no_connection").Inc()
		}
		return
	}
	if n, ours := r.pending.parseCorrelation(del.CorrelationId); ours {
		c := r.pending.takeByCorr(n)
		if c == nil {
			// Answered already (timeout, error) or from an earlier session: never deliver twice.
			r.metrics.Dropped.WithLabelValues("late").Inc()
			return
		}
		d.deliver(c, in.Body, "correlation")
		return
	}
	if c := r.pending.takeByKey(in.Token, in.ID, in.Method); c != nil {
		d.deliver(c, in.Body, "match")
		return
	}
	if del.Redelivered {
		// Seen before the last reconnect, and its call is gone: it was delivered then.
		r.metrics.Dropped.WithLabelValues("redelivered").Inc()
		return
	}
	// No call waits for it: the original Piped's behaviour, every connection of the token.
	r.metrics.Results.WithLabelValues("broadcast").Inc()
	if r.hub.Broadcast(in.Token, in.Body) == 0 {
		r.metrics.Dropped.WithLabelValues("no_connection").Inc()
	}
}

func (d *dispatcher) deliver(c *call, body []byte, routedBy string) {
	d.r.metrics.Results.WithLabelValues(routedBy).Inc()
	d.r.metrics.CallDuration.WithLabelValues("result").Observe(time.Since(c.start).Seconds())
	c.from.Answer(c.id, body)
}
