package echo_test

// These tests talk to a real RabbitMQ (127.0.0.1:5672, guest/guest, or
// $PIPED_AMQP_URL). Each one plays the Piped node itself: it declares the
// node-side topology for a fresh node id, publishes calls to exchange-out-ID
// as the node does, and reads the answers from queue-in-ID.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/piped-dev/piped/examples/echo-backend/echo"
)

const waitTimeout = 10 * time.Second

func brokerURL() string {
	if u := os.Getenv("PIPED_AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

func uniq(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

func dial(t *testing.T) *amqp.Connection {
	t.Helper()
	conn, err := amqp.Dial(brokerURL())
	if err != nil {
		t.Fatalf("RabbitMQ is not reachable at %s: %v\n"+
			"These tests need a real broker: run scripts/ensure-rabbitmq.sh "+
			"(or point PIPED_AMQP_URL at one).", brokerURL(), err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func channel(t *testing.T, conn *amqp.Connection) *amqp.Channel {
	t.Helper()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// fakeNode is the broker side of one Piped node, as the node declares it.
type fakeNode struct {
	id      string
	conn    *amqp.Connection
	ch      *amqp.Channel
	answers <-chan amqp.Delivery // everything that reaches queue-in-ID
}

func (n *fakeNode) exchangeIn() string  { return echo.DefaultExchangeInPrefix + n.id }
func (n *fakeNode) exchangeOut() string { return "exchange-out-" + n.id }
func (n *fakeNode) queueIn() string     { return "queue-in-" + n.id }
func (n *fakeNode) queueOut() string    { return echo.DefaultQueueOutPrefix + n.id }

func newNode(t *testing.T, conn *amqp.Connection) *fakeNode {
	t.Helper()
	n := &fakeNode{id: uniq("echo-test"), conn: conn, ch: channel(t, conn)}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, ex := range []string{n.exchangeIn(), n.exchangeOut(), echo.DefaultMassExchange} {
		must(n.ch.ExchangeDeclare(ex, amqp.ExchangeFanout, true, false, false, false, nil))
	}
	_, err := n.ch.QueueDeclare(n.queueIn(), true, false, false, false, amqp.Table{"x-expires": int32(30 * 60 * 1000)})
	must(err)
	_, err = n.ch.QueueDeclare(n.queueOut(), true, false, false, false, nil)
	must(err)
	must(n.ch.QueueBind(n.queueIn(), "", n.exchangeIn(), false, nil))
	must(n.ch.QueueBind(n.queueOut(), "", n.exchangeOut(), false, nil))
	must(n.ch.ExchangeBind(n.exchangeIn(), "", echo.DefaultMassExchange, false, nil))
	n.answers, err = n.ch.Consume(n.queueIn(), "", true, false, false, false, nil)
	must(err)

	t.Cleanup(func() {
		// Everything but the shared exchange-mass. A fresh channel: the
		// test's own may have been closed by an error.
		ch, err := conn.Channel()
		if err != nil {
			t.Errorf("cleanup of node %s: %v", n.id, err)
			return
		}
		defer ch.Close()
		for _, q := range []string{n.queueIn(), n.queueOut()} {
			if _, err := ch.QueueDelete(q, false, false, false); err != nil {
				t.Errorf("cleanup: delete queue %s: %v", q, err)
			}
		}
		for _, ex := range []string{n.exchangeIn(), n.exchangeOut()} {
			if err := ch.ExchangeDelete(ex, false, false); err != nil {
				t.Errorf("cleanup: delete exchange %s: %v", ex, err)
			}
		}
	})
	return n
}

// call publishes body to exchange-out-ID as the node publishes a call.
func (n *fakeNode) call(t *testing.T, corrID, body string, headers amqp.Table) {
	t.Helper()
	n.callReplyTo(t, corrID, n.queueIn(), body, headers)
}

func (n *fakeNode) callReplyTo(t *testing.T, corrID, replyTo, body string, headers amqp.Table) {
	t.Helper()
	if headers == nil {
		headers = amqp.Table{}
	}
	headers["x-piped-node"] = n.id
	err := n.ch.PublishWithContext(context.Background(), n.exchangeOut(), "", false, false, amqp.Publishing{
		ContentType:   "application/json",
		CorrelationId: corrID,
		ReplyTo:       replyTo,
		MessageId:     uniq("msg"),
		Timestamp:     time.Now(),
		Expiration:    "30000",
		Headers:       headers,
		Body:          []byte(body),
	})
	if err != nil {
		t.Fatal(err)
	}
}

// await returns the next delivery on ch that match accepts, skipping others
// (exchange-mass is shared: other tests' events reach every queue-in).
func await(t *testing.T, ch <-chan amqp.Delivery, what string, match func(amqp.Delivery) bool) amqp.Delivery {
	t.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case d, ok := <-ch:
			if !ok {
				t.Fatalf("waiting for %s: the consumer closed", what)
			}
			if match(d) {
				return d
			}
		case <-timeout:
			t.Fatalf("no %s within %v", what, waitTimeout)
		}
	}
}

// none asserts that nothing that match accepts arrives on ch within d.
func none(t *testing.T, ch <-chan amqp.Delivery, d time.Duration, what string, match func(amqp.Delivery) bool) {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case got := <-ch:
			if match(got) {
				t.Fatalf("got %s, want nothing: %s", what, got.Body)
			}
		case <-timeout:
			return
		}
	}
}

func byCorrelation(id string) func(amqp.Delivery) bool {
	return func(d amqp.Delivery) bool { return d.CorrelationId == id }
}

func byToken(token string) func(amqp.Delivery) bool {
	return func(d amqp.Delivery) bool {
		var m struct{ Token string }
		return json.Unmarshal(d.Body, &m) == nil && m.Token == token
	}
}

// startBackend runs echo.Run until the test ends, and checks that it then
// returns nil promptly.
func startBackend(t *testing.T, cfg echo.Config) (stop func()) {
	t.Helper()
	if cfg.URL == "" {
		cfg.URL = brokerURL()
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- echo.Run(ctx, cfg) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run returned %v, want nil", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("Run did not return within 10s of its context being cancelled")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func TestAnswers(t *testing.T) {
	for _, via := range []string{echo.ReplyViaExchangeIn, echo.ReplyViaReplyTo} {
		t.Run(via, func(t *testing.T) {
			conn := dial(t)
			n := newNode(t, conn)
			startBackend(t, echo.Config{Nodes: []string{n.id}, ReplyVia: via, CopyCorrelationID: true})

			tok := `"` + uniq("tok") + `"`
			cases := []struct {
				name, call, want string
			}{{
				name: "huge number id, payload verbatim",
				call: `{"id":12345678901234567890123,"method":"hello","token":TOK,"payload":{"a": [1, 2.50, "x<y&z"], "b":{}}}`,
				want: `{"id":12345678901234567890123,"type":"result","token":TOK,"method":"hello","payload":{"a": [1, 2.50, "x<y&z"], "b":{}}}`,
			}, {
				name: "string id",
				call: `{"payload":{"k":"v"},"token":TOK,"method":"m","id":"abc\u00e9"}`,
				want: `{"id":"abc\u00e9","type":"result","token":TOK,"method":"m","payload":{"k":"v"}}`,
			}, {
				name: "no id",
				call: `{"method":"m","token":TOK,"payload":{}}`,
				want: `{"type":"result","token":TOK,"method":"m","payload":{}}`,
			}, {
				name: "no id, no payload",
				call: `{"method":"m","token":TOK}`,
				want: `{"type":"result","token":TOK,"method":"m"}`,
			}}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					corr := uniq("corr")
					n.call(t, corr, strings.ReplaceAll(c.call, "TOK", tok), nil)
					d := await(t, n.answers, "the answer", byCorrelation(corr))
					if want := strings.ReplaceAll(c.want, "TOK", tok); string(d.Body) != want {
						t.Errorf("answer\n got %s\nwant %s", d.Body, want)
					}
					if d.ContentType != "application/json" {
						t.Errorf("content type %q", d.ContentType)
					}
				})
			}

			t.Run("trace context continued", func(t *testing.T) {
				corr := uniq("corr")
				tp := "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
				n.call(t, corr, `{"id":1,"method":"m","token":`+tok+`}`, amqp.Table{"traceparent": tp, "tracestate": "a=b", "other": "x"})
				d := await(t, n.answers, "the answer", byCorrelation(corr))
				got := parseTraceparent(t, d.Headers)
				if got.traceID != "0af7651916cd43dd8448eb211c80319c" || got.spanID == "b7ad6b7169203331" || d.Headers["tracestate"] != "a=b" {
					t.Errorf("headers %v, want the call's trace and tracestate under a span of the backend's own", d.Headers)
				}
				if _, ok := d.Headers["other"]; ok {
					t.Errorf("headers %v: only the trace context should be carried over", d.Headers)
				}
			})

			// Where the answer goes when reply_to names another queue:
			// "reply-to" follows it, "exchange-in" ignores it.
			t.Run("routing", func(t *testing.T) {
				ch := channel(t, conn)
				q, err := ch.QueueDeclare("", false, true, true, false, nil)
				if err != nil {
					t.Fatal(err)
				}
				private, err := ch.Consume(q.Name, "", true, true, false, false, nil)
				if err != nil {
					t.Fatal(err)
				}
				corr := uniq("corr")
				n.callReplyTo(t, corr, q.Name, `{"id":2,"method":"m","token":`+tok+`}`, nil)
				there, elsewhere := n.answers, private
				if via == echo.ReplyViaReplyTo {
					there, elsewhere = private, n.answers
				}
				await(t, there, "the answer", byCorrelation(corr))
				none(t, elsewhere, 300*time.Millisecond, "an answer in the wrong place", byCorrelation(corr))
			})
		})
	}
}

func TestNoCorrelationID(t *testing.T) {
	conn := dial(t)
	n := newNode(t, conn)
	startBackend(t, echo.Config{Nodes: []string{n.id}, CopyCorrelationID: false})

	tok := uniq("tok")
	n.call(t, uniq("corr"), `{"id":7,"method":"m","token":"`+tok+`"}`, nil)
	d := await(t, n.answers, "the answer", byToken(tok))
	if d.CorrelationId != "" {
		t.Errorf("correlation id %q, want none", d.CorrelationId)
	}
	if want := `{"id":7,"type":"result","token":"` + tok + `","method":"m"}`; string(d.Body) != want {
		t.Errorf("answer\n got %s\nwant %s", d.Body, want)
	}
}

// bindMass returns the deliveries of a temporary queue bound to exchange-mass.
func bindMass(t *testing.T, conn *amqp.Connection) <-chan amqp.Delivery {
	t.Helper()
	ch := channel(t, conn)
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q.Name, "", echo.DefaultMassExchange, false, nil); err != nil {
		t.Fatal(err)
	}
	deliveries, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return deliveries
}

