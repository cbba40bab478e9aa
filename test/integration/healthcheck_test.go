package integration

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	h "github.com/piped-dev/piped/test/harness"
)

// runHealthcheck runs `piped healthcheck --port P` in node n's environment
// (as the container's HEALTHCHECK runs it beside the node) and returns its
// exit code and stderr.
func runHealthcheck(t *testing.T, n *h.Node) (int, string) {
	t.Helper()
	cmd := n.Command("healthcheck", "--port", fmt.Sprint(n.Port), "--timeout", "5s")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, stderr.String()
	case errors.As(err, &exit):
		return exit.ExitCode(), stderr.String()
	}
	t.Fatalf("piped healthcheck did not run: %v", err)
	return -1, ""
}

// TestHealthcheck runs `piped healthcheck` against real nodes, on one port
// and with the internal listener: 0 while the node is ready; 1, with the
// reason on one line, while it drains, when it cannot reach the broker, and
// when it is gone.
func TestHealthcheck(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts []h.NodeOption
	}{
		{"one port", nil},
		{"internal listener", []h.NodeOption{h.WithInternalListener()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			expect := func(n *h.Node, wantCode int, wantReason string) {
				t.Helper()
				code, stderr := runHealthcheck(t, n)
				if code != wantCode || !strings.Contains(stderr, wantReason) {
					t.Fatalf("piped healthcheck: exit %d, stderr %q; want exit %d and %q", code, stderr, wantCode, wantReason)
				}
				if code != 0 && strings.Count(stderr, "\n") != 1 {
					t.Errorf("piped healthcheck: stderr is not one line: %q", stderr)
				}
			}

			t.Run("ready, draining, stopped", func(t *testing.T) {
				// A long drain, held open by a call the backend never answers.
				n := h.StartNode(t, append([]h.NodeOption{h.WithEnv("PIPED_SHUTDOWN_DRAIN_TIMEOUT=30s", "PIPED_SHUTDOWN_TIMEOUT=40s")}, tc.opts...)...)
				h.Backend(t, nil, n)
				expect(n, 0, "")

				held := h.Dial(t, n, h.UniqueID("held"))
				held.Send(t, `{"id":"held","method":"silent"}`)
				h.Eventually(t, wait, "the call published", func() bool { return n.Metric(t, "piped_calls_total") == 1 })
				n.Signal(syscall.SIGTERM)
				h.Eventually(t, wait, "readiness 503", func() bool {
					code, _ := n.Get(t, "/readyz")
					return code == http.StatusServiceUnavailable
				})
				expect(n, 1, "draining")

				n.Signal(syscall.SIGTERM) // a second signal ends the drain at once
				n.Wait(t, wait)
				expect(n, 1, "connection refused")
			})

			t.Run("broker unreachable", func(t *testing.T) {
				// Nothing listens on the broker port: the node serves HTTP but is not ready.
				n := h.LaunchNode(t, append([]h.NodeOption{h.WithEnv(fmt.Sprintf("PIPED_AMQP_URL=amqp://guest:guest@127.0.0.1:%d/", h.FreePort(t)))}, tc.opts...)...)
				h.Eventually(t, wait, "/healthz answering", func() bool {
					code, _ := n.Get(t, "/healthz")
					return code == http.StatusOK
				})
				expect(n, 1, "503")
			})
		})
	}
}
