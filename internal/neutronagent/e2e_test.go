package neutronagent_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/neutronlocal"
)

func skip(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("L3HA_TEST_REQUIRE_ALL") == "1" {
		t.Fatalf("%s (L3HA_TEST_REQUIRE_ALL=1)", why)
	}
	t.Skip(why)
}

// l3haBinary is bin/l3ha of this checkout (make test builds it first).
func l3haBinary(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	bin, _ := filepath.Abs(filepath.Join(filepath.Dir(file), "..", "..", "bin", "l3ha"))
	if _, err := os.Stat(bin); err != nil {
		skip(t, "bin/l3ha is not built (make build): "+err.Error())
	}
	return bin
}

// waitFor polls cond every 100 ms until it holds or d passes.
func waitFor(ctx context.Context, t testing.TB, d time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var last error
	for {
		ok, err := cond()
		if ok {
			return
		}
		last = err
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v (last error: %v)", what, ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// holdsAddress reports whether the router's namespace on node holds addr
// (the kernel's truth of who is master).
func holdsAddress(ctx context.Context, nd *neutronlocal.Node, routerID, addr string) (bool, error) {
	cmd, err := nd.RouterCommand(ctx, routerID, "ip", "-4", "-o", "addr", "show")
	if err != nil {
		return false, err
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return false, fmt.Errorf("%v: %s", err, out)
	}
	return strings.Contains(string(out), " "+addr+"/"), nil
}

// TestMixedHARouterFailsOverBothWays is issue 9's first acceptance: a real
// neutron-server; node net1 runs Neutron's neutron-l3-agent (keepalived),
// node net2 runs `l3ha neutron-l3-agent` with the same config files; an
// admin's HA router with a tenant network and a gateway is hosted by both
// with one active; pings from an instance to the upstream host fail over
// net1 → net2 and net2 → net1 on node faults, and the API shows the new
// active within 2 s of the kernel.
func TestMixedHARouterFailsOverBothWays(t *testing.T) {
	c := startCloud(t)
	bin := l3haBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	n := c.n
	pair := [2]string{"net1", "net2"}
	net1 := c.addNode(ctx, t, neutronlocal.NodeOptions{Host: "net1", L3Agent: true})
	net2 := c.addNode(ctx, t, neutronlocal.NodeOptions{Host: "net2"})
	began := time.Now()
	if err := net2.StartL3Agent(ctx, bin, "neutron-l3-agent"); err != nil {
		t.Fatal(err)
	}
	t.Logf("l3ha neutron-l3-agent on net2 alive in neutron-server after %v", time.Since(began).Round(time.Millisecond))
	nodes := map[string]*neutronlocal.Node{"net1": net1, "net2": net2}

	r, states := c.newHARouter(ctx, t, "mixed", "10.0.1.0/24")
	rid, gw, probe := r.id, r.gw, r.probe
	checkOpenstackAgentList(ctx, t, n, rid, neutronlocal.ActiveHosts(states)[0])

	// failover faults the master's node and checks the other takes over:
	// the kernel (gateway address), the pings, the API within 2 s of the
	// kernel. It returns the new master.
	failover := func(master string) string {
		t.Helper()
		backup := otherOf(pair, master)
		if ok, err := holdsAddress(ctx, nodes[master], rid, gw); err != nil || !ok {
			t.Fatalf("%s should be master and hold %s: %v %v", master, gw, ok, err)
		}
		fault := time.Now()
		if err := nodes[master].KillNode(); err != nil {
			t.Fatal(err)
		}
		var kernelAt time.Time
		waitFor(ctx, t, time.Minute, backup+" holding the gateway address", func() (bool, error) {
			ok, err := holdsAddress(ctx, nodes[backup], rid, gw)
			if ok {
				kernelAt = time.Now()
			}
			return ok, err
		})
		var apiAt time.Time
		waitFor(ctx, t, time.Minute, backup+" active in the API", func() (bool, error) {
			s, err := neutronlocal.HAStates(ctx, n, rid)
			if s[backup] == "active" {
				apiAt = time.Now()
				return true, nil
			}
			return false, err
		})
		last, gap := outageAfter(ctx, t, probe, fault)
		t.Logf("failover %s → %s: kernel %v after the fault, pings resumed after %v (gap %v), API %v after the kernel",
			master, backup, kernelAt.Sub(fault).Round(time.Millisecond), last.Add(gap).Sub(fault).Round(time.Millisecond),
			gap.Round(time.Millisecond), apiAt.Sub(kernelAt).Round(time.Millisecond))
		if lag := apiAt.Sub(kernelAt); lag > 2*time.Second {
			t.Errorf("the API showed %s active %v after the kernel, want within 2 s", backup, lag.Round(time.Millisecond))
		}
		return backup
	}
	master := neutronlocal.ActiveHosts(states)[0]
	next := failover(master)

	// The faulted node comes back (as after a reboot) and is a backup;
	// then the other fails and it takes over again: both directions.
	if err := nodes[master].Revive(ctx); err != nil {
		t.Fatal(err)
	}
	if master == "net2" {
		if err := net2.StartL3Agent(ctx, bin, "neutron-l3-agent"); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(ctx, t, 3*time.Minute, master+" back as a standby", func() (bool, error) {
		s, err := neutronlocal.HAStates(ctx, n, rid)
		if err != nil {
			return false, err
		}
		if len(neutronlocal.ActiveHosts(s)) > 1 {
			return false, errors.New("two actives")
		}
		return s[master] == "standby" && s[next] == "active", nil
	})
	// A backup is ready once its VRRP has run longer than the master-down
	// interval (3 × 2 s + skew) without taking over.
	waitFor(ctx, t, 2*time.Minute, master+"'s VRRP running", func() (bool, error) {
		if master == "net1" {
			return nodes[master].KeepalivedPID(rid) != 0, nil
		}
		_, err := os.Stat(filepath.Join(nodes[master].HAConfsPath(), rid, "vrrp.json"))
		return err == nil, nil
	})
	readySince := time.Now()
	waitFor(ctx, t, time.Minute, master+" a settled backup", func() (bool, error) {
		ok, err := holdsAddress(ctx, nodes[master], rid, gw)
		if err != nil {
			return false, err
		}
		if ok {
			t.Fatalf("%s took the gateway back while %s is master: two masters", master, next)
		}
		return time.Since(readySince) > 8*time.Second, nil
	})
	failover(next)
}

// TestL3haOnBothNodesSubSecondAndRestarts is issue 9's second and third
// acceptance: both nodes run `l3ha neutron-l3-agent` with its defaults
// (Neutron's VRRPv2 packets, paced at 0.2 s between the two l3ha nodes);
// RabbitMQ and then neutron-server restart without a transition or a lost
// ping, and state reports resume; the master's agent restarts without
// either; a node fault of the master costs less than a second of pings.
func TestL3haOnBothNodesSubSecondAndRestarts(t *testing.T) {
	c := startCloud(t)
	bin := l3haBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	n := c.n
	pair := [2]string{"net3", "net4"}
	nodes := map[string]*neutronlocal.Node{}
	for _, h := range pair {
		nd := c.addNode(ctx, t, neutronlocal.NodeOptions{Host: h})
		if err := nd.StartL3Agent(ctx, bin, "neutron-l3-agent"); err != nil {
			t.Fatal(err)
		}
		nodes[h] = nd
	}
	r, states := c.newHARouter(ctx, t, "paced", "10.0.2.0/24")
	rid, gw, probe := r.id, r.gw, r.probe
	master := neutronlocal.ActiveHosts(states)[0]
	backup := otherOf(pair, master)
	// Neutron's state files, in Zed's words.
	for host, want := range map[string]string{master: "primary\n", backup: "backup\n"} {
		waitFor(ctx, t, 30*time.Second, host+"'s state file", func() (bool, error) {
			b, err := os.ReadFile(filepath.Join(nodes[host].HAConfsPath(), rid, "state"))
			if err != nil || string(b) != want {
				return false, fmt.Errorf("ha_confs/%s/state = %q (%v), want %q", rid, b, err, want)
			}
			return true, nil
		})
	}

	// quiet checks that nothing moved during a restart of something: the
	// master still holds the gateway, the backup does not, the API says
	// the same, and no probe went unanswered.
	quiet := func(what string, restart func() error) {
		t.Helper()
		from := time.Now()
		if err := restart(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		// Heartbeats (every 5 s) and state reports reach the server again.
		waitFor(ctx, t, 2*time.Minute, "both l3ha agents alive after the "+what, func() (bool, error) {
			for _, h := range pair {
				agents, err := n.Agents(ctx, h)
				if err != nil {
					return false, err
				}
				alive := false
				for _, a := range agents {
					if a.AgentType == "L3 agent" && a.Alive {
						alive = true
					}
				}
				if !alive {
					return false, fmt.Errorf("%s's L3 agent not alive", h)
				}
			}
			return true, nil
		})
		to := time.Now()
		for host, want := range map[string]bool{master: true, backup: false} {
			if ok, err := holdsAddress(ctx, nodes[host], rid, gw); err != nil || ok != want {
				t.Errorf("after the %s: %s holds the gateway %v (%v), want %v: a transition", what, host, ok, err, want)
			}
		}
		// A revived agent re-reports its HA states right after the
		// heartbeat that made it alive again; until neutron-server has
		// processed that, its API may still show what it set while the
		// agent was away. The truth must be back within seconds.
		waitFor(ctx, t, 15*time.Second, "the API to show "+master+" active after the "+what, func() (bool, error) {
			s, err := neutronlocal.HAStates(ctx, n, rid)
			if err != nil || s[master] != "active" || s[backup] != "standby" {
				return false, fmt.Errorf("API %v (%v), want %s active", s, err, master)
			}
			return true, nil
		})
		gap := probe.LongestGap(from, to)
		t.Logf("%s: %v, longest gap between replies %v; API true again %v after the agents were alive", what, to.Sub(from).Round(time.Millisecond), gap.Round(time.Millisecond), time.Since(to).Round(time.Millisecond))
		if gap > 4*neutronlocal.ProbeInterval {
			t.Errorf("%s: pings stopped for %v", what, gap.Round(time.Millisecond))
		}
	}
	quiet("RabbitMQ restart", func() error { return c.r.Restart(ctx) })
	quiet("neutron-server restart", func() error { return n.Restart(ctx) })
	// An upgrade or restart of the master's agent: SIGUSR2 exits and leaves
	// VRRP to the next agent, which adopts it.
	quiet("restart of the master's l3ha agent", func() error {
		pid := nodes[master].L3AgentPID()
		if err := syscall.Kill(pid, syscall.SIGUSR2); err != nil {
			return err
		}
		deadline := time.Now().Add(30 * time.Second)
		for nodes[master].L3AgentPID() != 0 {
			if time.Now().After(deadline) {
				return fmt.Errorf("the agent (pid %d) did not exit on SIGUSR2", pid)
			}
			time.Sleep(10 * time.Millisecond)
		}
		return nodes[master].StartL3Agent(ctx, bin, "neutron-l3-agent")
	})

	outage := nodeFault(ctx, t, nodes[master], probe)
	t.Logf("node fault of %s at the 0.2 s pace: longest gap between replies %v", master, outage.Round(time.Millisecond))
	if outage >= time.Second {
		t.Errorf("node fault outage %v, want under 1 s", outage.Round(time.Millisecond))
	}
	waitFor(ctx, t, 30*time.Second, backup+" active in the API", func() (bool, error) {
		s, err := neutronlocal.HAStates(ctx, n, rid)
		return s[backup] == "active", err
	})
}

// nodeFault kills nd (the router's master) and returns the outage the
// prober saw: the longest time without a reply around the fault.
func nodeFault(ctx context.Context, t testing.TB, nd *neutronlocal.Node, probe *neutronlocal.Prober) time.Duration {
	t.Helper()
	fault := time.Now()
	if err := nd.KillNode(); err != nil {
		t.Fatal(err)
	}
	_, gap := outageAfter(ctx, t, probe, fault)
	return gap
}

// outageAfter waits until replies come again after a fault at fault and
// returns the longest gap between replies around it, and when it began.
// Replies within 300 ms of the fault may be answers already on their way
// (no node takes over that fast), so only a later one ends the wait.
func outageAfter(ctx context.Context, t testing.TB, probe *neutronlocal.Prober, fault time.Time) (time.Time, time.Duration) {
	t.Helper()
	waitFor(ctx, t, time.Minute, "pings resuming after the fault", func() (bool, error) {
		last, ok := probe.LastReplyBefore(time.Now())
		return ok && last.After(fault.Add(300*time.Millisecond)), nil
	})
	return probe.LongestGapAt(fault.Add(-time.Second), time.Now())
}

// TestRollingMigrationFromNeutronL3Agent is issue 9's rolling migration:
// two nodes run Neutron's neutron-l3-agent; the backup's agent is replaced
// by l3ha (no failover, no lost ping), then the master's (one failover, to
// the node already on l3ha). Stopping neutron-l3-agent leaves its
// keepalived running, as Neutron does; l3ha stops it when it takes the
// router over. Once both nodes run l3ha the pace applies by itself: a node
// fault then costs less than a second.
func TestRollingMigrationFromNeutronL3Agent(t *testing.T) {
	c := startCloud(t)
	bin := l3haBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	n := c.n
	pair := [2]string{"net5", "net6"}
	nodes := map[string]*neutronlocal.Node{}
	for _, h := range pair {
		nodes[h] = c.addNode(ctx, t, neutronlocal.NodeOptions{Host: h, L3Agent: true})
	}
	r, states := c.newHARouter(ctx, t, "migrated", "10.0.3.0/24")
	rid, gw, probe := r.id, r.gw, r.probe
	master := neutronlocal.ActiveHosts(states)[0]
	backup := otherOf(pair, master)

	// migrate replaces host's neutron-l3-agent by l3ha and returns when
	// the router's new master holds the gateway and the API agrees.
	migrate := func(host, wantMaster string) time.Duration {
		t.Helper()
		from := time.Now()
		timeline := watchGateway(ctx, t, nodes, rid, gw, from)
		mark := func(what string) { timeline.mark(what) }
		ka := nodes[host].KeepalivedPID(rid)
		if ka == 0 {
			t.Fatalf("%s runs no keepalived for the router before the migration", host)
		}
		pid := nodes[host].L3AgentPID()
		if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		mark("SIGTERM to " + host + "'s neutron-l3-agent")
		waitFor(ctx, t, time.Minute, host+"'s neutron-l3-agent gone", func() (bool, error) { return nodes[host].L3AgentPID() == 0, nil })
		if syscall.Kill(ka, 0) != nil {
			t.Logf("%s: keepalived stopped with neutron-l3-agent (expected it to outlive the agent)", host)
		}
		mark(host + "'s neutron-l3-agent exited")
		if err := nodes[host].StartL3Agent(ctx, bin, "neutron-l3-agent"); err != nil {
			t.Fatal(err)
		}
		mark(host + "'s l3ha agent alive in neutron-server")
		waitFor(ctx, t, time.Minute, host+"'s old keepalived stopped by l3ha", func() (bool, error) {
			return syscall.Kill(ka, 0) != nil || isZombieProc(ka), nil
		})
		other := otherOf(pair, wantMaster)
		waitFor(ctx, t, time.Minute, wantMaster+" master in the kernel and the API", func() (bool, error) {
			a, err := holdsAddress(ctx, nodes[wantMaster], rid, gw)
			if err != nil || !a {
				return false, err
			}
			b, err := holdsAddress(ctx, nodes[other], rid, gw)
			if err != nil || b {
				return false, err
			}
			s, err := neutronlocal.HAStates(ctx, n, rid)
			return s[wantMaster] == "active" && s[other] == "standby", err
		})
		// Settled: VRRP between the nodes has run a few adverts since.
		settle := time.Now()
		waitFor(ctx, t, time.Minute, "the router settled", func() (bool, error) {
			if ok, err := holdsAddress(ctx, nodes[other], rid, gw); err != nil || ok {
				return false, fmt.Errorf("%s holds the gateway too: %v %v", other, ok, err)
			}
			return time.Since(settle) > 8*time.Second, nil
		})
		gapAt, gap := probe.LongestGapAt(from, time.Now())
		timeline.stop()
		t.Logf("%s migrated to l3ha: master %s, longest gap between replies %v", host, wantMaster, gap.Round(time.Millisecond))
		if gap > 2*time.Second {
			timeline.events = append(timeline.events, gatewayEvent{at: gapAt, what: "last reply before the gap"},
				gatewayEvent{at: gapAt.Add(gap), what: "first reply after the gap"})
			t.Logf("timeline:\n%s", timeline)
			// For the rare long gap (see below): what the instance and
			// the agents knew.
			if out, err := r.vm.Command(ctx, "ip", "neigh", "show").CombinedOutput(); err == nil {
				t.Logf("instance's neighbours after the gap:\n%s", out)
			}
			for _, h := range pair {
				for _, argv := range [][]string{{"ip", "-br", "addr"}, {"ip", "route"}, {"ip", "neigh"}, {"ip", "-s", "-br", "link"},
					{"nft", "list", "ruleset"}, {"iptables-save"}, {"conntrack", "-L"}} {
					cmd, err := nodes[h].RouterCommand(ctx, rid, argv[0], argv[1:]...)
					if err != nil {
						continue
					}
					out, _ := cmd.CombinedOutput()
					t.Logf("%s router: %s:\n%s", h, strings.Join(argv, " "), out[:min(len(out), 4<<10)])
				}
				if out, err := neutronlocal.NetnsCommand(ctx, nodes[h].Namespace(), "bridge", "fdb", "show").CombinedOutput(); err == nil {
					t.Logf("%s node: bridge fdb:\n%s", h, out[:min(len(out), 4<<10)])
				}
			}
			for _, h := range pair {
				if b, err := os.ReadFile(nodes[h].L3AgentOutputPath()); err == nil {
					t.Logf("--- %s's l3ha agent:\n%s", h, b[max(0, len(b)-6<<10):])
				}
			}
		}
		return gap
	}
	if gap := migrate(backup, master); gap > 6*neutronlocal.ProbeInterval {
		t.Errorf("migrating the backup %s: pings stopped for %v, want no loss", backup, gap.Round(time.Millisecond))
	}
	// The master's migration costs one failover, to the node on l3ha
	// (migrate checked the kernel and the API): its keepalived resigns, so
	// the VRRP handover takes a skew time (0.8 s) and the pings resume with
	// it. (Before l3ha turned IPv6 off ahead of stopping keepalived, the
	// old master's MLD report sometimes re-taught the bridges its port after
	// the new master's gratuitous ARP: 5-20 s lost; see takeOverFromNeutron.)
	if gap := migrate(master, backup); gap > 3*time.Second {
		t.Errorf("migrating the master %s: pings stopped for %v, want one handover (under a second)", master, gap.Round(time.Millisecond))
	}
	// Both nodes on l3ha: the new master paces its adverts and the backup
	// has learned it, without any configuration change.
	outage := nodeFault(ctx, t, nodes[backup], probe)
	t.Logf("node fault of %s after the migration: longest gap between replies %v", backup, outage.Round(time.Millisecond))
	if outage >= time.Second {
		t.Errorf("node fault after the migration: outage %v, want under 1 s (the pace)", outage.Round(time.Millisecond))
	}
}

// gatewayTimeline records, every 50 ms, which nodes hold the router's
// gateway address, and marks the test's own steps, to explain a long gap.
type gatewayTimeline struct {
	mu     sync.Mutex
	from   time.Time
	events []gatewayEvent
	done   chan struct{}
	exited chan struct{}
}

type gatewayEvent struct {
	at   time.Time
	what string
}

func watchGateway(ctx context.Context, t testing.TB, nodes map[string]*neutronlocal.Node, routerID, gw string, from time.Time) *gatewayTimeline {
	tl := &gatewayTimeline{from: from, done: make(chan struct{}), exited: make(chan struct{})}
	go func() {
		defer close(tl.exited)
		held := map[string]bool{}
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			for h, nd := range nodes {
				ok, err := holdsAddress(ctx, nd, routerID, gw)
				if err == nil && ok != held[h] {
					held[h] = ok
					tl.mark(fmt.Sprintf("%s holds the gateway: %v", h, ok))
				}
			}
			select {
			case <-tl.done:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(tl.stop)
	return tl
}

func (tl *gatewayTimeline) mark(what string) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.events = append(tl.events, gatewayEvent{time.Now(), what})
}

func (tl *gatewayTimeline) stop() {
	select {
	case <-tl.done:
	default:
		close(tl.done)
	}
	<-tl.exited
}

func (tl *gatewayTimeline) String() string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	ev := slices.Clone(tl.events)
	slices.SortStableFunc(ev, func(a, b gatewayEvent) int { return a.at.Compare(b.at) })
	var b strings.Builder
	for _, e := range ev {
		fmt.Fprintf(&b, "  +%7.3fs  %s\n", e.at.Sub(tl.from).Seconds(), e.what)
	}
	return b.String()
}

func isZombieProc(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && b[i+2] == 'Z'
}

// checkOpenstackAgentList checks that Debian's openstack client shows both
// L3 agents hosting the router, master the one active
// (`network agent list --router R --long`).
func checkOpenstackAgentList(ctx context.Context, t *testing.T, n *neutronlocal.Neutron, routerID, master string) {
	t.Helper()
	states, out, err := n.OpenstackRouterAgents(ctx, routerID)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Logf("openstack network agent list --router %s --long: %s", routerID, out)
	if len(states) != 2 || !slices.Equal(neutronlocal.ActiveHosts(states), []string{master}) {
		t.Errorf("openstack shows %v; want 2 agents, %s alone active", states, master)
	}
}
