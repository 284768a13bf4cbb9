package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"

	"github.com/google/uuid"
	"github.com/l3ha/l3ha/internal/ha"
	"github.com/l3ha/l3ha/internal/ipam"
	"github.com/l3ha/l3ha/internal/store"
)

func init() {
	register(&resource{
		collection: "floatingips", singular: "floatingip",
		notFound: func(id string) *Error {
			return errf(http.StatusNotFound, "FloatingIPNotFound", "Floating IP %s could not be found", id)
		},
		load: (*API).loadFIPs, get: (*API).getFIP,
		create: (*API).createFIP, update: (*API).updateFIP, delete: (*API).deleteFIP,
		sample: func() map[string]any { return fipView(&store.FloatingIP{}, nil) },
	})
}

func fipView(f *store.FloatingIP, port *store.Port) map[string]any {
	o := std(map[string]any{}, f.ID, f.ProjectID, f.Revision, f.CreatedAt, f.UpdatedAt)
	o["description"] = f.Description
	o["fixed_ip_address"] = strOrNil(f.FixedIP)
	o["floating_ip_address"] = f.FloatingIP
	o["floating_network_id"] = f.FloatingNetworkID
	o["port_id"] = strOrNil(f.FixedPortID)
	o["router_id"] = strOrNil(f.RouterID)
	o["status"] = f.Status
	o["port_details"] = nil
	if port != nil {
		o["port_details"] = map[string]any{
			"admin_state_up": port.AdminStateUp, "device_id": port.DeviceID, "device_owner": port.DeviceOwner,
			"mac_address": port.MACAddress, "name": port.Name, "network_id": port.NetworkID, "status": port.Status,
		}
	}
	return o
}

func (a *API) renderFIPs(tx *store.Tx, fips []*store.FloatingIP) ([]map[string]any, error) {
	var ids []string
	for _, f := range fips {
		if f.FixedPortID != nil {
			ids = append(ids, *f.FixedPortID)
		}
	}
	ports := map[string]*store.Port{}
	if len(ids) > 0 {
		ps, err := tx.ListPorts(store.Where{"id": ids})
		if err != nil {
			return nil, err
		}
		for _, p := range ps {
			ports[p.ID] = p
		}
	}
	out := make([]map[string]any, 0, len(fips))
	for _, f := range fips {
		var p *store.Port
		if f.FixedPortID != nil {
			p = ports[*f.FixedPortID]
		}
		out = append(out, fipView(f, p))
	}
	return out, nil
}

func (a *API) loadFIPs(tx *store.Tx, id Identity) ([]map[string]any, error) {
	var w store.Where
	if !id.Admin {
		w = store.Where{"project_id": id.ProjectID}
	}
	fips, err := tx.ListFloatingIPs(w)
	if err != nil {
		return nil, err
	}
	return a.renderFIPs(tx, fips)
}

func ownedFIP(tx *store.Tx, id Identity, fipID string) (*store.FloatingIP, error) {
	f, err := tx.GetFloatingIP(fipID)
	if errors.Is(err, store.ErrNotFound) || err == nil && !visible(id, f.ProjectID) {
		return nil, resources["floatingips"].notFound(fipID)
	}
	return f, err
}

