package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	h "github.com/piped-dev/piped/test/harness"
)

// issueExample is the route of issue 8, which must work as written.
const issueExample = `
[[routes]]
match = "billing.*"
exchange = "billing"
routing_key = "{method}"
declare = true
type = "topic"
timeout = "5s"
`

// routeCall is a call as a backend receives it, with where it came from.
type routeCall struct {
	ID       json.RawMessage `json:"id"`
	Method   string          `json:"method"`
	Token    string          `json:"token"`
	Exchange string          `json:"-"`
	Key      string          `json:"-"`
	Node     string          `json:"-"` // x-piped-node
}

// replyBackend is a backend service of the recommended deployment: it
// consumes one queue of its own, bound to a shared exchange, and answers
// every call through reply_to on the default exchange, copying the
// correlation id. Its results carry {"by": name, "node", "key"} so tests
// see which service, for which node, on which routing key answered.
type replyBackend struct {
	name  string
	queue string

	mu    sync.Mutex
	calls []routeCall
}

// startReplyBackend declares queue (deleted at cleanup), binds it to
// exchange with keys and answers until the test ends. declare, when set,
// declares exchange first (topic, durable, as a route with declare = true
// does); otherwise the exchange must exist already.
func startReplyBackend(t *testing.T, name, exchange string, declare bool, keys ...string) *replyBackend {
	t.Helper()
	b := &replyBackend{name: name, queue: h.UniqueID("svc-" + name)}
	b.serve(t, func(ch *amqp.Channel) (teardown func()) {
		if declare {
			if err := ch.ExchangeDeclare(exchange, "topic", true, false, false, false, nil); err != nil {
				t.Fatalf("backend %s: declare %s: %v", name, exchange, err)
			}
		}
		if _, err := ch.QueueDeclare(b.queue, false, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if err := ch.QueueBind(b.queue, k, exchange, false, nil); err != nil {
				t.Fatalf("backend %s: bind %s to %s (%s): %v", name, b.queue, exchange, k, err)
			}
		}
		return func() { _, _ = ch.QueueDelete(b.queue, false, false, false) }
	})
	return b
}

// consumeReplyBackend is a replyBackend on a queue that exists already (a
// route's queue, which the nodes declare); it neither declares nor deletes it.
func consumeReplyBackend(t *testing.T, name, queue string) *replyBackend {
	t.Helper()
	b := &replyBackend{name: name, queue: queue}
	b.serve(t, func(*amqp.Channel) func() { return func() {} })
	return b
}

// serve connects, runs setup on the channel, consumes b.queue and answers
// every call until the test ends; then it runs the teardown setup returned
// and closes the connection.
func (b *replyBackend) serve(t *testing.T, setup func(ch *amqp.Channel) (teardown func())) {
	t.Helper()
	name := b.name
	conn, err := amqp.Dial(h.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	teardown := setup(ch)
	deliveries, err := ch.Consume(b.queue, "", true, false, false, false, nil)
	if err != nil {
		t.Fatalf("backend %s: consume %s: %v", name, b.queue, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for d := range deliveries {
			var c routeCall
			if err := json.Unmarshal(d.Body, &c); err != nil {
				t.Errorf("backend %s: call %q: %v", name, d.Body, err)
				continue
			}
			c.Exchange, c.Key = d.Exchange, d.RoutingKey
			c.Node, _ = d.Headers["x-piped-node"].(string)
			b.mu.Lock()
			b.calls = append(b.calls, c)
			b.mu.Unlock()
			token, _ := json.Marshal(c.Token)
			method, _ := json.Marshal(c.Method)
			payload, _ := json.Marshal(map[string]string{"by": name, "node": c.Node, "key": c.Key})
			body := `{"type":"result","token":` + string(token) + `,"method":` + string(method) + `,"payload":` + string(payload)
			if c.ID != nil {
				body += `,"id":` + string(c.ID)
			}
			body += "}"
			err := ch.Publish("", d.ReplyTo, false, false, amqp.Publishing{
				ContentType: "application/json", CorrelationId: d.CorrelationId, Body: []byte(body)})
			if err != nil {
				return // the connection is closing
			}
		}
	}()
	t.Cleanup(func() {
		teardown()
		_ = conn.Close()
		<-done
	})
}

// received returns the calls the backend got so far.
func (b *replyBackend) received() []routeCall {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]routeCall(nil), b.calls...)
}

