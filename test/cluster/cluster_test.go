//go:build cluster

package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/piped-dev/piped/config"
	"github.com/piped-dev/piped/test/harness"
)

// Each node connects to the broker routing.StartIndex gives for its id,
// declares its in-queue there, and its log names that broker's address
// without the password.
func TestNodesSpreadOverBrokers(t *testing.T) {
	nodes := startNodes(t, harness.UniqueID("mass"), nil, 0, 1, 2)
	for i, n := range nodes {
		waitBroker(t, n.ID, i)
		if got := queueBroker(t, "queue-in-"+n.ID); got != i {
			t.Errorf("node %s: queue-in on broker %d, want %d", n.ID, got, i)
		}
		addr := config.RedactURL(brokers[i].URL())
		if !strings.Contains(n.Logs(), `"msg":"broker connected","url":"`+addr+`"`) {
			t.Errorf("node %s: no log line names %s:\n%s", n.ID, addr, n.Logs())
		}
		if strings.Contains(n.Logs(), "guest:guest") {
			t.Errorf("node %s: its log shows the password", n.ID)
		}
	}
}

// An event published to exchange-mass through any broker node reaches the
// token's connection on every Piped node, whatever broker it uses, once.
func TestMassEventsReachEveryNode(t *testing.T) {
	mass := harness.UniqueID("mass")
	nodes := startNodes(t, mass, nil, 0, 1, 2)
	token := harness.UniqueID("tok")
	var clients []*harness.Client
	for _, n := range nodes {
		clients = append(clients, harness.Dial(t, n, token))
	}
	for i := range brokers {
		harness.PublishTo(t, brokers[i].URL(), mass, "", amqp.Publishing{ContentType: "application/json", Body: event(token, "hello", i)})
	}
	for ci, c := range clients {
		var seqs []int
		for range brokers {
			f := c.NextFrame(t, 10*time.Second)
			var p struct{ Seq int }
			_ = json.Unmarshal(f.Payload, &p)
			if f.Type != "event" || f.Event != "hello" {
				t.Fatalf("client on node %d: %s, want the event", ci, f.Raw)
			}
			seqs = append(seqs, p.Seq)
		}
		slices.Sort(seqs)
		if !slices.Equal(seqs, []int{0, 1, 2}) {
			t.Errorf("client on node %d (broker %d) got events %v, want one through each broker [0 1 2]", ci, ci, seqs)
		}
	}
	for _, c := range clients {
		c.Quiet(t, 300*time.Millisecond)
	}
}

// Calls from clients of nodes on every broker are answered by one echo
// backend, whose broker is one of them.
func TestCallsAnswered(t *testing.T) {
	mass := harness.UniqueID("mass")
	nodes := startNodes(t, mass, nil, 0, 1, 2)
	startEcho(t, mass, nodes[0].ID, nodes[1].ID, nodes[2].ID)
	for i, n := range nodes {
		c := harness.Dial(t, n, harness.UniqueID("tok"))
		for id := 1; id <= 20; id++ {
			c.Send(t, fmt.Sprintf(`{"id":%d,"method":"m","payload":{"n":%d}}`, id, i))
			f := c.NextFrame(t, 10*time.Second)
			if f.Type != "result" || string(f.ID) != fmt.Sprint(id) || string(f.Payload) != fmt.Sprintf(`{"n":%d}`, i) {
				t.Fatalf("node on broker %d, call %d: %s", i, id, f.Raw)
			}
		}
	}
}

