// Package harness starts real Piped nodes (the built binary, as separate
// processes), the example echo backend and WebSocket clients for the
// integration and fault tests. Every node gets a unique id and its own mass
// exchange, and its broker objects are deleted when the test ends, so the
// tests can run again and again on one broker.
package harness

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/piped-dev/piped/examples/echo-backend/echo"
)

// AMQPURL is the broker the tests use: $PIPED_TEST_AMQP_URL or the local default.
func AMQPURL() string {
	if u := os.Getenv("PIPED_TEST_AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

// Main builds the piped binary into a temporary directory (make build-piped), checks that the
// broker answers (a missing broker fails the run with a clear message), runs
// the tests and cleans up. Call it from TestMain.
func Main(m *testing.M) int {
	dir, err := os.MkdirTemp("", "piped-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "harness:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "piped")
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	// With the Makefile's flags, as the image and bin/ are built.
	build := exec.Command("make", "--no-print-directory", "build-piped", "BIN="+dir)
	build.Dir = root
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "harness: make build-piped failed (make is Debian's make; .ci/run installs it):", err)
		return 1
	}
	binary = bin
	conn, err := amqp.Dial(AMQPURL())
	if err != nil {
		fmt.Fprintf(os.Stderr, "harness: RabbitMQ is not reachable at 127.0.0.1:5672 (%v).\nRun scripts/ensure-rabbitmq.sh (or set PIPED_TEST_AMQP_URL), then the tests again.\n", err)
		return 1
	}
	conn.Close()
	return m.Run()
}

var binary string

// UniqueID returns a fresh id with prefix, safe for node ids and tokens.
func UniqueID(prefix string) string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// FreePort returns a TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Node is a running piped process.
type Node struct {
	ID   string
	Port int
	// InternalPort is the port of http.internal_addr when the node has one
	// (WithInternalListener); 0 otherwise.
	InternalPort int
	Mass         string // its mass exchange
	Env          []string
	// ConfigFile, when set, is passed as --config (see WithConfig).
	ConfigFile string

	cmd  *exec.Cmd
	logs LockedBuffer // stdout and stderr
	done chan struct{}
	err  error // guarded by done
}

// NodeOption changes how a node starts.
type NodeOption func(*Node)

// WithEnv adds environment variables (KEY=VALUE) to the node's process.
func WithEnv(kv ...string) NodeOption { return func(n *Node) { n.Env = append(n.Env, kv...) } }

// WithConfig writes toml to a file of the test's own and starts the node
// with --config pointing at it; Node.ConfigFile names it (rewrite it and
// send SIGHUP to reload). Environment and flags still win over it.
func WithConfig(t testing.TB, toml string) NodeOption {
	path := filepath.Join(t.TempDir(), "piped.toml")
	if err := os.WriteFile(path, []byte(toml), 0o600); err != nil {
		t.Fatalf("write config: %v", err)
	}
	return func(n *Node) { n.ConfigFile = path }
}

// WithMass makes the node use an existing mass exchange (to share it between nodes).
func WithMass(name string) NodeOption { return func(n *Node) { n.Mass = name } }

// WithID sets the node id.
func WithID(id string) NodeOption { return func(n *Node) { n.ID = id } }

// StartNode starts a node, waits until /readyz answers 200 and arranges for
// it to be stopped and its broker objects deleted when the test ends.
func StartNode(t testing.TB, opts ...NodeOption) *Node {
	t.Helper()
	n := LaunchNode(t, opts...)
	n.WaitReady(t, 30*time.Second)
	return n
}

