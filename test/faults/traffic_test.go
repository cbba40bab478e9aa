//go:build faults

package faults

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	h "github.com/piped-dev/piped/test/harness"
)

// Settings of the fault tests' nodes and traffic.
const (
	requestTimeout = 3 * time.Second
	clients        = 20
	callEvery      = 10 * time.Millisecond
	// grace after the traffic stops: longer than requestTimeout, so that
	// every call has had its answer and a duplicate would have shown up.
	grace = requestTimeout + 2*time.Second
)

// startNode starts a node on this package's broker (the harness passes
// PIPED_TEST_AMQP_URL on as PIPED_AMQP_URL) with the fault tests' settings
// and an echo backend for it.
func startNode(t *testing.T, env ...string) *h.Node {
	t.Helper()
	env = append([]string{
		"PIPED_REQUESTS_TIMEOUT=" + requestTimeout.String(),
		"PIPED_AMQP_RECONNECT_MAX=1s",
	}, env...)
	n := h.LaunchNode(t, h.WithEnv(env...))
	n.WaitReady(t, 30*time.Second)
	h.Backend(t, nil, n)
	return n
}

// answer is one frame with an id that a client received.
type answer struct {
	kind string // "result" or the error code
	at   time.Time
}

// tclient is a traffic client: a sender that makes a call every callEvery
// with increasing ids, and a reader that records every frame.
type tclient struct {
	idx int
	c   *h.Client

	mu      sync.Mutex
	sent    map[int]time.Time
	answers map[int][]answer
	events  map[string]int
	wrong   []string // frames that are no answer to a call of ours
	sendErr error
	closed  time.Time
	pings   []time.Time // pings sent and not yet answered, oldest first
	pongs   []pong
}

// pong is the answer to one ping: when the ping was sent, and how long the
// pong took.
type pong struct {
	sent    time.Time
	latency time.Duration
}

// traffic is the clients of one test and the readiness watcher.
type traffic struct {
	t       *testing.T
	n       *h.Node
	clients []*tclient
	// Set before start.
	pad       string        // added to every call's payload, to make the traffic heavier
	pingEvery int           // every pingEvery-th send is a {"method":"ping"} (0: none)
	grace     time.Duration // wait after the traffic stops; 0: grace
	stopSend,
	stopRead chan struct{}
	stopped time.Time      // when sending stopped
	wg      sync.WaitGroup // senders
	rg      sync.WaitGroup // readers
}

// dial connects the clients: two per token.
func dial(t *testing.T, n *h.Node) *traffic {
	tr := &traffic{t: t, n: n, stopSend: make(chan struct{}), stopRead: make(chan struct{})}
	for i := range clients {
		tc := &tclient{idx: i, c: h.Dial(t, n, fmt.Sprintf("tok-%d-%s", i/2, n.ID)),
			sent: map[int]time.Time{}, answers: map[int][]answer{}, events: map[string]int{}}
		tr.clients = append(tr.clients, tc)
		tr.rg.Add(1)
		go tr.read(tc)
	}
	t.Cleanup(func() { tr.stop() })
	return tr
}

// start begins sending.
func (tr *traffic) start() {
	for _, tc := range tr.clients {
		tr.wg.Add(1)
		go tr.send(tc)
	}
}

func (tr *traffic) send(tc *tclient) {
	defer tr.wg.Done()
	tick := time.NewTicker(callEvery)
	defer tick.Stop()
	for id, n := 1, 1; ; n++ {
		select {
		case <-tr.stopSend:
			return
		case <-tick.C:
		}
		if tr.pingEvery > 0 && n%tr.pingEvery == 0 {
			tc.mu.Lock()
			tc.pings = append(tc.pings, time.Now())
			tc.mu.Unlock()
			// The only writer of this socket besides the library's pongs.
			if err := tc.c.WS.WriteMessage(websocket.TextMessage, []byte(`{"method":"ping"}`)); err != nil {
				tc.mu.Lock()
				tc.sendErr = err
				tc.mu.Unlock()
				return
			}
			continue
		}
		tc.mu.Lock()
		tc.sent[id] = time.Now()
		tc.mu.Unlock()
		err := tc.c.WS.WriteMessage(websocket.TextMessage,
			fmt.Appendf(nil, `{"id":%d,"method":"m","payload":%s}`, id, tr.payload(tc)))
		if err != nil {
			tc.mu.Lock()
			delete(tc.sent, id)
			tc.sendErr = err
			tc.mu.Unlock()
			return
		}
		id++
	}
}

