package lab

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"slices"
	"strings"
	"testing"
)

func TestLogTicks(t *testing.T) {
	cases := []struct {
		lo, hi    float64
		major     []float64
		minorLen  int
		firstMin  float64
		lastMinor float64
	}{
		{1, 500, []float64{1, 10, 100, 1000}, 24, 2, 900},
		{0.3, 7.6, []float64{0.1, 1, 10}, 16, 0.2, 9},
		{0.1, 10, []float64{0.1, 1, 10}, 16, 0.2, 9},
		{10, 10, []float64{10, 100}, 8, 20, 90}, // one value: still one decade
		{4, 6, []float64{1, 10}, 8, 2, 9},
	}
	for _, c := range cases {
		major, minor := logTicks(c.lo, c.hi)
		if len(major) != len(c.major) {
			t.Errorf("logTicks(%g, %g) majors %v, want %v", c.lo, c.hi, major, c.major)
			continue
		}
		for i := range major {
			if math.Abs(major[i]-c.major[i]) > 1e-12*c.major[i] {
				t.Errorf("logTicks(%g, %g) majors %v, want %v", c.lo, c.hi, major, c.major)
				break
			}
		}
		if len(minor) != c.minorLen {
			t.Errorf("logTicks(%g, %g): %d minor ticks, want %d", c.lo, c.hi, len(minor), c.minorLen)
		}
		if len(minor) > 0 && (math.Abs(minor[0]-c.firstMin) > 1e-9 || math.Abs(minor[len(minor)-1]-c.lastMinor) > 1e-9) {
			t.Errorf("logTicks(%g, %g) minors %v…%v, want %g…%g", c.lo, c.hi, minor[0], minor[len(minor)-1], c.firstMin, c.lastMinor)
		}
		// Every value of the range lies within the outer majors.
		if major[0] > c.lo || major[len(major)-1] < c.hi {
			t.Errorf("logTicks(%g, %g) = %v does not cover the range", c.lo, c.hi, major)
		}
	}
	if m, n := logTicks(0, 10); m != nil || n != nil {
		t.Errorf("logTicks(0, 10) = %v, %v; want nothing (log of 0)", m, n)
	}
}

func TestLogScaleIsLogarithmic(t *testing.T) {
	s := logScale{lo: 1, hi: 1000, p0: 100, p1: 400}
	for v, want := range map[float64]float64{1: 100, 10: 200, 100: 300, 1000: 400} {
		if got := s.at(v); math.Abs(got-want) > 1e-9 {
			t.Errorf("at(%g) = %g, want %g", v, got, want)
		}
	}
	// Equal ratios, equal distances; the y axis runs downwards.
	y := logScale{lo: 0.1, hi: 10, p0: 500, p1: 100}
	if d1, d2 := y.at(0.2)-y.at(0.4), y.at(2)-y.at(4); math.Abs(d1-d2) > 1e-9 || d1 <= 0 {
		t.Errorf("distances %g and %g for ×2 steps, want equal and positive", d1, d2)
	}
}

func TestTickLabel(t *testing.T) {
	for v, want := range map[float64]string{0.01: "0.01", 0.1: "0.1", 1: "1", 10: "10", 1000: "1000"} {
		if got := tickLabel(v); got != want {
			t.Errorf("tickLabel(%g) = %q, want %q", v, got, want)
		}
	}
}

// svgDoc parses an SVG document and returns its elements' names and the
// text of its <text> elements.
func svgDoc(t *testing.T, b []byte) (elements map[string]int, texts []string) {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(b))
	elements = map[string]int{}
	var inText int
	var root string
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, b)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = tok.Name.Local
				if tok.Name.Space != "http://www.w3.org/2000/svg" {
					t.Errorf("root namespace %q, want the SVG namespace", tok.Name.Space)
				}
			}
			elements[tok.Name.Local]++
			if tok.Name.Local == "text" {
				inText++
				texts = append(texts, "")
			}
		case xml.EndElement:
			if tok.Name.Local == "text" {
				inText--
			}
		case xml.CharData:
			if inText > 0 {
				texts[len(texts)-1] += string(tok)
			}
		}
	}
	if root != "svg" {
		t.Fatalf("root element %q, want svg", root)
	}
	return elements, texts
}

func ptr(v float64) *float64 { return &v }