// LaunchNode starts a node without waiting for readiness.
func LaunchNode(t testing.TB, opts ...NodeOption) *Node {
	t.Helper()
	n := &Node{ID: UniqueID("it"), Port: FreePort(t), done: make(chan struct{})}
	for _, o := range opts {
		o(n)
	}
	if n.Mass == "" {
		n.Mass = "mass-" + n.ID
	}
	args := []string{"--port", fmt.Sprint(n.Port), "--nodeId", n.ID}
	if n.ConfigFile != "" {
		args = append(args, "--config", n.ConfigFile)
	}
	n.cmd = exec.Command(binary, args...)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PIPED_TEST_") { // the node refuses unknown PIPED_* variables
			env = append(env, kv)
		}
	}
	n.cmd.Env = append(env,
		"PIPED_AMQP_URL="+AMQPURL(),
		"PIPED_AMQP_MASS_EXCHANGE="+n.Mass,
		"PIPED_HTTP_HOST=127.0.0.1",
		"PIPED_LOG_FORMAT=json",
		"PIPED_SHUTDOWN_DRAIN_TIMEOUT=2s",
		"PIPED_SHUTDOWN_TIMEOUT=6s",
	)
	n.cmd.Env = append(n.cmd.Env, n.Env...)
	n.cmd.Stdout, n.cmd.Stderr = &n.logs, &n.logs
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("start piped: %v", err)
	}
	go func() { n.err = n.cmd.Wait(); close(n.done) }()
	t.Cleanup(func() {
		n.Stop(t)
		if t.Failed() {
			t.Logf("node %s log:\n%s", n.ID, n.Logs())
		}
		DeleteTopology(t, n.ID, n.Mass)
	})
	return n
}

// Logs returns what the node has written to stdout and stderr so far.
func (n *Node) Logs() string { return n.logs.String() }

// URL returns http://127.0.0.1:port + path; paths outside /api/ go to the
// internal listener when the node has one.
func (n *Node) URL(path string) string {
	port := n.Port
	if n.InternalPort != 0 && !strings.HasPrefix(path, "/api/") {
		port = n.InternalPort
	}
	return fmt.Sprintf("http://127.0.0.1:%d%s", port, path)
}

// WSURL returns the WebSocket URL for token.
func (n *Node) WSURL(token string) string {
	return fmt.Sprintf("ws://127.0.0.1:%d/api/%s", n.Port, token)
}

// WaitReady waits until /readyz answers 200.
func (n *Node) WaitReady(t testing.TB, within time.Duration) {
	t.Helper()
	Eventually(t, within, "node "+n.ID+" ready", func() bool {
		select {
		case <-n.done:
			t.Fatalf("node exited before ready: %v\n%s", n.err, n.Logs())
		default:
		}
		code, _ := n.Get(t, "/readyz")
		return code == http.StatusOK
	})
}

// Get fetches path from the node and returns the status and body (0 on a connection error).
func (n *Node) Get(t testing.TB, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(n.URL(path))
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Signal sends sig to the node's process.
func (n *Node) Signal(sig os.Signal) { _ = n.cmd.Process.Signal(sig) }

// Wait waits for the process to exit and returns its exit code (-1 when killed).
func (n *Node) Wait(t testing.TB, within time.Duration) int {
	t.Helper()
	select {
	case <-n.done:
	case <-time.After(within):
		_ = n.cmd.Process.Kill()
		<-n.done
		t.Fatalf("node %s did not exit within %v", n.ID, within)
	}
	return n.cmd.ProcessState.ExitCode()
}

// Stop sends SIGTERM and waits for the exit (SIGKILL after 30 s).
func (n *Node) Stop(t testing.TB) {
	select {
	case <-n.done:
		return
	default:
	}
	n.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(30 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.done
	}
}

// Done is closed when the process has exited.
func (n *Node) Done() <-chan struct{} { return n.done }

// DeleteTopology deletes a node's queues and exchanges and the mass exchange.
func DeleteTopology(t testing.TB, nodeID, mass string) {
	conn, err := amqp.Dial(AMQPURL())
	if err != nil {
		t.Logf("cleanup: %v", err)
		return
	}
	defer conn.Close()
	del := func(f func(ch *amqp.Channel) error) {
		ch, err := conn.Channel()
		if err != nil {
			return
		}
		defer ch.Close()
		_ = f(ch)
	}
	for _, q := range []string{"queue-in-" + nodeID, "queue-out-" + nodeID} {
		del(func(ch *amqp.Channel) error { _, err := ch.QueueDelete(q, false, false, false); return err })
	}
	// exchange-in-{id}:events (targeted events) is auto-delete: it went with
	// the in-queue; deleting it again is harmless.
	for _, e := range []string{"exchange-in-" + nodeID, "exchange-out-" + nodeID, "exchange-in-" + nodeID + ":events", mass} {
		del(func(ch *amqp.Channel) error { return ch.ExchangeDelete(e, false, false) })
	}
}

// Backend runs the example echo backend for nodes until the test ends.
func Backend(t testing.TB, tweak func(*echo.Config), nodes ...*Node) {
	t.Helper()
	cfg := echo.Config{URL: AMQPURL(), CopyCorrelationID: true}
	for _, n := range nodes {
		cfg.Nodes = append(cfg.Nodes, n.ID)
		cfg.MassExchange = n.Mass
	}
	if tweak != nil {
		tweak(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- echo.Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("echo backend: %v", err)
		}
	})
}

