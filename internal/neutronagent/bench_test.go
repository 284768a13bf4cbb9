package neutronagent_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/neutronlocal"
)

// benchRouters is how many HA routers each scenario runs on its two nodes
// (one of them carries the probed instance).
const benchRouters = 10

// failoverFigures is one scenario's result.
type failoverFigures struct {
	name         string
	master       string // which agent held the probed router: "neutron" or "l3ha"
	outage       time.Duration
	lost         int
	pssPerRouter [2]float64 // MiB per router on each node, beyond the first router
	pssTotal     [2]float64 // MiB with benchRouters routers
}

// BenchmarkNeutronFailover measures, in one run on one cloud and at equal
// settings (Neutron's defaults: VRRPv2, 2 s adverts, priority 50,
// nopreempt), what a node fault of the master costs with neutron-l3-agent
// + keepalived on both nodes, with `l3ha neutron-l3-agent` on both (its
// defaults: Neutron's packets paced at 0.2 s), and with one of each; and the
// L3 agent's memory (PSS of the agent and of every process it runs for its
// routers: keepalived, neutron-keepalived-state-change) per router.
//
//	go test -run '^$' -bench NeutronFailover -benchtime 1x ./internal/neutronagent/
func BenchmarkNeutronFailover(b *testing.B) {
	c := startCloud(b)
	bin := l3haBinary(b)
	var results []failoverFigures
	for i, sc := range []struct {
		name  string
		l3ha  [2]bool
		hosts [2]string
	}{
		{"neutron-both", [2]bool{false, false}, [2]string{"bn1", "bn2"}},
		{"l3ha-both", [2]bool{true, true}, [2]string{"bl1", "bl2"}},
		{"mixed", [2]bool{false, true}, [2]string{"bm1", "bm2"}},
	} {
		b.Run(sc.name, func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
			defer cancel()
			nodes := map[string]*neutronlocal.Node{}
			kind := map[string]string{}
			for j, h := range sc.hosts {
				nodes[h] = c.addNode(ctx, b, neutronlocal.NodeOptions{Host: h, L3Agent: !sc.l3ha[j]})
				kind[h] = "neutron"
				if sc.l3ha[j] {
					kind[h] = "l3ha"
					if err := nodes[h].StartL3Agent(ctx, bin, "neutron-l3-agent"); err != nil {
						b.Fatal(err)
					}
				}
			}
			r, states := c.newHARouter(ctx, b, fmt.Sprintf("bench%d", i), fmt.Sprintf("10.1.%d.0/24", i))
			settle(ctx, b, 10*time.Second)
			var one [2]float64
			for j, h := range sc.hosts {
				one[j] = agentPSS(b, nodes[h])
			}
			for k := 1; k < benchRouters; k++ {
				c.gatewayRouter(ctx, b, fmt.Sprintf("bench%d-%d", i, k))
			}
			settle(ctx, b, 10*time.Second)
			f := failoverFigures{name: sc.name}
			for j, h := range sc.hosts {
				f.pssTotal[j] = agentPSS(b, nodes[h])
				f.pssPerRouter[j] = (f.pssTotal[j] - one[j]) / (benchRouters - 1)
			}
			master := neutronlocal.ActiveHosts(states)[0]
			if s, err := neutronlocal.HAStates(ctx, c.n, r.id); err == nil && len(neutronlocal.ActiveHosts(s)) == 1 {
				master = neutronlocal.ActiveHosts(s)[0]
			}
			f.master = kind[master]
			fault := time.Now()
			f.outage = nodeFault(ctx, b, nodes[master], r.probe)
			waitFor(ctx, b, time.Minute, "a reply stream again", func() (bool, error) {
				return time.Since(fault) > f.outage+2*time.Second, nil
			})
			f.lost = r.probe.Lost(fault.Add(-time.Second), time.Now().Add(-time.Second))
			b.ReportMetric(f.outage.Seconds(), "outage-s")
			b.ReportMetric(float64(f.lost), "lost-pings")
			b.Logf("%s: master on %s (%s) faulted; outage %v, %d pings of %v lost; L3 agent PSS %s %.1f MiB (%.2f MiB/router), %s %.1f MiB (%.2f MiB/router)",
				sc.name, master, f.master, f.outage.Round(time.Millisecond), f.lost, neutronlocal.ProbeInterval,
				kind[sc.hosts[0]], f.pssTotal[0], f.pssPerRouter[0], kind[sc.hosts[1]], f.pssTotal[1], f.pssPerRouter[1])
			results = append(results, f)
		})
	}
	if len(results) != 3 {
		return
	}
	var out strings.Builder
	fmt.Fprintf(&out, "node fault of the master, %d HA routers on two nodes, pings every %v:\n", benchRouters, neutronlocal.ProbeInterval)
	fmt.Fprintf(&out, "%-13s %-8s %9s %6s %24s\n", "scenario", "master", "outage", "lost", "L3 PSS per router (MiB)")
	for _, f := range results {
		fmt.Fprintf(&out, "%-13s %-8s %9v %6d %11.2f %11.2f\n", f.name, f.master, f.outage.Round(time.Millisecond), f.lost, f.pssPerRouter[0], f.pssPerRouter[1])
	}
	nb, lb := results[0], results[1]
	fmt.Fprintf(&out, "outage neutron/l3ha: %.1f×; memory per router neutron/l3ha: %.1f×\n",
		nb.outage.Seconds()/lb.outage.Seconds(), (nb.pssPerRouter[0]+nb.pssPerRouter[1])/(lb.pssPerRouter[0]+lb.pssPerRouter[1]))
	b.Log("\n" + out.String())
}

