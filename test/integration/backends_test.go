package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	h "github.com/piped-dev/piped/test/harness"
)

// The example backends in other languages (examples/python-backend,
// examples/php-backend), each run as a real process of its interpreter
// against two real nodes that share a mass exchange, with real WebSocket
// clients. Node A's backend copies correlation_id; node B's runs with
// --no-correlation-id, like a backend written for the original Piped, so
// that its results are matched with their calls by id value, whatever the
// language's JSON encoder made of the id.

// exampleBackend is one language's example backend.
type exampleBackend struct {
	// check fails when the interpreter or its AMQP package is missing.
	check func() error
	// command runs the backend from the repository root with args.
	command func(root string, args ...string) *exec.Cmd
	// ids are the ids the test calls with, as the language re-encodes them.
	ids []backendID
}

// backendID is one id case: as the client sends it and as the backend's
// standard JSON encoder writes it back (the exact bytes the client gets).
type backendID struct {
	name, sent, back string
	// correlationOnly: the backend changes the id's value, so only a
	// result that carries the call's correlation_id finds its call; the
	// case is left out on node B.
	correlationOnly bool
}

// checkPython fails when Debian's python3 with pika is missing.
func checkPython() error {
	const py = "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		return fmt.Errorf("%s is missing (%v): install Debian's python3 and python3-pika (apt-get install -y python3-pika); .ci/run installs them", py, err)
	}
	if out, err := exec.Command(py, "-c", "import pika").CombinedOutput(); err != nil {
		return fmt.Errorf("%s cannot import pika (%v: %s): install Debian's python3-pika (apt-get install -y python3-pika); .ci/run installs it", py, err, bytes.TrimSpace(out))
	}
	return nil
}

