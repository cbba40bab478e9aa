package integration

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/piped-dev/piped/internal/wsframe"
	h "github.com/piped-dev/piped/test/harness"
)

// getCall takes the next call from the node's out-queue (no backend runs),
// waiting up to within. Calls expire there after requests.timeout, so take
// them at once.
func getCall(t *testing.T, ch *amqp.Channel, n *h.Node, within time.Duration) amqp.Delivery {
	t.Helper()
	var d amqp.Delivery
	h.Eventually(t, within, "a call in queue-out-"+n.ID, func() bool {
		var ok bool
		var err error
		d, ok, err = ch.Get("queue-out-"+n.ID, true)
		if err != nil {
			t.Fatalf("get from queue-out: %v", err)
		}
		return ok
	})
	return d
}

// settled asserts that nothing more can reach c: no call of the node awaits
// an answer (so no result, timeout or error can come for one), and a ping
// sent now is answered by the very next frame (so nothing was queued for c
// before it).
func settled(t *testing.T, n *h.Node, c *h.Client) {
	t.Helper()
	h.Eventually(t, wait, "no call pending", func() bool { return n.Metric(t, "piped_calls_pending") == 0 })
	c.Send(t, `{"id":"settled","method":"ping"}`)
	if f := c.NextFrame(t, wait); f.Event != "pong" || string(f.ID) != `"settled"` {
		t.Fatalf("got %s, want the pong first", f.Raw)
	}
}

// A call with an id that no backend answers gets a timeout error after
// requests.timeout; a call without an id gets nothing. Both are published
// with that timeout as their AMQP expiration.
func TestTimeoutWithoutBackend(t *testing.T) {
	t.Parallel()
	n := h.StartNode(t, h.WithEnv("PIPED_REQUESTS_TIMEOUT=500ms"))
	ch := h.Channel(t)
	c := h.Dial(t, n, h.UniqueID("tok"))
	start := time.Now()
	c.Send(t, `{"id":1,"method":"m"}`)
	c.Send(t, `{"method":"fire-and-forget"}`)
	for i := range 2 {
		if d := getCall(t, ch, n, 400*time.Millisecond); d.Expiration != "500" {
			t.Fatalf("call %d published with expiration %q, want \"500\"", i, d.Expiration)
		}
	}
	// Collect everything for a while: exactly one frame, the timeout of id 1.
	var frames []h.Frame
	var at []time.Duration
	deadline := time.After(1500 * time.Millisecond)
collect:
	for {
		select {
		case b := <-c.Frames():
			frames = append(frames, h.ParseFrame(t, b))
			at = append(at, time.Since(start))
		case <-deadline:
			break collect
		}
	}
	var timeouts int
	for i, f := range frames {
		switch {
		case f.Type == "error" && string(f.ID) == "1" && f.Error.Code == "timeout":
			timeouts++
			if at[i] < 450*time.Millisecond || at[i] > 1500*time.Millisecond {
				t.Errorf("timeout error after %v, want about 500ms", at[i])
			}
		case f.ID == nil:
			t.Errorf("the call without id got a frame after %v: %s", at[i], f.Raw)
		default:
			t.Errorf("unexpected frame after %v: %s", at[i], f.Raw)
		}
	}
	if timeouts != 1 {
		t.Fatalf("%d timeout errors for id 1, want 1", timeouts)
	}
	if v := n.Metric(t, `piped_call_errors_total{code="timeout"}`); v != 1 {
		t.Fatalf("timeout errors counted %v, want 1", v)
	}
}

