package server

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/l3ha/l3ha/internal/agentapi"
	"github.com/l3ha/l3ha/internal/ha"
	"github.com/l3ha/l3ha/internal/store"
)

// BuildDesiredState computes everything agent a's host must run: its bound
// routers with their ports, VRIDs and floating IPs, and the networks those
// ports are on with the underlay addresses of the other hosts that need them.
func BuildDesiredState(tx *store.Tx, a *store.Agent) (*agentapi.DesiredState, error) {
	st := &agentapi.DesiredState{Host: a.Host, Routers: []agentapi.RouterSpec{}, Networks: []agentapi.NetworkSpec{}}
	bindings, err := tx.ListBindings(store.Where{"agent_id": a.ID})
	if err != nil {
		return nil, err
	}
	// Networks of instance ports bound to this host (compute nodes) must be
	// wired too, so instances reach their routers.
	hostPorts, err := tx.ListPorts(store.Where{"host_id": a.Host})
	if err != nil {
		return nil, err
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
	if len(routerIDs) == 0 && len(netIDs) == 0 {
		return withETag(st)
	}
	routers, err := tx.ListRouters(store.Where{"id": routerIDs})
	if err != nil {
		return nil, err
	}
	ports, err := tx.ListPorts(store.Where{"device_id": routerIDs})
	if err != nil {
		return nil, err
	}
	vrids, err := tx.ListVRIDs(store.Where{"router_id": routerIDs})
	if err != nil {
		return nil, err
	}
	fips, err := tx.ListFloatingIPs(store.Where{"router_id": routerIDs})
	if err != nil {
		return nil, err
	}
	for _, p := range ports {
		if p.DeviceOwner != ha.OwnerHAInterface || p.HostID == a.Host {
			netIDs[p.NetworkID] = true
		}
	}
	nets, err := tx.ListNetworks(store.Where{"id": keys(netIDs)})
	if err != nil {
		return nil, err
	}
	netByID := map[string]*store.Network{}
	for _, n := range nets {
		netByID[n.ID] = n
	}
	subs, err := tx.ListSubnets(store.Where{"network_id": keys(netIDs)})
	if err != nil {
		return nil, err
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
	peers, err := networkPeers(tx, keys(netIDs), a.Host)
	if err != nil {
		return nil, err
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
	return withETag(st)
}

// networkPeers returns, per network, the underlay addresses (agents'
// local_ip) of the other hosts that need it: hosts of agents bound to a
// router with a port on it, and hosts that ports on it are bound to.
func networkPeers(tx *store.Tx, netIDs []string, self string) (map[string][]string, error) {
	ports, err := tx.ListPorts(store.Where{"network_id": netIDs})
	if err != nil {
		return nil, err
	}
	agents, err := tx.ListAgents(nil)
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
	routerNets := map[string]map[string]bool{} // router → networks
	hosts := map[string]map[string]bool{}      // network → hosts
	add := func(net, host string) {
		if host == "" || host == self {
			return
		}
		if hosts[net] == nil {
			hosts[net] = map[string]bool{}
		}
		hosts[net][host] = true
	}
	var routerIDs []string
	for _, p := range ports {
		switch p.DeviceOwner {
		case ha.OwnerHAInterface:
			add(p.NetworkID, p.HostID)
		case ha.OwnerRouterInterface, ha.OwnerReplicatedInterface, ha.OwnerRouterGateway:
			if routerNets[p.DeviceID] == nil {
				routerNets[p.DeviceID] = map[string]bool{}
				routerIDs = append(routerIDs, p.DeviceID)
			}
			routerNets[p.DeviceID][p.NetworkID] = true
		default:
			add(p.NetworkID, p.HostID)
		}
	}
	if len(routerIDs) > 0 {
		bs, err := tx.ListBindings(store.Where{"router_id": routerIDs})
		if err != nil {
			return nil, err
		}
		for _, b := range bs {
			for net := range routerNets[b.RouterID] {
				add(net, hostOf[b.AgentID])
			}
		}
	}
	out := map[string][]string{}
	for net, hs := range hosts {
		seen := map[string]bool{}
		for h := range hs {
			if ip := localIP[h]; ip != "" && !seen[ip] {
				seen[ip] = true
				out[net] = append(out[net], ip)
			}
		}
		sort.Strings(out[net])
	}
	return out, nil
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