// The README's inline Python backend, as a user copies it out of README.md,
// survives a poison message and answers the call after it.
func TestReadmePythonBackend(t *testing.T) {
	t.Parallel()
	if err := checkPython(); err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	const start = "#!/usr/bin/python3\n# Answers every call of node NODE_ID"
	i := bytes.Index(readme, []byte(start))
	if i < 0 {
		t.Fatal("README.md has no inline Python backend starting " + strconv.Quote(start))
	}
	src := readme[i:]
	src = src[:bytes.Index(src, []byte("\n```"))+1]
	file := filepath.Join(t.TempDir(), "backend.py")
	if err := os.WriteFile(file, src, 0o644); err != nil {
		t.Fatal(err)
	}
	n := h.StartNode(t)
	cmd := exec.Command("/usr/bin/python3", file)
	cmd.Env = append(os.Environ(), "NODE_ID="+n.ID, "AMQP_URL="+h.AMQPURL())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var exitErr error
	go func() { exitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	poison(t, n)
	c := h.Dial(t, n, h.UniqueID("tok"))
	c.Send(t, `{"id":1,"method":"m","payload":{"x":1}}`)
	select {
	case <-exited:
		t.Fatalf("the README backend exited (%v):\n%s", exitErr, out.String())
	case f := <-c.Frames():
		if fr := h.ParseFrame(t, f); fr.Type != "result" || string(fr.ID) != "1" {
			t.Fatalf("got %s, want the result of call 1\n%s", f, out.String())
		}
	case <-time.After(wait):
		t.Fatalf("no answer within %v\n%s", wait, out.String())
	}
}

func TestPythonBackend(t *testing.T) {
	t.Parallel()
	testExampleBackend(t, exampleBackend{
		check: checkPython,
		command: func(root string, args ...string) *exec.Cmd {
			return exec.Command("/usr/bin/python3", append([]string{filepath.Join(root, "examples/python-backend/backend.py")}, args...)...)
		},
		ids: []backendID{
			{name: "slash (kept)", sent: `"a/1"`, back: `"a/1"`},
			{name: "non-ASCII (ensure_ascii)", sent: `"é-1"`, back: `"\u00e9-1"`},
			{name: "astral (surrogate pair)", sent: `"😀"`, back: `"\ud83d\ude00"`},
			{name: "integer", sent: `7`, back: `7`},
			{name: "float re-spelled", sent: `1.50e3`, back: `1500.0`},
			{name: "beyond 2^64 (Python int is exact)", sent: `12345678901234567890`, back: `12345678901234567890`},
			{name: "beyond 2^64, 23 digits", sent: `12345678901234567890123`, back: `12345678901234567890123`},
		},
	})
}

func TestPHPBackend(t *testing.T) {
	t.Parallel()
	testExampleBackend(t, exampleBackend{
		check: func() error {
			php, err := exec.LookPath("php")
			if err != nil {
				return fmt.Errorf("php is missing: install Debian's php-cli and php-amqp (apt-get install -y php-cli php-amqp); .ci/run installs them")
			}
			out, err := exec.Command(php, "-m").CombinedOutput()
			if err != nil || !regexp.MustCompile(`(?mi)^amqp$`).Match(out) {
				return fmt.Errorf("php has no amqp extension (php -m: %v): install Debian's php-amqp (apt-get install -y php-amqp); .ci/run installs it", err)
			}
			return nil
		},
		command: func(root string, args ...string) *exec.Cmd {
			return exec.Command("php", append([]string{filepath.Join(root, "examples/php-backend/backend.php")}, args...)...)
		},
		ids: []backendID{
			{name: "slash (escaped)", sent: `"a/1"`, back: `"a\/1"`},
			{name: "non-ASCII (escaped)", sent: `"é-1"`, back: `"\u00e9-1"`},
			{name: "astral (surrogate pair)", sent: `"😀"`, back: `"\ud83d\ude00"`},
			{name: "integer", sent: `7`, back: `7`},
			{name: "float re-spelled", sent: `1.50e3`, back: `1500`},
			{name: "2^53+1 (PHP int is 64-bit)", sent: `9007199254740993`, back: `9007199254740993`},
			// json_decode makes an integer beyond PHP_INT_MAX a float: the
			// result carries another number. Only correlation_id brings it
			// to its caller; see examples/php-backend/README.md.
			{name: "beyond PHP_INT_MAX (becomes a float)", sent: `12345678901234567890`, back: `1.2345678901234567e+19`, correlationOnly: true},
		},
	})
}

// poison publishes messages no backend can answer straight to
// queue-out-{id}, past the node (which refuses such calls): a call nested
// 5,000 deep, which makes a recursive JSON decoder fail (Python's json
// raised RecursionError and the process exited, and the unacked call came
// back to kill every restart), and bytes that are not JSON. An example
// backend logs and drops them (ack, no requeue) and answers what follows.
func poison(t *testing.T, n *h.Node) {
	t.Helper()
	deep := strings.Repeat(`{"a":`, 5000) + "1" + strings.Repeat("}", 5000)
	h.PublishMany(t, "", "queue-out-"+n.ID, []amqp.Publishing{
		{Body: []byte(`{"id":"poison","method":"m","token":"t","payload":` + deep + `}`)},
		{Body: []byte("\xff\xfe not JSON")},
	})
}

// Trace contexts the clients send (docs/tracing.md: a client may start the
// trace): one sampled, one not, and one for the event call.
const (
	traceSampled   = "4bf92f3577b34da6a3ce929d0e0e4736"
	traceUnsampled = "0af7651916cd43dd8448eb211c80319c"
	traceEvent     = "5c2b4c8a1f1e4d2c9e7b3a6f0d9e8c71"
	clientSpan     = "00f067aa0ba902b7"
)

func testExampleBackend(t *testing.T, b exampleBackend) {
	if err := b.check(); err != nil {
		t.Fatal(err)
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	const timeout = 3 * time.Second
	mass := h.UniqueID("mass")
	env := h.WithEnv(fmt.Sprintf("PIPED_REQUESTS_TIMEOUT=%v", timeout))
	nA := h.StartNode(t, h.WithMass(mass), env)
	nB := h.StartNode(t, h.WithMass(mass), env)
	taps := tap(t, "exchange-out-"+nA.ID, "exchange-in-"+nA.ID)

	backA := startExampleBackend(t, b, root, nA, "--nodes", nA.ID, "--mass-exchange", mass)
	poison(t, nA) // before every call below: the backend must survive it and answer them all
	backB := startExampleBackend(t, b, root, nB, "--nodes", nB.ID, "--mass-exchange", mass, "--no-correlation-id")

	token := h.UniqueID("tok")
	callerA, otherA := h.Dial(t, nA, token), h.Dial(t, nA, token)
	callerB, otherB := h.Dial(t, nB, token), h.Dial(t, nB, token)

	const method = "user/get" // PHP writes it back as "user\/get"
	const payload = `{"text":"é/😀","n":%d}`
	type wantResult struct{ name, id, method, payload string } // id: the exact bytes, "" for none
	send := func(c *h.Client, n *h.Node, ids []backendID) map[string]wantResult {
		want := map[string]wantResult{}
		for i, id := range ids {
			if id.correlationOnly && n == nB {
				continue
			}
			c.Send(t, fmt.Sprintf(`{"id":%s,"method":%q,"payload":`+payload+`}`, id.sent, method, i))
			want[id.back] = wantResult{id.name, id.back, method, fmt.Sprintf(payload, i)}
		}
		c.Send(t, fmt.Sprintf(`{"method":%q,"payload":`+payload+`}`, method, -1))
		want[""] = wantResult{"no id", "", method, fmt.Sprintf(payload, -1)}
		return want
	}
	wantA, wantB := send(callerA, nA, b.ids), send(callerB, nB, b.ids)
	// On A only: the event call and two calls whose clients trace.
	callerA.Send(t, `{"id":"ev-1","method":"event","payload":{"event":"hi","payload":{"n":1,"text":"é"}},"traceparent":"00-`+traceEvent+`-`+clientSpan+`-01"}`)
	callerA.Send(t, `{"id":"tr-1","method":"`+method+`","payload":{"n":-2},"traceparent":"00-`+traceSampled+`-`+clientSpan+`-01"}`)
	callerA.Send(t, `{"id":"tr-0","method":"`+method+`","payload":{"n":-3},"traceparent":"00-`+traceUnsampled+`-`+clientSpan+`-00"}`)
	lastSent := time.Now()
	wantA[`"ev-1"`] = wantResult{"event call", `"ev-1"`, "event", `{"event":"hi","payload":{"n":1,"text":"é"}}`}
	wantA[`"tr-1"`] = wantResult{"sampled trace", `"tr-1"`, method, `{"n":-2}`}
	wantA[`"tr-0"`] = wantResult{"unsampled trace", `"tr-0"`, method, `{"n":-3}`}

	// Every call: exactly one result, on the connection that made it, with
	// the id spelled as the backend's encoder wrote it, and the event, once,
	// on every connection of the token on both nodes.
	results := func(c *h.Client, who string, want map[string]wantResult) {
		t.Helper()
		events := 0
		for left := len(want) + 1; left > 0; left-- {
			f := c.NextFrame(t, wait)
			switch {
			case f.Type == "event" && f.Event == "hi":
				events++
				assertJSON(t, who+": event payload", f.Payload, `{"n":1,"text":"é"}`)
				if strings.Contains(string(f.Raw), token) {
					t.Errorf("%s: the event reached the client with its token: %s", who, f.Raw)
				}
			case f.Type == "result":
				w, ok := want[string(f.ID)]
				if !ok {
					t.Errorf("%s: result with id %s, which no outstanding call has (a duplicate, or a mangled id): %s", who, f.ID, f.Raw)
					continue
				}
				delete(want, string(f.ID))
				if f.Method != w.method {
					t.Errorf("%s: %s: method %q, want %q", who, w.name, f.Method, w.method)
				}
				assertJSON(t, who+": "+w.name+": payload", f.Payload, w.payload)
			default:
				t.Errorf("%s: unexpected frame %s", who, f.Raw)
			}
		}
		if events != 1 {
			t.Errorf("%s: %d events, want 1", who, events)
		}
		for _, w := range want {
			t.Errorf("%s: no result for the call %s (want id %s)", who, w.name, w.id)
		}
	}
	callsA, callsB := len(wantA), len(wantB)
	results(callerA, "caller on node A (correlation_id copied)", wantA)
	results(callerB, "caller on node B (no correlation_id)", wantB)
	for who, c := range map[string]*h.Client{"other connection on node A": otherA, "other connection on node B": otherB} {
		f := c.NextFrame(t, wait)
		if f.Type != "event" || f.Event != "hi" {
			t.Errorf("%s: got %s, want only the event", who, f.Raw)
		}
	}

	// The backend continued each traced call's trace: its result (and its
	// event) carry a traceparent with the client's trace id and flags and
	// a span id that is neither the client's nor the node's.
	for _, c := range []struct{ kind, call, key, trace, flags string }{
		{"result", `"tr-1"`, `"tr-1"`, traceSampled, "01"},
		{"result", `"tr-0"`, `"tr-0"`, traceUnsampled, "00"},
		{"result", `"ev-1"`, `"ev-1"`, traceEvent, "01"},
		{"event", `"ev-1"`, "hi", traceEvent, "01"},
	} {
		call, ans := taps.await(t, "call", c.call), taps.await(t, c.kind, c.key)
		nodeTP, ansTP := headerString(call.Headers, "traceparent"), headerString(ans.Headers, "traceparent")
		if traceparentField(nodeTP, 1) != c.trace {
			t.Fatalf("call %s: the node published it with traceparent %q, want trace %s", c.call, nodeTP, c.trace)
		}
		nodeSpan := traceparentField(nodeTP, 2)
		m := regexp.MustCompile(`^00-` + c.trace + `-([0-9a-f]{16})-` + c.flags + `$`).FindStringSubmatch(ansTP)
		switch {
		case m == nil:
			t.Errorf("%s %s: traceparent %q, want 00-%s-<span>-%s (headers %v)", c.kind, c.key, ansTP, c.trace, c.flags, ans.Headers)
		case m[1] == nodeSpan || m[1] == clientSpan || m[1] == strings.Repeat("0", 16):
			t.Errorf("%s %s: span id %s is not the backend's own (the node's is %s, the client's %s)", c.kind, c.key, m[1], nodeSpan, clientSpan)
		}
		if c.kind == "result" && ans.CorrelationId != call.CorrelationId {
			t.Errorf("result %s: correlation_id %q, want the call's %q", c.key, ans.CorrelationId, call.CorrelationId)
		}
	}

	// Past the timeout (and a margin) nothing else may come, neither a
	// timeout error nor a second copy of a result: each connection's next
	// frame is the answer to a ping.
	time.Sleep(time.Until(lastSent.Add(timeout + 1500*time.Millisecond)))
	for _, c := range []*h.Client{callerA, otherA, callerB, otherB} {
		pongNext(t, c)
	}
	for _, n := range []*h.Node{nA, nB} {
		if v := n.Metric(t, `piped_call_errors_total{code="timeout"}`); v != 0 {
			t.Errorf("node %s: %v timeouts, want 0", n.ID, v)
		}
	}
	if v := nA.Metric(t, `piped_results_total{routed_by="correlation"}`); v != float64(callsA) {
		t.Errorf("node A: %v results routed by correlation_id, want %d", v, callsA)
	}
	if v := nB.Metric(t, `piped_results_total{routed_by="match"}`); v != float64(callsB) {
		t.Errorf("node B: %v results matched by id, want %d (its backend copies no correlation_id)", v, callsB)
	}

	// SIGTERM: both stop cleanly, with status 0.
	for _, p := range []*backendProcess{backA, backB} {
		p.stop(t)
	}
}

// backendProcess is a running example backend.
type backendProcess struct {
	cmd  *exec.Cmd
	out  *h.LockedBuffer
	done chan struct{}
}

// startExampleBackend starts b's backend with args and waits until it
// consumes n's queue-out.
func startExampleBackend(t *testing.T, b exampleBackend, root string, n *h.Node, args ...string) *backendProcess {
	t.Helper()
	cmd := b.command(root, append([]string{"--amqp-url", h.AMQPURL()}, args...)...)
	cmd.Dir = root
	p := &backendProcess{cmd: cmd, out: &h.LockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", cmd.Args, err)
	}
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("backend %v output:\n%s", cmd.Args[1:], p.out.String())
		}
	})
	queue := "queue-out-" + n.ID
	h.Eventually(t, 30*time.Second, "the backend consuming "+queue, func() bool {
		select {
		case <-p.done:
			t.Fatalf("backend %v exited early: %v\n%s", cmd.Args[1:], cmd.ProcessState, p.out.String())
		default:
		}
		return consumers(t, queue) > 0
	})
	return p
}

