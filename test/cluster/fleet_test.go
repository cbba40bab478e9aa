//go:build cluster

package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/piped-dev/piped/internal/rabbitnode"
	"github.com/piped-dev/piped/routing"
	"github.com/piped-dev/piped/test/harness"
)

// Settings of the nodes in this package.
const (
	requestTimeout = 3 * time.Second
	reconnectMax   = time.Second
)

// nodeIDFor returns a fresh node id whose first broker (routing.StartIndex
// over the cluster's addresses) is brokers[index].
func nodeIDFor(index int) string {
	for {
		if id := harness.UniqueID("cl"); routing.StartIndex(id, len(brokers)) == index {
			return id
		}
	}
}

// startNodes starts one Piped node per element of starts, on amqp.urls
// listing every broker, each with an id that makes it start on
// brokers[starts[i]], all sharing the mass exchange mass; ids, when given,
// are used instead of fresh ones. It waits until all are ready.
func startNodes(t *testing.T, mass string, ids []string, starts ...int) []*harness.Node {
	t.Helper()
	var nodes []*harness.Node
	for i, at := range starts {
		id := nodeIDFor(at)
		if i < len(ids) {
			id = ids[i]
		}
		nodes = append(nodes, harness.LaunchNode(t, harness.WithID(id), harness.WithMass(mass), harness.WithEnv(
			"PIPED_AMQP_URLS="+brokerURLs(),
			"PIPED_REQUESTS_TIMEOUT="+requestTimeout.String(),
			"PIPED_AMQP_RECONNECT_MAX="+reconnectMax.String(),
		)))
	}
	for _, n := range nodes {
		n.WaitReady(t, 30*time.Second)
	}
	return nodes
}

// echoProc is the example echo backend running as a process.
type echoProc struct {
	cmd  *exec.Cmd
	logs harness.LockedBuffer
	done chan struct{}
}

// startEcho runs the echo backend binary for ids on brokers[0], which the
// tests never stop, with the node's non-durable queues (--transient-queues),
// until the test ends, and waits until it consumes.
func startEcho(t *testing.T, mass string, ids ...string) *echoProc {
	t.Helper()
	e := &echoProc{done: make(chan struct{})}
	e.cmd = exec.Command(echoBackend, "--amqp-url", brokers[0].URL(), "--nodes", strings.Join(ids, ","),
		"--mass-exchange", mass, "--transient-queues")
	e.cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none")
	e.cmd.Stdout, e.cmd.Stderr = &e.logs, &e.logs
	if err := e.cmd.Start(); err != nil {
		t.Fatalf("start echo-backend: %v", err)
	}
	go func() { _ = e.cmd.Wait(); close(e.done) }()
	t.Cleanup(func() {
		_ = e.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-e.done:
		case <-time.After(15 * time.Second):
			_ = e.cmd.Process.Kill()
			<-e.done
		}
		if t.Failed() {
			t.Logf("echo-backend log:\n%s", e.logs.String())
		}
	})
	harness.Eventually(t, 30*time.Second, "the echo backend to consume", func() bool {
		select {
		case <-e.done:
			t.Fatalf("echo-backend exited:\n%s", e.logs.String())
		default:
		}
		return e.consumed() > 0
	})
	return e
}

// consumed is how many sessions of the backend got to consume.
func (e *echoProc) consumed() int { return strings.Count(e.logs.String(), `msg="echo: consuming"`) }

// ctl runs rabbitmqctl on brokers[0] and fails the test on an error.
func ctl(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := brokers[0].Ctl(ctx, args...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return out
}

// connectionBroker returns the index of the broker that holds the consume
// connection of Piped node id (client-provided name "piped ID consume"),
// told by its server port, or -1 when it has none.
func connectionBroker(t *testing.T, id string) int {
	t.Helper()
	var conns []struct {
		Port  int     `json:"port"`
		Props [][]any `json:"client_properties"` // [name, type, value]
	}
	if err := json.Unmarshal([]byte(ctl(t, "list_connections", "port", "client_properties", "--formatter", "json")), &conns); err != nil {
		t.Fatalf("list_connections: %v", err)
	}
	for _, c := range conns {
		for _, p := range c.Props {
			if len(p) == 3 && p[0] == "connection_name" && p[2] == "piped "+id+" consume" {
				for i, b := range brokers {
					if b.Port == c.Port {
						return i
					}
				}
			}
		}
	}
	return -1
}

// queueBroker returns the index of the broker that hosts queue (it lists
// it with list_queues --local), or -1 when no running broker does.
func queueBroker(t *testing.T, queue string) int {
	t.Helper()
	for i, b := range brokers {
		if !rabbitnode.PortOpen(b.Port) {
			continue // stopped
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		out, err := b.Ctl(ctx, "list_queues", "--local", "name", "--formatter", "json")
		cancel()
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		var queues []struct{ Name string }
		if err := json.Unmarshal([]byte(out), &queues); err != nil {
			t.Fatalf("list_queues: %v", err)
		}
		for _, q := range queues {
			if q.Name == queue {
				return i
			}
		}
	}
	return -1
}

// waitBroker waits until node id's consume connection is on broker want.
func waitBroker(t *testing.T, id string, want int) {
	t.Helper()
	got := -1
	deadline := time.Now().Add(20 * time.Second)
	for {
		if got = connectionBroker(t, id); got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s: consume connection on broker %d, want %d", id, got, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// event is an event for token as a backend publishes it to exchange-mass.
func event(token, name string, seq int) []byte {
	return fmt.Appendf(nil, `{"type":"event","event":%q,"token":%q,"payload":{"seq":%d}}`, name, token, seq)
}