func TestEventMethod(t *testing.T) {
	conn := dial(t)
	n := newNode(t, conn)
	mass := bindMass(t, conn)
	startBackend(t, echo.Config{Nodes: []string{n.id}, CopyCorrelationID: true})

	tok := uniq("tok")
	corr := uniq("corr")
	n.call(t, corr, `{"id":"e1","method":"event","token":"`+tok+`","payload":{"event":"hi","payload":{"x":1}}}`, nil)

	wantEvent := `{"type":"event","event":"hi","token":"` + tok + `","payload":{"x":1}}`
	if d := await(t, mass, "the event on exchange-mass", byToken(tok)); string(d.Body) != wantEvent || d.CorrelationId != "" {
		t.Errorf("event\n got %s (correlation id %q)\nwant %s (no correlation id)", d.Body, d.CorrelationId, wantEvent)
	}
	// exchange-mass is bound to exchange-in-ID, so the node gets the event
	// too, and before the result: the backend publishes it first.
	if d := await(t, n.answers, "the event on queue-in", byToken(tok)); string(d.Body) != wantEvent {
		t.Errorf("first on queue-in\n got %s\nwant the event %s", d.Body, wantEvent)
	}
	d := await(t, n.answers, "the result", byToken(tok))
	if d.CorrelationId != corr || !strings.Contains(string(d.Body), `"type":"result"`) {
		t.Errorf("second on queue-in: %s (correlation id %q), want the result", d.Body, d.CorrelationId)
	}
}

