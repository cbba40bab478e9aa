package gateway

import (
	"context"
	"errors"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/piped-dev/piped/internal/wsframe"
	"github.com/piped-dev/piped/protocol"
	"github.com/piped-dev/piped/routetable"
	"github.com/piped-dev/piped/telemetry"
)

// The session: what a connection's messages mean — calls, their limits and
// answers, closing on request. Its state is the reader's (buckets, ctx) or
// guarded by mu (inflight, draining); what it writes goes through the writer.

// Answer delivers the answer to one of this connection's calls (see
// protocol.Answerer). It never blocks.
func (c *Conn) Answer(id, msg []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sendLocked(msg)
	if id != nil {
		c.inflight--
		if c.draining && c.inflight == 0 {
			c.closeLocked(DisconnectShutdown, true)
		}
	}
}

// Close closes the connection with d after writing what is already queued.
func (c *Conn) Close(d Disconnect) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeLocked(d, true)
}

// closeWithText is Close with text instead of d.Reason in the close frame
// (d.Reason stays the metric label and the reason logged). It reports
// false when the connection was closing already (its first reason stays).
func (c *Conn) closeWithText(d Disconnect, text string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.out.closing != nil {
		return false
	}
	c.beginCloseLocked(d, d.Code, text, true, false)
	return true
}

// drain closes the connection with 1012 once it has no call in flight.
func (c *Conn) drain() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.draining = true
	if c.inflight == 0 {
		c.closeLocked(DisconnectShutdown, true)
	}
}

// ensureContext makes the calls' context on the first data message.
// Owned by the reader.
func (c *Conn) ensureContext() {
	if c.ctx == nil {
		c.ctx, c.cancel = context.WithCancel(context.Background())
	}
}

// handleFrame validates one text frame and hands it to the router, or
// answers it locally (ping, errors). buf is reused after it returns.
func (c *Conn) handleFrame(ctx context.Context, buf []byte) {
	f, err := protocol.ParseFrame(buf)
	if err != nil {
		var fe *protocol.FrameError
		if errors.As(err, &fe) {
			c.reject(ctx, fe.ID, protocol.CodeBadRequest, fe.Reason)
		} else {
			c.reject(ctx, nil, protocol.CodeBadRequest, err.Error())
		}
		return
	}
	if f.TraceParent != "" && c.cfg.tracing != nil {
		// A client may start the trace: its call span becomes our parent.
		ctx = c.cfg.tracing.Propagator.Extract(ctx, telemetry.FrameCarrier{TraceParent: f.TraceParent, TraceState: f.TraceState})
	}
	if f.Method == "ping" {
		c.Send(protocol.AppendPong(nil, f.ID))
		return
	}
	if f.Method[0] == '$' {
		c.reject(ctx, f.ID, protocol.CodeBadRequest, "methods starting with $ are reserved")
		return
	}
	if f.Payload != nil && protocol.DeeperThan(f.Payload, c.cfg.maxDepth) {
		c.reject(ctx, f.ID, protocol.CodeBadRequest, "payload nested too deeply (ws.max_depth "+strconv.Itoa(c.cfg.maxDepth)+")")
		return
	}
	lim := c.cfg.limits.Load()
	now := time.Now()
	c.bucket.setLimits(lim)
	if !c.bucket.allow(now) {
		c.reject(ctx, f.ID, protocol.CodeTooManyRequests, "call rate limit exceeded (ws.rate_per_second)")
		return
	}
	rt := c.cfg.routes.Lookup(f.Method)
	if rt == nil {
		c.reject(ctx, f.ID, protocol.CodeUnknownMethod, "no route for method "+strconv.Quote(f.Method))
		return
	}
	if rt.Rate > 0 && !c.routeBucket(rt).allow(now) {
		c.reject(ctx, f.ID, protocol.CodeTooManyRequests, "call rate limit of "+rt.Name+" exceeded ("+
			strconv.FormatFloat(rt.Rate, 'g', -1, 64)+" calls/s, burst "+strconv.Itoa(rt.Burst)+")")
		return
	}
	if rt.MaxPayloadBytes > 0 && len(f.Payload) > rt.MaxPayloadBytes {
		c.reject(ctx, f.ID, protocol.CodePayloadTooLarge, "payload is "+strconv.Itoa(len(f.Payload))+" bytes; "+
			rt.Name+" takes at most "+strconv.Itoa(rt.MaxPayloadBytes)+" (max_payload_bytes)")
		return
	}
	c.mu.Lock()
	switch {
	case c.out.closing != nil:
		c.mu.Unlock()
		return
	case c.draining:
		c.mu.Unlock()
		c.reject(ctx, f.ID, protocol.CodeShuttingDown, "the node is shutting down; reconnect and call again")
		return
	case f.ID != nil && c.inflight >= lim.MaxInflight:
		c.mu.Unlock()
		c.reject(ctx, f.ID, protocol.CodeTooManyRequests, "too many calls in flight on this connection (ws.max_inflight)")
		return
	}
	if f.ID != nil {
		c.inflight++
	}
	c.mu.Unlock()
	c.router.Call(ctx, c.token, &f, rt, c)
}

// refuseOverBudget answers a message that came beyond the connection's
// frame budget (ws.frame_rate) with too_many_requests, carrying its id
// when it has one, and does nothing else with it.
func (c *Conn) refuseOverBudget(ctx context.Context, op byte, p []byte) {
	var id []byte
	if op == wsframe.OpText {
		f, err := protocol.ParseFrame(p)
		var fe *protocol.FrameError
		switch {
		case err == nil:
			id = f.ID
		case errors.As(err, &fe):
			id = fe.ID
		}
	}
	c.reject(ctx, id, protocol.CodeTooManyRequests, "frame rate limit exceeded (ws.frame_rate)")
}

// maxRouteBuckets bounds a connection's per-route buckets; beyond it the
// oldest goes (after reloads, buckets of routes no table holds any more).
const maxRouteBuckets = 16

// routeBucket returns the connection's bucket for rt (which has a rate),
// making it on first use. Owned by the read loop.
func (c *Conn) routeBucket(rt *routetable.Route) *tokenBucket {
	for i := range c.routeBuckets {
		if c.routeBuckets[i].rt == rt {
			return &c.routeBuckets[i].bucket
		}
	}
	if len(c.routeBuckets) == maxRouteBuckets {
		c.routeBuckets = append(c.routeBuckets[:0], c.routeBuckets[1:]...)
	}
	c.routeBuckets = append(c.routeBuckets, routeBucket{rt: rt, bucket: newTokenBucket(rt.Rate, rt.Burst)})
	return &c.routeBuckets[len(c.routeBuckets)-1].bucket
}

// reject answers a frame with an error without involving the broker,
// under a span of its own with an error status.
func (c *Conn) reject(ctx context.Context, id []byte, code, message string) {
	c.cfg.metrics.CallErrors.WithLabelValues(code).Inc()
	if t := c.cfg.tracing; t != nil {
		_, span := t.Tracer().Start(ctx, "reject", trace.WithSpanKind(trace.SpanKindServer))
		if span.IsRecording() {
			span.SetStatus(codes.Error, code)
			span.SetAttributes(attribute.String("piped.error.code", code), attribute.String("piped.error.message", message),
				attribute.String("piped.token_hash", telemetry.TokenHash(c.token)))
		}
		span.End()
	}
	c.Send(protocol.AppendError(nil, id, code, message))
}