// payload is the payload of tc's calls, which the echo backend sends back.
func (tr *traffic) payload(tc *tclient) string {
	if tr.pad == "" {
		return fmt.Sprintf(`{"c":%d}`, tc.idx)
	}
	return fmt.Sprintf(`{"c":%d,"pad":%q}`, tc.idx, tr.pad)
}

func (tr *traffic) read(tc *tclient) {
	defer tr.rg.Done()
	handle := func(b []byte) {
		var f struct {
			ID      *int            `json:"id"`
			Type    string          `json:"type"`
			Event   string          `json:"event"`
			Payload json.RawMessage `json:"payload"`
			Error   struct{ Code string }
		}
		now := time.Now()
		tc.mu.Lock()
		defer tc.mu.Unlock()
		if err := json.Unmarshal(b, &f); err != nil {
			tc.wrong = append(tc.wrong, string(b))
			return
		}
		switch {
		case f.Type == "event" && f.Event == "pong" && len(tc.pings) > 0:
			tc.pongs = append(tc.pongs, pong{tc.pings[0], now.Sub(tc.pings[0])})
			tc.pings = tc.pings[1:]
		case f.Type == "event":
			tc.events[f.Event]++
		case f.ID == nil:
			tc.wrong = append(tc.wrong, string(b))
		case f.Type == "result" && string(f.Payload) == tr.payload(tc):
			tc.answers[*f.ID] = append(tc.answers[*f.ID], answer{"result", now})
		case f.Type == "error" && f.Error.Code != "":
			tc.answers[*f.ID] = append(tc.answers[*f.ID], answer{f.Error.Code, now})
		default:
			tc.wrong = append(tc.wrong, string(b))
		}
	}
	closed := tc.c.Closed()
	for {
		select {
		case b := <-tc.c.Frames():
			handle(b)
		case <-closed:
			tc.mu.Lock()
			tc.closed = time.Now()
			tc.mu.Unlock()
			closed = nil
		case <-tr.stopRead:
			for {
				select {
				case b := <-tc.c.Frames():
					handle(b)
				default:
					return
				}
			}
		}
	}
}

// stop stops sending and reading; safe to call twice.
func (tr *traffic) stop() {
	select {
	case <-tr.stopSend:
	default:
		close(tr.stopSend)
	}
	tr.wg.Wait()
	select {
	case <-tr.stopRead:
	default:
		close(tr.stopRead)
	}
	tr.rg.Wait()
}

// tally counts the calls and their answers.
type tally struct {
	made, results, errors, lost, dup int
	codes                            map[string]int
	wrong                            []string
	lostIDs                          []string
	closed                           []string
	sendErrs                         []string
}

func (tl tally) String() string {
	codes := make([]string, 0, len(tl.codes))
	for c, k := range tl.codes {
		codes = append(codes, fmt.Sprintf("%s=%d", c, k))
	}
	sort.Strings(codes)
	return fmt.Sprintf("made %d, answered %d (results %d, errors %d [%s]), lost %d, answered twice or more %d, stray frames %d",
		tl.made, tl.results+tl.errors, tl.results, tl.errors, strings.Join(codes, " "), tl.lost, tl.dup, len(tl.wrong))
}