// deleteExchangeAtEnd deletes exchange when the test ends, after the nodes
// started later have stopped (cleanups run last in, first out).
func deleteExchangeAtEnd(t *testing.T, exchange string) {
	t.Cleanup(func() {
		ch := h.Channel(t)
		_ = ch.ExchangeDelete(exchange, false, false)
	})
}

// resultPayload is the payload replyBackend answers with.
type resultPayload struct {
	By, Node, Key string
}

func payloadOf(t *testing.T, f h.Frame) resultPayload {
	t.Helper()
	if f.Type != "result" {
		t.Fatalf("got %s, want a result", f.Raw)
	}
	var p resultPayload
	if err := json.Unmarshal(f.Payload, &p); err != nil {
		t.Fatalf("result payload %s: %v", f.Payload, err)
	}
	return p
}

// The issue's example as written: two nodes declare the billing topic
// exchange; one backend service consumes one shared queue bound to it and
// answers through reply_to. Each client gets its own answer from its own
// node; nothing goes to the nodes' out-queues; a method no route takes
// still goes to the node's out-queue (the default route).
func TestRoutesIssueExampleSharedQueue(t *testing.T) {
	deleteExchangeAtEnd(t, "billing")
	n1 := h.StartNode(t, h.WithConfig(t, issueExample))
	n2 := h.StartNode(t, h.WithConfig(t, issueExample))
	svc := startReplyBackend(t, "billing", "billing", false, "billing.*") // declared by the nodes
	c1, c2 := h.Dial(t, n1, h.UniqueID("tok")), h.Dial(t, n2, h.UniqueID("tok"))
	for i := range 5 {
		for _, x := range []struct {
			c *h.Client
			n *h.Node
		}{{c1, n1}, {c2, n2}} {
			x.c.Send(t, fmt.Sprintf(`{"id":%d,"method":"billing.pay","payload":{"amount":%d}}`, i, i))
			f := x.c.NextFrame(t, wait)
			if p := payloadOf(t, f); string(f.ID) != fmt.Sprint(i) || p.By != "billing" || p.Node != x.n.ID || p.Key != "billing.pay" {
				t.Fatalf("node %s, call %d: got %s, want the billing service's answer for this node on key billing.pay", x.n.ID, i, f.Raw)
			}
		}
	}
	nodes := map[string]int{}
	for _, c := range svc.received() {
		if c.Exchange != "billing" {
			t.Errorf("call on exchange %q, want billing", c.Exchange)
		}
		nodes[c.Node]++
	}
	if nodes[n1.ID] != 5 || nodes[n2.ID] != 5 {
		t.Errorf("the shared queue got calls by node %v, want 5 from each", nodes)
	}
	for _, n := range []*h.Node{n1, n2} {
		if q := h.Inspect(t, "queue-out-"+n.ID); q != 0 {
			t.Errorf("queue-out-%s holds %d calls; routed calls must not go there", n.ID, q)
		}
	}
	c1.Send(t, `{"method":"get-article"}`)
	h.Eventually(t, wait, "the default route's call in queue-out", func() bool { return h.Inspect(t, "queue-out-"+n1.ID) == 1 })
	if v := n1.Metric(t, `piped_calls_by_exchange_total{exchange="billing"}`); v != 5 {
		t.Errorf("piped_calls_by_exchange_total{exchange=\"billing\"} = %v, want 5", v)
	}
}

// The first route in file order that matches wins: an exact name before a
// glob, "*" stops at dots (the method goes on to "**"), "?" is one
// character; what nothing matches takes the default route.
func TestRoutesGlobsAndPrecedence(t *testing.T) {
	ex := h.UniqueID("prec")
	deleteExchangeAtEnd(t, ex)
	toml := fmt.Sprintf(`
[[routes]]
match = "billing.refund"
exchange = %[1]q
routing_key = "r0.{method}"
declare = true

[[routes]]
match = "billing.*"
exchange = %[1]q
routing_key = "r1.{method}"
declare = true

[[routes]]
match = "v?.get"
exchange = %[1]q
routing_key = "r2.{node}"
declare = true

[[routes]]
match = "billing.**"
exchange = %[1]q
routing_key = "r3.{method}"
declare = true
`, ex)
	n := h.StartNode(t, h.WithConfig(t, toml))
	startReplyBackend(t, "prec", ex, false, "#")
	c := h.Dial(t, n, h.UniqueID("tok"))
	for _, tc := range []struct{ method, key string }{
		{"billing.refund", "r0.billing.refund"},
		{"billing.pay", "r1.billing.pay"},
		{"billing.eu.pay", "r3.billing.eu.pay"},
		{"v1.get", "r2." + n.ID},
		{"v10.get", ""}, // no route: the default route, no backend here
	} {
		c.Send(t, `{"id":1,"method":"`+tc.method+`"}`)
		if tc.key == "" {
			h.Eventually(t, wait, "the call in queue-out", func() bool { return h.Inspect(t, "queue-out-"+n.ID) == 1 })
			continue
		}
		if p := payloadOf(t, c.NextFrame(t, wait)); p.Key != tc.key {
			t.Errorf("%s went with routing key %q, want %q", tc.method, p.Key, tc.key)
		}
	}
	c.Send(t, `{"id":2,"method":"$connect"}`)
	if f := c.NextFrame(t, wait); f.Error.Code != "bad_request" || !strings.Contains(f.Error.Message, "reserved") {
		t.Errorf("a client calling $connect: %s, want bad_request", f.Raw)
	}
}

