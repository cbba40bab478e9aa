package main

import (
	"math"
	"slices"
	"time"
)

// latencies are the answer times of one measured window.
type latencies []time.Duration

// percentile returns the p-quantile (0 ≤ p ≤ 1) of sorted by the
// nearest-rank method: the smallest value at or below which a fraction p of
// the values lie. It returns 0 for no values.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// latencySummary is what the report shows of a latency distribution, in
// milliseconds.
type latencySummary struct {
	P50 float64 `json:"p50_ms"`
	P90 float64 `json:"p90_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
	N   int     `json:"n"`
}

// summarize sorts l in place and returns its percentiles.
func summarize(l []time.Duration) latencySummary {
	slices.Sort(l)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return latencySummary{
		P50: ms(percentile(l, 0.50)),
		P90: ms(percentile(l, 0.90)),
		P99: ms(percentile(l, 0.99)),
		Max: ms(percentile(l, 1)),
		N:   len(l),
	}
}

// spread is the median and range of one figure over the repetitions.
type spread struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

// spreadOf returns the median, minimum and maximum of vs (zero for none).
// With an even count the median is the mean of the two middle values.
func spreadOf(vs []float64) spread {
	if len(vs) == 0 {
		return spread{}
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return spread{Median: m, Min: s[0], Max: s[len(s)-1]}
}