// A result that arrives after the call timed out is dropped (and counted),
// never delivered after the timeout error.
func TestLateResultDropped(t *testing.T) {
	t.Parallel()
	n := h.StartNode(t, h.WithEnv("PIPED_REQUESTS_TIMEOUT=500ms"))
	ch := h.Channel(t)
	token := h.UniqueID("tok")
	c := h.Dial(t, n, token)
	c.Send(t, `{"id":1,"method":"m"}`)
	d := getCall(t, ch, n, 400*time.Millisecond)
	if d.CorrelationId == "" {
		t.Fatalf("call without correlation_id: %+v", d)
	}
	if f := c.NextFrame(t, 5*time.Second); f.Error.Code != "timeout" || string(f.ID) != "1" {
		t.Fatalf("got %s, want a timeout error for id 1", f.Raw)
	}
	// The late result, then an event for the same token down the same
	// queue: the event is the next frame, so the result was not delivered.
	h.PublishMany(t, "exchange-in-"+n.ID, "", []amqp.Publishing{
		{CorrelationId: d.CorrelationId, Body: []byte(`{"id":1,"type":"result","token":"` + token + `","method":"m"}`)},
		{Body: []byte(`{"type":"event","token":"` + token + `","event":"after"}`)},
	})
	if f := c.NextFrame(t, wait); f.Type != "event" || f.Event != "after" {
		t.Fatalf("got %s, want the event published after the late result", f.Raw)
	}
	h.Eventually(t, wait, "the late result counted as dropped", func() bool {
		return n.Metric(t, `piped_backend_messages_dropped_total{reason="late"}`) == 1
	})
}

// A backend message that is not valid UTF-8 never reaches a client (it
// would be a text frame, which RFC 6455 forbids): a result answers its call
// with a bad_result error instead, an event is dropped; both are counted.
func TestNotUTF8BackendMessagesDropped(t *testing.T) {
	t.Parallel()
	n := h.StartNode(t, h.WithEnv("PIPED_REQUESTS_TIMEOUT=5s"))
	ch := h.Channel(t)
	token := h.UniqueID("tok")
	c := h.Dial(t, n, token)
	c.Send(t, `{"id":1,"method":"m"}`)
	d := getCall(t, ch, n, 4*time.Second)
	h.PublishMany(t, "exchange-in-"+n.ID, "", []amqp.Publishing{
		{CorrelationId: d.CorrelationId, Body: []byte(`{"id":1,"type":"result","token":"` + token + `","payload":"` + "\xff\xfe" + `"}`)},
		{Body: []byte(`{"type":"event","token":"` + token + `","event":"bad","payload":"` + "\xce\xba\xe1\xbd" + `"}`)},
		{Body: []byte(`{"type":"event","token":"` + token + `","event":"after"}`)},
	})
	if f := c.NextFrame(t, wait); f.Type != "error" || f.Error.Code != "bad_result" || string(f.ID) != "1" {
		t.Fatalf("got %s, want a bad_result error for id 1", f.Raw)
	}
	if f := c.NextFrame(t, wait); f.Type != "event" || f.Event != "after" {
		t.Fatalf("got %s, want the event published after the invalid one", f.Raw)
	}
	h.Eventually(t, wait, "both counted as not_utf8", func() bool {
		return n.Metric(t, `piped_backend_messages_dropped_total{reason="not_utf8"}`) == 2
	})
	settled(t, n, c) // no timeout or second answer follows
}

// With the out-queue gone, the mandatory publish comes back and the call
// fails with "unroutable" at once, not after the timeout.
func TestUnroutable(t *testing.T) {
	t.Parallel()
	n := h.StartNode(t, h.WithEnv("PIPED_REQUESTS_TIMEOUT=10s"))
	ch := h.Channel(t)
	if _, err := ch.QueueDelete("queue-out-"+n.ID, false, false, false); err != nil {
		t.Fatal(err)
	}
	c := h.Dial(t, n, h.UniqueID("tok"))
	start := time.Now()
	c.Send(t, `{"id":"u","method":"m"}`)
	f := c.NextFrame(t, 2*time.Second)
	if f.Type != "error" || string(f.ID) != `"u"` || f.Error.Code != "unroutable" {
		t.Fatalf("got %s, want an unroutable error for id \"u\"", f.Raw)
	}
	t.Logf("unroutable after %v", time.Since(start))
	settled(t, n, c) // no timeout or second answer follows
}