// The broker node that two Piped nodes use stops under steady call traffic:
// they go not ready, connect to the next address, declare their queues
// there and are ready again; their clients stay connected; every call gets
// exactly one answer (a result, or unavailable while the node had no
// broker). Nodes on other brokers stay ready. The broker node then starts
// again, is a member of the cluster, and a node that starts on it works.
func TestFailover(t *testing.T) {
	const stopped = 2 // the broker stopped; brokers[0] (the echo backend's) stays up
	next := (stopped + 1) % len(brokers)
	mass := harness.UniqueID("mass")
	late := nodeIDFor(stopped) // starts once the broker is back
	nodes := startNodes(t, mass, nil, stopped, stopped, 0, 1)
	moved, others := nodes[:2], nodes[2:]
	ids := []string{late}
	for _, n := range nodes {
		ids = append(ids, n.ID)
	}
	echo := startEcho(t, mass, ids...)
	for _, n := range moved {
		waitBroker(t, n.ID, stopped)
		if got := queueBroker(t, "queue-in-"+n.ID); got != stopped {
			t.Fatalf("node %s: queue-in on broker %d, want %d", n.ID, got, stopped)
		}
	}
	var watches []*harness.ReadyWatch
	for _, n := range nodes {
		watches = append(watches, harness.WatchReady(t, n))
	}
	tr := dialTraffic(t, nodes, 3)
	tr.start()
	time.Sleep(2 * time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stopAt := time.Now()
	if err := brokers[stopped].Stop(ctx); err != nil {
		t.Fatalf("stop broker %d: %v", stopped, err)
	}
	t.Logf("broker %d (%s) stopped in %v", stopped, brokers[stopped].Name, time.Since(stopAt).Round(time.Millisecond))

	var lastUp time.Time
	for i, n := range moved {
		w := watches[i]
		harness.Eventually(t, 30*time.Second, "node "+n.ID+" to be not ready and ready again", func() bool {
			_, up := w.Span(stopAt)
			return !up.IsZero()
		})
		down, up := w.Span(stopAt)
		t.Logf("node %s: /readyz not ready %v after the stop, ready again %v later", n.ID,
			down.Sub(stopAt).Round(time.Millisecond), up.Sub(down).Round(time.Millisecond))
		if up.After(lastUp) {
			lastUp = up
		}
		// Usually the next address; one further when the first attempt
		// there met the old queue still going (declared, then gone before
		// the bind: the node retries on the address after).
		at := connectionBroker(t, n.ID)
		if at < 0 || at == stopped {
			t.Fatalf("node %s: consume connection on broker %d after the failover", n.ID, at)
		}
		t.Logf("node %s: failed over to broker %d (the next address is %d)", n.ID, at, next)
		if got := queueBroker(t, "queue-in-"+n.ID); got != at {
			t.Errorf("node %s: queue-in on broker %d after the failover, want %d", n.ID, got, at)
		}
		if addr := config.RedactURL(brokers[at].URL()); !strings.Contains(n.Logs(), `"msg":"broker connected","url":"`+addr+`"`) {
			t.Errorf("node %s: no log line names %s after the failover", n.ID, addr)
		}
	}
	for i, n := range others {
		if down, _ := watches[len(moved)+i].Span(stopAt); !down.IsZero() {
			t.Errorf("node %s on broker %d was not ready at %s:%s", n.ID, i, down.Format("15:04:05.000"), watches[len(moved)+i])
		}
	}

	// Calls go on past the recovery; then every call must have its answer.
	time.Sleep(3 * time.Second)
	tr.stopSending()
	stoppedAt := time.Now()
	time.Sleep(requestTimeout + 2*time.Second) // any answer, or duplicate, would be in by now
	tr.stop()
	total := tr.count(all, time.Time{})
	ofMoved := tr.count(on(moved[0].ID, moved[1].ID), time.Time{})
	ofOthers := tr.count(on(others[0].ID, others[1].ID), time.Time{})
	t.Logf("failover, all calls: %s", total)
	t.Logf("failover, calls on the 2 nodes that failed over: %s", ofMoved)
	t.Logf("failover, calls on the 2 nodes of other brokers: %s", ofOthers)
	if total.lost > 0 {
		t.Errorf("%d calls got no answer, e.g. %v", total.lost, total.lostIDs)
	}
	if total.dup > 0 {
		t.Errorf("%d calls were answered more than once", total.dup)
	}
	if len(total.stray) > 0 {
		t.Errorf("%d stray frames, e.g. %.5q", len(total.stray), total.stray)
	}
	if len(total.broken) > 0 {
		t.Errorf("clients lost their connection: %v", total.broken)
	}
	if after := tr.count(all, lastUp.Add(time.Second)); after.made == 0 || after.results != after.made {
		t.Errorf("calls from a second after the recovery: %s; want all results", after)
	} else {
		t.Logf("calls from a second after the recovery until %s: %s", stoppedAt.Format("15:04:05.000"), after)
	}
	t.Logf("echo backend sessions: %d (it reconnects when the queues of the stopped broker go)", echo.consumed())
	for i, n := range moved {
		t.Logf("node %s /readyz:%s", n.ID, watches[i])
		if got := n.Metric(t, "piped_ready"); got != 1 {
			t.Errorf("node %s: piped_ready %v after the failover, want 1", n.ID, got)
		}
		for _, line := range strings.Split(n.Logs(), "\n") {
			if strings.Contains(line, "in-queue was gone") {
				t.Logf("node %s: %s", n.ID, line)
			}
		}
	}

	// The broker node comes back and rejoins; a node starting on it works.
	startAt := time.Now()
	if err := brokers[stopped].Start(ctx); err != nil {
		t.Fatalf("start broker %d again: %v", stopped, err)
	}
	t.Logf("broker %d started again in %v", stopped, time.Since(startAt).Round(time.Millisecond))
	var status struct {
		RunningNodes []string `json:"running_nodes"`
	}
	if err := json.Unmarshal([]byte(ctl(t, "cluster_status", "--formatter", "json")), &status); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(status.RunningNodes, brokers[stopped].Name) || len(status.RunningNodes) != len(brokers) {
		t.Fatalf("cluster_status running_nodes %v, want all %d brokers with %s", status.RunningNodes, len(brokers), brokers[stopped].Name)
	}
	t.Logf("cluster_status running_nodes %v", status.RunningNodes)
	n := startNodes(t, mass, []string{late}, stopped)[0]
	waitBroker(t, late, stopped)
	if got := queueBroker(t, "queue-in-"+late); got != stopped {
		t.Errorf("node %s: queue-in on broker %d, want %d", late, got, stopped)
	}
	c := harness.Dial(t, n, harness.UniqueID("tok"))
	c.Send(t, `{"id":1,"method":"m","payload":{"back":true}}`)
	if f := c.NextFrame(t, 10*time.Second); f.Type != "result" || string(f.Payload) != `{"back":true}` {
		t.Fatalf("call on the node of the restarted broker: %s", f.Raw)
	}
}
