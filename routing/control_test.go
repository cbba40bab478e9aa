package routing

import (
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/piped-dev/piped/config"
	"github.com/piped-dev/piped/telemetry"
)

// The dispatcher by type: events to the token or one connection, control
// messages to the hub, anything else dropped and counted.
func TestDispatchByType(t *testing.T) {
	tests := []struct {
		name        string
		body        string
		wantGot     []string // hub deliveries (see fakeHub)
		wantClosed  []string // hub disconnects
		wantDrop    string   // reason counted once
		wantControl string   // type/outcome counted once
		wantEvents  float64
	}{
		{name: "event to the token", body: `{"type":"event","token":"t","event":"e"}`,
			wantGot: []string{`t {"type":"event","event":"e"}`}, wantEvents: 1},
		{name: "event to one connection, connection kept", body: `{"type":"event","token":"t","connection":"n1.00ff","event":"e"}`,
			wantGot: []string{`t/n1.00ff {"type":"event","connection":"n1.00ff","event":"e"}`}, wantEvents: 1},
		{name: "event with a null connection goes to the token", body: `{"type":"event","token":"t","connection":null}`,
			wantGot: []string{`t {"type":"event","connection":null}`}, wantEvents: 1},
		{name: "event with a bad connection is dropped", body: `{"type":"event","token":"t","connection":7}`, wantDrop: "bad_connection"},
		{name: "event with an empty connection is dropped", body: `{"type":"event","token":"t","connection":""}`, wantDrop: "bad_connection"},
		{name: "event to a connection that is not here", body: `{"type":"event","token":"nobody","connection":"n1.00ff"}`,
			wantGot: []string{`nobody/n1.00ff {"type":"event","connection":"n1.00ff"}`}, wantDrop: "no_connection", wantEvents: 1},
		{name: "event without token", body: `{"type":"event","event":"e"}`, wantDrop: "no_token"},
		{name: "result without token", body: `{"type":"result","id":1}`, wantDrop: "no_token"},
		{name: "result with a connection is a result", body: `{"type":"result","token":"t","id":9,"connection":"c"}`,
			wantGot: []string{`t {"type":"result","id":9,"connection":"c"}`}},
		{name: "unknown type", body: `{"type":"response","token":"t","payload":1}`, wantDrop: "unknown_type"},
		{name: "no type", body: `{"token":"t","event":"e"}`, wantDrop: "unknown_type"},
		{name: "type not a string", body: `{"type":1,"token":"t"}`, wantDrop: "unknown_type"},
		{name: "type case matters", body: `{"type":"Event","token":"t"}`, wantDrop: "unknown_type"},
		{name: "no type, no token", body: `{}`, wantDrop: "unknown_type"},

		{name: "disconnect with defaults", body: `{"type":"disconnect","token":"t"}`,
			wantClosed: []string{"t/ 0 "}, wantControl: "disconnect/ok"},
		{name: "disconnect with code and reason", body: `{"type":"disconnect","token":"t","code":4321,"reason":"banned"}`,
			wantClosed: []string{"t/ 4321 banned"}, wantControl: "disconnect/ok"},
		{name: "disconnect one connection", body: `{"type":"disconnect","token":"t","connection":"n1.00ff"}`,
			wantClosed: []string{"t/n1.00ff 0 "}, wantControl: "disconnect/ok"},
		{name: "disconnect code below the range: default", body: `{"type":"disconnect","token":"t","code":1000,"reason":"r"}`,
			wantClosed: []string{"t/ 0 r"}, wantControl: "disconnect/bad_code"},
		{name: "disconnect code above the range: default", body: `{"type":"disconnect","token":"t","code":5000}`,
			wantClosed: []string{"t/ 0 "}, wantControl: "disconnect/bad_code"},
		{name: "disconnect code not an integer: default", body: `{"type":"disconnect","token":"t","code":4001.5}`,
			wantClosed: []string{"t/ 0 "}, wantControl: "disconnect/bad_code"},
		{name: "disconnect with no connection here", body: `{"type":"disconnect","token":"nobody"}`,
			wantClosed: []string{"nobody/ 0 "}, wantControl: "disconnect/ok", wantDrop: "no_connection"},
		{name: "disconnect without token", body: `{"type":"disconnect"}`, wantDrop: "bad_control"},
		{name: "disconnect code not a number", body: `{"type":"disconnect","token":"t","code":"4001"}`, wantDrop: "bad_control"},
		{name: "disconnect reason not a string", body: `{"type":"disconnect","token":"t","reason":1}`, wantDrop: "bad_control"},

		{name: "broadcast", body: `{"type":"broadcast","event":"deploy","payload":{"v":1.50}}`,
			wantGot: []string{`* {"type":"event","event":"deploy","payload":{"v":1.50}}`}, wantControl: "broadcast/ok"},
		{name: "broadcast without payload, token ignored", body: `{"type":"broadcast","token":"t","event":"e"}`,
			wantGot: []string{`* {"type":"event","event":"e"}`}, wantControl: "broadcast/ok"},
		{name: "broadcast event not a string", body: `{"type":"broadcast","event":{"a":1}}`, wantDrop: "bad_control"},
		{name: "broadcast without event", body: `{"type":"broadcast","payload":1}`, wantDrop: "bad_control"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hub := &fakeHub{conns: map[string]int{"t": 2}}
			r := newTestRouter(hub, time.Minute)
			newDispatcher(r).route(&amqp.Delivery{Body: []byte(tc.body)})
			if !slices.Equal(hub.got, tc.wantGot) {
				t.Errorf("delivered %q, want %q", hub.got, tc.wantGot)
			}
			if !slices.Equal(hub.closed, tc.wantClosed) {
				t.Errorf("disconnected %q, want %q", hub.closed, tc.wantClosed)
			}
			drops := testutil.CollectAndCount(r.metrics.Dropped)
			if tc.wantDrop != "" {
				if got := testutilCount(t, r, tc.wantDrop); got != 1 || drops != 1 {
					t.Errorf("dropped{%s} = %v (%d reasons), want 1", tc.wantDrop, got, drops)
				}
			} else if drops != 0 {
				t.Errorf("%d drop reasons counted, want none", drops)
			}
			controls := testutil.CollectAndCount(r.metrics.Control)
			if tc.wantControl != "" {
				typ, outcome, _ := strings.Cut(tc.wantControl, "/")
				if got := testutil.ToFloat64(r.metrics.Control.WithLabelValues(typ, outcome)); got != 1 || controls != 1 {
					t.Errorf("control{%s} = %v (%d series), want 1", tc.wantControl, got, controls)
				}
			} else if controls != 0 {
				t.Errorf("%d control series counted, want none", controls)
			}
			if got := testutil.ToFloat64(r.metrics.Events); got != tc.wantEvents {
				t.Errorf("events = %v, want %v", got, tc.wantEvents)
			}
		})
	}
}

