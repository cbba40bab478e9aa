package integration

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	h "github.com/piped-dev/piped/test/harness"
)

// chromiumPath is Debian's Chromium, which client/test/browser.mjs launches.
const chromiumPath = "/usr/bin/chromium"

// browserTestTimeout bounds the whole browser script (Chromium's start, the
// page's checks and the node's stop).
const browserTestTimeout = 3 * time.Minute

// The browser client (client/piped.js) in real headless Chromium, driven
// through client/demo.html by client/test/browser.mjs (playwright-core):
// behind nginx in front of two nodes and the echo backend, the page makes
// calls, receives an event, survives the node it is connected to going away
// (SIGTERM: 1012, then a reconnect through nginx to the other node, and the
// next call works), shows a rejected call's code (bad_request), stops on the
// backend's disconnect (4001), and gives up on an upgrade the node refuses
// (a 1006 before open in a browser) after maxFailedOpens attempts. The
// screenshot is kept in $PIPED_TEST_ARTIFACTS, else testdata/artifacts.
func TestBrowserClient(t *testing.T) {
	t.Parallel()
	root := clientRepoRoot(t)
	node := requireNode(t)
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("%s: %v: this test needs Debian's chromium; run `apt-get install -y chromium` (.ci/run does it), then the tests again", chromiumPath, err)
	}
	if _, err := os.Stat(filepath.Join(root, "client", "test", "node_modules", "playwright-core", "package.json")); err != nil {
		t.Fatalf("playwright-core is not installed in client/test/node_modules (%v): run `npm ci --prefix client/test` (make test and .ci/run do it), then the tests again", err)
	}
	shot := artifactPath(t, "browser-client.png")

	mass := h.UniqueID("mass-browser")
	a := h.StartNode(t, h.WithMass(mass))
	b := h.StartNode(t, h.WithMass(mass))
	h.Backend(t, nil, a, b)
	nginx := h.StartNginx(t, a, b)
	static := httptest.NewServer(http.FileServer(http.Dir(filepath.Join(root, "client"))))
	t.Cleanup(static.Close)
	token := h.UniqueID("browser")

	ctx, cancel := context.WithTimeout(context.Background(), browserTestTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join("client", "test", "browser.mjs"),
		static.URL+"/demo.html", nginx.WSURL(token), token, shot)
	cmd.Dir = root
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", node, err)
	}

	var stopped, other *h.Node
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		t.Log(line)
		switch line {
		case "piped-browser: stop-node":
			stopped, other = connectedNode(t, a, b)
			t.Logf("stopping node %s, which holds the page's connection (SIGTERM)", stopped.ID)
			stopped.Stop(t)
			tell(t, stdin, "stopped")
		case "piped-browser: disconnect":
			h.Publish(t, mass, "", amqp.Publishing{Body: []byte(`{"type":"disconnect","token":"` + token + `"}`)})
			tell(t, stdin, "sent")
		}
	}
	err = cmd.Wait()
	elapsed := time.Since(start)
	if s := stderr.String(); s != "" {
		t.Logf("browser script stderr:\n%s", s)
	}
	if err != nil {
		t.Fatalf("browser script failed after %v: %v (screenshot: %s)", elapsed.Round(time.Millisecond), err, shot)
	}
	if stopped == nil {
		t.Fatal("the browser script never asked for the node to be stopped")
	}
	if n := other.Metric(t, "piped_connections_total"); n < 1 {
		t.Errorf("node %s accepted %v connections: the page did not reconnect to it", other.ID, n)
	}
	if n := other.Metric(t, `piped_upgrades_refused_total{reason="bad_token"}`); n != 3 {
		t.Errorf("node %s refused %v upgrades for the bad token, want 3 (maxFailedOpens)", other.ID, n)
	}
	if _, err := os.Stat(shot); err != nil {
		t.Errorf("no screenshot: %v", err)
	}
	t.Logf("browser test passed in %v (Chromium start included); screenshot: %s", elapsed.Round(time.Millisecond), shot)
}

// The client's own logic (ids, timeouts, queueing, close codes, backoff)
// against a fake WebSocket: node --test client/test/unit.test.mjs.
func TestBrowserClientUnit(t *testing.T) {
	t.Parallel()
	root := clientRepoRoot(t)
	node := requireNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", filepath.Join("client", "test", "unit.test.mjs"))
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test client/test/unit.test.mjs: %v\n%s", err, out)
	}
	if testing.Verbose() {
		t.Logf("%s", out)
	}
}

// tell writes line to the browser script's standard input.
func tell(t *testing.T, stdin io.Writer, line string) {
	t.Helper()
	if _, err := io.WriteString(stdin, line+"\n"); err != nil {
		t.Errorf("tell the browser script %q: %v", line, err)
	}
}

// connectedNode polls until one of a and b holds exactly one connection (the
// page's) and returns it and the other.
func connectedNode(t *testing.T, a, b *h.Node) (holder, other *h.Node) {
	t.Helper()
	h.Eventually(t, wait, "the page's connection on one node", func() bool {
		na, nb := a.Metric(t, "piped_connections"), b.Metric(t, "piped_connections")
		switch {
		case na == 1 && nb == 0:
			holder, other = a, b
		case na == 0 && nb == 1:
			holder, other = b, a
		default:
			return false
		}
		return true
	})
	return holder, other
}

// requireNode returns the path of node, failing the test when it is missing.
func requireNode(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed (%v): this test needs Node.js 20 or later; run `apt-get install -y nodejs npm` (make test and .ci/run do it), then the tests again", err)
	}
	return p
}

// clientRepoRoot is the repository's root directory.
func clientRepoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("no caller information")
	}
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// artifactPath returns where the test keeps the file name: in
// $PIPED_TEST_ARTIFACTS when set, else in testdata/artifacts (gitignored).
func artifactPath(t *testing.T, name string) string {
	t.Helper()
	dir := os.Getenv("PIPED_TEST_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(clientRepoRoot(t), "test", "integration", "testdata", "artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("artifacts directory: %v", err)
	}
	abs, err := filepath.Abs(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	_ = os.Remove(abs) // a screenshot from an earlier run must not pass for this one's
	return abs
}