// ws.max_inflight bounds the calls awaiting an answer per connection; a
// slot frees when its call is answered, by a timeout too.
func TestMaxInflight(t *testing.T) {
	t.Parallel()
	n := h.StartNode(t, h.WithEnv("PIPED_WS_MAX_INFLIGHT=3", "PIPED_REQUESTS_TIMEOUT=1s"))
	h.Backend(t, nil, n)
	c := h.Dial(t, n, h.UniqueID("tok"))
	for id := 1; id <= 5; id++ {
		c.Send(t, fmt.Sprintf(`{"id":%d,"method":"silent"}`, id))
	}
	// 4 and 5 are refused at once; 1..3 time out after a second (in any order).
	for _, id := range []string{"4", "5"} {
		f := c.NextFrame(t, 5*time.Second)
		if f.Type != "error" || string(f.ID) != id || f.Error.Code != "too_many_requests" {
			t.Fatalf("got %s, want error too_many_requests for id %s", f.Raw, id)
		}
	}
	timedOut := map[string]int{}
	for range 3 {
		f := c.NextFrame(t, 5*time.Second)
		if f.Type != "error" || f.Error.Code != "timeout" {
			t.Fatalf("got %s, want a timeout error", f.Raw)
		}
		timedOut[string(f.ID)]++
	}
	if timedOut["1"] != 1 || timedOut["2"] != 1 || timedOut["3"] != 1 {
		t.Fatalf("timeouts for %v, want 1, 2 and 3 once each", timedOut)
	}
	// Every slot is free again.
	for id := 6; id <= 8; id++ {
		c.Send(t, fmt.Sprintf(`{"id":%d,"method":"m"}`, id))
	}
	got := map[string]bool{}
	for range 3 {
		f := c.NextFrame(t, wait)
		if f.Type != "result" {
			t.Fatalf("after the timeouts: %s", f.Raw)
		}
		got[string(f.ID)] = true
	}
	if len(got) != 3 {
		t.Fatalf("results for %v, want 6, 7, 8", got)
	}
	settled(t, n, c)
}

// The per-connection token bucket: a burst of 20 calls with a burst of 5
// publishes 5 and refuses 15; every call gets exactly one answer.
func TestRateLimit(t *testing.T) {
	t.Parallel()
	n := h.StartNode(t, h.WithEnv("PIPED_WS_RATE_PER_SECOND=5", "PIPED_WS_RATE_BURST=5"))
	h.Backend(t, nil, n)
	c := h.Dial(t, n, h.UniqueID("tok"))
	for id := range 20 {
		c.Send(t, fmt.Sprintf(`{"id":%d,"method":"m"}`, id))
	}
	answers := map[string]int{}
	var results, limited int
	for range 20 {
		f := c.NextFrame(t, wait)
		answers[string(f.ID)]++
		switch {
		case f.Type == "result":
			results++
		case f.Type == "error" && f.Error.Code == "too_many_requests":
			limited++
		default:
			t.Fatalf("unexpected frame %s", f.Raw)
		}
	}
	settled(t, n, c) // no call answered twice
	for id := range 20 {
		if k := answers[fmt.Sprint(id)]; k != 1 {
			t.Errorf("call %d answered %d times", id, k)
		}
	}
	if results != 5 || limited != 15 {
		t.Fatalf("%d results and %d too_many_requests, want 5 and 15", results, limited)
	}
	if v := n.Metric(t, "piped_calls_total"); v != 5 {
		t.Fatalf("piped_calls_total %v, want 5 (only the allowed calls are published)", v)
	}
}

// ws.max_connections refuses upgrades beyond the limit with 503, and lets
// them in again once a connection closed.
func TestMaxConnections(t *testing.T) {
	t.Parallel()
	n := h.StartNode(t, h.WithEnv("PIPED_WS_MAX_CONNECTIONS=2"))
	a := h.Dial(t, n, h.UniqueID("tok"))
	h.Dial(t, n, h.UniqueID("tok"))
	if code, err := h.DialStatus(n, h.UniqueID("tok"), nil); code != http.StatusServiceUnavailable {
		t.Fatalf("third dial: HTTP %d (%v), want 503", code, err)
	}
	_ = a.WS.Close()
	h.Eventually(t, wait, "the closed connection to leave", func() bool { return n.Metric(t, "piped_connections") == 1 })
	h.Dial(t, n, h.UniqueID("tok"))
	if v := n.Metric(t, `piped_upgrades_refused_total{reason="max_connections"}`); v != 1 {
		t.Fatalf("refusals counted %v, want 1", v)
	}
}

