package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	amqp "github.com/rabbitmq/amqp091-go"

	h "github.com/piped-dev/piped/test/harness"
)

// notice is a lifecycle notice as a backend decodes it from queue-out-{id}.
type notice struct {
	Type, Method, Token, Node, Connection string
	ID                                    *string
	Code                                  int
	Reason                                string
	Connections                           []struct{ Token, Connection string }
	Seq                                   *int
	Last                                  *bool

	d amqp.Delivery
}

// outQueue consumes node n's queue-out-{id} as a seed-style backend does,
// until the test ends.
func outQueue(t *testing.T, n *h.Node) <-chan amqp.Delivery {
	t.Helper()
	ch := h.Channel(t)
	ds, err := ch.Consume("queue-out-"+n.ID, "", true, false, false, false, nil)
	if err != nil {
		t.Fatalf("consume queue-out-%s: %v", n.ID, err)
	}
	return ds
}

// nextNotice returns the next message of ds that is a notice of method,
// skipping notices of other methods and failing on anything else.
func nextNotice(t *testing.T, ds <-chan amqp.Delivery, method string, within time.Duration) notice {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case d := <-ds:
			var nt notice
			if err := json.Unmarshal(d.Body, &nt); err != nil {
				t.Fatalf("message in queue-out is not JSON: %s", d.Body)
			}
			if !strings.HasPrefix(nt.Method, "$") {
				t.Fatalf("unexpected message in queue-out while waiting for %s: %s", method, d.Body)
			}
			if nt.Method != method {
				continue
			}
			nt.d = d
			return nt
		case <-deadline:
			t.Fatalf("no %s notice within %v", method, within)
			return notice{}
		}
	}
}

// connIDOf matches the connection ids of node n.
func connIDOf(n *h.Node) *regexp.Regexp {
	return regexp.MustCompile(`^` + regexp.QuoteMeta(n.ID) + `\.[0-9a-f]{16}$`)
}

// With lifecycle.connect and lifecycle.disconnect, a seed-style backend
// sees in queue-out-{id} a $connect notice for every connection before its
// calls, and a $disconnect with the same connection id, the close code and
// the reason when it ends — however it ends.
func TestLifecycleConnectDisconnectNotices(t *testing.T) {
	t.Parallel()
	n := h.StartNode(t, h.WithEnv("PIPED_LIFECYCLE_CONNECT=true", "PIPED_LIFECYCLE_DISCONNECT=true", "PIPED_WS_MAX_MESSAGE_BYTES=1024"))
	ds := outQueue(t, n)
	ids := connIDOf(n)
	token := h.UniqueID("tok")

	c := h.Dial(t, n, token)
	c.Send(t, `{"id":1,"method":"user.get"}`)
	conn := nextNotice(t, ds, "$connect", wait)
	if conn.Type != "connect" || conn.Token != token || conn.Node != n.ID || !ids.MatchString(conn.Connection) || conn.ID != nil {
		t.Fatalf("$connect notice %s", conn.d.Body)
	}
	want := `{"type":"connect","method":"$connect","token":"` + token + `","node":"` + n.ID + `","connection":"` + conn.Connection + `"}`
	if string(conn.d.Body) != want {
		t.Fatalf("$connect body\n%s\nwant\n%s", conn.d.Body, want)
	}
	d := conn.d
	if d.Exchange != "exchange-out-"+n.ID || d.RoutingKey != "$connect" || d.ContentType != "application/json" ||
		d.AppId != "piped" || d.Headers["x-piped-node"] != n.ID || d.ReplyTo != "" || d.CorrelationId != "" || d.Expiration != "" {
		t.Fatalf("$connect properties: exchange %q key %q %+v", d.Exchange, d.RoutingKey, d)
	}
	// The call comes after the notice of its connection.
	select {
	case call := <-ds:
		var m struct{ Method, Token string }
		if json.Unmarshal(call.Body, &m); m.Method != "user.get" || m.Token != token {
			t.Fatalf("after $connect: %s, want the call", call.Body)
		}
	case <-time.After(wait):
		t.Fatal("the call did not arrive")
	}

	// A second connection of the token has an id of its own.
	c2 := h.Dial(t, n, token)
	conn2 := nextNotice(t, ds, "$connect", wait)
	if conn2.Connection == conn.Connection || !ids.MatchString(conn2.Connection) {
		t.Fatalf("second connection id %q (first %q)", conn2.Connection, conn.Connection)
	}

	// The client closes: 1000 client_closed.
	_ = c.WS.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"))
	disc := nextNotice(t, ds, "$disconnect", wait)
	want = `{"type":"disconnect","method":"$disconnect","token":"` + token + `","node":"` + n.ID + `","connection":"` + conn.Connection + `","code":1000,"reason":"client_closed"}`
	if string(disc.d.Body) != want || disc.d.RoutingKey != "$disconnect" {
		t.Fatalf("$disconnect %q %s\nwant\n%s", disc.d.RoutingKey, disc.d.Body, want)
	}

	// The node closes: its code and reason.
	c2.Send(t, `{"method":"x","payload":{"pad":"`+strings.Repeat("a", 2048)+`"}}`)
	if code := c2.CloseCode(t, wait); code != websocket.CloseMessageTooBig {
		t.Fatalf("close code %d, want 1009", code)
	}
	disc2 := nextNotice(t, ds, "$disconnect", wait)
	if disc2.Connection != conn2.Connection || disc2.Code != 1009 || disc2.Reason != "message_too_big" || disc2.Token != token {
		t.Fatalf("$disconnect of the second connection: %s", disc2.d.Body)
	}
	h.Eventually(t, wait, "the notices counted as confirmed", func() bool {
		return n.Metric(t, `piped_notices_total{method="$connect",result="confirmed"}`) == 2 &&
			n.Metric(t, `piped_notices_total{method="$disconnect",result="confirmed"}`) == 2
	})
}

