package server

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"

	"github.com/l3ha/l3ha/internal/agentapi"
	"github.com/l3ha/l3ha/internal/ha"
	"github.com/l3ha/l3ha/internal/store"
)

// BuildDesiredState computes everything agent a's host must run: its bound
// routers with their ports, VRIDs and floating IPs, and the networks those
// ports are on with the underlay addresses of the other hosts that need them.
func BuildDesiredState(tx *store.Tx, a *store.Agent) (*agentapi.DesiredState, error) {
	st, _, err := buildDesiredState(tx, a)
	return st, err
}

// stateDeps is what a host's desired state was built from, to tell whether
// a later write (store.Changes) can change it.
type stateDeps struct {
	agentID, host string
	routers       map[string]bool            // routers bound to the host
	networks      map[string]bool            // networks in the state
	peerRouters   map[string]bool            // routers whose bindings give those networks peers
	peerHosts     map[string]map[string]bool // network → hosts already counted as its peers
}

// affectedBy reports whether changes may alter the state built from d.
func (d *stateDeps) affectedBy(changes []*store.Changes) bool {
	for _, c := range changes {
		if c.All || c.Agents[d.agentID] || c.Hosts[d.host] {
			return true
		}
		for r := range c.Routers {
			if d.routers[r] || d.peerRouters[r] {
				return true
			}
		}
		for n := range c.Networks {
			if d.networks[n] {
				return true
			}
		}
		for k := range c.Joined {
			if d.networks[k[0]] && k[1] != d.host && !d.peerHosts[k[0]][k[1]] {
				return true
			}
		}
	}
	return false
}

