package routing

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/piped-dev/piped/config"
	"github.com/piped-dev/piped/protocol"
	"github.com/piped-dev/piped/routetable"
	"github.com/piped-dev/piped/telemetry"
	"github.com/piped-dev/piped/test/harness"
)

// testTable compiles routes with the default route of newTestRouter's node.
func testTable(t *testing.T, routes []config.Route, timeout time.Duration) *routetable.Table {
	t.Helper()
	tab, err := routetable.Compile(routes, routetable.Default{NodeID: "n1", Exchange: "exchange-out-n1", Timeout: timeout, Enabled: true})
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// A call goes to its route's exchange with its routing key and expiration,
// and with the properties every call has.
func TestCallPublishesOnRoute(t *testing.T) {
	tab := testTable(t, []config.Route{
		{Match: "billing.*", Exchange: "billing", RoutingKey: "{method}", Declare: true, Timeout: 5 * time.Second},
		{Match: "get", Exchange: "rpc", RoutingKey: "rpc.{node}.{method}"},
		{Match: "fixed", Exchange: "", RoutingKey: "queue-x"},
	}, 30*time.Second)
	tests := []struct {
		method, exchange, key, expiration string
	}{
		{"billing.pay", "billing", "billing.pay", "5000"},
		{"get", "rpc", "rpc.n1.get", "30000"},
		{"fixed", "", "queue-x", "30000"},
		{"other", "exchange-out-n1", "other", "30000"},
	}
	ch := newFakeChannel(false)
	r, _ := queueRouter(t, ch, time.Hour)
	s := &sink{}
	for _, tt := range tests {
		r.Call(t.Context(), "tok", &protocol.Frame{ID: []byte("1"), Method: tt.method}, tab.Lookup(tt.method), s)
	}
	waitFor(t, "4 publishes", func() bool { return len(ch.publishes()) == len(tests) })
	for i, p := range ch.publishes() {
		tt := tests[i]
		if p.exchange != tt.exchange || p.key != tt.key || p.msg.Expiration != tt.expiration {
			t.Errorf("%s: published to %q key %q expiration %q, want %q %q %q", tt.method, p.exchange, p.key, p.msg.Expiration, tt.exchange, tt.key, tt.expiration)
		}
		if !p.mandatory || p.msg.ReplyTo != "queue-in-n1" || p.msg.CorrelationId == "" || p.msg.MessageId != p.msg.CorrelationId ||
			p.msg.AppId != "piped" || p.msg.Headers["x-piped-node"] != "n1" {
			t.Errorf("%s: properties %+v (mandatory %v): want reply_to, correlation and message id, app id, x-piped-node, mandatory", tt.method, p.msg, p.mandatory)
		}
	}
	if n := len(s.answers()); n != 0 {
		t.Errorf("%d answers before any result: %v", n, s.answers())
	}
}

// A call times out after its route's timeout, not requests.timeout, and
// keeps the route it was published on when the table changes.
func TestCallTimeoutPerRoute(t *testing.T) {
	tab := testTable(t, []config.Route{{Match: "fast", Exchange: "x", Timeout: 30 * time.Millisecond}}, time.Hour)
	ch := newFakeChannel(false)
	r, _ := queueRouter(t, ch, time.Hour)
	fast, slow := &sink{}, &sink{}
	r.Call(t.Context(), "tok", &protocol.Frame{ID: []byte("1"), Method: "fast"}, tab.Lookup("fast"), fast)
	r.Call(t.Context(), "tok", &protocol.Frame{ID: []byte("2"), Method: "slow"}, tab.Lookup("slow"), slow)
	r.Routes().Store(testTable(t, nil, time.Hour)) // a reload: the pending call keeps its route
	waitFor(t, "the fast route's timeout", func() bool { return len(fast.answers()) == 1 })
	if got := fast.answers()[0]; !strings.Contains(got, `"code":"timeout"`) || !strings.Contains(got, "no result within 30ms") {
		t.Errorf("answer %s, want a timeout naming 30ms", got)
	}
	if n := len(slow.answers()); n != 0 || r.Pending() != 1 {
		t.Errorf("the default route's call: %d answers, %d pending; want it still pending", n, r.Pending())
	}
}

// A nil route is never published.
func TestCallWithoutRoute(t *testing.T) {
	ch := newFakeChannel(false)
	r, _ := queueRouter(t, ch, time.Hour)
	s := &sink{}
	r.Call(t.Context(), "tok", &protocol.Frame{ID: []byte("1"), Method: "nope"}, nil, s)
	if got := s.answers(); len(got) != 1 || !strings.Contains(got[0], `"code":"unknown_method"`) || !strings.Contains(got[0], `no route for method \"nope\"`) {
		t.Errorf("answers %v, want one unknown_method", got)
	}
	if r.Pending() != 0 || len(ch.publishes()) != 0 {
		t.Error("a call without a route was published")
	}
}

// fakeExchanges is a broker's set of exchanges behind fake channels: a
// failed passive declare closes the channel, as the broker does.
type fakeExchanges struct {
	mu       sync.Mutex
	exist    map[string]string // name → type
	opened   int
	declared []string // "name type durable"
	checked  []string
	queues   map[string]string // queue name → x-queue-type ("" for none)
	qdecl    []string          // "name type"
	bound    []string          // "queue exchange key"
}

type fakeExChannel struct {
	f      *fakeExchanges
	closed bool
}

func (f *fakeExchanges) open() (exchangeChannel, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.opened++
	return &fakeExChannel{f: f}, nil
}

func (c *fakeExChannel) ExchangeDeclare(name, kind string, durable, autoDelete, internal, noWait bool, args amqp.Table) error {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	if c.closed {
		return amqp.ErrClosed
	}
	c.f.declared = append(c.f.declared, name+" "+kind)
	if have, ok := c.f.exist[name]; ok && have != kind {
		c.closed = true
		return &amqp.Error{Code: amqp.PreconditionFailed, Reason: "PRECONDITION_FAILED - inequivalent arg 'type'"}
	}
	c.f.exist[name] = kind
	return nil
}

func (c *fakeExChannel) ExchangeDeclarePassive(name, kind string, durable, autoDelete, internal, noWait bool, args amqp.Table) error {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	if c.closed {
		return amqp.ErrClosed
	}
	c.f.checked = append(c.f.checked, name)
	if _, ok := c.f.exist[name]; !ok {
		c.closed = true
		return &amqp.Error{Code: amqp.NotFound, Reason: "NOT_FOUND - no exchange '" + name + "'"}
	}
	return nil
}

func (c *fakeExChannel) QueueDeclare(name string, durable, autoDelete, exclusive, noWait bool, args amqp.Table) (amqp.Queue, error) {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	if c.closed {
		return amqp.Queue{}, amqp.ErrClosed
	}
	kind, _ := args["x-queue-type"].(string)
	c.f.qdecl = append(c.f.qdecl, name+" "+kind)
	if have, ok := c.f.queues[name]; ok && have != kind || !durable {
		c.closed = true
		return amqp.Queue{}, &amqp.Error{Code: amqp.PreconditionFailed, Reason: "PRECONDITION_FAILED - inequivalent arg 'x-queue-type'"}
	}
	c.f.queues[name] = kind
	return amqp.Queue{Name: name}, nil
}

func (c *fakeExChannel) QueueBind(name, key, exchange string, noWait bool, args amqp.Table) error {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	if c.closed {
		return amqp.ErrClosed
	}
	if _, ok := c.f.exist[exchange]; !ok {
		c.closed = true
		return &amqp.Error{Code: amqp.NotFound, Reason: "NOT_FOUND - no exchange '" + exchange + "'"}
	}
	c.f.bound = append(c.f.bound, name+" "+exchange+" "+key)
	return nil
}

func (c *fakeExChannel) Close() error { c.closed = true; return nil }

func TestDeclareRouteExchanges(t *testing.T) {
	topo := NewTopology(config.Defaults().AMQP, "n1")
	tests := []struct {
		name     string
		routes   []config.Route
		exist    map[string]string
		queues   map[string]string // queues that exist: name → x-queue-type
		declared []string
		checked  []string
		qdecl    []string
		bound    []string
		opened   int
		errIs    error
		errHas   []string
	}{
		{
			name: "declare and check, each exchange once",
			routes: []config.Route{
				{Match: "billing.*", Exchange: "billing", Declare: true, Type: "topic", Durable: true},
				{Match: "billing", Exchange: "billing"}, // declared by routes[0]: not checked
				{Match: "a", Exchange: "shared"},
				{Match: "b", Exchange: "shared"},
				{Match: "q", Exchange: ""}, // the default exchange: never checked
			},
			exist:    map[string]string{"shared": "direct"},
			declared: []string{"billing topic"},
			checked:  []string{"shared"},
			opened:   1,
		},
		{
			name: "every missing exchange is reported, each on a fresh channel",
			routes: []config.Route{
				{Match: "a", Exchange: "gone-a"},
				{Match: "b", Exchange: "here"},
				{Match: "c.*", Exchange: "gone-c"},
			},
			exist:   map[string]string{"here": "topic"},
			checked: []string{"gone-a", "here", "gone-c"},
			opened:  3,
			errIs:   ErrExchangeMissing,
			errHas:  []string{`routes[0] (match "a"): exchange "gone-a" does not exist`, `routes[2] (match "c.*"): exchange "gone-c" does not exist`, "declare = true"},
		},
		{
			name:     "declared with another type",
			routes:   []config.Route{{Match: "a", Exchange: "billing", Declare: true, Type: "topic", Durable: true}},
			exist:    map[string]string{"billing": "fanout"},
			declared: []string{"billing topic"},
			opened:   2,
			errIs:    ErrTopologyConflict,
			errHas:   []string{`routes[0] (match "a"): exchange "billing" exists with other settings`, "a durable topic exchange", "rabbitmqadmin delete exchange name=billing"},
		},
		{name: "no routes: no channel", opened: 0},
		{
			name: "queues: declared once each, with their type, and bound with their keys",
			routes: []config.Route{
				{Match: "billing.*", Exchange: "api", Declare: true, Type: "topic", Durable: true, Queue: "billing", QueueType: "quorum", BindingKey: "billing.*"},
				{Match: "refund", Exchange: "api", Declare: true, Type: "topic", Durable: true, Queue: "billing", QueueType: "quorum", BindingKey: "refund"},
				{Match: "refund2", Exchange: "api", Declare: true, Type: "topic", Durable: true, Queue: "billing", QueueType: "quorum", BindingKey: "refund"}, // the same binding: once
				{Match: "chat.*", Exchange: "chat", Type: "fanout", Queue: "chat"},                                                                            // classic by default, no arguments
			},
			exist:    map[string]string{"chat": "fanout"},
			declared: []string{"api topic"},
			checked:  []string{"chat"},
			qdecl:    []string{"billing quorum", "chat "},
			bound:    []string{"billing api billing.*", "billing api refund", "chat chat "},
			opened:   1,
		},
		{
			name: "a queue that exists with another type is a conflict naming the route; the others are declared",
			routes: []config.Route{
				{Match: "a", Exchange: "api", Declare: true, Type: "topic", Durable: true, Queue: "jobs", QueueType: "quorum", BindingKey: "#"},
				{Match: "b", Exchange: "api", Declare: true, Type: "topic", Durable: true, Queue: "other", QueueType: "quorum", BindingKey: "#"},
			},
			queues:   map[string]string{"jobs": ""},
			declared: []string{"api topic"},
			qdecl:    []string{"jobs quorum", "other quorum"},
			bound:    []string{"other api #"},
			opened:   2,
			errIs:    ErrTopologyConflict,
			errHas:   []string{`routes[0] (match "a"): queue "jobs" exists with other settings`, "a durable quorum queue", "rabbitmqctl delete_queue jobs", "queue_type"},
		},
		{
			name:    "the queue of a route whose exchange is missing is not declared",
			routes:  []config.Route{{Match: "a", Exchange: "gone", Type: "topic", Queue: "jobs", BindingKey: "#"}},
			checked: []string{"gone"},
			opened:  2,
			errIs:   ErrExchangeMissing,
			errHas:  []string{`routes[0] (match "a"): exchange "gone" does not exist`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeExchanges{exist: tt.exist, queues: tt.queues}
			if f.exist == nil {
				f.exist = map[string]string{}
			}
			if f.queues == nil {
				f.queues = map[string]string{}
			}
			err := declareRouteExchanges(f.open, testTable(t, tt.routes, time.Second), topo)
			if tt.errIs == nil && err != nil || tt.errIs != nil && !errors.Is(err, tt.errIs) {
				t.Fatalf("error %v, want %v", err, tt.errIs)
			}
			for _, want := range tt.errHas {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if strings.Join(f.declared, ",") != strings.Join(tt.declared, ",") || strings.Join(f.checked, ",") != strings.Join(tt.checked, ",") || f.opened != tt.opened {
				t.Errorf("declared %v, checked %v, %d channels; want %v, %v, %d", f.declared, f.checked, f.opened, tt.declared, tt.checked, tt.opened)
			}
			if strings.Join(f.qdecl, ",") != strings.Join(tt.qdecl, ",") || strings.Join(f.bound, ",") != strings.Join(tt.bound, ",") {
				t.Errorf("queues declared %q, bound %q; want %q, %q", f.qdecl, f.bound, tt.qdecl, tt.bound)
			}
		})
	}
}

// brokerExchangeExists checks passively, on a connection of its own, that
// exchange exists.
func brokerExchangeExists(t *testing.T, exchange string) bool {
	t.Helper()
	conn, err := amqp.Dial(harness.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	return ch.ExchangeDeclarePassive(exchange, "topic", true, false, false, false, nil) == nil
}

func deleteExchange(t *testing.T, name string) {
	conn, err := amqp.Dial(harness.AMQPURL())
	if err != nil {
		return
	}
	defer conn.Close()
	if ch, err := conn.Channel(); err == nil {
		_ = ch.ExchangeDelete(name, false, false)
		_ = ch.Close()
	}
}

// On the real broker: a route's exchange is declared at session start;
// SetRoutes declares a new one before the table is swapped, and refuses a
// table whose declare = false exchange is missing, keeping the old one.
func TestRouterRouteExchangesOnBroker(t *testing.T) {
	billing, added, missing := harness.UniqueID("billing"), harness.UniqueID("added"), harness.UniqueID("missing")
	t.Cleanup(func() { deleteExchange(t, billing); deleteExchange(t, added) })
	b := startBrokerRouterWith(t, 10*time.Second, []config.Route{{Match: "billing.*", Exchange: billing, Declare: true, Type: "topic", Durable: true}})
	if !brokerExchangeExists(t, billing) {
		t.Fatalf("exchange %s was not declared at session start", billing)
	}
	old := b.Routes().Load()
	d := routetable.Default{NodeID: "x", Exchange: b.topo.ExchangeOut, Timeout: time.Second, Enabled: true}
	bad, err := routetable.Compile([]config.Route{{Match: "pay", Exchange: missing}}, d)
	if err != nil {
		t.Fatal(err)
	}
	err = b.SetRoutes(t.Context(), bad)
	if !errors.Is(err, ErrExchangeMissing) || !strings.Contains(err.Error(), `routes[0] (match "pay")`) {
		t.Errorf("SetRoutes with a missing exchange: %v, want ErrExchangeMissing naming the route", err)
	}
	if b.Routes().Load() != old {
		t.Error("SetRoutes stored a table whose exchange is missing")
	}
	if b.Ready() != nil {
		t.Errorf("a refused table made the router not ready: %v", b.Ready())
	}
	good, err := routetable.Compile([]config.Route{{Match: "pay", Exchange: added, Declare: true, Type: "direct", Durable: true}}, d)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.SetRoutes(t.Context(), good); err != nil {
		t.Fatalf("SetRoutes: %v", err)
	}
	if b.Routes().Load() != good || !brokerExchangeExists(t, added) {
		t.Error("SetRoutes did not declare the new exchange and store the table")
	}
}

// A route whose exchange must exist and does not stops the router before
// it was ever ready, with an error naming the route.
func TestRouterMissingExchangeIsFatal(t *testing.T) {
	id := harness.UniqueID("rtmiss")
	cfg := config.Defaults().AMQP
	cfg.URL = harness.AMQPURL()
	cfg.MassExchange = "mass-" + id
	tab, err := routetable.Compile([]config.Route{{Match: "billing.*", Exchange: harness.UniqueID("nosuch")}},
		routetable.Default{NodeID: id, Exchange: cfg.ExchangeOutPrefix + id, Timeout: time.Second, Enabled: true})
	if err != nil {
		t.Fatal(err)
	}
	r := New(Options{NodeID: id, AMQP: cfg, Routes: routetable.NewHolder(tab), Hub: &fakeHub{},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: telemetry.NewMetrics()})
	t.Cleanup(func() { deleteTopology(t, r.Topology()) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = r.Run(ctx)
	if !errors.Is(err, ErrExchangeMissing) || !strings.Contains(err.Error(), `routes[0] (match "billing.*")`) {
		t.Fatalf("Run: %v, want ErrExchangeMissing naming routes[0]", err)
	}
}

// After the node was ready, a route's exchange that disappears makes the
// node not ready (naming the route) and it retries until the exchange is
// back; the call that found it missing is answered, once.
func TestRouterExchangeMissingAfterReady(t *testing.T) {
	id := harness.UniqueID("rtgone")
	ex := harness.UniqueID("gone")
	t.Cleanup(func() { deleteExchange(t, ex) })
	ch := harness.Channel(t)
	if err := ch.ExchangeDeclare(ex, "topic", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	cfg := config.Defaults().AMQP
	cfg.URL = harness.AMQPURL()
	cfg.MassExchange = "mass-" + id
	cfg.ReconnectMax = 300 * time.Millisecond
	tab, err := routetable.Compile([]config.Route{{Match: "pay", Exchange: ex, RoutingKey: "{method}"}},
		routetable.Default{NodeID: id, Exchange: cfg.ExchangeOutPrefix + id, Timeout: 10 * time.Second, Enabled: true})
	if err != nil {
		t.Fatal(err)
	}
	r := New(Options{NodeID: id, AMQP: cfg, Routes: routetable.NewHolder(tab), Hub: &fakeHub{},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: telemetry.NewMetrics()})
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
	waitFor(t, "ready", func() bool { return r.Ready() == nil })

	if err := ch.ExchangeDelete(ex, false, false); err != nil {
		t.Fatal(err)
	}
	s := &sink{}
	r.Call(t.Context(), "tok", &protocol.Frame{ID: []byte("1"), Method: "pay"}, tab.Lookup("pay"), s)
	waitFor(t, "not ready naming the route", func() bool {
		err := r.Ready()
		return errors.Is(err, ErrExchangeMissing) && strings.Contains(err.Error(), `routes[0] (match "pay")`)
	})
	waitFor(t, "the call's answer", func() bool { return len(s.answers()) == 1 })
	if got := s.answers()[0]; !strings.Contains(got, `"code":"unavailable"`) {
		t.Errorf("the call published to the missing exchange got %s, want unavailable", got)
	}

	if err := ch.ExchangeDeclare(ex, "topic", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ready again", func() bool { return r.Ready() == nil })
	if n := len(s.answers()); n != 1 {
		t.Errorf("%d answers, want exactly one", n)
	}
}
