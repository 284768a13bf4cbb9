package dataplane

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/agentapi"
)

const (
	routerA = "11111111-1111-1111-1111-111111111111"
	routerB = "22222222-2222-2222-2222-222222222222"
	haNet   = "aaaaaaaa-0000-0000-0000-000000000000"
	tenNet  = "bbbbbbbb-0000-0000-0000-000000000000"
	extNet  = "cccccccc-0000-0000-0000-000000000000"
)

func port(id, net, owner, mac, ip, cidr, gw string) agentapi.PortSpec {
	return agentapi.PortSpec{ID: id, NetworkID: net, DeviceOwner: owner, MACAddress: mac, MTU: 1450,
		FixedIPs: []agentapi.FixedIPSpec{{SubnetID: "s", IPAddress: ip, CIDR: cidr, GatewayIP: gw}}}
}

func haRouter(id string) agentapi.RouterSpec {
	return agentapi.RouterSpec{
		ID: id, AdminStateUp: true, HA: true, VRID: 7, EnableSNAT: true,
		HAPort:      ptr(port(id[:8]+"-aaaa-aaaa-aaaa-000000000001", haNet, ownerHA, "fa:16:3e:00:00:01", "169.254.192.5", "169.254.192.0/18", "")),
		Interfaces:  []agentapi.PortSpec{port(id[:8]+"-aaaa-aaaa-aaaa-000000000002", tenNet, ownerReplicated, "fa:16:3e:00:00:02", "10.10.30.1", "10.10.30.0/24", "10.10.30.1")},
		Gateway:     ptr(port(id[:8]+"-aaaa-aaaa-aaaa-000000000003", extNet, ownerGateway, "fa:16:3e:00:00:03", "172.24.4.100", "172.24.4.0/24", "172.24.4.1")),
		FloatingIPs: []agentapi.FloatingIPSpec{{FloatingIPAddress: "172.24.4.150", FixedIPAddress: "10.10.30.5"}},
		Routes:      []agentapi.Route{{Destination: "192.168.0.0/16", NextHop: "10.10.30.254"}},
	}
}

func ptr[T any](v T) *T { return &v }

func desired(routers ...agentapi.RouterSpec) agentapi.DesiredState {
	return agentapi.DesiredState{
		Routers: routers,
		Networks: []agentapi.NetworkSpec{
			{ID: haNet, NetworkType: "vxlan", SegmentationID: 100, MTU: 1450, Peers: []string{"10.99.0.3", "10.99.0.2"}},
			{ID: tenNet, NetworkType: "vxlan", SegmentationID: 200, MTU: 1450},
			{ID: extNet, NetworkType: "flat", PhysicalNetwork: "public", MTU: 1500},
		},
	}
}

var opts = PlanOptions{Suffix: "-net1", LocalIP: netip.MustParseAddr("10.99.0.2"), Mappings: map[string]string{"public": "ext0"}}

func TestPlanHARouterPutsRouterAddressesUnderVRRPOnly(t *testing.T) {
	p := MakePlan(desired(haRouter(routerA)), opts)
	if len(p.Skipped) != 0 || len(p.Routers) != 1 {
		t.Fatalf("skipped %v, routers %d", p.Skipped, len(p.Routers))
	}
	r := p.Routers[0]
	if r.Namespace != "qrouter-"+routerA+"-net1" {
		t.Errorf("namespace %q", r.Namespace)
	}
	if r.HA == nil || r.HA.VIP.String() != "169.254.0.7/24" || r.HA.HADevice != "ha-11111111-aa" || r.HA.HAAddress.String() != "169.254.192.5/18" {
		t.Fatalf("HA %+v", r.HA)
	}
	var got []string
	for _, a := range r.HA.Excluded {
		got = append(got, a.Dev+" "+a.Prefix.String())
	}
	want := "qr-11111111-aa 10.10.30.1/24,qg-11111111-aa 172.24.4.100/24,qg-11111111-aa 172.24.4.150/32"
	if strings.Join(got, ",") != want {
		t.Errorf("excluded %v, want %s", got, want)
	}
	if len(r.HA.Routes) != 2 || r.HA.Routes[0].Dst.String() != "0.0.0.0/0" || r.HA.Routes[0].Gateway.String() != "172.24.4.1" {
		t.Errorf("routes %+v", r.HA.Routes)
	}
	if r.NAT.GatewayDev != "qg-11111111-aa" || r.NAT.SNATAddress.String() != "172.24.4.100" || len(r.NAT.FloatingIPs) != 1 {
		t.Errorf("NAT %+v", r.NAT)
	}
	if len(p.Networks) != 3 {
		t.Fatalf("networks %+v", p.Networks)
	}
	for _, n := range p.Networks {
		if n.ID == haNet && (len(n.Peers) != 1 || n.Peers[0].String() != "10.99.0.3") {
			t.Errorf("HA network peers %v: the node itself must be left out", n.Peers)
		}
		if n.ID == extNet && n.Physical != "ext0" {
			t.Errorf("flat network on %q", n.Physical)
		}
	}
}