// A call on a route with a timeout gets its timeout error after the
// route's timeout, not requests.timeout, and is published with that
// expiration.
func TestRouteTimeout(t *testing.T) {
	t.Parallel()
	ex := h.UniqueID("slow")
	deleteExchangeAtEnd(t, ex)
	n := h.StartNode(t, h.WithEnv("PIPED_REQUESTS_TIMEOUT=60s"), h.WithConfig(t, fmt.Sprintf(`
[[routes]]
match = "slow.*"
exchange = %q
declare = true
timeout = "300ms"
`, ex)))
	// A backend that takes the call and never answers.
	ch := h.Channel(t)
	q := h.UniqueID("slow-q")
	if _, err := ch.QueueDeclare(q, false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q, "#", ex, false, nil); err != nil {
		t.Fatal(err)
	}
	deliveries, err := ch.Consume(q, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := h.Dial(t, n, h.UniqueID("tok"))
	start := time.Now()
	c.Send(t, `{"id":"s","method":"slow.op"}`)
	f := c.NextFrame(t, wait) // far less than requests.timeout
	if f.Error.Code != "timeout" || !strings.Contains(f.Error.Message, "300ms") {
		t.Fatalf("got %s, want a timeout naming the route's 300ms", f.Raw)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("timeout after %v, before the route's 300ms", d)
	}
	var d amqp.Delivery
	select {
	case d = <-deliveries:
	case <-time.After(wait):
		t.Fatal("the backend got no call")
	}
	if d.Expiration != "300" || d.ReplyTo != "queue-in-"+n.ID || d.CorrelationId == "" {
		t.Errorf("published with expiration %q, reply_to %q, correlation id %q; want 300, the in-queue, an id", d.Expiration, d.ReplyTo, d.CorrelationId)
	}
	settled(t, n, c)
}

// A route's rate limits calls on that route per connection, on top of
// ws.rate_per_second; other routes and other connections are not limited
// by it.
func TestRouteRate(t *testing.T) {
	t.Parallel()
	ex := h.UniqueID("rated")
	deleteExchangeAtEnd(t, ex)
	n := h.StartNode(t, h.WithConfig(t, fmt.Sprintf(`
[[routes]]
match = "rated.*"
exchange = %[1]q
declare = true
rate = 0.01
burst = 2

[[routes]]
match = "free.*"
exchange = %[1]q
declare = true
`, ex)))
	startReplyBackend(t, "rated", ex, false, "#")
	a, b := h.Dial(t, n, h.UniqueID("tok")), h.Dial(t, n, h.UniqueID("tok"))
	for i := range 2 {
		a.Send(t, fmt.Sprintf(`{"id":%d,"method":"rated.op"}`, i))
		payloadOf(t, a.NextFrame(t, wait))
	}
	a.Send(t, `{"id":3,"method":"rated.op"}`)
	if f := a.NextFrame(t, wait); f.Error.Code != "too_many_requests" || !strings.Contains(f.Error.Message, `routes[0] rated.*`) || !strings.Contains(f.Error.Message, "0.01 calls/s") {
		t.Fatalf("third call: %s, want too_many_requests naming routes[0] and its rate", f.Raw)
	}
	a.Send(t, `{"id":4,"method":"free.op"}`)
	payloadOf(t, a.NextFrame(t, wait))
	b.Send(t, `{"id":5,"method":"rated.op"}`)
	payloadOf(t, b.NextFrame(t, wait))
}

// With routing.default_route = false a method no route takes gets
// unknown_method and is published nowhere.
func TestUnknownMethod(t *testing.T) {
	t.Parallel()
	ex := h.UniqueID("known")
	deleteExchangeAtEnd(t, ex)
	n := h.StartNode(t, h.WithConfig(t, fmt.Sprintf(`
[routing]
default_route = false

[[routes]]
match = "known"
exchange = %q
declare = true
`, ex)))
	startReplyBackend(t, "known", ex, false, "#")
	c := h.Dial(t, n, h.UniqueID("tok"))
	c.Send(t, `{"id":1,"method":"known"}`)
	payloadOf(t, c.NextFrame(t, wait))
	c.Send(t, `{"id":2,"method":"other"}`)
	f := c.NextFrame(t, wait)
	if f.Error.Code != "unknown_method" || f.Error.Message != `no route for method "other"` || string(f.ID) != "2" {
		t.Fatalf("got %s, want unknown_method for id 2", f.Raw)
	}
	settled(t, n, c)
	if q := h.Inspect(t, "queue-out-"+n.ID); q != 0 {
		t.Errorf("queue-out holds %d calls; unknown methods must not be published", q)
	}
}

// A route whose exchange must exist (declare = false) and does not stops
// the node at start with exit code 1 and a log line naming the route.
func TestRouteExchangeMissingStopsStartup(t *testing.T) {
	t.Parallel()
	ex := h.UniqueID("nosuch")
	n := h.LaunchNode(t, h.WithConfig(t, fmt.Sprintf(`
[[routes]]
match = "billing.*"
exchange = %q
`, ex)))
	if code := n.Wait(t, 30*time.Second); code != 1 {
		t.Fatalf("exit code %d, want 1\n%s", code, n.Logs())
	}
	logs := n.Logs()
	for _, want := range []string{`routes[0] (match \"billing.*\")`, ex, "does not exist", "declare = true"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log does not say %q:\n%s", want, logs)
		}
	}
}

