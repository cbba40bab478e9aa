package integration

import (
	"bufio"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/piped-dev/piped/telemetry"
	h "github.com/piped-dev/piped/test/harness"
)

// closedWith waits for c to be closed and returns the close frame's code and
// text (-1 when the connection ended without one).
func closedWith(t *testing.T, c *h.Client) (int, string) {
	t.Helper()
	select {
	case <-c.Closed():
	case <-time.After(wait):
		t.Fatalf("connection not closed within %v", wait)
	}
	if ce, ok := c.Err().(*websocket.CloseError); ok {
		return ce.Code, ce.Text
	}
	return -1, ""
}

// pongNext checks that c is open and that nothing is queued for it: the
// answer to a ping is its very next frame.
func pongNext(t *testing.T, c *h.Client) {
	t.Helper()
	c.Send(t, `{"method":"ping"}`)
	if got := string(c.Next(t, wait)); got != `{"type":"event","event":"pong"}` {
		t.Fatalf("got %s, want the pong (and nothing before it)", got)
	}
}

// dialLogged dials node n (started with PIPED_LOG_LEVEL=debug) for token
// and returns the client with its connection id, read from the debug line
// the node logs when it registers a connection: the id is not shown to
// clients, and the log carries it with the token's hash, never the token.
// Connections of one token must be dialled one after the other.
func dialLogged(t *testing.T, n *h.Node, token string) (*h.Client, string) {
	t.Helper()
	before := connectionIDs(n, token)
	c := h.Dial(t, n, token)
	var id string
	h.Eventually(t, wait, "the connection's id in the node's log", func() bool {
		ids := connectionIDs(n, token)
		if len(ids) == len(before)+1 {
			id = ids[len(ids)-1]
			return true
		}
		return false
	})
	if !strings.HasPrefix(id, n.ID+".") {
		t.Fatalf("connection id %q does not start with the node id %s", id, n.ID)
	}
	return c, id
}

