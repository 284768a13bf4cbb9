package lab

// Statistics of the benchmarks' runs: the nearest-rank percentile and the
// summary (p50, p95, max, all moved) of per-router times.

import (
	"math"
	"sort"
	"time"
)

// BenchStats summarises one view (vip, dataplane or api) of a run: the
// times, in seconds after the fault, at which each router moved.
type BenchStats struct {
	P50 *float64 `json:"p50_s"`
	P95 *float64 `json:"p95_s"`
	Max *float64 `json:"max_s"`
	// AllMoved is the time until all routers moved (the largest time);
	// null when some router did not move.
	AllMoved *float64 `json:"all_moved_s"`
	// Moved is how many routers moved (of the run's routers).
	Moved int `json:"moved"`
}

// percentile is the p-th percentile (0 < p ≤ 100) of sorted values by the
// nearest-rank method: the smallest value with at least p % of the values
// at or below it. NaN for no values.
func percentile(sorted []float64, p float64) float64 {
	n := len(sorted)
	if n == 0 {
		return math.NaN()
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

// aggregate summarises per-router times; a negative time means the router
// did not move.
func aggregate(times []time.Duration) BenchStats {
	var moved []float64
	for _, d := range times {
		if d >= 0 {
			moved = append(moved, d.Seconds())
		}
	}
	st := BenchStats{Moved: len(moved)}
	if len(moved) == 0 {
		return st
	}
	sort.Float64s(moved)
	f := func(v float64) *float64 {
		r := math.Round(v*1000) / 1000
		return &r
	}
	st.P50 = f(percentile(moved, 50))
	st.P95 = f(percentile(moved, 95))
	st.Max = f(moved[len(moved)-1])
	if len(moved) == len(times) {
		st.AllMoved = f(moved[len(moved)-1])
	}
	return st
}
