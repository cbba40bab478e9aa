package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	amqp "github.com/rabbitmq/amqp091-go"

	h "github.com/piped-dev/piped/test/harness"
)

// tokenKey is the routing key of a token's targeted events, computed as
// docs/routing.md tells backend authors: the first 12 hex digits of the
// SHA-256 of the token.
func tokenKey(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])[:12]
}

// eventsExchange returns a fresh name for amqp.events_exchange, deleted
// when the test ends (after its nodes, whose cleanups run first).
func eventsExchange(t testing.TB) string {
	t.Helper()
	name := h.UniqueID("events")
	t.Cleanup(func() { h.DeleteExchange(t, name) })
	return name
}

// nodeEvents is the name of node n's own exchange of targeted events,
// where the per-token bindings from amqp.events_exchange lead.
func nodeEvents(n *h.Node) string { return "exchange-in-" + n.ID + ":events" }

// targetedNode starts a node with targeted events on exchange and the
// unbind delay, plus opts.
func targetedNode(t testing.TB, exchange string, delay time.Duration, opts ...h.NodeOption) *h.Node {
	t.Helper()
	env := h.WithEnv("PIPED_AMQP_EVENTS_EXCHANGE="+exchange, "PIPED_AMQP_EVENTS_UNBIND_DELAY="+delay.String())
	return h.StartNode(t, append([]h.NodeOption{env}, opts...)...)
}

// publishEvent publishes an event for token to exchange with key.
func publishEvent(t *testing.T, exchange, key, token, event string) {
	t.Helper()
	body := fmt.Sprintf(`{"type":"event","token":%q,"event":%q}`, token, event)
	h.Publish(t, exchange, key, amqp.Publishing{ContentType: "application/json", Body: []byte(body)})
}

// nextEvent returns the name of the next event c receives.
func nextEvent(t *testing.T, c *h.Client) string {
	t.Helper()
	f := c.NextFrame(t, wait)
	if f.Type != "event" {
		t.Fatalf("frame %s, want an event", f.Raw)
	}
	return f.Event
}