func buildDesiredState(tx *store.Tx, a *store.Agent) (*agentapi.DesiredState, *stateDeps, error) {
	st := &agentapi.DesiredState{Host: a.Host, Routers: []agentapi.RouterSpec{}, Networks: []agentapi.NetworkSpec{}}
	deps := &stateDeps{agentID: a.ID, host: a.Host, routers: map[string]bool{}, networks: map[string]bool{}}
	bindings, err := tx.ListBindings(store.Where{"agent_id": a.ID})
	if err != nil {
		return nil, nil, err
	}
	// Networks of instance ports bound to this host (compute nodes) must be
	// wired too, so instances reach their routers.
	hostPorts, err := tx.ListPortLocations(store.Where{"host_id": a.Host})
	if err != nil {
		return nil, nil, err
	}
	netIDs := map[string]bool{}
	for _, p := range hostPorts {
		if p.DeviceOwner != ha.OwnerHAInterface && p.DeviceOwner != ha.OwnerRouterGateway &&
			p.DeviceOwner != ha.OwnerRouterInterface && p.DeviceOwner != ha.OwnerReplicatedInterface &&
			p.DeviceOwner != ha.OwnerFloatingIP {
			netIDs[p.NetworkID] = true
		}
	}
	index := map[string]int{}
	var routerIDs []string
	for _, b := range bindings {
		index[b.RouterID] = b.BindingIndex
		routerIDs = append(routerIDs, b.RouterID)
	}
	for _, id := range routerIDs {
		deps.routers[id] = true
	}
	if len(routerIDs) == 0 && len(netIDs) == 0 {
		st, err := withETag(st)
		return st, deps, err
	}
	routers, err := tx.ListRouters(store.Where{"id": routerIDs})
	if err != nil {
		return nil, nil, err
	}
	// The routers' interfaces and gateways, and this host's HA ports (not
	// the other hosts' HA ports of the same routers, which the state does
	// not use).
	ports, err := tx.ListPorts(store.Where{"device_id": routerIDs, "device_owner": []string{ha.OwnerRouterInterface, ha.OwnerReplicatedInterface, ha.OwnerRouterGateway}})
	if err != nil {
		return nil, nil, err
	}
	haPorts, err := tx.ListPorts(store.Where{"host_id": a.Host, "device_owner": ha.OwnerHAInterface})
	if err != nil {
		return nil, nil, err
	}
	for _, p := range haPorts {
		if deps.routers[p.DeviceID] {
			ports = append(ports, p)
		}
	}
	vrids, err := tx.ListVRIDs(store.Where{"router_id": routerIDs})
	if err != nil {
		return nil, nil, err
	}
	fips, err := tx.ListFloatingIPs(store.Where{"router_id": routerIDs})
	if err != nil {
		return nil, nil, err
	}
	for _, p := range ports {
		if p.DeviceOwner != ha.OwnerHAInterface || p.HostID == a.Host {
			netIDs[p.NetworkID] = true
		}
	}
	nets, err := tx.ListNetworks(store.Where{"id": keys(netIDs)})
	if err != nil {
		return nil, nil, err
	}
	netByID := map[string]*store.Network{}
	for _, n := range nets {
		netByID[n.ID] = n
	}
	subs, err := tx.ListSubnets(store.Where{"network_id": keys(netIDs)})
	if err != nil {
		return nil, nil, err
	}
	subByID := map[string]*store.Subnet{}
	for _, s := range subs {
		subByID[s.ID] = s
	}
	vridOf := map[string]int{}
	for _, v := range vrids {
		vridOf[v.RouterID] = v.VRID
	}
	portsOf := map[string][]*store.Port{}
	for _, p := range ports {
		portsOf[p.DeviceID] = append(portsOf[p.DeviceID], p)
	}
	fipsOf := map[string][]*store.FloatingIP{}
	for _, f := range fips {
		fipsOf[*f.RouterID] = append(fipsOf[*f.RouterID], f)
	}
	switchovers, err := liveSwitchovers(tx, routerIDs)
	if err != nil {
		return nil, nil, err
	}
	spec := func(p *store.Port) agentapi.PortSpec {
		ps := agentapi.PortSpec{ID: p.ID, NetworkID: p.NetworkID, MACAddress: p.MACAddress, DeviceOwner: p.DeviceOwner, FixedIPs: []agentapi.FixedIPSpec{}}
		if n := netByID[p.NetworkID]; n != nil {
			ps.MTU = n.MTU
		}
		for _, ip := range p.FixedIPs {
			f := agentapi.FixedIPSpec{SubnetID: ip.SubnetID, IPAddress: ip.IPAddress}
			if s := subByID[ip.SubnetID]; s != nil {
				f.CIDR = s.CIDR
				if s.GatewayIP != nil {
					f.GatewayIP = *s.GatewayIP
				}
			}
			ps.FixedIPs = append(ps.FixedIPs, f)
		}
		return ps
	}
	for _, r := range routers {
		rs := agentapi.RouterSpec{
			ID: r.ID, Name: r.Name, ProjectID: r.ProjectID, AdminStateUp: r.AdminStateUp, HA: r.HA,
			Distributed: r.Distributed, VRID: vridOf[r.ID], BindingIndex: index[r.ID], EnableSNAT: r.EnableSNAT,
			Interfaces: []agentapi.PortSpec{}, Routes: []agentapi.Route{}, FloatingIPs: []agentapi.FloatingIPSpec{},
		}
		for _, rt := range r.Routes {
			rs.Routes = append(rs.Routes, agentapi.Route{Destination: rt.Destination, NextHop: rt.NextHop})
		}
		if sw, ok := switchovers[r.ID]; ok && r.HA {
			rs.Switchover = sw
		}
		for _, p := range portsOf[r.ID] {
			switch p.DeviceOwner {
			case ha.OwnerHAInterface:
				if p.HostID == a.Host {
					ps := spec(p)
					rs.HAPort = &ps
				}
			case ha.OwnerRouterGateway:
				ps := spec(p)
				rs.Gateway = &ps
			case ha.OwnerRouterInterface, ha.OwnerReplicatedInterface:
				rs.Interfaces = append(rs.Interfaces, spec(p))
			}
		}
		sort.Slice(rs.Interfaces, func(i, j int) bool { return rs.Interfaces[i].ID < rs.Interfaces[j].ID })
		for _, f := range fipsOf[r.ID] {
			rs.FloatingIPs = append(rs.FloatingIPs, agentapi.FloatingIPSpec{ID: f.ID, FloatingIPAddress: f.FloatingIP, FixedIPAddress: *f.FixedIP, PortID: *f.FixedPortID})
		}
		sort.Slice(rs.FloatingIPs, func(i, j int) bool { return rs.FloatingIPs[i].ID < rs.FloatingIPs[j].ID })
		st.Routers = append(st.Routers, rs)
	}
	sort.Slice(st.Routers, func(i, j int) bool { return st.Routers[i].ID < st.Routers[j].ID })
	peers, err := networkPeers(tx, keys(netIDs), a.Host, deps)
	if err != nil {
		return nil, nil, err
	}
	for _, n := range nets {
		ns := agentapi.NetworkSpec{ID: n.ID, NetworkType: n.NetworkType, MTU: n.MTU, Peers: peers[n.ID]}
		if ns.Peers == nil {
			ns.Peers = []string{}
		}
		if n.SegmentationID != nil {
			ns.SegmentationID = *n.SegmentationID
		}
		if n.PhysicalNetwork != nil {
			ns.PhysicalNetwork = *n.PhysicalNetwork
		}
		st.Networks = append(st.Networks, ns)
	}
	deps.networks = netIDs
	st, err = withETag(st)
	return st, deps, err
}