// Control messages get a process span with a send child, under the
// backend's trace context; a malformed one's span has the drop reason as
// its error.
func TestControlSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	cfg := config.Defaults()
	r := New(Options{NodeID: "n1", AMQP: cfg.AMQP, Timeout: time.Minute, Hub: &fakeHub{conns: map[string]int{"t": 1}},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: telemetry.NewMetrics(),
		Tracing: telemetry.NewTestTracing(tp)})
	d := newDispatcher(r)
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	headers := amqp.Table{"traceparent": "00-" + traceID + "-00f067aa0ba902b7-01"}
	d.route(&amqp.Delivery{Headers: headers, MessageId: "m1", Body: []byte(`{"type":"broadcast","event":"e"}`)})
	d.route(&amqp.Delivery{Headers: headers, Body: []byte(`{"type":"disconnect","token":"t","connection":"n1.00ff"}`)})
	d.route(&amqp.Delivery{Body: []byte(`{"type":"broadcast"}`)})
	d.route(&amqp.Delivery{Body: []byte(`{"type":"nope","token":"t"}`)})

	spans := rec.Ended()
	var process []sdktrace.ReadOnlySpan
	sends := 0
	for _, s := range spans {
		switch s.Name() {
		case "process " + r.topo.QueueIn:
			process = append(process, s)
		case spanSend:
			sends++
		}
	}
	if len(process) != 4 || sends != 2 {
		t.Fatalf("%d process and %d send spans, want 4 and 2", len(process), sends)
	}
	attr := func(s sdktrace.ReadOnlySpan, k attribute.Key) string {
		for _, kv := range s.Attributes() {
			if kv.Key == k {
				return kv.Value.Emit()
			}
		}
		return ""
	}
	for i, want := range []struct{ typ, errCode string }{{"broadcast", ""}, {"disconnect", ""}, {"", "bad_control"}, {"", "unknown_type"}} {
		s := process[i]
		if got := attr(s, "piped.control.type"); got != want.typ {
			t.Errorf("span %d piped.control.type = %q, want %q", i, got, want.typ)
		}
		if want.errCode == "" {
			if s.Parent().TraceID().String() != traceID || s.Status().Code == codes.Error {
				t.Errorf("span %d: parent %v status %v, want the backend's trace and no error", i, s.Parent(), s.Status())
			}
			continue
		}
		if s.Status().Code != codes.Error || s.Status().Description != want.errCode {
			t.Errorf("span %d status %+v, want error %s", i, s.Status(), want.errCode)
		}
	}
	if got := attr(process[1], "piped.token_hash"); got != telemetry.TokenHash("t") {
		t.Errorf("disconnect span token hash %q, want %q", got, telemetry.TokenHash("t"))
	}
	for _, s := range spans {
		for _, kv := range s.Attributes() {
			if kv.Value.Emit() == "t" {
				t.Errorf("span %s carries the raw token in %s", s.Name(), kv.Key)
			}
		}
	}
}
