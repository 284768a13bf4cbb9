package server_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"syscall"
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
// admin and returns each request's latency, and the CPU time this process
// had used before the first request (cpu[0]) and after each (cpu[i+1]).
func benchCreate(tb testing.TB, srv *servertest.Instance, n int) (lat, cpu []time.Duration) {
	tb.Helper()
	lat = make([]time.Duration, 0, n)
	cpu = append(make([]time.Duration, 0, n+1), benchCPU(tb))
	for i := range n {
		start := time.Now()
		status, _, body, err := concCreateHARouter(srv.URL, benchProject, fmt.Sprintf("bench-%d", i))
		lat = append(lat, time.Since(start))
		cpu = append(cpu, benchCPU(tb))
		if err != nil || status != http.StatusCreated {
			tb.Fatalf("router %d: status %d, err %v, body %s", i, status, err, body)
		}
	}
	return lat, cpu
}

// benchCPU is the CPU time (user and system) this process has used: the
// in-process server, the fake agents and the client, and with SQLite the
// database too.
func benchCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
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
			lat, _ := benchCreate(b, srv, b.N)
			b.StopTimer()
			b.ReportMetric(ms(benchPercentile(lat, 50)), "p50-ms")
			b.ReportMetric(ms(benchPercentile(lat, 99)), "p99-ms")
		})
	}
}

// Bounds of TestCreate1000HARoutersLatency, for a loaded 2-core machine.
// Measured on one beside a full `make test`: p50 3–8 ms, p99 24–100 ms,
// 4–9 ms of CPU per create (this process: server, fake agents, client);
// with four busy loops added, p50 18 ms (SQLite) and 74 ms (PostgreSQL),
// p99 225 and 495 ms. The wall-clock bounds leave room for such load; the
// CPU bounds are what load hardly moves.
const (
	benchMaxP50 = 150 * time.Millisecond
	benchMaxP99 = 1500 * time.Millisecond
	// benchMaxCPU bounds the mean CPU time per create.
	benchMaxCPU = 30 * time.Millisecond
	// A create must not cost more as routers accumulate: it reads counts
	// per agent kept between writes and the VRIDs of one HA network, never
	// every router or binding. So the CPU per create of the last 100
	// creates is at most benchMaxGrowth times that of the first 100
	// (measured 0.8–1.3; reading every binding once per create makes it 5
	// on SQLite, whose queries run in this process, 2 on PostgreSQL, whose
	// don't).
	benchMaxGrowth = 2.0
)

// TestCreate1000HARoutersLatency is the benchmark the issue quotes, run as a
// test (skipped unless L3HA_BENCH=1; `make bench-controlplane` runs it on
// both databases):
//
//	L3HA_BENCH=1 go test -run TestCreate1000 -v ./internal/server
//
// On each backend it creates 1000 HA routers in ONE project, one request at
// a time, with three fake agents following every change, and logs p50, p99
// and the total. It checks that creates are fast (p50 within benchMaxP50,
// p99 within benchMaxP99, CPU within benchMaxCPU) and do not get costlier
// with the number of routers (benchMaxGrowth), that the project got 4 HA
// networks (254 VRIDs each) and that the agents caught up with every router.
func TestCreate1000HARoutersLatency(t *testing.T) {
	if os.Getenv("L3HA_BENCH") != "1" {
		t.Skip("set L3HA_BENCH=1 to run the 1000-router latency benchmark")
	}
	const n = 1000
	for _, backend := range servertest.Backends(t) {
		t.Run(backend, func(t *testing.T) {
			srv, agents := benchCloud(t, backend)
			start := time.Now()
			lat, cpu := benchCreate(t, srv, n)
			total := time.Since(start)
			t.Logf("%s: %d HA routers (1 project, 3 agents each): p50 %.2f ms, p99 %.2f ms, max %.2f ms, total %v (%.0f routers/s)",
				backend, n, ms(benchPercentile(lat, 50)), ms(benchPercentile(lat, 99)), ms(benchPercentile(lat, 100)),
				total.Round(time.Millisecond), n/total.Seconds())
			for _, part := range []struct{ from, to int }{{0, 100}, {450, 550}, {900, 1000}} {
				l := lat[part.from:part.to]
				t.Logf("%s: routers %d-%d: p50 %.2f ms, p99 %.2f ms, CPU %.2f ms per create", backend, part.from, part.to-1,
					ms(benchPercentile(l, 50)), ms(benchPercentile(l, 99)), ms((cpu[part.to]-cpu[part.from])/time.Duration(part.to-part.from)))
			}
			if p50, p99 := benchPercentile(lat, 50), benchPercentile(lat, 99); p50 > benchMaxP50 || p99 > benchMaxP99 {
				t.Errorf("%s: create latency p50 %.2f ms, p99 %.2f ms; want at most %v and %v", backend, ms(p50), ms(p99), benchMaxP50, benchMaxP99)
			}
			if mean := (cpu[n] - cpu[0]) / n; mean > benchMaxCPU {
				t.Errorf("%s: %.2f ms of CPU per create, want at most %v", backend, ms(mean), benchMaxCPU)
			}
			first, last := cpu[100]-cpu[0], cpu[n]-cpu[n-100]
			if float64(last) > benchMaxGrowth*float64(first) {
				t.Errorf("%s: creates cost more as routers accumulate: %.2f ms of CPU per create for the last 100, %.2f ms for the first 100; want at most %.1f times",
					backend, ms(last/100), ms(first/100), benchMaxGrowth)
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