// Without [lifecycle] nothing but calls reaches queue-out.
func TestLifecycleOffByDefault(t *testing.T) {
	t.Parallel()
	n := h.StartNode(t)
	ds := outQueue(t, n)
	c := h.Dial(t, n, h.UniqueID("tok"))
	_ = c.WS.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	c.CloseCode(t, wait)
	c2 := h.Dial(t, n, h.UniqueID("tok"))
	c2.Send(t, `{"method":"marker"}`)
	select {
	case d := <-ds:
		if !strings.Contains(string(d.Body), `"method":"marker"`) {
			t.Fatalf("first message in queue-out: %s, want the call", d.Body)
		}
	case <-time.After(wait):
		t.Fatal("the call did not arrive")
	}
}

// authorizeBackend answers the $connect calls of node n by token prefix:
// "allow-" allows (copying the correlation id), "match-" allows without
// correlation id and without method (matched by token and id), "deny-"
// denies with reason "banned", anything else gets no answer. It sends every
// notice it saw on the returned channel.
func authorizeBackend(t *testing.T, n *h.Node) <-chan notice {
	t.Helper()
	ds := outQueue(t, n)
	pub := h.Channel(t)
	seen := make(chan notice, 64)
	go func() {
		for d := range ds {
			var nt notice
			if err := json.Unmarshal(d.Body, &nt); err != nil {
				t.Errorf("not JSON in queue-out: %s", d.Body)
				continue
			}
			nt.d = d
			seen <- nt
			if nt.Method != "$connect" || nt.ID == nil {
				continue
			}
			idJSON, _ := json.Marshal(*nt.ID)
			tokJSON, _ := json.Marshal(nt.Token)
			var answer string
			corr := d.CorrelationId
			switch {
			case strings.HasPrefix(nt.Token, "allow-"):
				answer = `{"type":"result","token":` + string(tokJSON) + `,"id":` + string(idJSON) + `,"method":"$connect","payload":{"allow":true}}`
			case strings.HasPrefix(nt.Token, "match-"):
				answer = `{"type":"result","token":` + string(tokJSON) + `,"id":` + string(idJSON) + `,"payload":{"allow":true}}`
				corr = ""
			case strings.HasPrefix(nt.Token, "deny-"):
				answer = `{"type":"result","token":` + string(tokJSON) + `,"id":` + string(idJSON) + `,"payload":{"allow":false,"reason":"banned"}}`
			default:
				continue // silent
			}
			err := pub.Publish("", d.ReplyTo, false, false, amqp.Publishing{ContentType: "application/json", CorrelationId: corr, Body: []byte(answer)})
			if err != nil {
				t.Errorf("answer $connect: %v", err)
				return
			}
		}
	}()
	return seen
}

