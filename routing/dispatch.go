package routing

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"time"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/trace"

	"github.com/piped-dev/piped/protocol"
)

// dispatcher routes in-queue deliveries to connections. It runs on the
// session goroutine only and never blocks on a connection.
type dispatcher struct {
	r *Router

	// Owned by the session goroutine.
	unacked int    // deliveries routed and not acknowledged yet
	last    uint64 // the delivery tag of the last one routed
}

func newDispatcher(r *Router) *dispatcher { return &dispatcher{r: r} }

// ackBatch is the most deliveries acknowledged at once; it must stay well
// below amqp.prefetch so the broker never waits for an ack.
const ackBatch = 64

// ackDelay is how long a routed delivery waits at most for its ack, so
// that one multiple-ack serves the deliveries of several batches (an ack
// is a socket write for the node and a frame for the broker). It only
// holds prefetch slots: a delivery is routed before it waits, and one
// not acknowledged when the session ends is redelivered and dropped as
// late or redelivered.
const ackDelay = 2 * time.Millisecond

// acker is the part of *amqp.Channel the dispatcher acknowledges with.
type acker interface {
	Ack(tag uint64, multiple bool) error
}

// dispatchBatch routes first and whatever deliveries are already waiting
// (up to ackBatch), and acknowledges every delivery routed so far with one
// multiple-ack once ackBatch of them wait; otherwise the caller acks them
// (ack) within ackDelay. It reports false when deliveries was closed.
func (d *dispatcher) dispatchBatch(ch acker, first *amqp.Delivery, deliveries <-chan amqp.Delivery) bool {
	d.route(first)
	d.last, d.unacked = first.DeliveryTag, d.unacked+1
	open := true
batch:
	for d.unacked < ackBatch {
		select {
		case del, ok := <-deliveries:
			if !ok {
				open = false
				break batch
			}
			d.route(&del)
			d.last, d.unacked = del.DeliveryTag, d.unacked+1
		default:
			break batch
		}
	}
	if d.unacked >= ackBatch {
		d.ack(ch)
	}
	return open
}

// ack acknowledges every delivery routed and not acknowledged yet, with
// one multiple-ack.
func (d *dispatcher) ack(ch acker) {
	if d.unacked == 0 {
		return
	}
	d.unacked = 0
	if err := ch.Ack(d.last, true); err != nil {
		d.r.log.Debug("ack failed; the session is ending", "error", err)
	}
}

// route handles one delivery. Nothing a backend sends can make it fail:
// malformed messages are logged, counted and dropped. The type decides:
// results are matched with their calls, events go to the token (or one of
// its connections), control types are carried out, and any other type is
// dropped: it is never forwarded to clients.
func (d *dispatcher) route(del *amqp.Delivery) {
	r := d.r
	// The backend's trace context, when it put one on the message.
	parent := context.Background()
	if len(del.Headers) > 0 {
		parent = r.prop.Extract(parent, AMQPHeaders(del.Headers))
	}
	if r.maxMessage > 0 && len(del.Body) > r.maxMessage {
		d.dropTooBig(parent, del)
		return
	}
	in, err := protocol.ParseMessage(del.Body)
	if err != nil {
		reason := "not_json"
		if errors.Is(err, protocol.ErrNotObject) {
			reason = "not_object"
		}
		d.dropMalformed(parent, del, reason, err)
		return
	}
	if !utf8.Valid(del.Body) {
		// A client would be sent it in a text frame, which RFC 6455 forbids
		// (browsers drop the whole connection): never forwarded.
		d.dropNotUTF8(parent, del, &in)
		return
	}
	switch in.Type {
	case "result":
		if in.Token == "" {
			d.dropMalformed(parent, del, "no_token", protocol.ErrNoToken)
			return
		}
		d.result(parent, del, &in)
	case "event":
		switch {
		case in.Token == "":
			d.dropMalformed(parent, del, "no_token", protocol.ErrNoToken)
		case in.HasConnection && in.Connection == "":
			d.dropMalformed(parent, del, "bad_connection", errBadConnection)
		default:
			r.metrics.Events.Inc()
			d.broadcast(parent, del, &in, in.Connection)
		}
	case protocol.TypeDisconnect, protocol.TypeBroadcast:
		d.control(parent, del)
	default:
		ctx, span := r.startProcess(parent, del.MessageId, del.CorrelationId, len(del.Body))
		d.drop(ctx, span, del, slog.LevelWarn, "unknown_type", "dropped backend message of unknown type",
			"type", truncate(in.Type, 64), "bytes", len(del.Body))
	}
}

// result delivers a result to the call it answers, or, when no call waits
// for it, to every connection of its token (a result's "connection" is not
// looked at: it is for its call's connection).
func (d *dispatcher) result(parent context.Context, del *amqp.Delivery, in *protocol.Inbound) {
	r := d.r
	c, routedBy := d.match(del, in)
	switch {
	case c != nil:
		d.deliver(parent, del, c, in.Body, routedBy)
	case routedBy == "mismatch":
		// Our correlation id on a result that is not its call's: delivering
		// it would hand one user another's result. The call keeps waiting.
		ctx, span := r.startProcess(parent, del.MessageId, del.CorrelationId, len(del.Body))
		d.drop(ctx, span, del, slog.LevelWarn, routedBy, "dropped result: its correlation_id is not its call's (another token's, or never issued)")
	case routedBy == "late", routedBy == "redelivered":
		// Late: answered already (timeout, error) or from an earlier session.
		// Redelivered: seen before a reconnect; its call is gone, so it was
		// delivered then. Either way: never deliver twice.
		ctx, span := r.startProcess(parent, del.MessageId, del.CorrelationId, len(del.Body))
		d.drop(ctx, span, del, slog.LevelDebug, routedBy, "dropped result: no call waits for it")
	default:
		// No call waits for it: the original Piped's behaviour, every connection of the token.
		r.metrics.Results.WithLabelValues("broadcast").Inc()
		d.broadcast(parent, del, in, "")
	}
}