// reloadTOML routes "svc.*" to exchange ex (declared), and sets a
// restart-only key to readHeader.
func reloadTOML(ex, readHeader string) string {
	return fmt.Sprintf(`
[http]
read_header_timeout = %q

[[routes]]
match = "svc.*"
exchange = %q
declare = true
`, readHeader, ex)
}

// rewrite replaces the node's configuration file (write to a temporary
// file, then rename, as editors and ConfigMaps do) and sends SIGHUP.
func rewrite(t *testing.T, n *h.Node, toml string) {
	t.Helper()
	tmp := n.ConfigFile + ".new"
	if err := os.WriteFile(tmp, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, n.ConfigFile); err != nil {
		t.Fatal(err)
	}
	n.Signal(syscall.SIGHUP)
}

// A SIGHUP that moves a route to another exchange while calls are in
// flight: every call gets exactly one answer, from the service of the
// route it was published on; later calls go to the new service; the
// restart-only key that changed is named as not applied; no connection
// closes.
func TestReloadUnderTraffic(t *testing.T) {
	exA, exB := h.UniqueID("svc-a"), h.UniqueID("svc-b")
	deleteExchangeAtEnd(t, exA)
	deleteExchangeAtEnd(t, exB)
	n := h.StartNode(t, h.WithConfig(t, reloadTOML(exA, "10s")))
	startReplyBackend(t, "a", exA, false, "svc.*")
	startReplyBackend(t, "b", exB, true, "svc.*") // B's exchange exists before the reload names it

	const clients, after = 4, 40 // each client sends until it has sent `after` calls after the reload
	type answer struct {
		client, id int
		by         string
	}
	var mu sync.Mutex
	answers := map[[2]int][]string{} // (client, id) → who answered, in order
	sentAfter := map[[2]int]bool{}   // calls sent once the reload was logged
	total := 0
	var sent sync.WaitGroup
	reloaded := make(chan struct{})
	conns := make([]*h.Client, clients)
	for i := range conns {
		conns[i] = h.Dial(t, n, h.UniqueID("tok"))
	}
	for ci, c := range conns {
		sent.Add(1)
		go func() {
			defer sent.Done()
			// Up to 8 calls in flight per connection all along: the reload lands among them.
			inflight, next, nAfter := 0, 0, 0
			for nAfter < after || inflight > 0 {
				for inflight < 8 && nAfter < after {
					select {
					case <-reloaded:
						mu.Lock()
						sentAfter[[2]int{ci, next}] = true
						mu.Unlock()
						nAfter++
					default:
					}
					c.Send(t, fmt.Sprintf(`{"id":%d,"method":"svc.call"}`, next))
					next++
					inflight++
				}
				select {
				case b := <-c.Frames():
					var f struct {
						ID      int
						Type    string
						Payload resultPayload
						Error   struct{ Code string }
					}
					_ = json.Unmarshal(b, &f)
					by := "error:" + f.Error.Code
					if f.Type == "result" {
						by = f.Payload.By
					}
					mu.Lock()
					answers[[2]int{ci, f.ID}] = append(answers[[2]int{ci, f.ID}], by)
					total++
					mu.Unlock()
					inflight--
				case <-time.After(wait):
					t.Errorf("client %d: no answer within %v (%d in flight)", ci, wait, inflight)
					return
				}
			}
			mu.Lock()
			for id := range next {
				if _, ok := answers[[2]int{ci, id}]; !ok {
					answers[[2]int{ci, id}] = nil // lost
				}
			}
			mu.Unlock()
		}()
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return total }
	h.Eventually(t, wait, "traffic before the reload", func() bool { return count() >= 200 })
	rewrite(t, n, reloadTOML(exB, "20s"))
	h.Eventually(t, wait, "the reload", func() bool { return strings.Contains(n.Logs(), "configuration reloaded") })
	close(reloaded)
	sent.Wait()

	byService := map[string]int{}
	for k, by := range answers {
		if len(by) != 1 {
			t.Errorf("client %d call %d answered %d times (%v), want once", k[0], k[1], len(by), by)
			continue
		}
		byService[by[0]]++
		if sentAfter[k] && by[0] != "b" {
			t.Errorf("client %d call %d, sent after the reload, answered by %q, want b", k[0], k[1], by[0])
		}
	}
	if byService["a"] == 0 || byService["b"] < clients*after || byService["a"]+byService["b"] != len(answers) {
		t.Errorf("answers by service %v: want some from a, every later one from b, and no errors", byService)
	}
	t.Logf("%d calls, answers by service %v", len(answers), byService)
	logs := n.Logs()
	if !strings.Contains(logs, "NOT applied") || !strings.Contains(logs, "http.read_header_timeout") {
		t.Errorf("the log does not name http.read_header_timeout as not applied:\n%s", logs)
	}
	for ci, c := range conns {
		select {
		case <-c.Closed():
			t.Errorf("client %d was disconnected by the reload: %v", ci, c.Err())
		default:
		}
	}
}

