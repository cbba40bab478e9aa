package main

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// idleResult is the node's memory and goroutines per idle connection.
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

// runIdle opens conns idle WebSocket connections to n (dialing par at a
// time, source addresses spread over 127.0.0.2…) and measures what they
// cost the node once it has settled.
func runIdle(n *node, run string, conns, par int, settle time.Duration, pprofURL string) (idleResult, error) {
	time.Sleep(settle)
	before, _, err := readMemory(n, pprofURL)
	if err != nil {
		return idleResult{}, err
	}
	ws := make([]*websocket.Conn, conns)
	var readers sync.WaitGroup
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
	for range par {
		dialers.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= conns {
					return
				}
				c, _, err := dialer(i, 5000).Dial(n.wsURL(fmt.Sprintf("idle-%s-%d", run, i)), nil)
				if err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("idle: connection %d: %w", i, err) })
					next.Store(int64(conns))
					return
				}
				ws[i] = c
				// An idle, well-behaved client: it answers pings (the
				// default ping handler, run by ReadMessage) and reads nothing else.
				readers.Go(func() {
					for {
						if _, _, err := c.ReadMessage(); err != nil {
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
	time.Sleep(settle)
	after, forced, err := readMemory(n, pprofURL)
	if err != nil {
		return idleResult{}, err
	}
	f := float64(conns)
	return idleResult{
		Conns: conns, OpenSeconds: opened.Seconds(),
		RSSBefore: before.rss, RSSAfter: after.rss, RSSPerConn: (after.rss - before.rss) / f,
		HeapPerConn:      (after.heap - before.heap) / f,
		GoroutinesBefore: before.goroutines, GoroutinesAfter: after.goroutines,
		GoroutinesPer: (after.goroutines - before.goroutines) / f,
		ForcedGC:      forced,
	}, nil
}
