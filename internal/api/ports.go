package api

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"strings"

	"github.com/google/uuid"
	"github.com/l3ha/l3ha/internal/ha"
	"github.com/l3ha/l3ha/internal/ipam"
	"github.com/l3ha/l3ha/internal/store"
)

func init() {
	register(&resource{
		collection: "ports", singular: "port",
		notFound: func(id string) *Error {
			return errf(http.StatusNotFound, "PortNotFound", "Port %s could not be found.", id)
		},
		load: (*API).loadPorts, get: (*API).getPort,
		create: (*API).createPort, update: (*API).updatePort, delete: (*API).deletePort,
		sample: func() map[string]any { return portView(&store.Port{}, true) },
	})
}

func notFoundPort(id string) *Error { return resources["ports"].notFound(id) }

func newRand() *rand.Rand { return rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())) }

// routerOwned reports whether a device owner marks a port managed by the L3
// service, which users may not delete or re-address directly.
func routerOwned(owner string) bool {
	switch owner {
	case ha.OwnerHAInterface, ha.OwnerRouterInterface, ha.OwnerReplicatedInterface, ha.OwnerRouterGateway, ha.OwnerFloatingIP:
		return true
	}
	return false
}

func portView(p *store.Port, admin bool) map[string]any {
	o := std(map[string]any{}, p.ID, p.ProjectID, p.Revision, p.CreatedAt, p.UpdatedAt)
	o["admin_state_up"] = p.AdminStateUp
	// binding:vnic_type is always normal: the only kind of port the data
	// plane plugs (createPort and updatePort refuse the others).
	o["binding:vnic_type"] = "normal"
	o["description"] = p.Description
	o["device_id"] = p.DeviceID
	o["device_owner"] = p.DeviceOwner
	o["fixed_ips"] = nonNilSlice(p.FixedIPs)
	o["mac_address"] = p.MACAddress
	o["name"] = p.Name
	o["network_id"] = p.NetworkID
	o["status"] = p.Status
	if admin {
		o["binding:host_id"] = p.HostID
		o["binding:profile"] = map[string]any{}
		o["binding:vif_details"] = map[string]any{}
		if p.HostID == "" {
			o["binding:vif_type"] = "unbound"
		} else {
			o["binding:vif_type"] = "bridge"
		}
	}
	return o
}

func (a *API) loadPorts(tx *store.Tx, id Identity) ([]map[string]any, error) {
	var w store.Where
	if !id.Admin {
		w = store.Where{"project_id": id.ProjectID}
	}
	ports, err := tx.ListPorts(w)
	if err != nil {
		return nil, err
	}
	out := make([]map[string]any, 0, len(ports))
	for _, p := range ports {
		out = append(out, portView(p, id.Admin))
	}
	return out, nil
}

func visiblePort(tx *store.Tx, id Identity, portID string) (*store.Port, error) {
	p, err := tx.GetPort(portID)
	if errors.Is(err, store.ErrNotFound) || err == nil && !visible(id, p.ProjectID) {
		return nil, notFoundPort(portID)
	}
	return p, err
}

func (a *API) getPort(tx *store.Tx, id Identity, portID string) (map[string]any, error) {
	p, err := visiblePort(tx, id, portID)
	if err != nil {
		return nil, err
	}
	return portView(p, id.Admin), nil
}

// portAttrs are the port attributes l3ha does something with: the core
// ones and the binding extension's. Those of extensions l3ha does not
// implement — security_groups, port_security_enabled,
// allowed_address_pairs (nothing filters a port's traffic), extra_dhcp_opts
// (there is no DHCP service) — are unrecognized attributes, a 400, as in a
// Neutron without those extensions: accepting and dropping them would let
// a tenant believe a port is filtered when it is not.
var portAttrs = map[string]attr{
	"name": {post: true, put: true}, "description": {post: true, put: true},
	"network_id": {post: true}, "admin_state_up": {post: true, put: true},
	"mac_address": {post: true}, "fixed_ips": {post: true, put: true},
	"device_id": {post: true, put: true}, "device_owner": {post: true, put: true},
	"binding:host_id": {post: true, put: true, adminOnly: true}, "binding:vnic_type": {post: true, put: true},
	"binding:profile": {post: true, put: true, adminOnly: true},
}

