// Package echo is a small, complete Piped backend: it consumes the calls that
// Piped nodes publish to queue-out-ID and answers each one with its own
// payload. Read it as an example of the backend side of the protocol.
//
// A call arrives as JSON
//
//	{"id"?: <string|number>, "method": "...", "token": "...", "payload"?: {...}}
//
// with the AMQP properties correlation_id and reply_to set by the node. The
// answer is
//
//	{"id"?: <same bytes>, "type": "result", "token": "...", "method": "...", "payload"?: {...}}
//
// published either to the node's exchange-in-ID (routing key "", as the
// original protocol documents) or through the default exchange to reply_to.
// The answer carries the call's correlation_id, so that the node can hand it
// to the exact connection that made the call.
//
// A few methods behave specially, for tests and the demo:
//
//	sleep    payload {"ms": N}: answer after N milliseconds
//	event    payload {"event": "name", "payload": {...}}: publish that event
//	         for the caller's token to the mass exchange, then answer
//	silent   never answer
//	garbage  first send the bytes `not json` to the node, then answer
//
// Tracing: each call is handled under an OpenTelemetry span that continues
// the trace whose context the node put in the call's AMQP headers, and the
// answer carries that span's context back (tracing.go shows how, in a few
// lines any backend can copy). Spans are exported when the standard
// OTEL_EXPORTER_OTLP_ENDPOINT variable names a collector.
package echo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Defaults, the same as the Piped node's.
const (
	DefaultURL              = "amqp://guest:guest@localhost:5672/"
	DefaultQueueOutPrefix   = "queue-out-"
	DefaultExchangeInPrefix = "exchange-in-"
	DefaultMassExchange     = "exchange-mass"
)

// The values of Config.ReplyVia.
const (
	// ReplyViaExchangeIn publishes answers to exchange-in-ID with routing key "".
	ReplyViaExchangeIn = "exchange-in"
	// ReplyViaReplyTo publishes answers through the default exchange to the
	// call's reply_to (queue-in-ID), falling back to exchange-in-ID when a
	// call has no reply_to.
	ReplyViaReplyTo = "reply-to"
)

const (
	// maxInFlight bounds the calls being handled at once, and so the
	// goroutines: a node's dispatcher takes no new delivery while this many
	// are in hand. It is also the consumer prefetch.
	maxInFlight = 256
	// maxSleep caps the "sleep" method.
	maxSleep = 10 * time.Minute
	// confirmTimeout bounds the wait for the broker to confirm one publish.
	confirmTimeout = 5 * time.Second
	// drainTimeout bounds the wait for handlers that are answering when Run
	// is asked to stop.
	drainTimeout = 5 * time.Second
	// flushTimeout bounds the export of the last spans when Run returns.
	flushTimeout = 5 * time.Second
	// Reconnect backoff: doubles from minBackoff up to maxBackoff, and
	// starts again from minBackoff after a session that got to consume.
	minBackoff = 100 * time.Millisecond
	maxBackoff = 10 * time.Second
)

// Config configures Run.
type Config struct {
	URL   string   // AMQP URL; DefaultURL when empty
	Nodes []string // ids of the nodes whose queue-out-ID to consume; at least one

	// Name prefixes and the mass exchange; the defaults above when empty.
	QueueOutPrefix, ExchangeInPrefix, MassExchange string

	// ReplyVia is ReplyViaExchangeIn (the default when empty) or ReplyViaReplyTo.
	ReplyVia string

	// TransientQueues declares queue-out-ID non-durable, as the nodes do on
	// a RabbitMQ cluster (amqp.urls): a queue declared by both sides must be
	// declared alike. The default, durable, matches nodes with amqp.url.
	TransientQueues bool

	// CopyCorrelationID copies each call's correlation_id onto its answer.
	// Turn it off to act like a backend written for the original protocol,
	// which did not.
	CopyCorrelationID bool

	Logger *slog.Logger // slog.Default() when nil

	// TracerProvider makes the backend's spans (see tracing.go). When nil,
	// Run builds one from the standard OTEL_* environment variables (see
	// NewTracerProvider) and shuts it down when it returns; a provider given
	// here is only flushed then, if it has a ForceFlush method.
	TracerProvider trace.TracerProvider
}

