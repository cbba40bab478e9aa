//go:build faults

package faults

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	h "github.com/piped-dev/piped/test/harness"
)

const (
	before = 2 * time.Second // traffic before the fault
	// after is how long the traffic goes on once calls get results again;
	// the calls of its last second must all get results (the first part
	// lets a node and backend that were down for seconds catch up). It
	// exceeds requestTimeout by more than that second: calls the broker
	// lost before the recovery stay in flight until their timeout, and while
	// more than ws.max_inflight of them are pending a new call on the same
	// connection is refused with too_many_requests, which is right but is
	// not what this check is about.
	after = requestTimeout + 2*time.Second
)

// recovered waits, after the fault began at faultAt, for /readyz to leave
// 200 and come back, for the broker connection count to grow, and for calls
// sent after that to get results again. One /readyz answer of the outage
// must mention one of reasons: texts only this fault produces.
func recovered(t *testing.T, n *h.Node, tr *traffic, w *h.ReadyWatch, faultAt time.Time, connects float64, reasons ...string) {
	t.Helper()
	down := w.WaitNotReady(t, faultAt, "/readyz to leave 200 after the fault")
	t.Logf("/readyz %d %s, %v after the fault began", down.Code, down.Body, down.At.Sub(faultAt).Round(time.Millisecond))
	up := w.WaitReadyAgain(t, down.At, 60*time.Second)
	// Every answer of the outage is a 503 with a JSON reason, and one of them
	// names the cause (the first may be whichever loss the node saw first,
	// e.g. its consumer cancelled before the connection dropped).
	mentioned := false
	for _, s := range w.Outage(faultAt) {
		if s.Code != 503 || !strings.Contains(s.Body, `"reason"`) {
			t.Errorf("/readyz answered %d %s during the outage, want 503 with a reason", s.Code, s.Body)
		}
		for _, r := range reasons {
			mentioned = mentioned || strings.Contains(s.Body, r)
		}
	}
	if !mentioned {
		t.Errorf("no /readyz answer during the outage mentions any of %q:%s", reasons, w)
	}
	t.Logf("/readyz 200 again after %v", up.Sub(down.At).Round(time.Millisecond))
	h.Eventually(t, 10*time.Second, "piped_broker_connects_total to grow", func() bool {
		return n.Metric(t, "piped_broker_connects_total") > connects
	})
	var back time.Time
	h.Eventually(t, 30*time.Second, "a call sent after the recovery to get a result", func() bool {
		back = tr.firstResultAfter(up)
		return !back.IsZero()
	})
	t.Logf("calls get results again from %v after /readyz recovered", back.Sub(up).Round(time.Millisecond))
}

// checkAfterRecovery asserts that the calls of the traffic's last second
// all got results.
func checkAfterRecovery(t *testing.T, tr *traffic) {
	t.Helper()
	tl := tr.count(tr.stopped.Add(-time.Second), time.Time{})
	t.Logf("in the last second of traffic: %s", tl)
	if tl.made == 0 || tl.results != tl.made {
		t.Errorf("after the recovery %d of %d calls got results, want all", tl.results, tl.made)
	}
}

// scenario is one fault under traffic: a node with its echo backend,
// clients making calls, and a watch on /readyz.
type scenario struct {
	n        *h.Node
	tr       *traffic
	w        *h.ReadyWatch
	connects float64 // piped_broker_connects_total before the fault
}

// begin starts the node (with env added to its environment), the clients
// and their traffic (changed by tweak first, when not nil); the fault may
// follow once it returns.
func begin(t *testing.T, tweak func(*traffic), env ...string) *scenario {
	t.Helper()
	n := startNode(t, env...)
	sc := &scenario{n: n, tr: dial(t, n), w: h.WatchReady(t, n)}
	sc.connects = n.Metric(t, "piped_broker_connects_total")
	if tweak != nil {
		tweak(sc.tr)
	}
	sc.tr.start()
	time.Sleep(before)
	return sc
}

// end lets the traffic run on past the recovery, then checks that every
// call got exactly one answer and the last second's calls got results.
func (sc *scenario) end(t *testing.T, fault string) {
	t.Helper()
	time.Sleep(after)
	sc.tr.finish(t, fault)
	checkAfterRecovery(t, sc.tr)
	t.Logf("/readyz changes:%s", sc.w)
}

// The broker closes every connection: the node reconnects at once, its
// clients stay connected, and every call gets exactly one answer.
func TestBrokerClosesConnections(t *testing.T) {
	sc := begin(t, nil)
	faultAt := time.Now()
	mustCtl(t, "close_all_connections", "test")
	// The broker's close names the cause: "CONNECTION_FORCED - test".
	recovered(t, sc.n, sc.tr, sc.w, faultAt, sc.connects, "CONNECTION_FORCED - test")
	sc.end(t, "close_all_connections")
	t.Logf("piped_broker_connects_total %v", sc.n.Metric(t, "piped_broker_connects_total"))
}