// checkBinding refuses the binding attributes l3ha cannot honour: a vnic
// type other than normal (no SR-IOV, macvtap or baremetal plugging) and a
// non-empty binding:profile (no mechanism driver reads one). Both are
// otherwise accepted as no-ops that say what l3ha does anyway.
func checkBinding(in input) *Error {
	if raw, ok := in.m["binding:vnic_type"]; ok {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil || s != "normal" {
			return badRequest("Invalid input for binding:vnic_type. Reason: '%s' is not in ['normal'].", shortRaw(string(raw)))
		}
	}
	if raw, ok := in.m["binding:profile"]; ok && string(raw) != "null" {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil || m == nil {
			return badRequest("Invalid input for binding:profile. Reason: '%s' is not a dictionary.", shortRaw(string(raw)))
		}
		if len(m) > 0 {
			return badRequest("Invalid input for binding:profile. Reason: l3ha reads no binding profile; it must be empty.")
		}
	}
	return nil
}

type fixedIPRequest struct {
	SubnetID  string `json:"subnet_id"`
	IPAddress string `json:"ip_address"`
}

// allocateFixedIPs resolves a port's fixed_ips request on network n: each
// entry names a subnet, an address, or both; no request means one address
// from the network's first subnet.
func allocateFixedIPs(tx *store.Tx, n *store.Network, reqs []fixedIPRequest, explicit bool) ([]store.FixedIP, error) {
	subs, err := tx.ListSubnets(store.Where{"network_id": n.ID})
	if err != nil {
		return nil, err
	}
	if !explicit {
		if len(subs) == 0 {
			return nil, nil
		}
		reqs = []fixedIPRequest{{SubnetID: subs[0].ID}}
	}
	var out []store.FixedIP
	taken := map[string]bool{}
	for _, req := range reqs {
		var sub *store.Subnet
		var addr netip.Addr
		if req.IPAddress != "" {
			a, perr := parseIPv4("ip_address", req.IPAddress)
			if perr != nil {
				return nil, perr
			}
			addr = a
		}
		for _, s := range subs {
			p := netip.MustParsePrefix(s.CIDR)
			if req.SubnetID == s.ID || req.SubnetID == "" && addr.IsValid() && p.Contains(addr) {
				sub = s
				break
			}
		}
		if sub == nil {
			if req.SubnetID != "" {
				return nil, badRequest("Invalid input for operation: Failed to create port on network %s, because fixed_ips included invalid subnet %s.", n.ID, req.SubnetID)
			}
			return nil, badRequest("Invalid input for operation: IP address %s is not a valid IP for any of the subnets on the specified network.", req.IPAddress)
		}
		if addr.IsValid() {
			p := netip.MustParsePrefix(sub.CIDR)
			if !p.Contains(addr) || addr == p.Masked().Addr() || addr == ipam.LastAddr(p) {
				return nil, badRequest("Invalid input for operation: IP address %s is not a valid IP for the specified subnet.", req.IPAddress)
			}
		}
		ip, holder, err := ipam.AllocateFixedIP(tx, sub, req.IPAddress, true, nil)
		if errors.Is(err, ipam.ErrExhausted) {
			return nil, errf(http.StatusConflict, "IpAddressGenerationFailure", "No more IP addresses available on network %s.", n.ID)
		}
		if err != nil {
			return nil, err
		}
		if holder != "" || taken[ip] {
			return nil, errf(http.StatusConflict, "IpAddressAlreadyAllocated", "IP address %s already allocated in subnet %s", ip, sub.ID)
		}
		taken[ip] = true
		out = append(out, store.FixedIP{SubnetID: sub.ID, IPAddress: ip})
	}
	return out, nil
}