// count tallies the calls sent in [from, to) (zero times: no bound).
func (tr *traffic) count(from, to time.Time) tally {
	tl := tally{codes: map[string]int{}}
	for _, tc := range tr.clients {
		tc.mu.Lock()
		for id, at := range tc.sent {
			if !from.IsZero() && at.Before(from) || !to.IsZero() && !at.Before(to) {
				continue
			}
			tl.made++
			as := tc.answers[id]
			switch {
			case len(as) == 0:
				tl.lost++
				if len(tl.lostIDs) < 10 {
					tl.lostIDs = append(tl.lostIDs, fmt.Sprintf("client %d id %d sent %s", tc.idx, id, at.Format("15:04:05.000")))
				}
				continue
			case len(as) > 1:
				tl.dup++
			}
			if as[0].kind == "result" {
				tl.results++
			} else {
				tl.errors++
				tl.codes[as[0].kind]++
			}
		}
		if from.IsZero() && to.IsZero() {
			for id := range tc.answers {
				if _, ok := tc.sent[id]; !ok {
					tl.wrong = append(tl.wrong, fmt.Sprintf("client %d: answer to id %d, never sent", tc.idx, id))
				}
			}
			tl.wrong = append(tl.wrong, tc.wrong...)
			if !tc.closed.IsZero() {
				tl.closed = append(tl.closed, fmt.Sprintf("client %d closed at %s: %v", tc.idx, tc.closed.Format("15:04:05.000"), tc.c.Err()))
			}
			if tc.sendErr != nil {
				tl.sendErrs = append(tl.sendErrs, fmt.Sprintf("client %d: %v", tc.idx, tc.sendErr))
			}
		}
		tc.mu.Unlock()
	}
	return tl
}

// maxLatency returns, for the calls sent in [from, to) whose first answer
// is of kind (any kind for ""), the largest time to that answer and how
// many such calls there were.
func (tr *traffic) maxLatency(from, to time.Time, kind string) (time.Duration, int) {
	var worst time.Duration
	n := 0
	for _, tc := range tr.clients {
		tc.mu.Lock()
		for id, at := range tc.sent {
			if at.Before(from) || !at.Before(to) {
				continue
			}
			if as := tc.answers[id]; len(as) > 0 && (kind == "" || as[0].kind == kind) {
				n++
				worst = max(worst, as[0].at.Sub(at))
			}
		}
		tc.mu.Unlock()
	}
	return worst, n
}

// pingLatency returns, for the pings sent in [from, to), the largest and
// the median time to their pong, and how many pings got none.
func (tr *traffic) pingLatency(from, to time.Time) (worst, median time.Duration, answered, unanswered int) {
	var lats []time.Duration
	for _, tc := range tr.clients {
		tc.mu.Lock()
		for _, p := range tc.pongs {
			if !p.sent.Before(from) && p.sent.Before(to) {
				lats = append(lats, p.latency)
			}
		}
		for _, at := range tc.pings {
			if !at.Before(from) && at.Before(to) {
				unanswered++
			}
		}
		tc.mu.Unlock()
	}
	if len(lats) == 0 {
		return 0, 0, 0, unanswered
	}
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	return lats[len(lats)-1], lats[len(lats)/2], len(lats), unanswered
}

// firstResultAfter returns the send time of the earliest call sent after
// since that got a result, or zero.
func (tr *traffic) firstResultAfter(since time.Time) time.Time {
	var first time.Time
	for _, tc := range tr.clients {
		tc.mu.Lock()
		for id, at := range tc.sent {
			if at.Before(since) {
				continue
			}
			if as := tc.answers[id]; len(as) > 0 && as[0].kind == "result" && (first.IsZero() || at.Before(first)) {
				first = at
			}
		}
		tc.mu.Unlock()
	}
	return first
}

// finish stops the traffic after the grace period and checks that every
// call got exactly one answer, that no client was closed, and logs the
// numbers.
func (tr *traffic) finish(t *testing.T, fault string) tally {
	t.Helper()
	tr.stopped = time.Now()
	close(tr.stopSend)
	tr.wg.Wait()
	if tr.grace > 0 {
		time.Sleep(tr.grace)
	} else {
		time.Sleep(grace)
	}
	tr.stop()
	tl := tr.count(time.Time{}, time.Time{})
	t.Logf("%s: %s", fault, tl)
	if tl.lost > 0 {
		t.Errorf("%d calls got no answer, e.g. %v", tl.lost, tl.lostIDs)
	}
	if tl.dup > 0 {
		t.Errorf("%d calls were answered more than once", tl.dup)
	}
	if len(tl.wrong) > 0 {
		t.Errorf("%d stray frames, e.g. %.5q", len(tl.wrong), tl.wrong)
	}
	if len(tl.closed) > 0 {
		t.Errorf("clients were closed: %v", tl.closed)
	}
	if len(tl.sendErrs) > 0 {
		t.Errorf("sending failed: %v", tl.sendErrs)
	}
	return tl
}
