package lab

// Acceptance tests of the native VRRP issue, in real namespaces, built on
// the helpers of acceptance_test.go (accLab, scenario.prepare/measure,
// waitSettled, watchMaster, rebootNode, ...):
//
//   - per-node HA drivers in the lab (`--ha-driver net1=keepalived,net2=native`),
//     unit-tested without root;
//   - TestNativeAcceptanceMixedDrivers: one network node runs keepalived, the
//     other the native engine (VRRPv2 at 1 s, which both speak), and one
//     router fails over both ways: a running cloud can move from keepalived
//     to native one node at a time;
//   - TestNativeAcceptanceFaults: the native driver at 0.1 s adverts: agent
//     restart (no transition, no lost ping), graceful agent stop (at most 2
//     lost pings), node failure (lost pings worth less than 1 s at the
//     measured ping interval).
//
// Both run as root with L3HA_LAB_E2E=1 (`make test` sets it). With
// L3HA_LAB_SCALE=1 two measurements run as well: 100 HA routers per driver
// (agent memory per router, and the time for all of them to move after the
// node holding every master fails), and VRRP flaps on a CPU-loaded lab at
// several advert intervals (the evidence for the native driver's default).

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/l3ha/l3ha/internal/linux"
)

// Per-node HA drivers: unit tests.

