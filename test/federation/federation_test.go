//go:build federation

package federation

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	h "github.com/piped-dev/piped/test/harness"
)

// wait bounds every wait for something that should happen.
const wait = 15 * time.Second

// quiet is how long a client must receive nothing more after its one
// event: long enough for a looping event to come round again many times
// (a federation hop on one machine takes milliseconds).
const quiet = 2 * time.Second

// startNode starts a Piped node in region r: its broker is r's, its mass
// exchange exchange-mass.
func startNode(t *testing.T, r *region) *h.Node {
	t.Helper()
	return h.StartNode(t, h.WithEnv(
		"PIPED_AMQP_URL="+r.node.URL(),
		"PIPED_AMQP_MASS_EXCHANGE="+massExchange,
		"PIPED_AMQP_RECONNECT_MAX=500ms",
	))
}

// publish publishes body to r's exchange-mass and waits for r's confirm.
func publish(t *testing.T, r *region, body string) {
	t.Helper()
	h.PublishTo(t, r.node.URL(), massExchange, "", amqp.Publishing{ContentType: "application/json", Body: []byte(body)})
}

// event is an event for token on exchange-mass, and what its clients get.
func event(token, name string) (body, frame string) {
	return `{"type":"event","token":"` + token + `","event":"` + name + `"}`,
		`{"type":"event","event":"` + name + `"}`
}

