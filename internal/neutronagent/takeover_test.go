package neutronagent

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/l3ha/l3ha/internal/kerneltest"
	"github.com/l3ha/l3ha/internal/linux"
)

// Only neutron-l3-agent's keepalived and state-change monitors of this
// node's ha_confs_path are taken over: not l3ha's own keepalived (pid file
// inside the router's directory), not another node's.
func TestFindNeutronVRRPTakesOnlyNeutronsProcessesOfThisNode(t *testing.T) {
	proc := t.TempDir()
	const ha = "/var/lib/neutron/ha_confs"
	for pid, argv := range map[string][]string{
		"101": {"keepalived", "-P", "-f", ha + "/r1/keepalived.conf", "-p", ha + "/r1.pid.keepalived", "-r", ha + "/r1.pid.keepalived-vrrp"},
		"102": {"/usr/bin/python3", "/usr/bin/neutron-keepalived-state-change", "--router_id=r1", "--conf_dir=" + ha + "/r1", "--monitor_interface=ha-1"},
		"103": {"keepalived", "-f", ha + "/r2/keepalived.conf", "-p", ha + "/r2/keepalived.pid", "-r", ha + "/r2/keepalived-vrrp.pid"}, // l3ha's driver
		"104": {"keepalived", "-f", "/other/ha_confs/r3/keepalived.conf", "-p", "/other/ha_confs/r3.pid.keepalived"},                   // another node's
		"105": {"sleep", "-p", ha + "/r4.pid.keepalived"},                                                                              // not keepalived
	} {
		dir := filepath.Join(proc, pid)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		var b []byte
		for _, a := range argv {
			b = append(append(b, a...), 0)
		}
		if err := os.WriteFile(filepath.Join(dir, "cmdline"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := findNeutronVRRP(proc, ha)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	monitors := 0
	for _, p := range got {
		pids = append(pids, p.pid)
		if p.monitor {
			monitors++
		}
		if p.routerID != "r1" {
			t.Errorf("pid %d: router %q, want r1 (from its pid file or conf_dir)", p.pid, p.routerID)
		}
	}
	slices.Sort(pids)
	if !slices.Equal(pids, []int{101, 102}) || monitors != 1 {
		t.Errorf("found %v (%d monitors), want neutron's keepalived 101 and monitor 102", pids, monitors)
	}
}

// Before neutron-l3-agent's keepalived stops, IPv6 is off in its router's
// namespace (so that removing its link-local VIPs sends no MLD report from
// the router's MAC); a router whose namespace is gone is skipped.
func TestTakeoverTurnsIPv6OffInNeutronsRouters(t *testing.T) {
	kerneltest.Require(t, "ip")
	id := fmt.Sprintf("l3ha-test-%d", os.Getpid())
	ns := "qrouter-" + id
	if err := linux.CreateNamespace(ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = linux.DeleteNamespace(ns) })
	if v, err := linux.Sysctl(ns, "net.ipv6.conf.all.disable_ipv6"); err != nil || v != "0" {
		t.Fatalf("fresh namespace: disable_ipv6 %q (%v), want 0", v, err)
	}
	turnIPv6Off([]string{id, id, "gone-" + id}, slog.New(slog.DiscardHandler))
	for _, key := range []string{"net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6", "net.ipv6.conf.lo.disable_ipv6"} {
		if v, err := linux.Sysctl(ns, key); err != nil || v != "1" {
			t.Errorf("%s = %q (%v), want 1", key, v, err)
		}
	}
}