// connectionIDs returns the ids of token's connections registered on n so
// far, in order, from n's JSON log.
func connectionIDs(n *h.Node, token string) []string {
	hash := telemetry.TokenHash(token)
	var ids []string
	sc := bufio.NewScanner(strings.NewReader(n.Logs()))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var line struct {
			Msg        string `json:"msg"`
			Connection string `json:"connection"`
			TokenHash  string `json:"token_hash"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "connection registered" && line.TokenHash == hash {
			ids = append(ids, line.Connection)
		}
	}
	return ids
}

// A disconnect published to the shared mass exchange closes every
// connection of the token on every node, with the backend's code and
// reason, after what was already queued for them; other tokens stay.
func TestDisconnectByTokenAcrossNodes(t *testing.T) {
	t.Parallel()
	a := h.StartNode(t)
	b := h.StartNode(t, h.WithMass(a.Mass))
	user, quiet := h.UniqueID("user"), h.UniqueID("quiet")
	clients := []*h.Client{h.Dial(t, a, user), h.Dial(t, a, user), h.Dial(t, b, user), h.Dial(t, b, user)}
	others := []*h.Client{h.Dial(t, a, quiet), h.Dial(t, b, quiet)}
	for _, n := range []*h.Node{a, b} {
		h.Eventually(t, wait, "connections registered", func() bool { return n.Metric(t, "piped_connections") == 3 })
	}
	// An event and the disconnect, in this order: the event arrives first.
	h.PublishMany(t, a.Mass, "", []amqp.Publishing{
		{Body: []byte(`{"type":"event","token":"` + user + `","event":"bye"}`)},
		{Body: []byte(`{"type":"disconnect","token":"` + user + `","code":4321,"reason":"logged out everywhere"}`)},
	})
	for i, c := range clients {
		if got := string(c.Next(t, wait)); got != `{"type":"event","event":"bye"}` {
			t.Fatalf("client %d got %s before the close, want the event", i, got)
		}
		if code, text := closedWith(t, c); code != 4321 || text != "logged out everywhere" {
			t.Errorf("client %d closed with %d %q, want 4321 %q", i, code, text, "logged out everywhere")
		}
	}
	for _, c := range others {
		pongNext(t, c)
	}
	for _, n := range []*h.Node{a, b} {
		h.Eventually(t, wait, "disconnects counted on "+n.ID, func() bool {
			return n.Metric(t, `piped_disconnects_total{reason="disconnected"}`) == 2 &&
				n.Metric(t, `piped_control_messages_total{outcome="ok",type="disconnect"}`) == 1 &&
				n.Metric(t, "piped_connections") == 1
		})
	}

	// Without code and reason: 4001 "disconnected". A code outside
	// 4000–4999 gets the same default, and is counted.
	again := []*h.Client{h.Dial(t, a, user), h.Dial(t, b, user)}
	for _, n := range []*h.Node{a, b} {
		h.Eventually(t, wait, "reconnected", func() bool { return n.Metric(t, "piped_connections") == 2 })
	}
	h.Publish(t, a.Mass, "", amqp.Publishing{Body: []byte(`{"type":"disconnect","token":"` + user + `","code":1000}`)})
	for i, c := range again {
		if code, text := closedWith(t, c); code != 4001 || text != "disconnected" {
			t.Errorf("client %d closed with %d %q, want 4001 disconnected", i, code, text)
		}
	}
	for _, c := range others {
		pongNext(t, c)
	}
	for _, n := range []*h.Node{a, b} {
		h.Eventually(t, wait, "the bad code counted on "+n.ID, func() bool {
			return n.Metric(t, `piped_control_messages_total{outcome="bad_code",type="disconnect"}`) == 1
		})
	}
}

// "connection" addresses one connection of a token: an event reaches it
// alone, a disconnect closes it alone.
func TestControlByConnection(t *testing.T) {
	t.Parallel()
	n := h.StartNode(t, h.WithEnv("PIPED_LOG_LEVEL=debug"))
	token := h.UniqueID("tok")
	first, firstID := dialLogged(t, n, token)
	second, secondID := dialLogged(t, n, token)
	if firstID == secondID {
		t.Fatalf("two connections with one id %s", firstID)
	}
	if strings.Contains(n.Logs(), token) {
		t.Fatal("the node logged the raw token")
	}
	in := "exchange-in-" + n.ID

	// An event for the second connection: only it gets it, "connection" included.
	h.Publish(t, in, "", amqp.Publishing{Body: []byte(`{"type":"event","token":"` + token + `","connection":"` + secondID + `","event":"only-you"}`)})
	if got, want := string(second.Next(t, wait)), `{"type":"event","connection":"`+secondID+`","event":"only-you"}`; got != want {
		t.Fatalf("second got %s, want %s", got, want)
	}
	pongNext(t, first)
	// The connection id with another token reaches nobody.
	h.Publish(t, in, "", amqp.Publishing{Body: []byte(`{"type":"event","token":"someone-else","connection":"` + secondID + `","event":"x"}`)})

	// A disconnect of the first connection: the second stays.
	h.Publish(t, in, "", amqp.Publishing{Body: []byte(`{"type":"disconnect","token":"` + token + `","connection":"` + firstID + `","reason":"this tab"}`)})
	if code, text := closedWith(t, first); code != 4001 || text != "this tab" {
		t.Fatalf("first closed with %d %q, want 4001 %q", code, text, "this tab")
	}
	pongNext(t, second)
	h.Eventually(t, wait, "one connection left", func() bool {
		return n.Metric(t, "piped_connections") == 1 &&
			n.Metric(t, `piped_backend_messages_dropped_total{reason="no_connection"}`) == 1
	})
	// An event to the token still reaches every connection it has left.
	h.Publish(t, in, "", amqp.Publishing{Body: []byte(`{"type":"event","token":"` + token + `","event":"all"}`)})
	if got := string(second.Next(t, wait)); got != `{"type":"event","event":"all"}` {
		t.Fatalf("second got %s", got)
	}
}

// A broadcast on the mass exchange reaches every client of every token on
// every node, exactly once; on one node's in-exchange, that node's alone.
func TestBroadcastAcrossNodes(t *testing.T) {
	t.Parallel()
	a := h.StartNode(t)
	b := h.StartNode(t, h.WithMass(a.Mass))
	t1, t2, t3 := h.UniqueID("t1"), h.UniqueID("t2"), h.UniqueID("t3")
	onA := []*h.Client{h.Dial(t, a, t1), h.Dial(t, a, t1), h.Dial(t, a, t3)}
	onB := []*h.Client{h.Dial(t, b, t2), h.Dial(t, b, t3)}
	h.Eventually(t, wait, "connections registered", func() bool {
		return a.Metric(t, "piped_connections") == 3 && b.Metric(t, "piped_connections") == 2
	})
	h.Publish(t, a.Mass, "", amqp.Publishing{Body: []byte(`{"type":"broadcast","token":"ignored","event":"maintenance","payload":{"in":"5m","n":1.50}}`)})
	want := `{"type":"event","event":"maintenance","payload":{"in":"5m","n":1.50}}`
	for i, c := range append(append([]*h.Client(nil), onA...), onB...) {
		if got := string(c.Next(t, wait)); got != want {
			t.Fatalf("client %d got %s, want %s", i, got, want)
		}
		pongNext(t, c) // once
	}

	h.Publish(t, "exchange-in-"+b.ID, "", amqp.Publishing{Body: []byte(`{"type":"broadcast","event":"b-only"}`)})
	for i, c := range onB {
		if got := string(c.Next(t, wait)); got != `{"type":"event","event":"b-only"}` {
			t.Fatalf("client %d on b got %s", i, got)
		}
	}
	for _, c := range onA {
		pongNext(t, c)
	}
	h.Eventually(t, wait, "broadcasts counted", func() bool {
		return a.Metric(t, `piped_control_messages_total{outcome="ok",type="broadcast"}`) == 1 &&
			b.Metric(t, `piped_control_messages_total{outcome="ok",type="broadcast"}`) == 2
	})
}

// A type the node does not know, or none, is never forwarded to clients:
// it is dropped and counted, and so is a malformed control message. Events
// and results still reach the token.
func TestUnknownTypeDropped(t *testing.T) {
	t.Parallel()
	n := h.StartNode(t)
	token := h.UniqueID("tok")
	c := h.Dial(t, n, token)
	h.Eventually(t, wait, "connection registered", func() bool { return n.Metric(t, "piped_connections") == 1 })
	h.PublishMany(t, "exchange-in-"+n.ID, "", []amqp.Publishing{
		{Body: []byte(`{"type":"response","token":"` + token + `","payload":1}`)},
		{Body: []byte(`{"token":"` + token + `","event":"no type"}`)},
		{Body: []byte(`{"type":"Disconnect","token":"` + token + `"}`)},
		{Body: []byte(`{"type":"broadcast","event":5}`)},
		{Body: []byte(`{"type":"disconnect","token":"` + token + `","code":"4001"}`)},
		{Body: []byte(`{"type":"event","token":"` + token + `","event":"after"}`)},
		{Body: []byte(`{"type":"result","token":"` + token + `","id":42}`)},
	})
	if got := string(c.Next(t, wait)); got != `{"type":"event","event":"after"}` {
		t.Fatalf("got %s, want the event published after the dropped messages", got)
	}
	if got := string(c.Next(t, wait)); got != `{"type":"result","id":42}` {
		t.Fatalf("got %s, want the unprompted result", got)
	}
	pongNext(t, c)
	h.Eventually(t, wait, "drops counted", func() bool {
		return n.Metric(t, `piped_backend_messages_dropped_total{reason="unknown_type"}`) == 3 &&
			n.Metric(t, `piped_backend_messages_dropped_total{reason="bad_control"}`) == 2 &&
			n.Metric(t, "piped_events_total") == 1
	})
	logs := n.Logs()
	if !strings.Contains(logs, "dropped backend message of unknown type") || !strings.Contains(logs, "dropped malformed control message") {
		t.Errorf("drops not logged:\n%s", logs)
	}
}