func sampleFailoverResults() []BenchFailoverResult {
	mk := func(driver string, adv float64, n int, p50, all float64) BenchFailoverResult {
		return BenchFailoverResult{Routers: n, Driver: driver, AdvertInt: adv, Fault: FaultNode, RoutersPerNetwork: 1,
			Dataplane: BenchStats{P50: ptr(p50), Max: ptr(all), AllMoved: ptr(all), Moved: n}}
	}
	return []BenchFailoverResult{
		mk("native", 0.1, 1, 0.39, 0.39), mk("native", 0.1, 10, 0.41, 0.5), mk("native", 0.1, 100, 0.45, 0.7), mk("native", 0.1, 500, 0.5, 0.9),
		mk("keepalived", 2, 1, 7.1, 7.1), mk("keepalived", 2, 10, 7.2, 7.6), mk("keepalived", 2, 100, 7.3, 8.5),
		// A failed run: no value, no point.
		{Routers: 500, Driver: "keepalived", AdvertInt: 2, Fault: FaultNode, RoutersPerNetwork: 1, Error: "boom"},
	}
}

func TestWriteFailoverSVG(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteFailoverSVG(&buf, sampleFailoverResults(), "2 CPUs & <a test>"); err != nil {
		t.Fatal(err)
	}
	elements, texts := svgDoc(t, buf.Bytes())
	if elements["polyline"] != 4 {
		t.Errorf("%d polylines, want 4 (all moved and p50 of two configurations)", elements["polyline"])
	}
	if elements["circle"] != 4+4+3+3 {
		t.Errorf("%d points, want 14", elements["circle"])
	}
	// Decade labels on both axes: routers 1..1000, seconds 0.1..10.
	for _, want := range []string{"1", "10", "100", "1000", "0.1"} {
		if !slices.Contains(texts, want) {
			t.Errorf("no tick label %q in %q", want, texts)
		}
	}
	for _, want := range []string{"native 0.1s all moved", "native 0.1s p50", "keepalived 2s all moved", "2 CPUs & <a test>; fault node; 1 router(s) per HA network", "target: all moved within 1 s"} {
		if !slices.Contains(texts, want) {
			t.Errorf("no text %q in %q", want, texts)
		}
	}
	if !strings.Contains(buf.String(), `stroke-dasharray`) {
		t.Error("p50 lines are not dashed")
	}
	if err := WriteFailoverSVG(io.Discard, nil, ""); err == nil {
		t.Error("no results: want an error")
	}
}

func TestLogLogPlotLeavesOutWhatLogAxesCannotShow(t *testing.T) {
	p := LogLogPlot{Series: []PlotSeries{{Name: "s", Points: []PlotPoint{{1, 0}, {10, 1}, {-1, 2}, {100, math.Inf(1)}, {100, 2}}}}}
	var buf bytes.Buffer
	if err := p.WriteSVG(&buf); err != nil {
		t.Fatal(err)
	}
	elements, _ := svgDoc(t, buf.Bytes())
	if elements["circle"] != 2 {
		t.Errorf("%d points drawn, want 2 (zero, negative and infinite values left out)", elements["circle"])
	}
	// No drawable point at all still gives a valid document.
	buf.Reset()
	if err := (LogLogPlot{Title: "empty"}).WriteSVG(&buf); err != nil {
		t.Fatal(err)
	}
	svgDoc(t, buf.Bytes())
}

func TestFailoverPlotSeriesNames(t *testing.T) {
	rs := sampleFailoverResults()
	rs = append(rs, BenchFailoverResult{Routers: 10, Driver: "keepalived", AdvertInt: 2, Fault: FaultNode, RoutersPerNetwork: 254,
		Dataplane: BenchStats{P50: ptr(8), AllMoved: ptr(9)}})
	p := FailoverPlot(rs, "")
	var names []string
	for _, s := range p.Series {
		names = append(names, s.Name)
	}
	for _, want := range []string{"native 0.1s 1/HA net all moved", "keepalived 2s 254/HA net p50"} {
		if !slices.Contains(names, want) {
			t.Errorf("series %q missing from %q", want, names)
		}
	}
	// Points are in router order whatever the order of the results.
	for _, s := range p.Series {
		for i := 1; i < len(s.Points); i++ {
			if s.Points[i].X < s.Points[i-1].X {
				t.Errorf("series %s not sorted by routers: %v", s.Name, s.Points)
			}
		}
	}
}
