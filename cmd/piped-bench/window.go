package main

import (
	"sync"
	"sync/atomic"
	"time"
)

// counters are what a closed-loop load (rpc, raw, fanout) shares with the
// window that measures it.
type counters struct {
	answered  atomic.Int64 // answers (or events) received so far
	measuring atomic.Bool  // latencies are recorded only inside the window
	stopping  atomic.Bool  // no new calls once set

	mu        sync.Mutex
	latencies []time.Duration // guarded by mu, appended in batches
}

// addLatencies appends the latencies one client goroutine recorded.
func (c *counters) addLatencies(l []time.Duration) {
	c.mu.Lock()
	c.latencies = append(c.latencies, l...)
	c.mu.Unlock()
}

// window is one measured interval of a load.
type window struct {
	ops     int64
	seconds float64
	cpu     map[string]float64 // µs per op by role
	others  float64            // cores busy with other processes
}

// measureWindow lets the load warm up, then counts the answers and samples
// the CPU of the processes in m over d.
func measureWindow(c *counters, m cpuMeter, warmup, d time.Duration) window {
	time.Sleep(warmup)
	a0, s0, t0 := c.answered.Load(), m.sample(), time.Now()
	c.measuring.Store(true)
	time.Sleep(d)
	c.measuring.Store(false)
	a1, s1, t1 := c.answered.Load(), m.sample(), time.Now()
	secs := t1.Sub(t0).Seconds()
	return window{ops: a1 - a0, seconds: secs, cpu: perOp(s0, s1, a1-a0), others: otherCores(s0, s1, secs)}
}

// loadResult is one run of the rpc, raw or raw-reliable path.
type loadResult struct {
	Path       string             `json:"path"`
	Conns      int                `json:"conns"`
	InFlight   int                `json:"inflight"`
	Rep        int                `json:"rep"`
	Calls      int64              `json:"calls"`
	Seconds    float64            `json:"seconds"`
	Rate       float64            `json:"calls_per_s"`
	Latency    latencySummary     `json:"latency"`
	Lost       int64              `json:"lost"`
	Duplicated int64              `json:"duplicated"`
	Errors     int64              `json:"errors"`
	CPUPerCall map[string]float64 `json:"cpu_us_per_call"`
	// OtherCores is the CPU (in cores) that processes other than node,
	// broker, backend and harness used during the window.
	OtherCores float64 `json:"other_cores"`
}

func (w window) result(path string, conns, inflight, rep int, lat []time.Duration, lost, dup, errs int64) loadResult {
	r := loadResult{Path: path, Conns: conns, InFlight: inflight, Rep: rep, Calls: w.ops, Seconds: w.seconds,
		Latency: summarize(lat), Lost: lost, Duplicated: dup, Errors: errs, CPUPerCall: w.cpu, OtherCores: w.others}
	if w.seconds > 0 {
		r.Rate = float64(w.ops) / w.seconds
	}
	return r
}