func TestAllowedOrigins(t *testing.T) {
	t.Parallel()
	n := h.StartNode(t, h.WithEnv("PIPED_WS_ALLOWED_ORIGINS=https://app.example"))
	for _, tc := range []struct {
		name, origin string
		want         int
	}{
		{"foreign origin", "https://evil.example", http.StatusForbidden},
		{"allowed origin", "https://app.example", http.StatusSwitchingProtocols},
		{"no origin", "", http.StatusSwitchingProtocols},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hdr := http.Header{}
			if tc.origin != "" {
				hdr.Set("Origin", tc.origin)
			}
			if code, err := h.DialStatus(n, h.UniqueID("tok"), hdr); code != tc.want {
				t.Fatalf("HTTP %d (%v), want %d", code, err, tc.want)
			}
		})
	}
}

// A client that never reads never answers pings and is closed after
// ws.pong_timeout; a client that reads (and so answers pings) stays.
func TestPongTimeout(t *testing.T) {
	t.Parallel()
	n := h.StartNode(t, h.WithEnv("PIPED_WS_PING_INTERVAL=1s", "PIPED_WS_PONG_TIMEOUT=2s"))
	good := h.Dial(t, n, h.UniqueID("tok"))
	start := time.Now()
	mute, _, err := h.RawDialer{}.Dial(n, h.UniqueID("tok"))
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()
	h.Eventually(t, 10*time.Second, "the mute client closed for pong_timeout", func() bool {
		return n.Metric(t, `piped_disconnects_total{reason="pong_timeout"}`) == 1
	})
	t.Logf("mute client closed after %v", time.Since(start))
	// Its socket is closed: reading ends with an error that is not our deadline.
	_ = mute.SetReadDeadline(time.Now().Add(3 * time.Second))
	for {
		if _, _, err := mute.ReadMessage(); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("the node did not close the mute client's socket")
			}
			break
		}
	}
	select {
	case <-good.Closed():
		t.Fatalf("the reading client was closed: %v", good.Err())
	case <-time.After(4*time.Second - time.Since(start)): // two pong timeouts
	}
	if v := n.Metric(t, "piped_connections"); v != 1 {
		t.Fatalf("piped_connections %v, want 1 (the reading client)", v)
	}
	good.Send(t, `{"id":1,"method":"ping"}`)
	if f := good.NextFrame(t, wait); f.Event != "pong" {
		t.Fatalf("got %s", f.Raw)
	}
}

// A client that does not read while its token is flooded with events is
// closed with slow_client; meanwhile other clients are served promptly and
// the node's memory stays bounded.
func TestSlowClient(t *testing.T) {
	t.Parallel()
	const events, eventSize = 5000, 1024
	n := h.StartNode(t, h.WithEnv("PIPED_WS_SEND_QUEUE_BYTES=65536"))
	h.Backend(t, nil, n)
	slowToken := h.UniqueID("slow")
	slow, _, err := h.RawDialer{RecvBuf: 4096}.Dial(n, slowToken)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	other := h.Dial(t, n, h.UniqueID("tok"))
	h.Eventually(t, wait, "both connections registered", func() bool { return n.Metric(t, "piped_connections") == 2 })

	pad := strings.Repeat("x", eventSize-100)
	msgs := make([]amqp.Publishing, events)
	for i := range msgs {
		body := fmt.Sprintf(`{"type":"event","token":"%s","event":"flood","payload":{"i":%d,"pad":"%s"}}`, slowToken, i, pad)
		msgs[i] = amqp.Publishing{Body: []byte(body)}
	}
	start := time.Now()
	flooded := make(chan error, 1)
	go func() { flooded <- h.PublishManyErr(n.Mass, "", msgs) }()

	// Calls from the other client during the flood: each answered promptly.
	var maxLatency time.Duration
	for id := 0; ; id++ {
		sent := time.Now()
		other.Send(t, fmt.Sprintf(`{"id":%d,"method":"m"}`, id))
		f := other.NextFrame(t, 2*time.Second)
		if f.Type != "result" || string(f.ID) != fmt.Sprint(id) {
			t.Fatalf("call %d: got %s", id, f.Raw)
		}
		maxLatency = max(maxLatency, time.Since(sent))
		if id >= 50 && n.Metric(t, `piped_disconnects_total{reason="slow_client"}`) == 1 {
			t.Logf("%d calls during the flood, max latency %v", id+1, maxLatency)
			break
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("the slow client was not closed within 30s (disconnects: %v)", disconnects(t, n))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("slow client closed %v after the flood began", time.Since(start))
	if err := <-flooded; err != nil {
		t.Fatalf("flood: %v", err)
	}
	rss := n.Metric(t, "process_resident_memory_bytes")
	t.Logf("node RSS %.1f MB", rss/(1<<20))
	if rss == 0 || rss > 200<<20 {
		t.Fatalf("node RSS %.0f bytes, want below 200 MB", rss)
	}
	if v := n.Metric(t, "piped_connections"); v != 1 {
		t.Fatalf("piped_connections %v, want 1", v)
	}
}

func disconnects(t *testing.T, n *h.Node) string {
	_, body := n.Get(t, "/metrics")
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "piped_disconnects_total{") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "; ")
}

