package lab

import (
	"bufio"
	"errors"
	"fmt"
	"html"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
)

// PlotPoint is one point of a series.
type PlotPoint struct{ X, Y float64 }

// PlotSeries is one line of a plot.
type PlotSeries struct {
	Name   string
	Color  string // SVG colour
	Dashed bool
	Points []PlotPoint
}

// PlotRef is a horizontal reference line (a target).
type PlotRef struct {
	Y     float64
	Label string
}

// LogLogPlot is a line plot with logarithmic x and y axes.
type LogLogPlot struct {
	Title, Subtitle string
	XLabel, YLabel  string
	Series          []PlotSeries
	Refs            []PlotRef
	// Width and Height in pixels (default 930 × 560).
	Width, Height int
}

// Plot geometry (pixels).
const (
	plotMarginLeft   = 80
	plotMarginRight  = 290 // legend
	plotMarginTop    = 64
	plotMarginBottom = 64
)

// logTicks returns the decades that cover [lo, hi] (both > 0): the major
// ticks 10^k from the decade at or below lo to the decade at or above hi,
// and the minor ticks 2..9 × 10^k between them. A range inside one decade
// still gets two major ticks.
func logTicks(lo, hi float64) (major, minor []float64) {
	if !(lo > 0) || !(hi > 0) || math.IsInf(lo, 0) || math.IsInf(hi, 0) {
		return nil, nil
	}
	if hi < lo {
		lo, hi = hi, lo
	}
	kLo := int(math.Floor(math.Log10(lo) + 1e-9))
	kHi := int(math.Ceil(math.Log10(hi) - 1e-9))
	if kHi <= kLo {
		kHi = kLo + 1
	}
	for k := kLo; k <= kHi; k++ {
		d := math.Pow(10, float64(k))
		major = append(major, d)
		if k < kHi {
			for m := 2; m <= 9; m++ {
				minor = append(minor, float64(m)*d)
			}
		}
	}
	return major, minor
}