// Eventually polls cond every 20 ms until it holds, failing the test after within.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Client is a WebSocket client whose read loop collects frames.
type Client struct {
	WS     *websocket.Conn
	frames chan []byte
	closed chan struct{}
	mu     sync.Mutex
	err    error // why reading stopped, guarded by mu
	wmu    sync.Mutex
}

// Dial connects a client to node n for token and closes it when the test ends.
func Dial(t testing.TB, n *Node, token string) *Client {
	t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial(n.WSURL(token), nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (HTTP %d)", n.WSURL(token), err, status)
	}
	c := &Client{WS: ws, frames: make(chan []byte, 4096), closed: make(chan struct{})}
	go c.read()
	t.Cleanup(func() { _ = ws.Close(); <-c.closed })
	return c
}

func (c *Client) read() {
	defer close(c.closed)
	for {
		_, b, err := c.WS.ReadMessage()
		if err != nil {
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
			return
		}
		c.frames <- b
	}
}

// Send writes one text frame.
func (c *Client) Send(t testing.TB, frame string) {
	t.Helper()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.WS.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		t.Fatalf("send: %v", err)
	}
}

// Next returns the next frame, failing the test after within.
func (c *Client) Next(t testing.TB, within time.Duration) []byte {
	t.Helper()
	select {
	case b := <-c.frames:
		return b
	case <-time.After(within):
		t.Fatalf("no frame within %v (read error: %v)", within, c.Err())
		return nil
	}
}

// NextJSON returns the next frame decoded into a map of raw members.
func (c *Client) NextJSON(t testing.TB, within time.Duration) map[string]json.RawMessage {
	t.Helper()
	b := c.Next(t, within)
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("frame is not a JSON object: %q", b)
	}
	return m
}

// Quiet asserts no frame arrives within d.
func (c *Client) Quiet(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case b := <-c.frames:
		t.Fatalf("unexpected frame: %s", b)
	case <-time.After(d):
	}
}

// Frames is the channel of received frames.
func (c *Client) Frames() <-chan []byte { return c.frames }

// Closed is closed when the read loop ended.
func (c *Client) Closed() <-chan struct{} { return c.closed }

// Err is why reading stopped (a *websocket.CloseError for a close frame), or nil.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// CloseCode waits for the connection to close and returns the close code (-1 if none).
func (c *Client) CloseCode(t testing.TB, within time.Duration) int {
	t.Helper()
	select {
	case <-c.closed:
	case <-time.After(within):
		t.Fatalf("connection not closed within %v", within)
	}
	if ce, ok := c.Err().(*websocket.CloseError); ok {
		return ce.Code
	}
	return -1
}

// Metric returns the value of the sample whose line starts with name
// (including labels, e.g. `piped_results_total{routed_by="correlation"}`), or 0.
func (n *Node) Metric(t testing.TB, name string) float64 {
	t.Helper()
	_, body := n.Get(t, "/metrics")
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, name+" ") {
			var v float64
			fmt.Sscan(strings.TrimPrefix(line, name+" "), &v)
			return v
		}
	}
	return 0
}

// Publish publishes msg to exchange and waits for the broker's confirm.
func Publish(t testing.TB, exchange, key string, msg amqp.Publishing) {
	t.Helper()
	PublishMany(t, exchange, key, []amqp.Publishing{msg})
}

// Inspect returns the message count of a queue. It opens and closes a
// connection of its own, so it can be polled.
func Inspect(t testing.TB, queue string) int {
	t.Helper()
	conn, err := amqp.Dial(AMQPURL())
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
		t.Fatalf("inspect %s: %v", queue, err)
	}
	return q.Messages
}

// LockedBuffer is an io.Writer safe for a process's stdout and stderr, whose
// String may be read while the process writes.
type LockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *LockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
