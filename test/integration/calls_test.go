package integration

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/piped-dev/piped/examples/echo-backend/echo"
	h "github.com/piped-dev/piped/test/harness"
)

const wait = 10 * time.Second

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	n := h.StartNode(t)
	h.Backend(t, nil, n)
	for _, tc := range []struct {
		name, frame, want string
	}{
		{"with id", `{"id":1,"method":"get-article","payload":{"articleId":1}}`,
			`{"id":1,"type":"result","method":"get-article","payload":{"articleId":1}}`},
		{"string id", `{"id":"a-1","method":"m"}`, `{"id":"a-1","type":"result","method":"m"}`},
		{"id omitted", `{"method":"m","payload":{"x":[1,2]}}`, `{"type":"result","method":"m","payload":{"x":[1,2]}}`},
		{"extra fields dropped", `{"id":2,"method":"m","token":"forged","extra":true}`, `{"id":2,"type":"result","method":"m"}`},
		{"byte exact", `{"id":12345678901234567890123,"method":"m","payload":{"d":1.000000000000000000001,"u":"\u00e9\ud83d\ude00","e":1E400}}`,
			`{"id":12345678901234567890123,"type":"result","method":"m","payload":{"d":1.000000000000000000001,"u":"\u00e9\ud83d\ude00","e":1E400}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := h.Dial(t, n, h.UniqueID("tok"))
			c.Send(t, tc.frame)
			got := c.Next(t, wait)
			if string(got) != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestReplyToDefaultExchange(t *testing.T) {
	t.Parallel()
	n := h.StartNode(t)
	h.Backend(t, func(c *echo.Config) { c.ReplyVia = echo.ReplyViaReplyTo }, n)
	c := h.Dial(t, n, h.UniqueID("tok"))
	c.Send(t, `{"id":7,"method":"m"}`)
	if got, want := string(c.Next(t, wait)), `{"id":7,"type":"result","method":"m"}`; got != want {
		t.Fatalf("got %s want %s", got, want)
	}
}

func TestPing(t *testing.T) {
	t.Parallel()
	n := h.StartNode(t) // no backend: ping never reaches the broker
	c := h.Dial(t, n, h.UniqueID("tok"))
	c.Send(t, `{"method":"ping"}`)
	if got := string(c.Next(t, wait)); got != `{"type":"event","event":"pong"}` {
		t.Fatalf("got %s", got)
	}
	c.Send(t, `{"id":5,"method":"ping"}`)
	if got := string(c.Next(t, wait)); got != `{"type":"event","event":"pong","id":5}` {
		t.Fatalf("got %s", got)
	}
	if q := h.Inspect(t, "queue-out-"+n.ID); q != 0 {
		t.Fatalf("ping was published: queue-out holds %d", q)
	}
}

// Events published to the mass exchange reach every connection of the
// token on every node, and no connection of another token.
func TestEventsAcrossNodes(t *testing.T) {
	t.Parallel()
	a := h.StartNode(t)
	b := h.StartNode(t, h.WithMass(a.Mass))
	token := h.UniqueID("user")
	clients := []*h.Client{h.Dial(t, a, token), h.Dial(t, a, token), h.Dial(t, b, token), h.Dial(t, b, token)}
	other := h.Dial(t, a, h.UniqueID("other"))
	body := `{"type":"event","token":"` + token + `","event":"balance-changed","payload":{"balance":345.55}}`
	h.Publish(t, a.Mass, "", amqp.Publishing{Body: []byte(body)})
	want := `{"type":"event","event":"balance-changed","payload":{"balance":345.55}}`
	for i, c := range clients {
		if got := string(c.Next(t, wait)); got != want {
			t.Fatalf("client %d got %s", i, got)
		}
	}
	other.Quiet(t, 300*time.Millisecond)
}

// An event sent by a backend through the echo backend's "event" method
// arrives before the call's result, on the caller's token only.
func TestEventFromBackend(t *testing.T) {
	t.Parallel()
	n := h.StartNode(t)
	h.Backend(t, nil, n)
	token := h.UniqueID("tok")
	c1, c2 := h.Dial(t, n, token), h.Dial(t, n, token)
	c1.Send(t, `{"id":1,"method":"event","payload":{"event":"hello","payload":{"a":1}}}`)
	if got := string(c1.Next(t, wait)); got != `{"type":"event","event":"hello","payload":{"a":1}}` {
		t.Fatalf("c1 event: %s", got)
	}
	if got := c1.NextJSON(t, wait); string(got["type"]) != `"result"` {
		t.Fatalf("c1 result: %v", got)
	}
	if got := string(c2.Next(t, wait)); got != `{"type":"event","event":"hello","payload":{"a":1}}` {
		t.Fatalf("c2 event: %s", got)
	}
	c2.Quiet(t, 300*time.Millisecond)
}

// Two connections of one token use the same ids: each gets only its own
// results, whether the backend copies the correlation id or not.
func TestResultGoesToCallerOnly(t *testing.T) {
	t.Parallel()
	for _, copyCorr := range []bool{true, false} {
		t.Run(fmt.Sprintf("copy_correlation_id=%v", copyCorr), func(t *testing.T) {
			t.Parallel()
			n := h.StartNode(t)
			h.Backend(t, func(c *echo.Config) { c.CopyCorrelationID = copyCorr }, n)
			token := h.UniqueID("tok")
			a, b := h.Dial(t, n, token), h.Dial(t, n, token)
			for i := range 20 {
				a.Send(t, fmt.Sprintf(`{"id":%d,"method":"m","payload":{"from":"a"}}`, i))
				if !copyCorr {
					// Without correlation ids, calls of one token with the same id
					// and method are told apart only by order, and the echo backend
					// answers concurrently: let each call finish before the twin is
					// made (docs/protocol.md). The original Piped would still have
					// sent every result to both connections.
					if got := string(a.NextJSON(t, wait)["payload"]); got != `{"from":"a"}` {
						t.Fatalf("a got %s", got)
					}
				}
				b.Send(t, fmt.Sprintf(`{"id":%d,"method":"m","payload":{"from":"b"}}`, i))
				if !copyCorr {
					if got := string(b.NextJSON(t, wait)["payload"]); got != `{"from":"b"}` {
						t.Fatalf("b got %s", got)
					}
				}
			}
			if !copyCorr {
				a.Quiet(t, 200*time.Millisecond)
				b.Quiet(t, 200*time.Millisecond)
				if v := n.Metric(t, `piped_results_total{routed_by="match"}`); v != 40 {
					t.Fatalf("results routed by match = %v, want 40", v)
				}
				return
			}
			for _, tc := range []struct {
				c    *h.Client
				from string
			}{{a, "a"}, {b, "b"}} {
				for range 20 {
					m := tc.c.NextJSON(t, wait)
					if got := string(m["payload"]); got != `{"from":"`+tc.from+`"}` {
						t.Fatalf("client %s got someone else's result: %s", tc.from, got)
					}
				}
				tc.c.Quiet(t, 200*time.Millisecond)
			}
			route := "correlation"
			if !copyCorr {
				route = "match"
			}
			if v := n.Metric(t, `piped_results_total{routed_by="`+route+`"}`); v != 40 {
				t.Fatalf("results routed by %s = %v, want 40", route, v)
			}
		})
	}
}

// A result no call waits for (no correlation id, no pending call) goes to
// every connection of the token, as in the original Piped; in-queue
// messages keep every byte but the token.
func TestInQueuePassThrough(t *testing.T) {
	t.Parallel()
	n := h.StartNode(t)
	token := h.UniqueID("tok")
	a, b := h.Dial(t, n, token), h.Dial(t, n, token)
	for _, tc := range []struct{ in, want string }{
		{`{"id":99,"type":"result","token":"` + token + `","method":"m","payload":{"n":12345678901234567890.50}}`,
			`{"id":99,"type":"result","method":"m","payload":{"n":12345678901234567890.50}}`},
		{`{ "type" : "event" , "event":"e\u00e9", "token" : "` + token + `" , "payload" : [ 1 , 2 ] }`,
			`{ "type" : "event" , "event":"e\u00e9" , "payload" : [ 1 , 2 ] }`},
		{`{"token":"` + token + `","custom":{"deep":{"x":null}},"type":"event"}`, `{"custom":{"deep":{"x":null}},"type":"event"}`},
	} {
		h.Publish(t, "exchange-in-"+n.ID, "", amqp.Publishing{Body: []byte(tc.in)})
		for i, c := range []*h.Client{a, b} {
			if got := string(c.Next(t, wait)); got != tc.want {
				t.Fatalf("client %d:\ngot  %s\nwant %s", i, got, tc.want)
			}
		}
	}
}

func TestBadFrames(t *testing.T) {
	t.Parallel()
	n := h.StartNode(t) // no backend: what is published stays in queue-out
	c := h.Dial(t, n, h.UniqueID("tok"))
	for _, tc := range []struct{ frame, id, msg string }{
		{`not json`, "", "invalid JSON"},
		{`[1,2]`, "", "frame must be a JSON object"},
		{`{"id":1}`, "1", "method is required"},
		{`{"id":"x","method":5}`, `"x"`, "method must be a string"},
		{`{"id":2,"method":""}`, "2", "method must not be empty"},
		{`{"id":3,"method":"` + strings.Repeat("m", 256) + `"}`, "3", "method is longer than 255 bytes"},
		{`{"id":4,"method":"m","payload":"str"}`, "4", "payload must be a JSON object"},
		{`{"id":{"a":1},"method":"m"}`, `{"a":1}`, "id must be a string or a number"},
		{`{"id":6,"method":"m","payload":` + strings.Repeat("[", 20000) + `}`, "", "invalid JSON"},
	} {
		c.Send(t, tc.frame)
		m := c.NextJSON(t, wait)
		if string(m["type"]) != `"error"` || string(m["id"]) != tc.id {
			t.Fatalf("frame %.40q: got %v", tc.frame, m)
		}
		var e struct{ Code, Message string }
		_ = json.Unmarshal(m["error"], &e)
		if e.Code != "bad_request" || e.Message != tc.msg {
			t.Fatalf("frame %.40q: error %+v, want bad_request %q", tc.frame, e, tc.msg)
		}
	}
	if err := c.WS.WriteMessage(2 /* binary */, []byte(`{"id":1,"method":"m"}`)); err != nil {
		t.Fatal(err)
	}
	m := c.NextJSON(t, wait)
	if !strings.Contains(string(m["error"]), "bad_request") {
		t.Fatalf("binary frame: %v", m)
	}
	if q := h.Inspect(t, "queue-out-"+n.ID); q != 0 {
		t.Fatalf("bad frames were published: queue-out holds %d", q)
	}
	// The connection is still usable: a good call is published.
	c.Send(t, `{"id":10,"method":"m"}`)
	h.Eventually(t, wait, "the good call in queue-out", func() bool { return h.Inspect(t, "queue-out-"+n.ID) == 1 })
	if v := n.Metric(t, `piped_call_errors_total{code="bad_request"}`); v != 10 {
		t.Fatalf("bad_request errors counted %v, want 10", v)
	}
}

func TestMessageTooBigCloses1009(t *testing.T) {
	t.Parallel()
	n := h.StartNode(t, h.WithEnv("PIPED_WS_MAX_MESSAGE_BYTES=2048"))
	c := h.Dial(t, n, h.UniqueID("tok"))
	// The node may cut the socket while the frame is still being written.
	_ = c.WS.WriteMessage(websocket.TextMessage, []byte(`{"id":1,"method":"m","payload":{"s":"`+strings.Repeat("x", 4096)+`"}}`))
	if code := c.CloseCode(t, wait); code != 1009 {
		t.Fatalf("close code %d, want 1009", code)
	}
}

// Whatever a backend sends, the node survives, counts and drops what it
// cannot route, and keeps serving.
func TestMalformedBackendMessages(t *testing.T) {
	t.Parallel()
	n := h.StartNode(t)
	h.Backend(t, nil, n)
	token := h.UniqueID("tok")
	c := h.Dial(t, n, token)
	deep := strings.Repeat(`{"a":`, 100000) + "1" + strings.Repeat("}", 100000)
	huge := `{"token":"` + token + `","type":"event","payload":"` + strings.Repeat("y", 900<<10) + `"}`
	for _, body := range []string{"not json", "[1,2,3]", `"str"`, `{"type":"event"}`, `{"type":"event","token":5}`, `{"type":"result","token":""}`, deep, `{"token":"x"` + strings.Repeat(",", 10)} {
		h.Publish(t, "exchange-in-"+n.ID, "", amqp.Publishing{Body: []byte(body)})
	}
	h.Publish(t, "exchange-in-"+n.ID, "", amqp.Publishing{Body: []byte(huge)})
	c.Send(t, `{"id":1,"method":"garbage"}`) // the backend answers "not json", then the result
	got := c.Next(t, wait)
	if len(got) < 900<<10 {
		t.Fatalf("huge event not delivered: %d bytes", len(got))
	}
	m := c.NextJSON(t, wait)
	if string(m["type"]) != `"result"` {
		t.Fatalf("after garbage: %v", m)
	}
	h.Eventually(t, wait, "drops counted", func() bool {
		return n.Metric(t, `piped_backend_messages_dropped_total{reason="not_json"}`) == 4 && // not json, deep, truncated, garbage
			n.Metric(t, `piped_backend_messages_dropped_total{reason="not_object"}`) == 2 &&
			n.Metric(t, `piped_backend_messages_dropped_total{reason="no_token"}`) == 3
	})
	if code, _ := n.Get(t, "/healthz"); code != 200 {
		t.Fatalf("healthz %d", code)
	}
}
