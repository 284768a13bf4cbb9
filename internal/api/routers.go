package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"

	"github.com/google/uuid"
	"github.com/l3ha/l3ha/internal/ha"
	"github.com/l3ha/l3ha/internal/ipam"
	"github.com/l3ha/l3ha/internal/store"
)

func init() {
	register(&resource{
		collection: "routers", singular: "router",
		notFound: func(id string) *Error {
			return errf(http.StatusNotFound, "RouterNotFound", "Router %s could not be found", id)
		},
		load: (*API).loadRouters, get: (*API).getRouter,
		create: (*API).createRouter, update: (*API).updateRouter, delete: (*API).deleteRouter,
		sample: func() map[string]any { return routerView(&store.Router{}, &routerContext{}, true) },
	})
}

func notFoundRouter(id string) *Error { return resources["routers"].notFound(id) }

func badRouter(format string, args ...any) *Error {
	return errf(http.StatusBadRequest, "BadRequest", "Bad router request: "+format, args...)
}

// errNoDVR refuses distributed routers: the agents run every router
// centrally, so accepting distributed=true would promise what nothing
// does (and the dvr extension is not listed). distributed=false is
// accepted and shown, as Neutron shows it.
var errNoDVR = badRouter("distributed routers (DVR) are not implemented by l3ha; distributed must be false.")

// routerContext is what rendering routers needs besides the rows.
type routerContext struct {
	gwPorts map[string]*store.Port // by port id
}

func loadRouterContext(tx *store.Tx, routers []*store.Router) (*routerContext, error) {
	rc := &routerContext{gwPorts: map[string]*store.Port{}}
	var gwIDs []string
	for _, r := range routers {
		if r.GWPortID != nil {
			gwIDs = append(gwIDs, *r.GWPortID)
		}
	}
	if len(gwIDs) > 0 {
		w := store.Where{"device_owner": ha.OwnerRouterGateway}
		if len(gwIDs) <= 200 {
			w = store.Where{"id": gwIDs}
		}
		ports, err := tx.ListPorts(w)
		if err != nil {
			return nil, err
		}
		for _, p := range ports {
			rc.gwPorts[p.ID] = p
		}
	}
	return rc, nil
}

func routerView(r *store.Router, rc *routerContext, admin bool) map[string]any {
	o := std(map[string]any{}, r.ID, r.ProjectID, r.Revision, r.CreatedAt, r.UpdatedAt)
	o["admin_state_up"] = r.AdminStateUp
	o["description"] = r.Description
	o["name"] = r.Name
	o["routes"] = nonNilSlice(r.Routes)
	o["status"] = r.Status
	o["external_gateway_info"] = nil
	if r.GWPortID != nil {
		if p := rc.gwPorts[*r.GWPortID]; p != nil {
			o["external_gateway_info"] = map[string]any{
				"network_id": p.NetworkID, "enable_snat": r.EnableSNAT,
				"external_fixed_ips": nonNilSlice(p.FixedIPs),
			}
		}
	}
	if admin {
		o["ha"] = r.HA
		o["distributed"] = r.Distributed
	}
	return o
}

func (a *API) loadRouters(tx *store.Tx, id Identity) ([]map[string]any, error) {
	var w store.Where
	if !id.Admin {
		w = store.Where{"project_id": id.ProjectID}
	}
	routers, err := tx.ListRouters(w)
	if err != nil {
		return nil, err
	}
	rc, err := loadRouterContext(tx, routers)
	if err != nil {
		return nil, err
	}
	out := make([]map[string]any, 0, len(routers))
	for _, r := range routers {
		out = append(out, routerView(r, rc, id.Admin))
	}
	return out, nil
}

// ownedRouter loads a router the identity owns (tenants: another project's
// router is a 404, as in Neutron).
func ownedRouter(tx *store.Tx, id Identity, routerID string) (*store.Router, error) {
	r, err := tx.GetRouter(routerID)
	if errors.Is(err, store.ErrNotFound) || err == nil && !visible(id, r.ProjectID) {
		return nil, notFoundRouter(routerID)
	}
	return r, err
}

