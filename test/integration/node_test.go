package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	amqp "github.com/rabbitmq/amqp091-go"

	h "github.com/piped-dev/piped/test/harness"
)

// The node declares the original Piped's topology: durable fanout
// exchanges, durable queues and their bindings, including mass → in.
func TestTopology(t *testing.T) {
	t.Parallel()
	n := h.StartNode(t)
	ch := h.Channel(t)
	for _, ex := range []string{"exchange-in-" + n.ID, "exchange-out-" + n.ID, n.Mass} {
		if err := ch.ExchangeDeclarePassive(ex, "fanout", true, false, false, false, nil); err != nil {
			t.Fatalf("exchange %s: %v", ex, err)
		}
	}
	// Same arguments as the node: no conflict. Other arguments: 406.
	if _, err := ch.QueueDeclare("queue-out-"+n.ID, true, false, false, false, nil); err != nil {
		t.Fatalf("queue-out must have no arguments (backends declare it so): %v", err)
	}
	if _, err := ch.QueueDeclare("queue-in-"+n.ID, true, false, false, false, amqp.Table{"x-expires": int64(30 * 60 * 1000)}); err != nil {
		t.Fatalf("queue-in must carry x-expires 30m: %v", err)
	}
	// Bindings: an event through mass reaches a client; a call reaches queue-out.
	token := h.UniqueID("tok")
	c := h.Dial(t, n, token)
	h.Publish(t, n.Mass, "", amqp.Publishing{Body: []byte(`{"type":"event","token":"` + token + `","event":"x"}`)})
	c.Next(t, wait)
	c.Send(t, `{"id":1,"method":"m"}`)
	h.Eventually(t, wait, "call in queue-out", func() bool { return h.Inspect(t, "queue-out-"+n.ID) == 1 })
}