// stop sends SIGTERM and expects a clean exit.
func (p *backendProcess) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(wait):
		t.Fatalf("backend %v did not exit within %v of SIGTERM", p.cmd.Args[1:], wait)
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("backend %v exited with status %d after SIGTERM, want 0:\n%s", p.cmd.Args[1:], code, p.out.String())
	}
}

// consumers returns the consumer count of queue (a passive declare on a
// connection of its own, so it can be polled).
func consumers(t *testing.T, queue string) int {
	t.Helper()
	conn, err := amqp.Dial(h.AMQPURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		return 0 // not declared yet
	}
	return q.Consumers
}

// tapQueue receives a copy of everything published to some fanout
// exchanges, through a queue of the test's own bound to them, and sorts it
// into calls (by raw id), results (by raw id) and events (by name).
type tapQueue struct {
	ds   <-chan amqp.Delivery
	seen map[string]amqp.Delivery // "call "+id, "result "+id, "event "+name
}

func tap(t *testing.T, exchanges ...string) *tapQueue {
	t.Helper()
	ch := h.Channel(t)
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, ex := range exchanges {
		if err := ch.QueueBind(q.Name, "", ex, false, nil); err != nil {
			t.Fatalf("bind a tap to %s: %v", ex, err)
		}
	}
	ds, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &tapQueue{ds: ds, seen: map[string]amqp.Delivery{}}
}

