package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// The rows of the capacity inputs: fanout-filter, churn and cluster-rpc.

// fanout returns the fanout results of path ("piped", "filter" or "raw").
func (r *report) fanout(path string) []fanoutResult {
	var out []fanoutResult
	for _, f := range r.Fanout {
		if f.Path == path {
			out = append(out, f)
		}
	}
	return out
}

// filterRows are the rows of fanout-filter, beside the delivered fanout
// and the raw consume rate of the same repetitions.
func (r *report) filterRows(row func(...string)) {
	filter, node, raw := r.fanout("filter"), r.fanout("piped"), r.fanout("raw")
	if len(filter) == 0 {
		return
	}
	rate := func(x fanoutResult) float64 { return x.Rate }
	var cmp []string
	if len(raw) > 0 {
		q, n := paired(filter, raw, fanRep, rate)
		cmp = append(cmp, cell(q, n, fnum(2))+" of the raw consume rate")
	}
	if len(node) > 0 {
		q, n := paired(filter, node, fanRep, rate)
		cmp = append(cmp, cell(q, n, fnum(2))+" × the delivered rate")
	}
	row(fmt.Sprintf("fanout-filter: events/s drained, %d connections, 1 event in %d for their tokens", filter[0].Conns, filter[0].Every),
		cell(over(filter, rate), len(filter), frate), "—", cell(over(raw, rate), len(raw), frate)+" (plain consumer)", strings.Join(cmp, ", "), "", "")
	cpu := func(role string) func(fanoutResult) float64 {
		return func(x fanoutResult) float64 { return x.CPUPerEvent[role] }
	}
	cmpCPU := ""
	if len(node) > 0 {
		q, n := paired(filter, node, fanRep, cpu("node"))
		cmpCPU = cell(q, n, fnum(2)) + " of a delivered event's node CPU"
	}
	row("fanout-filter: node / broker CPU µs per event drained",
		cell(over(filter, cpu("node")), len(filter), fnum(1))+" / "+cell(over(filter, cpu("broker")), len(filter), fnum(1)), "—", "—", cmpCPU, "", "")
}

func churnRep(x churnResult) int { return x.Rep }

// churnAt returns the churn results on broker ("single" or "cluster") with
// standing bindings, at k channels (any k when k is 0).
func (r *report) churnAt(broker string, standing, k int) []churnResult {
	var out []churnResult
	for _, c := range r.Churn {
		if c.Broker == broker && c.Standing == standing && (k == 0 || c.Channels == k) {
			out = append(out, c)
		}
	}
	return out
}

// churnRows are three rows per broker and standing level: ops/s, broker CPU
// per op and latency per op, each with one figure per concurrency level.
func (r *report) churnRows(row func(...string)) {
	for _, broker := range []string{"single", "cluster"} {
		var levels []int
		for _, c := range r.Churn {
			if c.Broker == broker && !slices.Contains(levels, c.Standing) {
				levels = append(levels, c.Standing)
			}
		}
		slices.Sort(levels)
		where := "churn"
		if broker == "cluster" {
			where = fmt.Sprintf("churn on the %d-node cluster (node 1)", clusterSize)
		}
		for _, s := range levels {
			var ks []int
			for _, c := range r.churnAt(broker, s, 0) {
				if !slices.Contains(ks, c.Channels) {
					ks = append(ks, c.Channels)
				}
			}
			slices.Sort(ks)
			var kNames []string
			for _, k := range ks {
				kNames = append(kNames, strconv.Itoa(k))
			}
			perK := func(f func([]churnResult) string) string {
				var cells []string
				for _, k := range ks {
					cells = append(cells, f(r.churnAt(broker, s, k)))
				}
				return strings.Join(cells, " / ")
			}
			rate := func(x churnResult) float64 { return x.Rate }
			cmp := ""
			if s > 0 && len(r.churnAt(broker, levels[0], 0)) > 0 {
				cmp = perK(func(rs []churnResult) string {
					if len(rs) == 0 {
						return "—"
					}
					q, n := paired(rs, r.churnAt(broker, levels[0], rs[0].Channels), churnRep, rate)
					return cell(q, n, fnum(2))
				}) + fmt.Sprintf(" of the rate with %d standing", levels[0])
			}
			shape := fmt.Sprintf("K = %s channels, %d standing bindings", strings.Join(kNames, " / "), s)
			row(where+": exchange.bind + exchange.unbind ops/s at "+shape, "—", "—",
				perK(func(rs []churnResult) string { return cell(over(rs, rate), len(rs), frate) }), cmp, "", "")
			brokerCPU := func(x churnResult) float64 { return x.CPUPerOp["broker"] }
			row(where+": broker CPU µs per op at "+shape, "—", "—",
				perK(func(rs []churnResult) string { return cell(over(rs, brokerCPU), len(rs), fnum(1)) }), "", "", "")
			row(where+": p50 / p99 ms per op at "+shape, "—", "—", perK(func(rs []churnResult) string {
				if len(rs) == 0 {
					return "—"
				}
				p50 := over(rs, func(x churnResult) float64 { return x.Latency.P50 }).Median
				p99 := over(rs, func(x churnResult) float64 { return x.Latency.P99 }).Median
				return fmt.Sprintf("%.2f, %.2f", p50, p99)
			}), "", "", "")
		}
	}
}