// dropNotUTF8 drops a message that is not valid UTF-8. When it is a result
// that answers a waiting call, the call is answered with an error
// (bad_result) instead, so that it still gets exactly one answer.
func (d *dispatcher) dropNotUTF8(parent context.Context, del *amqp.Delivery, in *protocol.Inbound) {
	const reason = "not_utf8"
	if in.Type == "result" && in.Token != "" {
		if c, _ := d.match(del, in); c != nil {
			d.r.answerError(c, protocol.CodeBadResult, "the backend's result is not valid UTF-8")
		}
	}
	d.dropMalformed(parent, del, reason, errNotUTF8)
}

// dropTooBig drops a message over amqp.max_message_bytes without reading
// it; a result with the correlation id of a waiting call answers that call
// with bad_result (its token is not checked: the message is not parsed,
// and the error tells nothing of it).
func (d *dispatcher) dropTooBig(parent context.Context, del *amqp.Delivery) {
	r := d.r
	if ref, ours := r.pending.parseCorrelation(del.CorrelationId); ours {
		if c, _ := r.pending.takeByCorr(ref, ""); c != nil {
			r.answerError(c, protocol.CodeBadResult, "the backend's result is larger than amqp.max_message_bytes ("+strconv.Itoa(r.maxMessage)+")")
		}
	}
	d.dropMalformed(parent, del, "too_big", errTooBig)
}

// dropMalformed drops a message that cannot be routed, under a span of its own.
func (d *dispatcher) dropMalformed(parent context.Context, del *amqp.Delivery, reason string, err error) {
	ctx, span := d.r.startProcess(parent, del.MessageId, del.CorrelationId, len(del.Body))
	d.drop(ctx, span, del, slog.LevelWarn, reason, "dropped malformed backend message", "error", err, "bytes", len(del.Body))
}

// truncate cuts s to at most n bytes, for logging values a backend chose.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// match finds the pending call a result answers: by our correlation id,
// else by token, id and method (oldest first). With no call it says why:
// "late", "mismatch", "redelivered" or "broadcast".
func (d *dispatcher) match(del *amqp.Delivery, in *protocol.Inbound) (*call, string) {
	r := d.r
	if ref, ours := r.pending.parseCorrelation(del.CorrelationId); ours {
		c, why := r.pending.takeByCorr(ref, in.Token)
		if c != nil {
			return c, "correlation"
		}
		return nil, why // late or mismatch
	}
	if len(in.ID) > protocol.MaxIDLength {
		// No call has such an id (the gateway refuses them), and its key
		// could cost the dispatcher milliseconds: nothing to match.
		if del.Redelivered {
			return nil, "redelivered"
		}
		return nil, "broadcast"
	}
	if c := r.pending.takeByKey(in.Token, in.ID, in.Method); c != nil {
		return c, "match"
	}
	if in.Method == "" && in.ID != nil {
		// An answer to $connect (lifecycle.authorize) need not name the method.
		if c := r.pending.takeByKey(in.Token, in.ID, protocol.MethodConnect); c != nil {
			return c, "match"
		}
	}
	if del.Redelivered {
		return nil, "redelivered"
	}
	return nil, "broadcast"
}

// deliver answers call c with a result, under a process span that is a
// child of the backend's span (or of the call's, when the backend sent no
// trace context) and linked to the call.
func (d *dispatcher) deliver(parent context.Context, del *amqp.Delivery, c *call, body []byte, routedBy string) {
	r := d.r
	if !trace.SpanContextFromContext(parent).IsValid() {
		parent = trace.ContextWithSpan(parent, c.span)
	}
	ctx, span := r.startProcess(parent, del.MessageId, del.CorrelationId, len(del.Body), trace.Link{SpanContext: c.span.SpanContext()})
	_, send := r.tracer.Start(ctx, spanSend, trace.WithSpanKind(trace.SpanKindInternal))
	r.metrics.Results.WithLabelValues(routedBy).Inc()
	r.callDurationResult.Observe(time.Since(c.start).Seconds())
	c.from.Answer(c.id, body)
	send.End()
	span.End()
	c.span.End()
}

// broadcast writes a message to every connection of its token, or only to
// the token's connection whose id is connection when that is not "".
func (d *dispatcher) broadcast(parent context.Context, del *amqp.Delivery, in *protocol.Inbound, connection string) {
	r := d.r
	ctx, span := r.startProcess(parent, del.MessageId, del.CorrelationId, len(del.Body))
	_, send := r.tracer.Start(ctx, spanSend, trace.WithSpanKind(trace.SpanKindInternal))
	var n int
	if connection != "" {
		n = r.hub.SendTo(in.Token, connection, in.Body)
	} else {
		n = r.hub.Broadcast(in.Token, in.Body)
	}
	send.End()
	if n == 0 {
		r.metrics.Dropped.WithLabelValues("no_connection").Inc()
	}
	span.End()
}

// drop counts, logs and ends the span of a message that goes nowhere.
func (d *dispatcher) drop(ctx context.Context, span trace.Span, del *amqp.Delivery, level slog.Level, reason, msg string, attrs ...any) {
	d.r.metrics.Dropped.WithLabelValues(reason).Inc()
	attrs = append(attrs, "reason", reason, "correlation_id", del.CorrelationId, "message_id", del.MessageId)
	d.r.log.Log(ctx, level, msg, attrs...)
	endError(span, reason)
}