// gatewayRouter creates an HA router with a gateway only and waits until
// two agents host it with one active; it is deleted when the test ends.
func (c *cloud) gatewayRouter(ctx context.Context, t testing.TB, name string) string {
	t.Helper()
	var router struct {
		Router struct {
			ID string `json:"id"`
		}
	}
	if err := c.n.Do(ctx, http.MethodPost, "/routers", map[string]any{"router": map[string]any{
		"name": name, "ha": true, "external_gateway_info": map[string]any{"network_id": c.extID},
	}}, &router); err != nil {
		t.Fatal(err)
	}
	id := router.Router.ID
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.n.Do(cctx, http.MethodDelete, "/routers/"+id, nil, nil); err != nil && !neutronlocal.IsNotFound(err) {
			t.Logf("deleting router %s: %v", id, err)
		}
	})
	waitFor(ctx, t, 3*time.Minute, "two agents hosting "+name+", one active", func() (bool, error) {
		s, err := neutronlocal.HAStates(ctx, c.n, id)
		return len(s) == 2 && len(neutronlocal.ActiveHosts(s)) == 1, err
	})
	return id
}

// settle lets the agents finish what they started (keepalived's first
// election, state-change monitors) before memory is read.
func settle(ctx context.Context, t testing.TB, d time.Duration) {
	t.Helper()
	from := time.Now()
	waitFor(ctx, t, d+time.Minute, "the node settled", func() (bool, error) { return time.Since(from) > d, nil })
}

// agentPSS is the proportional set size, in MiB, of every process the L3
// agent of nd runs: the agent and, for Neutron's, keepalived and
// neutron-keepalived-state-change for each router (found by their command
// lines, which name the node's directory; the linuxbridge agent is not
// counted).
func agentPSS(t testing.TB, nd *neutronlocal.Node) float64 {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var kib uint64
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cmd, []byte(nd.Dir())) || bytes.Contains(cmd, []byte("linuxbridge")) {
			continue
		}
		kib += pssKiB(pid)
	}
	return float64(kib) / 1024
}

func pssKiB(pid int) uint64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0 // it exited
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Pss:"); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}
