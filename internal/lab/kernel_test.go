package lab

import (
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// labBinary is the l3ha binary the kernel-tier tests drive: $L3HA_LAB_TEST_BINARY,
// or one built by TestMain (as root only).
var (
	labBinary string
	buildErr  error
)

func TestMain(m *testing.M) {
	flag.Parse()
	code := func() int {
		if os.Geteuid() != 0 || testing.Short() {
			return m.Run()
		}
		if b := os.Getenv("L3HA_LAB_TEST_BINARY"); b != "" {
			labBinary = b
			return m.Run()
		}
		dir, err := os.MkdirTemp("", "l3ha-labtest-")
		if err != nil {
			buildErr = err
			return m.Run()
		}
		defer os.RemoveAll(dir)
		labBinary = filepath.Join(dir, "l3ha")
		out, err := exec.Command("go", "build", "-o", labBinary, "github.com/l3ha/l3ha/cmd/l3ha").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./cmd/l3ha: %v\n%s", err, out)
		}
		return m.Run()
	}()
	os.Exit(code)
}

func needLab(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("kernel tier: needs root (network namespaces)")
	}
	if testing.Short() {
		t.Skip("kernel tier: skipped with -short")
	}
	if buildErr != nil {
		t.Fatal(buildErr)
	}
}

// labCmd runs `l3ha lab <args> --name name --dir dir` and returns its output.
func labCmd(t *testing.T, name, dir string, args ...string) (string, error) {
	t.Helper()
	argv := append([]string{"lab"}, args...)
	argv = append(argv, "--name", name, "--dir", dir)
	cmd := exec.Command(labBinary, argv...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustLab(t *testing.T, name, dir string, args ...string) string {
	t.Helper()
	out, err := labCmd(t, name, dir, args...)
	if err != nil {
		t.Fatalf("l3ha lab %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// inNS runs a command in a namespace the way an operator would.
func inNS(ns string, argv ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...).CombinedOutput()
	return string(out), err
}

// rootView is what the lab must never touch: the root namespace's devices
// and addresses.
type rootView struct {
	links map[string]bool
	addrs map[string]bool
}

func snapshotRoot(t *testing.T) rootView {
	t.Helper()
	v := rootView{links: map[string]bool{}, addrs: map[string]bool{}}
	links, err := retryDump(netlink.LinkList)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		v.links[l.Attrs().Name] = true
	}
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, netlink.FAMILY_ALL) })
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		v.addrs[a.IPNet.String()] = true
	}
	return v
}

// checkRootUntouched fails if the root namespace gained a device with a lab
// device name or an address of the lab's networks. (Other tests running on
// the machine may add devices of their own; only the lab's are looked for.)
func checkRootUntouched(t *testing.T, before rootView) {
	t.Helper()
	after := snapshotRoot(t)
	labDevs := map[string]bool{devFabric: true, devExternal: true, devUplink: true, devBridge: true, upstreamNS: true}
	for _, n := range Nodes {
		labDevs[n.Name] = true
	}
	for name := range after.links {
		if !before.links[name] && (labDevs[name] || hasPrefixAny(name, "brq", "tap", "vxlan-", "qr-", "qg-", "ha-")) {
			t.Errorf("the lab created device %s in the root namespace", name)
		}
	}
	_, fabric, _ := net.ParseCIDR("10.99.0.0/24")
	_, ext, _ := net.ParseCIDR(ExternalCIDR)
	_, tenant, _ := net.ParseCIDR(TenantCIDR)
	for a := range after.addrs {
		ip, _, err := net.ParseCIDR(a)
		if err != nil || before.addrs[a] {
			continue
		}
		if fabric.Contains(ip) || ext.Contains(ip) || tenant.Contains(ip) {
			t.Errorf("the lab put address %s in the root namespace", a)
		}
	}
}

// labLeftovers lists what of the lab still exists: namespaces and live
// processes among pids.
func labLeftovers(name string, pids []int) []string {
	var left []string
	nss, _ := listNamespaces(func(ns string) bool { return ownsNamespace(name, ns) || strings.HasPrefix(ns, "l3ha-"+name+"-") })
	left = append(left, nss...)
	for _, pid := range pids {
		if alive(pid) {
			cmd, _ := cmdlineOf(pid)
			left = append(left, fmt.Sprintf("pid %d %q", pid, cmd))
		}
	}
	return left
}