func (cfg Config) withDefaults() (Config, error) {
	if len(cfg.Nodes) == 0 {
		return cfg, errors.New("echo: no node ids to consume")
	}
	seen := map[string]bool{}
	for _, n := range cfg.Nodes {
		if n == "" || seen[n] {
			return cfg, fmt.Errorf("echo: node ids %q: empty or repeated", cfg.Nodes)
		}
		seen[n] = true
	}
	switch cfg.ReplyVia {
	case "":
		cfg.ReplyVia = ReplyViaExchangeIn
	case ReplyViaExchangeIn, ReplyViaReplyTo:
	default:
		return cfg, fmt.Errorf("echo: ReplyVia %q: want %q or %q", cfg.ReplyVia, ReplyViaExchangeIn, ReplyViaReplyTo)
	}
	cfg.URL = or(cfg.URL, DefaultURL)
	cfg.QueueOutPrefix = or(cfg.QueueOutPrefix, DefaultQueueOutPrefix)
	cfg.ExchangeInPrefix = or(cfg.ExchangeInPrefix, DefaultExchangeInPrefix)
	cfg.MassExchange = or(cfg.MassExchange, DefaultMassExchange)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return cfg, nil
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Run consumes the calls of cfg.Nodes and answers them until ctx is done, and
// then returns nil. When the broker connection drops (or cannot be made), it
// reconnects with backoff. Every goroutine it starts has returned, and its
// spans have been flushed, by the time Run returns. It returns an error only
// for an invalid Config (or invalid OTEL_* variables).
func Run(ctx context.Context, cfg Config) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	tp := cfg.TracerProvider
	var flush func(context.Context) error
	if tp == nil {
		sdk, err := NewTracerProvider(ctx)
		if err != nil {
			return err
		}
		tp, flush = sdk, sdk.Shutdown
	} else if f, ok := tp.(interface{ ForceFlush(context.Context) error }); ok {
		flush = f.ForceFlush
	}
	defer cfg.Logger.Info("echo: stopped")
	if flush != nil {
		defer func() {
			fctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
			defer cancel()
			if err := flush(fctx); err != nil {
				cfg.Logger.Warn("echo: flushing spans", "err", err)
			}
		}()
	}
	tracer := tp.Tracer(tracerName)
	backoff := minBackoff
	for {
		consumed, err := runSession(ctx, cfg, tracer)
		if ctx.Err() != nil {
			return nil
		}
		if consumed {
			backoff = minBackoff
		}
		cfg.Logger.Warn("echo: broker session ended; reconnecting", "err", err, "in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// session is one broker connection with its two channels.
type session struct {
	cfg    Config
	log    *slog.Logger
	tracer trace.Tracer
	pub    *amqp.Channel // confirm mode; the library serializes publishes from many goroutines
	sub    *amqp.Channel // consumes the nodes' queue-out-ID
	sem    chan struct{} // maxInFlight slots
	wg     sync.WaitGroup
	gone   chan string // a node whose deliveries stopped (consumer cancelled, channel closed)
}

// runSession connects, declares, consumes until ctx is done or the
// connection fails, and shuts down cleanly. consumed tells whether it got as
// far as consuming.
func runSession(ctx context.Context, cfg Config, tracer trace.Tracer) (consumed bool, err error) {
	conn, err := amqp.DialConfig(cfg.URL, amqp.Config{
		Heartbeat:  10 * time.Second,
		Properties: amqp.Table{"connection_name": "piped-echo-backend"},
		Dial:       amqp.DefaultDial(10 * time.Second),
	})
	if err != nil {
		return false, fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	connClosed := conn.NotifyClose(make(chan *amqp.Error, 1))

	s := &session{
		cfg:    cfg,
		log:    cfg.Logger,
		tracer: tracer,
		sem:    make(chan struct{}, maxInFlight),
		gone:   make(chan string, len(cfg.Nodes)),
	}
	if s.pub, err = conn.Channel(); err != nil {
		return false, err
	}
	if err = s.pub.Confirm(false); err != nil {
		return false, fmt.Errorf("confirm mode: %w", err)
	}
	// A publish to an exchange that is gone closes this channel: start over
	// (declaring it again) rather than fail every call that comes.
	pubClosed := s.pub.NotifyClose(make(chan *amqp.Error, 1))
	if s.sub, err = conn.Channel(); err != nil {
		return false, err
	}
	if err = s.sub.Qos(maxInFlight, 0, false); err != nil {
		return false, err
	}
	if err = s.declare(); err != nil {
		return false, err
	}

	sessCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var tags []string
	for _, node := range cfg.Nodes {
		tag := "echo-backend-" + node
		deliveries, err := s.sub.Consume(cfg.QueueOutPrefix+node, tag, false, false, false, false, nil)
		if err != nil {
			cancel()
			conn.Close()
			s.wg.Wait()
			return false, fmt.Errorf("consume %s: %w", cfg.QueueOutPrefix+node, err)
		}
		tags = append(tags, tag)
		s.wg.Go(func() { s.dispatch(sessCtx, node, deliveries) })
	}
	s.log.Info("echo: consuming", "nodes", cfg.Nodes, "reply_via", cfg.ReplyVia, "copy_correlation_id", cfg.CopyCorrelationID)

	select {
	case <-ctx.Done():
	case e := <-connClosed:
		err = fmt.Errorf("connection closed: %v", e)
	case e := <-pubClosed:
		err = fmt.Errorf("publishing channel closed: %v", e)
	case node := <-s.gone:
		err = fmt.Errorf("stopped receiving the calls of node %s", node)
	}

	// Shut down: wake the sleeping handlers (they give their calls back),
	// stop the deliveries, let the handlers that are answering finish, and
	// close the connection; the broker requeues whatever is still unacked.
	cancel()
	drained := make(chan struct{})
	go func() {
		for _, tag := range tags {
			_ = s.sub.Cancel(tag, false)
		}
		s.wg.Wait()
		close(drained)
	}()
	select {
	case <-drained:
	case <-time.After(drainTimeout):
	}
	_ = conn.CloseDeadline(time.Now().Add(time.Second)) // unblocks anything still waiting on the broker
	<-drained
	return true, err
}

// declare makes what the backend uses, with exactly the arguments the node
// uses, so that either may start first: queue-out-ID (no arguments;
// durable unless TransientQueues), and the durable fanout exchanges it
// publishes to. On a cluster, a non-durable queue-out-ID that went with a
// lost broker node is declared again here, on the backend's node.
func (s *session) declare() error {
	for _, node := range s.cfg.Nodes {
		if _, err := s.sub.QueueDeclare(s.cfg.QueueOutPrefix+node, !s.cfg.TransientQueues, false, false, false, nil); err != nil {
			return fmt.Errorf("declare queue %s: %w", s.cfg.QueueOutPrefix+node, err)
		}
		if err := s.sub.ExchangeDeclare(s.cfg.ExchangeInPrefix+node, amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
			return fmt.Errorf("declare exchange %s: %w", s.cfg.ExchangeInPrefix+node, err)
		}
	}
	if err := s.sub.ExchangeDeclare(s.cfg.MassExchange, amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %s: %w", s.cfg.MassExchange, err)
	}
	return nil
}

// dispatch hands each delivery of one node to a goroutine of its own,
// holding one of the maxInFlight slots until it is done.
func (s *session) dispatch(ctx context.Context, node string, deliveries <-chan amqp.Delivery) {
	for d := range deliveries {
		select {
		case s.sem <- struct{}{}:
		case <-ctx.Done(): // shutting down: give the call back for another backend
			_ = d.Nack(false, true)
			continue
		}
		s.wg.Go(func() {
			defer func() { <-s.sem }()
			s.handle(ctx, node, d)
		})
	}
	select {
	case s.gone <- node:
	default:
	}
}

// call is a call as the node publishes it. ID and Payload stay raw bytes: an
// id such as 12345678901234567890123 must come back exactly as it came.
type call struct {
	ID      json.RawMessage `json:"id"`
	Method  string          `json:"method"`
	Token   string          `json:"token"`
	Payload json.RawMessage `json:"payload"`
}

// handle answers one call, and acks it after the answer is confirmed. It
// runs under a span "handle {method}" that continues the call's trace; the
// messages it publishes carry that span's context (see tracing.go).
func (s *session) handle(ctx context.Context, node string, d amqp.Delivery) {
	var c call
	if err := json.Unmarshal(d.Body, &c); err != nil || c.Method == "" {
		// Never requeue what we cannot read: it would come back forever.
		s.log.Warn("echo: dropping a message that is not a call", "node", node, "err", err, "body", clip(d.Body))
		_ = d.Ack(false)
		return
	}
	ctx, span := s.startHandle(ctx, node, d, c.Method)
	defer span.End()
	fail := func(what string, err error) {
		span.RecordError(err)
		span.SetStatus(codes.Error, what)
	}
	log := s.log.With("node", node, "method", c.Method, "correlation_id", d.CorrelationId)
	exchange, key := s.replyTarget(node, d)

	switch c.Method {
	case "silent":
		_ = d.Ack(false)
		return

	case "sleep":
		var p struct {
			MS int64 `json:"ms"`
		}
		_ = json.Unmarshal(c.Payload, &p) // anything unreadable sleeps 0
		ms := min(max(p.MS, 0), maxSleep.Milliseconds())
		t := time.NewTimer(time.Duration(ms) * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done(): // stopping: give the call back for another backend
			t.Stop()
			span.SetStatus(codes.Error, "requeued: the backend is stopping")
			_ = d.Nack(false, true)
			return
		}

	case "event":
		var p struct {
			Event   string          `json:"event"`
			Payload json.RawMessage `json:"payload"`
		}
		if err := json.Unmarshal(c.Payload, &p); err != nil || p.Event == "" {
			log.Warn("echo: event call without payload.event; answering without publishing", "err", err)
			break
		}
		// The event is a message of its own: a PRODUCER span, child of
		// handle, whose context the event carries to every node.
		pctx, pspan := s.startPublish(ctx, s.cfg.MassExchange)
		ev := s.message(pctx, d, eventBody(c.Token, p.Event, p.Payload))
		ev.CorrelationId = "" // an event answers no call: it goes to every connection of the token
		err := s.publish(s.cfg.MassExchange, "", ev)
		if err != nil {
			pspan.RecordError(err)
			pspan.SetStatus(codes.Error, "publish failed")
		}
		pspan.End()
		if err != nil {
			log.Warn("echo: publishing the event failed", "err", err)
			fail("publishing the event failed", err)
			_ = d.Nack(false, true) // the channel is most likely gone; the call comes back on reconnect
			return
		}

	case "garbage":
		if err := s.publish(exchange, key, s.message(ctx, d, []byte("not json"))); err != nil {
			log.Warn("echo: publishing the garbage failed", "err", err)
			fail("publishing the garbage failed", err)
			_ = d.Nack(false, true)
			return
		}
	}

	if err := s.publish(exchange, key, s.message(ctx, d, resultBody(c))); err != nil {
		log.Warn("echo: publishing the answer failed", "err", err)
		fail("publishing the answer failed", err)
		_ = d.Nack(false, true)
		return
	}
	if err := d.Ack(false); err != nil {
		// At least once: the broker will deliver the call again, and it
		// will be answered twice.
		log.Warn("echo: ack failed after answering", "err", err)
	}
}

// replyTarget says where the answer to d goes.
func (s *session) replyTarget(node string, d amqp.Delivery) (exchange, key string) {
	if s.cfg.ReplyVia == ReplyViaReplyTo && d.ReplyTo != "" {
		return "", d.ReplyTo // the default exchange routes to the queue of that name
	}
	return s.cfg.ExchangeInPrefix + node, ""
}

// message builds the AMQP message that answers (or follows from) the call
// d; its headers carry the trace context of ctx, the span that publishes it.
func (s *session) message(ctx context.Context, d amqp.Delivery, body []byte) amqp.Publishing {
	m := amqp.Publishing{
		ContentType: "application/json",
		AppId:       "piped-echo-backend",
		Timestamp:   time.Now(),
		Headers:     traceHeaders(ctx),
		Body:        body,
	}
	if s.cfg.CopyCorrelationID {
		m.CorrelationId = d.CorrelationId
	}
	return m
}

// publish publishes m and waits for the broker to confirm it. An answer
// being published is not cut short when Run is stopping: it is bounded by
// confirmTimeout, and by the connection closing.
func (s *session) publish(exchange, key string, m amqp.Publishing) error {
	return publishConfirmed(context.Background(), s.pub, exchange, key, m)
}

func publishConfirmed(ctx context.Context, ch *amqp.Channel, exchange, key string, m amqp.Publishing) error {
	ctx, cancel := context.WithTimeout(ctx, confirmTimeout)
	defer cancel()
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, false, false, m)
	if err != nil {
		return err
	}
	acked, err := dc.WaitContext(ctx)
	if err != nil {
		return fmt.Errorf("waiting for the broker's confirm: %w", err)
	}
	if !acked {
		return errors.New("the broker nacked the publish (or the channel closed)")
	}
	return nil
}

// resultBody is the answer to c. It is written by hand rather than with
// json.Marshal so that the raw id and payload go out byte for byte as they
// came in (json.Marshal would compact them and escape <, > and &).
func resultBody(c call) []byte {
	b := []byte{'{'}
	if c.ID != nil {
		b = append(b, `"id":`...)
		b = append(b, c.ID...)
		b = append(b, ',')
	}
	b = append(b, `"type":"result","token":`...)
	b = appendString(b, c.Token)
	b = append(b, `,"method":`...)
	b = appendString(b, c.Method)
	if c.Payload != nil {
		b = append(b, `,"payload":`...)
		b = append(b, c.Payload...)
	}
	return append(b, '}')
}

// eventBody is an event for every connection of token, on every node.
func eventBody(token, name string, payload json.RawMessage) []byte {
	b := append([]byte(nil), `{"type":"event","event":`...)
	b = appendString(b, name)
	b = append(b, `,"token":`...)
	b = appendString(b, token)
	if payload != nil {
		b = append(b, `,"payload":`...)
		b = append(b, payload...)
	}
	return append(b, '}')
}

func appendString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always marshals
	return append(b, q...)
}

// clip shortens a body for a log line.
func clip(b []byte) string {
	const n = 200
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "…"
}

// PublishEvent publishes {"type":"event","event":name,"token":token,"payload":payload}
// to the mass exchange (DefaultMassExchange when empty), from where it reaches
// every connection of token on every node. payload is raw JSON, left out when
// nil. It waits for the broker's confirm.
func PublishEvent(ctx context.Context, url, massExchange, token, name string, payload json.RawMessage) error {
	if payload != nil && !json.Valid(payload) {
		return errors.New("echo: event payload is not valid JSON")
	}
	if strings.TrimSpace(name) == "" {
		return errors.New("echo: empty event name")
	}
	massExchange = or(massExchange, DefaultMassExchange)
	conn, err := amqp.DialConfig(or(url, DefaultURL), amqp.Config{
		Properties: amqp.Table{"connection_name": "piped-echo-backend event"},
		Dial:       amqp.DefaultDial(10 * time.Second),
	})
	if err != nil {
		return fmt.Errorf("echo: dial: %w", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	if err := ch.Confirm(false); err != nil {
		return err
	}
	if err := ch.ExchangeDeclare(massExchange, amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
		return fmt.Errorf("echo: declare exchange %s: %w", massExchange, err)
	}
	return publishConfirmed(ctx, ch, massExchange, "", amqp.Publishing{
		ContentType: "application/json",
		AppId:       "piped-echo-backend",
		Timestamp:   time.Now(),
		Body:        eventBody(token, name, payload),
	})
}
