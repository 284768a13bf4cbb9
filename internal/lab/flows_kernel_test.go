package lab

import (
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/l3ha/l3ha/internal/kerneltest"
	"github.com/l3ha/l3ha/internal/linux"
)

// Kernel tier: the flows through a router made by hand in three throwaway
// namespaces l3ha-flt-<random>-{vm,rt,up}:
//
//	vm  eth0 10.10.30.5/24, default via 10.10.30.1
//	rt  qr0 10.10.30.1/24; qg0 172.24.4.10/24 + 172.24.4.20/32 (the floating IP);
//	    ip_forward=1; linux.ApplyNAT: 10.10.30.0/24 SNAT to 172.24.4.10,
//	    172.24.4.20 <-> 10.10.30.5
//	up  eth0 172.24.4.1/24
//
// vm-eth0 and rt-qr0 are a veth pair, as are rt-qg0 and up-eth0.

type flowTopo struct{ vm, rt, up string }

const (
	flowTestInstance = "10.10.30.5"
	flowTestRouterQR = "10.10.30.1"
	flowTestRouterQG = "172.24.4.10"
	flowTestFloating = "172.24.4.20"
	flowTestUpstream = "172.24.4.1"
)

func newFlowTopo(t *testing.T) flowTopo {
	t.Helper()
	kerneltest.Require(t)
	base := "l3ha-flt-" + kerneltest.RandHex(4)
	topo := flowTopo{vm: base + "-vm", rt: base + "-rt", up: base + "-up"}
	for _, ns := range []string{topo.vm, topo.rt, topo.up} {
		if err := linux.CreateNamespace(ns); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := linux.DeleteNamespace(ns); err != nil {
				t.Errorf("deleting namespace %s: %v", ns, err)
			}
		})
		disableIPv6(ns) // no DAD or MLD traffic on the veths
	}
	flowVeth(t, topo.vm, devInstance, topo.rt, "qr0")
	flowVeth(t, topo.rt, "qg0", topo.up, devUplink)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(upWithAddrs(topo.vm, devInstance, []string{flowTestInstance}, 24))
	must(upWithAddrs(topo.rt, "qr0", []string{flowTestRouterQR}, 24))
	must(upWithAddrs(topo.rt, "qg0", []string{flowTestRouterQG}, 24))
	must(linux.AddAddress(topo.rt, "qg0", netip.MustParsePrefix(flowTestFloating+"/32")))
	must(upWithAddrs(topo.up, devUplink, []string{flowTestUpstream}, 24))
	must(withHandle(topo.vm, func(h *netlink.Handle) error {
		return h.RouteAdd(&netlink.Route{Dst: &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}, Gw: net.ParseIP(flowTestRouterQR)})
	}))
	must(linux.SetSysctls(topo.rt, map[string]string{"net.ipv4.ip_forward": "1"}))
	if err := linux.ApplyNAT(topo.rt, linux.NAT{
		GatewayDev:       "qg0",
		SNATAddress:      netip.MustParseAddr(flowTestRouterQG),
		EnableSNAT:       true,
		InternalPrefixes: []netip.Prefix{netip.MustParsePrefix(TenantCIDR)},
		FloatingIPs: []linux.FloatingIP{{
			Floating: netip.MustParseAddr(flowTestFloating),
			Fixed:    netip.MustParseAddr(flowTestInstance),
		}},
	}); err != nil {
		kerneltest.Skip(t, "kernel tier: nftables NAT not available: "+err.Error())
	}
	// The kernel activates a device that got its carrier from a work queue
	// run at most once a second (linkwatch); until then it drops every
	// packet, and the flows' first SYN would wait for its retransmission.
	for _, d := range [][2]string{{topo.vm, devInstance}, {topo.rt, "qr0"}, {topo.rt, "qg0"}, {topo.up, devUplink}} {
		waitOperUp(t, d[0], d[1])
	}
	return topo
}

