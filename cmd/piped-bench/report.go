package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// report is everything one run measured; it is written as benchmarks.json.
type report struct {
	Started time.Time      `json:"started"`
	Seconds float64        `json:"seconds"`
	Machine machine        `json:"machine"`
	Options map[string]any `json:"options"`
	Calls   []loadResult   `json:"calls,omitempty"`
	Idle    *idleResult    `json:"idle,omitempty"`
	Fanout  []fanoutResult `json:"fanout,omitempty"`
	Connect *connectResult `json:"connect,omitempty"`
	Churn   []churnResult  `json:"churn,omitempty"`
}

// The targets of issue 11, on this machine.
const (
	targetRPCRatio     = 0.90  // of raw-reliable's calls/s at 100 × 4
	targetNodeCPU      = 25.0  // µs per call
	targetP50Extra     = 0.15  // ms over raw's p50 at 1 × 1
	targetIdleKiB      = 6.0   // RSS per idle connection
	targetFanoutRatio  = 0.90  // of the raw consume rate
	targetConnectRate  = 15000 // new connections per second
	targetBrokerCPURel = 1.0   // broker CPU per call, of raw-reliable's
)

// runs returns the results of path at conns × w, one per repetition.
func (r *report) runs(path string, conns, w int) []loadResult {
	var out []loadResult
	for _, c := range r.Calls {
		if c.Path == path && c.Conns == conns && c.InFlight == w {
			out = append(out, c)
		}
	}
	return out
}

// over returns the spread of f over rs.
func over[T any](rs []T, f func(T) float64) spread {
	vs := make([]float64, 0, len(rs))
	for _, x := range rs {
		vs = append(vs, f(x))
	}
	return spreadOf(vs)
}

// paired returns the spread over the repetitions of f(a)/f(b), each a
// measured beside the b of the same repetition: on a shared machine such
// adjacent ratios drift less than the figures themselves.
func paired[T any](a, b []T, rep func(T) int, f func(T) float64) (spread, int) {
	var qs []float64
	for _, x := range a {
		for _, y := range b {
			if rep(x) == rep(y) && f(y) != 0 {
				qs = append(qs, f(x)/f(y))
			}
		}
	}
	return spreadOf(qs), len(qs)
}

// pairedDiff is paired's difference f(a) − f(b) instead of the ratio.
func pairedDiff(a, b []loadResult, f func(loadResult) float64) (spread, int) {
	var ds []float64
	for _, x := range a {
		for _, y := range b {
			if x.Rep == y.Rep {
				ds = append(ds, f(x)-f(y))
			}
		}
	}
	return spreadOf(ds), len(ds)
}

func loadRep(x loadResult) int  { return x.Rep }
func fanRep(x fanoutResult) int { return x.Rep }

// cell formats a spread: the median, and the range when the repetitions
// differ in the format's precision.
func cell(s spread, n int, format func(float64) string) string {
	if n == 0 {
		return "—"
	}
	m, lo, hi := format(s.Median), format(s.Min), format(s.Max)
	if n == 1 || lo == hi {
		return m
	}
	return fmt.Sprintf("%s (%s–%s)", m, lo, hi)
}

func fnum(prec int) func(float64) string {
	return func(v float64) string { return fmt.Sprintf("%.*f", prec, v) }
}

func fsigned(v float64) string { return fmt.Sprintf("%+.2f", v) }

// frate formats a rate: 21.3 k, 950.
func frate(v float64) string {
	if v >= 10000 {
		return fmt.Sprintf("%.1f k", v/1000)
	}
	if v >= 1000 {
		return fmt.Sprintf("%.2f k", v/1000)
	}
	return fmt.Sprintf("%.0f", v)
}

