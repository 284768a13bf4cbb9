package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/l3ha/l3ha/internal/agentapi"
	"github.com/l3ha/l3ha/internal/linux"
)

// Device owners as the server sends them.
const (
	ownerHA         = "network:router_ha_interface"
	ownerInterface  = "network:router_interface"
	ownerReplicated = "network:ha_router_replicated_interface"
	ownerGateway    = "network:router_gateway"
)

// DevAddr is an address on a router device.
type DevAddr struct {
	Dev    string
	Prefix netip.Prefix
}

// DevRoute is a route in a router namespace.
type DevRoute struct {
	Dst     netip.Prefix
	Gateway netip.Addr
	Dev     string
}

// PortPlan is one router device: a veth whose router end is Dev.
type PortPlan struct {
	PortID    string
	NetworkID string
	Dev       string // qr-/qg-/ha- name in the router namespace
	Tap       string // node-side end
	Bridge    string // network bridge on the node
	MAC       net.HardwareAddr
	MTU       int
	Addrs     []netip.Prefix
}

// HARouter is what an HA driver needs to run VRRP for one router. Only the
// VRRP master holds VIP, Excluded and Routes (Neutron's keepalived shape).
type HARouter struct {
	RouterID  string
	Namespace string
	VRID      int
	// BindingIndex is this node's binding of the router (1..N): the
	// scheduler spreads index 1 over agents, and StartDelay makes it the
	// first master.
	BindingIndex int
	HADevice     string
	HAAddress    netip.Prefix // this node's HA port address
	VIP          netip.Prefix // 169.254.0.<vrid>/24 on HADevice
	Excluded     []DevAddr    // gateway, interface and floating IP addresses
	Routes       []DevRoute   // default route via the gateway, extra routes
	// Switchover, while an operator moves the router's master, says which
	// request it is and whether this node is its target; nil otherwise.
	// It is not part of the router's VRRP configuration.
	Switchover *Switchover
}

// Switchover is an operator's switchover of a router as a node sees it.
type Switchover struct {
	ID   string // the request (agentapi.SwitchoverSpec.ID)
	Here bool   // this node must become the master
}

// RouterPlan is the kernel state of one router on this node.
type RouterPlan struct {
	ID        string
	Namespace string
	HA        *HARouter // nil for legacy routers
	Ports     []PortPlan
	// Addrs and Routes are set directly by the data plane for legacy
	// routers; for HA routers the driver's VRRP master sets them.
	Addrs  []DevAddr
	Routes []DevRoute
	NAT    linux.NAT
	// HAPending: wire the router but do not start its VRRP yet
	// (agentapi.RouterSpec.HAPending).
	HAPending bool
}

// NetworkPlan is the L2 wiring of one network on this node.
type NetworkPlan struct {
	ID       string
	Bridge   string
	MTU      int
	VXLAN    *linux.VXLAN // nil for flat networks
	Peers    []netip.Addr
	Physical string // flat: mapped interface
}

// Plan is the whole node.
type Plan struct {
	Networks []NetworkPlan
	Routers  []RouterPlan
	// Skipped are routers whose desired state could not be used, with why.
	Skipped map[string]error
	// SkippedNetworks likewise for networks.
	SkippedNetworks map[string]error
}

