package main

import (
	"maps"
	"slices"
	"strings"
	"testing"
)

func TestRoutingKey(t *testing.T) {
	for _, tc := range []struct {
		v    uint64
		want string
	}{
		{0, "000000000000"},
		{0xabc, "000000000abc"},
		{1<<48 - 1, "ffffffffffff"},
		{0xffff_1234_5678_9abc, "123456789abc"}, // only the low 48 bits
	} {
		if got := routingKey(tc.v); got != tc.want {
			t.Errorf("routingKey(%#x) = %q, want %q", tc.v, got, tc.want)
		}
	}
}

func TestParseCounts(t *testing.T) {
	for _, tc := range []struct {
		in      string
		least   int
		want    []int
		wantErr bool
	}{
		{"1,4,16", 1, []int{1, 4, 16}, false},
		{" 0, 10000 ,", 0, []int{0, 10000}, false},
		{"0", 1, nil, true},
		{"", 0, nil, true},
		{"1,x", 1, nil, true},
	} {
		got, err := parseCounts(tc.in, tc.least)
		if (err != nil) != tc.wantErr || !slices.Equal(got, tc.want) {
			t.Errorf("parseCounts(%q, %d) = %v, %v; want %v, error %v", tc.in, tc.least, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestErlangPid(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    int
		wantErr bool
	}{
		{"\"12345\"\n", 12345, false},
		{"12345", 0, true},
		{"\"\"", 0, true},
		{"\"x1\"", 0, true},
		{"Error: unable to perform an operation on node", 0, true},
	} {
		got, err := erlangPid(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("erlangPid(%q) = %d, %v; want %d, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestSumRoles(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cpu   map[string]float64
		roles []string
		want  map[string]float64
	}{
		{"one broker stays", map[string]float64{"broker": 5}, []string{"broker"}, map[string]float64{"broker": 5}},
		{"three summed", map[string]float64{"broker1": 1, "broker2": 2, "broker3": 3, "node": 9}, []string{"broker1", "broker2", "broker3"},
			map[string]float64{"broker1": 1, "broker2": 2, "broker3": 3, "node": 9, "broker": 6}},
		{"missing roles skipped", map[string]float64{"broker2": 2}, []string{"broker1", "broker2"}, map[string]float64{"broker2": 2, "broker": 2}},
		{"none present", map[string]float64{"node": 1}, []string{"broker1"}, map[string]float64{"node": 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sumRoles(tc.cpu, "broker", tc.roles)
			if !maps.Equal(tc.cpu, tc.want) {
				t.Errorf("sumRoles = %v, want %v", tc.cpu, tc.want)
			}
		})
	}
}

func TestEventToken(t *testing.T) {
	for _, tc := range []struct {
		name          string
		tokens, every int
		want          []string
	}{
		{"fanout: every event for a held token", 3, 1, []string{"fan-0", "fan-1", "fan-2", "fan-0"}},
		{"filter: the last of each group", 2, 3, []string{"none-0", "none-1", "fan-0", "none-3", "none-4", "fan-1", "none-6", "none-7", "fan-0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newEventPublisher(10, tc.tokens, tc.every)
			var got []string
			for i := range tc.want {
				got = append(got, p.token(i))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("tokens = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestEventDeliveredCountsItsGroup(t *testing.T) {
	p := newEventPublisher(10, 1, 5)
	for range 10 {
		p.slots <- struct{}{}
	}
	p.delivered()
	if got := p.answered.Load(); got != 5 {
		t.Errorf("answered = %d after one delivery in groups of 5, want 5", got)
	}
	if got := len(p.slots); got != 5 {
		t.Errorf("%d slots taken after one delivery, want 5", got)
	}
}

func TestCapacityRows(t *testing.T) {
	churn := func(broker string, standing, k, rep int, rate, cpu float64) churnResult {
		return churnResult{Broker: broker, Standing: standing, Channels: k, Rep: rep, Rate: rate,
			CPUPerOp: map[string]float64{"broker": cpu}, Latency: latencySummary{P50: 0.5, P99: 2}}
	}
	r := &report{
		Churn: []churnResult{
			churn("single", 0, 1, 1, 1000, 400), churn("single", 0, 4, 1, 3000, 300),
			churn("single", 10000, 1, 1, 900, 420), churn("single", 10000, 4, 1, 3000, 310),
			churn("cluster", 0, 1, 1, 100, 4000),
		},
		Calls: []loadResult{
			{Path: "cluster-rpc", Conns: 100, InFlight: 4, Rep: 1, Rate: 3000, CPUPerCall: map[string]float64{"node": 50, "broker": 300, "broker1": 150, "broker2": 140, "broker3": 10}},
			{Path: "cluster-raw-reliable", Conns: 100, InFlight: 4, Rep: 1, Rate: 4000, CPUPerCall: map[string]float64{"broker": 280}},
		},
		Fanout: []fanoutResult{
			{Path: "piped", Conns: 1000, Every: 1, Rep: 1, Rate: 20000, CPUPerEvent: map[string]float64{"node": 20}},
			{Path: "filter", Conns: 1000, Every: 100, Rep: 1, Rate: 40000, CPUPerEvent: map[string]float64{"node": 5, "broker": 25}},
			{Path: "raw", Conns: 1, Rep: 1, Rate: 50000},
		},
	}
	table := r.table()
	for _, want := range []string{
		"| churn: exchange.bind + exchange.unbind ops/s at K = 1 / 4 channels, 0 standing bindings | — | — | 1.00 k / 3.00 k |",
		"| churn: exchange.bind + exchange.unbind ops/s at K = 1 / 4 channels, 10000 standing bindings | — | — | 900 / 3.00 k | 0.90 / 1.00 of the rate with 0 standing |",
		"| churn: broker CPU µs per op at K = 1 / 4 channels, 10000 standing bindings | — | — | 420.0 / 310.0 |",
		"| churn on the 3-node cluster (node 1): exchange.bind + exchange.unbind ops/s at K = 1 channels, 0 standing bindings | — | — | 100 |",
		"| cluster (3 nodes): calls/s at 100 × 4, node on broker 1, backend on broker 2 | 3.00 k | 4.00 k | — | 0.75 of raw-reliable |",
		"| cluster (3 nodes): broker CPU µs per call at 100 × 4, the nodes together (1 + 2 + 3) | 300.0 (150.0 + 140.0 + 10.0) | 280.0 | — |",
		"| fanout-filter: events/s drained, 1000 connections, 1 event in 100 for their tokens | 40.0 k | — | 50.0 k (plain consumer) | 0.80 of the raw consume rate, 2.00 × the delivered rate |",
		"| fanout-filter: node / broker CPU µs per event drained | 5.0 / 25.0 | — | — | 0.25 of a delivered event's node CPU |",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("the table lacks\n%s\nit is:\n%s", want, table)
		}
	}
	// Only cluster calls: no rows of the single-broker paths.
	if strings.Contains(table, "| calls/s at 100 × 4") {
		t.Errorf("the table has single-broker call rows without such calls:\n%s", table)
	}
}
