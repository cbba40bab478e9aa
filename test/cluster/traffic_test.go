//go:build cluster

package cluster

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/piped-dev/piped/test/harness"
)

// callEvery is how often each caller makes a call.
const callEvery = 20 * time.Millisecond

// caller is one WebSocket client that makes a call every callEvery with
// increasing ids and records every answer.
type caller struct {
	idx  int
	node string // the Piped node it is connected to
	c    *harness.Client

	mu      sync.Mutex
	sent    map[int]time.Time
	answers map[int][]string // "result" or the error code, in order of arrival
	stray   []string         // frames that answer no call of ours
	sendErr error
}

// traffic is the callers of a test.
type traffic struct {
	callers  []*caller
	stopSend chan struct{}
	stopRead chan struct{}
	senders  sync.WaitGroup
	readers  sync.WaitGroup
}

// dialTraffic connects perNode callers to each node.
func dialTraffic(t *testing.T, nodes []*harness.Node, perNode int) *traffic {
	tr := &traffic{stopSend: make(chan struct{}), stopRead: make(chan struct{})}
	for _, n := range nodes {
		for range perNode {
			i := len(tr.callers)
			c := &caller{idx: i, node: n.ID, c: harness.Dial(t, n, fmt.Sprintf("tok-%d-%s", i, n.ID)),
				sent: map[int]time.Time{}, answers: map[int][]string{}}
			tr.callers = append(tr.callers, c)
			tr.readers.Go(func() { tr.read(c) })
		}
	}
	t.Cleanup(tr.stop)
	return tr
}

// start begins the calls.
func (tr *traffic) start() {
	for _, c := range tr.callers {
		tr.senders.Go(func() { tr.send(c) })
	}
}

func (tr *traffic) send(c *caller) {
	tick := time.NewTicker(callEvery)
	defer tick.Stop()
	for id := 1; ; id++ {
		select {
		case <-tr.stopSend:
			return
		case <-tick.C:
		}
		c.mu.Lock()
		c.sent[id] = time.Now()
		c.mu.Unlock()
		// The only writer of this socket (the library's pongs aside).
		err := c.c.WS.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"id":%d,"method":"m","payload":{"c":%d}}`, id, c.idx))
		if err != nil {
			c.mu.Lock()
			delete(c.sent, id)
			c.sendErr = err
			c.mu.Unlock()
			return
		}
	}
}

func (tr *traffic) read(c *caller) {
	want := fmt.Sprintf(`{"c":%d}`, c.idx)
	handle := func(b []byte) {
		var f struct {
			ID      *int            `json:"id"`
			Type    string          `json:"type"`
			Payload json.RawMessage `json:"payload"`
			Error   struct{ Code string }
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		switch err := json.Unmarshal(b, &f); {
		case err != nil || f.ID == nil:
			c.stray = append(c.stray, string(b))
		case f.Type == "result" && string(f.Payload) == want:
			c.answers[*f.ID] = append(c.answers[*f.ID], "result")
		case f.Type == "error" && f.Error.Code != "":
			c.answers[*f.ID] = append(c.answers[*f.ID], f.Error.Code)
		default:
			c.stray = append(c.stray, string(b))
		}
	}
	for {
		select {
		case b := <-c.c.Frames():
			handle(b)
		case <-tr.stopRead:
			for {
				select {
				case b := <-c.c.Frames():
					handle(b)
				default:
					return
				}
			}
		}
	}
}

// stopSending stops the calls and waits for the senders.
func (tr *traffic) stopSending() {
	select {
	case <-tr.stopSend:
	default:
		close(tr.stopSend)
	}
	tr.senders.Wait()
}

// stop stops sending and reading; safe to call twice.
func (tr *traffic) stop() {
	tr.stopSending()
	select {
	case <-tr.stopRead:
	default:
		close(tr.stopRead)
	}
	tr.readers.Wait()
}

// tally counts calls and their answers.
type tally struct {
	made, results, errors, lost, dup int
	codes                            map[string]int
	lostIDs, stray, broken           []string
}

func (tl tally) String() string {
	codes := make([]string, 0, len(tl.codes))
	for c, k := range tl.codes {
		codes = append(codes, fmt.Sprintf("%s=%d", c, k))
	}
	sort.Strings(codes)
	return fmt.Sprintf("made %d, answered %d (results %d, errors %d [%s]), lost %d, duplicated %d, stray frames %d",
		tl.made, tl.results+tl.errors, tl.results, tl.errors, strings.Join(codes, " "), tl.lost, tl.dup, len(tl.stray))
}

// count tallies the calls of the callers that keep returns true, sent at
// or after from (zero: all).
func (tr *traffic) count(keep func(*caller) bool, from time.Time) tally {
	tl := tally{codes: map[string]int{}}
	for _, c := range tr.callers {
		if !keep(c) {
			continue
		}
		c.mu.Lock()
		for id, at := range c.sent {
			if at.Before(from) {
				continue
			}
			tl.made++
			as := c.answers[id]
			switch {
			case len(as) == 0:
				tl.lost++
				if len(tl.lostIDs) < 10 {
					tl.lostIDs = append(tl.lostIDs, fmt.Sprintf("caller %d on %s id %d sent %s", c.idx, c.node, id, at.Format("15:04:05.000")))
				}
				continue
			case len(as) > 1:
				tl.dup++
			}
			if as[0] == "result" {
				tl.results++
			} else {
				tl.errors++
				tl.codes[as[0]]++
			}
		}
		if from.IsZero() {
			for id := range c.answers {
				if _, ok := c.sent[id]; !ok {
					tl.stray = append(tl.stray, fmt.Sprintf("caller %d: answer to id %d, never sent", c.idx, id))
				}
			}
			tl.stray = append(tl.stray, c.stray...)
			select {
			case <-c.c.Closed():
				tl.broken = append(tl.broken, fmt.Sprintf("caller %d on %s: connection closed: %v", c.idx, c.node, c.c.Err()))
			default:
			}
			if c.sendErr != nil {
				tl.broken = append(tl.broken, fmt.Sprintf("caller %d on %s: send: %v", c.idx, c.node, c.sendErr))
			}
		}
		c.mu.Unlock()
	}
	return tl
}

// all keeps every caller.
func all(*caller) bool { return true }

// on keeps the callers connected to one of the nodes ids.
func on(ids ...string) func(*caller) bool {
	return func(c *caller) bool {
		for _, id := range ids {
			if c.node == id {
				return true
			}
		}
		return false
	}
}
