package telemetry

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/piped-dev/piped/config"
)

// InstrumentationName names the tracer Piped's spans come from.
const InstrumentationName = "github.com/piped-dev/piped"

// Tracing is a node's tracer provider and propagator. Nothing is installed
// globally: the packages that trace receive these explicitly.
type Tracing struct {
	// Provider creates the tracers.
	Provider trace.TracerProvider
	// Propagator carries W3C trace context and baggage in AMQP headers and
	// client frames.
	Propagator propagation.TextMapPropagator
	// Exporting says whether spans leave the process (an endpoint is configured).
	Exporting bool

	sdk *sdktrace.TracerProvider
}

// NewTracing builds tracing from cfg and the standard OTEL_* variables
// (getenv is os.Getenv in production), which win over cfg:
// OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
// OTEL_EXPORTER_OTLP_PROTOCOL (grpc or http/protobuf), OTEL_SERVICE_NAME,
// OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG), OTEL_TRACES_EXPORTER=none.
// The resource carries service.name, piped.node_id (node.ID) and, when
// node.Region is set, cloud.region. With no endpoint
// nothing is exported and nothing is sampled locally, but trace context is
// still propagated: a client's or backend's trace stays connected.
func NewTracing(ctx context.Context, cfg config.Telemetry, node config.Node, getenv func(string) string) (*Tracing, error) {
	attrs := []attribute.KeyValue{semconv.ServiceName(cfg.ServiceName), attribute.String("piped.node_id", node.ID)}
	if node.Region != "" {
		attrs = append(attrs, semconv.CloudRegion(node.Region))
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attrs...),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	endpoint := firstNonEmpty(getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), getenv("OTEL_EXPORTER_OTLP_ENDPOINT"))
	protocol := firstNonEmpty(getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"), getenv("OTEL_EXPORTER_OTLP_PROTOCOL"), cfg.Protocol)
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	exporting := (endpoint != "" || cfg.Endpoint != "") && getenv("OTEL_TRACES_EXPORTER") != "none"
	if exporting {
		exp, err := newExporter(ctx, protocol, endpoint, cfg.Endpoint)
		if err != nil {
			return nil, err
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
		if getenv("OTEL_TRACES_SAMPLER") == "" { // else the SDK reads the variable itself
			opts = append(opts, sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.SampleRatio))))
		}
	} else {
		// Nothing is recorded for calls we start, but a sampled parent (a
		// client's traceparent) stays sampled, so the flag we pass on to the
		// backend is the one we were given.
		opts = append(opts, sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	return &Tracing{
		Provider:   tp,
		Propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		Exporting:  exporting,
		sdk:        tp,
	}, nil
}

// newExporter makes the OTLP exporter. When only cfgEndpoint (telemetry.endpoint)
// is set it is used explicitly; the OTEL_* variables are read by the exporter.
func newExporter(ctx context.Context, protocol, envEndpoint, cfgEndpoint string) (sdktrace.SpanExporter, error) {
	switch protocol {
	case "grpc", "":
		var o []otlptracegrpc.Option
		if envEndpoint == "" {
			o = append(o, otlptracegrpc.WithEndpointURL(withScheme(cfgEndpoint)))
		}
		exp, err := otlptracegrpc.New(ctx, o...)
		if err != nil {
			return nil, fmt.Errorf("telemetry: OTLP gRPC exporter: %w", err)
		}
		return exp, nil
	case "http/protobuf":
		var o []otlptracehttp.Option
		if envEndpoint == "" {
			o = append(o, otlptracehttp.WithEndpointURL(strings.TrimSuffix(withScheme(cfgEndpoint), "/")+"/v1/traces"))
		}
		exp, err := otlptracehttp.New(ctx, o...)
		if err != nil {
			return nil, fmt.Errorf("telemetry: OTLP HTTP exporter: %w", err)
		}
		return exp, nil
	default:
		return nil, fmt.Errorf("telemetry: OTLP protocol %q: want grpc or http/protobuf", protocol)
	}
}

func withScheme(endpoint string) string {
	if strings.Contains(endpoint, "://") {
		return endpoint
	}
	return "http://" + endpoint
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// Tracer returns the node's tracer.
func (t *Tracing) Tracer() trace.Tracer { return t.Provider.Tracer(InstrumentationName) }

// Shutdown flushes buffered spans and stops exporting.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t.sdk == nil {
		return nil
	}
	if err := t.sdk.Shutdown(ctx); err != nil {
		return fmt.Errorf("telemetry: flush spans: %w", err)
	}
	return nil
}

// NewTestTracing returns tracing over the given provider (an SDK provider
// with an in-memory recorder in tests).
func NewTestTracing(tp trace.TracerProvider) *Tracing {
	return &Tracing{Provider: tp, Propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})}
}

// FrameCarrier reads a client frame's "traceparent"/"tracestate" fields.
type FrameCarrier struct{ TraceParent, TraceState string }

// Get returns the field for key.
func (f FrameCarrier) Get(key string) string {
	switch key {
	case "traceparent":
		return f.TraceParent
	case "tracestate":
		return f.TraceState
	}
	return ""
}

// Set is not supported: frames are only read.
func (f FrameCarrier) Set(string, string) {}

// Keys lists the fields present.
func (f FrameCarrier) Keys() []string { return []string{"traceparent", "tracestate"} }