func (a *API) renderRouter(tx *store.Tx, r *store.Router, admin bool) (map[string]any, error) {
	rc, err := loadRouterContext(tx, []*store.Router{r})
	if err != nil {
		return nil, err
	}
	return routerView(r, rc, admin), nil
}

func (a *API) getRouter(tx *store.Tx, id Identity, routerID string) (map[string]any, error) {
	r, err := ownedRouter(tx, id, routerID)
	if err != nil {
		return nil, err
	}
	return a.renderRouter(tx, r, id.Admin)
}

// routerAttrs are the attributes of router, ext-gw-mode, extraroute and
// l3-ha (and distributed, refused unless false: errNoDVR).
// availability_zone_hints (router_availability_zone) and flavor_id
// (l3-flavors) are not implemented: unrecognized, a 400.
var routerAttrs = map[string]attr{
	"name": {post: true, put: true}, "description": {post: true, put: true},
	"admin_state_up": {post: true, put: true}, "ha": {post: true, put: true, adminOnly: true},
	"distributed": {post: true, put: true, adminOnly: true}, "external_gateway_info": {post: true, put: true},
	"routes": {put: true},
}

// gatewayRequest is a decoded external_gateway_info; nil means "clear".
type gatewayRequest struct {
	NetworkID  string
	EnableSNAT *bool
	FixedIPs   []fixedIPRequest
	hasFixed   bool
}

func parseGateway(raw json.RawMessage, id Identity, op string) (*gatewayRequest, *Error) {
	if string(raw) == "null" {
		return nil, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, badRequest("Invalid input for external_gateway_info. Reason: '%s' is not a dictionary.", shortRaw(string(raw)))
	}
	if len(m) == 0 {
		return nil, nil
	}
	in := input{m: m, singular: "router"}
	for k := range m {
		// qos_policy_id (qos-gateway-ip) is not implemented: unexpected.
		if k != "network_id" && k != "enable_snat" && k != "external_fixed_ips" {
			return nil, badRequest("Invalid input for external_gateway_info. Reason: Unexpected keys supplied: %s.", k)
		}
	}
	if !id.Admin {
		if in.has("enable_snat") {
			return nil, policyDenied(fmt.Sprintf("(rule:%s_router and rule:%s_router:external_gateway_info and rule:%s_router:external_gateway_info:enable_snat)", op, op, op))
		}
		if in.has("external_fixed_ips") {
			return nil, policyDenied(fmt.Sprintf("(rule:%s_router and rule:%s_router:external_gateway_info and rule:%s_router:external_gateway_info:external_fixed_ips)", op, op, op))
		}
	}
	g := &gatewayRequest{}
	if err := in.uuidAttr("network_id", &g.NetworkID); err != nil {
		return nil, err
	}
	if g.NetworkID == "" {
		return nil, badRequest("Invalid input for external_gateway_info. Reason: Validation of dictionary's keys failed. Expected keys: {'network_id'} Provided keys: set().")
	}
	if in.has("enable_snat") {
		var b bool
		if err := in.boolean("enable_snat", &b); err != nil {
			return nil, err
		}
		g.EnableSNAT = &b
	}
	if in.has("external_fixed_ips") {
		g.hasFixed = true
		if err := in.decode("external_fixed_ips", &g.FixedIPs, "a valid list of fixed IPs"); err != nil {
			return nil, err
		}
	}
	return g, nil
}