// SIGTERM drains: readiness turns 503 and upgrades are reset at once;
// each connection gets the answers of its calls in flight, then close code
// 1012; calls not answered within shutdown.drain_timeout get "shutting_down"
// first; the node exits 0.
func TestShutdownDrain(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		method string
		env    []string
		want   string // "result" or an error code
	}{
		{"answered", `"sleep","payload":{"ms":300}`, nil, "result"},
		{"unanswered", `"silent"`, []string{"PIPED_SHUTDOWN_DRAIN_TIMEOUT=1s"}, "shutting_down"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := h.StartNode(t, h.WithEnv(tc.env...))
			h.Backend(t, nil, n)
			busy := h.Dial(t, n, h.UniqueID("tok"))
			idle := h.Dial(t, n, h.UniqueID("tok"))
			for id := range 10 {
				busy.Send(t, fmt.Sprintf(`{"id":%d,"method":%s}`, id, tc.method))
			}
			h.Eventually(t, wait, "10 calls published", func() bool { return n.Metric(t, "piped_calls_total") == 10 })

			// Watch readiness from just before the signal.
			var mu sync.Mutex
			var saw503, sawOther []string
			stop := make(chan struct{})
			watched := make(chan struct{})
			var once sync.Once
			stopWatch := func() { once.Do(func() { close(stop) }); <-watched }
			defer stopWatch()
			go func() {
				defer close(watched)
				for {
					select {
					case <-stop:
						return
					default:
					}
					code, body := n.Get(t, "/readyz")
					mu.Lock()
					switch code {
					case 503:
						saw503 = append(saw503, body)
					case 200, 0: // before the signal; refused after the exit
					default:
						sawOther = append(sawOther, fmt.Sprint(code, " ", body))
					}
					mu.Unlock()
					if code == 0 {
						return
					}
					time.Sleep(5 * time.Millisecond)
				}
			}()
			sig := time.Now()
			n.Signal(syscall.SIGTERM)

			if code := idle.CloseCode(t, 2*time.Second); code != 1012 {
				t.Fatalf("idle client: close code %d, want 1012", code)
			}
			t.Logf("idle client closed %v after SIGTERM", time.Since(sig))
			// The node still drains the busy client (its calls are in
			// flight, so the node cannot have exited): a new dial gets its
			// connection reset without a response, which proxies retry on
			// another node (docs/operations.md).
			code, err := h.DialStatus(n, h.UniqueID("tok"), nil)
			if code != 0 || !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("dial while draining: HTTP %d (%v), want a reset connection", code, err)
			}

			if code := busy.CloseCode(t, 10*time.Second); code != 1012 {
				t.Fatalf("busy client: close code %d, want 1012", code)
			}
			t.Logf("busy client closed %v after SIGTERM", time.Since(sig))
			// Its read loop ended at the close frame: what it holds came before.
			seen := map[string]int{}
			for len(busy.Frames()) > 0 {
				f := h.ParseFrame(t, <-busy.Frames())
				got := f.Type
				if f.Type == "error" {
					got = f.Error.Code
				}
				if got != tc.want {
					t.Errorf("before the close: %s, want %s", f.Raw, tc.want)
				}
				seen[string(f.ID)]++
			}
			for id := range 10 {
				if k := seen[fmt.Sprint(id)]; k != 1 {
					t.Errorf("call %d answered %d times before the close frame", id, k)
				}
			}
			if code := n.Wait(t, 15*time.Second); code != 0 {
				t.Fatalf("exit code %d, want 0\n%s", code, n.Logs())
			}
			stopWatch()
			mu.Lock()
			defer mu.Unlock()
			if len(sawOther) > 0 {
				t.Errorf("readyz answered %v", sawOther)
			}
			if len(saw503) == 0 {
				t.Errorf("readyz never answered 503 during the drain")
			} else if !strings.Contains(saw503[0], "draining") {
				t.Errorf("readyz 503 body %s does not say draining", saw503[0])
			}
		})
	}
}

