package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/piped-dev/piped/config"
)

func TestLoggerAddsTraceIDs(t *testing.T) {
	var buf bytes.Buffer
	log, err := NewLogger(&buf, "info", "json")
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider()
	ctx, span := tp.Tracer("t").Start(context.Background(), "s")
	log.InfoContext(ctx, "inside a call")
	log.Info("outside")
	span.End()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	var in, out map[string]any
	_ = json.Unmarshal([]byte(lines[0]), &in)
	_ = json.Unmarshal([]byte(lines[1]), &out)
	if in["trace_id"] != span.SpanContext().TraceID().String() || in["span_id"] != span.SpanContext().SpanID().String() {
		t.Fatalf("line inside a call: %v", in)
	}
	if _, ok := out["trace_id"]; ok {
		t.Fatalf("line outside a call has a trace id: %v", out)
	}
	if _, err := NewLogger(&buf, "loud", "json"); err == nil {
		t.Fatal("bad level accepted")
	}
}

func TestTokenHashIsStableAndOpaque(t *testing.T) {
	a, b := TokenHash("secret-token"), TokenHash("secret-token")
	if a != b || strings.Contains(a, "secret") || len(a) != 12 {
		t.Fatalf("TokenHash: %q %q", a, b)
	}
}

// Without an endpoint nothing is exported, yet a client's sampled context
// stays sampled and new traces still get valid (unsampled) ids.
func TestNoEndpointPropagates(t *testing.T) {
	tr, err := NewTracing(context.Background(), config.Defaults().Telemetry, config.Node{ID: "n1"}, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Shutdown(context.Background())
	if tr.Exporting {
		t.Fatal("exporting without an endpoint")
	}
	_, root := tr.Tracer().Start(context.Background(), "root")
	if !root.SpanContext().IsValid() || root.SpanContext().IsSampled() {
		t.Fatalf("new trace: %v", root.SpanContext())
	}
	parent := tr.Propagator.Extract(context.Background(), FrameCarrier{TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
	_, child := tr.Tracer().Start(parent, "child")
	if !child.SpanContext().IsSampled() || child.SpanContext().TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("child of a sampled client context: %v", child.SpanContext())
	}
	env := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_TRACES_EXPORTER": "none"}
	off, err := NewTracing(context.Background(), config.Defaults().Telemetry, config.Node{ID: "n1"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	defer off.Shutdown(context.Background())
	if off.Exporting {
		t.Fatal("OTEL_TRACES_EXPORTER=none still exports")
	}
}

// node.region is the constant label region on every metric, the runtime's
// included; without a region there is no region label at all.
func TestMetricsRegionLabel(t *testing.T) {
	for _, tc := range []struct {
		region string
		want   []string // lines (prefixes) of the exposition
		absent string
	}{
		{"ams", []string{`piped_calls_total{region="ams"} 1`, `piped_ready{region="ams"} 0`, `go_goroutines{region="ams"} `, `piped_call_errors_total{code="timeout",region="ams"} 1`}, ""},
		{"", []string{"piped_calls_total 1", "go_goroutines "}, "region="},
	} {
		t.Run("region="+tc.region, func(t *testing.T) {
			m := NewMetricsForRegion(tc.region)
			m.Calls.Inc()
			m.CallErrors.WithLabelValues("timeout").Inc()
			rec := httptest.NewRecorder()
			m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
			body := rec.Body.String()
			for _, w := range tc.want {
				if !strings.Contains(body, "\n"+w) {
					t.Errorf("exposition lacks a line starting %q", w)
				}
			}
			if tc.absent != "" && strings.Contains(body, tc.absent) {
				t.Errorf("exposition has %q without a region", tc.absent)
			}
		})
	}
}

// node.region is the resource attribute cloud.region of the node's spans.
func TestTracingCloudRegion(t *testing.T) {
	for _, tc := range []struct {
		node config.Node
		want string // "" : no cloud.region attribute
	}{
		{config.Node{ID: "n1", Region: "ams"}, "ams"},
		{config.Node{ID: "n1"}, ""},
	} {
		t.Run("region="+tc.node.Region, func(t *testing.T) {
			tr, err := NewTracing(context.Background(), config.Defaults().Telemetry, tc.node, func(string) string { return "" })
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Shutdown(context.Background())
			// A sampled parent makes a recording span, whose resource can be read.
			parent := tr.Propagator.Extract(context.Background(), FrameCarrier{TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
			_, span := tr.Tracer().Start(parent, "call")
			defer span.End()
			ro, ok := span.(sdktrace.ReadOnlySpan)
			if !ok {
				t.Fatalf("span %T is not recorded", span)
			}
			got, found := ro.Resource().Set().Value("cloud.region")
			switch {
			case tc.want == "" && found:
				t.Errorf("cloud.region = %q without a region", got.AsString())
			case tc.want != "" && got.AsString() != tc.want:
				t.Errorf("cloud.region = %q (present %v), want %q", got.AsString(), found, tc.want)
			}
			if id, _ := ro.Resource().Set().Value("piped.node_id"); id.AsString() != "n1" {
				t.Errorf("piped.node_id = %q", id.AsString())
			}
		})
	}
}
