package keepalived

// Kernel tier: real keepalived 2.2.7 in throwaway namespaces named
// l3ha-test-<random>. Root only; skipped otherwise. Everything created is
// removed in t.Cleanup: keepalived processes by pid, namespaces by name.

import (
	"bytes"
	"context"
	"fmt"
	"github.com/l3ha/l3ha/internal/kerneltest"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/agentapi"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

func requireKernel(t *testing.T) { t.Helper(); kerneltest.Require(t, "ip", "keepalived") }

var randHex = kerneltest.RandHex

var run = kerneltest.Run

// newTestNS creates namespace l3ha-test-<random> with lo up, deleted when the test ends.
var newTestNS = kerneltest.Namespace

// addDevice adds a veth device (its peer stays in the same namespace) and
// sets both up. The kernel here has no dummy driver.
func addDevice(t *testing.T, ns, name string) {
	t.Helper()
	peer := "p" + randHex(6)
	run(t, "ip", "-n", ns, "link", "add", name, "type", "veth", "peer", "name", peer)
	run(t, "ip", "-n", ns, "link", "set", name, "up")
	run(t, "ip", "-n", ns, "link", "set", peer, "up")
}

func nsHandle(t *testing.T, ns string) *netlink.Handle {
	t.Helper()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	return nh
}

// nsAddrs returns the addresses in ns as "addr/len dev".
func nsAddrs(t *testing.T, ns string) map[string]bool {
	t.Helper()
	nh := nsHandle(t, ns)
	defer nh.Close()
	links, err := nh.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, l := range links {
		addrs, err := nh.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range addrs {
			out[a.IPNet.String()+" "+l.Attrs().Name] = true
		}
	}
	return out
}

func hasDefaultRoute(t *testing.T, ns, via string) bool {
	t.Helper()
	nh := nsHandle(t, ns)
	defer nh.Close()
	routes, err := nh.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.Equal(net.ParseIP(via)) {
			return true
		}
	}
	return false
}

// recorder keeps the transitions one Manager reported.
type recorder struct {
	mu     sync.Mutex
	states []string
}

func (r *recorder) record(routerID, state string) {
	r.mu.Lock()
	r.states = append(r.states, state)
	r.mu.Unlock()
}

func (r *recorder) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.states)
}

func (r *recorder) last() string {
	s := r.get()
	if len(s) == 0 {
		return ""
	}
	return s[len(s)-1]
}

// TestKernelConfigsAcceptedByKeepalived: keepalived 2.2.7's own config check
// accepts every golden file (the transcripts included), with the devices
// they name present. Its only remarks are the two Neutron's own files draw.
func TestKernelConfigsAcceptedByKeepalived(t *testing.T) {
	requireKernel(t)
	files, err := filepath.Glob("testdata/*.conf")
	if err != nil || len(files) < 3 {
		t.Fatalf("golden files: %v %v", files, err)
	}
	ns := newTestNS(t)
	devRE := regexp.MustCompile(`\b(ha|qr|qg)-[0-9a-f]{8}-[0-9a-f]{2}\b`)
	seen := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range devRE.FindAllString(string(b), -1) {
			if !seen[d] {
				seen[d] = true
				addDevice(t, ns, d)
			}
		}
	}
	benign := regexp.MustCompile(`^(\(VR_\d+\) Ignoring track_interface \S+ since own interface|\(\S+: Line \d+\) Cannot specify scope for IPv6 addresses \(\S+\) - ignoring scope)$`)
	for _, f := range files {
		abs, _ := filepath.Abs(f)
		cmd := exec.Command("ip", "netns", "exec", ns, "keepalived", "--config-test", "-f", abs)
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stderr, &stderr
		err := cmd.Run()
		for _, l := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
			if l != "" && !benign.MatchString(l) {
				t.Errorf("%s: keepalived says %q", f, l)
			}
		}
		if err != nil {
			// keepalived exits 5 when it made remarks; only benign ones were.
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 5 || stderr.Len() == 0 {
				t.Errorf("%s: keepalived --config-test: %v\n%s", f, err, stderr.String())
			}
		}
	}
}

// haSide is one network node of the pair.
type haSide struct {
	name     string
	ns       string
	stateDir string
	cfg      Config
	m        *Manager
	rec      *recorder
}

func (s *haSide) vip(t *testing.T) bool {
	return nsAddrs(t, s.ns)[s.cfg.VIP().String()+" "+s.cfg.HAInterface]
}

func (s *haSide) logCount(t *testing.T, what string) int {
	return countInLog(t, filepath.Join(s.m.Dir(s.cfg.RouterID), LogFile), what)
}