// Announced lists the IPv4 addresses the node's HA routers announce with
// gratuitous ARP when they become master (each router's VIP and its
// excluded addresses), sorted and without duplicates: the node keeps those
// announcements from its other routers' ports (linux.SyncAnnouncementFilter).
func (p Plan) Announced() []netip.Addr {
	var out []netip.Addr
	for _, r := range p.Routers {
		if r.HA == nil {
			continue
		}
		out = append(out, r.HA.VIP.Addr())
		for _, a := range r.HA.Excluded {
			out = append(out, a.Prefix.Addr())
		}
	}
	out = slices.DeleteFunc(out, func(a netip.Addr) bool { return !a.Is4() })
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// RouterPorts lists the node-side ends (Tap) of the HA routers' gateway
// (qg-) and interface (qr-) ports, sorted and without duplicates: the node
// keeps from them the ARP requests for addresses that are not its HA
// routers' (linux.SyncAnnouncementFilter), which they would only drop. HA
// network (ha-) ports are left out, so is every port of a legacy router.
func (p Plan) RouterPorts() []string {
	var out []string
	for _, r := range p.Routers {
		if r.HA == nil {
			continue
		}
		for _, pp := range r.Ports {
			if strings.HasPrefix(pp.Dev, linux.PrefixGateway) || strings.HasPrefix(pp.Dev, linux.PrefixInternal) {
				out = append(out, pp.Tap)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// PlanOptions are the node facts planning needs.
type PlanOptions struct {
	Suffix   string            // router namespace suffix
	LocalIP  netip.Addr        // VXLAN underlay address
	Mappings map[string]string // physnet → interface
	// ExternalL2: another agent wires the networks (Neutron's
	// neutron-linuxbridge-agent plugs the tap ends into its brq bridges):
	// the plan has no networks, and router ports are veths whose node end
	// is left unplugged.
	ExternalL2 bool
}

// StartDelay is how long the VRRP instance of a router's binding waits
// before it may elect itself: nothing for binding 1, and for each later
// binding one more Master_Down_Interval (3 adverts plus at most one of skew)
// and a second of margin for agents that wire at different times. All
// priorities are equal (Neutron's 50) and nopreempt holds, so the first
// master keeps the router; this makes the first master the binding the
// scheduler chose to spread masters over agents (LP#1365429), instead of
// whichever agent happened to wire the router first. A master found running
// (agent restart) is adopted without delay.
func StartDelay(bindingIndex int, advert time.Duration) time.Duration {
	if bindingIndex <= 1 {
		return 0
	}
	return time.Duration(bindingIndex-1) * (4*advert + time.Second)
}

// VIPFor is the VRRP address of a VRID on the ha- device, as Neutron
// chooses it: 169.254.0.<vrid>/24.
func VIPFor(vrid int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{169, 254, 0, byte(vrid)}), 24)
}

// MakePlan turns a desired state into kernel objects. It is pure: invalid
// data for one router (or network) skips that router and is reported in
// Skipped, so the others are still served.
func MakePlan(st agentapi.DesiredState, o PlanOptions) Plan {
	p := Plan{Skipped: map[string]error{}, SkippedNetworks: map[string]error{}}
	bridges := map[string]string{}
	if o.ExternalL2 {
		bridges = nil // every port's node end stays unplugged (planPort)
	}
	for _, n := range st.Networks {
		if o.ExternalL2 {
			break
		}
		np, err := planNetwork(n, o)
		if err != nil {
			p.SkippedNetworks[n.ID] = err
			continue
		}
		bridges[n.ID] = np.Bridge
		p.Networks = append(p.Networks, np)
	}
	for _, r := range st.Routers {
		if !r.AdminStateUp {
			continue // an admin-down router is not run (Neutron removes it from the agent)
		}
		rp, err := planRouter(r, o, bridges)
		if err != nil {
			p.Skipped[r.ID] = err
			continue
		}
		if rp.HA != nil && r.Switchover != nil {
			rp.HA.Switchover = &Switchover{ID: r.Switchover.ID, Here: r.Switchover.Host == st.Host}
		}
		p.Routers = append(p.Routers, rp)
	}
	sort.Slice(p.Networks, func(i, j int) bool { return p.Networks[i].ID < p.Networks[j].ID })
	sort.Slice(p.Routers, func(i, j int) bool { return p.Routers[i].ID < p.Routers[j].ID })
	return p
}

func planNetwork(n agentapi.NetworkSpec, o PlanOptions) (NetworkPlan, error) {
	if err := validID(n.ID); err != nil {
		return NetworkPlan{}, err
	}
	np := NetworkPlan{ID: n.ID, Bridge: linux.BridgeName(n.ID), MTU: n.MTU}
	switch n.NetworkType {
	case "vxlan":
		if n.SegmentationID < 1 || n.SegmentationID > 16777215 {
			return np, fmt.Errorf("network %s: VXLAN id %d out of range", n.ID, n.SegmentationID)
		}
		if !o.LocalIP.IsValid() {
			return np, fmt.Errorf("network %s is VXLAN but the agent has no --local-ip", n.ID)
		}
		np.VXLAN = &linux.VXLAN{Name: linux.VXLANName(n.SegmentationID), VNI: n.SegmentationID, Local: o.LocalIP, MTU: n.MTU, Bridge: np.Bridge}
		for _, s := range n.Peers {
			a, err := netip.ParseAddr(s)
			if err != nil || !a.Is4() {
				return np, fmt.Errorf("network %s: bad peer address %q", n.ID, s)
			}
			if a != o.LocalIP {
				np.Peers = append(np.Peers, a)
			}
		}
	case "flat":
		iface, ok := o.Mappings[n.PhysicalNetwork]
		if !ok {
			return np, fmt.Errorf("network %s: physical network %q has no interface mapping on this node", n.ID, n.PhysicalNetwork)
		}
		np.Physical = iface
	default:
		return np, fmt.Errorf("network %s: unsupported network type %q", n.ID, n.NetworkType)
	}
	return np, nil
}

func validID(id string) error {
	if _, err := uuid.Parse(id); err != nil || len(id) != 36 {
		return fmt.Errorf("malformed id %q", id)
	}
	return nil
}

func planPort(ps agentapi.PortSpec, prefix string, bridges map[string]string) (PortPlan, error) {
	if err := validID(ps.ID); err != nil {
		return PortPlan{}, fmt.Errorf("port: %w", err)
	}
	br, ok := bridges[ps.NetworkID]
	if !ok && bridges != nil {
		return PortPlan{}, fmt.Errorf("port %s: its network %s is not wired on this node", ps.ID, ps.NetworkID)
	}
	mac, err := net.ParseMAC(ps.MACAddress)
	if err != nil || len(mac) != 6 {
		return PortPlan{}, fmt.Errorf("port %s: malformed MAC %q", ps.ID, ps.MACAddress)
	}
	pp := PortPlan{PortID: ps.ID, NetworkID: ps.NetworkID, Dev: linux.DeviceName(prefix, ps.ID), Tap: linux.NodeSideName(ps.ID), Bridge: br, MAC: mac, MTU: ps.MTU}
	for _, ip := range ps.FixedIPs {
		a, err := netip.ParseAddr(ip.IPAddress)
		if err != nil || !a.Is4() {
			return pp, fmt.Errorf("port %s: malformed address %q", ps.ID, ip.IPAddress)
		}
		c, err := netip.ParsePrefix(ip.CIDR)
		if err != nil || !c.Contains(a) {
			return pp, fmt.Errorf("port %s: address %s is not inside its subnet %q", ps.ID, ip.IPAddress, ip.CIDR)
		}
		pp.Addrs = append(pp.Addrs, netip.PrefixFrom(a, c.Bits()))
	}
	return pp, nil
}

func planRouter(r agentapi.RouterSpec, o PlanOptions, bridges map[string]string) (RouterPlan, error) {
	if err := validID(r.ID); err != nil {
		return RouterPlan{}, fmt.Errorf("router: %w", err)
	}
	rp := RouterPlan{ID: r.ID, Namespace: linux.RouterNamespace(r.ID, o.Suffix)}
	var internal []netip.Prefix
	for _, ps := range r.Interfaces {
		if ps.DeviceOwner != ownerInterface && ps.DeviceOwner != ownerReplicated {
			return rp, fmt.Errorf("router %s: interface %s has unknown device owner %q", r.ID, ps.ID, ps.DeviceOwner)
		}
		pp, err := planPort(ps, linux.PrefixInternal, bridges)
		if err != nil {
			return rp, fmt.Errorf("router %s: %w", r.ID, err)
		}
		for _, a := range pp.Addrs {
			for _, other := range internal {
				if other.Overlaps(a.Masked()) {
					return rp, fmt.Errorf("router %s: interface subnets %s and %s overlap", r.ID, other, a.Masked())
				}
			}
			internal = append(internal, a.Masked())
			rp.Addrs = append(rp.Addrs, DevAddr{Dev: pp.Dev, Prefix: a})
		}
		rp.Ports = append(rp.Ports, pp)
	}
	var gwDev string
	var gwAddr netip.Addr
	var gwNext netip.Addr
	if r.Gateway != nil {
		if r.Gateway.DeviceOwner != ownerGateway {
			return rp, fmt.Errorf("router %s: gateway %s has unknown device owner %q", r.ID, r.Gateway.ID, r.Gateway.DeviceOwner)
		}
		pp, err := planPort(*r.Gateway, linux.PrefixGateway, bridges)
		if err != nil {
			return rp, fmt.Errorf("router %s: gateway: %w", r.ID, err)
		}
		if len(pp.Addrs) == 0 {
			return rp, fmt.Errorf("router %s: gateway port %s has no address", r.ID, pp.PortID)
		}
		gwDev, gwAddr = pp.Dev, pp.Addrs[0].Addr()
		for _, a := range pp.Addrs {
			rp.Addrs = append(rp.Addrs, DevAddr{Dev: pp.Dev, Prefix: a})
		}
		for _, ip := range r.Gateway.FixedIPs {
			if g, err := netip.ParseAddr(ip.GatewayIP); err == nil && ip.GatewayIP != "" {
				gwNext = g
				break
			}
		}
		if gwNext.IsValid() {
			rp.Routes = append(rp.Routes, DevRoute{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: gwNext, Dev: gwDev})
		}
		rp.Ports = append(rp.Ports, pp)
	}
	for _, rt := range r.Routes {
		dst, err1 := netip.ParsePrefix(rt.Destination)
		hop, err2 := netip.ParseAddr(rt.NextHop)
		if err1 != nil || err2 != nil {
			return rp, fmt.Errorf("router %s: malformed route %s via %s", r.ID, rt.Destination, rt.NextHop)
		}
		rp.Routes = append(rp.Routes, DevRoute{Dst: dst.Masked(), Gateway: hop})
	}
	rp.NAT = linux.NAT{GatewayDev: gwDev, SNATAddress: gwAddr, EnableSNAT: r.EnableSNAT, InternalPrefixes: internal}
	for _, f := range r.FloatingIPs {
		fl, err1 := netip.ParseAddr(f.FloatingIPAddress)
		fx, err2 := netip.ParseAddr(f.FixedIPAddress)
		if err1 != nil || err2 != nil || !fl.Is4() || !fx.Is4() {
			return rp, fmt.Errorf("router %s: malformed floating IP %s → %s", r.ID, f.FloatingIPAddress, f.FixedIPAddress)
		}
		if gwDev == "" {
			return rp, fmt.Errorf("router %s: floating IP %s without a gateway", r.ID, fl)
		}
		rp.NAT.FloatingIPs = append(rp.NAT.FloatingIPs, linux.FloatingIP{Floating: fl, Fixed: fx})
		rp.Addrs = append(rp.Addrs, DevAddr{Dev: gwDev, Prefix: netip.PrefixFrom(fl, 32)})
	}
	if r.HA {
		if r.VRID < 1 || r.VRID > 254 {
			return rp, fmt.Errorf("router %s: HA router without a valid VRID (%d)", r.ID, r.VRID)
		}
		if r.HAPort == nil {
			return rp, fmt.Errorf("router %s: HA router without an HA port for this host", r.ID)
		}
		if r.HAPort.DeviceOwner != ownerHA {
			return rp, fmt.Errorf("router %s: HA port %s has unknown device owner %q", r.ID, r.HAPort.ID, r.HAPort.DeviceOwner)
		}
		pp, err := planPort(*r.HAPort, linux.PrefixHA, bridges)
		if err != nil {
			return rp, fmt.Errorf("router %s: HA port: %w", r.ID, err)
		}
		if len(pp.Addrs) != 1 {
			return rp, fmt.Errorf("router %s: HA port %s needs exactly one address", r.ID, pp.PortID)
		}
		rp.Ports = append(rp.Ports, pp)
		rp.HA = &HARouter{
			RouterID: r.ID, Namespace: rp.Namespace, VRID: r.VRID, BindingIndex: r.BindingIndex, HADevice: pp.Dev, HAAddress: pp.Addrs[0],
			VIP: VIPFor(r.VRID), Excluded: rp.Addrs, Routes: rp.Routes,
		}
		rp.HAPending = r.HAPending
	}
	return rp, nil
}

// errorsSummary joins skip reasons for a log line.
func errorsSummary(m map[string]error) error {
	var errs []error
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		errs = append(errs, m[k])
	}
	return errors.Join(errs...)
}

// isRouterNamespace reports whether ns is a router namespace of this agent
// (qrouter-<uuid><suffix>), so that an agent never removes another's.
func isRouterNamespace(ns, suffix string) (string, bool) {
	if !strings.HasPrefix(ns, linux.PrefixRouterNS) || !strings.HasSuffix(ns, suffix) {
		return "", false
	}
	id := strings.TrimSuffix(strings.TrimPrefix(ns, linux.PrefixRouterNS), suffix)
	if validID(id) != nil {
		return "", false
	}
	return id, true
}
