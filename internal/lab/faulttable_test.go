package lab

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// Issue 13's fault table, one test a row (README: "The fault table").

// TestLabFailoverNodeFaultTwiceInARow: in a lab that stays up, `lab
// failover --fault node` restores the cut node after measuring (a node
// that died comes back as a rebooted one and its agent makes it a backup),
// so a second run finds two healthy nodes and fails the router over again,
// back to the first node, losing pings only during the failover.
func TestLabFailoverNodeFaultTwiceInARow(t *testing.T) {
	needE2E(t)
	name, dir := throwawayLab(t, "f")
	mustLab(t, name, dir, "up")
	var prev *Result
	for i := range 2 {
		r := runLabFailoverIn(t, name, dir, "--fault", FaultNode, "--settle", "1s")
		t.Logf("run %d: master %s → %s after %v s, %d of %d pings lost, longest gap %.3f s; notes %q",
			i+1, r.MasterBefore, r.MasterAfter, deref(r.FailoverSeconds), r.PingsLost, r.PingsSent, r.LongestGapSeconds, r.Notes)
		if r.FailoverSeconds == nil || r.MasterAfter != otherNode(r.MasterBefore) || !r.PingsResumed {
			t.Fatalf("run %d: no failover: %+v", i+1, r)
		}
		if !notesHave(r.Notes, "restored after measuring: "+r.MasterBefore+" rebooted") {
			t.Errorf("run %d: notes %q, want the cut node %s restored", i+1, r.Notes, r.MasterBefore)
		}
		if prev != nil && r.MasterBefore != prev.MasterAfter {
			t.Errorf("run %d started with master %s, want %s (the first run's new master: the restored node came back as a backup)", i+1, r.MasterBefore, prev.MasterAfter)
		}
		prev = &r
	}
}

func notesHave(notes []string, prefix string) bool {
	for _, n := range notes {
		if strings.HasPrefix(n, prefix) {
			return true
		}
	}
	return false
}

// serverTruthAfterReturn bounds how long after the server answers again
// the API may show a master that is gone (issue 13's fault table).
const serverTruthAfterReturn = 2 * time.Second