func (a *API) createRouter(ctx context.Context, id Identity, body map[string]json.RawMessage) (any, error) {
	in := input{m: body, singular: "router"}
	if err := checkAttrs(in, routerAttrs, true, id); err != nil {
		return nil, err
	}
	project, perr := in.project(id)
	if perr != nil {
		return nil, perr
	}
	r := &store.Router{ID: uuid.NewString(), ProjectID: project, AdminStateUp: true, Status: "ACTIVE", HA: a.opts.DefaultHA, EnableSNAT: true}
	for _, err := range []*Error{
		in.str("name", 255, &r.Name), in.str("description", 255, &r.Description),
		in.boolean("admin_state_up", &r.AdminStateUp), in.boolean("ha", &r.HA), in.boolean("distributed", &r.Distributed),
	} {
		if err != nil {
			return nil, err
		}
	}
	if r.Distributed {
		return nil, errNoDVR
	}
	var gw *gatewayRequest
	if raw, ok := body["external_gateway_info"]; ok {
		var err *Error
		if gw, err = parseGateway(raw, id, "create"); err != nil {
			return nil, err
		}
	}
	var view map[string]any
	err := a.write(ctx, func(tx *store.Tx) error {
		r.Status = "ACTIVE"
		if r.HA {
			if err := a.ha.CheckEnoughAgents(tx); err != nil {
				return err
			}
		}
		if err := tx.InsertRouter(r); err != nil {
			return err
		}
		if r.HA {
			if err := a.ha.EnableHA(tx, r); err != nil {
				// No VRID could be had: the router exists but cannot run (Neutron's ERROR).
				a.log.Error("HA router has no VRID", "router_id", r.ID, "err", err)
				r.Status = "ERROR"
				if err := tx.UpdateRouter(r); err != nil {
					return err
				}
			}
		}
		if gw != nil {
			if err := a.setGateway(tx, id, r, gw); err != nil {
				return err
			}
		}
		if r.Status == "ACTIVE" {
			if _, err := a.ha.Schedule(tx, r); err != nil {
				return fmt.Errorf("scheduling router %s: %w", r.ID, err)
			}
		}
		var err error
		view, err = a.renderRouter(tx, r, id.Admin)
		return err
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{"router": view}, nil
}

// setGateway sets, changes or (g == nil) clears a router's external gateway.
func (a *API) setGateway(tx *store.Tx, id Identity, r *store.Router, g *gatewayRequest) error {
	var old *store.Port
	if r.GWPortID != nil {
		p, err := tx.GetPort(*r.GWPortID)
		if err != nil {
			return fmt.Errorf("loading gateway port of router %s: %w", r.ID, err)
		}
		old = p
	}
	if old != nil && g != nil && g.NetworkID == old.NetworkID && !g.hasFixed {
		if g.EnableSNAT != nil && *g.EnableSNAT != r.EnableSNAT {
			r.EnableSNAT = *g.EnableSNAT
			return tx.UpdateRouter(r)
		}
		return nil
	}
	var n *store.Network
	if g != nil {
		// The new network is checked before the old gateway is judged, as in
		// Neutron (_validate_gw_info comes first).
		var err error
		if n, err = visibleNetwork(tx, id, g.NetworkID); err != nil {
			return err
		}
		if !n.External {
			return badRouter("Network %s is not an external network", n.ID)
		}
	}
	if old != nil {
		fips, err := tx.ListFloatingIPs(store.Where{"router_id": r.ID})
		if err != nil {
			return err
		}
		if len(fips) > 0 {
			return errf(http.StatusConflict, "RouterExternalGatewayInUseByFloatingIp", "Gateway cannot be updated for router %s, since a gateway to external network %s is required by one or more floating IPs.", r.ID, old.NetworkID)
		}
		r.GWPortID = nil
		if err := tx.UpdateRouter(r); err != nil {
			return err
		}
		if err := tx.DeletePort(old.ID); err != nil {
			return err
		}
	}
	if g == nil {
		r.EnableSNAT = true
		return tx.UpdateRouter(r)
	}
	fixed, err := allocateFixedIPs(tx, n, g.FixedIPs, g.hasFixed)
	if err != nil {
		return err
	}
	if len(fixed) == 0 {
		return badRouter("No subnet is available on external network %s for the gateway.", n.ID)
	}
	if err := checkOverlap(tx, r, fixed, ""); err != nil {
		return err
	}
	mac, err := ipam.AllocateMAC(tx, n.ID, newRand())
	if err != nil {
		return err
	}
	p := &store.Port{
		ID: uuid.NewString(), NetworkID: n.ID, ProjectID: "", AdminStateUp: true,
		MACAddress: mac, DeviceID: r.ID, DeviceOwner: ha.OwnerRouterGateway,
		Status: "DOWN", FixedIPs: fixed,
	}
	if p.HostID, err = a.ha.PortHost(tx, r); err != nil {
		return err
	}
	if err := tx.InsertPort(p); err != nil {
		return err
	}
	r.GWPortID = &p.ID
	r.EnableSNAT = true
	if g.EnableSNAT != nil {
		r.EnableSNAT = *g.EnableSNAT
	}
	return tx.UpdateRouter(r)
}

// routerSubnets returns the subnets a router has an address on (interfaces
// and gateway), optionally skipping one port.
func routerSubnets(tx *store.Tx, r *store.Router, skipPort string) ([]*store.Subnet, error) {
	ports, err := tx.ListPorts(store.Where{"device_id": r.ID})
	if err != nil {
		return nil, err
	}
	var out []*store.Subnet
	for _, p := range ports {
		if p.ID == skipPort || p.DeviceOwner == ha.OwnerHAInterface {
			continue
		}
		for _, ip := range p.FixedIPs {
			s, err := tx.GetSubnet(ip.SubnetID)
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
	}
	return out, nil
}

// checkOverlap refuses addresses whose subnets overlap the router's others.
func checkOverlap(tx *store.Tx, r *store.Router, fixed []store.FixedIP, skipPort string) error {
	existing, err := routerSubnets(tx, r, skipPort)
	if err != nil {
		return err
	}
	for _, ip := range fixed {
		s, err := tx.GetSubnet(ip.SubnetID)
		if err != nil {
			return err
		}
		np := netip.MustParsePrefix(s.CIDR)
		for _, e := range existing {
			if e.ID == s.ID {
				return badRouter("Router already has a port on subnet %s.", s.ID)
			}
			if netip.MustParsePrefix(e.CIDR).Overlaps(np) {
				return badRouter("Cidr %s of subnet %s overlaps with cidr %s of subnet %s.", s.CIDR, s.ID, e.CIDR, e.ID)
			}
		}
	}
	return nil
}

func (a *API) updateRouter(ctx context.Context, id Identity, routerID string, body map[string]json.RawMessage) (any, error) {
	in := input{m: body, singular: "router"}
	if err := checkAttrs(in, routerAttrs, false, id); err != nil {
		return nil, err
	}
	var gw *gatewayRequest
	_, hasGW := body["external_gateway_info"]
	if hasGW {
		var err *Error
		if gw, err = parseGateway(body["external_gateway_info"], id, "update"); err != nil {
			return nil, err
		}
	}
	var routes []store.Route
	if in.has("routes") {
		if err := in.decode("routes", &routes, "a valid list of routes"); err != nil {
			return nil, err
		}
		if routes == nil {
			routes = []store.Route{}
		}
	}
	var view map[string]any
	_, err := a.db.Write(ctx, func(tx *store.Tx) error {
		r, err := ownedRouter(tx, id, routerID)
		if err != nil {
			return err
		}
		wasHA, wasDVR := r.HA, r.Distributed
		for _, err := range []*Error{
			in.str("name", 255, &r.Name), in.str("description", 255, &r.Description),
			in.boolean("admin_state_up", &r.AdminStateUp), in.boolean("ha", &r.HA), in.boolean("distributed", &r.Distributed),
		} {
			if err != nil {
				return err
			}
		}
		if r.HA != wasHA && r.AdminStateUp {
			return badRouter("Cannot change HA attribute of active routers. Please set router admin_state_up to False prior to upgrade.")
		}
		if r.Distributed != wasDVR && r.AdminStateUp {
			return badRouter("Cannot change the 'distributed' attribute of active routers. Please set router admin_state_up to False prior to upgrade.")
		}
		if r.Distributed {
			return errNoDVR
		}
		if err := tx.UpdateRouter(r); err != nil {
			return err
		}
		if r.HA != wasHA {
			if err := a.migrateHA(tx, r, wasHA); err != nil {
				return err
			}
		}
		if hasGW {
			if err := a.setGateway(tx, id, r, gw); err != nil {
				return err
			}
		}
		if routes != nil {
			if err := validateRoutes(tx, r, routes); err != nil {
				return err
			}
			r.Routes = routes
			if err := tx.UpdateRouter(r); err != nil {
				return err
			}
		}
		view, err = a.renderRouter(tx, r, id.Admin)
		return err
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{"router": view}, nil
}

// migrateHA converts a router between legacy and HA (Neutron's
// _migrate_router_ports and reschedule): the router leaves its agents,
// its interface ports change owner, the VRID and HA ports come or go, and it
// is scheduled afresh.
func (a *API) migrateHA(tx *store.Tx, r *store.Router, wasHA bool) error {
	old := *r
	old.HA = wasHA
	if err := a.ha.UnbindAll(tx, &old); err != nil {
		return err
	}
	from, to := ha.OwnerRouterInterface, ha.OwnerReplicatedInterface
	if wasHA {
		from, to = to, from
		if err := a.ha.DisableHA(tx, &old); err != nil {
			return err
		}
	} else {
		if err := a.ha.CheckEnoughAgents(tx); err != nil {
			return err
		}
		if err := a.ha.EnableHA(tx, r); err != nil {
			return err
		}
	}
	ports, err := tx.ListPorts(store.Where{"device_id": r.ID, "device_owner": from})
	if err != nil {
		return err
	}
	for _, p := range ports {
		p.DeviceOwner = to
		if err := tx.UpdatePort(p); err != nil {
			return err
		}
	}
	_, err = a.ha.Schedule(tx, r)
	a.log.Info("router migrated", "router_id", r.ID, "ha", r.HA)
	return err
}

func validateRoutes(tx *store.Tx, r *store.Router, routes []store.Route) error {
	subs, err := routerSubnets(tx, r, "")
	if err != nil {
		return err
	}
	seen := map[store.Route]bool{}
	for _, rt := range routes {
		dst, perr := parseCIDR(rt.Destination)
		if perr != nil {
			return perr
		}
		if dst.Masked() != dst {
			return invalidInput("%s isn't a recommended CIDR: it should be %s.", rt.Destination, dst.Masked())
		}
		hop, perr := parseIPv4("nexthop", rt.NextHop)
		if perr != nil {
			return perr
		}
		if seen[rt] {
			return invalidInput("Duplicate route %s via %s.", rt.Destination, rt.NextHop)
		}
		seen[rt] = true
		connected := false
		for _, s := range subs {
			if netip.MustParsePrefix(s.CIDR).Contains(hop) {
				connected = true
			}
		}
		if !connected {
			return errf(http.StatusBadRequest, "InvalidRoutes", "Invalid format for routes: [{'destination': '%s', 'nexthop': '%s'}], the nexthop is not connected with router", rt.Destination, rt.NextHop)
		}
	}
	return nil
}

func (a *API) deleteRouter(ctx context.Context, id Identity, routerID string) error {
	_, err := a.db.Write(ctx, func(tx *store.Tx) error {
		r, err := ownedRouter(tx, id, routerID)
		if err != nil {
			return err
		}
		ports, err := tx.ListPorts(store.Where{"device_id": r.ID, "device_owner": []string{ha.OwnerRouterInterface, ha.OwnerReplicatedInterface}})
		if err != nil {
			return err
		}
		if len(ports) > 0 {
			return errf(http.StatusConflict, "RouterInUse", "Router %s still has ports", r.ID)
		}
		if err := a.setGateway(tx, id, r, nil); err != nil {
			return err
		}
		if err := a.ha.UnbindAll(tx, r); err != nil {
			return err
		}
		if r.HA {
			if err := a.ha.DisableHA(tx, r); err != nil {
				return err
			}
		}
		a.log.Info("router deleted", "router_id", r.ID)
		return tx.DeleteRouter(r.ID)
	})
	return err
}

// routerInterface implements add_router_interface and remove_router_interface.
func (a *API) routerInterface(ctx context.Context, id Identity, routerID string, add bool, body map[string]json.RawMessage) (any, error) {
	in := input{m: body, singular: "router"}
	var subnetID, portID string
	for k := range body {
		if k != "subnet_id" && k != "port_id" {
			return nil, badRequest("Unrecognized attribute(s) '%s'", k)
		}
	}
	if err := in.uuidAttr("subnet_id", &subnetID); err != nil {
		return nil, err
	}
	if err := in.uuidAttr("port_id", &portID); err != nil {
		return nil, err
	}
	if subnetID == "" && portID == "" {
		return nil, badRouter("Either subnet_id or port_id must be specified.")
	}
	if subnetID != "" && portID != "" && add {
		return nil, badRouter("Cannot specify both subnet-id and port-id")
	}
	var out map[string]any
	_, err := a.db.Write(ctx, func(tx *store.Tx) error {
		r, err := ownedRouter(tx, id, routerID)
		if err != nil {
			return err
		}
		var p *store.Port
		if add {
			p, err = a.addInterface(tx, id, r, subnetID, portID)
		} else {
			p, err = a.removeInterface(tx, id, r, subnetID, portID)
		}
		if err != nil {
			return err
		}
		var subs []string
		for _, ip := range p.FixedIPs {
			subs = append(subs, ip.SubnetID)
		}
		out = map[string]any{"id": r.ID, "network_id": p.NetworkID, "port_id": p.ID, "subnet_ids": nonNilSlice(subs), "tenant_id": r.ProjectID, "project_id": r.ProjectID}
		if len(subs) > 0 {
			out["subnet_id"] = subs[0]
		}
		return tx.UpdateRouter(r)
	})
	return out, err
}

func (a *API) interfaceOwner(r *store.Router) string {
	if r.HA {
		return ha.OwnerReplicatedInterface
	}
	return ha.OwnerRouterInterface
}

func (a *API) addInterface(tx *store.Tx, id Identity, r *store.Router, subnetID, portID string) (*store.Port, error) {
	if portID != "" {
		p, err := visiblePort(tx, id, portID)
		if err != nil {
			return nil, err
		}
		if p.DeviceID != "" || p.DeviceOwner != "" {
			return nil, errf(http.StatusConflict, "PortInUse", "Unable to complete operation on port %s for network %s. Port already has an attached device %s.", p.ID, p.NetworkID, p.DeviceID)
		}
		if len(p.FixedIPs) == 0 {
			return nil, badRouter("Router port must have at least one fixed IP")
		}
		if err := checkInterfaceNetwork(tx, p.NetworkID); err != nil {
			return nil, err
		}
		if err := checkOverlap(tx, r, p.FixedIPs, ""); err != nil {
			return nil, err
		}
		p.DeviceID, p.DeviceOwner = r.ID, a.interfaceOwner(r)
		if p.HostID, err = a.ha.PortHost(tx, r); err != nil {
			return nil, err
		}
		return p, tx.UpdatePort(p)
	}
	s, err := visibleSubnet(tx, id, subnetID)
	if err != nil {
		return nil, err
	}
	if s.GatewayIP == nil {
		return nil, badRouter("Subnet for router interface must have a gateway IP")
	}
	if err := checkInterfaceNetwork(tx, s.NetworkID); err != nil {
		return nil, err
	}
	fixed := []store.FixedIP{{SubnetID: s.ID, IPAddress: *s.GatewayIP}}
	if err := checkOverlap(tx, r, fixed, ""); err != nil {
		return nil, err
	}
	if holder, err := tx.IPAllocated(s.ID, *s.GatewayIP); err != nil {
		return nil, err
	} else if holder != "" {
		return nil, errf(http.StatusConflict, "IpAddressAlreadyAllocated", "IP address %s already allocated in subnet %s", *s.GatewayIP, s.ID)
	}
	mac, err := ipam.AllocateMAC(tx, s.NetworkID, newRand())
	if err != nil {
		return nil, err
	}
	p := &store.Port{
		ID: uuid.NewString(), NetworkID: s.NetworkID, ProjectID: r.ProjectID, AdminStateUp: true,
		MACAddress: mac, DeviceID: r.ID, DeviceOwner: a.interfaceOwner(r),
		Status: "DOWN", FixedIPs: fixed,
	}
	if p.HostID, err = a.ha.PortHost(tx, r); err != nil {
		return nil, err
	}
	return p, tx.InsertPort(p)
}

func checkInterfaceNetwork(tx *store.Tx, networkID string) error {
	n, err := tx.GetNetwork(networkID)
	if err != nil {
		return err
	}
	if n.External {
		return badRouter("Router interface cannot be on external network %s; set it as the gateway instead.", n.ID)
	}
	return nil
}

func (a *API) removeInterface(tx *store.Tx, id Identity, r *store.Router, subnetID, portID string) (*store.Port, error) {
	ports, err := tx.ListPorts(store.Where{"device_id": r.ID, "device_owner": []string{ha.OwnerRouterInterface, ha.OwnerReplicatedInterface}})
	if err != nil {
		return nil, err
	}
	var p *store.Port
	for _, cand := range ports {
		if portID != "" && cand.ID == portID {
			p = cand
		}
		if portID == "" {
			for _, ip := range cand.FixedIPs {
				if ip.SubnetID == subnetID {
					p = cand
				}
			}
		}
	}
	if p == nil {
		if portID != "" {
			return nil, errf(http.StatusNotFound, "RouterInterfaceNotFound", "Router %s does not have an interface with id %s", r.ID, portID)
		}
		if _, err := visibleSubnet(tx, id, subnetID); err != nil {
			return nil, err
		}
		return nil, errf(http.StatusNotFound, "RouterInterfaceNotFoundForSubnet", "Router %s has no interface on subnet %s", r.ID, subnetID)
	}
	if subnetID != "" && portID != "" {
		found := false
		for _, ip := range p.FixedIPs {
			found = found || ip.SubnetID == subnetID
		}
		if !found {
			return nil, errf(http.StatusConflict, "SubnetMismatchForPort", "Subnet %s does not match with port %s", subnetID, portID)
		}
	}
	fips, err := tx.ListFloatingIPs(store.Where{"router_id": r.ID})
	if err != nil {
		return nil, err
	}
	remaining, err := routerSubnets(tx, r, p.ID)
	if err != nil {
		return nil, err
	}
	for _, ip := range p.FixedIPs {
		s, err := tx.GetSubnet(ip.SubnetID)
		if err != nil {
			return nil, err
		}
		prefix := netip.MustParsePrefix(s.CIDR)
		for _, f := range fips {
			if f.FixedIP != nil && prefix.Contains(netip.MustParseAddr(*f.FixedIP)) {
				return nil, errf(http.StatusConflict, "RouterInterfaceInUseByFloatingIP", "Router interface for subnet %s on router %s cannot be deleted, as it is required by one or more floating IPs.", s.ID, r.ID)
			}
		}
		for _, rt := range r.Routes {
			hop := netip.MustParseAddr(rt.NextHop)
			stillConnected := false
			for _, o := range remaining {
				stillConnected = stillConnected || netip.MustParsePrefix(o.CIDR).Contains(hop)
			}
			if prefix.Contains(hop) && !stillConnected {
				return nil, errf(http.StatusConflict, "RouterInterfaceInUseByRoute", "Router interface for subnet %s on router %s cannot be deleted, as it is required by one or more routes.", s.ID, r.ID)
			}
		}
	}
	return p, tx.DeletePort(p.ID)
}