// testLog is a slog destination that writes to t.Log until the test ends.
type testLog struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func newTestLog(t *testing.T) *testLog {
	l := &testLog{t: t}
	t.Cleanup(func() {
		l.mu.Lock()
		l.done = true
		l.mu.Unlock()
	})
	return l
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (s *haSide) newManager(t *testing.T, log *testLog) {
	t.Helper()
	s.rec = &recorder{}
	m, err := New(Options{
		Logger:       slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", s.name),
		StateDir:     s.stateDir,
		OnTransition: s.rec.record,
		// Long enough that the test's burst of ten changes surely fits in
		// one window on a loaded machine.
		ReloadDelay: 2 * time.Second,
		MinBackoff:  time.Second,
		StopTimeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.m = m
	t.Cleanup(func() { m.Close() })
}

func portID() string {
	h := randHex(16)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// TestKernelKeepalivedPair runs one HA router on two "network nodes" (two
// namespaces whose ha- devices are joined by a veth pair), each with its own
// Manager and state directory, as two agents would, and checks election,
// coalesced reload, failover after a crash with respawn, adoption by
// restarted agents, and removal.
func TestKernelKeepalivedPair(t *testing.T) {
	requireKernel(t)
	ctx := context.Background()
	const wait = 30 * time.Second
	log := newTestLog(t) // first: its cleanup runs last

	routerID := portID()
	qrPort, qgPort := portID(), portID()
	router := func(haPort string) agentapi.RouterSpec {
		return agentapi.RouterSpec{
			ID: routerID, HA: true, VRID: 42, AdminStateUp: true,
			HAPort: &agentapi.PortSpec{ID: haPort},
			Interfaces: []agentapi.PortSpec{{ID: qrPort, MACAddress: "fa:16:3e:57:3b:1f",
				FixedIPs: []agentapi.FixedIPSpec{{IPAddress: "10.0.0.1", CIDR: "10.0.0.0/24"}}}},
			Gateway: &agentapi.PortSpec{ID: qgPort, MACAddress: "fa:16:3e:c8:7f:be",
				FixedIPs: []agentapi.FixedIPSpec{{IPAddress: "172.24.4.88", CIDR: "172.24.4.0/24", GatewayIP: "172.24.4.1"}}},
		}
	}
	settings := Settings{AdvertInt: time.Second, AuthPassword: "l3hatest"}

	sides := []*haSide{{name: "A"}, {name: "B"}}
	haPorts := []string{portID(), portID()}
	for i, s := range sides {
		s.ns = newTestNS(t)
		s.stateDir = t.TempDir()
		cfg, err := FromRouter(router(haPorts[i]), settings)
		if err != nil {
			t.Fatal(err)
		}
		s.cfg = cfg
	}
	// Registered after the namespaces, so run before they are deleted.
	t.Cleanup(func() {
		for _, s := range sides {
			if s.m != nil {
				s.m.Close()
			}
			killStrays(t, s.stateDir)
		}
	})
	a, b := sides[0], sides[1]
	run(t, "ip", "-n", a.ns, "link", "add", a.cfg.HAInterface, "type", "veth", "peer", "name", b.cfg.HAInterface, "netns", b.ns)
	for i, s := range sides {
		run(t, "ip", "-n", s.ns, "addr", "add", fmt.Sprintf("169.254.192.%d/18", 10+i), "dev", s.cfg.HAInterface)
		run(t, "ip", "-n", s.ns, "link", "set", s.cfg.HAInterface, "up")
		addDevice(t, s.ns, DeviceName(PrefixInternal, qrPort))
		addDevice(t, s.ns, DeviceName(PrefixGateway, qgPort))
		s.newManager(t, log)
	}

	// 1. Election: both report standby at once, then exactly one becomes
	// master and reports active once; the other never does.
	for _, s := range sides {
		if err := s.m.Ensure(ctx, routerID, s.ns, s.cfg); err != nil {
			t.Fatal(err)
		}
		if got := s.rec.get(); fmt.Sprint(got) != "[standby]" {
			t.Fatalf("%s: reports after Ensure = %v, want [standby]", s.name, got)
		}
	}
	var master, backup *haSide
	waitFor(t, wait, "one master", func() bool {
		va, vb := a.vip(t), b.vip(t)
		switch {
		case va && !vb && a.rec.last() == agentapi.HAActive:
			master, backup = a, b
		case vb && !va && b.rec.last() == agentapi.HAActive:
			master, backup = b, a
		default:
			return false
		}
		return true
	})
	t.Logf("master: %s", master.name)
	if got := master.rec.get(); fmt.Sprint(got) != "[standby active]" {
		t.Errorf("master reports = %v, want [standby active]", got)
	}
	if got := backup.rec.get(); fmt.Sprint(got) != "[standby]" {
		t.Errorf("backup reports = %v, want [standby]", got)
	}
	qr, qg := DeviceName(PrefixInternal, qrPort), DeviceName(PrefixGateway, qgPort)
	waitFor(t, wait, "router addresses and default route on the master", func() bool {
		ad := nsAddrs(t, master.ns)
		return ad["10.0.0.1/24 "+qr] && ad["172.24.4.88/24 "+qg] && ad["fe80::f816:3eff:fe57:3b1f/64 "+qr] && hasDefaultRoute(t, master.ns, "172.24.4.1")
	})
	if ad := nsAddrs(t, backup.ns); ad["10.0.0.1/24 "+qr] || ad["172.24.4.88/24 "+qg] || ad[backup.cfg.VIP().String()+" "+backup.cfg.HAInterface] || hasDefaultRoute(t, backup.ns, "172.24.4.1") {
		t.Errorf("backup holds router addresses: %v", ad)
	}

	// 2. Ten config changes in a burst: one SIGHUP, the last config applied,
	// no transition.
	if n := master.logCount(t, "Reloading ..."); n != 0 {
		t.Fatalf("keepalived reloaded %d times before any change", n)
	}
	var extra []Address
	final := master.cfg
	for i := 1; i <= 10; i++ {
		extra = append(extra, Address{Prefix: mustPrefix(fmt.Sprintf("10.0.%d.1/24", i)), Dev: qr})
		final = master.cfg
		final.Excluded = slices.Concat(master.cfg.Excluded, extra)
		if err := master.m.Ensure(ctx, routerID, master.ns, final); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, wait, "the coalesced reload", func() bool {
		st, _ := master.m.Status(routerID)
		return st.Reloads == 1 && !st.ReloadPending
	})
	waitFor(t, wait, "the last config's address on the master", func() bool {
		return nsAddrs(t, master.ns)["10.0.10.1/24 "+qr] && master.logCount(t, "Reload complete") >= 1
	})
	if n := master.logCount(t, "Reloading ..."); n != 1 {
		t.Errorf("keepalived logged %d reloads for 10 changes, want 1", n)
	}
	master.cfg = final
	if err := master.m.Ensure(ctx, routerID, master.ns, final); err != nil {
		t.Fatal(err)
	}
	if st, _ := master.m.Status(routerID); st.ReloadPending || st.Reloads != 1 || st.Starts != 1 {
		t.Errorf("unchanged config: %+v", st)
	}
	backup.cfg.Excluded = slices.Concat(backup.cfg.Excluded, extra)
	if err := backup.m.Ensure(ctx, routerID, backup.ns, backup.cfg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, wait, "backup reload", func() bool { return backup.logCount(t, "Reload complete") == 1 })
	if !master.vip(t) || backup.vip(t) || master.rec.last() != agentapi.HAActive || len(backup.rec.get()) != 1 {
		t.Fatalf("reload moved mastership: master %v/%v backup %v/%v", master.vip(t), master.rec.get(), backup.vip(t), backup.rec.get())
	}

	// 3. The master's keepalived crashes (SIGKILL): the backup takes over,
	// both report it, and the crashed one is respawned as backup.
	st, _ := master.m.Status(routerID)
	oldPid := st.PID
	backupEntered := master.logCount(t, "Entering BACKUP STATE")
	if err := killPid(oldPid); err != nil {
		t.Fatal(err)
	}
	waitFor(t, wait, "failover", func() bool {
		return backup.vip(t) && !master.vip(t) && backup.rec.last() == agentapi.HAActive && master.rec.last() == agentapi.HAStandby
	})
	if got := backup.rec.get(); fmt.Sprint(got) != "[standby active]" {
		t.Errorf("new master reports = %v", got)
	}
	if got := master.rec.get(); fmt.Sprint(got) != "[standby active standby]" {
		t.Errorf("old master reports = %v", got)
	}
	waitFor(t, wait, "respawned keepalived back as backup", func() bool {
		st, _ := master.m.Status(routerID)
		return st.PID != 0 && st.PID != oldPid && st.Starts == 2 && master.logCount(t, "Entering BACKUP STATE") > backupEntered
	})
	if !backup.vip(t) || master.vip(t) {
		t.Fatal("respawned keepalived took mastership back (nopreempt)")
	}
	if ad := nsAddrs(t, backup.ns); !ad["10.0.10.1/24 "+qr] {
		t.Error("new master lacks the router's addresses")
	}
	master, backup = backup, master

	// 4. Both agents restart: the new Managers adopt the running keepalived
	// processes without restarting or reloading them, report the current
	// states, and VRRP sees nothing.
	pids := map[string]int{}
	entered := map[string]int{}
	for _, s := range sides {
		st, _ := s.m.Status(routerID)
		pids[s.name] = st.PID
		entered[s.name] = s.logCount(t, "Entering")
		if err := s.m.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range sides {
		s.newManager(t, log)
		ids, err := s.m.Adopt(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(ids) != "["+routerID+"]" {
			t.Fatalf("%s adopted %v", s.name, ids)
		}
		if err := s.m.Ensure(ctx, routerID, s.ns, s.cfg); err != nil {
			t.Fatal(err)
		}
		st, _ := s.m.Status(routerID)
		if st.PID != pids[s.name] || !st.Adopted || st.Starts != 0 || st.Reloads != 0 || st.ReloadPending {
			t.Errorf("%s after adoption: %+v, want pid %d, no start, no reload", s.name, st, pids[s.name])
		}
	}
	if got := master.rec.get(); fmt.Sprint(got) != "[active]" {
		t.Errorf("adopted master reports = %v, want [active]", got)
	}
	if got := backup.rec.get(); fmt.Sprint(got) != "[standby]" {
		t.Errorf("adopted backup reports = %v, want [standby]", got)
	}
	for _, s := range sides {
		if n := s.logCount(t, "Entering"); n != entered[s.name] {
			t.Errorf("%s: keepalived changed state during adoption", s.name)
		}
	}
	if !master.vip(t) || backup.vip(t) {
		t.Error("mastership moved during adoption")
	}

	// 5. Remove the master: SIGTERM makes it hand over at once; the backup
	// reports active; processes and files are gone. Then remove the other.
	st, _ = master.m.Status(routerID)
	masterPid := st.PID
	if err := master.m.Remove(ctx, routerID); err != nil {
		t.Fatal(err)
	}
	if alive(masterPid) {
		t.Error("removed keepalived still running")
	}
	if _, err := os.Stat(master.m.Dir(routerID)); !os.IsNotExist(err) {
		t.Errorf("files of the removed router left: %v", err)
	}
	if master.vip(t) || nsAddrs(t, master.ns)["10.0.0.1/24 "+qr] {
		t.Error("removed keepalived left its addresses")
	}
	waitFor(t, wait, "takeover after Remove", func() bool { return backup.vip(t) && backup.rec.last() == agentapi.HAActive })
	st, _ = backup.m.Status(routerID)
	if err := backup.m.Remove(ctx, routerID); err != nil {
		t.Fatal(err)
	}
	if alive(st.PID) || backup.vip(t) {
		t.Error("second Remove left keepalived or the VIP")
	}
	for _, s := range sides {
		if left := pidsMatching(s.stateDir); len(left) > 0 {
			t.Errorf("%s: processes left: %v", s.name, left)
		}
		ents, _ := os.ReadDir(filepath.Join(s.stateDir, "ha_confs"))
		if len(ents) != 0 {
			t.Errorf("%s: ha_confs not empty: %v", s.name, ents)
		}
		if r := s.m.Routers(); len(r) != 0 {
			t.Errorf("%s: routers still known: %v", s.name, r)
		}
	}
}

func killPid(pid int) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Kill()
}

// TestKernelWatcherNetlink: the netlink watcher in a real namespace reports
// the VIP's comings and goings (added and removed by hand), debounced, and
// ignores everything else.
func TestKernelWatcherNetlink(t *testing.T) {
	requireKernel(t)
	ns := newTestNS(t)
	addDevice(t, ns, "ha-00000000-00")
	run(t, "ip", "-n", ns, "addr", "add", "169.254.0.5/24", "dev", "ha-00000000-00")
	var r reports
	spec := testSpec(&r)
	spec.Namespace, spec.VIP, spec.Delay = ns, VIP(5), 200*time.Millisecond
	stop, err := netlinkWatch(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if r.list() != "[active]" {
		t.Fatalf("initial = %s", r.list())
	}
	run(t, "ip", "-n", ns, "addr", "del", "169.254.0.5/24", "dev", "ha-00000000-00")
	waitFor(t, 10*time.Second, "standby", func() bool { return r.list() == "[active standby]" })
	run(t, "ip", "-n", ns, "addr", "add", "169.254.0.6/24", "dev", "ha-00000000-00")
	run(t, "ip", "-n", ns, "addr", "add", "169.254.0.5/24", "dev", "ha-00000000-00")
	waitFor(t, 10*time.Second, "active", func() bool { return r.list() == "[active standby active]" })
	if _, err := netlinkWatch(watchSpec{Namespace: "l3ha-test-does-not-exist"}); err == nil {
		t.Error("watching a missing namespace succeeded")
	}
	stop()
}
