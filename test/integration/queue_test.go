package integration

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	h "github.com/piped-dev/piped/test/harness"
)

// queueRouteTOML routes "jobs.*" to the topic exchange ex, through the
// queue q of type queueType, which the node declares and binds with
// "jobs.*".
func queueRouteTOML(ex, q, queueType string) string {
	return fmt.Sprintf(`
[[routes]]
match = "jobs.*"
exchange = %q
declare = true
type = "topic"
queue = %q
queue_type = %q
binding_key = "jobs.*"
timeout = "10s"
`, ex, q, queueType)
}

// deleteQueueAtEnd deletes queue when the test ends, after the nodes
// started later have stopped (cleanups run last in, first out).
func deleteQueueAtEnd(t *testing.T, queue string) {
	t.Cleanup(func() {
		ch := h.Channel(t)
		if _, err := ch.QueueDelete(queue, false, false, false); err != nil {
			t.Logf("cleanup: delete queue %s: %v", queue, err)
		}
	})
}

// queueType returns the type of queue as the broker lists it
// (rabbitmqctl list_queues name type), or "" when it is not listed. The
// broker is the shared one, the node rabbitmqctl reaches by default.
func queueType(t *testing.T, queue string) string {
	t.Helper()
	out, err := exec.Command("rabbitmqctl", "-q", "list_queues", "--no-table-headers", "name", "type").CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl list_queues name type (it reads the type of the queue; the test broker must be the local node): %v\n%s", err, out)
	}
	for line := range strings.SplitSeq(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == queue {
			return f[1]
		}
	}
	return ""
}

// A route with queue_type = "quorum": two nodes declare the same quorum
// queue (idempotently) and bind it to the route's exchange; a backend that
// only consumes it (it declares nothing) answers every call through
// reply_to, and each client gets its own result from its own node.
func TestRouteQuorumQueue(t *testing.T) {
	t.Parallel()
	ex, q := h.UniqueID("jobs-ex"), h.UniqueID("jobs-q")
	deleteExchangeAtEnd(t, ex)
	deleteQueueAtEnd(t, q)
	toml := queueRouteTOML(ex, q, "quorum")
	n1 := h.StartNode(t, h.WithConfig(t, toml))
	n2 := h.StartNode(t, h.WithConfig(t, toml))

	if got := queueType(t, q); got != "quorum" {
		t.Fatalf("queue %s has type %q, want quorum (x-queue-type)", q, got)
	}
	// The node's declaration is x-queue-type quorum: a classic declare of it is refused.
	ch := h.Channel(t)
	_, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{"x-queue-type": "classic"})
	if ae, ok := err.(*amqp.Error); !ok || ae.Code != amqp.PreconditionFailed || !strings.Contains(ae.Reason, "'quorum'") {
		t.Fatalf("declaring %s as classic: %v, want 406 naming its quorum type", q, err)
	}

	svc := consumeReplyBackend(t, "jobs", q)
	c1, c2 := h.Dial(t, n1, h.UniqueID("tok")), h.Dial(t, n2, h.UniqueID("tok"))
	for i := range 3 {
		for _, x := range []struct {
			c *h.Client
			n *h.Node
		}{{c1, n1}, {c2, n2}} {
			x.c.Send(t, fmt.Sprintf(`{"id":%d,"method":"jobs.run","payload":{"n":%d}}`, i, i))
			f := x.c.NextFrame(t, wait)
			if p := payloadOf(t, f); string(f.ID) != fmt.Sprint(i) || p.By != "jobs" || p.Node != x.n.ID || p.Key != "jobs.run" {
				t.Fatalf("node %s, call %d: got %s, want the jobs backend's answer for this node on key jobs.run", x.n.ID, i, f.Raw)
			}
		}
	}
	byNode := map[string]int{}
	for _, c := range svc.received() {
		if c.Exchange != ex {
			t.Errorf("call on exchange %q, want %s", c.Exchange, ex)
		}
		byNode[c.Node]++
	}
	if byNode[n1.ID] != 3 || byNode[n2.ID] != 3 || len(byNode) != 2 {
		t.Errorf("the quorum queue's backend got calls by node %v, want 3 from each node", byNode)
	}
	for _, n := range []*h.Node{n1, n2} {
		if m := h.Inspect(t, "queue-out-"+n.ID); m != 0 {
			t.Errorf("queue-out-%s holds %d calls; routed calls must not go there", n.ID, m)
		}
	}
	if m := h.Inspect(t, q); m != 0 {
		t.Errorf("%s holds %d calls after every call was answered", q, m)
	}
}

// A route's queue that exists with another type stops the node at start
// (exit status 1) with the topology-conflict error naming the route, the
// queue and the command that deletes it; the queue is left as it was.
func TestRouteQueueConflictStopsStartup(t *testing.T) {
	t.Parallel()
	ex, q := h.UniqueID("jobs-ex"), h.UniqueID("jobs-q")
	deleteExchangeAtEnd(t, ex)
	deleteQueueAtEnd(t, q)
	ch := h.Channel(t)
	if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil { // a classic queue
		t.Fatal(err)
	}
	n := h.LaunchNode(t, h.WithConfig(t, queueRouteTOML(ex, q, "quorum")))
	if code := n.Wait(t, 30*time.Second); code != 1 {
		t.Fatalf("exit code %d, want 1\n%s", code, n.Logs())
	}
	logs := n.Logs()
	for _, want := range []string{
		"topology conflicts with what exists on the broker",
		`routes[0] (match \"jobs.*\"): queue \"` + q + `\" exists with other settings`,
		"a durable quorum queue",
		"rabbitmqctl delete_queue " + q,
		"inequivalent arg 'x-queue-type'",
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("log does not say %q:\n%s", want, logs)
		}
	}
	if got := queueType(t, q); got != "classic" {
		t.Errorf("queue %s has type %q after the refused declare, want classic as it was", q, got)
	}
}
