package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"sort"
	"strings"

	"github.com/google/uuid"
	"github.com/l3ha/l3ha/internal/ipam"
	"github.com/l3ha/l3ha/internal/store"
)

func init() {
	register(&resource{
		collection: "networks", singular: "network",
		notFound: func(id string) *Error {
			return errf(http.StatusNotFound, "NetworkNotFound", "Network %s could not be found.", id)
		},
		load: (*API).loadNetworks, get: (*API).getNetwork,
		create: (*API).createNetwork, update: (*API).updateNetwork, delete: (*API).deleteNetwork,
		sample: func() map[string]any { return networkView(&store.Network{External: true}, nil, true) },
	})
	register(&resource{
		collection: "subnets", singular: "subnet",
		notFound: func(id string) *Error {
			return errf(http.StatusNotFound, "SubnetNotFound", "Subnet %s could not be found.", id)
		},
		load: (*API).loadSubnets, get: (*API).getSubnet,
		create: (*API).createSubnet, update: (*API).updateSubnet, delete: (*API).deleteSubnet,
		sample: func() map[string]any { return subnetView(&store.Subnet{}) },
	})
}

func notFoundNetwork(id string) *Error { return resources["networks"].notFound(id) }
func notFoundSubnet(id string) *Error  { return resources["subnets"].notFound(id) }

func networkVisible(id Identity, n *store.Network) bool {
	return id.Admin || n.ProjectID == id.ProjectID || n.Shared || n.External
}

func networkView(n *store.Network, subnets []string, admin bool) map[string]any {
	o := std(map[string]any{}, n.ID, n.ProjectID, n.Revision, n.CreatedAt, n.UpdatedAt)
	o["admin_state_up"] = n.AdminStateUp
	o["description"] = n.Description
	o["mtu"] = n.MTU
	o["name"] = n.Name
	o["router:external"] = n.External
	o["shared"] = n.Shared
	o["status"] = n.Status
	if subnets == nil {
		subnets = []string{}
	}
	o["subnets"] = subnets
	if admin {
		o["provider:network_type"] = n.NetworkType
		o["provider:physical_network"] = strOrNil(n.PhysicalNetwork)
		if n.SegmentationID != nil {
			o["provider:segmentation_id"] = *n.SegmentationID
		} else {
			o["provider:segmentation_id"] = nil
		}
	}
	return o
}

func subnetIDsByNetwork(tx *store.Tx, w store.Where) (map[string][]string, error) {
	subs, err := tx.ListSubnets(w)
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, s := range subs {
		out[s.NetworkID] = append(out[s.NetworkID], s.ID)
	}
	return out, nil
}

func (a *API) loadNetworks(tx *store.Tx, id Identity) ([]map[string]any, error) {
	nets, err := tx.ListNetworks(nil)
	if err != nil {
		return nil, err
	}
	subs, err := subnetIDsByNetwork(tx, nil)
	if err != nil {
		return nil, err
	}
	var out []map[string]any
	for _, n := range nets {
		if networkVisible(id, n) {
			out = append(out, networkView(n, subs[n.ID], id.Admin))
		}
	}
	return out, nil
}

// visibleNetwork loads a network the identity may see, or NetworkNotFound.
func visibleNetwork(tx *store.Tx, id Identity, netID string) (*store.Network, error) {
	n, err := tx.GetNetwork(netID)
	if errors.Is(err, store.ErrNotFound) || err == nil && !networkVisible(id, n) {
		return nil, notFoundNetwork(netID)
	}
	return n, err
}

func (a *API) getNetwork(tx *store.Tx, id Identity, netID string) (map[string]any, error) {
	n, err := visibleNetwork(tx, id, netID)
	if err != nil {
		return nil, err
	}
	subs, err := subnetIDsByNetwork(tx, store.Where{"network_id": n.ID})
	if err != nil {
		return nil, err
	}
	return networkView(n, subs[n.ID], id.Admin), nil
}

