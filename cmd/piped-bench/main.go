// Command piped-bench is Piped's benchmark harness: it starts a node
// (bin/piped) and the Go echo backend (bin/echo-backend) as processes on
// unique node ids, drives them from here, measures the CPU of node, broker
// and backend from /proc, and prints one markdown table in which every
// figure comes from this one run, the gateway beside its ceiling:
//
//	rpc           N WebSocket connections × W calls in flight through a node
//	raw           the same calls over AMQP directly: no confirms, auto-ack
//	raw-reliable  the same with the node's guarantees: confirms, mandatory,
//	              expiration, its properties and headers, manual batched acks
//	idle          RSS and goroutines per idle WebSocket connection, read after
//	              the connections answered pings for -idle-hold
//	fanout        events/s delivered to clients against a plain consumer
//	connect       new WebSocket connections per second from worker processes
//
// and, for the capacity table (not in the default set; -only all runs
// everything):
//
//	fanout-filter events/s a node drains for tokens it holds no connection of
//	churn         exchange.bind + exchange.unbind per second, as targeted events bind tokens
//	cluster-rpc   rpc and raw-reliable across a 3-node cluster of its own
//
// It also writes benchmarks.json (every figure) and, when it measured
// calls, benchmarks.svg (a chart) into -out. docs/benchmarks.md describes
// the method.
//
//	piped-bench [-quick] [-only rpc,raw,raw-reliable,idle,fanout,connect,fanout-filter,churn,cluster-rpc|all] [-out docs]
//	piped-bench report FILE.json   (prints the table of an earlier run again)
//	piped-bench connect-worker …   (run by piped-bench itself)
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/piped-dev/piped/internal/rabbitnode"
	amqp "github.com/rabbitmq/amqp091-go"
)

// scenarios in the order they run.
var scenarios = []string{"rpc", "raw", "raw-reliable", "idle", "fanout", "fanout-filter", "connect", "churn", "cluster-rpc"}

// defaultScenarios are those -only names when not given: the capacity
// inputs (fanout-filter, churn, cluster-rpc) take minutes more and run on
// request (make bench-capacity).
var defaultScenarios = []string{"rpc", "raw", "raw-reliable", "idle", "fanout", "connect"}

