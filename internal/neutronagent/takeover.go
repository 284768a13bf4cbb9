package neutronagent

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/l3ha/l3ha/internal/linux"
)

// neutronVRRPProcess is a keepalived or neutron-keepalived-state-change
// that neutron-l3-agent started for one of this node's routers.
type neutronVRRPProcess struct {
	pid      int
	monitor  bool // neutron-keepalived-state-change (else keepalived)
	routerID string
	argv     []string
}

// findNeutronVRRP lists the processes neutron-l3-agent left running for
// the routers under haConfsPath: both daemonize and outlive the agent
// (its systemd unit stops only the agent). Neutron's keepalived is told
// -p <ha_confs_path>/<router_id>.pid.keepalived (l3ha's own keepalived
// driver keeps its pid files inside the router's directory, so it is never
// taken for Neutron's); the monitor is told --conf_dir=<ha_confs_path>/<id>.
func findNeutronVRRP(proc, haConfsPath string) ([]neutronVRRPProcess, error) {
	entries, err := os.ReadDir(proc)
	if err != nil {
		return nil, err
	}
	prefix := strings.TrimRight(haConfsPath, "/") + "/"
	var out []neutronVRRPProcess
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(proc, e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		argv := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		isKeepalived, isMonitor, ours, routerID := false, false, false, ""
		for i, a := range argv {
			switch base := filepath.Base(a); {
			case base == "keepalived":
				isKeepalived = true
			case strings.Contains(base, "neutron-keepalived-state-change"):
				isMonitor = true
			}
			if a == "-p" && i+1 < len(argv) && strings.HasPrefix(argv[i+1], prefix) && strings.HasSuffix(argv[i+1], ".pid.keepalived") {
				ours, routerID = true, strings.TrimSuffix(strings.TrimPrefix(argv[i+1], prefix), ".pid.keepalived")
			}
			if dir, ok := strings.CutPrefix(a, "--conf_dir="+prefix); ok {
				ours, routerID = true, strings.TrimRight(dir, "/")
			}
		}
		if ours && (isKeepalived || isMonitor) && routerID != "" && !strings.Contains(routerID, "/") {
			out = append(out, neutronVRRPProcess{pid: pid, monitor: isMonitor, routerID: routerID, argv: argv})
		}
	}
	return out, nil
}

// takeOverFromNeutron stops what neutron-l3-agent left running for this
// node's routers, so that l3ha alone runs their VRRP from now on: the
// state-change monitors first, then keepalived. A keepalived that is
// master resigns as it stops (VRRP priority 0), so a router this node was
// master of fails over once, to a peer, at once; l3ha then joins it as a
// backup. The router namespaces and devices stay and are adopted.
//
// First it turns IPv6 off in those routers' namespaces, as l3ha runs every
// router (LP#1859832). Neutron's keepalived holds the qr-/qg- devices'
// IPv6 link-local addresses as VIPs; removing them as it stops makes the
// kernel send an MLD report, and another a second later, from the
// device's MAC — which is the router's port MAC on every node. A report
// that leaves a former master after the new master's gratuitous ARP
// teaches the bridges and the instances' VTEPs that the router is back on
// the old node, whose forwarding has stopped: traffic was lost for 5-20 s
// until the instances' ARP probes found the new master. Turned off while
// this node still runs keepalived, the one report goes out while the
// node is still master (or, on a backup, holds no address to report).
func takeOverFromNeutron(haConfsPath string, log *slog.Logger) (int, error) {
	procs, err := findNeutronVRRP("/proc", haConfsPath)
	if err != nil {
		return 0, fmt.Errorf("looking for neutron-l3-agent's keepalived: %w", err)
	}
	var routers []string
	for _, p := range procs {
		routers = append(routers, p.routerID)
	}
	turnIPv6Off(routers, log)
	stopped := 0
	for _, monitorsFirst := range []bool{true, false} {
		var pids []int
		for _, p := range procs {
			if p.monitor == monitorsFirst {
				pids = append(pids, p.pid)
				log.Info("stopping what neutron-l3-agent left running; l3ha runs its router from now on", "pid", p.pid, "argv", strings.Join(p.argv, " "))
			}
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
		deadline := time.Now().Add(10 * time.Second)
		for _, pid := range pids {
			for syscall.Kill(pid, 0) == nil && !isZombie(pid) {
				if time.Now().After(deadline) {
					log.Warn("neutron-l3-agent's process did not stop on SIGTERM; killing it", "pid", pid)
					_ = syscall.Kill(pid, syscall.SIGKILL)
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			stopped++
		}
	}
	return stopped, nil
}

// turnIPv6Off turns IPv6 off in the namespaces (qrouter-<id>) of routers,
// each once; a namespace it cannot change is logged and left.
func turnIPv6Off(routers []string, log *slog.Logger) {
	done := map[string]bool{}
	for _, id := range routers {
		if done[id] {
			continue
		}
		done[id] = true
		ns := "qrouter-" + id
		if err := linux.SetSysctls(ns, ipv6Off); err != nil {
			log.Warn("turning IPv6 off in a router neutron-l3-agent left (its keepalived may announce the router from here once more as it stops)",
				"router_id", id, "namespace", ns, "err", err)
		}
	}
}

// ipv6Off turns IPv6 off on every device of a namespace, present and
// future, as the data plane's router sysctls do.
var ipv6Off = map[string]string{
	"net.ipv6.conf.all.disable_ipv6":     "1",
	"net.ipv6.conf.default.disable_ipv6": "1",
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && b[i+2] == 'Z'
}
