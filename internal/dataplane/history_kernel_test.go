package dataplane_test

// Kernel tier, end to end: a real l3ha server, two nodes whose agents run
// the real agent loops and the native VRRP driver (VRRPv3 at 0.1 s) on ha-
// devices in throwaway namespaces l3ha-test-<random> joined by a bridge,
// and the faults of the lab — a node cut off with its agent dead, an agent
// stopped gracefully, a partition of the HA network — each seen in the
// router's ha_transitions with the reason VRRP gave it. (The lab itself,
// internal/lab, names its router namespaces qrouter-…; this test keeps to
// l3ha-test- ones and runs VRRP alone on the nodes.)

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/agent"
	"github.com/l3ha/l3ha/internal/agentapi"
	"github.com/l3ha/l3ha/internal/dataplane"
	"github.com/l3ha/l3ha/internal/kerneltest"
	"github.com/l3ha/l3ha/internal/servertest"
	"github.com/l3ha/l3ha/internal/vrrp"
)

// vrrpOnly is a data plane that runs VRRP (the native driver) for the HA
// routers of its desired state on the node's ready-made ha- device, and
// nothing else.
type vrrpOnly struct {
	drv      *dataplane.NativeDriver
	ns, dev  string
	haAddr   netip.Prefix
	routerID string // the one router, once applied
}

func (v *vrrpOnly) Start(ctx context.Context, report agent.ReportFunc) error {
	return v.drv.Start(ctx, func(id, st, reason string) {
		report(agent.Transition{RouterID: id, State: st, Reason: reason})
	})
}

func (v *vrrpOnly) Apply(ctx context.Context, st agentapi.DesiredState) error {
	for _, r := range st.Routers {
		if !r.HA || r.VRID == 0 {
			continue
		}
		err := v.drv.Ensure(ctx, dataplane.HARouter{RouterID: r.ID, Namespace: v.ns, VRID: r.VRID, BindingIndex: r.BindingIndex,
			HADevice: v.dev, HAAddress: v.haAddr, VIP: dataplane.VIPFor(r.VRID)})
		if err != nil {
			return err
		}
	}
	return nil
}

// histNode is a network node: its namespace, ha- device and bridge port,
// and its running agent.
type histNode struct {
	host, ns, dev, port string
	addr                netip.Prefix
	dp                  *vrrpOnly
	cancel              context.CancelFunc
	done                chan error
}

// histCloud is the server, the bridge namespace and the nodes.
type histCloud struct {
	t     *testing.T
	srv   *servertest.Instance
	sw    string
	nodes []*histNode
}

func newHistCloud(t *testing.T) *histCloud {
	kerneltest.Require(t, "ip")
	c := &histCloud{t: t, srv: servertest.Start(t, servertest.Options{})}
	c.sw = kerneltest.Namespace(t)
	kerneltest.Run(t, "ip", "-n", c.sw, "link", "add", "br0", "type", "bridge")
	kerneltest.Run(t, "ip", "-n", c.sw, "link", "set", "br0", "up")
	for i, host := range []string{"net1", "net2"} {
		n := &histNode{host: host, ns: kerneltest.Namespace(t), addr: netip.PrefixFrom(netip.AddrFrom4([4]byte{169, 254, 192, byte(10 + i)}), 18)}
		n.dev = "ha-" + kerneltest.RandHex(4) + "-0"
		n.port = "hp" + kerneltest.RandHex(4)
		kerneltest.Run(t, "ip", "-n", n.ns, "link", "add", n.dev, "type", "veth", "peer", "name", n.port, "netns", c.sw)
		kerneltest.Run(t, "ip", "-n", n.ns, "addr", "add", n.addr.String(), "dev", n.dev)
		kerneltest.Run(t, "ip", "-n", n.ns, "link", "set", n.dev, "up")
		kerneltest.Run(t, "ip", "-n", c.sw, "link", "set", n.port, "master", "br0", "up")
		c.nodes = append(c.nodes, n)
	}
	return c
}

// start runs the node's agent with a fresh native driver.
func (c *histCloud) start(n *histNode) {
	c.t.Helper()
	drv, err := dataplane.NewNativeDriver(dataplane.NativeOptions{Version: 3, AdvertInt: 100 * time.Millisecond, GARPDelay: -1,
		Logger: servertest.Logger(c.t).With("node", n.host)})
	if err != nil {
		c.t.Fatal(err)
	}
	n.dp = &vrrpOnly{drv: drv, ns: n.ns, dev: n.dev, haAddr: n.addr}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel, n.done = cancel, make(chan error, 1)
	cfg := agent.Config{
		Host: n.host, Servers: []string{c.srv.URL}, AgentToken: servertest.AgentTokenOf(n.host), LocalIP: n.addr.Addr().String(),
		ReportBatchDelay: 20 * time.Millisecond, PollWait: 5 * time.Second, ReassertInterval: time.Second,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second,
	}
	go func() { n.done <- agent.Run(ctx, cfg, n.dp, servertest.Logger(c.t).With("agent", n.host)) }()
	c.t.Cleanup(func() { c.stop(n, false) })
}

// stop ends the node's agent as `l3ha agent` ends: the loops first, then
// the data plane, its masters resigning or not. Idempotent.
func (c *histCloud) stop(n *histNode, resign bool) {
	if n.cancel == nil {
		return
	}
	n.cancel()
	if err := <-n.done; err != nil {
		c.t.Errorf("agent %s: %v", n.host, err)
	}
	n.cancel = nil
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := n.dp.drv.Stop(ctx, resign); err != nil {
		c.t.Errorf("stopping %s's VRRP: %v", n.host, err)
	}
}