func met(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

// table is the markdown table of the run: gateway beside its ceiling.
func (r *report) table() string {
	var b strings.Builder
	row := func(cells ...string) { b.WriteString("| " + strings.Join(cells, " | ") + " |\n") }
	row("figure", "Piped", "raw-reliable", "raw", "Piped against the ceiling", "target", "met")
	row("---", "---:", "---:", "---:", "---", "---", "---")

	conns, w := 0, 0
	for _, c := range r.Calls {
		if (c.Conns != 1 || c.InFlight != 1) && !strings.HasPrefix(c.Path, "cluster-") {
			conns, w = c.Conns, c.InFlight
			break
		}
	}
	if conns > 0 {
		rpc, rel, raw := r.runs("rpc", conns, w), r.runs("raw-reliable", conns, w), r.runs("raw", conns, w)
		rate := func(x loadResult) float64 { return x.Rate }
		shape := fmt.Sprintf("%d × %d", conns, w)
		cmp, v := "", ""
		if len(rpc) > 0 && len(rel) > 0 {
			q, n := paired(rpc, rel, loadRep, rate)
			cmp, v = cell(q, n, fnum(2))+" of raw-reliable", verdict(q, n, func(x float64) bool { return x >= targetRPCRatio })
			if len(raw) > 0 {
				q, n := paired(rpc, raw, loadRep, rate)
				cmp += ", " + cell(q, n, fnum(2)) + " of raw"
			}
		}
		row("calls/s at "+shape, cell(over(rpc, rate), len(rpc), frate), cell(over(rel, rate), len(rel), frate), cell(over(raw, rate), len(raw), frate),
			cmp, fmt.Sprintf("≥ %.2f of raw-reliable", targetRPCRatio), v)
		lat := func(rs []loadResult) string {
			if len(rs) == 0 {
				return "—"
			}
			f := func(g func(loadResult) float64) string { return fnum(2)(over(rs, g).Median) }
			return f(func(x loadResult) float64 { return x.Latency.P50 }) + " / " + f(func(x loadResult) float64 { return x.Latency.P90 }) + " / " +
				f(func(x loadResult) float64 { return x.Latency.P99 }) + " / " + f(func(x loadResult) float64 { return x.Latency.Max })
		}
		row("p50 / p90 / p99 / max ms at "+shape, lat(rpc), lat(rel), lat(raw), "", "", "")
		lr, nl := lostCell(rpc)
		lrel, _ := lostCell(rel)
		lraw, _ := lostCell(raw)
		row("lost / duplicated / errors at "+shape+" (all repetitions)", lr, lrel, lraw, "", "0 lost", metIf(len(rpc) > 0, nl == 0))
		cpu := func(role string) func(loadResult) float64 {
			return func(x loadResult) float64 { return x.CPUPerCall[role] }
		}
		if len(rpc) > 0 {
			s := over(rpc, cpu("node"))
			row("node CPU µs per call at "+shape, cell(s, len(rpc), fnum(1)), "—", "—", "", fmt.Sprintf("≤ %.0f µs", targetNodeCPU),
				verdict(s, len(rpc), func(x float64) bool { return x <= targetNodeCPU }))
		}
		cmp, v = "", ""
		if len(rpc) > 0 && len(rel) > 0 {
			q, n := paired(rpc, rel, loadRep, cpu("broker"))
			cmp, v = cell(q, n, fnum(2))+" of raw-reliable", verdict(q, n, func(x float64) bool { return x <= targetBrokerCPURel })
		}
		row("broker CPU µs per call at "+shape, cell(over(rpc, cpu("broker")), len(rpc), fnum(1)), cell(over(rel, cpu("broker")), len(rel), fnum(1)),
			cell(over(raw, cpu("broker")), len(raw), fnum(1)), cmp, "≤ raw-reliable's", v)
		row("backend CPU µs per call at "+shape, cell(over(rpc, cpu("backend")), len(rpc), fnum(1)), cell(over(rel, cpu("backend")), len(rel), fnum(1)),
			cell(over(raw, cpu("backend")), len(raw), fnum(1)), "", "", "")
		oc := func(x loadResult) float64 { return x.OtherCores }
		row("other processes' CPU during the window, cores", cell(over(rpc, oc), len(rpc), fnum(2)), cell(over(rel, oc), len(rel), fnum(2)),
			cell(over(raw, oc), len(raw), fnum(2)), "of "+fmt.Sprint(r.Machine.NumCPU), "", "")
		row("load generator CPU µs per call at "+shape, cell(over(rpc, cpu("harness")), len(rpc), fnum(1)), cell(over(rel, cpu("harness")), len(rel), fnum(1)),
			cell(over(raw, cpu("harness")), len(raw), fnum(1)), "", "", "")
	}
	if rpc, rel, raw := r.runs("rpc", 1, 1), r.runs("raw-reliable", 1, 1), r.runs("raw", 1, 1); len(rpc)+len(rel)+len(raw) > 0 {
		p50 := func(x loadResult) float64 { return x.Latency.P50 }
		cmp, v := "", ""
		if len(rpc) > 0 && len(raw) > 0 {
			d, n := pairedDiff(rpc, raw, p50)
			cmp, v = cell(d, n, fsigned)+" ms over raw", verdict(d, n, func(x float64) bool { return x <= targetP50Extra+1e-9 })
			if len(rel) > 0 {
				d, n := pairedDiff(rpc, rel, p50)
				cmp += ", " + cell(d, n, fsigned) + " ms over raw-reliable"
			}
		}
		row("p50 ms at 1 × 1", cell(over(rpc, p50), len(rpc), fnum(3)), cell(over(rel, p50), len(rel), fnum(3)), cell(over(raw, p50), len(raw), fnum(3)),
			cmp, fmt.Sprintf("≤ raw + %.2f ms", targetP50Extra), v)
		p99 := func(x loadResult) float64 { return x.Latency.P99 }
		row("p99 ms at 1 × 1", cell(over(rpc, p99), len(rpc), fnum(3)), cell(over(rel, p99), len(rel), fnum(3)), cell(over(raw, p99), len(raw), fnum(3)), "", "", "")
		rate := func(x loadResult) float64 { return x.Rate }
		row("calls/s at 1 × 1", cell(over(rpc, rate), len(rpc), frate), cell(over(rel, rate), len(rel), frate), cell(over(raw, rate), len(raw), frate), "", "", "")
	}
	if i := r.Idle; i != nil {
		kib := i.RSSPerConn / 1024
		row(fmt.Sprintf("idle: node RSS KiB per connection at %d (%s)", i.Conns, i.conditions()), fmt.Sprintf("%.2f", kib), "—", "—",
			fmt.Sprintf("%.0f → %.0f MiB", i.RSSBefore/(1<<20), i.RSSAfter/(1<<20)), fmt.Sprintf("≤ %.0f KiB", targetIdleKiB), met(kib <= targetIdleKiB))
		row("idle: Go heap in use KiB per connection", fmt.Sprintf("%.2f", i.HeapPerConn/1024), "—", "—", "", "", "")
		row("idle: goroutines per connection", fmt.Sprintf("%.2f", i.GoroutinesPer), "—", "—",
			fmt.Sprintf("%.0f → %.0f goroutines", i.GoroutinesBefore, i.GoroutinesAfter), "0 (if the design allows)", met(i.GoroutinesPer < 0.01))
	}
	if len(r.Fanout) > 0 {
		node, raw := r.fanout("piped"), r.fanout("raw")
		rate := func(x fanoutResult) float64 { return x.Rate }
		cmp, v := "", ""
		if len(node) > 0 && len(raw) > 0 {
			q, n := paired(node, raw, fanRep, rate)
			cmp, v = cell(q, n, fnum(2))+" of the raw consume rate", verdict(q, n, func(x float64) bool { return x >= targetFanoutRatio })
		}
		label := "fanout: events/s delivered"
		if len(node) > 0 {
			label = fmt.Sprintf("fanout: events/s delivered, %d connections, %d tokens", node[0].Conns, node[0].Tokens)
		}
		row(label, cell(over(node, rate), len(node), frate), "—", cell(over(raw, rate), len(raw), frate)+" (plain consumer)",
			cmp, fmt.Sprintf("≥ %.2f of raw", targetFanoutRatio), v)
		cpu := func(role string) func(fanoutResult) float64 {
			return func(x fanoutResult) float64 { return x.CPUPerEvent[role] }
		}
		row("fanout: node / broker CPU µs per event", cell(over(node, cpu("node")), len(node), fnum(1))+" / "+cell(over(node, cpu("broker")), len(node), fnum(1)),
			"—", "— / "+cell(over(raw, cpu("broker")), len(raw), fnum(1)), "", "", "")
		r.filterRows(row)
	}
	if c := r.Connect; c != nil {
		row(fmt.Sprintf("connect: new connections/s, %d processes × %d at once", c.Workers, c.Concurrency), frate(c.Rate), "—", "—",
			fmt.Sprintf("%d connections, %d errors", c.Conns, c.Errors), fmt.Sprintf("≥ %s", frate(targetConnectRate)), met(c.Rate >= targetConnectRate))
		row("connect: upgrade latency p50 / p99 ms", fmt.Sprintf("%.2f / %.2f", c.Upgrade.P50, c.Upgrade.P99), "—", "—", "", "", "")
		row("connect: node CPU µs per connection", fmt.Sprintf("%.1f", c.CPUPerConn["node"]), "—", "—", "", "", "")
	}
	r.churnRows(row)
	r.clusterRows(row)
	fmt.Fprintf(&b, "\n%s; %d × %s; RabbitMQ %s; %s; load average at start %s; %s UTC, %.0f s; repetitions %v (median, range in brackets; ratios are taken within each repetition).\n",
		r.Machine.Kernel, r.Machine.NumCPU, r.Machine.CPU, r.Machine.RabbitMQ, r.Machine.Go, r.Machine.Load,
		r.Started.Format("2006-01-02 15:04"), math.Round(r.Seconds), r.Options["reps"])
	return b.String()
}

// lostCell sums the lost, duplicated and errors of rs ("—" for none) and
// returns the lost alone too.
func lostCell(rs []loadResult) (string, int64) {
	if len(rs) == 0 {
		return "—", 0
	}
	var l, d, e int64
	for _, x := range rs {
		l, d, e = l+x.Lost, d+x.Duplicated, e+x.Errors
	}
	return fmt.Sprintf("%d / %d / %d", l, d, e), l
}

// verdict says whether a figure measured n times (spread s) meets ok:
// "yes" when every repetition does, "no" when none does, and "unclear" when
// the range crosses the target — then the median alone would mislead.
func verdict(s spread, n int, ok func(float64) bool) string {
	switch {
	case n == 0:
		return ""
	case n == 1 || s.Min == s.Max:
		return met(ok(s.Median))
	case ok(s.Min) && ok(s.Max) && ok(s.Median):
		return "yes"
	case !ok(s.Min) && !ok(s.Max) && !ok(s.Median):
		return "**no**"
	}
	return fmt.Sprintf("unclear (median: %s)", strings.Trim(met(ok(s.Median)), "*"))
}

// metIf is met(ok) when the figure could be compared, else empty.
func metIf(comparable, ok bool) string {
	if !comparable {
		return ""
	}
	return met(ok)
}

// conditions says when the idle figures were read: after how many pings
// per connection over how long a hold, or (a run from before the hold)
// after settling; and whether a GC was forced first.
func (i *idleResult) conditions() string {
	if i.HoldSeconds == 0 {
		if i.ForcedGC {
			return "after a forced GC"
		}
		return "after settling"
	}
	when := fmt.Sprintf("after %.1f pings each, a ping every %s s, held %.0f s",
		i.PingsPerConn, strconv.FormatFloat(i.PingInterval, 'f', -1, 64), i.HoldSeconds)
	if i.ForcedGC {
		when += ", then a forced GC"
	}
	return when
}
