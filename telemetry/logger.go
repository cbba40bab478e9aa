// Package telemetry builds what operators use to see inside a node: the slog
// logger, the Prometheus metrics and (later) the tracer provider. Everything
// is passed explicitly to the packages that use it; nothing here is global.
package telemetry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"

	"go.opentelemetry.io/otel/trace"
	"golang.org/x/term"
)

// NewLogger returns a slog.Logger writing to w at level ("debug", "info",
// "warn", "error") in format "json", "text", or "auto" (text when w is a
// terminal, JSON otherwise). Records logged with a context that holds a
// span carry its trace_id and span_id.
func NewLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	log, _, err := NewLeveledLogger(w, level, format)
	return log, err
}

// NewLeveledLogger is NewLogger, and also returns the logger's level, which
// the caller may change at any time (a reload of log.level).
func NewLeveledLogger(w io.Writer, level, format string) (*slog.Logger, *slog.LevelVar, error) {
	lv := new(slog.LevelVar)
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, nil, fmt.Errorf("telemetry: log level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			format = "text"
		}
	}
	switch format {
	case "json":
		return slog.New(traceHandler{slog.NewJSONHandler(w, opts)}), lv, nil
	case "text":
		return slog.New(traceHandler{slog.NewTextHandler(w, opts)}), lv, nil
	default:
		return nil, nil, fmt.Errorf("telemetry: log format %q: want auto, json or text", format)
	}
}

// TokenHash returns a short, stable, non-reversible label for a session token,
// for logs and spans: raw tokens never leave the node.
func TokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:6])
}

// traceHandler adds trace_id and span_id to records logged with a context
// that carries a valid span, so a log line inside a call finds its trace.
type traceHandler struct{ slog.Handler }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return traceHandler{h.Handler.WithAttrs(as)}
}

func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.Handler.WithGroup(name)}
}