// clusterRows are the rows of cluster-rpc, beside rpc on one broker when
// the run has it.
func (r *report) clusterRows(row func(...string)) {
	conns, w := 0, 0
	for _, c := range r.Calls {
		if strings.HasPrefix(c.Path, "cluster-") {
			conns, w = c.Conns, c.InFlight
			break
		}
	}
	if conns == 0 {
		return
	}
	rpc, rel := r.runs("cluster-rpc", conns, w), r.runs("cluster-raw-reliable", conns, w)
	single := r.runs("rpc", conns, w)
	shape := fmt.Sprintf("%d × %d", conns, w)
	rate := func(x loadResult) float64 { return x.Rate }
	var cmp []string
	if len(rpc) > 0 && len(rel) > 0 {
		q, n := paired(rpc, rel, loadRep, rate)
		cmp = append(cmp, cell(q, n, fnum(2))+" of raw-reliable")
	}
	if len(rpc) > 0 && len(single) > 0 {
		q, n := paired(rpc, single, loadRep, rate)
		cmp = append(cmp, cell(q, n, fnum(2))+" of rpc on one broker")
	}
	where := fmt.Sprintf("cluster (%d nodes)", clusterSize)
	row(where+": calls/s at "+shape+", node on broker 1, backend on broker 2", cell(over(rpc, rate), len(rpc), frate),
		cell(over(rel, rate), len(rel), frate), "—", strings.Join(cmp, ", "), "", "")
	lat := func(rs []loadResult) string {
		if len(rs) == 0 {
			return "—"
		}
		return fmt.Sprintf("%.2f / %.2f", over(rs, func(x loadResult) float64 { return x.Latency.P50 }).Median,
			over(rs, func(x loadResult) float64 { return x.Latency.P99 }).Median)
	}
	row(where+": p50 / p99 ms at "+shape, lat(rpc), lat(rel), "—", "", "", "")
	lr, nl := lostCell(rpc)
	lrel, _ := lostCell(rel)
	row(where+": lost / duplicated / errors at "+shape+" (all repetitions)", lr, lrel, "—", "", "0 lost", metIf(len(rpc) > 0, nl == 0))
	cpu := func(role string) func(loadResult) float64 {
		return func(x loadResult) float64 { return x.CPUPerCall[role] }
	}
	row(where+": node CPU µs per call at "+shape, cell(over(rpc, cpu("node")), len(rpc), fnum(1)), "—", "—", "", "", "")
	brokers := func(rs []loadResult) string {
		if len(rs) == 0 {
			return "—"
		}
		sum := cell(over(rs, cpu("broker")), len(rs), fnum(1))
		var parts []string
		for i := range clusterSize {
			role := "broker" + strconv.Itoa(i+1)
			if _, ok := rs[0].CPUPerCall[role]; !ok {
				return sum
			}
			parts = append(parts, fnum(1)(over(rs, cpu(role)).Median))
		}
		return sum + " (" + strings.Join(parts, " + ") + ")"
	}
	cmpCPU := ""
	if len(rpc) > 0 && len(single) > 0 {
		q, n := paired(rpc, single, loadRep, cpu("broker"))
		cmpCPU = cell(q, n, fnum(2)) + " of rpc's on one broker"
	}
	row(where+": broker CPU µs per call at "+shape+", the nodes together (1 + 2 + 3)", brokers(rpc), brokers(rel), "—", cmpCPU, "", "")
	oc := func(x loadResult) float64 { return x.OtherCores }
	row(where+": other processes' CPU during the window, cores", cell(over(rpc, oc), len(rpc), fnum(2)), cell(over(rel, oc), len(rel), fnum(2)), "—", "", "", "")
}