// networkPeers returns, per network, the underlay addresses (agents'
// local_ip) of the other hosts that need it: hosts of agents bound to a
// router with a port on it, and hosts that ports on it are bound to.
func networkPeers(tx *store.Tx, netIDs []string, self string, deps *stateDeps) (map[string][]string, error) {
	// Kept between builds by the store: an HA network has a port per router
	// and agent, too many to read for every host's every build.
	nps, err := tx.NetworkPortsOf(netIDs)
	if err != nil {
		return nil, err
	}
	agents, err := tx.AgentsShared()
	if err != nil {
		return nil, err
	}
	localIP := map[string]string{}
	hostOf := map[string]string{}
	for _, ag := range agents {
		hostOf[ag.ID] = ag.Host
		if ip, _ := ag.Configurations[agentapi.ConfigLocalIP].(string); ip != "" {
			localIP[ag.Host] = ip
		}
	}
	// network → hosts that need it (self included; the sets of nps are
	// shared and copied before being added to)
	hosts := make(map[string]map[string]bool, len(netIDs))
	routerNets := map[string]map[string]bool{} // router → networks
	var routerIDs []string
	for _, net := range netIDs {
		np := nps[net]
		if np == nil {
			continue
		}
		hosts[net] = np.Hosts
		for _, r := range np.Routers {
			if routerNets[r] == nil {
				routerNets[r] = map[string]bool{}
				routerIDs = append(routerIDs, r)
			}
			routerNets[r][net] = true
		}
	}
	deps.peerRouters = make(map[string]bool, len(routerIDs))
	for _, id := range routerIDs {
		deps.peerRouters[id] = true
	}
	if len(routerIDs) > 0 {
		bs, err := tx.ListBindings(store.Where{"router_id": routerIDs})
		if err != nil {
			return nil, err
		}
		copied := map[string]bool{}
		for _, b := range bs {
			h := hostOf[b.AgentID]
			if h == "" {
				continue
			}
			for net := range routerNets[b.RouterID] {
				if hosts[net][h] {
					continue
				}
				if !copied[net] {
					hosts[net] = maps.Clone(hosts[net])
					if hosts[net] == nil {
						hosts[net] = map[string]bool{}
					}
					copied[net] = true
				}
				hosts[net][h] = true
			}
		}
	}
	deps.peerHosts = hosts
	out := map[string][]string{}
	var agentsKey any
	if len(agents) > 0 {
		agentsKey = &agents[0] // the same kept agents give the same addresses
	}
	for net, hs := range hosts {
		if np := nps[net]; np != nil && len(np.Routers) == 0 {
			// Only ports' hosts: every host on the network gets the same
			// list but for its own address, so it is made once.
			all := np.Memo(agentsKey, func() any { return newPeerIPs(np.Hosts, localIP) }).(*peerIPs)
			out[net] = all.without(localIP[self])
			continue
		}
		seen := map[string]bool{}
		for h := range hs {
			if h == self {
				continue
			}
			if ip := localIP[h]; ip != "" && !seen[ip] {
				seen[ip] = true
				out[net] = append(out[net], ip)
			}
		}
		sort.Strings(out[net])
	}
	return out, nil
}

// peerIPs are the sorted underlay addresses of a network's hosts, with how
// many hosts have each.
type peerIPs struct {
	ips   []string
	count map[string]int
}

func newPeerIPs(hosts map[string]bool, localIP map[string]string) *peerIPs {
	p := &peerIPs{count: map[string]int{}}
	for h := range hosts {
		if ip := localIP[h]; ip != "" {
			if p.count[ip] == 0 {
				p.ips = append(p.ips, ip)
			}
			p.count[ip]++
		}
	}
	sort.Strings(p.ips)
	return p
}

// without returns the addresses less self's own (unless another host
// shares it); nil when none remain.
func (p *peerIPs) without(self string) []string {
	if self == "" || p.count[self] != 1 {
		if len(p.ips) == 0 {
			return nil
		}
		return slices.Clone(p.ips)
	}
	out := make([]string, 0, len(p.ips)-1)
	for _, ip := range p.ips {
		if ip != self {
			out = append(out, ip)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func withETag(st *agentapi.DesiredState) (*agentapi.DesiredState, error) {
	st.ETag = ""
	b, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("encoding desired state: %w", err)
	}
	sum := sha256.Sum256(b)
	st.ETag = hex.EncodeToString(sum[:12])
	return st, nil
}
