package integration

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	h "github.com/piped-dev/piped/test/harness"
)

// The Node.js example backend (examples/node-backend, amqplib), run as a
// real `node` process against a real node: every call, whatever its id
// (strings, non-ASCII, numbers beyond 2^53 that JSON.parse would round), gets
// exactly one answer carrying its exact id and payload, on the calling
// connection only; the event it publishes through the mass exchange reaches
// every connection of the token; every answer copies the call's
// correlation_id and continues its trace (same trace id, new span id, which
// the backend also logs); and SIGTERM stops it cleanly (exit 0).
func TestNodeBackend(t *testing.T) {
	t.Parallel()
	const timeout = 2 * time.Second
	dir := nodeBackendDir(t)
	n := h.StartNode(t, h.WithEnv(fmt.Sprintf("PIPED_REQUESTS_TIMEOUT=%v", timeout)))
	// Copies of everything published to the node's exchanges: the calls as
	// the backend gets them, and the backend's answers and events.
	callsTap := nodeBackendTap(t, "exchange-out-"+n.ID)
	answersTap := nodeBackendTap(t, "exchange-in-"+n.ID)
	backend := nodeBackendStart(t, dir, n)
	poison(t, n) // before every call below: the backend must survive it and answer them all
	token := h.UniqueID("tok")
	caller, other := h.Dial(t, n, token), h.Dial(t, n, token)

	calls := []struct {
		name    string
		id      string // as the client sends it; "" for none
		method  string
		payload string
	}{
		{"string id", `"s-1"`, "echo", `{"case":0}`},
		{"string id with a slash", `"a/1"`, "echo", `{"case":1,"path":"a/b"}`},
		{"non-ASCII string id", `"é-😀"`, "echo", `{"case":2,"text":"héllo ✓ 😀"}`},
		{"escaped string id", `"\u00e9-3"`, "echo", `{"case":3,"text":"\u00e9"}`},
		{"small number", `4`, "echo", `{"case":4}`},
		{"integer beyond 2^64", `12345678901234567890`, "echo", `{"case":5,"n":12345678901234567890}`},
		{"2^53 + 1", `9007199254740993`, "echo", `{"case":6,"n":9007199254740993}`},
		{"fraction with exponent", `1.50e3`, "echo", `{"case":7, "spaced" : [1, 2.0]}`},
		{"no id", ``, "echo", `{"case":8}`},
		{"event", `"ev-9"`, "event", `{"case":9,"event":"news","payload":{"big":12345678901234567890,"text":"ünïcode"}}`},
	}
	const event = `{"type":"event","event":"news","payload":{"big":12345678901234567890,"text":"ünïcode"}}`

	traceIDs := map[string]string{} // call's id (as sent) → the trace id its client frame started
	var want []string               // what the caller must receive, in any order
	start := time.Now()
	for _, c := range calls {
		tid := nodeBackendHex(t, 16)
		traceIDs[c.id] = tid
		frame := `{"method":"` + c.method + `","payload":` + c.payload + `,"traceparent":"00-` + tid + `-` + nodeBackendHex(t, 8) + `-01"}`
		result := `{"type":"result","method":"` + c.method + `","payload":` + c.payload + `}`
		if c.id != "" {
			frame = `{"id":` + c.id + `,` + frame[1:]
			result = `{"id":` + c.id + `,` + result[1:]
		}
		caller.Send(t, frame)
		want = append(want, result)
	}
	want = append(want, event)

	// Past the timeout (and a margin) nothing else may come: a ping on each
	// connection must be answered by the next frame after the answers.
	time.Sleep(time.Until(start.Add(timeout + 1500*time.Millisecond)))
	caller.Send(t, `{"method":"ping"}`)
	other.Send(t, `{"method":"ping"}`)
	const pong = `{"type":"event","event":"pong"}`
	got := nodeBackendUntilPong(t, caller, pong)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("caller got:\n  %s\nwant exactly (in any order):\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	if got := nodeBackendUntilPong(t, other, pong); !slices.Equal(got, []string{event}) {
		t.Errorf("the token's other connection got:\n  %s\nwant only the event:\n  %s", strings.Join(got, "\n  "), event)
	}

	// Each answer copies its call's correlation_id, and continues its trace.
	type published struct {
		id, correlationID, traceID, spanID string
	}
	byCorrelation := map[string]published{} // the calls
	var eventCall published
	for range calls {
		d := nodeBackendNext(t, callsTap, "a call on exchange-out-"+n.ID)
		var call struct{ ID json.RawMessage }
		if err := json.Unmarshal(d.Body, &call); err != nil {
			t.Fatalf("published call %s: %v", d.Body, err)
		}
		p := published{id: string(call.ID), correlationID: d.CorrelationId}
		p.traceID, p.spanID = nodeBackendTraceparent(t, d)
		if p.traceID != traceIDs[p.id] {
			t.Fatalf("call %s: trace id %s in its headers, want the client's %s", p.id, p.traceID, traceIDs[p.id])
		}
		byCorrelation[p.correlationID] = p
		if strings.Contains(string(d.Body), `"method":"event"`) {
			eventCall = p
		}
	}
	logs := backend.logs()
	for range len(calls) + 1 { // the results and the event
		d := nodeBackendNext(t, answersTap, "an answer on exchange-in-"+n.ID)
		if bytes.HasPrefix(d.Body, []byte(`{"id":"poison"`)) {
			// The deep poison call: Node's JSON.parse does not recurse, so the
			// backend answers it (the node drops the answer: no call waits).
			d = nodeBackendNext(t, answersTap, "an answer on exchange-in-"+n.ID)
		}
		tid, sid := nodeBackendTraceparent(t, d)
		if bytes.HasPrefix(d.Body, []byte(`{"type":"event"`)) {
			if d.CorrelationId != "" || tid != eventCall.traceID || sid == eventCall.spanID {
				t.Errorf("event: correlation_id %q, traceparent ids %s-%s; want none, and trace %s with a span other than the call's %s",
					d.CorrelationId, tid, sid, eventCall.traceID, eventCall.spanID)
			}
			if !strings.Contains(logs, "event=news event_span_id="+sid) {
				t.Errorf("the backend's log does not name the event's span %s", sid)
			}
			continue
		}
		call, ok := byCorrelation[d.CorrelationId]
		if !ok {
			t.Errorf("answer %s: correlation_id %q is not a call's (or answers one twice)", d.Body, d.CorrelationId)
			continue
		}
		delete(byCorrelation, d.CorrelationId)
		if tid != call.traceID || sid == call.spanID {
			t.Errorf("answer to %s: traceparent ids %s-%s, want trace %s with a new span (not the call's %s)", call.id, tid, sid, call.traceID, call.spanID)
		}
		if line := "trace_id=" + tid + " span_id=" + sid + " parent_span_id=" + call.spanID; !strings.Contains(logs, line) {
			t.Errorf("answer to %s: the backend's log has no %q", call.id, line)
		}
	}
	if strings.Contains(logs, token) {
		t.Errorf("the backend logged the raw token")
	}

	// SIGTERM: it stops consuming, closes its connection and exits 0.
	if code := backend.stop(t); code != 0 || !strings.Contains(backend.logs(), `msg="node-backend: stopped"`) {
		t.Errorf("after SIGTERM the backend exited %d, want 0 after logging that it stopped", code)
	}
}

