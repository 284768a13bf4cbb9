package neutronagent

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/uuid"

	"github.com/l3ha/l3ha/internal/agentapi"
)

// Keys neutron-server adds to a router dict for its L3 agents
// (neutron_lib.constants INTERFACE_KEY, FLOATINGIP_KEY, HA_INTERFACE_KEY).
const (
	keyInterfaces  = "_interfaces"
	keyFloatingIPs = "_floatingips"
	keyHAInterface = "_ha_interface"
)

// Port status that tells the L3 agent the L2 agent has wired a port.
const portStatusActive = "ACTIVE"

// neutronRouter is the part of a sync_routers router dict l3ha uses.
type neutronRouter struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	TenantID     string `json:"tenant_id"`
	ProjectID    string `json:"project_id"`
	AdminStateUp *bool  `json:"admin_state_up"`
	HA           bool   `json:"ha"`
	HAVRID       int    `json:"ha_vr_id"`
	Distributed  bool   `json:"distributed"`
	GatewayInfo  *struct {
		NetworkID  string `json:"network_id"`
		EnableSNAT *bool  `json:"enable_snat"`
	} `json:"external_gateway_info"`
	GatewayPort *neutronPort      `json:"gw_port"`
	Interfaces  []neutronPort     `json:"_interfaces"`
	FloatingIPs []neutronFloating `json:"_floatingips"`
	HAInterface *neutronPort      `json:"_ha_interface"`
	Routes      []agentapi.Route  `json:"routes"`
}

// neutronPort is a port dict as _populate_mtu_and_subnets_for_ports fills
// it: fixed_ips carry prefixlen, subnets the gateway.
type neutronPort struct {
	ID          string `json:"id"`
	NetworkID   string `json:"network_id"`
	MACAddress  string `json:"mac_address"`
	DeviceOwner string `json:"device_owner"`
	Status      string `json:"status"`
	MTU         int    `json:"mtu"`
	FixedIPs    []struct {
		SubnetID  string `json:"subnet_id"`
		IPAddress string `json:"ip_address"`
		PrefixLen int    `json:"prefixlen"`
	} `json:"fixed_ips"`
	Subnets []struct {
		ID        string  `json:"id"`
		CIDR      string  `json:"cidr"`
		GatewayIP *string `json:"gateway_ip"`
	} `json:"subnets"`
}

type neutronFloating struct {
	ID                string `json:"id"`
	FloatingIPAddress string `json:"floating_ip_address"`
	FixedIPAddress    string `json:"fixed_ip_address"`
	PortID            string `json:"port_id"`
	Status            string `json:"status"`
}

// router is one router of a sync_routers answer, translated.
type router struct {
	Spec agentapi.RouterSpec
	// HAPortActive: the L2 agent has wired this node's HA port; until then
	// VRRP must not start (Neutron's agent waits for it as well).
	HAPortActive bool
	// FloatingIPs of the router and their status as the server has it.
	FloatingIPs map[string]string
}

// decodeRouters splits a sync_routers answer into routers, each decoded on
// its own: a router dict that is malformed is returned in bad (id → why),
// and the others are still served.
func decodeRouters(raw json.RawMessage) (ok []router, bad map[string]error, err error) {
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, nil, fmt.Errorf("sync_routers answer is not a list of routers: %w", err)
	}
	bad = map[string]error{}
	for i, item := range items {
		var nr neutronRouter
		if err := json.Unmarshal(item, &nr); err != nil {
			var id struct {
				ID string `json:"id"`
			}
			_ = json.Unmarshal(item, &id)
			key := id.ID
			if key == "" {
				key = fmt.Sprintf("#%d", i)
			}
			bad[key] = fmt.Errorf("malformed router dict: %w", err)
			continue
		}
		r, err := translate(nr)
		if err != nil {
			key := nr.ID
			if key == "" {
				key = fmt.Sprintf("#%d", i)
			}
			bad[key] = err
			continue
		}
		ok = append(ok, r)
	}
	return ok, bad, nil
}