func recordedPIDs(t *testing.T, dir string) []int {
	t.Helper()
	st, err := LoadState(dir)
	if err != nil || st == nil {
		t.Fatalf("lab.json: %v, %v", st, err)
	}
	var pids []int
	for _, p := range st.Processes {
		pids = append(pids, p.PID)
	}
	return pids
}

// startSleeper runs a long sleep inside namespace ns (as an agent's
// keepalived would run in a router namespace) and reaps it when it dies.
func startSleeper(t *testing.T, ns string) int {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, "sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go cmd.Wait() //nolint:errcheck
	// ip execs sleep in place: wait until the pid is in ns.
	ino := nsInode(ns)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if got, ok := netnsOfPID(cmd.Process.Pid); ok && got == ino {
			if argv, _ := cmdlineOf(cmd.Process.Pid); len(argv) > 0 && argv[0] == "sleep" {
				return cmd.Process.Pid
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("sleep did not start in %s", ns)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestLabUpDownLeavesNothing(t *testing.T) {
	needLab(t)
	name := "t" + randomHex(3)
	dir := filepath.Join(t.TempDir(), "lab")
	t.Cleanup(func() {
		if out, err := labCmd(t, name, dir, "down"); err != nil {
			t.Errorf("cleanup: lab down: %v\n%s", err, out)
		}
	})
	before := snapshotRoot(t)

	mustLab(t, name, dir, "up", "--dataplane", "fake")
	checkRootUntouched(t, before)
	pids := recordedPIDs(t, dir)
	if len(pids) != 1+len(Nodes) {
		t.Fatalf("recorded processes %v, want the server and %d agents", pids, len(Nodes))
	}
	for _, role := range labRoles() {
		if !nsExists(NodeNamespace(name, role)) {
			t.Errorf("namespace %s missing", NodeNamespace(name, role))
		}
	}

	// The fabric joins every node to the controller.
	for _, n := range Nodes {
		if out, err := inNS(NodeNamespace(name, n.Name), "ping", "-n", "-c", "1", "-W", "5", ControllerIP); err != nil {
			t.Errorf("%s cannot ping the controller: %v\n%s", n.Name, err, out)
		}
	}
	// The upstream host is on the external segment (nothing else has an
	// address there yet, so check its address only).
	if out, err := inNS(NodeNamespace(name, upstreamNS), "ip", "-4", "-o", "addr", "show", "dev", devUplink); err != nil || !strings.Contains(out, UpstreamIP+"/24") {
		t.Errorf("upstream address: %v\n%s", err, out)
	}

	// The server answers from a node namespace, and every agent registered.
	out, err := inNS(NodeNamespace(name, "compute1"), labBinary, "agent", "list", "--url", serverURL(), "--ca-cert", caPath(dir), "-o", "json")
	if err != nil {
		t.Fatalf("agent list from compute1: %v\n%s", err, out)
	}
	var agents []map[string]any
	if err := json.Unmarshal([]byte(out), &agents); err != nil {
		t.Fatalf("agent list: %v\n%s", err, out)
	}
	registered := map[string]bool{}
	for _, a := range agents {
		if h, _ := a["host"].(string); a["alive"] == true {
			registered[h] = true
		}
	}
	for _, n := range Nodes {
		if !registered[n.Name] {
			t.Errorf("agent %s not registered and alive: %s", n.Name, out)
		}
	}

	// status: up, every process running, the agents as the API sees them.
	var st StatusReport
	if err := json.Unmarshal([]byte(mustLab(t, name, dir, "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if !st.Up || len(st.Processes) != 1+len(Nodes) || len(st.Agents) != len(Nodes) || st.APIError != "" {
		t.Errorf("status = %+v", st)
	}
	for _, a := range st.Agents {
		if n, _ := nodeByName(a.Host); !n.Network && a.Mode != "dvr" {
			t.Errorf("compute agent runs in mode %q, want dvr", a.Mode)
		}
	}
	if out := mustLab(t, name, dir, "status"); !strings.Contains(out, "up") || !strings.Contains(out, "compute1") {
		t.Errorf("status table:\n%s", out)
	}

	// What agents leave behind: a router namespace of this lab with a
	// process in it (keepalived), and a stray process in a node namespace.
	// A router namespace of another lab must survive.
	const rid = "2274a168-8f82-4445-8a23-905ac1d4cb92"
	mine, foreign := RouterNamespace(name, rid, "net1"), RouterNamespace(name+"x", rid, "net1")
	for _, ns := range []string{mine, foreign} {
		if err := createNamespace(ns); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { deleteNamespace(foreign) })
	extra := []int{startSleeper(t, mine), startSleeper(t, NodeNamespace(name, "net2"))}
	foreignSleeper := startSleeper(t, foreign)
	t.Cleanup(func() { syscall.Kill(foreignSleeper, syscall.SIGKILL) })

	mustLab(t, name, dir, "down")
	if left := labLeftovers(name, append(pids, extra...)); len(left) > 0 {
		t.Errorf("after down: %v", left)
	}
	if !nsExists(foreign) || !alive(foreignSleeper) {
		t.Error("down removed another lab's router namespace or its process")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("lab directory still there: %v", err)
	}
	checkRootUntouched(t, before)

	// down is idempotent.
	mustLab(t, name, dir, "down")
	var down StatusReport
	if err := json.Unmarshal([]byte(mustLab(t, name, dir, "status", "--json")), &down); err != nil {
		t.Fatal(err)
	}
	if down.Up || len(down.Namespaces) != 0 {
		t.Errorf("status after down = %+v", down)
	}

	t.Run("crash", func(t *testing.T) {
		// Every daemon dies abruptly; lab.json stays with stale pids.
		mustLab(t, name, dir, "up", "--dataplane", "fake")
		pids := recordedPIDs(t, dir)
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		mustLab(t, name, dir, "down")
		if left := labLeftovers(name, pids); len(left) > 0 {
			t.Errorf("after down: %v", left)
		}
	})

	t.Run("crash without state file", func(t *testing.T) {
		// The server dies and lab.json is lost; the agents keep running and
		// are found through their namespaces.
		mustLab(t, name, dir, "up", "--dataplane", "fake")
		pids := recordedPIDs(t, dir)
		st, _ := LoadState(dir)
		srv, _ := st.process("server")
		syscall.Kill(srv.PID, syscall.SIGKILL)
		if err := os.Remove(statePath(dir)); err != nil {
			t.Fatal(err)
		}
		out := mustLab(t, name, dir, "status")
		if !strings.Contains(out, "partly up") {
			t.Errorf("status without lab.json:\n%s", out)
		}
		mustLab(t, name, dir, "down")
		if left := labLeftovers(name, pids); len(left) > 0 {
			t.Errorf("after down: %v", left)
		}
		mustLab(t, name, dir, "down")
	})

	t.Run("namespaces and state file gone", func(t *testing.T) {
		// Someone deleted the namespaces behind the lab's back and lab.json
		// is lost: the daemons still run, in namespaces nobody can name.
		mustLab(t, name, dir, "up", "--dataplane", "fake")
		pids := recordedPIDs(t, dir)
		if err := os.Remove(statePath(dir)); err != nil {
			t.Fatal(err)
		}
		nss, _ := existingNamespaces(name)
		for _, ns := range nss {
			if out, err := exec.Command("ip", "netns", "delete", ns).CombinedOutput(); err != nil {
				t.Fatalf("ip netns delete %s: %v\n%s", ns, err, out)
			}
		}
		mustLab(t, name, dir, "down")
		if left := labLeftovers(name, pids); len(left) > 0 {
			t.Errorf("after down: %v", left)
		}
	})

	t.Run("up refuses an existing lab", func(t *testing.T) {
		mustLab(t, name, dir, "up", "--dataplane", "fake")
		if out, err := labCmd(t, name, dir, "up", "--dataplane", "fake"); err == nil || !strings.Contains(out, "exists already") {
			t.Errorf("second up: %v\n%s", err, out)
		}
		mustLab(t, name, dir, "down")
		if left := labLeftovers(name, nil); len(left) > 0 {
			t.Errorf("after down: %v", left)
		}
	})
	checkRootUntouched(t, before)
}

// TestLabFailoverEndToEnd is the end-to-end tier: the blog's scenario with
// the Linux data plane and real pings, for each fault. It takes about a
// minute, so it runs only with L3HA_LAB_E2E=1.
func TestLabFailoverEndToEnd(t *testing.T) {
	needLab(t)
	if os.Getenv("L3HA_LAB_E2E") != "1" {
		t.Skip("end-to-end tier: set L3HA_LAB_E2E=1")
	}
	for _, fault := range Faults {
		t.Run(fault, func(t *testing.T) {
			r := runLabFailover(t, "--fault", fault, "--settle", "1s")
			t.Logf("fault %s: master %s → %s, failover %v s (API %v s), %d pings sent, %d lost, longest gap %.3f s",
				fault, r.MasterBefore, r.MasterAfter, deref(r.FailoverSeconds), deref(r.APIFailoverSeconds), r.PingsSent, r.PingsLost, r.LongestGapSeconds)
			if r.MasterBefore == "" || r.PingsSent == 0 || !r.FloatingIPReachable {
				t.Errorf("result = %+v", r)
			}
			if r.FailoverSeconds == nil || r.MasterAfter != otherNode(r.MasterBefore) {
				t.Errorf("no failover: master %s → %q (failover %v s): %+v", r.MasterBefore, r.MasterAfter, deref(r.FailoverSeconds), r)
			}
			switch fault {
			case FaultAgentStop:
				checkGracefulStop(t, &r)
			case FaultSwitchover:
				checkSwitchover(t, &r, time.Second)
			default:
				if r.PingsLost == 0 || r.PingsLost >= r.PingsSent {
					t.Errorf("pings: %d sent, %d lost", r.PingsSent, r.PingsLost)
				}
			}
			checkHistoryReason(t, &r)
			if left := labLeftovers(r.Lab, nil); len(left) > 0 {
				t.Errorf("after failover (which brought the lab up, so tears it down): %v", left)
			}
		})
	}
}

// TestLabSwitchoverWithKeepalived: with the keepalived driver the target
// cannot take over on request; it outranks and preempts the master for the
// switchover's duration instead (internal/dataplane KeepalivedDriver), so
// the move waits for the master's adverts to time out (Neutron's 2 s
// adverts: about 7 s) but loses nothing, and when the config goes back to
// Neutron's (nopreempt, equal priorities) keepalived's reload keeps the
// new master: the settle time covers that reload.
func TestLabSwitchoverWithKeepalived(t *testing.T) {
	needLab(t)
	if os.Getenv("L3HA_LAB_E2E") != "1" {
		t.Skip("end-to-end tier: set L3HA_LAB_E2E=1")
	}
	r := runLabFailover(t, "--fault", FaultSwitchover, "--ha-driver", "keepalived", "--settle", "3s", "--timeout", "30s")
	t.Logf("keepalived switchover: master %s → %s after %v s (API %v s), %d pings sent, %d lost, longest gap %.3f s",
		r.MasterBefore, r.MasterAfter, deref(r.FailoverSeconds), deref(r.APIFailoverSeconds), r.PingsSent, r.PingsLost, r.LongestGapSeconds)
	checkSwitchover(t, &r, 15*time.Second)
	checkHistoryReason(t, &r)
}

// runLabFailover runs `l3ha lab failover --json` with args in a lab of its
// own (which it brings up and, at the end, down) and returns its result.
func runLabFailover(t *testing.T, args ...string) Result {
	t.Helper()
	name := "e" + randomHex(3)
	dir := filepath.Join(t.TempDir(), "lab")
	t.Cleanup(func() {
		if out, err := labCmd(t, name, dir, "down"); err != nil {
			t.Errorf("cleanup: lab down: %v\n%s", err, out)
		}
	})
	return runLabFailoverIn(t, name, dir, args...)
}

// runLabFailoverIn runs `l3ha lab failover --json` with args in the lab
// name (in dir), which it brings up if it is not.
func runLabFailoverIn(t *testing.T, name, dir string, args ...string) Result {
	t.Helper()
	argv := append(append([]string{"lab", "failover", "--json"}, args...), "--name", name, "--dir", dir)
	cmd := exec.Command(labBinary, argv...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("lab failover: %v\n%s\n%s", err, out, stderr.String())
	}
	var r Result
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return r
}

// faultReasons is the reason the history must give the new master's
// transition to active after each fault (issue 11: "history shows the right
// reasons after node fault, agent stop, switchover").
var faultReasons = map[string]string{
	FaultHALink:     "peer_lost",
	FaultNode:       "peer_lost",
	FaultAgentStop:  "peer_resigned",
	FaultSwitchover: "switchover",
}

// checkHistoryReason checks that the router's history ends with the new
// master's transition to active and the fault's reason.
func checkHistoryReason(t *testing.T, r *Result) {
	t.Helper()
	if r.Fault == FaultNode && r.MasterBefore == controllerNode().Name {
		// The cut node holds the server: the API cannot learn the
		// failover, so its history has nothing to say yet.
		t.Logf("history not checked: the cut node %s is the controller", r.MasterBefore)
		return
	}
	want := faultReasons[r.Fault]
	for _, h := range r.HistoryAfter {
		if h.Host == r.MasterAfter && h.To == "active" && h.Reason == want {
			return
		}
	}
	t.Errorf("history after %s: %+v, want %s standby→active with reason %q", r.Fault, r.HistoryAfter, r.MasterAfter, want)
}

// checkSwitchover checks an operator's switchover: the other node holds the
// gateway within the given time of the request (native: one apply and one
// advert round trip), at most 2 pings of 10 ms are lost, the API shows the
// new master active and the old one standby, and the gateway changed hands
// once and stayed: during the settle time nobody took it back.
func checkSwitchover(t *testing.T, r *Result, within time.Duration) {
	t.Helper()
	target := otherNode(r.MasterBefore)
	if f := r.FailoverSeconds; f == nil || *f > within.Seconds() {
		t.Errorf("switchover: %s held the gateway after %v s, want within %v", target, deref(f), within)
	}
	states := map[string]string{}
	for _, a := range r.AgentsAfter {
		states[a.Host] = a.HAState
	}
	if states[target] != "active" || states[r.MasterBefore] != "standby" {
		t.Errorf("API after the switchover: ha_state %v, want %s active and %s standby", states, target, r.MasterBefore)
	}
	if r.MasterAfter != target || r.KernelChanges > 2 {
		// Two changes: {old} → {old, new} (the target holds the addresses
		// before the old master drops them) → {new}.
		t.Errorf("gateway holders after the switchover: %s, %d changes; want %s alone after at most 2", r.MasterAfter, r.KernelChanges, target)
	}
	if !r.PingsResumed || r.PingsLost > 2 || r.PingsLost >= r.PingsSent {
		t.Errorf("pings across the switchover: %d sent, %d lost (resumed %v), want at most 2 lost", r.PingsSent, r.PingsLost, r.PingsResumed)
	}
}

// e2eGracefulFailover bounds the takeover after a graceful agent stop: the
// master resigns (priority 0), so the backup takes over after its skew time
// (about 0.16 s at the default 0.2 s adverts), not after missed adverts;
// README promises it "within a second".
const e2eGracefulFailover = time.Second

// checkGracefulStop checks the agent-stop fault's result: the master's agent
// got SIGTERM, its masters resigned, and the backup took over at once — in
// the kernel within e2eGracefulFailover, in the API (the new master active,
// the stopped agent's last report standby), with the instance's pings
// resuming and at most 2 lost (as TestNativeAcceptanceFaults asks of a
// graceful stop: the resigning master keeps forwarding until it hears the
// new master).
func checkGracefulStop(t *testing.T, r *Result) {
	t.Helper()
	backup := otherNode(r.MasterBefore)
	if f := r.FailoverSeconds; f == nil || *f > e2eGracefulFailover.Seconds() {
		t.Errorf("graceful agent stop: %s took over after %v s, want within %v (the master resigns)", backup, deref(f), e2eGracefulFailover)
	}
	if r.APIFailoverSeconds == nil || r.APIMasterAfter != backup {
		t.Errorf("API: active %q after the graceful stop (another host active after %v s), want %s", r.APIMasterAfter, deref(r.APIFailoverSeconds), backup)
	}
	states := map[string]string{}
	for _, a := range r.AgentsAfter {
		states[a.Host] = a.HAState
	}
	if states[backup] != "active" || states[r.MasterBefore] != "standby" {
		t.Errorf("API after the graceful stop: ha_state %v, want %s active and %s standby", states, backup, r.MasterBefore)
	}
	if !r.PingsResumed || r.PingsLost > 2 || r.PingsLost >= r.PingsSent {
		t.Errorf("pings after the graceful stop: %d sent, %d lost (resumed %v), want at most 2 lost", r.PingsSent, r.PingsLost, r.PingsResumed)
	}
}

func deref(f *float64) any {
	if f == nil {
		return nil
	}
	return *f
}
