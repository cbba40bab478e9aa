package routing

import (
	"context"
	"log/slog"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/piped-dev/piped/protocol"
	"github.com/piped-dev/piped/telemetry"
)

// ControlHub is what backend control messages and events addressed to one
// connection need from the connection side (part of Hub). No method may
// block on a connection; each returns how many connections it reached.
type ControlHub interface {
	// SendTo queues msg on the connection of token whose id is connection.
	SendTo(token, connection string, msg []byte) int
	// BroadcastAll queues msg on every connection of this node.
	BroadcastAll(msg []byte) int
	// DisconnectToken closes every connection of token (only connection,
	// when not "") after what is queued for it, with code (anything
	// outside 4000–4999, 0 included, means the hub's default) and reason
	// as the close frame's text ("": the default).
	DisconnectToken(token, connection string, code int, reason string) int
}

// Outcomes of piped_control_messages_total.
const (
	controlOK      = "ok"
	controlBadCode = "bad_code" // carried out with the default close code
)

// control carries out a disconnect or broadcast control message, under a
// process span like an event's. Malformed ones are logged, counted
// ("bad_control") and dropped; one that reaches no connection is counted
// as no_connection, as an event is.
func (d *dispatcher) control(parent context.Context, del *amqp.Delivery) {
	r := d.r
	ctx, span := r.startProcess(parent, del.MessageId, del.CorrelationId, len(del.Body))
	c, err := protocol.ParseControl(del.Body)
	if err != nil {
		d.drop(ctx, span, del, slog.LevelWarn, "bad_control", "dropped malformed control message", "error", err, "bytes", len(del.Body))
		return
	}
	outcome := controlOK
	var n int
	_, send := r.tracer.Start(ctx, spanSend, trace.WithSpanKind(trace.SpanKindInternal))
	switch c.Type {
	case protocol.TypeDisconnect:
		code := c.Code
		if c.CodeSet && !protocol.ValidCloseCode(code) {
			outcome, code = controlBadCode, 0
			r.log.WarnContext(ctx, "control message: disconnect code is not an integer within 4000-4999; the default is used",
				"code", c.Code, "token_hash", telemetry.TokenHash(c.Token), "message_id", del.MessageId)
		}
		n = r.hub.DisconnectToken(c.Token, c.Connection, code, c.Reason)
		if span.IsRecording() {
			span.SetAttributes(attribute.String("piped.token_hash", telemetry.TokenHash(c.Token)))
			if c.Connection != "" {
				span.SetAttributes(attribute.String("piped.connection", c.Connection))
			}
		}
		r.log.DebugContext(ctx, "control message: disconnect", "token_hash", telemetry.TokenHash(c.Token),
			"connection", c.Connection, "closed", n)
	case protocol.TypeBroadcast:
		n = r.hub.BroadcastAll(protocol.AppendEvent(nil, c.Event, c.Payload))
	}
	send.End()
	r.metrics.Control.WithLabelValues(c.Type, outcome).Inc()
	if n == 0 {
		r.metrics.Dropped.WithLabelValues("no_connection").Inc()
	}
	if span.IsRecording() {
		span.SetAttributes(attribute.String("piped.control.type", c.Type), attribute.Int("piped.connections", n))
	}
	span.End()
}
