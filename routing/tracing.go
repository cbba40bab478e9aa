package routing

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/piped-dev/piped/telemetry"
)

// Span names. A call is one trace:
//
//	call (SERVER, from the client's frame; parent: the frame's traceparent)
//	├── publish {exchange} (PRODUCER, named for the route's exchange; its context travels in the AMQP headers; ends at the confirm)
//	│   └── … the backend's spans …
//	│       └── process queue-in-{id} (CONSUMER; parent: the backend's context from the result's headers,
//	│           │                      else the call span; linked to the call span)
//	│           └── send (INTERNAL: handing the message to the WebSocket connection)
//
// Events get process/send spans under the backend's context alone.
const (
	spanCall = "call"
	spanSend = "send"
)

// endError ends span with an error status and the error code.
func endError(span trace.Span, code string) {
	if span.IsRecording() {
		span.SetStatus(codes.Error, code)
		span.SetAttributes(attribute.String("piped.error.code", code))
	}
	span.End()
}

// startCall starts the call span; its attributes are only computed when it records.
func (r *Router) startCall(ctx context.Context, c *call) context.Context {
	ctx, c.span = r.tracer.Start(ctx, spanCall, trace.WithSpanKind(trace.SpanKindServer))
	if c.span.IsRecording() {
		c.span.SetAttributes(
			semconv.RPCMethod(c.method),
			attribute.String("piped.node_id", r.nodeID),
			attribute.String("piped.token_hash", telemetry.TokenHash(c.token)),
			attribute.Bool("piped.call.has_id", c.id != nil),
		)
		if c.rt != nil {
			c.span.SetAttributes(attribute.String("piped.route", c.rt.Name))
		}
	}
	return ctx
}

// startPublish starts the PRODUCER span of publishing c (a call or a
// notice, whose message id is msgID) on its route, to
// the exchange of meta with routing key key.
func (r *Router) startPublish(ctx context.Context, c *call, meta *exchangeMeta, key, msgID string) (context.Context, trace.Span) {
	ctx, span := r.tracer.Start(ctx, meta.publishSpan, trace.WithSpanKind(trace.SpanKindProducer))
	if span.IsRecording() {
		span.SetAttributes(
			semconv.MessagingSystemRabbitMQ,
			semconv.MessagingOperationTypeSend,
			semconv.MessagingOperationName("publish"),
			semconv.MessagingDestinationName(c.rt.Exchange),
			semconv.MessagingRabbitMQDestinationRoutingKey(key),
			semconv.MessagingMessageID(msgID),
			attribute.String("piped.node_id", r.nodeID),
			attribute.String("piped.route", c.rt.Name),
		)
		if c.notice {
			span.SetAttributes(semconv.RPCMethod(c.method))
		} else {
			span.SetAttributes(semconv.MessagingMessageConversationID(msgID)) // a call's message id is its correlation id
		}
	}
	return ctx, span
}

// startProcess starts the CONSUMER span of handling one in-queue message.
func (r *Router) startProcess(parent context.Context, msgID, corrID string, size int, links ...trace.Link) (context.Context, trace.Span) {
	ctx, span := r.tracer.Start(parent, r.processSpanName, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithLinks(links...))
	if span.IsRecording() {
		span.SetAttributes(
			semconv.MessagingSystemRabbitMQ,
			semconv.MessagingOperationTypeProcess,
			semconv.MessagingOperationName("process"),
			semconv.MessagingDestinationName(r.topo.QueueIn),
			semconv.MessagingMessageBodySize(size),
			attribute.String("piped.node_id", r.nodeID),
		)
		if msgID != "" {
			span.SetAttributes(semconv.MessagingMessageID(msgID))
		}
		if corrID != "" {
			span.SetAttributes(semconv.MessagingMessageConversationID(corrID))
		}
	}
	return ctx, span
}

// tracerOf returns the tracer and propagator of t, or no-ops when t is nil.
func tracerOf(t *telemetry.Tracing) (trace.Tracer, *telemetry.Tracing) {
	if t == nil {
		t = telemetry.NewTestTracing(noop.NewTracerProvider())
	}
	return t.Tracer(), t
}