func TestSilentGarbageSleep(t *testing.T) {
	conn := dial(t)
	n := newNode(t, conn)
	startBackend(t, echo.Config{Nodes: []string{n.id}, CopyCorrelationID: true})
	tok := uniq("tok")

	t.Run("silent", func(t *testing.T) {
		corr := uniq("corr")
		n.call(t, corr, `{"id":1,"method":"silent","token":"`+tok+`"}`, nil)
		none(t, n.answers, 300*time.Millisecond, "an answer to silent", byCorrelation(corr))
	})

	t.Run("garbage", func(t *testing.T) {
		corr := uniq("corr")
		n.call(t, corr, `{"id":2,"method":"garbage","token":"`+tok+`"}`, nil)
		if d := await(t, n.answers, "the garbage", byCorrelation(corr)); string(d.Body) != "not json" {
			t.Errorf("first answer %q, want %q", d.Body, "not json")
		}
		want := `{"id":2,"type":"result","token":"` + tok + `","method":"garbage"}`
		if d := await(t, n.answers, "the result", byCorrelation(corr)); string(d.Body) != want {
			t.Errorf("second answer\n got %s\nwant %s", d.Body, want)
		}
	})

	t.Run("sleep does not block other calls", func(t *testing.T) {
		slow, fast := uniq("slow"), uniq("fast")
		start := time.Now()
		n.call(t, slow, `{"id":3,"method":"sleep","token":"`+tok+`","payload":{"ms":400}}`, nil)
		n.call(t, fast, `{"id":4,"method":"m","token":"`+tok+`"}`, nil)
		first := await(t, n.answers, "an answer", func(d amqp.Delivery) bool {
			return d.CorrelationId == slow || d.CorrelationId == fast
		})
		if first.CorrelationId != fast {
			t.Fatalf("the sleeping call was answered first: %s", first.Body)
		}
		d := await(t, n.answers, "the sleep's answer", byCorrelation(slow))
		if el := time.Since(start); el < 400*time.Millisecond {
			t.Errorf("sleep 400ms answered after %v", el)
		}
		if want := `{"id":3,"type":"result","token":"` + tok + `","method":"sleep","payload":{"ms":400}}`; string(d.Body) != want {
			t.Errorf("answer\n got %s\nwant %s", d.Body, want)
		}
	})
}