// The RabbitMQ application stops for a few seconds and starts again: the
// node reconnects and redeclares, clients stay, every call gets exactly one
// answer, and the topology works again afterwards.
func TestBrokerAppRestart(t *testing.T) {
	sc := begin(t, nil)
	n, tr := sc.n, sc.tr
	faultAt := time.Now()
	mustCtl(t, "stop_app")
	time.Sleep(3 * time.Second)
	mustCtl(t, "start_app")
	// Stopping closes the connections ("CONNECTION_FORCED - broker forced
	// connection closure with reason 'shutdown'") or first cancels the
	// consumer; while stopped, reconnecting is refused.
	recovered(t, n, tr, sc.w, faultAt, sc.connects, "CONNECTION_FORCED", "cancelled by the broker", "connection refused")

	// The topology is back: both queues exist, and an event through the
	// mass exchange reaches the token's clients (0 and 1).
	for _, q := range []string{"queue-in-" + n.ID, "queue-out-" + n.ID} {
		h.Inspect(t, q)
	}
	h.Publish(t, n.Mass, "", amqp.Publishing{Body: []byte(`{"type":"event","token":"tok-0-` + n.ID + `","event":"after-restart"}`)})
	h.Eventually(t, 10*time.Second, "the event after the restart", func() bool {
		for _, tc := range tr.clients[:2] {
			tc.mu.Lock()
			k := tc.events["after-restart"]
			tc.mu.Unlock()
			if k != 1 {
				return false
			}
		}
		return true
	})
	sc.end(t, "stop_app/start_app")
}

// A memory alarm blocks publishing: calls fail at once with "unavailable"
// and /readyz says why; once the alarm clears, calls get results again.
func TestBrokerMemoryAlarm(t *testing.T) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if out, err := ctl(ctx, "set_vm_memory_high_watermark", "0.4"); err != nil {
			t.Errorf("restoring the memory watermark: %v\n%s", err, out)
		}
	})
	sc := begin(t, nil)
	n, tr, w := sc.n, sc.tr, sc.w
	faultAt := time.Now()
	mustCtl(t, "set_vm_memory_high_watermark", "0")
	blocked := w.WaitNotReady(t, faultAt, "/readyz to report the block")
	t.Logf("/readyz %d %s, %v after the alarm was set", blocked.Code, blocked.Body, blocked.At.Sub(faultAt).Round(time.Millisecond))
	if blocked.Code != 503 || !strings.Contains(blocked.Body, "block") {
		t.Errorf("/readyz answered %d %s, want 503 with a reason mentioning the block", blocked.Code, blocked.Body)
	}
	time.Sleep(2 * time.Second) // calls while blocked
	unblockAt := time.Now()

	mustCtl(t, "set_vm_memory_high_watermark", "0.4")
	up := w.WaitReadyAgain(t, blocked.At, 30*time.Second)
	var back time.Time
	h.Eventually(t, 30*time.Second, "a call sent after the alarm to get a result", func() bool {
		back = tr.firstResultAfter(up)
		return !back.IsZero()
	})
	t.Logf("/readyz 200 again %v after the alarm was cleared; results %v after that", up.Sub(unblockAt).Round(time.Millisecond), back.Sub(up).Round(time.Millisecond))
	sc.end(t, "memory alarm")

	// Every call made while the node knew of the block failed at once.
	from := blocked.At.Add(100 * time.Millisecond)
	during := tr.count(from, unblockAt)
	worst, _ := tr.maxLatency(from, unblockAt, "unavailable")
	t.Logf("while blocked: %s; slowest unavailable error after %v", during, worst)
	if during.made == 0 || during.codes["unavailable"] != during.made || worst > 2*time.Second {
		t.Errorf("while blocked %d of %d calls failed with unavailable (slowest after %v), want all within 2s",
			during.codes["unavailable"], during.made, worst)
	}
	// A block is not a lost connection: the node rides it out on the same session.
	if c := n.Metric(t, "piped_broker_connects_total"); c != sc.connects {
		t.Errorf("the node reconnected during the alarm (%v connects, was %v), want the same session throughout", c, sc.connects)
	}
}