// tickLabel formats a decade: 0.01, 0.1, 1, 10, 100, 1000.
func tickLabel(v float64) string {
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// logScale maps [lo, hi] (decade bounds) onto [p0, p1] pixels.
type logScale struct {
	lo, hi float64
	p0, p1 float64
}

func (s logScale) at(v float64) float64 {
	f := (math.Log10(v) - math.Log10(s.lo)) / (math.Log10(s.hi) - math.Log10(s.lo))
	return s.p0 + f*(s.p1-s.p0)
}

// WriteSVG writes the plot as a standalone SVG document. Points whose x or
// y is not positive cannot be drawn on a log axis and are left out.
func (p LogLogPlot) WriteSVG(w io.Writer) error {
	width, height := p.Width, p.Height
	if width == 0 {
		width = 930
	}
	if height == 0 {
		height = 560
	}
	xlo, xhi, ylo, yhi := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, s := range p.Series {
		for _, pt := range s.Points {
			if !(pt.X > 0) || !(pt.Y > 0) || math.IsInf(pt.X, 0) || math.IsInf(pt.Y, 0) {
				continue
			}
			xlo, xhi = math.Min(xlo, pt.X), math.Max(xhi, pt.X)
			ylo, yhi = math.Min(ylo, pt.Y), math.Max(yhi, pt.Y)
		}
	}
	if math.IsInf(xlo, 0) {
		xlo, xhi, ylo, yhi = 1, 10, 0.1, 1
	}
	for _, r := range p.Refs {
		if r.Y > 0 && !math.IsInf(r.Y, 0) {
			ylo, yhi = math.Min(ylo, r.Y), math.Max(yhi, r.Y)
		}
	}
	xMajor, xMinor := logTicks(xlo, xhi)
	yMajor, yMinor := logTicks(ylo, yhi)
	x := logScale{lo: xMajor[0], hi: xMajor[len(xMajor)-1], p0: plotMarginLeft, p1: float64(width - plotMarginRight)}
	y := logScale{lo: yMajor[0], hi: yMajor[len(yMajor)-1], p0: float64(height - plotMarginBottom), p1: plotMarginTop}

	bw := bufio.NewWriter(w)
	pf := func(format string, args ...any) { fmt.Fprintf(bw, format, args...) }
	esc := html.EscapeString
	pf(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	pf(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	pf(`<rect x="0" y="0" width="%d" height="%d" fill="white"/>`+"\n", width, height)
	if p.Title != "" {
		pf(`<text x="%d" y="24" font-size="16" font-weight="bold">%s</text>`+"\n", plotMarginLeft, esc(p.Title))
	}
	if p.Subtitle != "" {
		pf(`<text x="%d" y="44" fill="#555">%s</text>`+"\n", plotMarginLeft, esc(p.Subtitle))
	}
	// Grid and ticks.
	pf(`<g class="grid" stroke="#eee">` + "\n")
	for _, v := range xMinor {
		pf(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`+"\n", x.at(v), y.p0, x.at(v), y.p1)
	}
	for _, v := range yMinor {
		pf(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`+"\n", x.p0, y.at(v), x.p1, y.at(v))
	}
	pf("</g>\n")
	pf(`<g class="grid-major" stroke="#ccc">` + "\n")
	for _, v := range xMajor {
		pf(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`+"\n", x.at(v), y.p0, x.at(v), y.p1)
	}
	for _, v := range yMajor {
		pf(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`+"\n", x.p0, y.at(v), x.p1, y.at(v))
	}
	pf("</g>\n")
	pf(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#333"/>`+"\n", x.p0, y.p1, x.p1-x.p0, y.p0-y.p1)
	pf(`<g class="x-ticks" text-anchor="middle">` + "\n")
	for _, v := range xMajor {
		pf(`<text x="%.1f" y="%.1f">%s</text>`+"\n", x.at(v), y.p0+18, tickLabel(v))
	}
	pf("</g>\n")
	pf(`<g class="y-ticks" text-anchor="end">` + "\n")
	for _, v := range yMajor {
		pf(`<text x="%.1f" y="%.1f">%s</text>`+"\n", x.p0-6, y.at(v)+4, tickLabel(v))
	}
	pf("</g>\n")
	for _, r := range p.Refs {
		if !(r.Y > 0) || math.IsInf(r.Y, 0) {
			continue
		}
		pf(`<g class="ref"><line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#2ca02c" stroke-width="1.5" stroke-dasharray="2 3"/>`, x.p0, y.at(r.Y), x.p1, y.at(r.Y))
		pf(`<text x="%.1f" y="%.1f" fill="#2ca02c">%s</text></g>`+"\n", x.p0+6, y.at(r.Y)-5, esc(r.Label))
	}
	pf(`<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", (x.p0+x.p1)/2, height-20, esc(p.XLabel))
	pf(`<text transform="translate(20 %.1f) rotate(-90)" text-anchor="middle">%s</text>`+"\n", (y.p0+y.p1)/2, esc(p.YLabel))
	// Series.
	for i, s := range p.Series {
		var pts []string
		for _, pt := range s.Points {
			if pt.X > 0 && pt.Y > 0 && !math.IsInf(pt.X, 0) && !math.IsInf(pt.Y, 0) {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x.at(pt.X), y.at(pt.Y)))
			}
		}
		color := s.Color
		if color == "" {
			color = "#000"
		}
		dash := ""
		if s.Dashed {
			dash = ` stroke-dasharray="6 4"`
		}
		pf(`<g class="series" data-name="%s">`+"\n", esc(s.Name))
		if len(pts) > 1 {
			pf(`<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"/>`+"\n", esc(color), dash, strings.Join(pts, " "))
		}
		for _, q := range pts {
			cx, cy, _ := strings.Cut(q, ",")
			fill := esc(color)
			if s.Dashed {
				fill = "white"
			}
			pf(`<circle cx="%s" cy="%s" r="3.5" fill="%s" stroke="%s"/>`+"\n", cx, cy, fill, esc(color))
		}
		// Legend entry.
		ly := float64(plotMarginTop + 8 + 20*i)
		lx := x.p1 + 16
		pf(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"%s/>`+"\n", lx, ly, lx+28, ly, esc(color), dash)
		pf(`<text x="%.1f" y="%.1f">%s</text>`+"\n", lx+34, ly+4, esc(s.Name))
		pf("</g>\n")
	}
	pf("</svg>\n")
	return bw.Flush()
}

// failoverPlotColors are the colours of the driver configurations, in order.
var failoverPlotColors = []string{"#1f77b4", "#d62728", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b"}

// FailoverPlot turns failover benchmark results into the plot of
// bench/failover.svg: for each driver configuration (driver, advert
// interval, fault) the data plane's all_moved_s (solid) and p50 (dashed)
// against the number of routers, both axes logarithmic. Results without a
// value (a run that failed, or routers that never moved) leave their point
// out.
func FailoverPlot(results []BenchFailoverResult, subtitle string) LogLogPlot {
	type key struct {
		driver string
		advert float64
		fault  string
		perNet int
	}
	var keys []key
	byKey := map[key][]BenchFailoverResult{}
	for _, r := range results {
		k := key{r.Driver, r.AdvertInt, r.Fault, r.RoutersPerNetwork}
		if _, ok := byKey[k]; !ok {
			keys = append(keys, k)
		}
		byKey[k] = append(byKey[k], r)
	}
	faults, perNets := map[string]bool{}, map[int]bool{}
	for _, k := range keys {
		faults[k.fault] = true
		perNets[k.perNet] = true
	}
	p := LogLogPlot{
		Title:    "Failover time vs number of HA routers (data plane)",
		Subtitle: subtitle,
		XLabel:   "HA routers failing over at once",
		YLabel:   "seconds after the fault (log)",
		Refs:     []PlotRef{{Y: 1, Label: "target: all moved within 1 s"}},
	}
	for i, k := range keys {
		rs := byKey[k]
		sort.Slice(rs, func(a, b int) bool { return rs[a].Routers < rs[b].Routers })
		name := fmt.Sprintf("%s %gs", k.driver, k.advert)
		if len(faults) > 1 {
			name += " " + k.fault
		}
		if len(perNets) > 1 {
			name += fmt.Sprintf(" %d/HA net", k.perNet)
		}
		if len(faults) == 1 && len(perNets) == 1 && i == 0 {
			sub := fmt.Sprintf("fault %s; %d router(s) per HA network", k.fault, k.perNet)
			if p.Subtitle != "" {
				sub = p.Subtitle + "; " + sub
			}
			p.Subtitle = sub
		}
		all := PlotSeries{Name: name + " all moved", Color: failoverPlotColors[i%len(failoverPlotColors)]}
		p50 := PlotSeries{Name: name + " p50", Color: all.Color, Dashed: true}
		for _, r := range rs {
			if r.Dataplane.AllMoved != nil {
				all.Points = append(all.Points, PlotPoint{float64(r.Routers), *r.Dataplane.AllMoved})
			}
			if r.Dataplane.P50 != nil {
				p50.Points = append(p50.Points, PlotPoint{float64(r.Routers), *r.Dataplane.P50})
			}
		}
		p.Series = append(p.Series, all, p50)
	}
	return p
}

// WriteFailoverSVG writes FailoverPlot(results, subtitle) as SVG.
func WriteFailoverSVG(w io.Writer, results []BenchFailoverResult, subtitle string) error {
	if len(results) == 0 {
		return errors.New("no failover results to plot")
	}
	return FailoverPlot(results, subtitle).WriteSVG(w)
}