func TestParseHADrivers(t *testing.T) {
	all := func(d string) map[string]string {
		return map[string]string{"net1": d, "net2": d, "compute1": d}
	}
	for _, tt := range []struct {
		spec string
		want map[string]string
	}{
		{"", map[string]string{}},
		{"native", all("native")},
		{"keepalived", all("keepalived")},
		{"net1=keepalived,net2=native", map[string]string{"net1": "keepalived", "net2": "native"}},
		{" native , net1 = keepalived ", map[string]string{"net1": "keepalived", "net2": "native", "compute1": "native"}},
		{"net1=keepalived,native", map[string]string{"net1": "keepalived", "net2": "native", "compute1": "native"}},
	} {
		got, err := ParseHADrivers(tt.spec)
		if err != nil || !mapsEqual(got, tt.want) {
			t.Errorf("ParseHADrivers(%q) = %v, %v; want %v", tt.spec, got, err, tt.want)
		}
	}
	for _, bad := range []string{"vrrpd", "net3=native", "net1=native,net1=keepalived", "native,keepalived", "net1=", "=native", ",", "net1=keepalived,"} {
		if got, err := ParseHADrivers(bad); err == nil {
			t.Errorf("ParseHADrivers(%q) = %v, want an error", bad, got)
		}
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// Network nodes with different drivers must be told one advert interval:
// the drivers' defaults (keepalived 2 s VRRPv2, native 0.2 s VRRPv3) cannot
// share a VRRP group.
func TestOptionsMixedHADriversNeedAdvertInterval(t *testing.T) {
	for _, tt := range []struct {
		driver, advert string
		ok             bool
	}{
		{"native", "", true},
		{"net1=native,net2=native", "", true},
		{"net1=keepalived,net2=native", "", false},
		{"net1=native", "", false}, // net2 keeps the agent's default
		{"net1=keepalived,net2=native", "1", true},
		{"net1=keepalived,net2=native,compute1=keepalived", "0.1", true},
		{"net1=nope", "1", false},
	} {
		o := Options{Binary: "/bin/true", HADriver: tt.driver, AdvertInt: tt.advert}
		err := o.setDefaults()
		if (err == nil) != tt.ok {
			t.Errorf("--ha-driver %q --ha-vrrp-advert-int %q: err = %v, want ok %v", tt.driver, tt.advert, err, tt.ok)
		}
		if err != nil && tt.advert == "" && strings.Contains(tt.driver, "=") && !strings.Contains(err.Error(), "--ha-vrrp-advert-int") {
			t.Errorf("--ha-driver %q: error %q does not name --ha-vrrp-advert-int", tt.driver, err)
		}
	}
}

// Each agent gets its node's driver; the state file records them, and a
// state file written before ha_drivers existed still gives every agent the
// plain ha_driver.
func TestAgentArgvPerNodeHADriver(t *testing.T) {
	caps := parseAgentHelp(helpNow)
	drivers, err := ParseHADrivers("net1=keepalived,net2=native")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	st := &State{Name: "lab", Dir: dir, Binary: "/bin/l3ha", Dataplane: DataplaneLinux, ServerURL: serverURL(),
		HADriver: "net1=keepalived,net2=native", HADrivers: drivers, AdvertInt: "1"}
	if err := st.Save(); err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadState(dir)
	if err != nil || !mapsEqual(loaded.HADrivers, drivers) || loaded.HADriver != st.HADriver {
		t.Fatalf("lab.json round trip: %+v, %v", loaded, err)
	}
	older := &State{Name: "lab", Dir: dir, Binary: "/bin/l3ha", Dataplane: DataplaneLinux, ServerURL: serverURL(), HADriver: "native"}
	for _, tt := range []struct {
		st   *State
		want map[string]string // node → driver ("" = no --ha-driver)
	}{
		{loaded, map[string]string{"net1": "keepalived", "net2": "native", "compute1": ""}},
		{&State{Name: "lab", Dir: dir, Binary: "/bin/l3ha", Dataplane: DataplaneLinux, ServerURL: serverURL(), HADriver: "net1=keepalived,net2=native"},
			map[string]string{"net1": "keepalived", "net2": "native", "compute1": ""}},
		{older, map[string]string{"net1": "native", "net2": "native", "compute1": "native"}},
	} {
		for _, n := range Nodes {
			argv, err := agentArgv(tt.st, n, caps)
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if i := slices.Index(argv, "--ha-driver"); i >= 0 && i+1 < len(argv) {
				got = argv[i+1]
			}
			if got != tt.want[n.Name] {
				t.Errorf("ha_driver %q, ha_drivers %v: %s gets --ha-driver %q, want %q", tt.st.HADriver, tt.st.HADrivers, n.Name, got, tt.want[n.Name])
			}
			if tt.st.AdvertInt != "" && !strings.Contains(strings.Join(argv, " "), "--ha-vrrp-advert-int "+tt.st.AdvertInt) {
				t.Errorf("%s: argv %q lacks the advert interval", n.Name, argv)
			}
		}
	}
}

// End to end.

// nvStartLab brings a lab up as startAccLab does, with the lab's
// --ha-driver drivers and --ha-vrrp-advert-int advert (and agent_down_time
// downTime seconds, 0 for the lab's default); its teardown checks that
// nothing of it is left.
func nvStartLab(t *testing.T, prefix, drivers, advert string, downTime int) *accLab {
	t.Helper()
	l := &accLab{t: t, name: prefix + randomHex(3), dir: filepath.Join(t.TempDir(), "lab")}
	t.Cleanup(func() { l.down() })
	st, err := Up(t.Context(), Options{
		Name: l.name, Dir: l.dir, Binary: labBinary, Out: tWriter{t},
		HADriver: drivers, AdvertInt: advert, AgentDownTime: downTime,
	})
	if err != nil {
		t.Fatal(err)
	}
	l.st = st
	l.api = apiFor(st)
	return l
}

// nvResult logs a measured fault, with the loss in time at the measured
// ping interval.
func nvResult(t *testing.T, res *Result) {
	t.Helper()
	t.Logf("%s on %s (%s): %s took over after %v s (API %v s); pings sent %d lost %d (%.0f ms worth at the measured %.2f ms interval), longest gap %.3f s, kernel changes %d; %s",
		res.Fault, res.MasterBefore, res.HADriver, orNone(res.MasterAfter), deref(res.FailoverSeconds), deref(res.APIFailoverSeconds),
		res.PingsSent, res.PingsLost, float64(res.PingsLost)*res.PingIntervalMeasuredMS, res.PingIntervalMeasuredMS,
		res.LongestGapSeconds, res.KernelChanges, res.FaultDetail)
}

// nvFailover is accLab.failover for any driver on any node: it injects fault
// into the router's master and checks the takeover (kernel, and API unless
// the fault cut the server off), that the instance's pings resume, brings the
// old master back and checks that it stays a backup (nopreempt) for
// max(5 adverts, 2 s).
func (l *accLab) nvFailover(t *testing.T, s *scenario, fault string, base func() []string, advert time.Duration) *Result {
	t.Helper()
	old := l.waitSettled(t, s.routerID, base(), 60*time.Second)
	s.o.Fault, s.o.Timeout, s.o.Settle = fault, 30*time.Second, time.Second
	res, err := s.measure(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	nvResult(t, res)
	newMaster := otherNode(old)
	if res.MasterBefore != old || res.FailoverSeconds == nil || res.MasterAfter != newMaster {
		t.Fatalf("no failover: master %s → %s (failover %v s)", res.MasterBefore, res.MasterAfter, deref(res.FailoverSeconds))
	}
	if !res.PingsResumed || res.PingsLost >= res.PingsSent {
		t.Errorf("the instance's pings did not resume: %d sent, %d lost", res.PingsSent, res.PingsLost)
	}
	if fault != FaultNode || old != controllerNode().Name {
		if res.APIFailoverSeconds == nil || res.APIMasterAfter != newMaster {
			t.Errorf("API: active %q after the failover (after %v s)", res.APIMasterAfter, deref(res.APIFailoverSeconds))
		}
	}
	waitPing(t, NodeNamespace(l.name, instanceNS), UpstreamIP)

	// The old master comes back...
	switch fault {
	case FaultHALink:
		nvSetHA(t, l, s.routerID, old, true)
	case FaultNode:
		l.rebootNode(t, old)
	case FaultAgentStop:
		if _, err := restartAgent(t.Context(), l.st, old); err != nil {
			t.Fatal(err)
		}
	}
	// ...as a backup that runs the router with its own driver...
	keepalived := l.st.haDriverOf(old) == "keepalived"
	var v haView
	if err := waitFor(t.Context(), 90*time.Second, old+" to be back as a backup", func() (bool, error) {
		v, err = l.view(t.Context(), s.routerID)
		rk := v.Kernel[old]
		ok := err == nil && rk.Exists && rk.HAUp && v.APIAlive[old] && v.APIStates[old] == "standby"
		if keepalived {
			ok = ok && len(keepalivedPIDs(filepath.Join(nodeStateDir(l.dir, old), "ha_confs", s.routerID)+"/")) > 0
		}
		return ok, nil
	}); err != nil {
		t.Fatalf("%v\n%s", err, v)
	}
	// ...and stays one: past the Master_Down_Interval of a VRRP instance
	// that starts as a backup.
	w := l.watchMaster(s.routerID, newMaster)
	watchEnd := time.Now().Add(max(5*advert, 2*time.Second))
	for time.Now().Before(watchEnd) {
		if v, err := l.view(t.Context(), s.routerID); err == nil && !slices.Equal(v.APIActive, []string{newMaster}) {
			t.Errorf("API shows %v active after %s came back, want %s", v.APIActive, old, newMaster)
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if bad := w.finish(); len(bad) > 0 {
		t.Errorf("%s took the router back: %v", old, bad)
	}
	if m := l.waitSettled(t, s.routerID, base(), 10*time.Second); m != newMaster {
		t.Errorf("master is %s after %s came back, want %s", m, old, newMaster)
	}
	l.checkStateFiles(t, s.routerID, newMaster)
	return res
}

// TestNativeAcceptanceMixedDrivers: net1 runs keepalived, net2 the native
// engine, both VRRPv2 at 1 s (keepalived's and Neutron's kind, which a
// running cloud has); one HA router fails over from one driver to the other
// and back (the master's ha- device down each time), the instance's pings
// resuming each time. This is the migration path: a cloud moves from
// keepalived to native one node at a time, its routers failing over between
// nodes of either kind.
func TestNativeAcceptanceMixedDrivers(t *testing.T) {
	needE2E(t)
	const advert = time.Second
	want := map[string]string{"net1": "keepalived", "net2": "native"}
	l := nvStartLab(t, "mx", "net1=keepalived,net2=native", "1", 0)

	// lab.json records each node's driver, and each agent was given its own.
	st, err := LoadState(l.dir)
	if err != nil || st == nil {
		t.Fatalf("lab.json: %v", err)
	}
	if st.HADriver != "net1=keepalived,net2=native" || st.HADrivers["net1"] != "keepalived" || st.HADrivers["net2"] != "native" || st.AdvertInt != "1" {
		t.Errorf("lab.json: ha_driver %q, ha_drivers %v, advert %q", st.HADriver, st.HADrivers, st.AdvertInt)
	}
	for node, d := range want {
		p, _ := st.process("agent-" + node)
		if !strings.Contains(strings.Join(p.Argv, " "), "--ha-driver "+d+" ") {
			t.Errorf("agent-%s runs %q, want --ha-driver %s", node, p.Argv, d)
		}
	}

	s := l.scenario(false)
	if err := s.prepare(t.Context()); err != nil {
		t.Fatal(err)
	}
	base := func() []string {
		return sortedCopy(hostPrefix(s.gatewayIP, ExternalPrefix), hostPrefix(TenantGateway, 24), hostPrefix(s.floatingIP, 32))
	}
	first := l.waitSettled(t, s.routerID, base(), 60*time.Second)
	// Each node runs the router with its own driver: a keepalived on net1,
	// the agent's engine on net2.
	if pids := keepalivedPIDs(filepath.Join(nodeStateDir(l.dir, "net1"), "ha_confs", s.routerID) + "/"); len(pids) == 0 {
		t.Errorf("net1 runs no keepalived for router %s", s.routerID)
	}
	if pids := keepalivedPIDs(filepath.Join(nodeStateDir(l.dir, "net2"), "ha_confs", s.routerID) + "/"); len(pids) > 0 {
		t.Errorf("net2 (native) runs keepalived %v for router %s", pids, s.routerID)
	}
	if lines := logLines(l.agentLog("net2"), `msg="VRRP router started"`, "router_id="+s.routerID); len(lines) == 0 {
		t.Errorf("net2's agent did not start the router in its VRRP engine")
	}
	t.Logf("lab %s: router %s, master %s (%s) first", l.name, s.routerID, first, want[first])

	// Both ways: from the first master to the other node, then back.
	for range 2 {
		from := l.waitSettled(t, s.routerID, base(), 60*time.Second)
		to := otherNode(from)
		name := fmt.Sprintf("HALink/%s-%s-to-%s-%s", from, want[from], to, want[to])
		if !t.Run(name, func(t *testing.T) {
			res := l.nvFailover(t, s, FaultHALink, base, advert)
			if *res.FailoverSeconds > 3*advert.Seconds()+1+2 {
				t.Errorf("failover took %.3f s, want about Master_Down_Interval (%.2f s)", *res.FailoverSeconds, 3*advert.Seconds()+206.0/256)
			}
		}) {
			break
		}
	}
	if m := l.waitSettled(t, s.routerID, base(), 30*time.Second); m != first {
		t.Errorf("master %s after failing over both ways, want %s again", m, first)
	}
}

// nvAdvertGap reads, from a restarted agent's log, how long VRRP was
// silent: from the old agent's "stopping" line at or after since to the new
// engine's adoption of routerID.
func nvAdvertGap(log string, since time.Time, routerID string) (time.Duration, bool) {
	var stop time.Time
	for _, line := range logLines(log, "time=") {
		ts, ok := nvLogTime(line)
		if !ok || ts.Before(since.Add(-time.Second)) {
			continue
		}
		switch {
		case stop.IsZero() && strings.Contains(line, `msg="stopping l3ha agent"`):
			stop = ts
		case !stop.IsZero() && strings.Contains(line, `msg="VRRP router started"`) && strings.Contains(line, "router_id="+routerID) && strings.Contains(line, "adopted=true"):
			return ts.Sub(stop), true
		}
	}
	return 0, false
}

var nvTimeField = regexp.MustCompile(`^time=(\S+)`)

func nvLogTime(line string) (time.Time, bool) {
	m := nvTimeField.FindStringSubmatch(line)
	if m == nil {
		return time.Time{}, false
	}
	ts, err := time.Parse(time.RFC3339Nano, m[1])
	return ts, err == nil
}

// TestNativeAcceptanceFaults: the native driver at 0.1 s adverts (VRRPv3).
// Agent restart: no transition, no lost ping. Graceful agent stop: at most
// 2 lost pings. Node failure: the pings lost are worth less than a second at
// the measured ping interval (ping -i 0.01 really sends every ~16.5 ms here).
func TestNativeAcceptanceFaults(t *testing.T) {
	needE2E(t)
	const advert = 100 * time.Millisecond
	l := nvStartLab(t, "nv", "native", "0.1", 0)
	s := l.scenario(false)
	if err := s.prepare(t.Context()); err != nil {
		t.Fatal(err)
	}
	base := func() []string {
		return sortedCopy(hostPrefix(s.gatewayIP, ExternalPrefix), hostPrefix(TenantGateway, 24), hostPrefix(s.floatingIP, 32))
	}
	t.Logf("lab %s: HA router %s, gateway %s, floating IP %s", l.name, s.routerID, s.gatewayIP, s.floatingIP)
	l.waitSettled(t, s.routerID, base(), 60*time.Second)
	// Each network node keeps the router's announcements from its other
	// tap ports (linux.AnnouncementTable), whichever node is master.
	for _, n := range networkNodes() {
		got, err := linux.AnnouncementFilterAddrs(NodeNamespace(l.name, n))
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range []string{s.gatewayIP, s.floatingIP, TenantGateway} {
			if !slices.Contains(got, netip.MustParseAddr(a)) {
				t.Errorf("%s: announcement filter %v lacks %s", n, got, a)
			}
		}
	}

	t.Run("AgentRestart", func(t *testing.T) {
		master, res := l.restartMasterAgentUnnoticed(t, s, base(), 5*time.Second)
		if gap, ok := nvAdvertGap(l.agentLog(master), res.FaultAt, s.routerID); ok {
			t.Logf("VRRP silent for about %v across the restart: the stopping engine's last advert to the new engine's adoption (that last advert announces a 1 s interval, so the backup waits %v)",
				gap.Round(time.Millisecond), 3*time.Second+206*time.Second/256)
		}
		l.checkStateFiles(t, s.routerID, master)
	})

	// The graceful stop and the node failure, in an order that puts the
	// node failure on net2 (on the controller, net1, it would cut the server
	// off too); masters alternate, so one of the two orders does.
	remaining := []string{FaultAgentStop, FaultNode}
	for len(remaining) > 0 {
		master := l.waitSettled(t, s.routerID, base(), 60*time.Second)
		fault := remaining[0]
		if master != controllerNode().Name && slices.Contains(remaining, FaultNode) {
			fault = FaultNode
		} else if master == controllerNode().Name && slices.Contains(remaining, FaultAgentStop) {
			fault = FaultAgentStop
		}
		remaining = slices.DeleteFunc(remaining, func(f string) bool { return f == fault })
		ok := t.Run(fault, func(t *testing.T) {
			res := l.nvFailover(t, s, fault, base, advert)
			iv := res.PingIntervalMeasuredMS
			if iv <= 0 {
				t.Fatalf("no measured ping interval: %+v", res)
			}
			switch fault {
			case FaultAgentStop:
				if lines := logLines(l.agentLog(res.MasterBefore), "VRRP new master heard by the resigning master", "router_id="+s.routerID); len(lines) > 0 {
					t.Logf("resigning master: %s", lines[len(lines)-1])
				}
				if res.PingsLost > 2 {
					t.Errorf("graceful agent stop lost %d pings, want at most 2", res.PingsLost)
				}
			case FaultNode:
				if lost := float64(res.PingsLost) * iv; lost >= 1000 {
					t.Errorf("node failure lost %d pings × %.2f ms = %.0f ms, want under 1 s", res.PingsLost, iv, lost)
				}
			}
		})
		if !ok {
			break
		}
	}
}

// Measurements (L3HA_LAB_SCALE=1).

func needScale(t *testing.T) {
	t.Helper()
	needE2E(t)
	if os.Getenv("L3HA_LAB_SCALE") != "1" {
		t.Skip("scale measurement: set L3HA_LAB_SCALE=1")
	}
}

func nvEnvInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// nvRouter is one router of a measurement.
type nvRouter struct {
	id, gateway string
}

// nvCreateRouters creates n HA routers through the API, each with its
// gateway on the external network pub when pub is not empty.
func (l *accLab) nvCreateRouters(t *testing.T, n int, pub string) []nvRouter {
	t.Helper()
	out := make([]nvRouter, n)
	if err := parallel(n, 4, func(i int) error {
		body := map[string]any{"name": fmt.Sprintf("nv-%03d", i), "ha": true}
		if pub != "" {
			body["external_gateway_info"] = map[string]any{"network_id": pub}
		}
		var r apiRouter
		if err := l.api.create(t.Context(), "routers", "router", body, &r); err != nil {
			return err
		}
		out[i] = nvRouter{id: r.ID, gateway: r.gatewayIP()}
		if pub != "" && out[i].gateway == "" {
			return fmt.Errorf("router %s has no gateway address", r.ID)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// nvPublicNetwork creates the external network with room for 240 gateways.
func (l *accLab) nvPublicNetwork(t *testing.T) string {
	t.Helper()
	var n, sub idOnly
	if err := l.api.create(t.Context(), "networks", "network", map[string]any{
		"name": "public", "router:external": true,
		"provider:network_type": "flat", "provider:physical_network": PhysicalNetwork,
	}, &n); err != nil {
		t.Fatal(err)
	}
	if err := l.api.create(t.Context(), "subnets", "subnet", map[string]any{
		"name": "public-subnet", "network_id": n.ID, "ip_version": 4, "cidr": ExternalCIDR,
		"gateway_ip": UpstreamIP, "enable_dhcp": false,
		"allocation_pools": []map[string]string{{"start": "172.24.4.10", "end": "172.24.4.250"}},
	}, &sub); err != nil {
		t.Fatal(err)
	}
	return n.ID
}

// nvStopAgent stops node's agent gracefully and waits until it is gone.
func (l *accLab) nvStopAgent(t *testing.T, node string) {
	t.Helper()
	p, ok := l.st.process("agent-" + node)
	if !ok {
		t.Fatalf("no agent on %s", node)
	}
	if err := p.signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(t.Context(), 30*time.Second, "agent-"+node+" to exit", func() (bool, error) { return !p.running(), nil }); err != nil {
		t.Fatal(err)
	}
}

// nvPoll is waitFor for conditions that cost a lot to evaluate (hundreds
// of namespaces and API calls): it waits every between evaluations, so that
// the measuring does not load the machine it measures.
func nvPoll(t *testing.T, timeout, every time.Duration, what string, cond func() bool) error {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
		}
		select {
		case <-t.Context().Done():
			return t.Context().Err()
		case <-time.After(every):
		}
	}
	return nil
}

// nvSetHA sets the ha- device of a router's namespace on node up or down.
func nvSetHA(t *testing.T, l *accLab, routerID, node string, up bool) {
	t.Helper()
	if _, err := setHADevice(RouterNamespace(l.name, routerID, node), up); err != nil {
		t.Fatal(err)
	}
}

// nvHolds reports whether node's namespace of r holds its gateway address.
func (l *accLab) nvHolds(r nvRouter, node string) bool {
	rk, err := readRouter(l.name, r.id, node)
	return err == nil && slices.Contains(rk.Addrs, hostPrefix(r.gateway, ExternalPrefix))
}

// nvMemory is an agent's memory and that of its node's keepalived processes.
type nvMemory struct {
	AgentRSS, AgentPss int // kB
	Keepalived         int // processes
	KeepalivedPss      int // kB, summed
	KeepalivedRSS      int // kB, summed
}

func (l *accLab) nvMemory(node string) nvMemory {
	var m nvMemory
	p, _ := l.st.process("agent-" + node)
	m.AgentRSS, _ = procKB(p.PID, "status", "VmRSS:")
	m.AgentPss, _ = procKB(p.PID, "smaps_rollup", "Pss:")
	for _, pid := range keepalivedPIDs(nodeStateDir(l.dir, node) + "/") {
		m.Keepalived++
		pss, _ := procKB(pid, "smaps_rollup", "Pss:")
		rss, _ := procKB(pid, "status", "VmRSS:")
		m.KeepalivedPss += pss
		m.KeepalivedRSS += rss
	}
	return m
}

// nvGatewayWatch records, per router, when an address event first showed
// its gateway address in one node's router namespaces (netlink address
// subscriptions, so that 100 namespaces cost nothing until they change).
type nvGatewayWatch struct {
	done chan struct{}
	mu   sync.Mutex
	at   map[string]time.Time
	errs []error
}

func (l *accLab) nvWatchGateways(t *testing.T, routers []nvRouter, node string) *nvGatewayWatch {
	t.Helper()
	w := &nvGatewayWatch{done: make(chan struct{}), at: map[string]time.Time{}}
	t.Cleanup(w.stop)
	for _, r := range routers {
		gw := net.ParseIP(r.gateway)
		h, err := openNS(RouterNamespace(l.name, r.id, node))
		if err != nil {
			t.Fatal(err)
		}
		ch := make(chan netlink.AddrUpdate, 64)
		err = netlink.AddrSubscribeWithOptions(ch, w.done, netlink.AddrSubscribeOptions{
			Namespace: &h, ReceiveBufferSize: 1 << 20,
			ErrorCallback: func(err error) {
				w.mu.Lock()
				w.errs = append(w.errs, err)
				w.mu.Unlock()
			},
		})
		h.Close()
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for u := range ch {
				if u.NewAddr && u.LinkAddress.IP.Equal(gw) {
					now := time.Now()
					w.mu.Lock()
					if _, seen := w.at[r.id]; !seen {
						w.at[r.id] = now
					}
					w.mu.Unlock()
				}
			}
		}()
	}
	return w
}

func (w *nvGatewayWatch) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.at)
}

func (w *nvGatewayWatch) stop() {
	select {
	case <-w.done:
	default:
		close(w.done)
	}
}

// TestNativeScale100Routers measures, per driver (keepalived at 1 s
// adverts, native at 0.1 s; L3HA_LAB_SCALE_CASES, default
// "keepalived:1,native:0.1"), with 100 HA routers (L3HA_LAB_SCALE_ROUTERS)
// each with a gateway: the memory of the agents (and keepalived processes)
// per router, and the time for every router to move when the node holding
// all the masters fails. All masters go to net2: net1's agent is stopped
// while the routers are made (agent_down_time is long, so the server still
// schedules every router on both nodes), so only net2 wires them and
// elects itself; net1's agent then comes back and joins every router as a
// backup. The node failure is the lab's `node` fault on net2, and a router
// has moved when net1's router namespace holds its gateway address.
func TestNativeScale100Routers(t *testing.T) {
	needScale(t)
	n := nvEnvInt("L3HA_LAB_SCALE_ROUTERS", 100)
	cases := os.Getenv("L3HA_LAB_SCALE_CASES") // DRIVER:ADVERT,...
	if cases == "" {
		cases = "keepalived:1,native:0.1"
	}
	for _, c := range strings.Split(cases, ",") {
		driver, advert, ok := strings.Cut(strings.TrimSpace(c), ":")
		if !ok {
			t.Fatalf("L3HA_LAB_SCALE_CASES: %q is not DRIVER:ADVERT", c)
		}
		t.Run(driver+"-"+advert, func(t *testing.T) { nvScale(t, driver, advert, n) })
	}
}

func nvScale(t *testing.T, driver, advert string, n int) {
	const master, backup = "net2", "net1"
	l := nvStartLab(t, "s"+driver[:1], driver, advert, 3600)
	idle := map[string]nvMemory{}
	for _, node := range networkNodes() {
		idle[node] = l.nvMemory(node)
	}
	pub := l.nvPublicNetwork(t)
	l.nvStopAgent(t, backup)
	start := time.Now()
	routers := l.nvCreateRouters(t, n, pub)
	created := time.Since(start)
	var held int
	if err := nvPoll(t, 15*time.Minute, time.Second, fmt.Sprintf("%s to hold the gateways of %d routers", master, n), func() bool {
		held = 0
		for _, r := range routers {
			if l.nvHolds(r, master) {
				held++
			}
		}
		return held == n
	}); err != nil {
		t.Fatalf("%v (%d held)", err, held)
	}
	mastered := time.Since(start)
	if _, err := restartAgent(t.Context(), l.st, backup); err != nil {
		t.Fatal(err)
	}
	// Joined: every router has one master, which the API agrees on; the
	// backup's namespaces exist with the ha- device up; (keepalived) every
	// router has its two processes per node.
	var moved []nvRouter // routers whose master is backup
	joined := func(allOnMaster bool) func() bool {
		return func() bool {
			moved = nil
			for _, r := range routers {
				v, err := l.view(t.Context(), r.id)
				rk := v.Kernel[backup]
				if err != nil || len(v.VIPs) != 1 || !slices.Equal(v.APIActive, v.VIPs) || !slices.Equal(v.Holders, v.VIPs) ||
					!v.APIAlive[backup] || !rk.Exists || !rk.HAUp {
					return false
				}
				if v.VIPs[0] == backup {
					moved = append(moved, r)
				}
			}
			if allOnMaster && len(moved) > 0 {
				return false
			}
			return driver != "keepalived" || len(keepalivedPIDs(l.dir)) >= 2*2*n
		}
	}
	if err := nvPoll(t, 15*time.Minute, 2*time.Second, fmt.Sprintf("%s to join %d routers", backup, n), joined(false)); err != nil {
		t.Fatal(err)
	}
	// A loaded machine may have moved some masters while the backup wired
	// its routers (a flap: counted and reported below). They go back: their
	// ha- device on the backup is set down until the master has them.
	if len(moved) > 0 {
		t.Logf("%d masters moved to %s while it joined; setting their ha- devices there down and up again", len(moved), backup)
		for _, r := range moved {
			nvSetHA(t, l, r.id, backup, false)
		}
		if err := nvPoll(t, 5*time.Minute, time.Second, "the masters back on "+master, func() bool {
			for _, r := range moved {
				if !l.nvHolds(r, master) {
					return false
				}
			}
			return true
		}); err != nil {
			t.Fatal(err)
		}
		for _, r := range moved {
			nvSetHA(t, l, r.id, backup, true)
		}
	}
	if err := nvPoll(t, 15*time.Minute, 2*time.Second, fmt.Sprintf("%s master of all %d routers, %s a backup", master, n, backup), joined(true)); err != nil {
		t.Fatalf("%v (%d masters on %s)", err, len(moved), backup)
	}
	settled := time.Since(start)
	t.Logf("%s at %s s: %d HA routers with gateways created in %.1f s; %s master of all after %.1f s; %s a backup of all after %.1f s",
		driver, advert, n, created.Seconds(), master, mastered.Seconds(), backup, settled.Seconds())
	// Flaps while it settled: each router should have reported active once,
	// by master, and never by backup.
	actives := map[string]int{}
	for _, node := range networkNodes() {
		actives[node] = len(logLines(l.agentLog(node), `msg="HA state"`, "state=active"))
	}
	load, _ := os.ReadFile("/proc/loadavg")
	t.Logf("HA state reports active before the fault: %v (want %d on %s, 0 on %s: more are flaps); load average %s", actives, n, master, backup, strings.Fields(string(load))[0])

	// Memory. A moment of quiet first, so that the numbers are not those of
	// the wiring burst.
	time.Sleep(5 * time.Second)
	for _, node := range networkNodes() {
		m, i := l.nvMemory(node), idle[node]
		role := "backups"
		if node == master {
			role = "masters"
		}
		perRouter := float64(m.AgentRSS-i.AgentRSS+m.KeepalivedPss) / float64(n)
		t.Logf("memory %s %s (%d %s): agent VmRSS %d kB (idle %d kB), agent Pss %d kB; keepalived: %d processes, Pss %d kB, VmRSS %d kB; per router: %.0f kB (agent VmRSS growth + keepalived Pss), %.0f kB (agent VmRSS + keepalived Pss, total / routers)",
			driver, node, n, role, m.AgentRSS, i.AgentRSS, m.AgentPss, m.Keepalived, m.KeepalivedPss, m.KeepalivedRSS,
			perRouter, float64(m.AgentRSS+m.KeepalivedPss)/float64(n))
	}

	// The move.
	w := l.nvWatchGateways(t, routers, backup)
	s := &scenario{o: &FailoverOptions{Options: Options{Name: l.name}, Fault: FaultNode}, st: l.st}
	detail, t0, err := s.inject(master)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("fault: %s", detail)
	if err := nvPoll(t, 2*time.Minute, 50*time.Millisecond, fmt.Sprintf("%d routers to move to %s", n, backup), func() bool {
		return w.count() == n
	}); err != nil {
		t.Errorf("%v (%d moved)", err, w.count())
	}
	w.stop()
	w.mu.Lock()
	var times []time.Duration
	for _, at := range w.at {
		times = append(times, at.Sub(t0))
	}
	errs := w.errs
	w.mu.Unlock()
	if len(errs) > 0 {
		t.Errorf("address subscriptions: %v", errs)
	}
	// Cross-check the last event against the kernel.
	for _, r := range routers {
		if !l.nvHolds(r, backup) {
			t.Errorf("router %s: %s does not hold the gateway %s", r.id, backup, r.gateway)
		}
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	if len(times) == 0 {
		t.Fatal("no router moved")
	}
	ms := make([]string, len(times))
	for i, d := range times {
		ms[i] = strconv.FormatInt(d.Milliseconds(), 10)
	}
	pct := func(p float64) time.Duration { return times[min(len(times)-1, int(p*float64(len(times))))] }
	t.Logf("move %s at %s s: %d/%d routers moved after the node failure: min %v, p50 %v, p90 %v, max %v; all (ms, sorted): %s",
		driver, advert, len(times), n, times[0].Round(time.Millisecond), pct(0.5).Round(time.Millisecond),
		pct(0.9).Round(time.Millisecond), times[len(times)-1].Round(time.Millisecond), strings.Join(ms, " "))
}

// TestNativeFlapsUnderLoad counts the VRRP transitions of native labs that
// are left alone under CPU load: one lab per advert interval
// (L3HA_LAB_FLAP_ADVERTS, default "0.1,0.2"), all up at once, so that they
// share the same load, each with L3HA_LAB_FLAP_ROUTERS HA routers (default
// 20) with one master each; then L3HA_LAB_FLAP_SECONDS (default 120) with
// L3HA_LAB_FLAP_BURN (default 2) busy loops per CPU running beside them (and whatever else the machine
// does). Every transition is a flap: nothing failed. At the native
// driver's default interval (flapFreeAdvert) and longer there must be none:
// the default was chosen so that a loaded node may send an advert 0.4 s
// late without a flap, and a backup whose own process was stalled reads the
// adverts waiting for it (catchUp) and gives a late master one more interval
// before it takes over. Shorter intervals may flap, at most
// flapBudgetShort times per router. At every interval each router must end
// with one master, which the API agrees on. The agents' logs of a lab that
// flapped are kept in $TMPDIR/l3ha-flaps-<lab>.
func TestNativeFlapsUnderLoad(t *testing.T) {
	needScale(t)
	adverts := strings.Split(os.Getenv("L3HA_LAB_FLAP_ADVERTS"), ",")
	if os.Getenv("L3HA_LAB_FLAP_ADVERTS") == "" {
		adverts = []string{"0.1", "0.2"}
	}
	n := nvEnvInt("L3HA_LAB_FLAP_ROUTERS", 20)
	dur := time.Duration(nvEnvInt("L3HA_LAB_FLAP_SECONDS", 120)) * time.Second
	type flapLab struct {
		advert  string
		l       *accLab
		routers []nvRouter
		before  map[string]int
	}
	// Transitions to master, per node, in the agents' logs.
	transitions := func(l *accLab) map[string]int {
		out := map[string]int{}
		for _, node := range networkNodes() {
			out[node] = len(logLines(l.agentLog(node), `msg="VRRP transition"`, "to=master"))
		}
		return out
	}
	var labs []*flapLab
	for _, adv := range adverts {
		adv = strings.TrimSpace(adv)
		f := &flapLab{advert: adv, l: nvStartLab(t, "fl", "native", adv, 0)}
		f.routers = f.l.nvCreateRouters(t, n, "")
		labs = append(labs, f)
	}
	for _, f := range labs {
		var settled int
		if err := nvPoll(t, 10*time.Minute, 2*time.Second, fmt.Sprintf("%d routers of lab %s with one master each", n, f.l.name), func() bool {
			settled = 0
			for _, r := range f.routers {
				if v, err := f.l.view(t.Context(), r.id); err == nil && len(v.VIPs) == 1 && slices.Equal(v.APIActive, v.VIPs) {
					settled++
				}
			}
			return settled == n
		}); err != nil {
			t.Fatalf("%v (%d settled)", err, settled)
		}
	}
	for _, f := range labs {
		f.before = transitions(f.l)
	}
	var burners []*exec.Cmd
	stopBurners := func() {
		for _, c := range burners {
			_ = c.Process.Kill() // by pid: processes this test started
			_ = c.Wait()
		}
		burners = nil
	}
	t.Cleanup(stopBurners)
	burn := nvEnvInt("L3HA_LAB_FLAP_BURN", 2) * runtime.NumCPU()
	for range burn {
		c := exec.Command("sh", "-c", "while :; do :; done")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		burners = append(burners, c)
	}
	load0, _ := os.ReadFile("/proc/loadavg")
	start := time.Now()
	var loads []string
	for time.Since(start) < dur {
		select {
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		case <-time.After(min(30*time.Second, dur-time.Since(start))):
		}
		b, _ := os.ReadFile("/proc/loadavg")
		loads = append(loads, strings.Fields(string(b))[0])
	}
	stopBurners()
	t.Logf("%d labs × %d routers, %v under %d busy loops; load average %s, then every 30 s: %v",
		len(labs), n, dur, burn, strings.Fields(string(load0))[0], loads)
	for _, f := range labs {
		after := transitions(f.l)
		flaps := 0
		for _, node := range networkNodes() {
			flaps += after[node] - f.before[node]
		}
		late := 0
		for _, node := range networkNodes() {
			late += len(logLines(f.l.agentLog(node), "Master_Down_Timer fired late"))
		}
		t.Logf("native at %s s adverts (lab %s): %d transitions to master in %v (per node %v before, %v after); %d late Master_Down_Timers let the master have one more interval",
			f.advert, f.l.name, flaps, dur, f.before, after, late)
		adv, err := time.ParseDuration(f.advert + "s")
		if err != nil {
			t.Fatalf("L3HA_LAB_FLAP_ADVERTS: %q: %v", f.advert, err)
		}
		switch budget := flapBudgetShort * n; {
		case adv >= flapFreeAdvert && flaps > 0:
			t.Errorf("native at %s s adverts (lab %s): %d transitions to master under load, want none (nothing failed)", f.advert, f.l.name, flaps)
		case flaps > budget:
			t.Errorf("native at %s s adverts (lab %s): %d transitions to master under load, want at most %d (%d per router)", f.advert, f.l.name, flaps, budget, flapBudgetShort)
		}
		if flaps > 0 {
			keep := filepath.Join(os.TempDir(), "l3ha-flaps-"+f.l.name)
			_ = os.MkdirAll(keep, 0o755)
			_ = exec.Command("cp", "-a", filepath.Join(f.l.dir, "logs"), keep).Run()
			t.Logf("lab %s: logs kept in %s", f.l.name, keep)
		}
	}
	// However much they flapped, the routers settle again: one master each,
	// the one the API shows active.
	for _, f := range labs {
		var settled int
		if err := nvPoll(t, 2*time.Minute, time.Second, fmt.Sprintf("%d routers of lab %s with one master each after the load", n, f.l.name), func() bool {
			settled = 0
			for _, r := range f.routers {
				if v, err := f.l.view(t.Context(), r.id); err == nil && len(v.VIPs) == 1 && slices.Equal(v.APIActive, v.VIPs) {
					settled++
				}
			}
			return settled == n
		}); err != nil {
			t.Errorf("%v (%d settled)", err, settled)
		}
	}
}

// Bounds of TestNativeFlapsUnderLoad. flapFreeAdvert is the native driver's
// default advert interval (nativeDefaultAdvert in cmd/l3ha), the shortest
// that must not flap under load; flapBudgetShort bounds the flaps per router
// at shorter intervals. (Measured on 2 cores beside a full `make test`, load
// average 5–7: no transition at 0.1 s nor at 0.2 s in 2 minutes.)
const (
	flapFreeAdvert  = 200 * time.Millisecond
	flapBudgetShort = 1
)
