package main

import (
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(vs ...int) []time.Duration {
		var out []time.Duration
		for _, v := range vs {
			out = append(out, time.Duration(v)*time.Millisecond)
		}
		return out
	}
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	for _, tc := range []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"none", nil, 0.5, 0},
		{"one", ms(7), 0.99, 7 * time.Millisecond},
		{"p0 is the minimum", ms(1, 2, 3), 0, time.Millisecond},
		{"median of four is the second", ms(1, 2, 3, 4), 0.5, 2 * time.Millisecond},
		{"p50 of 1..100", hundred, 0.5, 50 * time.Millisecond},
		{"p90 of 1..100", hundred, 0.9, 90 * time.Millisecond},
		{"p99 of 1..100", hundred, 0.99, 99 * time.Millisecond},
		{"max", hundred, 1, 100 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := percentile(tc.sorted, tc.p); got != tc.want {
				t.Errorf("percentile(%v) = %v, want %v", tc.p, got, tc.want)
			}
		})
	}
}

func TestSpreadOf(t *testing.T) {
	for _, tc := range []struct {
		vs   []float64
		want spread
	}{
		{nil, spread{}},
		{[]float64{3, 1, 2}, spread{2, 1, 3}},
		{[]float64{4, 1, 3, 2}, spread{2.5, 1, 4}},
	} {
		if got := spreadOf(tc.vs); got != tc.want {
			t.Errorf("spreadOf(%v) = %+v, want %+v", tc.vs, got, tc.want)
		}
	}
}

func TestParseStat(t *testing.T) {
	// Field 14 (utime) 150 and 15 (stime) 50; the name holds a space and parentheses.
	line := "1234 (we (ird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 150 50 0 0 20 0 8 0 12345 1000000 500 18446744073709551615\n"
	for _, tc := range []struct {
		name, in string
		want     uint64
		wantErr  bool
	}{
		{"utime plus stime", line, 200, false},
		{"no name", "1234 S 1", 0, true},
		{"too short", "1 (x) S 1 2 3", 0, true},
		{"not a number", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 x 50 0", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStat([]byte(tc.in))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("parseStat = %d, %v; want %d, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestParseVmRSS(t *testing.T) {
	got, err := parseVmRSS([]byte("Name:\tpiped\nVmPeak:\t  9000 kB\nVmRSS:\t   2048 kB\nThreads:\t7\n"))
	if err != nil || got != 2048*1024 {
		t.Errorf("parseVmRSS = %v, %v; want %d", got, err, 2048*1024)
	}
	if _, err := parseVmRSS([]byte("Name:\tx\n")); err == nil {
		t.Error("parseVmRSS without VmRSS: no error")
	}
}

func TestParseMetrics(t *testing.T) {
	text := "# HELP go_goroutines x\n# TYPE go_goroutines gauge\ngo_goroutines{region=\"ams\"} 42\ngo_memstats_heap_inuse_bytes 1.5e+06\nother 1\n"
	got := parseMetrics([]byte(text), "go_goroutines", "go_memstats_heap_inuse_bytes")
	if got["go_goroutines"] != 42 || got["go_memstats_heap_inuse_bytes"] != 1.5e6 || len(got) != 2 {
		t.Errorf("parseMetrics = %v", got)
	}
}

func TestFrameID(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{`{"id":17,"type":"result","method":"bench"}`, 17, true},
		{`{"type":"error","id":3,"error":{}}`, 3, true},
		{`{"type":"event"}`, 0, false},
		{`{"id":"x"}`, 0, false},
	} {
		if got, ok := frameID([]byte(tc.in)); got != tc.want || ok != tc.ok {
			t.Errorf("frameID(%s) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestParseProcStat(t *testing.T) {
	busy, total, err := parseProcStat([]byte("cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\n"))
	if err != nil || busy != 161 || total != 1181 {
		t.Errorf("parseProcStat = %d, %d, %v; want 161, 1181", busy, total, err)
	}
	if _, _, err := parseProcStat([]byte("intr 1 2\n")); err == nil {
		t.Error("parseProcStat without a cpu line: no error")
	}
}