// A published call carries the documented AMQP properties.
func TestCallProperties(t *testing.T) {
	t.Parallel()
	n := h.StartNode(t, h.WithEnv("PIPED_REQUESTS_TIMEOUT=7s"))
	token := h.UniqueID("tok")
	c := h.Dial(t, n, token)
	c.Send(t, `{"id":1,"method":"get","payload":{"a":1},"other":2}`)
	conn, err := amqp.Dial(h.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, _ := conn.Channel()
	var d amqp.Delivery
	h.Eventually(t, wait, "call in queue-out", func() bool {
		var ok bool
		d, ok, _ = ch.Get("queue-out-"+n.ID, true)
		return ok
	})
	if got, want := string(d.Body), `{"id":1,"method":"get","token":"`+token+`","payload":{"a":1}}`; got != want {
		t.Fatalf("body %s want %s", got, want)
	}
	if d.ContentType != "application/json" || d.CorrelationId == "" || d.MessageId == "" ||
		d.ReplyTo != "queue-in-"+n.ID || d.Timestamp.IsZero() || d.Expiration != "7000" || d.Headers["x-piped-node"] != n.ID {
		t.Fatalf("properties: %+v", d)
	}
}

func TestHealthAndMetrics(t *testing.T) {
	t.Parallel()
	n := h.StartNode(t)
	h.Backend(t, nil, n)
	if code, body := n.Get(t, "/healthz"); code != 200 {
		t.Fatalf("healthz %d %s", code, body)
	}
	if code, body := n.Get(t, "/readyz"); code != 200 || !strings.Contains(body, "ready") {
		t.Fatalf("readyz %d %s", code, body)
	}
	token := h.UniqueID("tok")
	clients := []*h.Client{h.Dial(t, n, token), h.Dial(t, n, token), h.Dial(t, n, token)}
	for i, c := range clients {
		for j := range 4 {
			c.Send(t, fmt.Sprintf(`{"id":%d,"method":"m"}`, j))
		}
		for range 4 {
			c.Next(t, wait)
		}
		_ = i
	}
	clients[0].Send(t, `{"id":1}`)
	clients[0].Next(t, wait)
	h.Publish(t, n.Mass, "", amqp.Publishing{Body: []byte(`{"type":"event","token":"` + token + `","event":"x"}`)})
	for _, c := range clients {
		c.Next(t, wait)
	}
	h.Publish(t, "exchange-in-"+n.ID, "", amqp.Publishing{Body: []byte(`nope`)})
	h.Eventually(t, wait, "metrics", func() bool {
		return n.Metric(t, "piped_connections") == 3 &&
			n.Metric(t, "piped_calls_total") == 12 &&
			n.Metric(t, `piped_results_total{routed_by="correlation"}`) == 12 &&
			n.Metric(t, "piped_events_total") == 1 &&
			n.Metric(t, `piped_call_errors_total{code="bad_request"}`) == 1 &&
			n.Metric(t, `piped_backend_messages_dropped_total{reason="not_json"}`) == 1 &&
			n.Metric(t, "piped_ready") == 1
	})
	_ = clients[2].WS.Close()
	h.Eventually(t, wait, "connection gauge drops", func() bool { return n.Metric(t, "piped_connections") == 2 })
}

// The node starts without a broker and reports why it is not ready.
func TestNotReadyWithoutBroker(t *testing.T) {
	t.Parallel()
	port := h.FreePort(t)
	n := h.LaunchNode(t, h.WithEnv(fmt.Sprintf("PIPED_AMQP_URL=amqp://guest:s3cret@127.0.0.1:%d/", port)))
	h.Eventually(t, wait, "healthz", func() bool { code, _ := n.Get(t, "/healthz"); return code == 200 })
	code, body := n.Get(t, "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "reason") {
		t.Fatalf("readyz %d %s", code, body)
	}
	// A call while disconnected is answered at once.
	c := h.Dial(t, n, h.UniqueID("tok"))
	c.Send(t, `{"id":1,"method":"m"}`)
	m := c.NextJSON(t, wait)
	if !strings.Contains(string(m["error"]), `"unavailable"`) || string(m["id"]) != "1" {
		t.Fatalf("got %v", m)
	}
	// The password would be in the lines that name the broker: the start line
	// and the failed connection attempt. Wait for the attempt, then look.
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	var named []string
	h.Eventually(t, wait, "a failed connection attempt logged with the broker's address", func() bool {
		named = named[:0]
		attempt := false
		for _, line := range strings.Split(n.Logs(), "\n") {
			if strings.Contains(line, addr) {
				named = append(named, line)
				attempt = attempt || !strings.Contains(line, "piped node started")
			}
		}
		return attempt
	})
	for _, line := range named {
		if strings.Contains(line, "s3cret") || !strings.Contains(line, "guest:xxxxx@"+addr) {
			t.Errorf("a line naming the broker does not redact its password: %s", line)
		}
	}
	if strings.Contains(n.Logs(), "s3cret") {
		t.Fatalf("the broker password is in the log:\n%s", n.Logs())
	}
}

// An in-queue declared with other arguments stops start-up with a message
// naming the queue.
func TestQueueConflictStopsStartup(t *testing.T) {
	t.Parallel()
	id := h.UniqueID("it")
	conn, err := amqp.Dial(h.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, _ := conn.Channel()
	if _, err := ch.QueueDeclare("queue-in-"+id, true, false, false, false, amqp.Table{"x-max-length": int32(5)}); err != nil {
		t.Fatal(err)
	}
	n := h.LaunchNode(t, h.WithID(id))
	if code := n.Wait(t, 30*time.Second); code == 0 {
		t.Fatalf("node exited 0 despite a conflicting queue")
	}
	if !strings.Contains(n.Logs(), `queue \"queue-in-`+id+`\"`) || !strings.Contains(n.Logs(), "PRECONDITION_FAILED") {
		t.Fatalf("log does not name the queue and the cause:\n%s", n.Logs())
	}
}

func TestBadTokenRefused(t *testing.T) {
	t.Parallel()
	n := h.StartNode(t, h.WithEnv("PIPED_WS_TOKEN_MAX_LENGTH=16"))
	for _, token := range []string{"has%20space", strings.Repeat("a", 17), "semi%3Bcolon"} {
		_, resp, err := websocket.DefaultDialer.Dial(n.WSURL(token), nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("token %q: err %v resp %v", token, err, resp)
		}
	}
}

// 200 connections × 25 calls: every call answered exactly once, with its
// own result.
func TestManyClients(t *testing.T) {
	t.Parallel()
	const conns, calls = 200, 25
	n := h.StartNode(t)
	h.Backend(t, nil, n)
	clients := make([]*h.Client, conns)
	for i := range clients {
		clients[i] = h.Dial(t, n, fmt.Sprintf("tok-%d-%s", i%50, n.ID)) // 4 connections per token
	}
	start := time.Now()
	var wg sync.WaitGroup
	var answered, wrong atomic.Int64
	var maxLatency atomic.Int64
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seen := make(map[int]bool)
			sent := make([]time.Time, calls)
			for j := range calls {
				sent[j] = time.Now()
				c.Send(t, fmt.Sprintf(`{"id":%d,"method":"m","payload":{"c":%d}}`, j, i))
			}
			for range calls {
				var m struct {
					ID      int
					Type    string
					Payload struct{ C int }
				}
				select {
				case b := <-c.Frames():
					if err := json.Unmarshal(b, &m); err != nil || m.Type != "result" || m.Payload.C != i || seen[m.ID] {
						wrong.Add(1)
						continue
					}
					seen[m.ID] = true
					answered.Add(1)
					if l := int64(time.Since(sent[m.ID])); l > maxLatency.Load() {
						maxLatency.Store(l)
					}
				case <-time.After(30 * time.Second):
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if answered.Load() != conns*calls || wrong.Load() != 0 {
		t.Fatalf("answered %d of %d, wrong or duplicate %d", answered.Load(), conns*calls, wrong.Load())
	}
	for _, c := range clients {
		select {
		case b := <-c.Frames():
			t.Fatalf("extra frame: %s", b)
		default:
		}
	}
	t.Logf("%d calls in %v: %.0f calls/s, max latency %v", conns*calls, elapsed, float64(conns*calls)/elapsed.Seconds(), time.Duration(maxLatency.Load()))
}