// networkAttrs are the core network attributes and those of external-net,
// provider and net-mtu-writable. port_security_enabled (port-security) and
// availability_zone_hints (network_availability_zone) are not implemented:
// unrecognized, a 400.
var networkAttrs = map[string]attr{
	"name": {post: true, put: true}, "description": {post: true, put: true},
	"admin_state_up": {post: true, put: true}, "shared": {post: true, put: true, adminOnly: true},
	"router:external":       {post: true, put: true, adminOnly: true},
	"provider:network_type": {post: true, adminOnly: true}, "provider:physical_network": {post: true, adminOnly: true},
	"provider:segmentation_id": {post: true, adminOnly: true},
	"mtu":                      {post: true, put: true},
}

// checkMTU is net-mtu-writable's bound on a network's MTU.
func checkMTU(mtu int) *Error {
	if mtu < 68 || mtu > 9000 {
		return invalidInput("MTU %d is not between 68 and 9000.", mtu)
	}
	return nil
}

func (a *API) createNetwork(ctx context.Context, id Identity, body map[string]json.RawMessage) (any, error) {
	in := input{m: body, singular: "network"}
	if err := checkAttrs(in, networkAttrs, true, id); err != nil {
		return nil, err
	}
	project, perr := in.project(id)
	if perr != nil {
		return nil, perr
	}
	n := &store.Network{ID: uuid.NewString(), ProjectID: project, AdminStateUp: true, Status: "ACTIVE", NetworkType: "vxlan"}
	var physnet string
	seg := 0
	for _, err := range []*Error{
		in.str("name", 255, &n.Name), in.str("description", 255, &n.Description),
		in.boolean("admin_state_up", &n.AdminStateUp), in.boolean("shared", &n.Shared),
		in.boolean("router:external", &n.External), in.str("provider:network_type", 32, &n.NetworkType),
		in.str("provider:physical_network", 64, &physnet), in.integer("provider:segmentation_id", &seg),
	} {
		if err != nil {
			return nil, err
		}
	}
	mtu := 0
	if err := in.integer("mtu", &mtu); err != nil {
		return nil, err
	}
	switch n.NetworkType {
	case "vxlan":
		if physnet != "" {
			return nil, invalidInput("provider:physical_network specified for VXLAN network")
		}
		n.MTU = 1450
		if in.has("provider:segmentation_id") && (seg < 1 || seg > 16777215) {
			return nil, invalidInput("%d is not a valid VXLAN segmentation id (1..16777215).", seg)
		}
	case "flat":
		if physnet == "" {
			return nil, invalidInput("provider:physical_network required for flat provider network")
		}
		if in.has("provider:segmentation_id") {
			return nil, invalidInput("provider:segmentation_id specified for flat network")
		}
		n.PhysicalNetwork = &physnet
		n.MTU = 1500
	default:
		return nil, invalidInput("network_type value '%s' not supported", shortRaw(n.NetworkType))
	}
	if mtu != 0 {
		if err := checkMTU(mtu); err != nil {
			return nil, err
		}
		n.MTU = mtu
	}
	err := a.write(ctx, func(tx *store.Tx) error {
		switch n.NetworkType {
		case "vxlan":
			if in.has("provider:segmentation_id") {
				used, err := tx.SegmentInUse("vxlan", seg)
				if err != nil {
					return err
				}
				if used {
					return errf(http.StatusConflict, "TunnelIdInUse", "Unable to create the network. The tunnel ID %d is in use.", seg)
				}
			} else {
				v, err := ipam.AllocateVNI(tx, a.opts.VNIs, rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())))
				if err != nil {
					return errf(http.StatusServiceUnavailable, "NoNetworkAvailable", "Unable to create the network. No tenant network is available for allocation.")
				}
				seg = v
			}
			n.SegmentationID = &seg
		case "flat":
			used, err := tx.FlatPhysnetInUse(physnet)
			if err != nil {
				return err
			}
			if used {
				return errf(http.StatusConflict, "FlatNetworkInUse", "Unable to create the flat network. Physical network %s is in use.", physnet)
			}
		}
		return tx.InsertNetwork(n)
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{"network": networkView(n, nil, id.Admin)}, nil
}

// ownedNetwork loads a network the identity may change: 404 when invisible,
// 403 when visible but another project's.
func ownedNetwork(tx *store.Tx, id Identity, netID, op string) (*store.Network, error) {
	n, err := visibleNetwork(tx, id, netID)
	if err != nil {
		return nil, err
	}
	if !owns(id, n.ProjectID) {
		return nil, policyDenied("rule:" + op + "_network")
	}
	return n, nil
}