// await returns the first message of kind ("call", "result" or "event")
// with key (the raw id, or the event's name), waiting for it.
func (q *tapQueue) await(t *testing.T, kind, key string) amqp.Delivery {
	t.Helper()
	deadline := time.After(wait)
	for {
		if d, ok := q.seen[kind+" "+key]; ok {
			return d
		}
		select {
		case d := <-q.ds:
			var m struct {
				ID    json.RawMessage `json:"id"`
				Type  string          `json:"type"`
				Event string          `json:"event"`
			}
			_ = json.Unmarshal(d.Body, &m)
			k := "call " + string(m.ID) // a call has no type
			switch m.Type {
			case "result":
				k = "result " + string(m.ID)
			case "event":
				k = "event " + m.Event
			}
			if _, dup := q.seen[k]; !dup {
				q.seen[k] = d
			}
		case <-deadline:
			t.Fatalf("no %s %s reached the tap within %v", kind, key, wait)
		}
	}
}

func headerString(hs amqp.Table, k string) string {
	switch v := hs[k].(type) {
	case string:
		return v
	case []byte:
		return string(v)
	}
	return ""
}

// traceparentField returns field i (0 version, 1 trace id, 2 span id,
// 3 flags) of a traceparent, or "".
func traceparentField(tp string, i int) string {
	f := strings.Split(tp, "-")
	if len(f) != 4 {
		return ""
	}
	return f[i]
}

// assertJSON checks that got is the same JSON value as want.
func assertJSON(t *testing.T, what string, got json.RawMessage, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Errorf("%s: %s is not JSON: %v", what, got, err)
		return
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("%s: want %s: %v", what, want, err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s: %s, want %s", what, got, want)
	}
}