// A misspelt PIPED_* variable stops the node at start-up, naming it.
func TestUnknownConfigVariable(t *testing.T) {
	t.Parallel()
	n := h.LaunchNode(t, h.WithEnv("PIPED_WS_MAX_MESAGE_BYTES=1"))
	if code := n.Wait(t, wait); code == 0 {
		t.Fatalf("node exited 0 with an unknown variable")
	}
	if !strings.Contains(n.Logs(), "PIPED_WS_MAX_MESAGE_BYTES") {
		t.Fatalf("output does not name the variable:\n%s", n.Logs())
	}
}

// An HTTP connection that is not a WebSocket — a health check kept alive, a
// refused upgrade — is closed once idle for http.idle_timeout (it is not
// counted in ws.max_connections, so it must not hold a descriptor forever),
// and headers beyond http.max_header_bytes are refused with 431.
func TestHTTPConnectionsBounded(t *testing.T) {
	t.Parallel()
	n := h.StartNode(t, h.WithEnv("PIPED_HTTP_IDLE_TIMEOUT=300ms", "PIPED_HTTP_MAX_HEADER_BYTES=8192"))
	addr := strings.TrimPrefix(n.URL(""), "http://")
	for _, path := range []string{"/healthz", "/api/bad%20token"} {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		if _, err := fmt.Fprintf(nc, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path); err != nil {
			t.Fatal(err)
		}
		_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4096)
		if _, err := nc.Read(buf); err != nil {
			t.Fatalf("%s: no response: %v", path, err)
		}
		start := time.Now()
		// Kept alive, then closed by the node: the next read ends with EOF.
		for {
			if _, err := nc.Read(buf); err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Fatalf("%s: the idle connection is still open after %v", path, time.Since(start))
				}
				break
			}
		}
		t.Logf("%s: closed %v after the response", path, time.Since(start).Round(time.Millisecond))
	}
	req, err := http.NewRequest("GET", n.URL("/healthz"), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Big", strings.Repeat("a", 16<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("16 KiB of headers: HTTP %d, want 431", resp.StatusCode)
	}
}