type options struct {
	piped, echo, amqpURL, out, pprofURL string
	only                                map[string]bool
	quick, ownBroker                    bool
	reps                                int
	conns, inflight                     int
	warmup, duration                    time.Duration
	latWarmup, latDuration              time.Duration
	idleConns, idlePar                  int
	settle                              time.Duration
	idlePing, idleHold                  time.Duration
	fanConns, fanTokens, fanWindow      int
	connWorkers, connConc               int
	connDuration                        time.Duration
	filterEvery                         int
	churnK, churnStanding               []int
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "connect-worker" {
		os.Exit(connectWorker(os.Args[2:]))
	}
	if len(os.Args) == 3 && os.Args[1] == "report" {
		if err := rerender(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "piped-bench report:", err)
			os.Exit(1)
		}
		return
	}
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "piped-bench:", err)
		os.Exit(2)
	}
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "piped-bench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("piped-bench", flag.ContinueOnError)
	fs.StringVar(&o.piped, "piped", "bin/piped", "node binary (make build-piped)")
	fs.StringVar(&o.echo, "echo-backend", "bin/echo-backend", "echo backend binary (make build-echo-backend)")
	fs.StringVar(&o.amqpURL, "amqp-url", "amqp://guest:guest@127.0.0.1:5672/", "broker")
	fs.BoolVar(&o.ownBroker, "own-broker", false, "run against a RabbitMQ node of the harness's own (root; rabbitmq-server), so that the broker's CPU counts no other client's traffic; the shared broker when it cannot start")
	fs.StringVar(&o.out, "out", "docs", "directory for benchmarks.json and benchmarks.svg (empty: none)")
	fs.StringVar(&o.pprofURL, "pprof-url", "", "idle: the node's net/http/pprof base URL (a -tags pprof build, e.g. http://127.0.0.1:6060), to force a GC before each memory reading")
	only := fs.String("only", strings.Join(defaultScenarios, ","), "comma-separated scenarios, or all: "+strings.Join(scenarios, ","))
	fs.BoolVar(&o.quick, "quick", false, "about a minute: one repetition, short windows, 5,000 idle connections held 3 ping intervals")
	fs.IntVar(&o.reps, "reps", 3, "repetitions of rpc/raw/raw-reliable, fanout/fanout-filter, churn and cluster-rpc, alternating (the table shows median and range)")
	fs.IntVar(&o.conns, "conns", 100, "rpc, raw: connections (raw: virtual connections, one token each)")
	fs.IntVar(&o.inflight, "inflight", 4, "rpc, raw: calls in flight per connection")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "load before each measured window")
	fs.DurationVar(&o.duration, "duration", 6*time.Second, "measured window at conns × inflight, and of fanout")
	fs.DurationVar(&o.latWarmup, "lat-warmup", time.Second, "load before the 1 × 1 window")
	fs.DurationVar(&o.latDuration, "lat-duration", 3*time.Second, "measured window at 1 × 1")
	fs.IntVar(&o.idleConns, "idle-conns", 15000, "idle: connections")
	fs.IntVar(&o.idlePar, "idle-par", 16, "idle: connections dialled at once")
	fs.DurationVar(&o.settle, "settle", 4*time.Second, "idle: wait before the memory reading without connections")
	fs.DurationVar(&o.idlePing, "idle-ping-interval", 2*time.Second, "idle: the node's ws.ping_interval (its ws.pong_timeout is 3 times it); at least 1s")
	fs.DurationVar(&o.idleHold, "idle-hold", 0, "idle: how long the connections stay open, answering pings, before the memory reading; at least 2 ping intervals (0: 3 ping intervals, and with a full run at least 20s)")
	fs.IntVar(&o.fanConns, "fanout-conns", 1000, "fanout: connections")
	fs.IntVar(&o.fanTokens, "fanout-tokens", 1000, "fanout: distinct tokens (events are published to each in turn)")
	fs.IntVar(&o.fanWindow, "fanout-window", 1000, "fanout: events published and not yet delivered, at most")
	fs.IntVar(&o.connWorkers, "connect-workers", 4, "connect: client processes")
	fs.IntVar(&o.connConc, "connect-conc", 8, "connect: connections being made at once per process")
	fs.DurationVar(&o.connDuration, "connect-duration", 5*time.Second, "connect: how long")
	fs.IntVar(&o.filterEvery, "filter-every", 100, "fanout-filter: 1 event in so many is for a token a client holds (the others for tokens no client holds)")
	churnK := fs.String("churn-k", "1,4,16", "churn: concurrency levels (goroutines, one AMQP channel each)")
	churnStanding := fs.String("churn-standing", "0,10000", "churn: bindings standing on the queue during the window")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.quick { // shorter, unless given explicitly
		for name, v := range map[string]string{"reps": "1", "warmup": "1s", "duration": "3s", "lat-warmup": "500ms",
			"lat-duration": "2s", "idle-conns": "5000", "settle": "2s", "connect-duration": "3s"} {
			if !set[name] {
				_ = fs.Set(name, v)
			}
		}
	}
	o.only = map[string]bool{}
	for _, s := range strings.Split(*only, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if s == "all" {
			for _, a := range scenarios {
				o.only[a] = true
			}
			continue
		}
		if !slices.Contains(scenarios, s) {
			return nil, fmt.Errorf("-only: unknown scenario %q (want %s)", s, strings.Join(scenarios, ","))
		}
		o.only[s] = true
	}
	if o.reps < 1 {
		return nil, fmt.Errorf("-reps %d: at least 1", o.reps)
	}
	var err error
	if o.churnK, err = parseCounts(*churnK, 1); err != nil {
		return nil, fmt.Errorf("-churn-k: %w", err)
	}
	if o.churnStanding, err = parseCounts(*churnStanding, 0); err != nil {
		return nil, fmt.Errorf("-churn-standing: %w", err)
	}
	slices.Sort(o.churnStanding) // added to between windows, never removed one by one
	o.idleHold = idleHold(o.idleHold, o.idlePing, o.quick)
	if o.only["idle"] && o.idlePing < time.Second {
		return nil, fmt.Errorf("-idle-ping-interval %v: at least 1s (the node's minimum ws.ping_interval)", o.idlePing)
	}
	if o.only["idle"] && o.idleHold < idleMinPings*o.idlePing {
		return nil, fmt.Errorf("-idle-hold %v: at least %d ping intervals (-idle-ping-interval %v), so that the reading follows pings", o.idleHold, idleMinPings, o.idlePing)
	}
	if o.only["fanout-filter"] && (o.filterEvery < 2 || o.filterEvery > o.fanWindow) {
		return nil, fmt.Errorf("-filter-every %d: between 2 and -fanout-window (%d), so that every window of events in flight holds one the clients receive", o.filterEvery, o.fanWindow)
	}
	return o, nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// run runs the chosen scenarios and writes the report.
