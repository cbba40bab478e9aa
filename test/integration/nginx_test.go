package integration

import (
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	h "github.com/piped-dev/piped/test/harness"
)

// reconnects is how many new clients connect through nginx while one node drains.
const reconnects = 12

// While one of two nodes behind nginx (the seed's configuration, unchanged)
// drains, every new connection through nginx lands on the other node and
// answers a ping, and the draining node's held calls still get their answer
// (or shutting_down) before close code 1012 — on the one-port default and
// with the internal listener.
func TestDrainBehindNginx(t *testing.T) {
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
			drain := h.WithEnv("PIPED_SHUTDOWN_DRAIN_TIMEOUT=5s", "PIPED_SHUTDOWN_TIMEOUT=10s")
			a := h.StartNode(t, append([]h.NodeOption{drain}, tc.opts...)...)
			b := h.StartNode(t, tc.opts...)
			h.Backend(t, nil, a, b)
			nginx := h.StartNginx(t, a, b)

			// Two calls held open on node a: one the backend answers during the
			// drain, one it never answers.
			held := h.Dial(t, a, h.UniqueID("held"))
			held.Send(t, `{"id":"answered","method":"sleep","payload":{"ms":1000}}`)
			held.Send(t, `{"id":"unanswered","method":"silent"}`)
			h.Eventually(t, wait, "2 calls published on a", func() bool { return a.Metric(t, "piped_calls_total") == 2 })

			a.Signal(syscall.SIGTERM)
			h.Eventually(t, wait, "a's readiness 503", func() bool {
				code, _ := a.Get(t, "/readyz")
				return code == http.StatusServiceUnavailable
			})

			ok := 0
			var failures []string
			for i := range reconnects {
				if err := pingThrough(nginx, h.UniqueID("re")); err != nil {
					failures = append(failures, fmt.Sprintf("#%d: %v", i, err))
					continue
				}
				ok++
			}
			t.Logf("reconnects through nginx during the drain: %d of %d answered a ping", ok, reconnects)
			if len(failures) > 0 {
				t.Errorf("%d of %d reconnects through nginx failed during the drain:\n%s", len(failures), reconnects, strings.Join(failures, "\n"))
			}
			select {
			case <-held.Closed():
				t.Fatal("the held connection closed before the reconnects were done: they did not test the drain")
			default:
			}

			got := map[string]string{}
			for range 2 {
				f := held.NextFrame(t, 10*time.Second)
				what := f.Type
				if f.Type == "error" {
					what = f.Error.Code
				}
				got[string(f.ID)] = what
			}
			if got[`"answered"`] != "result" {
				t.Errorf("held call answered: %q, want result (frames %v)", got[`"answered"`], got)
			}
			if w := got[`"unanswered"`]; w != "shutting_down" {
				t.Errorf("held call unanswered: %q, want shutting_down (frames %v)", w, got)
			}
			if code := held.CloseCode(t, 10*time.Second); code != websocket.CloseServiceRestart {
				t.Errorf("held connection closed with %d, want 1012", code)
			}
			if code := a.Wait(t, 15*time.Second); code != 0 {
				t.Errorf("draining node exited %d, want 0", code)
			}
		})
	}
}

// pingThrough connects through nginx and waits for the pong of one ping.
func pingThrough(x *h.Nginx, token string) error {
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	ws, resp, err := d.Dial(x.WSURL(token), nil)
	if err != nil {
		if resp != nil {
			return fmt.Errorf("dial: HTTP %d: %w", resp.StatusCode, err)
		}
		return fmt.Errorf("dial: %w", err)
	}
	defer ws.Close()
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"method":"ping"}`)); err != nil {
		return fmt.Errorf("send ping: %w", err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, b, err := ws.ReadMessage()
	if err != nil {
		return fmt.Errorf("read pong: %w", err)
	}
	if !strings.Contains(string(b), `"pong"`) {
		return fmt.Errorf("answer to ping: %s", b)
	}
	return nil
}
