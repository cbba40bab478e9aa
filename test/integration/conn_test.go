package integration

import (
	"fmt"
	"testing"

	h "github.com/piped-dev/piped/test/harness"
)

// A connection that closes with calls in flight to a silent backend takes
// them out of the node's pending table at once — not after requests.timeout
// (a minute here) — and no timeout is answered for them. Another connection
// of the same token keeps its call, and when the backend comes it gets its
// own result and nothing of the closed connection's.
func TestClosedConnectionDropsItsCalls(t *testing.T) {
	t.Parallel()
	const calls = 10
	n := h.StartNode(t, h.WithEnv("PIPED_REQUESTS_TIMEOUT=60s"))
	token := h.UniqueID("tok")
	gone, stays := h.Dial(t, n, token), h.Dial(t, n, token)
	for i := range calls {
		gone.Send(t, fmt.Sprintf(`{"id":%d,"method":"m"}`, i))
	}
	h.Eventually(t, wait, "the calls pending", func() bool { return n.Metric(t, "piped_calls_pending") == calls })
	stays.Send(t, `{"id":"mine","method":"m"}`)
	h.Eventually(t, wait, "every call in queue-out", func() bool { return h.Inspect(t, "queue-out-"+n.ID) == calls+1 })

	_ = gone.WS.Close()
	h.Eventually(t, wait, "the closed connection's calls dropped", func() bool {
		return n.Metric(t, "piped_calls_pending") == 1 && n.Metric(t, "piped_calls_abandoned_total") == calls
	})

	// The backend answers in queue order, the closed connection's calls
	// first: the remaining connection's next frame is its own result.
	h.Backend(t, nil, n)
	if f := stays.NextFrame(t, wait); f.Type != "result" || string(f.ID) != `"mine"` {
		t.Fatalf("the remaining connection got %s, want its own result", f.Raw)
	}
	h.Eventually(t, wait, "the closed connection's results dropped as late", func() bool {
		return n.Metric(t, `piped_backend_messages_dropped_total{reason="late"}`) == calls
	})
	if v := n.Metric(t, `piped_call_errors_total{code="timeout"}`); v != 0 {
		t.Fatalf("%v timeouts answered", v)
	}
	if v := n.Metric(t, "piped_calls_pending"); v != 0 {
		t.Fatalf("piped_calls_pending %v at the end", v)
	}
}