func run(ctx context.Context, o *options) error {
	detectClockTicks()
	if lim, err := raiseNoFile(); err != nil {
		logf("cannot raise the open files limit: %v", err)
	} else if o.only["idle"] && uint64(o.idleConns)+100 > lim {
		return fmt.Errorf("-idle-conns %d: the open files limit is %d", o.idleConns, lim)
	}
	for _, b := range []string{o.piped, o.echo} {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("%w (make build builds bin/piped and bin/echo-backend)", err)
		}
	}
	if o.ownBroker {
		logf("starting a RabbitMQ node of our own")
		// Busy-waiting schedulers, as RabbitMQ runs by default: the broker's
		// CPU per call is then what a production node spends.
		b, err := rabbitnode.Start(context.Background(), rabbitnode.Options{Name: "piped-bench-" + strconv.Itoa(os.Getpid()), BusyWait: true})
		if err != nil {
			logf("cannot start a RabbitMQ node of our own, using %s: %v", o.amqpURL, err)
			o.ownBroker = false
		} else {
			defer b.Remove()
			o.amqpURL = b.URL()
			logf("RabbitMQ node %s on %s", b.Name, o.amqpURL)
		}
	}
	amqpPort := 5672
	if u, err := url.Parse(o.amqpURL); err == nil && u.Port() != "" {
		amqpPort, _ = strconv.Atoi(u.Port())
	}
	rep := &report{Started: time.Now().UTC(), Machine: describeMachine(o.amqpURL), Options: o.describe()}
	broker := brokerPID(amqpPort)
	if broker == 0 {
		logf("no beam.smp process found: broker CPU will be missing")
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	runID := hex.EncodeToString(b)
	id := func(kind string) string { return "bench-" + kind + "-" + runID }
	var ids, masses []string
	defer func() {
		if err := deleteTopology(o.amqpURL, ids, masses); err != nil {
			logf("cleanup: %v", err)
		}
	}()
	self := os.Getpid()
	t0 := time.Now()

	if o.only["rpc"] || o.only["raw"] || o.only["raw-reliable"] {
		var paths []string
		for _, p := range []string{"rpc", "raw-reliable", "raw"} {
			if o.only[p] {
				paths = append(paths, p)
			}
		}
		site := callSite{paths: paths, nodeURL: o.amqpURL, backendURL: o.amqpURL, brokers: cpuMeter{"broker": broker}, latency: true}
		res, err := runCalls(ctx, o, site, id, self, &ids, &masses)
		rep.Calls = res
		if err != nil {
			return err
		}
	}
	if o.only["idle"] {
		nid := id("idle")
		ids, masses = append(ids, nid), append(masses, "mass-"+nid)
		// A node of its own, pinging every -idle-ping-interval: the other
		// scenarios' nodes keep the default ws.ping_interval (25s), so
		// their figures are unchanged.
		n, err := startNode(ctx, o, o.amqpURL, nid, "mass-"+nid, idleNodeEnv(o.idlePing)...)
		if err != nil {
			return err
		}
		logf("idle: %d connections, held %v with a ping every %v", o.idleConns, o.idleHold, o.idlePing)
		r, err := runIdle(n, runID, idleOptions{conns: o.idleConns, par: o.idlePar, settle: o.settle,
			pingInterval: o.idlePing, hold: o.idleHold, pprofURL: o.pprofURL})
		n.stop(10 * time.Second)
		if err != nil {
			return err
		}
		rep.Idle = &r
	}
	if o.only["fanout"] || o.only["fanout-filter"] {
		nid, rid := id("fan"), id("fanraw")
		ids, masses = append(ids, nid, rid), append(masses, "mass-"+nid, "mass-"+rid)
		n, err := startNode(ctx, o, o.amqpURL, nid, "mass-"+nid)
		if err != nil {
			return err
		}
		// every: 1 (fanout, each event for a token the clients hold) or
		// -filter-every (fanout-filter, most for tokens nobody holds).
		var kinds []int
		if o.only["fanout"] {
			kinds = append(kinds, 1)
		}
		if o.only["fanout-filter"] {
			kinds = append(kinds, o.filterEvery)
		}
		for r := range o.reps {
			for _, every := range kinds {
				if every == 1 {
					logf("fanout %d/%d: through the node, %d connections, %d tokens", r+1, o.reps, o.fanConns, o.fanTokens)
				} else {
					logf("fanout-filter %d/%d: through the node, %d connections, 1 event in %d for their tokens", r+1, o.reps, o.fanConns, every)
				}
				fn, err := runFanoutNode(o, n, cpuMeter{"node": n.pid(), "broker": broker, "harness": self}, o.fanConns, o.fanTokens, every, o.fanWindow, r+1, o.warmup, o.duration)
				if err != nil {
					n.stop(5 * time.Second)
					return err
				}
				logf("  %.0f events/s, node %.1f µs per event", fn.Rate, fn.CPUPerEvent["node"])
				rep.Fanout = append(rep.Fanout, fn)
			}
			logf("fanout %d/%d: raw consumer", r+1, o.reps)
			fr, err := runFanoutRaw(o, cpuMeter{"broker": broker, "harness": self}, rid, "mass-"+rid, o.fanTokens, o.fanWindow, r+1, o.warmup, o.duration)
			if err != nil {
				n.stop(5 * time.Second)
				return err
			}
			rep.Fanout = append(rep.Fanout, fr)
		}
		n.stop(10 * time.Second)
	}
	if o.only["connect"] {
		nid := id("conn")
		ids, masses = append(ids, nid), append(masses, "mass-"+nid)
		n, err := startNode(ctx, o, o.amqpURL, nid, "mass-"+nid)
		if err != nil {
			return err
		}
		logf("connect: %d processes × %d at once for %v", o.connWorkers, o.connConc, o.connDuration)
		r, err := runConnect(n, cpuMeter{"node": n.pid(), "broker": broker}, o.connWorkers, o.connConc, o.connDuration)
		n.stop(10 * time.Second)
		if err != nil {
			return err
		}
		rep.Connect = &r
	}
	if o.only["churn"] {
		res, err := runChurnLevels(o.amqpURL, "single", o, id("churn"), o.churnStanding, cpuMeter{"broker": broker, "harness": self})
		rep.Churn = append(rep.Churn, res...)
		if err != nil {
			return err
		}
	}
	if o.only["cluster-rpc"] {
		if err := runCluster(ctx, o, rep, id, self); err != nil {
			return err
		}
	}
	rep.Seconds = time.Since(t0).Seconds()
	table := rep.table()
	fmt.Print(table)
	if o.out != "" {
		if err := os.MkdirAll(o.out, 0o755); err != nil {
			return err
		}
		j, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(o.out, "benchmarks.json"), append(j, '\n'), 0o644); err != nil {
			return err
		}
		logf("wrote %s", filepath.Join(o.out, "benchmarks.json"))
		if svg := rep.chart(); svg != nil {
			if err := os.WriteFile(filepath.Join(o.out, "benchmarks.svg"), svg, 0o644); err != nil {
				return err
			}
			logf("wrote %s", filepath.Join(o.out, "benchmarks.svg"))
		}
	}
	return nil
}

