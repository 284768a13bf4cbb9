package neutronlocal_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/l3ha/l3ha/internal/linux"
	"github.com/l3ha/l3ha/internal/neutronlocal"
	"github.com/l3ha/l3ha/internal/rabbitlocal"
)

// skip skips t, or fails it when L3HA_TEST_REQUIRE_ALL=1 (CI, where
// everything must be installed).
func skip(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("L3HA_TEST_REQUIRE_ALL") == "1" {
		t.Fatalf("%s (L3HA_TEST_REQUIRE_ALL=1)", why)
	}
	t.Skip(why)
}

// requireAll skips t unless root and every package is installed.
func requireAll(t *testing.T) {
	t.Helper()
	if err := neutronlocal.Available(); err != nil {
		skip(t, err.Error())
	}
	if err := rabbitlocal.Installed(); err != nil {
		skip(t, err.Error())
	}
	if testing.Short() {
		t.Skip("-short: a real Neutron takes a minute")
	}
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// scratchDir is a fresh t.TempDir, or $L3HA_NEUTRONLOCAL_DIR/<test name>
// (kept, for a look at the logs afterwards) if that is set.
func scratchDir(t *testing.T) string {
	keep := os.Getenv("L3HA_NEUTRONLOCAL_DIR")
	if keep == "" {
		return t.TempDir()
	}
	dir := filepath.Join(keep, t.Name())
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	t.Logf("scratch directory %s (kept)", dir)
	return dir
}

// startRabbit starts a private RabbitMQ, stopped when t ends.
func startRabbit(ctx context.Context, t *testing.T, log *slog.Logger) *rabbitlocal.Server {
	t.Helper()
	r, err := rabbitlocal.Start(ctx, t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	return r
}

// startNeutron starts a Neutron, stopped when t ends; then it checks that
// nothing of it is left, and on failure it logs the logs.
func startNeutron(ctx context.Context, t *testing.T, o neutronlocal.Options) *neutronlocal.Neutron {
	t.Helper()
	began := time.Now()
	n, err := neutronlocal.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("neutronlocal.Start: %v (%s)", time.Since(began).Round(time.Millisecond), n.URL())
	t.Cleanup(func() {
		if t.Failed() {
			dumpLogs(t, n.Dir)
		}
		if err := n.Stop(); err != nil {
			t.Error(err)
		}
		assertNothingLeft(t, n.Dir)
	})
	return n
}

// dumpLogs logs the tails of every log under dir.
func dumpLogs(t *testing.T, dir string) {
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !(strings.HasSuffix(path, ".log") || strings.HasSuffix(path, ".out")) {
			return nil
		}
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
			t.Logf("--- %s:\n%s", path, b[max(0, len(b)-8<<10):])
		}
		return nil
	})
}

// assertNothingLeft checks that no namespace l3ha-nn-* and no process
// naming dir is left.
func assertNothingLeft(t *testing.T, dir string) {
	t.Helper()
	if ns, err := linux.ListNamespaces(neutronlocal.NamespacePrefix); err != nil || len(ns) > 0 {
		t.Errorf("namespaces left after Stop: %v (%v)", ns, err)
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cmd, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && strings.Contains(string(cmd), dir+"/") {
			stat, _ := os.ReadFile("/proc/" + e.Name() + "/stat")
			if !strings.Contains(string(stat), ") Z ") {
				t.Errorf("process %s left after Stop: %s", e.Name(), strings.ReplaceAll(string(cmd), "\x00", " "))
			}
		}
	}
}

