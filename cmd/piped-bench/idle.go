package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// The idle scenario's timings. The node pings every client every
// -idle-ping-interval; the memory is read after -idle-hold, so that the
// steady state it measures includes pings answered with pongs (and the
// buffers and goroutines, if any, that the node's ping and pong handling
// keeps), not only freshly upgraded connections. Production's ws.ping_interval
// is 25s, longer than anyone wants to wait for.
const (
	// idlePongFactor sets the node's ws.pong_timeout to this many ping
	// intervals; the node requires it to be more than one (config: "less
	// than ws.pong_timeout"), and 3 leaves a client two missed pings.
	idlePongFactor = 3
	// idleMinPings is the fewest pings per connection, on average, that
	// must arrive during the hold: otherwise the reading was not taken in
	// the steady state and the scenario fails.
	idleMinPings = 2
	// idleHoldFloor is the shortest automatic hold of a full run;
	// idleHoldIntervals ping intervals when that is longer (and in -quick).
	idleHoldFloor     = 20 * time.Second
	idleHoldIntervals = 3
	// idlePongWriteWait is the deadline of a client's pong, as in
	// gorilla's default ping handler.
	idlePongWriteWait = time.Second
)

// idleHold returns the hold of the idle scenario: hold when given (non-zero),
// else idleHoldIntervals ping intervals, and with a full run at least
// idleHoldFloor.
func idleHold(hold, pingInterval time.Duration, quick bool) time.Duration {
	if hold > 0 {
		return hold
	}
	h := idleHoldIntervals * pingInterval
	if !quick {
		h = max(h, idleHoldFloor)
	}
	return h
}

// idleNodeEnv is the environment of the idle scenario's node, which is a
// process of its own: only it pings every pingInterval, and the other
// scenarios' nodes keep the configured default (25s).
func idleNodeEnv(pingInterval time.Duration) []string {
	return []string{
		"PIPED_WS_PING_INTERVAL=" + pingInterval.String(),
		"PIPED_WS_PONG_TIMEOUT=" + (idlePongFactor * pingInterval).String(),
	}
}

// idleResult is the node's memory and goroutines per idle connection, read
// after the connections have been held open for HoldSeconds, answering the
// node's pings (PingsPerConn of them on average during the hold).
type idleResult struct {
	Conns            int     `json:"conns"`
	OpenSeconds      float64 `json:"open_seconds"`
	RSSBefore        float64 `json:"rss_before_bytes"`
	RSSAfter         float64 `json:"rss_after_bytes"`
	RSSPerConn       float64 `json:"rss_per_conn_bytes"`
	HeapPerConn      float64 `json:"heap_inuse_per_conn_bytes"`
	GoroutinesBefore float64 `json:"goroutines_before"`
	GoroutinesAfter  float64 `json:"goroutines_after"`
	GoroutinesPer    float64 `json:"goroutines_per_conn"`
	ForcedGC         bool    `json:"forced_gc"`
	PingInterval     float64 `json:"ping_interval_seconds"`
	HoldSeconds      float64 `json:"hold_seconds"`
	PingsPerConn     float64 `json:"pings_per_conn"`
}

// idleOptions shape the idle scenario.
type idleOptions struct {
	conns, par   int
	settle       time.Duration // before the reading without connections
	pingInterval time.Duration // the node's ws.ping_interval (idleNodeEnv)
	hold         time.Duration // from the last connection opened to the reading
	pprofURL     string
}

// nodeMemory is one reading of the node's memory and goroutines.
type nodeMemory struct{ rss, heap, goroutines float64 }

// readMemory reads VmRSS from /proc and heap and goroutines from /metrics,
// first forcing a GC through pprofURL's heap profile (?gc=1) when the node
// serves net/http/pprof there (built with -tags pprof).
func readMemory(n *node, pprofURL string) (nodeMemory, bool, error) {
	forced := false
	if pprofURL != "" {
		resp, err := http.Get(pprofURL + "/debug/pprof/heap?gc=1")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			forced = resp.StatusCode == http.StatusOK
		}
	}
	rss, err := vmRSS(n.pid())
	if err != nil {
		return nodeMemory{}, forced, err
	}
	m, err := n.metrics("go_memstats_heap_inuse_bytes", "go_goroutines")
	if err != nil {
		return nodeMemory{}, forced, err
	}
	return nodeMemory{rss: rss, heap: m["go_memstats_heap_inuse_bytes"], goroutines: m["go_goroutines"]}, forced, nil
}

