package main

import (
	"fmt"
	"html"
	"strings"
)

// chart draws benchmarks.svg: calls/s of Piped, raw-reliable and raw at
// the conns × inflight load, and beside it their CPU per call, stacked by
// process (node, broker, backend). Medians over the repetitions. It returns
// nil when the run has none of these figures.
func (r *report) chart() []byte {
	conns, w := 0, 0
	for _, c := range r.Calls {
		if (c.Conns != 1 || c.InFlight != 1) && !strings.HasPrefix(c.Path, "cluster-") {
			conns, w = c.Conns, c.InFlight
			break
		}
	}
	type bar struct {
		label string
		rate  float64
		cpu   [3]float64 // node, broker, backend
	}
	var bars []bar
	for _, p := range []struct{ path, label string }{{"rpc", "Piped"}, {"raw-reliable", "raw-reliable"}, {"raw", "raw"}} {
		rs := r.runs(p.path, conns, w)
		if len(rs) == 0 {
			continue
		}
		b := bar{label: p.label, rate: over(rs, func(x loadResult) float64 { return x.Rate }).Median}
		for i, role := range []string{"node", "broker", "backend"} {
			b.cpu[i] = over(rs, func(x loadResult) float64 { return x.CPUPerCall[role] }).Median
		}
		bars = append(bars, b)
	}
	if len(bars) == 0 {
		return nil
	}
	const (
		width, height = 760, 360
		top, bottom   = 50, 300 // plot area, y
		barW          = 60
	)
	var s strings.Builder
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&s, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&s, `<text x="%d" y="20" font-size="14" font-weight="bold">Piped beside its ceiling, %d × %d calls in flight (%s, %d CPUs)</text>`+"\n",
		20, conns, w, html.EscapeString(r.Started.Format("2006-01-02")), r.Machine.NumCPU)

	colors := [3]string{"#4e79a7", "#f28e2b", "#59a14f"}
	panel := func(x0 int, title, unit string, max float64, value func(bar) []float64, names []string) {
		fmt.Fprintf(&s, `<text x="%d" y="%d" font-weight="bold">%s</text>`+"\n", x0, top-12, html.EscapeString(title))
		fmt.Fprintf(&s, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>`+"\n", x0, bottom, x0+len(bars)*(barW+30), bottom)
		if max <= 0 {
			max = 1
		}
		scale := float64(bottom-top-20) / max
		for i, b := range bars {
			x := x0 + 15 + i*(barW+30)
			y := float64(bottom)
			vs := value(b)
			total := 0.0
			for k, v := range vs {
				h := v * scale
				y -= h
				total += v
				color := colors[0]
				if len(vs) > 1 {
					color = colors[k]
				}
				fmt.Fprintf(&s, `<rect x="%d" y="%.1f" width="%d" height="%.1f" fill="%s"/>`+"\n", x, y, barW, h, color)
			}
			fmt.Fprintf(&s, `<text x="%d" y="%.1f" text-anchor="middle">%s%s</text>`+"\n", x+barW/2, y-4, fmtChart(total), unit)
			fmt.Fprintf(&s, `<text x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", x+barW/2, bottom+16, html.EscapeString(b.label))
		}
		for k, n := range names {
			fmt.Fprintf(&s, `<rect x="%d" y="%d" width="10" height="10" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n",
				x0+k*90, bottom+30, colors[k], x0+k*90+14, bottom+39, html.EscapeString(n))
		}
	}
	maxRate, maxCPU := 0.0, 0.0
	for _, b := range bars {
		maxRate = max(maxRate, b.rate)
		maxCPU = max(maxCPU, b.cpu[0]+b.cpu[1]+b.cpu[2])
	}
	panel(20, "calls/s", "", maxRate, func(b bar) []float64 { return []float64{b.rate} }, nil)
	panel(400, "CPU µs per call", " µs", maxCPU, func(b bar) []float64 { return b.cpu[:] }, []string{"node", "broker", "backend"})
	s.WriteString("</svg>\n")
	return []byte(s.String())
}

func fmtChart(v float64) string {
	if v >= 1000 {
		return fmt.Sprintf("%.1f k", v/1000)
	}
	return fmt.Sprintf("%.0f", v)
}