func waitOperUp(t *testing.T, ns, dev string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var state netlink.LinkOperState
		if err := withHandle(ns, func(h *netlink.Handle) error {
			l, err := h.LinkByName(dev)
			if err == nil {
				state = l.Attrs().OperState
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if state == netlink.OperUp {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s: operstate %v, not up after 5s", ns, dev, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// flowVeth creates a veth pair: name in ns, peerName in peerNS (created
// there directly).
func flowVeth(t *testing.T, ns, name, peerNS, peerName string) {
	t.Helper()
	peer, err := openNS(peerNS)
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	if err := withHandle(ns, func(h *netlink.Handle) error {
		return h.LinkAdd(&netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: name},
			PeerName:      peerName,
			PeerNamespace: netlink.NsFd(int(peer)),
		})
	}); err != nil {
		t.Fatal(err)
	}
}

// startTestFlows starts the flows across topo with 200 tcp-many connections
// and stops them when the test ends, if it did not.
func startTestFlows(t *testing.T, topo flowTopo) *Flows {
	t.Helper()
	t0 := time.Now()
	f, err := StartFlows(t.Context(), FlowOptions{
		InstanceNS: topo.vm, UpstreamNS: topo.up,
		InstanceIP: flowTestInstance, UpstreamIP: flowTestUpstream, FloatingIP: flowTestFloating,
		Many: 200,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("flows flowing after %v", time.Since(t0).Round(time.Millisecond))
	t.Cleanup(func() { f.Stop(context.Background()) })
	return f
}

// stopTestFlows stops f, checks Stop's bound and shape, and logs the results.
func stopTestFlows(t *testing.T, f *Flows) map[string]FlowResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	t0 := time.Now()
	res := f.Stop(ctx)
	took := time.Since(t0)
	if took > 10*time.Second {
		t.Errorf("Stop took %v, want ≤ 10s", took)
	}
	b, _ := json.MarshalIndent(res, "", "  ")
	t.Logf("Stop took %v:\n%s", took.Round(time.Millisecond), b)
	if len(res) != len(FlowKinds) {
		t.Fatalf("%d results, want %d", len(res), len(FlowKinds))
	}
	byKind := map[string]FlowResult{}
	for i, r := range res {
		if r.Kind != FlowKinds[i] {
			t.Errorf("result %d is %q, want %q", i, r.Kind, FlowKinds[i])
		}
		byKind[r.Kind] = r
	}
	return byKind
}

func TestFlowsAllSurviveWithoutAFault(t *testing.T) {
	topo := newFlowTopo(t)
	f := startTestFlows(t, topo)
	time.Sleep(2 * time.Second)
	for _, r := range stopTestFlows(t, f) {
		if !r.Survived || r.Reset || r.OutOfOrder != 0 || r.Lost != 0 || r.Broken != 0 || r.SourcePortChanged {
			t.Errorf("%s did not survive a run without a fault: %+v", r.Kind, r)
		}
		if r.Messages == 0 {
			t.Errorf("%s: no messages", r.Kind)
		}
	}
}

func TestFlowsSeeABrokenPath(t *testing.T) {
	topo := newFlowTopo(t)
	f := startTestFlows(t, topo)
	time.Sleep(500 * time.Millisecond)
	if err := setLink(topo.rt, "qg0", false); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	res := stopTestFlows(t, f)
	for _, k := range []string{"tcp-client", "tcp-push", "tcp-fip", "udp", "tcp-idle"} {
		if res[k].Survived {
			t.Errorf("%s survived 2 s without a path to the upstream: %+v", k, res[k])
		}
	}
	// tcp-many has been silent for less than its stall limit (3 s), so it
	// may count as alive; its result is only logged.
}

func TestFlowsSeeAReset(t *testing.T) {
	kerneltest.Require(t, "ss")
	topo := newFlowTopo(t)
	f := startTestFlows(t, topo)
	// Destroy the upstream's end of tcp-client (ss -K: SOCK_DESTROY): the
	// kernel aborts it and sends the instance a RST.
	filter := "( sport = :" + strconv.Itoa(47000+portClient) + " )"
	if out, err := runIn(t.Context(), topo.up, "ss", "-K", "-t", "state", "established", filter); err != nil {
		t.Fatalf("ss -K: %v\n%s", err, out)
	}
	out, err := runIn(t.Context(), topo.up, "ss", "-H", "-t", "state", "established", filter)
	if err != nil {
		t.Fatalf("ss: %v\n%s", err, out)
	}
	if strings.TrimSpace(string(out)) != "" {
		kerneltest.Skip(t, "kernel tier: ss -K destroyed nothing (no CONFIG_INET_DIAG_DESTROY)")
	}
	time.Sleep(1500 * time.Millisecond)
	res := stopTestFlows(t, f)
	if r := res["tcp-client"]; r.Survived || !r.Reset || r.Detail == "" {
		t.Errorf("tcp-client after its connection was destroyed: %+v", r)
	}
	for _, k := range FlowKinds[1:] {
		if r := res[k]; !r.Survived || r.Reset {
			t.Errorf("%s did not survive another flow's reset: %+v", k, r)
		}
	}
}