// waitBindings polls the broker's bindings of exchange (rabbitmqctl, about
// half a second a call) until they are want.
func waitBindings(t *testing.T, exchange string, want ...string) {
	t.Helper()
	slices.Sort(want)
	deadline := time.Now().Add(wait)
	for {
		got := h.Bindings(t, exchange)
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("bindings of %s: %q, want %q", exchange, got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// With two nodes on one events exchange, an event published there with
// the key of token T reaches T's client on the node that holds T, and the
// other node receives nothing (its in-queue gets no message: an event
// sent to it afterwards through its own exchange is the first and only
// one it counts). The bindings carry the keys, never the tokens.
// exchange-mass keeps working alongside.
func TestTargetedEventsReachOnlyTheHoldingNode(t *testing.T) {
	t.Parallel()
	ex := eventsExchange(t)
	a := targetedNode(t, ex, time.Second)
	b := targetedNode(t, ex, time.Second)
	tokT, tokU := h.UniqueID("tok"), h.UniqueID("tok")
	cT := h.Dial(t, a, tokT)
	cU := h.Dial(t, b, tokU)

	// The bindings exist once the upgrades are answered.
	got := h.Bindings(t, ex)
	want := []string{nodeEvents(a) + " " + tokenKey(tokT), nodeEvents(b) + " " + tokenKey(tokU)}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("bindings of %s right after the upgrades: %q, want %q", ex, got, want)
	}
	// They are transient (exchange to exchange, to a non-durable
	// exchange): none is in the broker's durable route table.
	if d := h.DurableBindings(t, ex); d != 0 {
		t.Fatalf("%d of the bindings of %s are durable, want 0", d, ex)
	}
	for _, n := range []*h.Node{a, b} {
		if got, want := h.Exchange(t, nodeEvents(n)), "false true true fanout"; got != want {
			t.Fatalf("exchange %s: durable auto_delete internal type %q, want %q", nodeEvents(n), got, want)
		}
		if got, want := h.Bindings(t, nodeEvents(n)), []string{"queue-in-" + n.ID + " "}; !slices.Equal(got, want) {
			t.Fatalf("bindings of %s: %q, want %q", nodeEvents(n), got, want)
		}
	}
	for _, bnd := range got {
		if strings.Contains(bnd, tokT) || strings.Contains(bnd, tokU) {
			t.Fatalf("a binding carries a raw token: %q", bnd)
		}
	}
	for _, n := range []*h.Node{a, b} {
		if g, o := n.Metric(t, "piped_event_bindings"), n.Metric(t, `piped_event_binding_ops_total{op="bind"}`); g != 1 || o != 1 {
			t.Fatalf("node %s: piped_event_bindings %v, bind ops %v; want 1 and 1", n.ID, g, o)
		}
	}

	publishEvent(t, ex, tokenKey(tokT), tokT, "for-T")
	if e := nextEvent(t, cT); e != "for-T" {
		t.Fatalf("T's client got %q", e)
	}
	// Node b's in-queue is first in first out: had the event for T reached
	// it, b would have counted it before this one.
	publishEvent(t, "exchange-in-"+b.ID, "", tokU, "marker")
	if e := nextEvent(t, cU); e != "marker" {
		t.Fatalf("U's client got %q, want the marker first", e)
	}
	if ev, dr := b.Metric(t, "piped_events_total"), b.Metric(t, `piped_backend_messages_dropped_total{reason="no_connection"}`); ev != 1 || dr != 0 {
		t.Fatalf("node b counted %v events and dropped %v for want of a connection; want 1 (the marker) and 0", ev, dr)
	}
	if n := h.Inspect(t, "queue-in-"+b.ID); n != 0 {
		t.Fatalf("queue-in-%s holds %d messages", b.ID, n)
	}
	t.Logf("event for T: node %s delivered it; node %s counted only its marker (events %v, no_connection drops 0)",
		a.ID, b.ID, b.Metric(t, "piped_events_total"))

	// exchange-mass as before.
	publishEvent(t, a.Mass, "", tokT, "mass")
	if e := nextEvent(t, cT); e != "mass" {
		t.Fatalf("T's client got %q from exchange-mass", e)
	}
	cU.Quiet(t, 200*time.Millisecond)
}

// Bindings follow connections: the first connection of a token binds it,
// a reconnect within amqp.events_unbind_delay costs no operation, the
// binding goes once the delay has passed after the last connection left,
// and comes back with the next connection.
func TestTargetedEventBindingsFollowConnections(t *testing.T) {
	t.Parallel()
	const delay = 2 * time.Second
	ex := eventsExchange(t)
	n := targetedNode(t, ex, delay)
	tok := h.UniqueID("tok")
	binding := nodeEvents(n) + " " + tokenKey(tok)
	ops := func() (bind, unbind float64) {
		return n.Metric(t, `piped_event_binding_ops_total{op="bind"}`), n.Metric(t, `piped_event_binding_ops_total{op="unbind"}`)
	}

	c1 := h.Dial(t, n, tok)
	waitBindings(t, ex, binding)
	// Gone and back at once: the delay absorbs it.
	_ = c1.WS.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	c1.CloseCode(t, wait)
	c2 := h.Dial(t, n, tok)
	time.Sleep(delay + time.Second) // longer than the delay
	if bind, unbind := ops(); bind != 1 || unbind != 0 {
		t.Fatalf("after a reconnect within the delay: %v binds, %v unbinds; want 1 and 0", bind, unbind)
	}
	waitBindings(t, ex, binding)
	publishEvent(t, ex, tokenKey(tok), tok, "still-bound")
	if e := nextEvent(t, c2); e != "still-bound" {
		t.Fatalf("got %q", e)
	}

	// The last connection leaves: the binding goes after the delay.
	left := time.Now()
	_ = c2.WS.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	c2.CloseCode(t, wait)
	waitBindings(t, ex)
	if gone := time.Since(left); gone < delay {
		t.Fatalf("binding gone %v after the last connection left; want no sooner than the delay %v", gone, delay)
	}
	if bind, unbind := ops(); bind != 1 || unbind != 1 {
		t.Fatalf("%v binds, %v unbinds; want 1 and 1", bind, unbind)
	}
	if g := n.Metric(t, "piped_event_bindings"); g != 0 {
		t.Fatalf("piped_event_bindings %v, want 0", g)
	}

	// The next connection binds again, and events reach it.
	c3 := h.Dial(t, n, tok)
	waitBindings(t, ex, binding)
	publishEvent(t, ex, tokenKey(tok), tok, "bound-again")
	if e := nextEvent(t, c3); e != "bound-again" {
		t.Fatalf("got %q", e)
	}
	if bind, _ := ops(); bind != 2 {
		t.Fatalf("%v binds, want 2", bind)
	}
}

// After the node's broker connections are closed from the broker's side
// (rabbitmqctl close_connection, found by their names "piped <id> consume"
// and "piped <id> publish"), the node reconnects and binds every held
// token again: the test removed T's binding behind the node's back, and
// events for T flow again to the client, which stayed connected. A node
// that stops removes the bindings of its released tokens at once.
func TestTargetedEventsRebindAfterBrokerConnectionsClosed(t *testing.T) {
	t.Parallel()
	ex := eventsExchange(t)
	n := targetedNode(t, ex, 30*time.Second)
	tok, other := h.UniqueID("tok"), h.UniqueID("tok")
	c := h.Dial(t, n, tok)
	c2 := h.Dial(t, n, other)
	queue := nodeEvents(n)
	waitBindings(t, ex, queue+" "+tokenKey(tok), queue+" "+tokenKey(other))

	// Behind the node's back: the binding is lost (as when the broker loses
	// the queue, or the session moves to another broker node).
	ch := h.Channel(t)
	if err := ch.ExchangeUnbind(queue, tokenKey(tok), ex, false, nil); err != nil {
		t.Fatal(err)
	}
	waitBindings(t, ex, queue+" "+tokenKey(other))

	before := n.Metric(t, "piped_broker_connects_total")
	closed := h.CloseBrokerConnections(t, "piped "+n.ID+" consume", "piped "+n.ID+" publish")
	if closed != 2 {
		t.Fatalf("closed %d broker connections of node %s, want 2", closed, n.ID)
	}
	h.Eventually(t, 30*time.Second, "the node reconnected", func() bool {
		return n.Metric(t, "piped_broker_connects_total") > before && n.Metric(t, "piped_ready") == 1
	})
	waitBindings(t, ex, queue+" "+tokenKey(tok), queue+" "+tokenKey(other))
	publishEvent(t, ex, tokenKey(tok), tok, "after-reconnect")
	if e := nextEvent(t, c); e != "after-reconnect" {
		t.Fatalf("got %q", e)
	}
	t.Logf("closed 2 connections; reconnected (piped_broker_connects_total %v → %v), 2 tokens bound again, event delivered",
		before, n.Metric(t, "piped_broker_connects_total"))

	// The node stops: within their 30 s delay, the released tokens'
	// bindings go with it (the in-queue stays until the cleanup).
	_ = c2.WS.Close()
	_ = c.WS.Close()
	n.Stop(t)
	if got := h.Bindings(t, ex); len(got) != 0 {
		t.Fatalf("bindings left by the stopped node: %q", got)
	}
	// Its events exchange stays while its in-queue does, and goes with it
	// (auto-delete: its last binding went), as when x-expires deletes the
	// in-queue of a node that is gone for good.
	if got := h.Exchange(t, queue); got == "" {
		t.Fatalf("exchange %s gone while the in-queue stays", queue)
	}
	if _, err := h.Channel(t).QueueDelete("queue-in-"+n.ID, false, false, false); err != nil {
		t.Fatal(err)
	}
	h.Eventually(t, 10*time.Second, "the node's events exchange went with its in-queue", func() bool {
		return h.Exchange(t, queue) == ""
	})
}

// A backend that publishes an event for a connection's token as soon as it
// receives the connection's $connect notice reaches that connection: the
// binding is made before the notice is published. Twenty connections, each
// with a token of its own, each must get its welcome as its first frame.
func TestTargetedEventOnConnect(t *testing.T) {
	t.Parallel()
	ex := eventsExchange(t)
	n := targetedNode(t, ex, time.Second, h.WithEnv("PIPED_LIFECYCLE_CONNECT=true"))
	ds := outQueue(t, n)
	pub := h.Channel(t)
	backendDone := make(chan struct{})
	t.Cleanup(func() { <-backendDone })
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	go func() {
		defer close(backendDone)
		for {
			select {
			case <-stop:
				return
			case d, ok := <-ds:
				if !ok {
					return
				}
				var nt struct{ Method, Token, Connection string }
				if json.Unmarshal(d.Body, &nt) != nil || nt.Method != "$connect" {
					continue
				}
				body := fmt.Sprintf(`{"type":"event","token":%q,"event":"welcome","payload":{"connection":%q}}`, nt.Token, nt.Connection)
				if err := pub.Publish(ex, tokenKey(nt.Token), false, false, amqp.Publishing{Body: []byte(body)}); err != nil {
					t.Errorf("backend publish: %v", err)
					return
				}
			}
		}
	}()
	for i := range 20 {
		c := h.Dial(t, n, h.UniqueID(fmt.Sprint("tok", i)))
		if e := nextEvent(t, c); e != "welcome" {
			t.Fatalf("connection %d: first event %q, want welcome", i, e)
		}
	}
}