// countPings makes c answer pings as gorilla's default ping handler does
// (a pong with the ping's payload; a close already sent or a timed-out
// write is not an error) and counts them in pings.
func countPings(c *websocket.Conn, pings *atomic.Int64) {
	c.SetPingHandler(func(data string) error {
		pings.Add(1)
		err := c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(idlePongWriteWait))
		var ne net.Error
		if errors.Is(err, websocket.ErrCloseSent) || errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		return err
	})
}

// runIdle opens o.conns idle WebSocket connections to n (dialing o.par at a
// time, source addresses spread over 127.0.0.2…), holds them open for
// o.hold while they answer the node's pings, and measures what they cost
// the node in that steady state. n must have been started with
// idleNodeEnv(o.pingInterval).
func runIdle(n *node, run string, o idleOptions) (idleResult, error) {
	time.Sleep(o.settle)
	before, _, err := readMemory(n, o.pprofURL)
	if err != nil {
		return idleResult{}, err
	}
	ws := make([]*websocket.Conn, o.conns)
	var readers sync.WaitGroup
	var pings, ended atomic.Int64
	var endErr atomic.Pointer[error] // the first error that ended a reader
	defer func() {
		for _, c := range ws {
			if c != nil {
				closeAbort(c)
			}
		}
		readers.Wait()
	}()
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var dialers sync.WaitGroup
	t0 := time.Now()
	for range o.par {
		dialers.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= o.conns {
					return
				}
				c, _, err := dialer(i, 5000).Dial(n.wsURL(fmt.Sprintf("idle-%s-%d", run, i)), nil)
				if err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("idle: connection %d: %w", i, err) })
					next.Store(int64(o.conns))
					return
				}
				ws[i] = c
				// An idle, well-behaved client: it answers pings (its
				// ping handler, run by ReadMessage) and reads nothing else.
				countPings(c, &pings)
				readers.Go(func() {
					for {
						if _, _, err := c.ReadMessage(); err != nil {
							endErr.CompareAndSwap(nil, &err) // before ended counts it
							ended.Add(1)
							return
						}
					}
				})
			}
		})
	}
	dialers.Wait()
	if firstErr != nil {
		return idleResult{}, firstErr
	}
	opened := time.Since(t0)
	pings0, held := pings.Load(), time.Now()
	logf("  %d connections open in %.1f s; holding them %v (the node pings every %v)", o.conns, opened.Seconds(), o.hold, o.pingInterval)
	time.Sleep(o.hold)
	hold, f := time.Since(held), float64(o.conns)
	perConn := float64(pings.Load()-pings0) / f
	after, forced, err := readMemory(n, o.pprofURL)
	if err != nil {
		return idleResult{}, err
	}
	if k := ended.Load(); k > 0 {
		return idleResult{}, fmt.Errorf("idle: %d of %d connections ended before the reading (first: %v); the node's logs:\n%s", k, o.conns, *endErr.Load(), n.logs)
	}
	if perConn < idleMinPings {
		return idleResult{}, fmt.Errorf("idle: %.2f pings per connection during the %.1f s hold, want at least %d (ping interval %v): the reading would not be of the steady state",
			perConn, hold.Seconds(), idleMinPings, o.pingInterval)
	}
	logf("  %.2f pings per connection during the hold", perConn)
	return idleResult{
		Conns: o.conns, OpenSeconds: opened.Seconds(),
		RSSBefore: before.rss, RSSAfter: after.rss, RSSPerConn: (after.rss - before.rss) / f,
		HeapPerConn:      (after.heap - before.heap) / f,
		GoroutinesBefore: before.goroutines, GoroutinesAfter: after.goroutines,
		GoroutinesPer: (after.goroutines - before.goroutines) / f,
		ForcedGC:      forced,
		PingInterval:  o.pingInterval.Seconds(), HoldSeconds: hold.Seconds(), PingsPerConn: perConn,
	}, nil
}