// A reload with an invalid file, or with a route whose exchange does not
// exist, is rejected with a log line naming the problem; the old routes
// keep working.
func TestReloadRejected(t *testing.T) {
	ex := h.UniqueID("svc-keep")
	deleteExchangeAtEnd(t, ex)
	n := h.StartNode(t, h.WithConfig(t, reloadTOML(ex, "10s")))
	startReplyBackend(t, "keep", ex, false, "svc.*")
	c := h.Dial(t, n, h.UniqueID("tok"))
	call := func(id int) {
		t.Helper()
		c.Send(t, fmt.Sprintf(`{"id":%d,"method":"svc.x"}`, id))
		if p := payloadOf(t, c.NextFrame(t, wait)); p.By != "keep" {
			t.Fatalf("answered by %q, want the old route's service", p.By)
		}
	}
	call(1)
	missing := h.UniqueID("nosuch")
	for i, tc := range []struct{ toml, want string }{
		{`
[[routes]]
match = "svc.*"
exchange = "x"
routing_key = "{token}.{method}"
`, "{token}"},
		{"[ws]\nmax_inflight = 0\n", "ws.max_inflight"},
		{fmt.Sprintf(`
[[routes]]
match = "svc.*"
exchange = %q
`, missing), missing},
	} {
		before := strings.Count(n.Logs(), "configuration reload rejected")
		rewrite(t, n, tc.toml)
		h.Eventually(t, wait, "the rejection", func() bool { return strings.Count(n.Logs(), "configuration reload rejected") > before })
		if logs := n.Logs(); !strings.Contains(logs[strings.LastIndex(logs, "configuration reload rejected"):], tc.want) {
			t.Errorf("rejection %d does not name %q:\n%s", i, tc.want, logs)
		}
		call(2 + i)
	}
	if code, _ := n.Get(t, "/readyz"); code != 200 {
		t.Errorf("readyz %d after rejected reloads, want 200", code)
	}
}