// TestServerKilledDuringAFailover: the lab's server is SIGKILLed and the
// master's ha- device goes down: the data plane fails over without any
// server, and once the server (started again on the same database) answers,
// the API shows the new master active and the old one standby within 2 s.
func TestServerKilledDuringAFailover(t *testing.T) {
	needE2E(t)
	l := nvStartLab(t, "sk", "native", "", 0)
	ctx := t.Context()
	r, master := l.gatewayRouter(t, "server-kill")
	other := otherNode(master)
	srv, ok := l.st.process("server")
	if !ok {
		t.Fatal("no server recorded")
	}
	if err := srv.signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	nvSetHA(t, l, r.ID, master, false)
	faultAt := time.Now()
	if err := waitFor(ctx, 15*time.Second, other+" holding the VIP with no server", func() (bool, error) {
		v, _ := l.view(ctx, r.ID) // the kernel's view; the API is down
		return slices.Equal(v.VIPs, []string{other}), nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("with the server killed, %s took over %.2f s after the fault", other, time.Since(faultAt).Seconds())
	// Down a while longer, so that the agents' retries back off.
	time.Sleep(5 * time.Second)
	if _, err := restartProcess(ctx, l.st, "server"); err != nil {
		t.Fatal(err)
	}
	var back time.Time
	if err := waitFor(ctx, 60*time.Second, "the server to answer again", func() (bool, error) {
		_, err := l.api.agents(ctx)
		if err == nil {
			back = time.Now()
		}
		return err == nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	var states map[string]string
	if err := waitFor(ctx, 30*time.Second, "the API to show "+other+" active and "+master+" standby", func() (bool, error) {
		agents, err := l.api.routerAgents(ctx, r.ID)
		if err != nil {
			return false, nil
		}
		states = map[string]string{}
		for _, a := range agents {
			if a.HAState != nil {
				states[a.Host] = *a.HAState
			}
		}
		return states[other] == "active" && states[master] == "standby", nil
	}); err != nil {
		t.Fatalf("%v: %v", err, states)
	}
	took := time.Since(back)
	t.Logf("server back: the API showed the truth %.2f s after it answered again", took.Seconds())
	if took > serverTruthAfterReturn {
		t.Errorf("the API showed the new master %.2f s after the server answered again, want within %v", took.Seconds(), serverTruthAfterReturn)
	}
}

// nodeObjects lists the kernel objects l3ha made for the lab on node: the
// namespaces (router and node), the devices of the node's namespace and of
// each router namespace, and each router namespace's nftables tables.
func nodeObjects(t *testing.T, lab, node string) []string {
	t.Helper()
	suffix := NetnsSuffix(lab, node)
	nss, err := listNamespaces(func(ns string) bool {
		return strings.HasSuffix(ns, suffix) || ns == NodeNamespace(lab, node)
	})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ns := range nss {
		out = append(out, "netns "+ns)
		if err := withHandle(ns, func(h *netlink.Handle) error {
			links, err := retryDump(h.LinkList)
			for _, l := range links {
				out = append(out, "dev "+ns+"/"+l.Attrs().Name)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if ns == NodeNamespace(lab, node) {
			continue
		}
		tables, err := runIn(t.Context(), ns, "nft", "list", "tables")
		if err != nil {
			t.Fatalf("nft list tables in %s: %v", ns, err)
		}
		for _, l := range strings.Split(strings.TrimSpace(string(tables)), "\n") {
			if l != "" {
				out = append(out, "nft "+ns+"/"+l)
			}
		}
	}
	slices.Sort(out)
	return out
}

// TestAgentKilledAndRestartedDuringAFailover (issue 13's fault table): the
// master's ha- device goes down and, while its backup is taking over, the
// backup's agent is SIGKILLed and started again. The router ends with one
// master (the backup's node), the API agreeing, and the node holds the
// same kernel objects as before — namespaces, devices, nftables tables:
// nothing leaked, nothing made twice.
func TestAgentKilledAndRestartedDuringAFailover(t *testing.T) {
	needE2E(t)
	l := nvStartLab(t, "ak", "native", "", 0)
	ctx := t.Context()
	r, master := l.gatewayRouter(t, "agent-kill")
	other := otherNode(master)
	before := nodeObjects(t, l.name, other)
	p, ok := l.st.process("agent-" + other)
	if !ok {
		t.Fatalf("no agent recorded for %s", other)
	}
	nvSetHA(t, l, r.ID, master, false)
	faultAt := time.Now()
	// Within the backup's Master_Down_Interval (0.76 s): mid-failover.
	time.Sleep(300 * time.Millisecond)
	if err := p.signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if _, err := restartAgent(ctx, l.st, other); err != nil {
		t.Fatal(err)
	}
	var v haView
	if err := waitFor(ctx, 30*time.Second, other+" the one master, in the kernel and the API", func() (bool, error) {
		var err error
		v, err = l.view(ctx, r.ID)
		return err == nil && slices.Equal(v.VIPs, []string{other}) && slices.Equal(v.APIActive, []string{other}), nil
	}); err != nil {
		t.Fatalf("%v\n%s", err, v)
	}
	t.Logf("backup's agent killed 0.3 s into the failover and restarted: %s master %.2f s after the fault", other, time.Since(faultAt).Seconds())
	if after := nodeObjects(t, l.name, other); !slices.Equal(before, after) {
		t.Errorf("kernel objects of %s changed across the kill and restart:\nbefore %q\nafter  %q", other, before, after)
	}
}

// TestFiftyFloatingIPsAtOnceOnAMaster (issue 13's fault table): 50 floating
// IPs are associated at once (10 clients) with ports behind a master: the
// master installs all 50 on its qg- device, its VIP never moves, and the
// router's history gains no transition. How many desired states the
// master's agent applied meanwhile is logged (the native engine converges
// each in place; there is no keepalived to reload).
func TestFiftyFloatingIPsAtOnceOnAMaster(t *testing.T) {
	needE2E(t)
	l := nvStartLab(t, "fi", "native", "", 0)
	ctx := t.Context()
	r, master := l.gatewayRouter(t, "fips")
	pub, err := ensurePublicNetwork(ctx, l.api)
	if err != nil {
		t.Fatal(err)
	}
	var n, sub idOnly
	if err := l.api.create(ctx, "networks", "network", map[string]any{"name": "fip-net"}, &n); err != nil {
		t.Fatal(err)
	}
	if err := l.api.create(ctx, "subnets", "subnet", map[string]any{"network_id": n.ID, "cidr": "10.20.0.0/24", "ip_version": 4}, &sub); err != nil {
		t.Fatal(err)
	}
	if err := l.api.do(ctx, "PUT", "/v2.0/routers/"+r.ID+"/add_router_interface", map[string]any{"subnet_id": sub.ID}, nil); err != nil {
		t.Fatal(err)
	}
	ports := make([]string, 50)
	for i := range ports {
		var p idOnly
		if err := l.api.create(ctx, "ports", "port", map[string]any{"network_id": n.ID}, &p); err != nil {
			t.Fatal(err)
		}
		ports[i] = p.ID
	}
	l.waitSettled(t, r.ID, nil, 60*time.Second)
	histBefore, err := l.api.routerHistory(ctx, r.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	appliedBefore := len(logLines(logPath(l.dir, "agent-"+master), `msg="applied the desired state"`))

	// The VIP is watched throughout.
	moved := make(chan string, 1)
	stop := make(chan struct{})
	var watch sync.WaitGroup
	watch.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if v, err := l.view(ctx, r.ID); err == nil && !slices.Equal(v.VIPs, []string{master}) {
				select {
				case moved <- v.String():
				default:
				}
			}
		}
	})
	start := time.Now()
	fips := make(chan string, len(ports))
	var wg sync.WaitGroup
	work := make(chan string)
	for range 10 {
		wg.Go(func() {
			for port := range work {
				var f struct {
					FloatingIPAddress string `json:"floating_ip_address"`
				}
				if err := l.api.create(ctx, "floatingips", "floatingip", map[string]any{"floating_network_id": pub, "port_id": port}, &f); err != nil {
					t.Errorf("floating IP for port %s: %v", port, err)
					continue
				}
				fips <- f.FloatingIPAddress
			}
		})
	}
	for _, p := range ports {
		work <- p
	}
	close(work)
	wg.Wait()
	close(fips)
	want := map[string]bool{}
	for a := range fips {
		want[a+"/32"] = true
	}
	var v haView
	if err := waitFor(ctx, 30*time.Second, "the 50 floating IPs on "+master+"'s qg- device", func() (bool, error) {
		v, err = l.view(ctx, r.ID)
		if err != nil {
			return false, nil
		}
		n := 0
		for _, a := range v.Kernel[master].Addrs {
			if want[a] {
				n++
			}
		}
		return n == len(want), nil
	}); err != nil {
		t.Fatalf("%v (%d wanted)\n%s", err, len(want), v)
	}
	installed := time.Since(start)
	close(stop)
	watch.Wait()
	select {
	case m := <-moved:
		t.Errorf("the VIP moved while the floating IPs were associated: %s", m)
	default:
	}
	histAfter, err := l.api.routerHistory(ctx, r.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(histAfter) != len(histBefore) {
		t.Errorf("history grew from %d to %d rows: %+v", len(histBefore), len(histAfter), histAfter[len(histBefore):])
	}
	applied := len(logLines(logPath(l.dir, "agent-"+master), `msg="applied the desired state"`)) - appliedBefore
	t.Logf("50 floating IPs associated by 10 clients: all on %s %.2f s after the first request, no transition, %d desired states applied", master, installed.Seconds(), applied)
}

// TestAgentStateDirNotWritable (issue 13's fault table): the master node's
// state directory is made read-only (a read-only bind mount over it, as a
// full or failing disk would behave) and the router fails over: the agent
// keeps routing (the other node is master, in the kernel and the API), logs
// the error and reports it in its configurations (state_dir_error); once
// the directory is writable again it writes the router's state file as it
// must be and the error goes.
func TestAgentStateDirNotWritable(t *testing.T) {
	needE2E(t)
	l := nvStartLab(t, "sd", "native", "", 0)
	ctx := t.Context()
	r, master := l.gatewayRouter(t, "state-dir")
	other := otherNode(master)
	dir := nodeStateDir(l.dir, master)
	mounted := false
	umount := func() {
		if mounted {
			if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
				t.Errorf("umount %s: %v %s", dir, err, out)
			}
			mounted = false
		}
	}
	t.Cleanup(umount)
	for _, args := range [][]string{{"--bind", dir, dir}, {"-o", "remount,bind,ro", dir}} {
		if out, err := exec.Command("mount", args...).CombinedOutput(); err != nil {
			t.Fatalf("mount %v: %v %s", args, err, out)
		}
		mounted = true
	}
	nvSetHA(t, l, r.ID, master, false)
	stateDirError := func() string {
		agents, err := l.api.agents(ctx)
		if err != nil {
			return ""
		}
		for _, a := range agents {
			if a.Host == master {
				s, _ := a.Configurations["state_dir_error"].(string)
				return s
			}
		}
		return ""
	}
	if err := waitFor(ctx, 30*time.Second, master+"'s agent reporting its state directory error, "+other+" master", func() (bool, error) {
		v, err := l.view(ctx, r.ID)
		return err == nil && slices.Equal(v.VIPs, []string{other}) && slices.Equal(v.APIActive, []string{other}) && stateDirError() != "", nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s reports: state_dir_error %q", master, stateDirError())
	if lines := logLines(logPath(l.dir, "agent-"+master), "writing HA state files failed"); len(lines) == 0 {
		t.Errorf("%s's agent did not log the failed writes", master)
	}
	umount()
	file := filepath.Join(dir, "ha_confs", r.ID, "state")
	if err := waitFor(ctx, 30*time.Second, master+"'s state file right again and the error gone", func() (bool, error) {
		b, err := os.ReadFile(file)
		return err == nil && strings.TrimSpace(string(b)) == "backup" && stateDirError() == "", nil
	}); err != nil {
		t.Fatal(err)
	}
}

// throwawayLab names a lab of the test's own (prefix and random hex) with
// its directory in t's temporary directory, and takes it down when t ends,
// failing t if anything of it is left.
func throwawayLab(t *testing.T, prefix string) (name, dir string) {
	t.Helper()
	name = prefix + randomHex(3)
	dir = filepath.Join(t.TempDir(), "lab")
	t.Cleanup(func() {
		if out, err := labCmd(t, name, dir, "down"); err != nil {
			t.Errorf("cleanup: lab down: %v\n%s", err, out)
		}
		if left := labLeftovers(name, nil); len(left) > 0 {
			t.Errorf("after lab down: %v", left)
		}
	})
	return name, dir
}

// TestClockJumpsCauseNoTransition: the machine's wall clock — every node's,
// the server's too — is set back an hour and, 5 s later, forward an hour to
// the true time again, under a master with pings running. Neither jump may
// cause a transition (the kernel's gateway holder and the API's active
// agent stay), lose a ping, or make the agents busy (no timer storm: their
// CPU over the 10 s watch is within that of a quiet 10 s before, plus 0.5 s).
func TestClockJumpsCauseNoTransition(t *testing.T) {
	needE2E(t)
	for _, driver := range []string{"native", "keepalived"} {
		t.Run(driver, func(t *testing.T) {
			name, dir := throwawayLab(t, "j")
			mustLab(t, name, dir, "up", "--ha-driver", driver)
			r := runLabFailoverIn(t, name, dir, "--fault", FaultClockJump)
			t.Logf("%s: %d of %d pings lost, longest gap %.3f s, gateway holder changes %d, API polls not showing the master %d, agents' CPU %.2f s (quiet before: %.2f s); notes %q",
				r.FaultDetail, r.PingsLost, r.PingsSent, r.LongestGapSeconds, r.KernelChanges, r.APIStateChanges, r.AgentsCPUSecondsDuring, r.AgentsCPUSecondsBefore, r.Notes)
			if now := time.Now(); now.Sub(r.FaultAt).Abs() > 5*time.Minute {
				t.Fatalf("the clock is %s off the fault's time after the run: not restored", now.Sub(r.FaultAt))
			}
			if r.KernelChanges != 0 || r.FailoverSeconds != nil || r.MasterAfter != r.MasterBefore {
				t.Errorf("the master moved: %s → %s, %d gateway holder changes", r.MasterBefore, r.MasterAfter, r.KernelChanges)
			}
			if r.APIStateChanges != 0 || r.APIFailoverSeconds != nil {
				t.Errorf("the API did not show %s active in %d polls", r.MasterBefore, r.APIStateChanges)
			}
			if r.PingsLost != 0 || !r.PingsResumed {
				t.Errorf("%d pings lost (resumed %v)", r.PingsLost, r.PingsResumed)
			}
			if r.AgentsCPUSecondsDuring > r.AgentsCPUSecondsBefore+0.5 {
				t.Errorf("agents used %.2f s of CPU over the watch, %.2f s before: a timer storm", r.AgentsCPUSecondsDuring, r.AgentsCPUSecondsBefore)
			}
		})
	}
}