func (a *API) getFIP(tx *store.Tx, id Identity, fipID string) (map[string]any, error) {
	f, err := ownedFIP(tx, id, fipID)
	if err != nil {
		return nil, err
	}
	out, err := a.renderFIPs(tx, []*store.FloatingIP{f})
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// fipAttrs: dns_name and dns_domain (dns-integration) are not
// implemented, so unrecognized, a 400.
var fipAttrs = map[string]attr{
	"floating_network_id": {post: true}, "port_id": {post: true, put: true},
	"fixed_ip_address": {post: true, put: true}, "floating_ip_address": {post: true},
	"description": {post: true, put: true}, "subnet_id": {post: true},
}

// associate points f at a port (portID "" disassociates), finding the
// router that connects the port's subnet to the floating network.
func (a *API) associate(tx *store.Tx, id Identity, f *store.FloatingIP, portID, fixedIP string) error {
	if portID == "" {
		f.FixedPortID, f.FixedIP, f.RouterID, f.Status = nil, nil, nil, "DOWN"
		return nil
	}
	p, err := visiblePort(tx, id, portID)
	if err != nil {
		return err
	}
	if routerOwned(p.DeviceOwner) {
		return badRequest("Bad floatingip request: Port %s has owner %s and therefore cannot be associated with a floating IP.", p.ID, p.DeviceOwner)
	}
	var chosen *store.FixedIP
	for i := range p.FixedIPs {
		if fixedIP == "" || p.FixedIPs[i].IPAddress == fixedIP {
			chosen = &p.FixedIPs[i]
			break
		}
	}
	if chosen == nil {
		if fixedIP != "" {
			return badRequest("Bad floatingip request: Port %s does not have fixed ip %s.", p.ID, fixedIP)
		}
		return badRequest("Bad floatingip request: Port %s does not have any IPv4 fixed IP.", p.ID)
	}
	others, err := tx.ListFloatingIPs(store.Where{"fixed_port_id": p.ID})
	if err != nil {
		return err
	}
	for _, o := range others {
		if o.ID != f.ID && o.FixedIP != nil && *o.FixedIP == chosen.IPAddress && o.FloatingNetworkID == f.FloatingNetworkID {
			return errf(http.StatusConflict, "FloatingIPPortAlreadyAssociated", "Cannot associate floating IP %s (%s) with port %s using fixed IP %s, as that fixed IP already has a floating IP on external network %s.", f.FloatingIP, f.ID, p.ID, chosen.IPAddress, f.FloatingNetworkID)
		}
	}
	routerID, err := routerForFIP(tx, chosen.SubnetID, f.FloatingNetworkID)
	if err != nil {
		return err
	}
	if routerID == "" {
		return errf(http.StatusNotFound, "ExternalGatewayForFloatingIPNotFound", "External network %s is not reachable from subnet %s.  Therefore, cannot associate Port %s with a Floating IP.", f.FloatingNetworkID, chosen.SubnetID, p.ID)
	}
	f.FixedPortID, f.FixedIP, f.RouterID, f.Status = &p.ID, &chosen.IPAddress, &routerID, "ACTIVE"
	return nil
}

// routerForFIP finds a router with an interface on subnet and its gateway on
// the external network.
func routerForFIP(tx *store.Tx, subnetID, extNetID string) (string, error) {
	ifaces, err := tx.ListPorts(store.Where{"device_owner": []string{ha.OwnerRouterInterface, ha.OwnerReplicatedInterface}})
	if err != nil {
		return "", err
	}
	for _, p := range ifaces {
		for _, ip := range p.FixedIPs {
			if ip.SubnetID != subnetID {
				continue
			}
			r, err := tx.GetRouter(p.DeviceID)
			if err != nil || r.GWPortID == nil {
				continue
			}
			gw, err := tx.GetPort(*r.GWPortID)
			if err == nil && gw.NetworkID == extNetID {
				return r.ID, nil
			}
		}
	}
	return "", nil
}

func (a *API) createFIP(ctx context.Context, id Identity, body map[string]json.RawMessage) (any, error) {
	in := input{m: body, singular: "floatingip"}
	if err := checkAttrs(in, fipAttrs, true, id); err != nil {
		return nil, err
	}
	project, perr := in.project(id)
	if perr != nil {
		return nil, perr
	}
	f := &store.FloatingIP{ID: uuid.NewString(), ProjectID: project, Status: "DOWN"}
	var portID, fixedIP, address, subnetID string
	for _, err := range []*Error{
		in.uuidAttr("floating_network_id", &f.FloatingNetworkID), in.uuidAttr("port_id", &portID),
		in.str("fixed_ip_address", 64, &fixedIP), in.str("floating_ip_address", 64, &address),
		in.str("description", 255, &f.Description), in.uuidAttr("subnet_id", &subnetID),
	} {
		if err != nil {
			return nil, err
		}
	}
	if f.FloatingNetworkID == "" {
		return nil, badRequest("Failed to parse request. Required attribute 'floating_network_id' not specified")
	}
	if fixedIP != "" {
		if _, err := parseIPv4("fixed_ip_address", fixedIP); err != nil {
			return nil, err
		}
	}
	if address != "" {
		if _, err := netip.ParseAddr(address); err != nil {
			return nil, badRequest("Invalid input for floating_ip_address. Reason: '%s' is not a valid IP address.", shortRaw(address))
		}
	}
	var view map[string]any
	err := a.write(ctx, func(tx *store.Tx) error {
		n, err := visibleNetwork(tx, id, f.FloatingNetworkID)
		if err != nil {
			return err
		}
		if !n.External {
			return badRequest("Bad floatingip request: Network %s is not a valid external network.", n.ID)
		}
		var reqs []fixedIPRequest
		if address != "" || subnetID != "" {
			reqs = []fixedIPRequest{{SubnetID: subnetID, IPAddress: address}}
		}
		fixed, err := allocateFixedIPs(tx, n, reqs, reqs != nil)
		if err != nil {
			return err
		}
		if len(fixed) == 0 {
			return badRequest("Bad floatingip request: external network %s has no subnet.", n.ID)
		}
		mac, err := ipam.AllocateMAC(tx, n.ID, newRand())
		if err != nil {
			return err
		}
		fp := &store.Port{
			ID: uuid.NewString(), NetworkID: n.ID, ProjectID: "", AdminStateUp: true,
			MACAddress: mac, DeviceID: f.ID, DeviceOwner: ha.OwnerFloatingIP,
			Status: "N/A", FixedIPs: fixed[:1],
		}
		if err := tx.InsertPort(fp); err != nil {
			return err
		}
		f.FloatingPortID, f.FloatingIP = fp.ID, fixed[0].IPAddress
		if err := a.associate(tx, id, f, portID, fixedIP); err != nil {
			return err
		}
		if err := tx.InsertFloatingIP(f); err != nil {
			return err
		}
		out, err := a.renderFIPs(tx, []*store.FloatingIP{f})
		if err == nil {
			view = out[0]
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{"floatingip": view}, nil
}

func (a *API) updateFIP(ctx context.Context, id Identity, fipID string, body map[string]json.RawMessage) (any, error) {
	in := input{m: body, singular: "floatingip"}
	if err := checkAttrs(in, fipAttrs, false, id); err != nil {
		return nil, err
	}
	var view map[string]any
	_, err := a.db.Write(ctx, func(tx *store.Tx) error {
		f, err := ownedFIP(tx, id, fipID)
		if err != nil {
			return err
		}
		if err := in.str("description", 255, &f.Description); err != nil {
			return err
		}
		if in.has("port_id") {
			var portID *string
			if _, err := in.nullableStr("port_id", &portID); err != nil {
				return err
			}
			var fixedIP string
			if err := in.str("fixed_ip_address", 64, &fixedIP); err != nil {
				return err
			}
			p := ""
			if portID != nil {
				if !isUUID(*portID) {
					return badRequest("Invalid input for port_id. Reason: '%s' is not a valid UUID.", shortRaw(*portID))
				}
				p = *portID
			}
			if err := a.associate(tx, id, f, p, fixedIP); err != nil {
				return err
			}
		}
		if err := tx.UpdateFloatingIP(f); err != nil {
			return err
		}
		out, err := a.renderFIPs(tx, []*store.FloatingIP{f})
		if err == nil {
			view = out[0]
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{"floatingip": view}, nil
}

func (a *API) deleteFIP(ctx context.Context, id Identity, fipID string) error {
	_, err := a.db.Write(ctx, func(tx *store.Tx) error {
		f, err := ownedFIP(tx, id, fipID)
		if err != nil {
			return err
		}
		if err := tx.DeleteFloatingIP(f.ID); err != nil {
			return err
		}
		return tx.DeletePort(f.FloatingPortID)
	})
	return err
}