func TestPlanSkipsOnlyTheRouterWithBadData(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*agentapi.RouterSpec)
		reason string
	}{
		{"unknown device owner", func(r *agentapi.RouterSpec) { r.Interfaces[0].DeviceOwner = "compute:nova" }, "unknown device owner"},
		{"malformed MAC", func(r *agentapi.RouterSpec) { r.Gateway.MACAddress = "zz:zz" }, "malformed MAC"},
		{"malformed address", func(r *agentapi.RouterSpec) { r.Interfaces[0].FixedIPs[0].IPAddress = "10.10.30.300" }, "malformed address"},
		{"address outside subnet", func(r *agentapi.RouterSpec) { r.Interfaces[0].FixedIPs[0].CIDR = "10.20.0.0/24" }, "not inside"},
		{"overlapping subnets", func(r *agentapi.RouterSpec) {
			second := r.Interfaces[0]
			second.ID = "11111111-aaaa-aaaa-aaaa-000000000009"
			second.FixedIPs = []agentapi.FixedIPSpec{{IPAddress: "10.10.30.129", CIDR: "10.10.30.128/25"}}
			r.Interfaces = append(r.Interfaces, second)
		}, "overlap"},
		{"HA without VRID", func(r *agentapi.RouterSpec) { r.VRID = 0 }, "VRID"},
		{"HA without HA port", func(r *agentapi.RouterSpec) { r.HAPort = nil }, "HA port"},
		{"port on a network not wired", func(r *agentapi.RouterSpec) { r.Interfaces[0].NetworkID = "dddddddd-0000-0000-0000-000000000000" }, "not wired"},
		{"malformed route", func(r *agentapi.RouterSpec) { r.Routes[0].NextHop = "x" }, "malformed route"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := haRouter(routerA)
			tt.mutate(&bad)
			p := MakePlan(desired(bad, haRouter(routerB)), opts)
			err := p.Skipped[routerA]
			if err == nil || !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("router A skipped with %v, want reason containing %q", err, tt.reason)
			}
			if len(p.Routers) != 1 || p.Routers[0].ID != routerB {
				t.Fatalf("router B not served: %+v", p.Routers)
			}
		})
	}
}

func TestPlanLeavesOutAdminDownRouters(t *testing.T) {
	r := haRouter(routerA)
	r.AdminStateUp = false
	if p := MakePlan(desired(r), opts); len(p.Routers) != 0 || len(p.Skipped) != 0 {
		t.Fatalf("admin-down router planned: %+v", p)
	}
}

func TestPlanSkipsVXLANWithoutLocalIPAndItsRouters(t *testing.T) {
	o := opts
	o.LocalIP = netip.Addr{}
	p := MakePlan(desired(haRouter(routerA)), o)
	if len(p.SkippedNetworks) != 2 || p.Skipped[routerA] == nil {
		t.Fatalf("skipped networks %v, routers %v", p.SkippedNetworks, p.Skipped)
	}
}

