// Package tracing checks, end to end, that a call's spans reach a real Jaeger
// as one trace: a real node process exporting over OTLP gRPC, the example
// echo backend (in this process, with a tracer of its own) continuing the
// trace from the AMQP headers, and Jaeger's query API read back.
//
// It needs bin/jaeger (scripts/jaeger.sh build) and RabbitMQ
// (scripts/ensure-rabbitmq.sh); TestMain starts and stops Jaeger.
package tracing

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"

	"github.com/piped-dev/piped/examples/echo-backend/echo"
	"github.com/piped-dev/piped/telemetry"
	h "github.com/piped-dev/piped/test/harness"
)

const (
	wait = 10 * time.Second
	// queryWithin bounds the wait for the spans to be queryable in Jaeger
	// after the node and the backend flushed them.
	queryWithin = 20 * time.Second
)

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// tracedNode starts a node exporting its spans to Jaeger as service.
func tracedNode(t *testing.T, service string, env ...string) *h.Node {
	t.Helper()
	env = append([]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + otlpURL,
		"OTEL_SERVICE_NAME=" + service,
		"OTEL_TRACES_SAMPLER=parentbased_always_on",
	}, env...)
	return h.StartNode(t, h.WithEnv(env...))
}

// stopNode stops n with SIGTERM, so that it flushes its spans, and checks
// that it exited cleanly and did flush.
func stopNode(t *testing.T, n *h.Node) {
	t.Helper()
	n.Stop(t)
	if code := n.Wait(t, time.Second); code != 0 {
		t.Errorf("node exited with %d:\n%s", code, n.Logs())
	}
	if strings.Contains(n.Logs(), "flushing spans") {
		t.Errorf("node could not flush its spans:\n%s", n.Logs())
	}
}

