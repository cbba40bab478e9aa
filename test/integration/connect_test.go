package integration

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	h "github.com/piped-dev/piped/test/harness"
)

// A node whose broker refuses connections from the start says what
// happened in its first warning — it cannot connect, the address, the
// refusal — and not that a session ended, which never began; the URL's
// password is not in the log, and /readyz gives the same reason.
func TestBrokerUnreachableFromStart(t *testing.T) {
	t.Parallel()
	const password = "s3cret-pw"
	port := h.FreePort(t) // nothing listens on it
	url := fmt.Sprintf("amqp://guest:%s@127.0.0.1:%d/", password, port)
	n := h.LaunchNode(t, h.WithEnv("PIPED_AMQP_URL="+url))

	var first map[string]any
	h.Eventually(t, 20*time.Second, "the node's first warning", func() bool {
		for _, line := range strings.Split(n.Logs(), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && m["level"] == "WARN" {
				first = m
				return true
			}
		}
		return false
	})
	msg, _ := first["msg"].(string)
	errText, _ := first["error"].(string)
	addr := fmt.Sprintf("amqp://guest:xxxxx@127.0.0.1:%d/", port)
	if msg != "cannot connect to the broker; retrying" || !strings.Contains(errText, addr) || !strings.Contains(errText, "connection refused") {
		t.Errorf("first warning: msg %q, error %q; want \"cannot connect to the broker; retrying\" naming %s and the refusal", msg, errText, addr)
	}
	if strings.Contains(n.Logs(), "session ended") {
		t.Errorf("the log speaks of a session that never existed:\n%s", n.Logs())
	}
	if strings.Contains(n.Logs(), password) {
		t.Errorf("the log contains the broker password:\n%s", n.Logs())
	}
	code, body := n.Get(t, "/readyz")
	if code != 503 || !strings.Contains(body, "connection refused") || strings.Contains(body, password) {
		t.Errorf("/readyz %d %s, want 503 naming the refusal without the password", code, body)
	}
}