// nodeBackendDir returns the example's directory, failing the test with what
// to install when node or the example's npm packages are missing.
func nodeBackendDir(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("node (Node.js) is not installed: apt-get install nodejs npm (Debian's packages; .ci/run installs them)")
	}
	dir, err := filepath.Abs(filepath.Join("..", "..", "examples", "node-backend"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "amqplib")); err != nil {
		t.Fatalf("examples/node-backend/node_modules is missing amqplib: run `npm ci --prefix examples/node-backend` (make test and .ci/run do it)")
	}
	return dir
}

// nodeBackendProc is a running `node backend.js`.
type nodeBackendProc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited

	out h.LockedBuffer // stdout and stderr
}

func (p *nodeBackendProc) logs() string { return p.out.String() }

// stop sends SIGTERM and returns the exit code (-1 when it had to be killed).
func (p *nodeBackendProc) stop(t *testing.T) int {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(wait):
		t.Errorf("the node backend did not exit within %v of SIGTERM", wait)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	return p.cmd.ProcessState.ExitCode()
}

// nodeBackendStart starts the example for node n and waits until it consumes
// n's calls; it is stopped when the test ends.
func nodeBackendStart(t *testing.T, dir string, n *h.Node) *nodeBackendProc {
	t.Helper()
	p := &nodeBackendProc{done: make(chan struct{})}
	p.cmd = exec.Command("node", filepath.Join(dir, "backend.js"),
		"--amqp-url", h.AMQPURL(), "--nodes", n.ID, "--mass-exchange", n.Mass, "--log-level", "debug")
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start node backend: %v", err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.stop(t)
		}
		if t.Failed() {
			t.Logf("node backend log:\n%s", p.logs())
		}
	})
	h.Eventually(t, wait, "the node backend consuming", func() bool {
		select {
		case <-p.done:
			t.Fatalf("the node backend exited: %v\n%s", p.cmd.ProcessState, p.logs())
		default:
		}
		return strings.Contains(p.logs(), `msg="node-backend: consuming"`)
	})
	return p
}

// nodeBackendTap binds a queue of the test's own to the fanout exchange and
// returns its deliveries.
func nodeBackendTap(t *testing.T, exchange string) <-chan amqp.Delivery {
	t.Helper()
	ch := h.Channel(t)
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q.Name, "", exchange, false, nil); err != nil {
		t.Fatalf("bind a tap to %s: %v", exchange, err)
	}
	d, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func nodeBackendNext(t *testing.T, tap <-chan amqp.Delivery, what string) amqp.Delivery {
	t.Helper()
	select {
	case d := <-tap:
		return d
	case <-time.After(wait):
		t.Fatalf("no %s within %v", what, wait)
		return amqp.Delivery{}
	}
}

// nodeBackendTraceparent returns the trace and span id of d's traceparent header.
func nodeBackendTraceparent(t *testing.T, d amqp.Delivery) (traceID, spanID string) {
	t.Helper()
	tp, _ := d.Headers["traceparent"].(string)
	parts := strings.Split(tp, "-")
	if len(parts) != 4 || parts[0] != "00" || len(parts[1]) != 32 || len(parts[2]) != 16 {
		t.Fatalf("message %s: traceparent header %q, want 00-{32 hex}-{16 hex}-{flags}", d.Body, tp)
	}
	return parts[1], parts[2]
}

// nodeBackendUntilPong returns the frames c receives before pong.
func nodeBackendUntilPong(t *testing.T, c *h.Client, pong string) []string {
	t.Helper()
	var got []string
	for {
		b := string(c.Next(t, wait))
		if b == pong {
			return got
		}
		got = append(got, b)
	}
}

func nodeBackendHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
