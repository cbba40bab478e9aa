package routing

import (
	"context"
	"fmt"
	"iter"
	"strconv"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/piped-dev/piped/protocol"
)

// The results of a notice: the result label of piped_notices_total.
const (
	noticeConfirmed   = "confirmed"   // the broker confirmed it
	noticeNack        = "nack"        // the broker refused it
	noticeUnavailable = "unavailable" // not published, or its confirm never came
)

// Notify publishes a lifecycle notice of method (protocol.MethodConnect,
// MethodDisconnect or MethodPresence) with body to the node's out-exchange,
// with the method as routing key and publisher confirms. Nothing answers a
// notice: its outcome is counted in piped_notices_total{method,result} and
// logged. It never blocks: while the broker is not connected, blocks
// publishes or the publish queue is full the notice is dropped (counted as
// unavailable and logged at debug). ctx carries trace context only; it may
// be done already. body is not retained.
func (r *Router) Notify(ctx context.Context, method string, body []byte) {
	r.notify(ctx, method, func(dst []byte) []byte { return append(dst, body...) })
}

// NotifyConnect publishes the $connect notice of connection connID of token
// (see Notify and protocol.AppendConnectNotice).
func (r *Router) NotifyConnect(ctx context.Context, token, connID string) {
	r.notify(ctx, protocol.MethodConnect, func(dst []byte) []byte {
		return protocol.AppendConnectNotice(dst, token, r.nodeID, connID, false)
	})
}

// NotifyDisconnect publishes the $disconnect notice of connection connID of
// token, which closed with the WebSocket close code and reason (see Notify
// and protocol.AppendDisconnectNotice).
func (r *Router) NotifyDisconnect(ctx context.Context, token, connID string, code int, reason string) {
	r.notify(ctx, protocol.MethodDisconnect, func(dst []byte) []byte {
		return protocol.AppendDisconnectNotice(dst, token, r.nodeID, connID, code, reason)
	})
}

// notify publishes the notice that body appends, as Notify says. A notice
// travels through the publisher like a call (same queue, same writer, same
// order: a connection's $connect is published before its calls) but is
// never pending; the publisher reports its end to noticeDone or noticeFailed.
func (r *Router) notify(ctx context.Context, method string, body func(dst []byte) []byte) {
	now := time.Now()
	p := r.pub.Load()
	if p == nil || r.blocked.Load() {
		reason := "the broker is not connected"
		if p != nil {
			reason = "the broker is blocking publishes (resource alarm)"
		}
		r.noticeDropped(method, reason)
		return
	}
	rt := r.routes.Load().ForNotice(method)
	key := rt.RoutingKey(method)
	c := &call{notice: true, method: method, rt: rt, start: now}
	msgID := r.pending.prefix + "notice-" + strconv.FormatUint(r.pending.counter.Add(1), 36)
	pctx, span := r.startPublish(ctx, c, r.exchanges.get(r.metrics, rt.Exchange), key, msgID)
	c.span = span
	headers := amqp.Table{"x-piped-node": r.nodeID}
	r.prop.Inject(pctx, AMQPHeaders(headers))
	bp := r.getBuf()
	j := &pubJob{c: c, span: span, buf: bp, exchange: rt.Exchange, key: key, msg: amqp.Publishing{
		ContentType: "application/json",
		MessageId:   msgID,
		Timestamp:   now,
		AppId:       "piped",
		Headers:     headers,
		Body:        body((*bp)[:0]),
	}}
	r.notices.Add(1) // before the publisher can end it
	if reason := p.enqueue(j, now); reason != "" {
		r.notices.Add(-1)
		endError(span, protocol.CodeUnavailable)
		r.putBuf(j)
		r.noticeDropped(method, reason)
	}
}

// noticeDone counts a notice that reached its end with result; every
// queued notice ends here once (noticeFailed too).
func (r *Router) noticeDone(c *call, result string) {
	r.notices.Add(-1)
	r.metrics.Notices.WithLabelValues(c.method, result).Inc()
}

// FlushNotices waits until every lifecycle notice queued so far is
// confirmed by the broker (or has failed), or ctx is done: the shutdown
// calls it after the connections are closed and before the broker side
// stops, so that their $disconnect notices are published, not dropped.
func (r *Router) FlushNotices(ctx context.Context) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for r.notices.Load() > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("routing: %d lifecycle notices not confirmed: %w", r.notices.Load(), ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// noticeFailed counts and logs a notice that was published (or queued) but
// will not be confirmed. A refusal by the broker is rare and logged as a
// warning; losing the broker fails many at once, so that is logged at debug
// (the broker side logs the outage itself).
func (r *Router) noticeFailed(c *call, reason string) {
	if reason == reasonNack {
		r.noticeDone(c, noticeNack)
		r.log.Warn("lifecycle notice refused by the broker", "method", c.method, "reason", reason)
		return
	}
	r.noticeDone(c, noticeUnavailable)
	r.log.Debug("lifecycle notice lost", "method", c.method, "reason", reason)
}

// noticeDropped counts and logs a notice that was never queued.
func (r *Router) noticeDropped(method, reason string) {
	r.metrics.Notices.WithLabelValues(method, noticeUnavailable).Inc()
	r.log.Debug("lifecycle notice dropped", "method", method, "reason", reason)
}

// Connections lists this node's open connections for $presence notices
// (gateway.Hub implements it): the sequence yields the token and the
// connection id of each. It must not hold locks while yielding.
type Connections interface {
	Connections() iter.Seq2[string, string]
}

// RunPresence publishes a round of $presence notices listing conns every
// interval until ctx is done, then returns nil. A round is one notice per
// protocol.PresenceChunk connections, numbered by "seq" from 0, the final
// one with "last":true (a node without connections sends one with an empty
// list). While the broker is not connected a round is skipped (counted once
// as unavailable). The caller owns the goroutine (main runs it with
// lifecycle.Go and stops it at shutdown).
func (r *Router) RunPresence(ctx context.Context, interval time.Duration, conns Connections) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	chunk := make([]protocol.Presence, 0, protocol.PresenceChunk)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		chunk = r.presenceRound(ctx, conns, chunk[:0])
	}
}

// presenceRound publishes one round of $presence notices, collecting each
// chunk in buf, which it returns for reuse.
func (r *Router) presenceRound(ctx context.Context, conns Connections, buf []protocol.Presence) []protocol.Presence {
	if r.pub.Load() == nil {
		r.noticeDropped(protocol.MethodPresence, "the broker is not connected")
		return buf
	}
	seq := 0
	publish := func(last bool) {
		r.notify(ctx, protocol.MethodPresence, func(dst []byte) []byte {
			return protocol.AppendPresenceNotice(dst, r.nodeID, buf, seq, last)
		})
		seq++
		clear(buf)
		buf = buf[:0]
	}
	for token, id := range conns.Connections() {
		if len(buf) == protocol.PresenceChunk {
			publish(false) // more follow
		}
		buf = append(buf, protocol.Presence{Token: token, Connection: id})
	}
	publish(true)
	return buf
}