// translate turns a Neutron router dict into the agent's router spec.
func translate(nr neutronRouter) (router, error) {
	var r router
	if _, err := uuid.Parse(nr.ID); err != nil || len(nr.ID) != 36 {
		return r, fmt.Errorf("router id %q is not a UUID", nr.ID)
	}
	if nr.Distributed {
		return r, fmt.Errorf("router %s is distributed: l3ha runs routers centrally (legacy) only", nr.ID)
	}
	project := nr.ProjectID
	if project == "" {
		project = nr.TenantID
	}
	r.Spec = agentapi.RouterSpec{
		ID: nr.ID, Name: nr.Name, ProjectID: project, AdminStateUp: nr.AdminStateUp == nil || *nr.AdminStateUp,
		HA: nr.HA, VRID: nr.HAVRID, BindingIndex: 1, Routes: nr.Routes,
		Interfaces: []agentapi.PortSpec{}, FloatingIPs: []agentapi.FloatingIPSpec{},
	}
	if r.Spec.Routes == nil {
		r.Spec.Routes = []agentapi.Route{}
	}
	for _, p := range nr.Interfaces {
		ps, err := portSpec(p)
		if err != nil {
			return r, fmt.Errorf("router %s: interface: %w", nr.ID, err)
		}
		r.Spec.Interfaces = append(r.Spec.Interfaces, ps)
	}
	if nr.GatewayPort != nil {
		ps, err := portSpec(*nr.GatewayPort)
		if err != nil {
			return r, fmt.Errorf("router %s: gateway: %w", nr.ID, err)
		}
		r.Spec.Gateway = &ps
		// Neutron's default: SNAT on unless the gateway says otherwise.
		r.Spec.EnableSNAT = nr.GatewayInfo == nil || nr.GatewayInfo.EnableSNAT == nil || *nr.GatewayInfo.EnableSNAT
	}
	r.FloatingIPs = map[string]string{}
	for _, f := range nr.FloatingIPs {
		if f.FixedIPAddress == "" || f.PortID == "" {
			continue // not associated
		}
		r.Spec.FloatingIPs = append(r.Spec.FloatingIPs, agentapi.FloatingIPSpec{
			ID: f.ID, FloatingIPAddress: f.FloatingIPAddress, FixedIPAddress: f.FixedIPAddress, PortID: f.PortID,
		})
		r.FloatingIPs[f.ID] = f.Status
	}
	if nr.HA {
		if nr.HAInterface == nil {
			return r, fmt.Errorf("router %s: HA router without an HA port for this host", nr.ID)
		}
		ps, err := portSpec(*nr.HAInterface)
		if err != nil {
			return r, fmt.Errorf("router %s: HA port: %w", nr.ID, err)
		}
		r.Spec.HAPort = &ps
		r.HAPortActive = nr.HAInterface.Status == portStatusActive
	}
	return r, nil
}

// portSpec translates a port dict; the address's subnet gives its prefix
// and gateway.
func portSpec(p neutronPort) (agentapi.PortSpec, error) {
	if p.ID == "" || p.NetworkID == "" {
		return agentapi.PortSpec{}, errors.New("port without id or network_id")
	}
	ps := agentapi.PortSpec{ID: p.ID, NetworkID: p.NetworkID, MACAddress: p.MACAddress, DeviceOwner: p.DeviceOwner, MTU: p.MTU, FixedIPs: []agentapi.FixedIPSpec{}}
	for _, ip := range p.FixedIPs {
		a, err := netip.ParseAddr(ip.IPAddress)
		if err != nil {
			return ps, fmt.Errorf("port %s: malformed address %q", p.ID, ip.IPAddress)
		}
		if !a.Is4() {
			continue // IPv6 is not served (as on l3ha's own server)
		}
		fs := agentapi.FixedIPSpec{SubnetID: ip.SubnetID, IPAddress: ip.IPAddress}
		for _, sn := range p.Subnets {
			if sn.ID == ip.SubnetID {
				fs.CIDR = sn.CIDR
				if sn.GatewayIP != nil {
					fs.GatewayIP = *sn.GatewayIP
				}
			}
		}
		if fs.CIDR == "" {
			if ip.PrefixLen < 1 || ip.PrefixLen > 32 {
				return ps, fmt.Errorf("port %s: address %s has neither a subnet nor a prefix length", p.ID, ip.IPAddress)
			}
			fs.CIDR = netip.PrefixFrom(a, ip.PrefixLen).Masked().String()
		}
		ps.FixedIPs = append(ps.FixedIPs, fs)
	}
	return ps, nil
}