// Messages that are not calls are acked and dropped, not requeued forever,
// and the calls after them are still answered.
func TestUnparseableIsDropped(t *testing.T) {
	conn := dial(t)
	n := newNode(t, conn)
	stop := startBackend(t, echo.Config{Nodes: []string{n.id}, CopyCorrelationID: true})

	for _, bad := range []string{`{{{`, `"a string"`, `null`, `{"token":"no method"}`, ``} {
		n.call(t, uniq("bad"), bad, nil)
	}
	corr := uniq("corr")
	n.call(t, corr, `{"id":1,"method":"m","token":"t"}`, nil)
	await(t, n.answers, "the answer after the bad messages", byCorrelation(corr))

	stop() // unacked messages would be back in the queue now
	q, err := channel(t, conn).QueueDeclarePassive(n.queueOut(), true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if q.Messages != 0 {
		t.Errorf("%d messages left in %s, want 0 (all acked)", q.Messages, n.queueOut())
	}
}

// Run returns nil soon after ctx is cancelled, even with a call asleep, gives
// that call back to the queue, and leaves no goroutine behind.
func TestStopIsClean(t *testing.T) {
	conn := dial(t)
	n := newNode(t, conn)
	ch := channel(t, conn)
	ignore := goleak.IgnoreCurrent() // the test's own connection and consumer

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- echo.Run(ctx, echo.Config{URL: brokerURL(), Nodes: []string{n.id}, CopyCorrelationID: true, Logger: testLogger(t)})
	}()

	corr := uniq("corr")
	n.call(t, corr, `{"id":1,"method":"m","token":"t"}`, nil)
	await(t, n.answers, "the answer", byCorrelation(corr))
	n.call(t, uniq("sleepy"), `{"id":2,"method":"sleep","token":"t","payload":{"ms":60000}}`, nil)
	deadline := time.Now().Add(waitTimeout)
	for { // until the sleep call is in the backend's hands
		q, err := ch.QueueDeclarePassive(n.queueOut(), true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if q.Messages == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the backend did not take the sleep call")
		}
		time.Sleep(20 * time.Millisecond)
	}

	cancel()
	start := time.Now()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of cancellation")
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("Run took %v to return", el)
	}
	goleak.VerifyNone(t, ignore)

	deadline = time.Now().Add(waitTimeout)
	for { // the broker requeues the unanswered sleep call
		q, err := ch.QueueDeclarePassive(n.queueOut(), true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if q.Messages == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d messages in %s, want the sleep call back", q.Messages, n.queueOut())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A dropped broker connection is re-established and consuming resumes.
func TestReconnects(t *testing.T) {
	conn := dial(t)
	n := newNode(t, conn)
	p := startProxy(t)
	startBackend(t, echo.Config{URL: p.url, Nodes: []string{n.id}, CopyCorrelationID: true})

	for i := range 3 {
		corr := uniq("corr")
		n.call(t, corr, fmt.Sprintf(`{"id":%d,"method":"m","token":"t"}`, i), nil)
		await(t, n.answers, fmt.Sprintf("the answer after %d dropped connections", i), byCorrelation(corr))
		p.dropAll()
	}
}

// When the exchange answers go to vanishes (its node deleted it), the failed
// publish closes the backend's channel: it must start over, declaring the
// exchange again, and keep answering, not spin on the call.
func TestRecoversFromMissingExchange(t *testing.T) {
	conn := dial(t)
	n := newNode(t, conn)
	startBackend(t, echo.Config{Nodes: []string{n.id}, CopyCorrelationID: true})
	corr := uniq("corr")
	n.call(t, corr, `{"id":1,"method":"m","token":"t"}`, nil)
	await(t, n.answers, "the first answer", byCorrelation(corr))

	ch := channel(t, conn)
	if err := ch.ExchangeDelete(n.exchangeIn(), false, false); err != nil {
		t.Fatal(err)
	}
	n.call(t, uniq("lost"), `{"id":2,"method":"m","token":"t"}`, nil) // its answer has nowhere to go
	deadline := time.Now().Add(waitTimeout)
	for { // until the backend has declared exchange-in-ID again
		probe := channel(t, conn)
		err := probe.ExchangeDeclarePassive(n.exchangeIn(), amqp.ExchangeFanout, true, false, false, false, nil)
		if err == nil {
			_ = probe.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("exchange %s not declared again: %v", n.exchangeIn(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := ch.QueueBind(n.queueIn(), "", n.exchangeIn(), false, nil); err != nil {
		t.Fatal(err)
	}
	corr = uniq("corr")
	n.call(t, corr, `{"id":3,"method":"m","token":"t"}`, nil)
	await(t, n.answers, "the answer after the exchange came back", byCorrelation(corr))
}

func TestPublishEvent(t *testing.T) {
	conn := dial(t)
	mass := bindMass(t, conn)
	tok := uniq("tok")
	ctx := context.Background()

	if err := echo.PublishEvent(ctx, brokerURL(), "", tok, "bare", nil); err != nil {
		t.Fatal(err)
	}
	if err := echo.PublishEvent(ctx, brokerURL(), echo.DefaultMassExchange, tok, "full", json.RawMessage(`{"n": 12345678901234567890123}`)); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`{"type":"event","event":"bare","token":"` + tok + `"}`,
		`{"type":"event","event":"full","token":"` + tok + `","payload":{"n": 12345678901234567890123}}`,
	} {
		if d := await(t, mass, "the event", byToken(tok)); string(d.Body) != want {
			t.Errorf("event\n got %s\nwant %s", d.Body, want)
		}
	}
	if err := echo.PublishEvent(ctx, brokerURL(), "", tok, "x", json.RawMessage(`{`)); err == nil {
		t.Error("PublishEvent with invalid JSON payload: no error")
	}
}

// traceparent is a parsed W3C traceparent header.
type traceparent struct{ traceID, spanID, flags string }

func parseTraceparent(t *testing.T, h amqp.Table) traceparent {
	t.Helper()
	v, _ := h["traceparent"].(string)
	parts := strings.Split(v, "-")
	if len(parts) != 4 || parts[0] != "00" || len(parts[1]) != 32 || len(parts[2]) != 16 || len(parts[3]) != 2 {
		t.Fatalf("traceparent %q in headers %v: not a W3C traceparent", v, h)
	}
	return traceparent{parts[1], parts[2], parts[3]}
}

// The backend continues the trace of a call: the answer carries the call's
// trace id under a span id of the backend's own, with the sampled flag and
// the baggage kept; with no trace context in, the answer starts a trace.
// This is the default tracer provider (no OTEL_* endpoint: nothing exported).
func TestTracePropagation(t *testing.T) {
	for _, v := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_SAMPLER"} {
		t.Setenv(v, "")
	}
	conn := dial(t)
	n := newNode(t, conn)
	startBackend(t, echo.Config{Nodes: []string{n.id}, CopyCorrelationID: true})

	for _, tc := range []struct{ name, in, flags string }{
		{"sampled", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "01"},
		{"not sampled", "00-4bf92f3577b34da6a3ce929d0e0e4737-00f067aa0ba902b8-00", "00"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			corr := uniq("corr")
			n.call(t, corr, `{"id":1,"method":"m","token":"t"}`, amqp.Table{"traceparent": tc.in, "baggage": "k=v"})
			d := await(t, n.answers, "the answer", byCorrelation(corr))
			in := strings.Split(tc.in, "-")
			got := parseTraceparent(t, d.Headers)
			if got.traceID != in[1] {
				t.Errorf("answer's trace id %s, want the call's %s", got.traceID, in[1])
			}
			if got.spanID == in[2] || got.spanID == "0000000000000000" {
				t.Errorf("answer's span id %s: want a new span of the backend's, not the call's %s", got.spanID, in[2])
			}
			if got.flags != tc.flags {
				t.Errorf("answer's trace flags %s, want %s (the sampling decision is the caller's)", got.flags, tc.flags)
			}
			if d.Headers["baggage"] != "k=v" {
				t.Errorf("baggage %v, want k=v carried over", d.Headers["baggage"])
			}
		})
	}

	t.Run("no trace context in", func(t *testing.T) {
		corr := uniq("corr")
		n.call(t, corr, `{"id":2,"method":"m","token":"t"}`, nil)
		d := await(t, n.answers, "the answer", byCorrelation(corr))
		parseTraceparent(t, d.Headers) // a trace of the backend's own
	})
}

// The spans: "handle {method}" (CONSUMER, child of the call's context, with
// the messaging attributes), whose context the result carries; for "event"
// a PRODUCER child "publish exchange-mass" whose context the event carries.
// Run flushes a given provider when it returns.
func TestTraceSpans(t *testing.T) {
	conn := dial(t)
	n := newNode(t, conn)
	mass := bindMass(t, conn)
	rec := tracetest.NewSpanRecorder()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(time.Hour)))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	stop := startBackend(t, echo.Config{Nodes: []string{n.id}, CopyCorrelationID: true, TracerProvider: tp})

	tok := uniq("tok")
	corr := uniq("corr")
	n.call(t, corr, `{"id":"e1","method":"event","token":"`+tok+`","payload":{"event":"hi"}}`,
		amqp.Table{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
	ev := await(t, mass, "the event", byToken(tok))
	res := await(t, n.answers, "the result", byCorrelation(corr))
	stop()

	spans := rec.Ended()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want handle and publish", len(spans))
	}
	handle, publish := spans[1], spans[0] // publish ends first
	if handle.Name() != "handle event" || handle.SpanKind() != trace.SpanKindConsumer {
		t.Errorf("span %q kind %v, want \"handle event\" CONSUMER", handle.Name(), handle.SpanKind())
	}
	if handle.Parent().TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || handle.Parent().SpanID().String() != "00f067aa0ba902b7" || !handle.Parent().IsRemote() {
		t.Errorf("handle's parent %v, want the call's context", handle.Parent())
	}
	attrs := map[string]string{}
	for _, a := range handle.Attributes() {
		attrs[string(a.Key)] = a.Value.Emit()
	}
	for k, v := range map[string]string{
		"messaging.system":                  "rabbitmq",
		"messaging.operation.type":          "process",
		"messaging.destination.name":        n.queueOut(),
		"messaging.message.conversation_id": corr,
	} {
		if attrs[k] != v {
			t.Errorf("handle attribute %s = %q, want %q (all: %v)", k, attrs[k], v, attrs)
		}
	}
	if attrs["messaging.message.id"] == "" {
		t.Errorf("handle has no messaging.message.id: %v", attrs)
	}
	for k, v := range attrs {
		if strings.Contains(v, tok) {
			t.Errorf("handle attribute %s holds the token", k)
		}
	}
	if publish.Name() != "publish "+echo.DefaultMassExchange || publish.SpanKind() != trace.SpanKindProducer ||
		publish.Parent().SpanID() != handle.SpanContext().SpanID() {
		t.Errorf("span %q kind %v parent %v, want \"publish %s\" PRODUCER under handle", publish.Name(), publish.SpanKind(), publish.Parent().SpanID(), echo.DefaultMassExchange)
	}
	if got := parseTraceparent(t, res.Headers); got.spanID != handle.SpanContext().SpanID().String() {
		t.Errorf("result carries span %s, want handle's %s", got.spanID, handle.SpanContext().SpanID())
	}
	if got := parseTraceparent(t, ev.Headers); got.spanID != publish.SpanContext().SpanID().String() {
		t.Errorf("event carries span %s, want publish's %s", got.spanID, publish.SpanContext().SpanID())
	}
	if got := len(exp.GetSpans()); got != 2 {
		t.Errorf("%d spans exported when Run returned, want 2 (flushed)", got)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []echo.Config{
		{},
		{Nodes: []string{""}},
		{Nodes: []string{"1"}, ReplyVia: "carrier-pigeon"},
	} {
		if err := echo.Run(context.Background(), cfg); err == nil {
			t.Errorf("Run(%+v) = nil, want an error", cfg)
		}
	}
}

// Invalid OTEL_* variables are a configuration error, like an invalid Config.
func TestTracingEnvError(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")
	if err := echo.Run(context.Background(), echo.Config{Nodes: []string{"1"}}); err == nil || !strings.Contains(err.Error(), "carrier-pigeon") {
		t.Errorf("Run with OTEL_EXPORTER_OTLP_PROTOCOL=carrier-pigeon: %v, want an error naming it", err)
	}
}

// proxy forwards TCP connections to the broker and can drop them all, to
// play a broker connection that breaks.
type proxy struct {
	url    string
	target string
	ln     net.Listener
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
}

func startProxy(t *testing.T) *proxy {
	t.Helper()
	u, err := url.Parse(brokerURL())
	if err != nil {
		t.Fatal(err)
	}
	target := u.Host
	if u.Port() == "" {
		target = net.JoinHostPort(u.Hostname(), "5672")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.Host = ln.Addr().String()
	p := &proxy{url: u.String(), target: target, ln: ln}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Go(func() { p.pipe(c) })
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		p.dropAll()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) pipe(client net.Conn) {
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = client.Close()
		return
	}
	p.mu.Lock()
	p.conns = append(p.conns, client, server)
	p.mu.Unlock()
	var wg sync.WaitGroup
	wg.Go(func() {
		_, _ = io.Copy(server, client)
		_ = server.Close()
		_ = client.Close()
	})
	_, _ = io.Copy(client, server)
	_ = client.Close()
	_ = server.Close()
	wg.Wait()
}

func (p *proxy) dropAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}
