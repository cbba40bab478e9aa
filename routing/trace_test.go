package routing

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/piped-dev/piped/config"
	"github.com/piped-dev/piped/protocol"
	"github.com/piped-dev/piped/routetable"
	"github.com/piped-dev/piped/telemetry"
	"github.com/piped-dev/piped/test/harness"
)

// brokerRouter runs a Router on the real broker under a unique node id with
// spans recorded in memory; everything is stopped and deleted at cleanup.
type brokerRouter struct {
	*Router
	rec     *tracetest.SpanRecorder
	tracing *telemetry.Tracing
	hub     *fakeHub
}

func startBrokerRouter(t *testing.T, timeout time.Duration) *brokerRouter {
	t.Helper()
	return startBrokerRouterWith(t, timeout, nil)
}

// startBrokerRouterWith is startBrokerRouter with a route table compiled
// from routes (and the default route) for the router's node id.
func startBrokerRouterWith(t *testing.T, timeout time.Duration, routes []config.Route) *brokerRouter {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	tracing := telemetry.NewTestTracing(tp)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	id := "rt-" + hex.EncodeToString(b)
	cfg := config.Defaults().AMQP
	cfg.URL = harness.AMQPURL()
	cfg.MassExchange = "mass-" + id
	hub := &fakeHub{conns: map[string]int{}}
	var holder *routetable.Holder
	if routes != nil {
		tab, err := routetable.Compile(routes, routetable.Default{NodeID: id, Exchange: cfg.ExchangeOutPrefix + id, Timeout: timeout, Enabled: true})
		if err != nil {
			t.Fatal(err)
		}
		holder = routetable.NewHolder(tab)
	}
	r := New(Options{NodeID: id, AMQP: cfg, Routes: holder, Timeout: timeout, Hub: hub,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: telemetry.NewMetrics(), Tracing: tracing})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		deleteTopology(t, r.Topology())
	})
	deadline := time.Now().Add(15 * time.Second)
	for r.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("router not ready: %v (is RabbitMQ running? scripts/ensure-rabbitmq.sh)", r.Ready())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return &brokerRouter{Router: r, rec: rec, tracing: tracing, hub: hub}
}

func deleteTopology(t *testing.T, topo Topology) {
	conn, err := amqp.Dial(harness.AMQPURL())
	if err != nil {
		t.Logf("cleanup: %v", err)
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return
	}
	defer ch.Close()
	_, _ = ch.QueueDelete(topo.QueueIn, false, false, false)
	_, _ = ch.QueueDelete(topo.QueueOut, false, false, false)
	_ = ch.ExchangeDelete(topo.ExchangeIn, false, false)
	_ = ch.ExchangeDelete(topo.ExchangeOut, false, false)
	_ = ch.ExchangeDelete(topo.Mass, false, false)
	if topo.Events != "" {
		_ = ch.ExchangeDelete(topo.Events, false, false)
	}
}

// backend answers every call on the router's out-queue once: it continues
// the trace from the headers under a span of its own and puts that span's
// context on the result, as docs/tracing.md tells backends to do.
func (b *brokerRouter) backend(t *testing.T, copyHeaders bool) {
	t.Helper()
	conn, err := amqp.Dial(harness.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	deliveries, err := ch.Consume(b.topo.QueueOut, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tracer := b.tracing.Tracer()
		for d := range deliveries {
			ctx := b.tracing.Propagator.Extract(context.Background(), AMQPHeaders(d.Headers))
			ctx, span := tracer.Start(ctx, "backend handle", trace.WithSpanKind(trace.SpanKindConsumer))
			var call map[string]json.RawMessage
			_ = json.Unmarshal(d.Body, &call)
			body := `{"type":"result","token":` + string(call["token"]) + `,"method":` + string(call["method"])
			if id, ok := call["id"]; ok {
				body += `,"id":` + string(id)
			}
			body += `}`
			headers := amqp.Table{}
			if copyHeaders {
				b.tracing.Propagator.Inject(ctx, AMQPHeaders(headers))
			}
			_ = ch.Publish(b.topo.ExchangeIn, "", false, false, amqp.Publishing{CorrelationId: d.CorrelationId, Headers: headers, Body: []byte(body)})
			span.End()
		}
	}()
	t.Cleanup(func() { conn.Close(); wg.Wait() })
}

// answerSink collects answers on a channel.
type answerSink chan string

func (s answerSink) Answer(id, msg []byte) { s <- string(msg) }

func (s answerSink) next(t *testing.T) string {
	t.Helper()
	select {
	case m := <-s:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no answer")
		return ""
	}
}

func spanByName(t *testing.T, spans []sdktrace.ReadOnlySpan, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	for _, s := range spans {
		if s.Name() == name {
			return s
		}
	}
	names := []string{}
	for _, s := range spans {
		names = append(names, s.Name())
	}
	t.Fatalf("no span %q among %q", name, names)
	return nil
}

func waitSpans(t *testing.T, rec *tracetest.SpanRecorder, n int) []sdktrace.ReadOnlySpan {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(rec.Ended()) < n && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	return rec.Ended()
}

func childOf(t *testing.T, child, parent sdktrace.ReadOnlySpan) {
	t.Helper()
	if child.Parent().SpanID() != parent.SpanContext().SpanID() || child.SpanContext().TraceID() != parent.SpanContext().TraceID() {
		t.Errorf("span %q is not a child of %q", child.Name(), parent.Name())
	}
}

func TestTraceCallAndResult(t *testing.T) {
	for _, tc := range []struct {
		name        string
		id          []byte
		traceparent string
	}{
		{"with id", []byte("1"), ""},
		{"without id", nil, ""},
		{"client traceparent", []byte(`"c"`), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startBrokerRouter(t, 10*time.Second)
			b.backend(t, true)
			ctx := context.Background()
			if tc.traceparent != "" {
				ctx = b.tracing.Propagator.Extract(ctx, telemetry.FrameCarrier{TraceParent: tc.traceparent})
			}
			s := make(answerSink, 1)
			b.Call(ctx, "tok", &protocol.Frame{ID: tc.id, Method: "get"}, b.Routes().Load().Default(), s)
			if got := s.next(t); !strings.Contains(got, `"type":"result"`) {
				t.Fatalf("answer %s", got)
			}
			spans := waitSpans(t, b.rec, 5)
			call := spanByName(t, spans, "call")
			pub := spanByName(t, spans, "publish "+b.topo.ExchangeOut)
			backend := spanByName(t, spans, "backend handle")
			proc := spanByName(t, spans, "process "+b.topo.QueueIn)
			send := spanByName(t, spans, "send")
			if call.SpanKind() != trace.SpanKindServer || pub.SpanKind() != trace.SpanKindProducer || proc.SpanKind() != trace.SpanKindConsumer {
				t.Errorf("kinds: call %v publish %v process %v", call.SpanKind(), pub.SpanKind(), proc.SpanKind())
			}
			if tc.traceparent != "" && call.Parent().TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
				t.Errorf("the client's traceparent was not honoured: parent %v", call.Parent())
			}
			childOf(t, pub, call)
			childOf(t, backend, pub)
			childOf(t, proc, backend)
			childOf(t, send, proc)
			if len(proc.Links()) != 1 || proc.Links()[0].SpanContext.SpanID() != call.SpanContext().SpanID() {
				t.Errorf("process span is not linked to the call: %v", proc.Links())
			}
			if call.Status().Code == codes.Error {
				t.Errorf("call status %v", call.Status())
			}
			for _, s := range spans {
				for _, a := range s.Attributes() {
					if a.Value.AsString() == "tok" {
						t.Errorf("raw token in span %q attribute %s", s.Name(), a.Key)
					}
				}
			}
		})
	}
}

