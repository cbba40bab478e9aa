package echo

// Tracing. A Piped node puts the W3C trace context of each call
// (traceparent, tracestate, baggage) in the AMQP headers of the message it
// publishes. A backend joins the trace in three steps, all in this file and
// in handle:
//
//  1. extract the context from the call's headers (headerCarrier below);
//  2. start a CONSUMER span "handle {method}" under it;
//  3. inject that span's context into the headers of the answer (and of
//     anything else the call makes the backend publish), so the node's
//     "process" span becomes its child.
//
// The exporter is configured from the standard OTEL_* variables only.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// headerCarrier lets an OpenTelemetry propagator read and write AMQP headers.
type headerCarrier amqp.Table

func (h headerCarrier) Get(key string) string {
	if b, ok := h[key].([]byte); ok { // some clients send strings as byte arrays
		return string(b)
	}
	s, _ := h[key].(string)
	return s
}

func (h headerCarrier) Set(key, value string) { h[key] = value }

func (h headerCarrier) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}

// propagator is the W3C trace context and baggage, as the node uses them.
var propagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// tracerName names the instrumentation the backend's spans come from.
const tracerName = "github.com/piped-dev/piped/examples/echo-backend/echo"

// DefaultServiceName is the service.name of the backend's spans unless
// OTEL_SERVICE_NAME says otherwise.
const DefaultServiceName = "echo-backend"

// NewTracerProvider builds a tracer provider from the standard OTEL_*
// environment variables:
//
//	OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else OTEL_EXPORTER_OTLP_ENDPOINT
//	        where to export, e.g. http://127.0.0.1:4317; none: nothing is exported
//	OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL
//	        grpc (the default, as for the node) or http/protobuf
//	OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES   the resource ("echo-backend" by default)
//	OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG  the sampler (parentbased_always_on by default)
//	OTEL_TRACES_EXPORTER=none                     export nothing even with an endpoint
//
// With no endpoint spans are still made, so the answers carry a trace
// context of their own and the trace stays connected; they are just not
// exported. The caller shuts the provider down, which flushes it.
func NewTracerProvider(ctx context.Context) (*sdktrace.TracerProvider, error) {
	return newTracerProvider(ctx, os.Getenv)
}

func newTracerProvider(ctx context.Context, getenv func(string) string) (*sdktrace.TracerProvider, error) {
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName(DefaultServiceName)),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("echo: tracing resource: %w", err)
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)} // the SDK reads OTEL_TRACES_SAMPLER itself
	endpoint := first(getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), getenv("OTEL_EXPORTER_OTLP_ENDPOINT"))
	if endpoint != "" && getenv("OTEL_TRACES_EXPORTER") != "none" {
		var exp sdktrace.SpanExporter
		// Both exporters read the endpoint, headers, timeout and TLS settings
		// from the OTEL_EXPORTER_OTLP_* variables themselves.
		switch p := first(getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"), getenv("OTEL_EXPORTER_OTLP_PROTOCOL"), "grpc"); p {
		case "grpc":
			exp, err = otlptracegrpc.New(ctx)
		case "http/protobuf":
			exp, err = otlptracehttp.New(ctx)
		default:
			err = fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL %q: want grpc or http/protobuf", p)
		}
		if err != nil {
			return nil, fmt.Errorf("echo: trace exporter: %w", err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	return sdktrace.NewTracerProvider(opts...), nil
}

func first(vs ...string) string {
	for _, v := range vs {
		if strings.TrimSpace(v) != "" {
			return v
		}
	}
	return ""
}

// startHandle starts the CONSUMER span of handling call c, delivered as d
// from the queue of node, under the trace context in d's headers.
func (s *session) startHandle(ctx context.Context, node string, d amqp.Delivery, method string) (context.Context, trace.Span) {
	ctx = propagator.Extract(ctx, headerCarrier(d.Headers))
	return s.tracer.Start(ctx, "handle "+method,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			semconv.MessagingSystemRabbitMQ,
			semconv.MessagingOperationTypeProcess,
			semconv.MessagingOperationName("handle"),
			semconv.MessagingDestinationName(s.cfg.QueueOutPrefix+node),
			semconv.MessagingMessageID(d.MessageId),
			semconv.MessagingMessageConversationID(d.CorrelationId),
			semconv.MessagingMessageBodySize(len(d.Body)),
			semconv.RPCMethod(method),
		))
}

// startPublish starts the PRODUCER span of publishing a message (an event)
// to exchange while handling a call.
func (s *session) startPublish(ctx context.Context, exchange string) (context.Context, trace.Span) {
	return s.tracer.Start(ctx, "publish "+exchange,
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			semconv.MessagingSystemRabbitMQ,
			semconv.MessagingOperationTypeSend,
			semconv.MessagingOperationName("publish"),
			semconv.MessagingDestinationName(exchange),
		))
}

// traceHeaders returns AMQP headers carrying the trace context of ctx (the
// span that publishes), or nil when there is none.
func traceHeaders(ctx context.Context) amqp.Table {
	h := amqp.Table{}
	propagator.Inject(ctx, headerCarrier(h))
	if len(h) == 0 {
		return nil
	}
	return h
}