// callSite is where runCalls makes its calls.
type callSite struct {
	prefix     string   // of the paths in the results: "" or "cluster-"
	paths      []string // of rpc, raw-reliable and raw, in the order of the first repetition
	nodeURL    string   // the node's broker, and that of the raw paths' publisher and consumer
	backendURL string   // the echo backend's broker (its queue-out queues are declared there first)
	brokers    cpuMeter // the broker processes, whose CPU is summed as "broker"
	latency    bool     // also the 1 × 1 runs
}

// runCalls runs site's paths at conns × inflight (and at 1 × 1 when
// site.latency), reps times, alternating the paths so that drift on the
// shared machine spreads over all of them.
func runCalls(ctx context.Context, o *options, site callSite, id func(string) string, self int, ids, masses *[]string) ([]loadResult, error) {
	paths := site.paths
	has := func(p string) bool { return slices.Contains(paths, p) }
	pathID := map[string]string{"rpc": id(site.prefix + "rpc"), "raw": id(site.prefix + "raw"), "raw-reliable": id(site.prefix + "rel")}
	var backendIDs []string
	for _, p := range paths {
		backendIDs = append(backendIDs, pathID[p])
		*ids = append(*ids, pathID[p])
	}
	if site.backendURL != site.nodeURL {
		// A classic queue lives on the broker node where it was declared:
		// the backend's queue-out there, the in-queue on the node's.
		if err := declareQueues(site.backendURL, backendIDs); err != nil {
			return nil, err
		}
	}
	conn, err := amqpDial(site.nodeURL)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return nil, err
	}
	if has("raw") { // the physical ceiling: plain queues
		if err := topologyOf(pathID["raw"]).declare(ch, nil); err != nil {
			return nil, err
		}
	}
	if has("raw-reliable") { // the node's in-queue has x-expires
		if err := topologyOf(pathID["raw-reliable"]).declare(ch, amqp.Table{"x-expires": int64(nodeInQueueExpires)}); err != nil {
			return nil, err
		}
	}
	mass := "mass-" + id(site.prefix+"calls")
	*masses = append(*masses, mass)
	backend, err := start("echo-backend", o.echo, []string{"--nodes", strings.Join(backendIDs, ","), "--mass-exchange", mass, "--log-level", "warn"},
		[]string{"AMQP_URL=" + site.backendURL})
	if err != nil {
		return nil, err
	}
	defer backend.stop(10 * time.Second)
	var n *node
	if has("rpc") {
		if n, err = startNode(ctx, o, site.nodeURL, pathID["rpc"], mass); err != nil {
			return nil, err
		}
		defer n.stop(10 * time.Second)
	}
	// Wait until the backend consumes every queue-out.
	deadline := time.Now().Add(30 * time.Second)
	for _, bid := range backendIDs {
		for {
			q, err := ch.QueueDeclarePassive(topologyOf(bid).qOut, true, false, false, false, nil)
			if err == nil && q.Consumers > 0 {
				break
			}
			if err != nil { // a failed passive declare closes the channel
				if ch, err = conn.Channel(); err != nil {
					return nil, err
				}
			}
			if time.Now().After(deadline) || backend.exited() {
				return nil, fmt.Errorf("the echo backend does not consume %s:\n%s", topologyOf(bid).qOut, backend.logs)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	var results []loadResult
	type shape struct {
		conns, w         int
		warmup, duration time.Duration
	}
	shapes := []shape{{o.conns, o.inflight, o.warmup, o.duration}}
	if site.latency {
		shapes = append(shapes, shape{1, 1, o.latWarmup, o.latDuration})
	}
	var brokerRoles []string
	for role := range site.brokers {
		brokerRoles = append(brokerRoles, role)
	}
	for r := range o.reps {
		for _, s := range shapes {
			for k := range paths {
				p := paths[(k+r)%len(paths)] // rotate the order each repetition
				logf("%s%s %d/%d: %d × %d", site.prefix, p, r+1, o.reps, s.conns, s.w)
				m := cpuMeter{"backend": backend.pid(), "harness": self}
				maps.Copy(m, site.brokers)
				var res loadResult
				var err error
				if p == "rpc" {
					m["node"] = n.pid()
					res, err = runRPC(n, m, runID(pathID[p], r), s.conns, s.w, r+1, s.warmup, s.duration)
				} else {
					res, err = runRaw(site.nodeURL, m, pathID[p], p == "raw-reliable", s.conns, s.w, r+1, s.warmup, s.duration)
				}
				if err != nil {
					return results, fmt.Errorf("%s%s: %w", site.prefix, p, err)
				}
				res.Path = site.prefix + res.Path
				sumRoles(res.CPUPerCall, "broker", brokerRoles)
				logf("  %.0f calls/s, p50 %.3f ms, lost %d, dup %d, errors %d, broker %.1f µs per call", res.Rate, res.Latency.P50, res.Lost, res.Duplicated, res.Errors, res.CPUPerCall["broker"])
				results = append(results, res)
			}
		}
	}
	return results, nil
}

// runID names the tokens of one rpc run.
func runID(nodeID string, rep int) string { return nodeID + "-" + strconv.Itoa(rep) }

// describe lists the options that shape the figures.
func (o *options) describe() map[string]any {
	var only []string
	for _, s := range scenarios {
		if o.only[s] {
			only = append(only, s)
		}
	}
	return map[string]any{
		"only": only, "quick": o.quick, "reps": o.reps, "conns": o.conns, "inflight": o.inflight,
		"warmup": o.warmup.String(), "duration": o.duration.String(), "lat_duration": o.latDuration.String(),
		"idle_conns": o.idleConns, "settle": o.settle.String(),
		"idle_ping_interval": o.idlePing.String(), "idle_hold": o.idleHold.String(), "fanout_conns": o.fanConns, "fanout_tokens": o.fanTokens,
		"fanout_window": o.fanWindow, "connect_workers": o.connWorkers, "connect_conc": o.connConc,
		"connect_duration": o.connDuration.String(), "pprof_url": o.pprofURL, "own_broker": o.ownBroker,
		"filter_every": o.filterEvery, "churn_k": o.churnK, "churn_standing": o.churnStanding,
	}
}

// machine is where the figures were measured.
type machine struct {
	CPU      string  `json:"cpu"`
	NumCPU   int     `json:"nproc"`
	Kernel   string  `json:"kernel"`
	Go       string  `json:"go"`
	RabbitMQ string  `json:"rabbitmq"`
	Erlang   string  `json:"erlang,omitempty"`
	Load     string  `json:"loadavg_at_start"`
	ClockHz  float64 `json:"clk_tck"`
}

func describeMachine(amqpURL string) machine {
	m := machine{NumCPU: runtime.NumCPU(), Go: runtime.Version(), ClockHz: clockTicks}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.Load = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	if c, err := amqpDial(amqpURL); err == nil {
		m.RabbitMQ, _ = c.Properties["version"].(string)
		if p, ok := c.Properties["platform"].(string); ok {
			m.Erlang = p
		}
		c.Close()
	}
	return m
}

// rerender prints the table of the run recorded in a benchmarks.json.
func rerender(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var r report
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	fmt.Print(r.table())
	return nil
}
