package server_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/servertest"
	"github.com/l3ha/l3ha/internal/store"
)

// benchProject is the one project every benchmarked router belongs to:
// past 254 routers the server gives it further HA networks.
const benchProject = "bench"

// benchCloud is a server on backend with three fake agents (default
// max_l3_agents_per_router 3: every router is bound to all three).
func benchCloud(tb testing.TB, backend string) (*servertest.Instance, []*servertest.FakeAgent) {
	tb.Helper()
	srv := servertest.Start(tb, servertest.Options{Backend: backend})
	hosts := []string{"net1", "net2", "net3"}
	var agents []*servertest.FakeAgent
	for _, h := range hosts {
		agents = append(agents, srv.StartFakeAgent(tb, h))
	}
	concWaitAgents(tb, srv.Server.DB(), hosts...)
	return srv, agents
}

// benchCreate creates n HA routers one after another through the API as
// admin and returns each request's latency.
func benchCreate(tb testing.TB, srv *servertest.Instance, n int) []time.Duration {
	tb.Helper()
	lat := make([]time.Duration, 0, n)
	for i := range n {
		start := time.Now()
		status, _, body, err := concCreateHARouter(srv.URL, benchProject, fmt.Sprintf("bench-%d", i))
		lat = append(lat, time.Since(start))
		if err != nil || status != http.StatusCreated {
			tb.Fatalf("router %d: status %d, err %v, body %s", i, status, err, body)
		}
	}
	return lat
}

// benchPercentile returns the p-th percentile (nearest rank) of lat.
func benchPercentile(lat []time.Duration, p float64) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(lat))
	i := int(p/100*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkCreateHARouters creates b.N HA routers (one project, three fake
// agents, each router on all three) through the API, one request at a time,
// and reports the latency percentiles:
//
//	go test -run '^$' -bench CreateHARouters -benchtime 1000x ./internal/server
func BenchmarkCreateHARouters(b *testing.B) {
	for _, backend := range servertest.Backends(b) {
		b.Run(backend, func(b *testing.B) {
			srv, _ := benchCloud(b, backend)
			b.ResetTimer()
			lat := benchCreate(b, srv, b.N)
			b.StopTimer()
			b.ReportMetric(ms(benchPercentile(lat, 50)), "p50-ms")
			b.ReportMetric(ms(benchPercentile(lat, 99)), "p99-ms")
		})
	}
}

// TestCreate1000HARoutersLatency is the benchmark the issue quotes, run as a
// test (skipped unless L3HA_BENCH=1):
//
//	L3HA_BENCH=1 go test -run TestCreate1000 -v ./internal/server
//
// On each backend it creates 1000 HA routers in ONE project, one request at
// a time, with three fake agents following every change, and logs p50, p99
// and the total. It then checks that the project got 4 HA networks (254
// VRIDs each) and that the agents caught up with every router.
func TestCreate1000HARoutersLatency(t *testing.T) {
	if os.Getenv("L3HA_BENCH") != "1" {
		t.Skip("set L3HA_BENCH=1 to run the 1000-router latency benchmark")
	}
	const n = 1000
	for _, backend := range servertest.Backends(t) {
		t.Run(backend, func(t *testing.T) {
			srv, agents := benchCloud(t, backend)
			start := time.Now()
			lat := benchCreate(t, srv, n)
			total := time.Since(start)
			t.Logf("%s: %d HA routers (1 project, 3 agents each): p50 %.2f ms, p99 %.2f ms, max %.2f ms, total %v (%.0f routers/s)",
				backend, n, ms(benchPercentile(lat, 50)), ms(benchPercentile(lat, 99)), ms(benchPercentile(lat, 100)),
				total.Round(time.Millisecond), n/total.Seconds())
			for _, part := range []struct{ from, to int }{{0, 100}, {450, 550}, {900, 1000}} {
				l := lat[part.from:part.to]
				t.Logf("%s: routers %d-%d: p50 %.2f ms, p99 %.2f ms", backend, part.from, part.to-1, ms(benchPercentile(l, 50)), ms(benchPercentile(l, 99)))
			}
			err := srv.Server.DB().Read(context.Background(), func(tx *store.Tx) error {
				hns, err := tx.ListHANetworks(store.Where{"project_id": benchProject})
				if err != nil {
					return err
				}
				if want := (n + 253) / 254; len(hns) != want {
					return fmt.Errorf("%d HA networks for %d routers, want %d", len(hns), n, want)
				}
				vs, err := tx.ListVRIDs(nil)
				if err != nil || len(vs) != n {
					return fmt.Errorf("%d VRIDs (err %v), want %d", len(vs), err, n)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			caught := time.Now()
			servertest.Eventually(t, 60*time.Second, func() error {
				for _, a := range agents {
					if got := len(a.Dataplane.States()); got != n {
						return fmt.Errorf("agent %s runs %d routers, want %d", a.Host, got, n)
					}
				}
				return nil
			})
			t.Logf("%s: agents ran all %d routers %v after the last create", backend, n, time.Since(caught).Round(time.Millisecond))
		})
	}
}