// waitFederated waits until an event published in from reaches a client
// of node n in the other region: the link runs and has copied n's binding
// to from's exchange-mass (links copy bindings asynchronously). It uses a
// token of its own, so the tests' counts see none of its events.
func waitFederated(t *testing.T, from *region, n *h.Node) {
	t.Helper()
	token := h.UniqueID("probe")
	c := h.Dial(t, n, token)
	body, _ := event(token, "probe")
	start := time.Now()
	deadline := start.Add(30 * time.Second)
	for {
		publish(t, from, body)
		select {
		case <-c.Frames():
			t.Logf("region %s → node %s: the first event arrived %v after the node was ready", from.name, n.ID, time.Since(start).Round(time.Millisecond))
			return
		case <-time.After(300 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no event published in region %s reached node %s in 30 s; federation_status:\n%s", from.name, n.ID, status(t, from, regionOf(from)))
		}
	}
}

// regionOf returns the other region.
func regionOf(r *region) *region {
	if r == regionA {
		return regionB
	}
	return regionA
}

// status returns federation_status of both regions, for failure messages.
func status(t *testing.T, rs ...*region) string {
	var b strings.Builder
	for _, r := range rs {
		out, err := linkStatus(context.Background(), r)
		b.WriteString("region " + r.name + ": " + out)
		if err != nil {
			b.WriteString(err.Error())
		}
		b.WriteString("\n")
	}
	return b.String()
}

// federationQueues returns the message count of each federation queue in r
// (the upstream queues the other region's link consumes), by name.
func federationQueues(t *testing.T, r *region) map[string]int {
	t.Helper()
	out, err := r.node.Ctl(t.Context(), "-q", "list_queues", "--no-table-headers", "name", "messages")
	if err != nil {
		t.Fatalf("region %s: %v\n%s", r.name, err, out)
	}
	qs := map[string]int{}
	for line := range strings.SplitSeq(out, "\n") {
		i := strings.LastIndexAny(line, " \t")
		if i < 0 || !strings.HasPrefix(line, "federation:") {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(line[i+1:]))
		if err != nil {
			t.Fatalf("region %s: list_queues line %q", r.name, line)
		}
		qs[strings.TrimSpace(line[:i])] = n
	}
	return qs
}

// An event published to one region's exchange-mass reaches the token's
// client in that region once and its client in the other region once, in
// both directions; nothing comes round again (max-hops 1): after 2 s more
// each client still has exactly one event, each node dispatched exactly
// one, and the federation queues in both regions are empty.
func TestEventAcrossRegionsExactlyOnce(t *testing.T) {
	nA, nB := startNode(t, regionA), startNode(t, regionB)
	waitFederated(t, regionA, nB)
	waitFederated(t, regionB, nA)
	qa, qb := federationQueues(t, regionA), federationQueues(t, regionB)
	if len(qa) != 1 || len(qb) != 1 {
		t.Fatalf("federation queues: region A %v, region B %v; want one in each (the other region's link)", qa, qb)
	}
	t.Logf("federation queues: region A %v, region B %v", qa, qb)
	for _, from := range []*region{regionA, regionB} {
		token := h.UniqueID("user")
		cA, cB := h.Dial(t, nA, token), h.Dial(t, nB, token)
		before := map[*h.Node]float64{nA: nA.Metric(t, "piped_events_total"), nB: nB.Metric(t, "piped_events_total")}
		body, want := event(token, "from-"+from.name)
		publish(t, from, body)
		for name, c := range map[string]*h.Client{"A": cA, "B": cB} {
			if got := string(c.Next(t, wait)); got != want {
				t.Fatalf("published in region %s: the client in region %s got %s, want %s", from.name, name, got, want)
			}
		}
		cA.Quiet(t, quiet) // cB's frames meanwhile wait in its buffer
		select {
		case b := <-cB.Frames():
			t.Fatalf("published in region %s: the client in region B got a second frame %s", from.name, b)
		default:
		}
		for n, b := range before {
			if d := n.Metric(t, "piped_events_total") - b; d != 1 {
				t.Errorf("published in region %s: node %s dispatched %v events, want 1", from.name, n.ID, d)
			}
		}
		for _, r := range []*region{regionA, regionB} {
			for q, m := range federationQueues(t, r) {
				if m != 0 {
					t.Errorf("published in region %s: %q in region %s holds %d messages, want 0", from.name, q, r.name, m)
				}
			}
		}
		t.Logf("published in region %s: 1 event at the client in A, 1 in B, none more in %v", from.name, quiet)
	}
}

// waitLink waits until r's link runs (running) or does not (!running).
func waitLink(ctx context.Context, t *testing.T, r *region, running bool) {
	t.Helper()
	h.Eventually(t, 30*time.Second, "region "+r.name+"'s link running="+strconv.FormatBool(running), func() bool {
		out, err := linkStatus(ctx, r)
		return err == nil && strings.Contains(out, "{status,running}") == running
	})
}

// A region cut off from the other: each region's events still reach its own
// clients at once, and the events for the other region wait in the
// federation queue of the region they were published in (on its broker,
// which the other region's link consumes); when the network is back the
// links reconnect and deliver them, late and exactly once. The cut closes
// the proxies between the regions (connections reset, new ones refused).
func TestRegionCutOffDelaysEvents(t *testing.T) {
	nA, nB := startNode(t, regionA), startNode(t, regionB)
	waitFederated(t, regionA, nB)
	waitFederated(t, regionB, nA)
	token := h.UniqueID("user")
	cA, cB := h.Dial(t, nA, token), h.Dial(t, nB, token)

	t.Cleanup(func() { // whatever happens, the next test finds the links running
		_ = regionA.in.Heal()
		_ = regionB.in.Heal()
		waitLink(context.Background(), t, regionA, true)
		waitLink(context.Background(), t, regionB, true)
	})
	regionA.in.Cut()
	regionB.in.Cut()
	cut := time.Now()
	waitLink(t.Context(), t, regionA, false)
	waitLink(t.Context(), t, regionB, false)

	bodyA, wantA := event(token, "in-a-during-cut")
	bodyB, wantB := event(token, "in-b-during-cut")
	publish(t, regionA, bodyA)
	publish(t, regionB, bodyB)
	if got := string(cA.Next(t, wait)); got != wantA {
		t.Fatalf("the client in A got %s, want %s (its own region's event, at once)", got, wantA)
	}
	if got := string(cB.Next(t, wait)); got != wantB {
		t.Fatalf("the client in B got %s, want %s (its own region's event, at once)", got, wantB)
	}
	cA.Quiet(t, time.Second) // the other region's event cannot come while cut off
	select {
	case b := <-cB.Frames():
		t.Fatalf("the client in B got %s while region A was cut off", b)
	default:
	}
	for _, r := range []*region{regionA, regionB} {
		qs := federationQueues(t, r)
		if len(qs) != 1 {
			t.Fatalf("region %s has federation queues %v during the cut, want one (the other region's link's, kept)", r.name, qs)
		}
		for q, m := range qs {
			if m != 1 {
				t.Errorf("%q in region %s holds %d messages during the cut, want 1 (the event for the other region)", q, r.name, m)
			}
		}
	}

	if err := regionA.in.Heal(); err != nil {
		t.Fatal(err)
	}
	if err := regionB.in.Heal(); err != nil {
		t.Fatal(err)
	}
	healed := time.Now()
	if got := string(cB.Next(t, 30*time.Second)); got != wantA {
		t.Fatalf("after the cut the client in B got %s, want region A's event %s", got, wantA)
	}
	if got := string(cA.Next(t, 30*time.Second)); got != wantB {
		t.Fatalf("after the cut the client in A got %s, want region B's event %s", got, wantB)
	}
	late := time.Since(healed)
	cA.Quiet(t, quiet)
	select {
	case b := <-cB.Frames():
		t.Fatalf("the client in B got a second late frame %s", b)
	default:
	}
	for _, r := range []*region{regionA, regionB} {
		for q, m := range federationQueues(t, r) {
			if m != 0 {
				t.Errorf("%q in region %s holds %d messages after the cut, want 0", q, r.name, m)
			}
		}
	}
	t.Logf("cut off for %v: each region's event reached its own client at once, and the other region's client %v after the network was back, exactly once",
		healed.Sub(cut).Round(time.Millisecond), late.Round(time.Millisecond))
}