func TestRouterNamespaceOwnershipHonoursSuffix(t *testing.T) {
	tests := []struct {
		ns, suffix string
		ours       bool
	}{
		{"qrouter-" + routerA + "-net1", "-net1", true},
		{"qrouter-" + routerA + "-net2", "-net1", false},
		{"qrouter-" + routerA, "", true},
		{"qrouter-" + routerA + "-net1", "", false},
		{"qrouter-garbage", "", false},
	}
	for _, tt := range tests {
		if _, ours := isRouterNamespace(tt.ns, tt.suffix); ours != tt.ours {
			t.Errorf("isRouterNamespace(%q, %q) = %v", tt.ns, tt.suffix, ours)
		}
	}
}

func TestStartDelayLetsTheFirstBindingWinTheFirstElection(t *testing.T) {
	tests := []struct {
		index  int
		advert time.Duration
		want   time.Duration
	}{
		{1, 2 * time.Second, 0},
		{0, 2 * time.Second, 0},
		{2, 2 * time.Second, 9 * time.Second},
		{3, 2 * time.Second, 18 * time.Second},
		{2, 200 * time.Millisecond, 1800 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := StartDelay(tt.index, tt.advert); got != tt.want {
			t.Errorf("StartDelay(%d, %s) = %s, want %s", tt.index, tt.advert, got, tt.want)
		}
		// Binding 1 must be master before the next binding may elect
		// itself: its Master_Down_Interval is at most 3 adverts + 1 skew.
		if tt.index >= 2 && StartDelay(tt.index, tt.advert)-StartDelay(tt.index-1, tt.advert) <= 4*tt.advert {
			t.Errorf("binding %d starts too soon after binding %d", tt.index, tt.index-1)
		}
	}
	p := MakePlan(desired(func() agentapi.RouterSpec { r := haRouter(routerA); r.BindingIndex = 2; return r }()), opts)
	if p.Routers[0].HA.BindingIndex != 2 {
		t.Fatalf("binding index not planned: %+v", p.Routers[0].HA)
	}
}

// The addresses whose gratuitous ARP the node keeps from its other routers:
// every HA router's VIP and excluded IPv4 addresses, once each; legacy
// routers announce nothing.
func TestPlanAnnouncedListsHARouterAddressesOnce(t *testing.T) {
	a, b := haRouter(routerA), haRouter(routerB)
	b.VRID = 8
	b.Gateway.FixedIPs[0].IPAddress = "172.24.4.101"
	b.FloatingIPs = append(b.FloatingIPs, agentapi.FloatingIPSpec{FloatingIPAddress: "172.24.4.150", FixedIPAddress: "10.10.30.6"}) // also A's: once
	legacy := haRouter("33333333-3333-3333-3333-333333333333")
	legacy.HA, legacy.HAPort = false, nil
	legacy.Gateway.FixedIPs[0].IPAddress = "172.24.4.200"
	legacy.FloatingIPs = nil
	p := MakePlan(desired(a, b, legacy), opts)
	if len(p.Skipped) != 0 {
		t.Fatalf("skipped %v", p.Skipped)
	}
	var got []string
	for _, ip := range p.Announced() {
		got = append(got, ip.String())
	}
	want := "10.10.30.1 169.254.0.7 169.254.0.8 172.24.4.100 172.24.4.101 172.24.4.150"
	if strings.Join(got, " ") != want {
		t.Errorf("announced %v, want %s", got, want)
	}
}

// The ports the node keeps other addresses' ARP requests from: the taps of
// every HA router's qg- and qr- ports, once each; not the HA network's
// ports, not a legacy router's.
func TestPlanRouterPortsListsHARouterGatewayAndInterfaceTaps(t *testing.T) {
	// withPortIDs gives r's ports ids that differ in their first 11
	// characters (as Neutron's random ones do), so that each has its own
	// tap: <x>1… for the HA port, <x>2… for the interface, <x>3… for the
	// gateway.
	withPortIDs := func(r agentapi.RouterSpec, x string) agentapi.RouterSpec {
		id := func(n int) string { return fmt.Sprintf("%s%d000000-0000-0000-0000-000000000000", x, n) }
		if r.HAPort != nil {
			r.HAPort = ptr(*r.HAPort)
			r.HAPort.ID = id(1)
		}
		r.Interfaces = slices.Clone(r.Interfaces)
		r.Interfaces[0].ID = id(2)
		if r.Gateway != nil {
			r.Gateway = ptr(*r.Gateway)
			r.Gateway.ID = id(3)
		}
		return r
	}
	a := withPortIDs(haRouter(routerA), "a")
	b := haRouter(routerB)
	b.VRID = 8
	b.Gateway.FixedIPs[0].IPAddress = "172.24.4.101"
	b = withPortIDs(b, "b")
	b.Interfaces = append(b.Interfaces, port("b4000000-0000-0000-0000-000000000000", tenNet, ownerInterface, "fa:16:3e:00:00:04", "10.10.40.1", "10.10.40.0/24", "10.10.40.1"))
	legacy := haRouter("33333333-3333-3333-3333-333333333333")
	legacy.HA, legacy.HAPort = false, nil
	legacy.Gateway.FixedIPs[0].IPAddress = "172.24.4.200"
	legacy.FloatingIPs = nil
	legacy = withPortIDs(legacy, "c")
	noGateway := haRouter("44444444-4444-4444-4444-444444444444")
	noGateway.VRID = 9
	noGateway.Gateway, noGateway.FloatingIPs = nil, nil
	noGateway = withPortIDs(noGateway, "d")
	tests := []struct {
		name    string
		routers []agentapi.RouterSpec
		want    []string
	}{
		{"no router", nil, nil},
		{"legacy router only", []agentapi.RouterSpec{legacy}, nil},
		{"one HA router: gateway and interface, not the HA port", []agentapi.RouterSpec{a}, []string{"tapa2000000-00", "tapa3000000-00"}},
		{
			"HA routers (one without gateway) and a legacy one, sorted",
			[]agentapi.RouterSpec{b, legacy, a, noGateway},
			[]string{"tapa2000000-00", "tapa3000000-00", "tapb2000000-00", "tapb3000000-00", "tapb4000000-00", "tapd2000000-00"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := MakePlan(desired(tt.routers...), opts)
			if len(p.Skipped) != 0 {
				t.Fatalf("skipped %v", p.Skipped)
			}
			if got := p.RouterPorts(); !slices.Equal(got, tt.want) {
				t.Errorf("RouterPorts = %v, want %v", got, tt.want)
			}
		})
	}
	t.Run("a tap shared by two ports is listed once", func(t *testing.T) {
		// haRouter's own port ids share their first 11 characters.
		p := MakePlan(desired(haRouter(routerA)), opts)
		if got := p.RouterPorts(); !slices.Equal(got, []string{"tap11111111-aa"}) {
			t.Errorf("RouterPorts = %v", got)
		}
	})
}

// Under Neutron the linuxbridge agent owns the bridges: the plan wires no
// network, leaves every tap unplugged (even of networks the state does not
// list), and carries a pending HA router's wait for its HA port.
func TestPlanWithExternalL2LeavesTheBridgesToTheL2Agent(t *testing.T) {
	pending := haRouter(routerB)
	pending.HAPending = true
	st := agentapi.DesiredState{Routers: []agentapi.RouterSpec{haRouter(routerA), pending}}
	o := opts
	o.ExternalL2 = true
	p := MakePlan(st, o)
	if len(p.Skipped) != 0 || len(p.Routers) != 2 || len(p.Networks) != 0 {
		t.Fatalf("skipped %v, routers %d, networks %d", p.Skipped, len(p.Routers), len(p.Networks))
	}
	for _, r := range p.Routers {
		if len(r.Ports) != 3 {
			t.Errorf("router %s: %d ports, want 3", r.ID, len(r.Ports))
		}
		for _, pp := range r.Ports {
			if pp.Bridge != "" || !strings.HasPrefix(pp.Tap, "tap") {
				t.Errorf("router %s port %s: bridge %q tap %q, want an unplugged tap", r.ID, pp.PortID, pp.Bridge, pp.Tap)
			}
		}
		if r.HAPending != (r.ID == routerB) {
			t.Errorf("router %s: HAPending %v", r.ID, r.HAPending)
		}
	}
	// Without ExternalL2 the same state without networks is unusable.
	if p := MakePlan(st, opts); len(p.Skipped) != 2 {
		t.Errorf("without ExternalL2: skipped %v, want both routers", p.Skipped)
	}
}