// dialWithBody dials node n for token and returns the handshake's status
// and, when it was refused, its body.
func dialWithBody(t *testing.T, n *h.Node, token string) (int, string, *websocket.Conn) {
	t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial(n.WSURL(token), nil)
	if err == nil {
		t.Cleanup(func() { ws.Close() })
		return resp.StatusCode, "", ws
	}
	if resp == nil {
		t.Fatalf("dial %s: %v", token, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), nil
}

// With lifecycle.authorize the upgrade waits for the backend's answer to
// the $connect call: allowed (by correlation id, or by token and id) it
// opens with the connection id the backend was asked about; denied it gets
// 403 with the backend's reason; a silent backend gets 503 after
// lifecycle.authorize_timeout, or the upgrade with authorize_failure = allow.
func TestLifecycleAuthorize(t *testing.T) {
	t.Parallel()
	const timeout = 1500 * time.Millisecond
	env := []string{"PIPED_LIFECYCLE_AUTHORIZE=true", "PIPED_LIFECYCLE_DISCONNECT=true",
		"PIPED_LIFECYCLE_AUTHORIZE_TIMEOUT=" + timeout.String()}
	deny := h.StartNode(t, h.WithEnv(env...))
	allow := h.StartNode(t, h.WithEnv(append(env, "PIPED_LIFECYCLE_AUTHORIZE_FAILURE=allow")...))
	seenDeny, seenAllow := authorizeBackend(t, deny), authorizeBackend(t, allow)
	ids := connIDOf(deny)

	// next returns the next notice of method for token.
	next := func(t *testing.T, seen <-chan notice, method, token string) notice {
		t.Helper()
		deadline := time.After(wait)
		for {
			select {
			case nt := <-seen:
				if nt.Method == method && nt.Token == token {
					return nt
				}
			case <-deadline:
				t.Fatalf("no %s notice for %s", method, token)
				return notice{}
			}
		}
	}

	for _, prefix := range []string{"allow-", "match-"} {
		t.Run(prefix+"allowed", func(t *testing.T) {
			token := h.UniqueID(prefix + "tok")
			status, body, ws := dialWithBody(t, deny, token)
			if status != http.StatusSwitchingProtocols {
				t.Fatalf("upgrade: %d %s", status, body)
			}
			conn := next(t, seenDeny, "$connect", token)
			d := conn.d
			exp, _ := strconv.Atoi(d.Expiration)
			if conn.ID == nil || *conn.ID != conn.Connection || !ids.MatchString(conn.Connection) || d.ReplyTo != "queue-in-"+deny.ID ||
				d.CorrelationId == "" || exp <= 0 || exp > int(timeout.Milliseconds()) || d.RoutingKey != "$connect" {
				t.Fatalf("$connect call %s with %+v", d.Body, d)
			}
			want := `{"type":"connect","method":"$connect","token":"` + token + `","node":"` + deny.ID + `","connection":"` + conn.Connection + `","id":"` + conn.Connection + `"}`
			if string(d.Body) != want {
				t.Fatalf("$connect body\n%s\nwant\n%s", d.Body, want)
			}
			// The connection works, and it is the one the backend allowed.
			if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"id":"p","method":"ping"}`)); err != nil {
				t.Fatal(err)
			}
			_ = ws.SetReadDeadline(time.Now().Add(wait))
			if _, b, err := ws.ReadMessage(); err != nil || !strings.Contains(string(b), "pong") {
				t.Fatalf("ping: %s %v", b, err)
			}
			_ = ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
			disc := next(t, seenDeny, "$disconnect", token)
			if disc.Connection != conn.Connection || disc.Code != 1000 {
				t.Fatalf("$disconnect %s, want connection %s", disc.d.Body, conn.Connection)
			}
		})
	}

	t.Run("denied", func(t *testing.T) {
		token := h.UniqueID("deny-tok")
		status, body, _ := dialWithBody(t, deny, token)
		if status != http.StatusForbidden || body != `{"error":"banned"}` {
			t.Fatalf("upgrade: %d %s, want 403 {\"error\":\"banned\"}", status, body)
		}
		if got := deny.Metric(t, `piped_upgrades_refused_total{reason="unauthorized"}`); got != 1 {
			t.Fatalf("refused{unauthorized} = %v", got)
		}
	})

	t.Run("silent backend, deny", func(t *testing.T) {
		token := h.UniqueID("silent-tok")
		start := time.Now()
		status, body, _ := dialWithBody(t, deny, token)
		if status != http.StatusServiceUnavailable || body != `{"error":"authorization backend did not answer"}` {
			t.Fatalf("upgrade: %d %s, want 503", status, body)
		}
		if waited := time.Since(start); waited < timeout {
			t.Fatalf("refused after %v, before lifecycle.authorize_timeout (%v)", waited, timeout)
		}
		if got := deny.Metric(t, `piped_upgrades_refused_total{reason="authorize_timeout"}`); got != 1 {
			t.Fatalf("refused{authorize_timeout} = %v", got)
		}
		// The backend, which may answer too late, learns that the connection never opened.
		conn := next(t, seenDeny, "$connect", token)
		disc := next(t, seenDeny, "$disconnect", token)
		if disc.Connection != conn.Connection || disc.Reason != "not_opened" {
			t.Fatalf("$disconnect %s after $connect %s", disc.d.Body, conn.d.Body)
		}
		h.Eventually(t, wait, "no call pending", func() bool { return deny.Metric(t, "piped_calls_pending") == 0 })
	})

	t.Run("silent backend, authorize_failure = allow", func(t *testing.T) {
		token := h.UniqueID("silent-tok")
		status, body, ws := dialWithBody(t, allow, token)
		if status != http.StatusSwitchingProtocols {
			t.Fatalf("upgrade: %d %s, want 101", status, body)
		}
		conn := next(t, seenAllow, "$connect", token)
		_ = ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
		disc := next(t, seenAllow, "$disconnect", token)
		if disc.Connection != conn.Connection || disc.Reason != "client_closed" {
			t.Fatalf("$disconnect %s after $connect %s", disc.d.Body, conn.d.Body)
		}
	})
}

// With lifecycle.refresh_interval a node publishes $presence rounds listing
// its open connections; a connection that closed is no longer listed.
func TestLifecyclePresence(t *testing.T) {
	t.Parallel()
	n := h.StartNode(t, h.WithEnv("PIPED_LIFECYCLE_CONNECT=true", "PIPED_LIFECYCLE_DISCONNECT=true",
		"PIPED_LIFECYCLE_REFRESH_INTERVAL=300ms"))
	ds := outQueue(t, n)
	tokA, tokB := h.UniqueID("tok"), h.UniqueID("tok")
	a := h.Dial(t, n, tokA)
	ca := nextNotice(t, ds, "$connect", wait)
	h.Dial(t, n, tokB)
	cb := nextNotice(t, ds, "$connect", wait)
	want := map[string]string{ca.Connection: tokA, cb.Connection: tokB} // connection → token
	if ca.Token != tokA || cb.Token != tokB || len(want) != 2 {
		t.Fatalf("$connect notices %s %s", ca.d.Body, cb.d.Body)
	}

	// round collects one presence round (up to its last notice).
	round := func() map[string]string {
		t.Helper()
		got := map[string]string{}
		for seq := 0; ; seq++ {
			p := nextNotice(t, ds, "$presence", wait)
			if p.Type != "presence" || p.Node != n.ID || p.Seq == nil || p.Last == nil || p.d.RoutingKey != "$presence" {
				t.Fatalf("$presence notice %s", p.d.Body)
			}
			if *p.Seq != seq {
				if seq == 0 {
					seq = -1 // joined in the middle of a round: wait for the next
					continue
				}
				t.Fatalf("$presence seq %d, want %d", *p.Seq, seq)
			}
			for _, c := range p.Connections {
				got[c.Connection] = c.Token
			}
			if *p.Last {
				return got
			}
		}
	}
	// Two rounds in a row list exactly the open connections.
	for i := range 2 {
		if got := round(); !maps.Equal(got, want) {
			t.Fatalf("round %d lists %v, want %v", i, got, want)
		}
	}

	// a closes; once its $disconnect is out, rounds list only b.
	_ = a.WS.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	var gone string
	for {
		d := nextNotice(t, ds, "$disconnect", wait)
		if d.Token == tokA {
			gone = d.Connection
			break
		}
	}
	if gone != ca.Connection {
		t.Fatalf("$disconnect of %s, want %s", gone, ca.Connection)
	}
	delete(want, gone)
	// A round that began before the disconnect may still list a; the next one does not.
	round()
	if got := round(); !maps.Equal(got, want) {
		t.Fatalf("after the close a round lists %v, want %v", got, want)
	}
}

// A route whose pattern starts with "$" takes the lifecycle notices: they
// reach the route's exchange with the method as routing key (the default
// "{method}"), and nothing reaches the node's out-queue, while calls still
// take the default route.
func TestLifecycleNoticesThroughRoute(t *testing.T) {
	t.Parallel()
	ex := h.UniqueID("presence")
	deleteExchangeAtEnd(t, ex)
	n := h.StartNode(t, h.WithConfig(t, `
[lifecycle]
connect = true
disconnect = true

[[routes]]
match = "$*"
exchange = "`+ex+`"
declare = true
type = "topic"
`))
	ch := h.Channel(t)
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"$connect", "$disconnect"} {
		if err := ch.QueueBind(q.Name, key, ex, false, nil); err != nil {
			t.Fatalf("bind %s: %v", key, err)
		}
	}
	ds, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := outQueue(t, n)
	token := h.UniqueID("tok")

	c := h.Dial(t, n, token)
	conn := nextNotice(t, ds, "$connect", wait)
	if conn.d.Exchange != ex || conn.d.RoutingKey != "$connect" || conn.Token != token || !connIDOf(n).MatchString(conn.Connection) {
		t.Fatalf("$connect through the route: exchange %q key %q %s", conn.d.Exchange, conn.d.RoutingKey, conn.d.Body)
	}
	c.Send(t, `{"id":1,"method":"user.get"}`)
	select {
	case call := <-out:
		var m struct{ Method string }
		if json.Unmarshal(call.Body, &m); m.Method != "user.get" {
			t.Fatalf("queue-out got %s, want only the call", call.Body)
		}
	case <-time.After(wait):
		t.Fatal("the call did not reach queue-out (the default route)")
	}
	_ = c.WS.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"))
	disc := nextNotice(t, ds, "$disconnect", wait)
	if disc.d.Exchange != ex || disc.Connection != conn.Connection || disc.Code != 1000 {
		t.Fatalf("$disconnect through the route: exchange %q %s", disc.d.Exchange, disc.d.Body)
	}
	select {
	case m := <-out:
		t.Fatalf("queue-out got %s after the call; notices must take their route", m.Body)
	case <-time.After(300 * time.Millisecond):
	}
}

// Every connection open when the node is SIGTERMed gets its $disconnect
// notice published before the node exits: the hub waits for each notice to
// be queued, and the shutdown flushes queued notices before the broker
// side stops (before, a notice queued after Hub.Close returned could be
// dropped with the session).
func TestDisconnectNoticesAtShutdown(t *testing.T) {
	t.Parallel()
	n := h.StartNode(t, h.WithEnv("PIPED_LIFECYCLE_DISCONNECT=true"))
	const conns = 40
	for i := range conns {
		h.Dial(t, n, h.UniqueID(fmt.Sprintf("tok%d", i)))
	}
	h.Eventually(t, wait, "every connection open", func() bool { return n.Metric(t, "piped_connections") == conns })
	n.Signal(syscall.SIGTERM)
	if code := n.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("exit status %d\n%s", code, n.Logs())
	}
	ch := h.Channel(t)
	q, err := ch.QueueDeclarePassive("queue-out-"+n.ID, true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if q.Messages != conns {
		t.Fatalf("%d $disconnect notices in queue-out-%s after the shutdown, want %d\n%s", q.Messages, n.ID, conns, n.Logs())
	}
}