// tracedBackend runs the echo backend for n in this process, exporting its
// spans to Jaeger as service. stop stops it and flushes its spans.
func tracedBackend(t *testing.T, n *h.Node, service string) (stop func()) {
	t.Helper()
	ctx := context.Background()
	exp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpointURL(otlpURL))
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp),
		sdktrace.WithResource(resource.NewSchemaless(semconv.ServiceName(service))))
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- echo.Run(ctx, echo.Config{
			URL: h.AMQPURL(), Nodes: []string{n.ID}, MassExchange: n.Mass, CopyCorrelationID: true,
			TracerProvider: tp, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("echo backend: %v", err)
			}
			sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer scancel()
			if err := tp.Shutdown(sctx); err != nil {
				t.Errorf("echo backend: flushing spans: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// callTree is the spans of one call, by role.
type callTree struct {
	trace                          jTrace
	call, publish, handle, process jSpan
	send                           jSpan
	callSvc, handleSvc, processSvc string
}

// treeOf finds the spans of one call in tr (nil when some have not arrived).
func treeOf(tr jTrace, nodeID string) *callTree {
	c := &callTree{trace: tr}
	found := map[string]bool{}
	for _, s := range tr.Spans {
		svc := tr.Processes[s.ProcessID].ServiceName
		switch {
		case s.OperationName == "call":
			c.call, c.callSvc = s, svc
		case s.OperationName == "publish exchange-out-"+nodeID:
			c.publish = s
		case strings.HasPrefix(s.OperationName, "handle "):
			c.handle, c.handleSvc = s, svc
		case s.OperationName == "process queue-in-"+nodeID:
			c.process, c.processSvc = s, svc
		case s.OperationName == "send":
			c.send = s
		default:
			continue
		}
		found[s.OperationName] = true
	}
	if len(found) < 5 {
		return nil
	}
	return c
}

func names(tr []jTrace) string {
	var b strings.Builder
	for _, t := range tr {
		fmt.Fprintf(&b, "\n  trace %s:", t.TraceID)
		for _, s := range t.Spans {
			fmt.Fprintf(&b, " %q(%s)", s.OperationName, t.Processes[s.ProcessID].ServiceName)
		}
	}
	return b.String()
}

// noToken fails the test when any span, event or resource of tr holds token.
func noToken(t *testing.T, tr jTrace, token string) {
	t.Helper()
	check := func(where string, tags []jTag) {
		for _, tg := range tags {
			if strings.Contains(fmt.Sprint(tg.Value), token) || strings.Contains(tg.Key, token) {
				t.Errorf("%s: tag %s holds the raw token", where, tg.Key)
			}
		}
	}
	for _, s := range tr.Spans {
		if strings.Contains(s.OperationName, token) {
			t.Errorf("span name %q holds the raw token", s.OperationName)
		}
		check("span "+s.OperationName, s.Tags)
		for _, l := range s.Logs {
			check("span "+s.OperationName+" event", l.Fields)
		}
	}
	for id, p := range tr.Processes {
		check("process "+id, p.Tags)
	}
}

// wantTag fails the test unless span s has tag key = want.
func wantTag(t *testing.T, s jSpan, key, want string) {
	t.Helper()
	if got, err := s.tag(key); err != nil || got != want {
		t.Errorf("span %q: tag %s = %q (%v), want %q", s.OperationName, key, got, err, want)
	}
}

// A call through the node and the echo backend is one trace in Jaeger:
//
//	call → publish exchange-out-ID → handle get (backend) → process queue-in-ID → send
//
// with process linked to call; a client's traceparent makes it the client's trace.
func TestTraceThroughBackend(t *testing.T) {
	t.Parallel()
	run := h.UniqueID("tr")
	nodeSvc, backendSvc := "piped-"+run, "echo-backend-"+run
	n := tracedNode(t, nodeSvc)
	stopBackend := tracedBackend(t, n, backendSvc)

	token := "secret-token-" + randHex(8)
	clientTrace, clientSpan := randHex(16), randHex(8)
	c := h.Dial(t, n, token)
	c.Send(t, `{"id":1,"method":"get","payload":{"a":1},"traceparent":"00-`+clientTrace+`-`+clientSpan+`-01","tracestate":"client=1"}`)
	if f := c.NextFrame(t, wait); f.Type != "result" || string(f.ID) != "1" {
		t.Fatalf("answer to the call with a traceparent: %s", f.Raw)
	}
	c.Send(t, `{"id":2,"method":"get"}`)
	if f := c.NextFrame(t, wait); f.Type != "result" || string(f.ID) != "2" {
		t.Fatalf("answer to the call without a traceparent: %s", f.Raw)
	}
	stopNode(t, n)
	stopBackend()

	var withClient, own *callTree
	all := pollTraces(t, nodeSvc, queryWithin, func(trs []jTrace) bool {
		withClient, own = nil, nil
		for _, tr := range trs {
			ct := treeOf(tr, n.ID)
			switch {
			case ct == nil:
			case tr.TraceID == clientTrace:
				withClient = ct
			default:
				own = ct
			}
		}
		return withClient != nil && own != nil
	})
	if withClient == nil || own == nil {
		t.Fatalf("Jaeger has no complete trace of both calls (client trace %s) after %v; traces of %s:%s",
			clientTrace, queryWithin, nodeSvc, names(all))
	}

	for _, tc := range []struct {
		name string
		ct   *callTree
	}{{"client traceparent", withClient}, {"no traceparent", own}} {
		t.Run(tc.name, func(t *testing.T) {
			ct := tc.ct
			if ct.callSvc != nodeSvc || ct.processSvc != nodeSvc || ct.handleSvc != backendSvc {
				t.Errorf("services: call %q, handle %q, process %q; want %q, %q, %q",
					ct.callSvc, ct.handleSvc, ct.processSvc, nodeSvc, backendSvc, nodeSvc)
			}
			for _, e := range []struct {
				child, parent jSpan
			}{{ct.publish, ct.call}, {ct.handle, ct.publish}, {ct.process, ct.handle}, {ct.send, ct.process}} {
				if got := e.child.parent(); got != e.parent.SpanID {
					t.Errorf("span %q: parent %q, want %q (%s)", e.child.OperationName, got, e.parent.OperationName, e.parent.SpanID)
				}
			}
			linked := false
			for _, r := range ct.process.References {
				if r.RefType != "CHILD_OF" && r.SpanID == ct.call.SpanID {
					linked = true
				}
			}
			if !linked {
				t.Errorf("span %q is not linked to the call span %s: references %+v", ct.process.OperationName, ct.call.SpanID, ct.process.References)
			}
			for s, kind := range map[*jSpan]string{&ct.call: "server", &ct.publish: "producer", &ct.handle: "consumer", &ct.process: "consumer", &ct.send: "internal"} {
				wantTag(t, *s, "span.kind", kind)
			}
			if ct.handle.OperationName != "handle get" {
				t.Errorf("backend span %q, want \"handle get\"", ct.handle.OperationName)
			}
			wantTag(t, ct.call, "piped.token_hash", telemetry.TokenHash(token))
			wantTag(t, ct.call, "rpc.method", "get")
			wantTag(t, ct.publish, "messaging.system", "rabbitmq")
			wantTag(t, ct.publish, "messaging.destination.name", "exchange-out-"+n.ID)
			wantTag(t, ct.handle, "messaging.system", "rabbitmq")
			wantTag(t, ct.handle, "messaging.destination.name", "queue-out-"+n.ID)
			if corr, err := ct.publish.tag("messaging.message.conversation_id"); err != nil || corr == "" {
				t.Errorf("publish span has no conversation id")
			} else {
				wantTag(t, ct.handle, "messaging.message.conversation_id", corr)
				wantTag(t, ct.process, "messaging.message.conversation_id", corr)
			}
			for _, s := range []jSpan{ct.call, ct.publish, ct.handle, ct.process, ct.send} {
				if v, _ := s.tag("error"); v == "true" {
					t.Errorf("span %q has error=true", s.OperationName)
				}
			}
			noToken(t, ct.trace, token)
		})
	}
	if got := withClient.call.parent(); got != clientSpan {
		t.Errorf("call span's parent %q, want the client's span %s", got, clientSpan)
	}
	if got := own.call.parent(); got != "" {
		t.Errorf("call without a traceparent: parent %q, want a root span", got)
	}
}

// A call that times out (no backend) is a call span with an error status.
func TestTraceTimeoutIsError(t *testing.T) {
	t.Parallel()
	svc := "piped-" + h.UniqueID("tr")
	n := tracedNode(t, svc, "PIPED_REQUESTS_TIMEOUT=300ms")
	token := "secret-token-" + randHex(8)
	c := h.Dial(t, n, token)
	c.Send(t, `{"id":1,"method":"get"}`)
	if f := c.NextFrame(t, wait); f.Type != "error" || f.Error.Code != "timeout" {
		t.Fatalf("answer %s, want a timeout error", f.Raw)
	}
	stopNode(t, n)

	var call *jSpan
	all := pollTraces(t, svc, queryWithin, func(trs []jTrace) bool {
		for _, tr := range trs {
			for _, s := range tr.Spans {
				if s.OperationName == "call" {
					call = &s
					return true
				}
			}
		}
		return false
	})
	if call == nil {
		t.Fatalf("Jaeger has no call span for %s after %v:%s", svc, queryWithin, names(all))
	}
	wantTag(t, *call, "error", "true")
	wantTag(t, *call, "otel.status_code", "ERROR")
	wantTag(t, *call, "otel.status_description", "timeout")
	wantTag(t, *call, "piped.error.code", "timeout")
	for _, tr := range all {
		noToken(t, tr, token)
	}
}