func (a *API) createPort(ctx context.Context, id Identity, body map[string]json.RawMessage) (any, error) {
	in := input{m: body, singular: "port"}
	if err := checkAttrs(in, portAttrs, true, id); err != nil {
		return nil, err
	}
	if err := checkBinding(in); err != nil {
		return nil, err
	}
	project, perr := in.project(id)
	if perr != nil {
		return nil, perr
	}
	p := &store.Port{ID: uuid.NewString(), ProjectID: project, AdminStateUp: true, Status: "DOWN"}
	var reqs []fixedIPRequest
	for _, err := range []*Error{
		in.str("name", 255, &p.Name), in.str("description", 255, &p.Description),
		in.uuidAttr("network_id", &p.NetworkID), in.boolean("admin_state_up", &p.AdminStateUp),
		in.str("device_id", 255, &p.DeviceID), in.str("device_owner", 255, &p.DeviceOwner),
		in.str("binding:host_id", 255, &p.HostID), in.str("mac_address", 17, &p.MACAddress),
		in.decode("fixed_ips", &reqs, "a valid list of fixed IPs"),
	} {
		if err != nil {
			return nil, err
		}
	}
	if p.NetworkID == "" {
		return nil, badRequest("Failed to parse request. Required attribute 'network_id' not specified")
	}
	if routerOwned(p.DeviceOwner) {
		return nil, badRequest("Bad request: device_owner %s is reserved for ports the L3 service creates.", p.DeviceOwner)
	}
	if p.MACAddress != "" {
		if !validMAC(p.MACAddress) {
			return nil, badRequest("Invalid input for mac_address. Reason: '%s' is not a valid MAC address.", shortRaw(p.MACAddress))
		}
	}
	generatedMAC := p.MACAddress == ""
	var view map[string]any
	err := a.write(ctx, func(tx *store.Tx) error {
		n, err := visibleNetwork(tx, id, p.NetworkID)
		if err != nil {
			return err
		}
		if !generatedMAC && !id.Admin && n.ProjectID != id.ProjectID {
			// create_port:mac_address is admin_or_network_owner.
			return policyDenied("(rule:create_port and rule:create_port:mac_address)")
		}
		if !owns(id, n.ProjectID) && !n.Shared {
			return policyDenied("rule:create_port")
		}
		if p.FixedIPs, err = allocateFixedIPs(tx, n, reqs, in.has("fixed_ips")); err != nil {
			return err
		}
		if generatedMAC {
			if p.MACAddress, err = ipam.AllocateMAC(tx, n.ID, newRand()); err != nil {
				return err
			}
		}
		if err := tx.InsertPort(p); err != nil {
			if store.IsUniqueViolation(err) {
				return errf(http.StatusConflict, "MacAddressInUse", "Unable to complete operation for network %s. The mac address %s is in use.", n.ID, p.MACAddress)
			}
			return err
		}
		view = portView(p, id.Admin)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{"port": view}, nil
}

func validMAC(s string) bool {
	parts := strings.Split(s, ":")
	if len(parts) != 6 {
		return false
	}
	for _, p := range parts {
		if len(p) != 2 || strings.Trim(strings.ToLower(p), "0123456789abcdef") != "" {
			return false
		}
	}
	return true
}

func (a *API) updatePort(ctx context.Context, id Identity, portID string, body map[string]json.RawMessage) (any, error) {
	in := input{m: body, singular: "port"}
	if err := checkAttrs(in, portAttrs, false, id); err != nil {
		return nil, err
	}
	if err := checkBinding(in); err != nil {
		return nil, err
	}
	var view map[string]any
	_, err := a.db.Write(ctx, func(tx *store.Tx) error {
		p, err := visiblePort(tx, id, portID)
		if err != nil {
			return err
		}
		owner, device := p.DeviceOwner, p.DeviceID
		for _, err := range []*Error{
			in.str("name", 255, &p.Name), in.str("description", 255, &p.Description),
			in.boolean("admin_state_up", &p.AdminStateUp), in.str("device_id", 255, &p.DeviceID),
			in.str("device_owner", 255, &p.DeviceOwner), in.str("binding:host_id", 255, &p.HostID),
		} {
			if err != nil {
				return err
			}
		}
		if routerOwned(owner) && (p.DeviceOwner != owner || p.DeviceID != device) {
			return errf(http.StatusConflict, "L3PortIPChangeNotAllowed", "Port %s is owned by the L3 service (device owner %s): its device_id and device_owner cannot be changed directly.", p.ID, owner)
		}
		if routerOwned(p.DeviceOwner) && p.DeviceOwner != owner {
			return badRequest("Bad request: device_owner %s is reserved for ports the L3 service creates.", p.DeviceOwner)
		}
		if in.has("fixed_ips") {
			var reqs []fixedIPRequest
			if err := in.decode("fixed_ips", &reqs, "a valid list of fixed IPs"); err != nil {
				return err
			}
			old := p.FixedIPs
			kept, add := changedFixedIPs(old, reqs)
			if len(add) > 0 || len(kept) != len(old) {
				switch owner {
				case ha.OwnerRouterInterface, ha.OwnerReplicatedInterface, ha.OwnerHAInterface:
					// Neutron's l3-port-ip-change-not-allowed.
					return errf(http.StatusBadRequest, "BadRequest", "Bad ports request: IP updates for port %s are not allowed.", p.ID)
				case ha.OwnerRouterGateway, ha.OwnerFloatingIP:
					return errf(http.StatusConflict, "L3PortIPChangeNotAllowed", "Port %s is owned by the L3 service (device owner %s): its fixed IPs cannot be changed directly.", p.ID, owner)
				}
			}
			// Free the dropped addresses first, so that the new ones may
			// take them over.
			p.FixedIPs = kept
			if err := tx.UpdatePort(p); err != nil {
				return err
			}
			p.Revision--
			n, err := tx.GetNetwork(p.NetworkID)
			if err != nil {
				return err
			}
			added, err := allocateFixedIPs(tx, n, add, true)
			if err != nil {
				return err
			}
			p.FixedIPs = append(kept, added...)
			if err := checkFixedIPsNotUsedByFIP(tx, p, old); err != nil {
				return err
			}
		}
		if err := tx.UpdatePort(p); err != nil {
			return err
		}
		view = portView(p, id.Admin)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{"port": view}, nil
}

// changedFixedIPs splits a port update's fixed_ips request the way
// Neutron's IPAM does: an entry naming an address the port has keeps it, an
// entry naming only a subnet the port has an address on keeps that address,
// anything else is to be allocated; the port's other addresses are dropped.
func changedFixedIPs(old []store.FixedIP, reqs []fixedIPRequest) (kept []store.FixedIP, add []fixedIPRequest) {
	claimed := make([]bool, len(old))
	for _, req := range reqs {
		if req.IPAddress == "" {
			continue
		}
		found := false
		for i, ip := range old {
			if !claimed[i] && ip.IPAddress == req.IPAddress {
				claimed[i], found = true, true
				break
			}
		}
		if !found {
			add = append(add, req)
		}
	}
	for _, req := range reqs {
		if req.IPAddress != "" {
			continue
		}
		found := false
		for i, ip := range old {
			if !claimed[i] && req.SubnetID != "" && ip.SubnetID == req.SubnetID {
				claimed[i], found = true, true
				break
			}
		}
		if !found {
			add = append(add, req)
		}
	}
	for i, ip := range old {
		if claimed[i] {
			kept = append(kept, ip)
		}
	}
	return kept, add
}

// checkFixedIPsNotUsedByFIP refuses to drop an address a floating IP maps to.
func checkFixedIPsNotUsedByFIP(tx *store.Tx, p *store.Port, old []store.FixedIP) error {
	fips, err := tx.ListFloatingIPs(store.Where{"fixed_port_id": p.ID})
	if err != nil {
		return err
	}
	for _, f := range fips {
		kept := false
		for _, ip := range p.FixedIPs {
			if f.FixedIP != nil && ip.IPAddress == *f.FixedIP {
				kept = true
			}
		}
		if !kept {
			return errf(http.StatusConflict, "FloatingIPPortAlreadyAssociated", "Fixed IP %s of port %s is used by floating IP %s; disassociate it first.", *f.FixedIP, p.ID, f.ID)
		}
	}
	return nil
}

func (a *API) deletePort(ctx context.Context, id Identity, portID string) error {
	_, err := a.db.Write(ctx, func(tx *store.Tx) error {
		p, err := visiblePort(tx, id, portID)
		if err != nil {
			return err
		}
		if routerOwned(p.DeviceOwner) {
			return errf(http.StatusConflict, "ServicePortInUse", "Port %s cannot be deleted directly via the port API: has device owner %s.", p.ID, p.DeviceOwner)
		}
		// Floating IPs pointing at the port are disassociated, as in Neutron.
		fips, err := tx.ListFloatingIPs(store.Where{"fixed_port_id": p.ID})
		if err != nil {
			return err
		}
		for _, f := range fips {
			f.FixedPortID, f.FixedIP, f.RouterID, f.Status = nil, nil, nil, "DOWN"
			if err := tx.UpdateFloatingIP(f); err != nil {
				return err
			}
		}
		return tx.DeletePort(p.ID)
	})
	return err
}