// A result carrying this node's correlation_id is delivered only to its own
// call's token: copied onto another token's result (a backend's bug, or a
// guess: the ids are not guessable either), it is dropped and counted
// (mismatch), and the call it names still gets its own result.
func TestCorrelationMismatchDropped(t *testing.T) {
	t.Parallel()
	n := h.StartNode(t, h.WithEnv("PIPED_REQUESTS_TIMEOUT=10s"))
	ch := h.Channel(t)
	ta, tb := h.UniqueID("tok-a"), h.UniqueID("tok-b")
	a, b := h.Dial(t, n, ta), h.Dial(t, n, tb)
	a.Send(t, `{"id":1,"method":"m"}`)
	da := getCall(t, ch, n, 5*time.Second)
	b.Send(t, `{"id":1,"method":"m"}`)
	db := getCall(t, ch, n, 5*time.Second)
	if da.CorrelationId == db.CorrelationId || !strings.Contains(string(da.Body), ta) {
		t.Fatalf("calls out of order: %s / %s", da.Body, db.Body)
	}
	result := func(token, payload string) []byte {
		return []byte(`{"id":1,"type":"result","token":"` + token + `","payload":"` + payload + `"}`)
	}
	// B's result with A's correlation id, and one with a guessed id.
	guess := da.CorrelationId[:strings.LastIndex(da.CorrelationId, ".")] + ".1"
	h.PublishMany(t, "exchange-in-"+n.ID, "", []amqp.Publishing{
		{CorrelationId: da.CorrelationId, Body: result(tb, "b-with-a's-id")},
		{CorrelationId: guess, Body: result(ta, "guessed")},
	})
	h.Eventually(t, wait, "both counted as mismatch", func() bool {
		return n.Metric(t, `piped_backend_messages_dropped_total{reason="mismatch"}`) == 2
	})
	a.Quiet(t, 200*time.Millisecond)
	b.Quiet(t, 0)
	h.PublishMany(t, "exchange-in-"+n.ID, "", []amqp.Publishing{
		{CorrelationId: da.CorrelationId, Body: result(ta, "a")},
		{CorrelationId: db.CorrelationId, Body: result(tb, "b")},
	})
	if f := a.NextFrame(t, wait); f.Type != "result" || string(f.Payload) != `"a"` {
		t.Fatalf("A got %s, want its own result", f.Raw)
	}
	if f := b.NextFrame(t, wait); f.Type != "result" || string(f.Payload) != `"b"` {
		t.Fatalf("B got %s, want its own result", f.Raw)
	}
}

// A payload nested deeper than ws.max_depth is answered bad_request with its
// id and never published (a 30 KB frame nested 5,000 deep used to reach the
// backend, where Python's json raised RecursionError and the process
// died); one at the limit goes through.
func TestDeepPayloadRefused(t *testing.T) {
	t.Parallel()
	n := h.StartNode(t)
	ch := h.Channel(t)
	c := h.Dial(t, n, h.UniqueID("tok"))
	nest := func(depth int) string {
		return strings.Repeat(`{"a":`, depth-1) + "{}" + strings.Repeat("}", depth-1)
	}
	c.Send(t, `{"id":"deep","method":"m","payload":`+nest(5000)+`}`)
	f := c.NextFrame(t, wait)
	if f.Type != "error" || f.Error.Code != "bad_request" || string(f.ID) != `"deep"` || !strings.Contains(f.Error.Message, "nested too deeply") {
		t.Fatalf("got %s, want bad_request \"payload nested too deeply\" for id \"deep\"", f.Raw)
	}
	c.Send(t, `{"id":"ok","method":"m","payload":`+nest(64)+`}`)
	d := getCall(t, ch, n, 5*time.Second)
	if !strings.Contains(string(d.Body), `"id":"ok"`) {
		t.Fatalf("the first call published is %.80s, want the one at the limit", d.Body)
	}
}

// An id longer than 256 bytes is refused at once, without an id in the
// answer and without canonicalising it (1e followed by 60,000 nines cost
// 9-10 ms of big-number arithmetic, on the result dispatcher too, and was
// held, copied, until the call's timeout).
func TestLongIDRefused(t *testing.T) {
	t.Parallel()
	n := h.StartNode(t)
	ch := h.Channel(t)
	c := h.Dial(t, n, h.UniqueID("tok"))
	c.Send(t, `{"id":1e`+strings.Repeat("9", 60000)+`,"method":"m"}`)
	f := c.NextFrame(t, wait)
	if f.Type != "error" || f.Error.Code != "bad_request" || f.ID != nil || f.Error.Message != "id is longer than 256 bytes" {
		t.Fatalf("got %.200s, want bad_request \"id is longer than 256 bytes\" without an id", f.Raw)
	}
	c.Send(t, `{"id":"`+strings.Repeat("u", 254)+`","method":"m"}`) // 256 bytes: accepted
	if d := getCall(t, ch, n, 5*time.Second); !strings.Contains(string(d.Body), strings.Repeat("u", 254)) {
		t.Fatalf("the call published is %.80s, want the one with the 256-byte id", d.Body)
	}
}