// TestNeutronServer starts neutron-server alone: the API answers as Neutron
// does, nothing of /etc/neutron is read, Restart keeps the port and the
// data, Stop leaves nothing.
func TestNeutronServer(t *testing.T) {
	requireAll(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	log := testLog(t)
	r := startRabbit(ctx, t, log)
	n := startNeutron(ctx, t, neutronlocal.Options{Dir: t.TempDir(), Log: log, AMQPURL: r.URL()})

	var ext struct {
		Extensions []struct {
			Alias string `json:"alias"`
		} `json:"extensions"`
	}
	if err := n.Do(ctx, http.MethodGet, "/extensions", nil, &ext); err != nil {
		t.Fatal(err)
	}
	var aliases []string
	for _, e := range ext.Extensions {
		aliases = append(aliases, e.Alias)
	}
	for _, want := range []string{"l3-ha", "l3_agent_scheduler", "router", "external-net", "agent"} {
		if !slices.Contains(aliases, want) {
			t.Errorf("extension %s missing from %v", want, aliases)
		}
	}
	netID, _, err := n.CreateExternalNetwork(ctx, "public")
	if err != nil {
		t.Fatal(err)
	}

	// Only our files: the server logs its option values at startup in
	// debug mode; without debug, check the command line and that
	// /etc/neutron's values (auth_strategy keystone) do not apply: a
	// request without a token succeeded above.
	cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", n.ServerPID()))
	if err != nil {
		t.Fatal(err)
	}
	// neutron-server sets its process title: one string, spaces between.
	args := strings.Fields(strings.ReplaceAll(string(cmd), "\x00", " "))
	for i, a := range args {
		if (a == "--config-file" || a == "--config-dir") && i+1 < len(args) && !strings.HasPrefix(args[i+1], n.Dir+"/") {
			t.Errorf("neutron-server %s %s: outside the scratch directory", a, args[i+1])
		}
	}
	if !slices.Contains(args, "--config-dir") {
		t.Errorf("neutron-server runs without --config-dir (would read /etc/neutron/neutron-server.conf.d): %q", args)
	}

	url, pid := n.URL(), n.ServerPID()
	began := time.Now()
	if err := n.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("Restart: %v", time.Since(began).Round(time.Millisecond))
	if n.URL() != url || n.ServerPID() == pid {
		t.Errorf("after Restart: %s pid %d, want %s and a new pid (was %d)", n.URL(), n.ServerPID(), url, pid)
	}
	var got struct {
		Network struct {
			ID       string `json:"id"`
			External bool   `json:"router:external"`
		} `json:"network"`
	}
	if err := n.Do(ctx, http.MethodGet, "/networks/"+netID, nil, &got); err != nil {
		t.Fatal(err)
	}
	if !got.Network.External {
		t.Errorf("network after Restart: %+v", got.Network)
	}

	// auth_strategy headers: identity headers make the context, no token.
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	h := startNeutron(ctx, t, neutronlocal.Options{Dir: t.TempDir(), Log: log, AMQPURL: r.URL(), AuthStrategy: "headers"})
	var se *neutronlocal.APIError
	if err := h.Do(ctx, http.MethodGet, "/networks", nil, nil); !errors.As(err, &se) || se.StatusCode != http.StatusUnauthorized {
		t.Errorf("headers auth, no identity: %v, want 401", err)
	}
	tenant := http.Header{"X-User-Id": {"demo-user"}, "X-Project-Id": {"demo-project"}, "X-Roles": {"member,reader"}}
	var nets struct {
		Network struct {
			ProjectID string `json:"project_id"`
		} `json:"network"`
	}
	if err := h.DoHeaders(ctx, http.MethodPost, "/networks", tenant, map[string]any{"network": map[string]any{"name": "demo"}}, &nets); err != nil {
		t.Fatal(err)
	}
	if nets.Network.ProjectID != "demo-project" {
		t.Errorf("tenant's network: project %q, want demo-project", nets.Network.ProjectID)
	}
	if err := h.DoHeaders(ctx, http.MethodPost, "/networks", tenant, map[string]any{"network": map[string]any{"name": "x", "provider:network_type": "flat", "provider:physical_network": neutronlocal.PhysnetTenant}}, nil); !errors.As(err, &se) || se.StatusCode != http.StatusForbidden {
		t.Errorf("tenant setting provider attributes: %v, want 403", err)
	}
}

// stepTimeout bounds each wait of the tests: generous for a loaded two-core
// machine, short enough that a step that will never happen fails the test
// in minutes.
const stepTimeout = 3 * time.Minute

// waitFor polls cond every 200 ms until it returns true; it fails t after
// stepTimeout or when ctx ends.
func waitFor(ctx context.Context, t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, stepTimeout)
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
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// TestNeutronWithTwoL3AgentsHARouterFailsOver runs Neutron with two network
// nodes with real L3 agents, makes an HA router with a gateway and two
// tenant networks (VXLAN and flat), pings the upstream host from an
// instance on each through it, kills the active node and checks that the
// other node takes over (in the API and for the pings), then restarts
// neutron-server and checks that nothing changed.
func TestNeutronWithTwoL3AgentsHARouterFailsOver(t *testing.T) {
	requireAll(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	log := testLog(t)
	r := startRabbit(ctx, t, log)
	n := startNeutron(ctx, t, neutronlocal.Options{Dir: scratchDir(t), Log: log, AMQPURL: r.URL(), Debug: os.Getenv("L3HA_NEUTRONLOCAL_DEBUG") == "1"})

	began := time.Now()
	hosts := []string{"net1", "net2"}
	nodes := make(map[string]*neutronlocal.Node)
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	for _, h := range hosts {
		g.Go(func() error {
			nd, err := n.AddNode(gctx, neutronlocal.NodeOptions{Host: h, L3Agent: true})
			if err != nil {
				return err
			}
			mu.Lock()
			nodes[h] = nd
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	t.Logf("two nodes with linuxbridge and L3 agents alive: %v", time.Since(began).Round(time.Millisecond))

	// As admin (noauth: project fake_project_id).
	extID, _, err := n.CreateExternalNetwork(ctx, "public")
	if err != nil {
		t.Fatal(err)
	}
	mkNet := func(body map[string]any, cidr string) (netID, subnetID string) {
		t.Helper()
		netID, subnetID, err := n.CreateNetwork(ctx, body, map[string]any{"cidr": cidr})
		if err != nil {
			t.Fatal(err)
		}
		return netID, subnetID
	}
	vxNet, vxSub := mkNet(map[string]any{"name": "tenant-vxlan"}, "10.0.0.0/24")
	flatNet, flatSub := mkNet(map[string]any{"name": "tenant-flat", "provider:network_type": "flat",
		"provider:physical_network": neutronlocal.PhysnetTenant}, "10.0.1.0/24")

	routerAt := time.Now()
	var router struct{ Router struct{ ID string } }
	if err := n.Do(ctx, http.MethodPost, "/routers", map[string]any{"router": map[string]any{
		"name": "r1", "ha": true, "external_gateway_info": map[string]any{"network_id": extID},
	}}, &router); err != nil {
		t.Fatal(err)
	}
	rid := router.Router.ID
	for _, sub := range []string{vxSub, flatSub} {
		if err := n.Do(ctx, http.MethodPut, "/routers/"+rid+"/add_router_interface", map[string]any{"subnet_id": sub}, nil); err != nil {
			t.Fatal(err)
		}
	}

	var states map[string]string
	waitFor(ctx, t, "both agents hosting the router, one active", func() (bool, error) {
		var err error
		states, err = neutronlocal.HAStates(ctx, n, rid)
		return len(states) == 2 && len(neutronlocal.ActiveHosts(states)) == 1, err
	})
	firstActive := time.Since(routerAt)
	master := neutronlocal.ActiveHosts(states)[0]
	backup := hosts[0]
	if backup == master {
		backup = hosts[1]
	}
	t.Logf("router %s: first active after %v: %v", rid, firstActive.Round(time.Millisecond), states)

	// The openstack client shows the same.
	osc, out, err := n.OpenstackRouterAgents(ctx, rid)
	t.Logf("openstack network agent list --router %s --long: %s", rid, out)
	if err != nil {
		t.Error(err)
	} else if len(osc) != 2 || !slices.Equal(neutronlocal.ActiveHosts(osc), []string{master}) {
		t.Errorf("openstack shows %v; want 2 agents, %s alone active", osc, master)
	}

	vmVX, err := n.AddInstance(ctx, neutronlocal.InstanceOptions{Name: "vx", NetworkID: vxNet})
	if err != nil {
		t.Fatal(err)
	}
	vmFlat, err := n.AddInstance(ctx, neutronlocal.InstanceOptions{Name: "flat", NetworkID: flatNet, IP: netip.MustParseAddr("10.0.1.10")})
	if err != nil {
		t.Fatal(err)
	}
	ping1 := func(in *neutronlocal.Instance) func() (bool, error) {
		return func() (bool, error) {
			out, err := in.Command(ctx, "ping", "-n", "-c", "1", "-W", "1", neutronlocal.UpstreamIP.String()).CombinedOutput()
			if err != nil {
				return false, fmt.Errorf("%v: %s", err, out)
			}
			return true, nil
		}
	}
	for _, in := range []*neutronlocal.Instance{vmVX, vmFlat} {
		at := time.Now()
		waitFor(ctx, t, "a ping from "+in.Name()+" through the router", ping1(in))
		t.Logf("instance %s (%s, gateway %s): upstream %s answers (after %v)", in.Name(), in.Addr(), in.Gateway(), neutronlocal.UpstreamIP, time.Since(at).Round(time.Millisecond))
	}
	// The gateway is on the master only.
	for host, nd := range nodes {
		cmd, err := nd.RouterCommand(ctx, rid, "ip", "-4", "-o", "addr", "show")
		if err != nil {
			t.Fatal(err)
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v: %s", host, err, out)
		}
		has := strings.Contains(string(out), " "+vmVX.Gateway().String()+"/")
		if has != (host == master) {
			t.Errorf("%s (master %s): router namespace holds the gateway %s: %v\n%s", host, master, vmVX.Gateway(), has, out)
		}
	}

	probe := startProber(ctx, t, vmVX, neutronlocal.UpstreamIP)
	waitFor(ctx, t, "the prober's first reply", func() (bool, error) {
		_, ok := probe.FirstReplyAfter(time.Time{})
		return ok, nil
	})

	fault := time.Now()
	if err := nodes[master].KillNode(); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed %s (the master) in %v", master, time.Since(fault).Round(time.Millisecond))
	waitFor(ctx, t, backup+" active in the API", func() (bool, error) {
		var err error
		states, err = neutronlocal.HAStates(ctx, n, rid)
		return states[backup] == "active", err
	})
	apiFailover := time.Since(fault)
	var (
		resumed time.Time
		ok      bool
	)
	waitFor(ctx, t, "pings resuming through "+backup, func() (bool, error) {
		resumed, ok = probe.FirstReplyAfter(fault)
		return ok, nil
	})
	lastBefore, _ := probe.LastReplyBefore(fault)
	t.Logf("failover %s -> %s: pings resumed %v after the fault (gap %v), API showed %s active after %v: %v",
		master, backup, resumed.Sub(fault).Round(time.Millisecond), resumed.Sub(lastBefore).Round(time.Millisecond),
		backup, apiFailover.Round(time.Millisecond), states)
	if err := neutronlocal.WaitPing(ctx, vmFlat); err != nil {
		t.Errorf("flat instance after the failover: %v", err)
	}

	// A dead agent's binding that still claims active is shown standby
	// once the agent is dead (agent_down_time).
	deadAt := time.Now()
	waitFor(ctx, t, master+"'s binding no longer active", func() (bool, error) {
		var err error
		states, err = neutronlocal.HAStates(ctx, n, rid)
		return err == nil && states[master] != "active" && states[backup] == "active", err
	})
	t.Logf("%s's binding shown %q after %v more (agent_down_time %v)", master, states[master], time.Since(deadAt).Round(time.Millisecond), neutronlocal.AgentDownTime)

	// neutron-server restarted mid-test: the data plane does not notice,
	// the API still says the same.
	restartAt := time.Now()
	if err := n.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("neutron-server restarted in %v", time.Since(restartAt).Round(time.Millisecond))
	if states, err = neutronlocal.HAStates(ctx, n, rid); err != nil || states[backup] != "active" {
		t.Errorf("after the restart: %v (%v), want %s active", states, err, backup)
	}
	waitFor(ctx, t, "a reply after the restart", func() (bool, error) {
		_, ok := probe.FirstReplyAfter(time.Now().Add(-time.Second))
		return ok, nil
	})
	// The survivor's agents are still alive for the restarted server.
	waitFor(ctx, t, backup+"'s agents alive after the restart", func() (bool, error) {
		agents, err := n.Agents(ctx, backup)
		alive := 0
		for _, a := range agents {
			if a.Alive {
				alive++
			}
		}
		return alive == 2, err
	})

	// The dead node comes back, like a rebooted one: new agents, the
	// router's namespace and keepalived again, as a backup (nopreempt).
	old, revived := nodes[master], nodes[master]
	reviveAt := time.Now()
	if err := revived.Revive(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s revived, agents alive after %v", old.Host(), time.Since(reviveAt).Round(time.Millisecond))
	// Its L3 agent reports standby at once (no VIP on its ha- device),
	// but starts keepalived only once the linuxbridge agent has bound its
	// HA port again (Neutron's guard against dual masters after a reboot,
	// LP#1597461). A backup is proven once its keepalived has run longer
	// than VRRP's master-down interval (3 x 2 s + skew) without taking over.
	var kaSeen time.Time
	const masterDown = 8 * time.Second
	waitFor(ctx, t, old.Host()+"'s keepalived running as a backup", func() (bool, error) {
		if revived.KeepalivedPID(rid) == 0 {
			kaSeen = time.Time{}
			return false, errors.New("no keepalived yet")
		}
		if kaSeen.IsZero() {
			kaSeen = time.Now()
		}
		// (Until its agent has looked at the router, the API may still
		// show the binding's state from before the death: active.)
		states, err = neutronlocal.HAStates(ctx, n, rid)
		return time.Since(kaSeen) > masterDown && states[old.Host()] == "standby" && states[backup] == "active", err
	})
	t.Logf("%s standby again after %v, its keepalived up for %v: %v", old.Host(), time.Since(reviveAt).Round(time.Millisecond), time.Since(kaSeen).Round(time.Millisecond), states)
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err != nil || strings.Contains(string(mi), "l3ha-nn-netns") {
		t.Errorf("an L3 agent's private /run/netns is visible in the root mount namespace (%v)", err)
	}

	// The active node's L3 agent stopped gracefully, its keepalived with it
	// (SIGTERM: keepalived's priority-0 advert hands over at once).
	stopAt := time.Now()
	if err := nodes[backup].StopL3Agent(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	t.Logf("StopL3Agent on %s took %v", backup, stopped.Sub(stopAt).Round(time.Millisecond))
	waitFor(ctx, t, old.Host()+" active again", func() (bool, error) {
		states, err = neutronlocal.HAStates(ctx, n, rid)
		return states[old.Host()] == "active", err
	})
	apiAt := time.Since(stopped)
	waitFor(ctx, t, "pings through "+old.Host(), func() (bool, error) {
		resumed, ok = probe.FirstReplyAfter(stopped)
		return ok, nil
	})
	lastBefore, _ = probe.LastReplyBefore(stopAt)
	t.Logf("after StopL3Agent on %s: longest ping gap %v, pings resumed %v after it returned, %s active in the API after %v: %v",
		backup, probe.LongestGap(stopAt.Add(-time.Second), time.Now()).Round(time.Millisecond), resumed.Sub(stopped).Round(time.Millisecond), old.Host(), apiAt.Round(time.Millisecond), states)
}

// cleanEnv is the environment without pyenv's Python settings and OS_*
// (for Debian's /usr/bin/openstack).

// startProber starts a neutronlocal.Prober, stopped when t ends.
func startProber(ctx context.Context, t *testing.T, in *neutronlocal.Instance, target netip.Addr) *neutronlocal.Prober {
	t.Helper()
	p, err := neutronlocal.StartProber(ctx, in, target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}