func (a *API) updateNetwork(ctx context.Context, id Identity, netID string, body map[string]json.RawMessage) (any, error) {
	in := input{m: body, singular: "network"}
	if err := checkAttrs(in, networkAttrs, false, id); err != nil {
		return nil, err
	}
	var view map[string]any
	_, err := a.db.Write(ctx, func(tx *store.Tx) error {
		n, err := ownedNetwork(tx, id, netID, "update")
		if err != nil {
			return err
		}
		wasExternal := n.External
		for _, err := range []*Error{
			in.str("name", 255, &n.Name), in.str("description", 255, &n.Description),
			in.boolean("admin_state_up", &n.AdminStateUp), in.boolean("shared", &n.Shared),
			in.boolean("router:external", &n.External), in.integer("mtu", &n.MTU),
		} {
			if err != nil {
				return err
			}
		}
		if in.has("mtu") {
			if err := checkMTU(n.MTU); err != nil {
				return err
			}
		}
		if wasExternal && !n.External {
			gws, err := tx.ListPorts(store.Where{"network_id": n.ID, "device_owner": "network:router_gateway"})
			if err != nil {
				return err
			}
			if len(gws) > 0 {
				return errf(http.StatusConflict, "ExternalNetworkInUse", "External network %s cannot be updated to be made non-external, since it has existing gateway ports.", n.ID)
			}
		}
		if err := tx.UpdateNetwork(n); err != nil {
			return err
		}
		subs, err := subnetIDsByNetwork(tx, store.Where{"network_id": n.ID})
		view = networkView(n, subs[n.ID], id.Admin)
		return err
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{"network": view}, nil
}

func (a *API) deleteNetwork(ctx context.Context, id Identity, netID string) error {
	_, err := a.db.Write(ctx, func(tx *store.Tx) error {
		n, err := ownedNetwork(tx, id, netID, "delete")
		if err != nil {
			return err
		}
		// Floating IPs that point at nothing go with their external
		// network, as in Neutron; associated ones keep it in use.
		fips, err := tx.ListFloatingIPs(store.Where{"floating_network_id": n.ID, "fixed_port_id": nil})
		if err != nil {
			return err
		}
		for _, f := range fips {
			if err := tx.DeleteFloatingIP(f.ID); err != nil {
				return err
			}
			if err := tx.DeletePort(f.FloatingPortID); err != nil {
				return err
			}
		}
		ports, err := tx.ListPorts(store.Where{"network_id": n.ID})
		if err != nil {
			return err
		}
		var inUse []string
		for _, p := range ports {
			if p.DeviceOwner != "network:dhcp" {
				inUse = append(inUse, p.ID)
			}
		}
		if len(inUse) > 0 {
			return errf(http.StatusConflict, "NetworkInUse", "Unable to complete operation on network %s. There are one or more ports still in use on the network, id for these ports is: %s.", n.ID, strings.Join(inUse, ","))
		}
		if hn, err := tx.ListHANetworks(store.Where{"network_id": n.ID}); err != nil {
			return err
		} else if len(hn) > 0 {
			if vr, err := tx.ListVRIDs(store.Where{"network_id": n.ID}); err != nil {
				return err
			} else if len(vr) > 0 {
				return errf(http.StatusConflict, "NetworkInUse", "Unable to complete operation on network %s. It is the HA network of %d HA routers.", n.ID, len(vr))
			}
			if err := tx.DeleteHANetwork(n.ID); err != nil {
				return err
			}
		}
		for _, p := range ports {
			if err := tx.DeletePort(p.ID); err != nil {
				return err
			}
		}
		subs, err := tx.ListSubnets(store.Where{"network_id": n.ID})
		if err != nil {
			return err
		}
		for _, s := range subs {
			if err := tx.DeleteSubnet(s.ID); err != nil {
				return err
			}
		}
		return tx.DeleteNetwork(n.ID)
	})
	return err
}

// ---- subnets

func subnetView(s *store.Subnet) map[string]any {
	o := std(map[string]any{}, s.ID, s.ProjectID, s.Revision, s.CreatedAt, s.UpdatedAt)
	o["allocation_pools"] = nonNilSlice(s.AllocationPools)
	o["cidr"] = s.CIDR
	o["description"] = s.Description
	o["dns_nameservers"] = nonNilSlice(s.DNSNameservers)
	o["enable_dhcp"] = s.EnableDHCP
	o["gateway_ip"] = strOrNil(s.GatewayIP)
	o["host_routes"] = nonNilSlice(s.HostRoutes)
	o["ip_version"] = s.IPVersion
	o["ipv6_address_mode"] = nil
	o["ipv6_ra_mode"] = nil
	o["name"] = s.Name
	o["network_id"] = s.NetworkID
	o["subnetpool_id"] = nil
	return o
}

func nonNilSlice[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func (a *API) loadSubnets(tx *store.Tx, id Identity) ([]map[string]any, error) {
	subs, err := tx.ListSubnets(nil)
	if err != nil {
		return nil, err
	}
	var nets map[string]*store.Network
	if !id.Admin {
		all, err := tx.ListNetworks(nil)
		if err != nil {
			return nil, err
		}
		nets = map[string]*store.Network{}
		for _, n := range all {
			nets[n.ID] = n
		}
	}
	var out []map[string]any
	for _, s := range subs {
		if id.Admin || s.ProjectID == id.ProjectID || nets[s.NetworkID] != nil && subnetsVisible(id, nets[s.NetworkID]) {
			out = append(out, subnetView(s))
		}
	}
	return out, nil
}

func visibleSubnet(tx *store.Tx, id Identity, subID string) (*store.Subnet, error) {
	s, err := tx.GetSubnet(subID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFoundSubnet(subID)
	}
	if err != nil {
		return nil, err
	}
	if id.Admin || s.ProjectID == id.ProjectID {
		return s, nil
	}
	n, err := tx.GetNetwork(s.NetworkID)
	if err != nil || !subnetsVisible(id, n) {
		return nil, notFoundSubnet(subID)
	}
	return s, nil
}

// subnetsVisible reports whether a tenant sees the subnets of a network it
// does not own them on: those of its own networks and of shared ones
// (Neutron's get_subnet: admin, owner or shared). An external network's
// subnets are not shown to other projects unless it is shared too, nor are
// HA networks' (whose project is empty).
func subnetsVisible(id Identity, n *store.Network) bool {
	return id.Admin || n.Shared || n.ProjectID != "" && n.ProjectID == id.ProjectID
}

func (a *API) getSubnet(tx *store.Tx, id Identity, subID string) (map[string]any, error) {
	s, err := visibleSubnet(tx, id, subID)
	if err != nil {
		return nil, err
	}
	return subnetView(s), nil
}

// subnetAttrs are the core subnet attributes. service_types
// (subnet-service-types) and segment_id (segment) are not implemented:
// unrecognized, a 400. Of the core ones l3ha has no use for,
// checkUnusedSubnetAttrs accepts only the values that ask for nothing.
var subnetAttrs = map[string]attr{
	"name": {post: true, put: true}, "description": {post: true, put: true},
	"network_id": {post: true}, "cidr": {post: true}, "ip_version": {post: true},
	"gateway_ip": {post: true, put: true}, "enable_dhcp": {post: true, put: true},
	"allocation_pools": {post: true, put: true}, "dns_nameservers": {post: true, put: true},
	"host_routes": {post: true, put: true}, "subnetpool_id": {post: true},
	"ipv6_address_mode": {post: true}, "ipv6_ra_mode": {post: true}, "prefixlen": {post: true},
}

// checkUnusedSubnetAttrs refuses what a subnet create asks of features
// l3ha does not have, rather than dropping it: a subnet pool
// (subnetpool_id, and prefixlen, which only means something with one) and
// IPv6 address modes (l3ha's subnets are IPv4). null is accepted: it asks
// for nothing.
func checkUnusedSubnetAttrs(in input) *Error {
	set := func(k string) bool { raw, ok := in.m[k]; return ok && string(raw) != "null" }
	if set("subnetpool_id") {
		return badRequest("Invalid input for subnetpool_id. Reason: subnet pools are not implemented by l3ha; subnetpool_id must be null.")
	}
	if set("prefixlen") {
		if in.has("cidr") {
			return errf(http.StatusBadRequest, "BadRequest", "Bad subnets request: cidr and prefixlen must not be supplied together.")
		}
		return errf(http.StatusBadRequest, "BadRequest", "Bad subnets request: prefixlen allocates from a subnet pool, and l3ha has none: give a cidr.")
	}
	for _, k := range []string{"ipv6_ra_mode", "ipv6_address_mode"} {
		if set(k) {
			return invalidInput("%s applies to IPv6 subnets, which l3ha does not support.", k)
		}
	}
	return nil
}

func (a *API) createSubnet(ctx context.Context, id Identity, body map[string]json.RawMessage) (any, error) {
	in := input{m: body, singular: "subnet"}
	if err := checkAttrs(in, subnetAttrs, true, id); err != nil {
		return nil, err
	}
	project, perr := in.project(id)
	if perr != nil {
		return nil, perr
	}
	s := &store.Subnet{ID: uuid.NewString(), ProjectID: project, EnableDHCP: true, IPVersion: 4}
	var cidr string
	for _, err := range []*Error{
		in.str("name", 255, &s.Name), in.str("description", 255, &s.Description),
		in.uuidAttr("network_id", &s.NetworkID), in.str("cidr", 64, &cidr),
		in.integer("ip_version", &s.IPVersion), in.boolean("enable_dhcp", &s.EnableDHCP),
		in.decode("dns_nameservers", &s.DNSNameservers, "a list of IP addresses"),
		in.decode("host_routes", &s.HostRoutes, "a list of host routes"),
		in.decode("allocation_pools", &s.AllocationPools, "a list of allocation pools"),
	} {
		if err != nil {
			return nil, err
		}
	}
	if s.NetworkID == "" {
		return nil, badRequest("Failed to parse request. Required attribute 'network_id' not specified")
	}
	if s.IPVersion != 4 {
		if s.IPVersion == 6 {
			return nil, invalidInput("IPv6 subnets are not supported by l3ha yet.")
		}
		return nil, badRequest("Invalid input for ip_version. Reason: %d is not in [4, 6].", s.IPVersion)
	}
	if err := checkUnusedSubnetAttrs(in); err != nil {
		return nil, err
	}
	if cidr == "" {
		return nil, badRequest("Bad subnets request: a cidr must be specified in the absence of a subnet pool.")
	}
	prefix, perr2 := parseCIDR(cidr)
	if perr2 != nil {
		return nil, perr2
	}
	if prefix.Masked() != prefix {
		return nil, invalidInput("%s isn't a recommended CIDR: it should be %s.", cidr, prefix.Masked())
	}
	if prefix.Bits() > 30 {
		return nil, invalidInput("Prefix length of %s is too long; at most /30 leaves room for hosts.", cidr)
	}
	s.CIDR = prefix.String()
	var gw *netip.Addr
	if in.has("gateway_ip") {
		var g *string
		if _, err := in.nullableStr("gateway_ip", &g); err != nil {
			return nil, err
		}
		if g != nil {
			addr, err := validGateway(prefix, *g)
			if err != nil {
				return nil, err
			}
			gw = &addr
		}
	} else {
		addr := prefix.Addr().Next()
		gw = &addr
	}
	if gw != nil {
		str := gw.String()
		s.GatewayIP = &str
	}
	if err := validateSubnetExtras(s); err != nil {
		return nil, err
	}
	if s.AllocationPools == nil {
		s.AllocationPools = ipam.DefaultPools(prefix, gw)
	} else if err := ipam.ValidatePools(prefix, gw, s.AllocationPools); err != nil {
		return nil, invalidInput("%s", err.Error())
	}
	err := a.write(ctx, func(tx *store.Tx) error {
		n, err := visibleNetwork(tx, id, s.NetworkID)
		if err != nil {
			return err
		}
		if !owns(id, n.ProjectID) {
			return policyDenied("rule:create_subnet")
		}
		others, err := tx.ListSubnets(store.Where{"network_id": n.ID})
		if err != nil {
			return err
		}
		for _, o := range others {
			if op, err := netip.ParsePrefix(o.CIDR); err == nil && op.Overlaps(prefix) {
				return invalidInput("Requested subnet with cidr: %s for network: %s overlaps with another subnet", s.CIDR, n.ID)
			}
		}
		if err := tx.InsertSubnet(s); err != nil {
			return err
		}
		return tx.TouchNetwork(n.ID)
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{"subnet": subnetView(s)}, nil
}

func validGateway(prefix netip.Prefix, g string) (netip.Addr, *Error) {
	addr, err := parseIPv4("gateway_ip", g)
	if err != nil {
		return netip.Addr{}, err
	}
	if !prefix.Contains(addr) || addr == prefix.Masked().Addr() || addr == ipam.LastAddr(prefix) {
		return netip.Addr{}, invalidInput("Gateway IP %s is not a valid host address of subnet %s.", g, prefix)
	}
	return addr, nil
}

func validateSubnetExtras(s *store.Subnet) *Error {
	for _, d := range s.DNSNameservers {
		if _, err := netip.ParseAddr(d); err != nil {
			return invalidInput("'%s' is not a valid nameserver.", shortRaw(d))
		}
	}
	for _, r := range s.HostRoutes {
		if _, err := parseCIDR(r.Destination); err != nil {
			return err
		}
		if _, err := parseIPv4("nexthop", r.NextHop); err != nil {
			return err
		}
	}
	return nil
}

func (a *API) updateSubnet(ctx context.Context, id Identity, subID string, body map[string]json.RawMessage) (any, error) {
	in := input{m: body, singular: "subnet"}
	if err := checkAttrs(in, subnetAttrs, false, id); err != nil {
		return nil, err
	}
	var view map[string]any
	_, err := a.db.Write(ctx, func(tx *store.Tx) error {
		s, err := visibleSubnet(tx, id, subID)
		if err != nil {
			return err
		}
		if !owns(id, s.ProjectID) {
			return policyDenied("rule:update_subnet")
		}
		prefix := netip.MustParsePrefix(s.CIDR)
		for _, err := range []*Error{
			in.str("name", 255, &s.Name), in.str("description", 255, &s.Description),
			in.boolean("enable_dhcp", &s.EnableDHCP),
			in.decode("dns_nameservers", &s.DNSNameservers, "a list of IP addresses"),
			in.decode("host_routes", &s.HostRoutes, "a list of host routes"),
		} {
			if err != nil {
				return err
			}
		}
		if in.has("gateway_ip") {
			var g *string
			if _, err := in.nullableStr("gateway_ip", &g); err != nil {
				return err
			}
			if g != nil {
				if _, err := validGateway(prefix, *g); err != nil {
					return err
				}
			}
			s.GatewayIP = g
		}
		if in.has("allocation_pools") {
			var pools []store.AllocationPool
			if err := in.decode("allocation_pools", &pools, "a list of allocation pools"); err != nil {
				return err
			}
			s.AllocationPools = pools
		}
		var gw *netip.Addr
		if s.GatewayIP != nil {
			g := netip.MustParseAddr(*s.GatewayIP)
			gw = &g
		}
		if err := ipam.ValidatePools(prefix, gw, s.AllocationPools); err != nil {
			return invalidInput("%s", err.Error())
		}
		if err := validateSubnetExtras(s); err != nil {
			return err
		}
		if err := tx.UpdateSubnet(s); err != nil {
			return err
		}
		view = subnetView(s)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{"subnet": view}, nil
}

func (a *API) deleteSubnet(ctx context.Context, id Identity, subID string) error {
	_, err := a.db.Write(ctx, func(tx *store.Tx) error {
		s, err := visibleSubnet(tx, id, subID)
		if err != nil {
			return err
		}
		if !owns(id, s.ProjectID) {
			return policyDenied("rule:delete_subnet")
		}
		if hn, err := tx.ListHANetworks(store.Where{"network_id": s.NetworkID}); err != nil {
			return err
		} else if len(hn) > 0 {
			return errf(http.StatusConflict, "SubnetInUse", "Unable to complete operation on subnet %s: it is the subnet of an HA network.", s.ID)
		}
		n, err := tx.CountSubnetAllocations(s.ID)
		if err != nil {
			return err
		}
		if n > 0 {
			return errf(http.StatusConflict, "SubnetInUse", "Unable to complete operation on subnet %s: One or more ports have an IP allocation from this subnet.", s.ID)
		}
		if err := tx.DeleteSubnet(s.ID); err != nil {
			return fmt.Errorf("deleting subnet %s: %w", s.ID, err)
		}
		return tx.TouchNetwork(s.NetworkID)
	})
	return err
}

// sortedKeys is used by views that render maps of ids.
func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