// kill ends the node's agent as a dead node's: no report leaves, VRRP
// stays as it was until the data plane is stopped without a word.
func (c *histCloud) kill(n *histNode) {
	n.cancel()
	<-n.done
}

// attach puts the node's port in the bridge (on) or takes it out, links
// up: the node is on the HA network or cut from it.
func (c *histCloud) attach(n *histNode, on bool) {
	c.t.Helper()
	if on {
		kerneltest.Run(c.t, "ip", "-n", c.sw, "link", "set", n.port, "master", "br0")
	} else {
		kerneltest.Run(c.t, "ip", "-n", c.sw, "link", "set", n.port, "nomaster")
	}
}

func (c *histCloud) api(method, path string, body, out any) error {
	return servertest.Call(c.srv.URL, method, path, body, out)
}

// history is the router's ha_transitions as "host from→to reason".
func (c *histCloud) history(routerID string) ([]string, error) {
	var out struct {
		HATransitions []struct{ Host, From, To, Reason string } `json:"ha_transitions"`
	}
	if err := c.api("GET", "/v2.0/routers/"+routerID+"/ha_transitions", nil, &out); err != nil {
		return nil, err
	}
	var rows []string
	for _, r := range out.HATransitions {
		rows = append(rows, fmt.Sprintf("%s %s→%s %s", r.Host, r.From, r.To, r.Reason))
	}
	return rows, nil
}

// waitHistory waits until the history is want.
func (c *histCloud) waitHistory(what, routerID string, want []string) {
	c.t.Helper()
	var got []string
	deadline := time.Now().Add(30 * time.Second)
	for {
		var err error
		got, err = c.history(routerID)
		if err == nil && slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: history\n%q\nwant\n%q (%v)", what, got, want, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitHeard waits until n's VRRP is backup and has heard master's adverts.
func (c *histCloud) waitHeard(n, master *histNode, routerID string) {
	c.t.Helper()
	servertest.Eventually(c.t, 30*time.Second, func() error {
		st, ok := n.dp.drv.Engine().Status(routerID)
		if !ok || st.Machine.State != vrrp.Backup || st.Machine.Master != master.addr.Addr() {
			return fmt.Errorf("%s: running %v, %v, master %v; want backup of %v", n.host, ok, st.Machine.State, st.Machine.Master, master.addr.Addr())
		}
		return nil
	})
}

// TestKernelHistoryOfFaults: a router's history after a node fault (the
// backup takes over: peer_lost, the old master given up as lost), a
// graceful agent stop (peer_resigned) and a partition of the HA network
// (the cut backup takes over: peer_lost; the master it did not hear keeps
// claiming the router: split_brain; the heal leaves one master: the other
// yields, split_brain). Restarted nodes come back as backups and add
// nothing.
func TestKernelHistoryOfFaults(t *testing.T) {
	c := newHistCloud(t)
	for _, n := range c.nodes {
		c.start(n)
	}
	var created struct{ Router struct{ ID string } }
	servertest.Eventually(t, 15*time.Second, func() error {
		return c.api("POST", "/v2.0/routers", map[string]any{"router": map[string]any{"name": "r", "ha": true}}, &created)
	})
	id := created.Router.ID
	var rows []string
	servertest.Eventually(t, 30*time.Second, func() error {
		var err error
		if rows, err = c.history(id); err != nil || len(rows) != 1 {
			return fmt.Errorf("history %q (%v), want the first election", rows, err)
		}
		return nil
	})
	m, b := c.nodes[0], c.nodes[1]
	if want := m.host + " standby→active startup"; rows[0] != want {
		m, b = b, m
		if want := m.host + " standby→active startup"; rows[0] != want {
			t.Fatalf("first election %q, want a master at startup", rows[0])
		}
	}
	want := rows
	c.waitHeard(b, m, id)

	// Node fault: the master is cut from the HA network and its agent dies.
	c.attach(m, false)
	c.kill(m)
	want = append(want, b.host+" standby→active peer_lost", m.host+" active→standby peer_lost")
	c.waitHistory("node fault", id, want)
	// It reboots: nothing of the router is left, it comes back a backup.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := m.dp.drv.Stop(ctx, false); err != nil {
		t.Fatal(err)
	}
	m.cancel = nil
	kerneltest.Run(t, "ip", "-n", m.ns, "addr", "flush", "dev", m.dev)
	kerneltest.Run(t, "ip", "-n", m.ns, "addr", "add", m.addr.String(), "dev", m.dev)
	c.attach(m, true)
	c.start(m)
	c.waitHeard(m, b, id)

	// Graceful agent stop of the new master: it resigns.
	m, b = b, m
	c.stop(m, true)
	want = append(want, b.host+" standby→active peer_resigned", m.host+" active→standby peer_resigned")
	c.waitHistory("agent stop", id, want)
	c.start(m)
	c.waitHeard(m, b, id)

	// Partition: the backup is cut from the HA network, links up.
	m, b = b, m
	c.attach(b, false)
	want = append(want, b.host+" standby→active peer_lost", m.host+" active→standby peer_lost", m.host+" standby→active split_brain")
	c.waitHistory("partition", id, want)
	c.attach(b, true)
	// Equal priorities: the higher HA address stays master (RFC 5798
	// §6.4.3), the other yields.
	loser := c.nodes[0]
	want = append(want, loser.host+" active→standby split_brain")
	c.waitHistory("heal", id, want)
	t.Logf("history of router %s:\n%q", id, want)
}