// A client flooding frames outside the call rate limit — pings, invalid
// frames, reserved methods, calls already refused — is held to its frame
// budget and then closed with 1008 rate_limited, while a bystander on the
// same node is answered throughout.
func TestFrameFloodClosed(t *testing.T) {
	t.Parallel()
	n := h.StartNode(t, h.WithEnv("PIPED_WS_FRAME_RATE=5", "PIPED_WS_FRAME_BURST=20"))
	attacker := h.Dial(t, n, h.UniqueID("flood"))
	bystander := h.Dial(t, n, h.UniqueID("bystander"))
	kinds := []string{`{"id":%d,"method":"ping"}`, `{"id":%d,"method":"$connect"}`, `not json %d`, `{"id":%d}`}
	var flood []byte
	for i := range 200 {
		flood = wsframe.AppendClientFrame(flood, 0x81, [4]byte{7, 7, 7, 7}, fmt.Appendf(nil, kinds[i%len(kinds)], i))
	}
	if _, err := attacker.WS.NetConn().Write(flood); err != nil {
		t.Fatal(err)
	}
	if code := attacker.CloseCode(t, wait); code != 1008 {
		t.Fatalf("the flooding client was closed with %d, want 1008", code)
	}
	bystander.Send(t, `{"id":"b","method":"ping"}`)
	if f := bystander.NextFrame(t, wait); f.Event != "pong" || string(f.ID) != `"b"` {
		t.Fatalf("bystander got %s, want its pong", f.Raw)
	}
	h.Eventually(t, wait, "the close counted", func() bool {
		return n.Metric(t, `piped_disconnects_total{reason="rate_limited"}`) == 1
	})
}

// A backend message over amqp.max_message_bytes is dropped unread and
// counted (too_big); a result carrying its call's correlation id answers
// the call with bad_result. (A 5 MB broadcast used to cost every client of
// the node its delivery time.)
func TestTooBigBackendMessagesDropped(t *testing.T) {
	t.Parallel()
	n := h.StartNode(t, h.WithEnv("PIPED_AMQP_MAX_MESSAGE_BYTES=4096", "PIPED_REQUESTS_TIMEOUT=10s"))
	ch := h.Channel(t)
	token := h.UniqueID("tok")
	c := h.Dial(t, n, token)
	c.Send(t, `{"id":1,"method":"m"}`)
	d := getCall(t, ch, n, 5*time.Second)
	big := strings.Repeat("x", 8192)
	h.PublishMany(t, "exchange-in-"+n.ID, "", []amqp.Publishing{
		{CorrelationId: d.CorrelationId, Body: []byte(`{"id":1,"type":"result","token":"` + token + `","payload":"` + big + `"}`)},
		{Body: []byte(`{"type":"event","token":"` + token + `","event":"big","payload":"` + big + `"}`)},
		{Body: []byte(`{"type":"event","token":"` + token + `","event":"after"}`)},
	})
	if f := c.NextFrame(t, wait); f.Type != "error" || f.Error.Code != "bad_result" || string(f.ID) != "1" {
		t.Fatalf("got %.200s, want bad_result for id 1", f.Raw)
	}
	if f := c.NextFrame(t, wait); f.Event != "after" {
		t.Fatalf("got %.200s, want the small event after the dropped one", f.Raw)
	}
	h.Eventually(t, wait, "both counted as too_big", func() bool {
		return n.Metric(t, `piped_backend_messages_dropped_total{reason="too_big"}`) == 2
	})
}

// A method with a NUL, a newline or another control character is refused
// before it can become a routing key or a log line.
func TestControlCharacterMethodRefused(t *testing.T) {
	t.Parallel()
	n := h.StartNode(t)
	c := h.Dial(t, n, h.UniqueID("tok"))
	for i, m := range []string{`a\u0000b`, `a\nlevel=ERROR msg=forged`, "a\x7fb"} {
		c.Send(t, fmt.Sprintf(`{"id":%d,"method":"%s"}`, i, m))
		f := c.NextFrame(t, wait)
		if f.Error.Code != "bad_request" || f.Error.Message != "method must not contain control characters" || string(f.ID) != strconv.Itoa(i) {
			t.Fatalf("method %q: got %s", m, f.Raw)
		}
	}
	settled(t, n, c)
}
