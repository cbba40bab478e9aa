package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// connectResult is the rate of new WebSocket connections (TCP connect and
// HTTP upgrade, then an abortive close) from several client processes.
type connectResult struct {
	Workers     int                `json:"workers"`
	Concurrency int                `json:"concurrency_per_worker"`
	Conns       int64              `json:"conns"`
	Errors      int64              `json:"errors"`
	Seconds     float64            `json:"seconds"`
	Rate        float64            `json:"conns_per_s"`
	Upgrade     latencySummary     `json:"upgrade_latency"`
	CPUPerConn  map[string]float64 `json:"cpu_us_per_conn"`
	OtherCores  float64            `json:"other_cores"` // includes the workers
	FirstErrors []string           `json:"first_errors,omitempty"`
}

// workerReport is what one connect-worker prints on stdout.
type workerReport struct {
	Conns     int64   `json:"conns"`
	Errors    int64   `json:"errors"`
	Seconds   float64 `json:"seconds"`
	Latencies []int64 `json:"latencies_ns"` // a uniform sample
	FirstErr  string  `json:"first_error,omitempty"`
}

// maxSample bounds the latencies one worker reports.
const maxSample = 20000

// connectWorker is `piped-bench connect-worker`: conc goroutines each
// connecting, upgrading and closing (with SO_LINGER 0, so that no TIME_WAIT
// holds the port) one connection after another from start for d.
func connectWorker(args []string) int {
	fs := flag.NewFlagSet("connect-worker", flag.ContinueOnError)
	url := fs.String("url", "", "node base URL, ws://host:port")
	index := fs.Int("index", 0, "this worker's number (picks its source addresses and tokens)")
	conc := fs.Int("conc", 8, "connections being made at once")
	d := fs.Duration("duration", 5*time.Second, "how long to connect")
	startAt := fs.Int64("start", 0, "unix time in ns at which to begin (all workers together)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if wait := time.Until(time.Unix(0, *startAt)); wait > 0 {
		time.Sleep(wait)
	}
	var (
		conns, errs atomic.Int64
		mu          sync.Mutex
		sample      []int64
		seen        int64
		firstErr    string
		wg          sync.WaitGroup
	)
	t0 := time.Now()
	end := t0.Add(*d)
	for g := range *conc {
		wg.Go(func() {
			dl := dialer(*index**conc+g, 1) // one source address per goroutine
			for n := 0; time.Now().Before(end); n++ {
				s := time.Now()
				c, _, err := dl.Dial(*url+"/api/c-"+strconv.Itoa(*index)+"-"+strconv.Itoa(g)+"-"+strconv.Itoa(n), nil)
				lat := time.Since(s)
				if err != nil {
					errs.Add(1)
					mu.Lock()
					if firstErr == "" {
						firstErr = err.Error()
					}
					mu.Unlock()
					time.Sleep(time.Millisecond)
					continue
				}
				closeAbort(c)
				conns.Add(1)
				mu.Lock()
				seen++
				if len(sample) < maxSample {
					sample = append(sample, int64(lat))
				} else if j := rand.Int64N(seen); j < maxSample { // reservoir sampling
					sample[j] = int64(lat)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	rep := workerReport{Conns: conns.Load(), Errors: errs.Load(), Seconds: time.Since(t0).Seconds(), Latencies: sample, FirstErr: firstErr}
	if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
		fmt.Fprintln(os.Stderr, "connect-worker:", err)
		return 1
	}
	return 0
}

// runConnect re-executes this program as workers connect-workers against
// n and merges their reports; the CPU of the node and the harness's workers
// is not separable per worker, so the node's is reported.
func runConnect(n *node, m cpuMeter, workers, conc int, d time.Duration) (connectResult, error) {
	self, err := os.Executable()
	if err != nil {
		return connectResult{}, err
	}
	startAt := time.Now().Add(500 * time.Millisecond)
	cmds := make([]*exec.Cmd, workers)
	outs := make([][]byte, workers)
	errsOut := make([]error, workers)
	var wg sync.WaitGroup
	for i := range workers {
		cmds[i] = exec.Command(self, "connect-worker", "-url", fmt.Sprintf("ws://127.0.0.1:%d", n.port),
			"-index", strconv.Itoa(i), "-conc", strconv.Itoa(conc), "-duration", d.String(),
			"-start", strconv.FormatInt(startAt.UnixNano(), 10))
		cmds[i].Stderr = os.Stderr
		wg.Go(func() { outs[i], errsOut[i] = cmds[i].Output() })
	}
	time.Sleep(time.Until(startAt))
	s0 := m.sample()
	wg.Wait()
	s1 := m.sample()
	var r connectResult
	r.Workers, r.Concurrency = workers, conc
	var lat []time.Duration
	for i := range workers {
		if errsOut[i] != nil {
			return r, fmt.Errorf("connect-worker %d: %w", i, errsOut[i])
		}
		var w workerReport
		if err := json.Unmarshal(outs[i], &w); err != nil {
			return r, fmt.Errorf("connect-worker %d: %w", i, err)
		}
		r.Conns += w.Conns
		r.Errors += w.Errors
		r.Seconds = max(r.Seconds, w.Seconds)
		if w.FirstErr != "" {
			r.FirstErrors = append(r.FirstErrors, w.FirstErr)
		}
		for _, ns := range w.Latencies {
			lat = append(lat, time.Duration(ns))
		}
	}
	if r.Seconds > 0 {
		r.Rate = float64(r.Conns) / r.Seconds
	}
	r.Upgrade = summarize(lat)
	r.CPUPerConn = perOp(s0, s1, r.Conns)
	r.OtherCores = otherCores(s0, s1, r.Seconds)
	return r, nil
}
