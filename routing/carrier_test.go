package routing

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/piped-dev/piped/telemetry"
)

// Trace context survives a trip through AMQP headers, written as strings
// (as the router does) or read back as byte arrays (as some clients send).
func TestAMQPHeadersCarrier(t *testing.T) {
	tr := telemetry.NewTestTracing(sdktrace.NewTracerProvider())
	ctx, span := tr.Tracer().Start(context.Background(), "s")
	defer span.End()
	h := AMQPHeaders{}
	tr.Propagator.Inject(ctx, h)
	tp, ok := h["traceparent"].(string)
	if !ok {
		t.Fatalf("no traceparent header: %v", h)
	}
	for name, hdr := range map[string]AMQPHeaders{
		"string":     h,
		"byte array": {"traceparent": []byte(tp)},
	} {
		got := trace.SpanContextFromContext(tr.Propagator.Extract(context.Background(), hdr))
		if got.TraceID() != span.SpanContext().TraceID() || got.SpanID() != span.SpanContext().SpanID() {
			t.Errorf("%s: extracted %v, want %v", name, got, span.SpanContext())
		}
	}
	if got := (AMQPHeaders{"traceparent": 42}).Get("traceparent"); got != "" {
		t.Errorf("Get of a number = %q, want empty", got)
	}
}