// The broker stops reading (its process is stopped with SIGSTOP) before it
// could send connection.blocked: the node's publishes stall on a full
// socket. Every call with an id is still answered ("unavailable" or
// "timeout") within amqp.confirm_timeout plus a margin, pings on the same
// connections are answered at once, and /readyz says why. After SIGCONT
// calls get results again and no call is answered twice.
func TestBrokerStopsReading(t *testing.T) {
	const (
		confirmTimeout = 2 * time.Second
		// margin: the confirm timeout is checked every confirmTimeout/4,
		// and answers cross a loaded machine.
		margin  = 2 * time.Second
		stopFor = 12 * time.Second // < 3 heartbeats (30s): the sessions survive the stop
		pongIn  = time.Second      // "at once" for a ping, on a loaded machine
		// Longer than the bound on answers below: a call must not get its
		// answer from its timeout.
		callTimeout = 6 * time.Second
	)
	pid := brokerPID(t)
	cont := func() {
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			t.Errorf("SIGCONT %d: %v", pid, err)
		}
	}
	t.Cleanup(cont) // never leave the node stopped for the tests after this one
	sc := begin(t, func(tr *traffic) {
		tr.pad = strings.Repeat("x", 512) // fills the broker's socket within seconds
		tr.pingEvery = 10
		tr.grace = callTimeout + 2*time.Second
	},
		"PIPED_AMQP_CONFIRM_TIMEOUT="+confirmTimeout.String(),
		"PIPED_REQUESTS_TIMEOUT="+callTimeout.String(),
		// Calls wait up to confirmTimeout at 100 a second per connection:
		// more than the default 128 may be in flight, which is not this test's subject.
		"PIPED_WS_MAX_INFLIGHT=4096",
	)
	n, tr, w := sc.n, sc.tr, sc.w

	stopAt := time.Now()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP %d: %v", pid, err)
	}
	t.Logf("SIGSTOP to the broker (pid %d)", pid)
	time.Sleep(time.Until(stopAt.Add(stopFor)))
	contAt := time.Now()
	cont()
	t.Logf("SIGCONT after %v", contAt.Sub(stopAt).Round(time.Millisecond))

	// /readyz named the stall: the publishes did wait on the stopped broker.
	sawStall := false
	for _, s := range w.Outage(stopAt) {
		if !sawStall && strings.Contains(s.Body, "stopped reading publishes") {
			t.Logf("/readyz %d %s, %v after SIGSTOP", s.Code, s.Body, s.At.Sub(stopAt).Round(time.Millisecond))
			sawStall = true
		}
	}
	if !sawStall {
		t.Errorf("no /readyz answer during the stop says the broker stopped reading publishes (the sockets never filled?):%s", w)
	}

	up := contAt
	if down, ok := w.NotReadySince(stopAt); ok {
		up = w.WaitReadyAgain(t, down.At, 60*time.Second)
	}
	var back time.Time
	h.Eventually(t, 60*time.Second, "a call sent after SIGCONT to get a result", func() bool {
		back = tr.firstResultAfter(contAt)
		return !back.IsZero()
	})
	t.Logf("/readyz 200 again %v after SIGCONT; results for calls sent %v after SIGCONT",
		up.Sub(contAt).Round(time.Millisecond), back.Sub(contAt).Round(time.Millisecond))

	// Pings during the stop, on the connections that make the calls.
	worst, median, answered, unanswered := tr.pingLatency(stopAt, contAt.Add(-pongIn))
	t.Logf("pings during the stop: %d answered (median %v, slowest %v), %d unanswered",
		answered, median.Round(time.Microsecond), worst.Round(time.Microsecond), unanswered)
	if answered == 0 || unanswered > 0 || worst > pongIn {
		t.Errorf("pings during the stop: %d answered, slowest after %v, %d unanswered; want all within %v",
			answered, worst, unanswered, pongIn)
	}

	sc.end(t, "SIGSTOP/SIGCONT")

	// Every call sent while the broker was stopped (early enough for its
	// deadline to pass before SIGCONT) failed within the bound.
	bound := confirmTimeout + margin
	from, to := stopAt.Add(50*time.Millisecond), contAt.Add(-bound)
	during := tr.count(from, to)
	slowest, _ := tr.maxLatency(from, to, "")
	t.Logf("sent during the stop: %s; slowest answer after %v", during, slowest.Round(time.Millisecond))
	if during.made == 0 || during.lost > 0 || during.results > 0 ||
		during.codes["unavailable"]+during.codes["timeout"] != during.made || slowest > bound {
		t.Errorf("during the stop %d calls: %d results, codes %v, %d unanswered, slowest answer after %v; want all unavailable or timeout within %v",
			during.made, during.results, during.codes, during.lost, slowest, bound)
	}
	t.Logf("piped_broker_connects_total %v (was %v)", n.Metric(t, "piped_broker_connects_total"), sc.connects)
}