// A backend that sends no trace context: the process span is a child of the call.
func TestTraceResultWithoutBackendContext(t *testing.T) {
	b := startBrokerRouter(t, 10*time.Second)
	b.backend(t, false)
	s := make(answerSink, 1)
	b.Call(context.Background(), "tok", &protocol.Frame{ID: []byte("1"), Method: "get"}, b.Routes().Load().Default(), s)
	s.next(t)
	spans := waitSpans(t, b.rec, 5)
	childOf(t, spanByName(t, spans, "process "+b.topo.QueueIn), spanByName(t, spans, "call"))
}

func TestTraceTimeout(t *testing.T) {
	b := startBrokerRouter(t, 200*time.Millisecond) // no backend
	s := make(answerSink, 1)
	b.Call(context.Background(), "tok", &protocol.Frame{ID: []byte("1"), Method: "get"}, b.Routes().Load().Default(), s)
	if got := s.next(t); !strings.Contains(got, `"timeout"`) {
		t.Fatalf("answer %s", got)
	}
	call := spanByName(t, waitSpans(t, b.rec, 2), "call")
	if call.Status().Code != codes.Error || call.Status().Description != "timeout" {
		t.Fatalf("call status %+v", call.Status())
	}
}

func TestTraceEvent(t *testing.T) {
	b := startBrokerRouter(t, time.Second)
	ctx, span := b.tracing.Tracer().Start(context.Background(), "backend emit", trace.WithSpanKind(trace.SpanKindProducer))
	headers := amqp.Table{}
	b.tracing.Propagator.Inject(ctx, AMQPHeaders(headers))
	span.End()
	b.hub.mu.Lock()
	b.hub.conns["tok"] = 1
	b.hub.mu.Unlock()
	conn, err := amqp.Dial(harness.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, _ := conn.Channel()
	if err := ch.Publish(b.topo.Mass, "", false, false, amqp.Publishing{Headers: headers, Body: []byte(`{"type":"event","event":"e","token":"tok"}`)}); err != nil {
		t.Fatal(err)
	}
	spans := waitSpans(t, b.rec, 3)
	proc := spanByName(t, spans, "process "+b.topo.QueueIn)
	childOf(t, proc, spanByName(t, spans, "backend emit"))
	childOf(t, spanByName(t, spans, "send"), proc)
}

func TestTraceBrokerUnavailable(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	r := newTestRouter(&fakeHub{}, time.Minute)
	r.tracer = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)).Tracer("test")
	s := make(answerSink, 1)
	r.Call(context.Background(), "tok", &protocol.Frame{ID: []byte("1"), Method: "get"}, r.Routes().Load().Default(), s)
	if got := s.next(t); !strings.Contains(got, `"unavailable"`) {
		t.Fatalf("answer %s", got)
	}
	call := spanByName(t, rec.Ended(), "call")
	if call.Status().Code != codes.Error || call.Status().Description != "unavailable" {
		t.Fatalf("call status %+v", call.Status())
	}
}
