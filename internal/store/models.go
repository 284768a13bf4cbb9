package store

import (
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// ErrNotFound is returned by Get* when no row has the id.
var ErrNotFound = errors.New("not found")

// Network is a Neutron network. HA networks have ProjectID "" and an
// HANetwork row naming the project they serve.
type Network struct {
	ID, ProjectID, Name, Description string
	AdminStateUp, Shared, External   bool
	Status                           string
	NetworkType                      string
	PhysicalNetwork                  *string
	SegmentationID                   *int
	MTU                              int
	Revision                         int
	CreatedAt, UpdatedAt             time.Time
}

// AllocationPool is an inclusive range of addresses IPAM may hand out.
type AllocationPool struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

// HostRoute is a subnet's host route.
type HostRoute struct {
	Destination string `json:"destination"`
	NextHop     string `json:"nexthop"`
}

// Subnet is a Neutron subnet (IPv4).
type Subnet struct {
	ID, NetworkID, ProjectID, Name, Description, CIDR string
	GatewayIP                                         *string
	EnableDHCP                                        bool
	IPVersion                                         int
	AllocationPools                                   []AllocationPool
	DNSNameservers                                    []string
	HostRoutes                                        []HostRoute
	Revision                                          int
	CreatedAt, UpdatedAt                              time.Time
}

// FixedIP is one address of a port.
type FixedIP struct {
	SubnetID  string `json:"subnet_id"`
	IPAddress string `json:"ip_address"`
}

// Port is a Neutron port with its fixed IPs.
type Port struct {
	ID, NetworkID, ProjectID, Name, Description string
	AdminStateUp                                bool
	MACAddress, DeviceID, DeviceOwner, Status   string
	HostID                                      string
	FixedIPs                                    []FixedIP
	Revision                                    int
	CreatedAt, UpdatedAt                        time.Time
}

// Route is a router's extra route.
type Route struct {
	Destination string `json:"destination"`
	NextHop     string `json:"nexthop"`
}

// Router is a Neutron router.
type Router struct {
	ID, ProjectID, Name, Description string
	AdminStateUp                     bool
	Status                           string
	HA, Distributed                  bool
	GWPortID                         *string
	EnableSNAT                       bool
	Routes                           []Route
	Revision                         int
	CreatedAt, UpdatedAt             time.Time
}

// FloatingIP is a Neutron floating IP.
type FloatingIP struct {
	ID, ProjectID, Description     string
	FloatingNetworkID, FloatingIP  string
	FloatingPortID                 string
	FixedPortID, FixedIP, RouterID *string
	Status                         string
	Revision                       int
	CreatedAt, UpdatedAt           time.Time
}

// Agent is a registered agent.
type Agent struct {
	ID, AgentType, Binary, Topic, Host, AvailabilityZone string
	AdminStateUp                                         bool
	Configurations                                       map[string]any
	Description                                          *string
	HeartbeatAt, StartedAt, CreatedAt                    time.Time
}

// Binding is a router hosted by an agent.
type Binding struct {
	RouterID, AgentID string
	BindingIndex      int
	HAState           string
	// HAStateAt is when the agent last reported the binding's state, and
	// HAStateFreshUntil until when that report counts as fresh (both zero
	// if it never reported; a state set by the server alone, such as a
	// demotion, leaves them).
	HAStateAt, HAStateFreshUntil time.Time
}

// HANetwork links an HA network to the project it serves.
type HANetwork struct {
	NetworkID, ProjectID string
	Seq                  int
}

// VRIDAllocation is a router's VRRP id on an HA network.
type VRIDAllocation struct {
	NetworkID string
	VRID      int
	RouterID  string
}

func us(t time.Time) int64 { return t.UnixMicro() }

func fromUS(v int64) time.Time { return time.UnixMicro(v).UTC() }

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own plain structs are marshalled here.
		return "null"
	}
	return string(b)
}

// Where is an equality filter: column → value, or column → []string for IN.
type Where map[string]any

func (w Where) sql() (string, []any) {
	if len(w) == 0 {
		return "", nil
	}
	keys := make([]string, 0, len(w))
	for k := range w {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	var args []any
	for _, k := range keys {
		switch v := w[k].(type) {
		case []string:
			if len(v) == 0 {
				parts = append(parts, "1 = 0")
				continue
			}
			parts = append(parts, k+" IN ("+strings.TrimSuffix(strings.Repeat("?,", len(v)), ",")+")")
			for _, s := range v {
				args = append(args, s)
			}
		case nil:
			parts = append(parts, k+" IS NULL")
		default:
			parts = append(parts, k+" = ?")
			args = append(args, v)
		}
	}
	return " WHERE " + strings.Join(parts, " AND "), args
}

type scanner interface{ Scan(...any) error }

// ---- networks

const networkCols = "id, project_id, name, description, admin_state_up, status, shared, external, network_type, physical_network, segmentation_id, mtu, revision_number, created_at, updated_at"

func scanNetwork(s scanner) (*Network, error) {
	var n Network
	var physnet sql.NullString
	var seg sql.NullInt64
	var c, u int64
	if err := s.Scan(&n.ID, &n.ProjectID, &n.Name, &n.Description, &n.AdminStateUp, &n.Status, &n.Shared, &n.External, &n.NetworkType, &physnet, &seg, &n.MTU, &n.Revision, &c, &u); err != nil {
		return nil, err
	}
	if physnet.Valid {
		n.PhysicalNetwork = &physnet.String
	}
	if seg.Valid {
		v := int(seg.Int64)
		n.SegmentationID = &v
	}
	n.CreatedAt, n.UpdatedAt = fromUS(c), fromUS(u)
	return &n, nil
}

// InsertNetwork stores a new network stamped with the transaction's time.
func (t *Tx) InsertNetwork(n *Network) error {
	t.touchNetwork(n.ID)
	n.CreatedAt, n.UpdatedAt, n.Revision = t.Now, t.Now, 1
	_, err := t.exec("INSERT INTO networks ("+networkCols+") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
		n.ID, n.ProjectID, n.Name, n.Description, n.AdminStateUp, n.Status, n.Shared, n.External, n.NetworkType, n.PhysicalNetwork, n.SegmentationID, n.MTU, n.Revision, us(n.CreatedAt), us(n.UpdatedAt))
	if err != nil {
		return fmt.Errorf("inserting network %s: %w", n.ID, err)
	}
	return nil
}

// UpdateNetwork writes n's mutable fields and bumps its revision.
func (t *Tx) UpdateNetwork(n *Network) error {
	t.touchNetwork(n.ID)
	n.Revision++
	n.UpdatedAt = t.Now
	_, err := t.exec("UPDATE networks SET name=?, description=?, admin_state_up=?, shared=?, external=?, mtu=?, revision_number=?, updated_at=? WHERE id=?",
		n.Name, n.Description, n.AdminStateUp, n.Shared, n.External, n.MTU, n.Revision, us(n.UpdatedAt), n.ID)
	if err != nil {
		return fmt.Errorf("updating network %s: %w", n.ID, err)
	}
	return nil
}

// TouchNetwork bumps a network's revision (its subnets changed).
func (t *Tx) TouchNetwork(id string) error {
	t.touchNetwork(id)
	_, err := t.exec("UPDATE networks SET revision_number = revision_number + 1, updated_at=? WHERE id=?", us(t.Now), id)
	return err
}

// GetNetwork returns the network or ErrNotFound.
func (t *Tx) GetNetwork(id string) (*Network, error) {
	n, err := scanNetwork(t.queryRow("SELECT "+networkCols+" FROM networks WHERE id=?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return n, err
}

// ListNetworks returns networks matching w, ordered by id.
func (t *Tx) ListNetworks(w Where) ([]*Network, error) {
	cond, args := w.sql()
	rows, err := t.query("SELECT "+networkCols+" FROM networks"+cond+" ORDER BY id", args...)
	if err != nil {
		return nil, fmt.Errorf("listing networks: %w", err)
	}
	defer rows.Close()
	var out []*Network
	for rows.Next() {
		n, err := scanNetwork(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// DeleteNetwork removes a network (its subnets must be gone).
func (t *Tx) DeleteNetwork(id string) error {
	t.touchNetwork(id)
	_, err := t.exec("DELETE FROM networks WHERE id=?", id)
	return err
}

// SegmentInUse reports whether a segmentation id of a type is taken.
func (t *Tx) SegmentInUse(networkType string, seg int) (bool, error) {
	var n int
	err := t.queryRow("SELECT COUNT(*) FROM networks WHERE network_type=? AND segmentation_id=?", networkType, seg).Scan(&n)
	return n > 0, err
}

// FlatPhysnetInUse reports whether a flat network already uses physnet.
func (t *Tx) FlatPhysnetInUse(physnet string) (bool, error) {
	var n int
	err := t.queryRow("SELECT COUNT(*) FROM networks WHERE network_type='flat' AND physical_network=?", physnet).Scan(&n)
	return n > 0, err
}

// ---- HA networks and VRIDs

// InsertHANetwork records that network serves project's HA routers.
func (t *Tx) InsertHANetwork(h HANetwork) error {
	t.touchNetwork(h.NetworkID)
	_, err := t.exec("INSERT INTO ha_networks (network_id, project_id, seq) VALUES (?,?,?)", h.NetworkID, h.ProjectID, h.Seq)
	return err
}

// ListHANetworks returns HA networks matching w, ordered by project and seq.
func (t *Tx) ListHANetworks(w Where) ([]HANetwork, error) {
	cond, args := w.sql()
	rows, err := t.query("SELECT network_id, project_id, seq FROM ha_networks"+cond+" ORDER BY project_id, seq", args...)
	if err != nil {
		return nil, fmt.Errorf("listing HA networks: %w", err)
	}
	defer rows.Close()
	var out []HANetwork
	for rows.Next() {
		var h HANetwork
		if err := rows.Scan(&h.NetworkID, &h.ProjectID, &h.Seq); err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, rows.Err()
}

// DeleteHANetwork forgets the HA link of a network.
func (t *Tx) DeleteHANetwork(networkID string) error {
	t.touchNetwork(networkID)
	_, err := t.exec("DELETE FROM ha_networks WHERE network_id=?", networkID)
	return err
}

// InsertVRID allocates vrid on an HA network to a router.
func (t *Tx) InsertVRID(a VRIDAllocation) error {
	t.touchRouter(a.RouterID)
	_, err := t.exec("INSERT INTO ha_vrids (network_id, vrid, router_id) VALUES (?,?,?)", a.NetworkID, a.VRID, a.RouterID)
	return err
}

// ListVRIDs returns VRID allocations matching w.
func (t *Tx) ListVRIDs(w Where) ([]VRIDAllocation, error) {
	cond, args := w.sql()
	rows, err := t.query("SELECT network_id, vrid, router_id FROM ha_vrids"+cond+" ORDER BY network_id, vrid", args...)
	if err != nil {
		return nil, fmt.Errorf("listing VRIDs: %w", err)
	}
	defer rows.Close()
	var out []VRIDAllocation
	for rows.Next() {
		var a VRIDAllocation
		if err := rows.Scan(&a.NetworkID, &a.VRID, &a.RouterID); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// CountVRIDs counts the VRIDs allocated on an HA network.
func (t *Tx) CountVRIDs(networkID string) (int, error) {
	var n int
	err := t.queryRow("SELECT COUNT(*) FROM ha_vrids WHERE network_id=?", networkID).Scan(&n)
	return n, err
}

// DeleteVRID frees a router's VRID.
func (t *Tx) DeleteVRID(routerID string) error {
	t.touchRouter(routerID)
	_, err := t.exec("DELETE FROM ha_vrids WHERE router_id=?", routerID)
	return err
}

// ---- subnets

const subnetCols = "id, network_id, project_id, name, description, cidr, gateway_ip, enable_dhcp, ip_version, allocation_pools, dns_nameservers, host_routes, revision_number, created_at, updated_at"

func scanSubnet(s scanner) (*Subnet, error) {
	var n Subnet
	var gw sql.NullString
	var pools, dns, routes string
	var c, u int64
	if err := s.Scan(&n.ID, &n.NetworkID, &n.ProjectID, &n.Name, &n.Description, &n.CIDR, &gw, &n.EnableDHCP, &n.IPVersion, &pools, &dns, &routes, &n.Revision, &c, &u); err != nil {
		return nil, err
	}
	if gw.Valid {
		n.GatewayIP = &gw.String
	}
	if err := errors.Join(json.Unmarshal([]byte(pools), &n.AllocationPools), json.Unmarshal([]byte(dns), &n.DNSNameservers), json.Unmarshal([]byte(routes), &n.HostRoutes)); err != nil {
		return nil, fmt.Errorf("decoding subnet %s: %w", n.ID, err)
	}
	n.CreatedAt, n.UpdatedAt = fromUS(c), fromUS(u)
	return &n, nil
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// InsertSubnet stores a new subnet.
func (t *Tx) InsertSubnet(s *Subnet) error {
	t.touchNetwork(s.NetworkID)
	s.CreatedAt, s.UpdatedAt, s.Revision = t.Now, t.Now, 0
	_, err := t.exec("INSERT INTO subnets ("+subnetCols+") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
		s.ID, s.NetworkID, s.ProjectID, s.Name, s.Description, s.CIDR, s.GatewayIP, s.EnableDHCP, s.IPVersion,
		mustJSON(nonNil(s.AllocationPools)), mustJSON(nonNil(s.DNSNameservers)), mustJSON(nonNil(s.HostRoutes)), s.Revision, us(s.CreatedAt), us(s.UpdatedAt))
	if err != nil {
		return fmt.Errorf("inserting subnet %s: %w", s.ID, err)
	}
	return nil
}

// UpdateSubnet writes a subnet's mutable fields and bumps its revision.
func (t *Tx) UpdateSubnet(s *Subnet) error {
	t.touchNetwork(s.NetworkID)
	s.Revision++
	s.UpdatedAt = t.Now
	_, err := t.exec("UPDATE subnets SET name=?, description=?, gateway_ip=?, enable_dhcp=?, allocation_pools=?, dns_nameservers=?, host_routes=?, revision_number=?, updated_at=? WHERE id=?",
		s.Name, s.Description, s.GatewayIP, s.EnableDHCP, mustJSON(nonNil(s.AllocationPools)), mustJSON(nonNil(s.DNSNameservers)), mustJSON(nonNil(s.HostRoutes)), s.Revision, us(s.UpdatedAt), s.ID)
	return err
}

// GetSubnet returns the subnet or ErrNotFound.
func (t *Tx) GetSubnet(id string) (*Subnet, error) {
	s, err := scanSubnet(t.queryRow("SELECT "+subnetCols+" FROM subnets WHERE id=?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return s, err
}

// ListSubnets returns subnets matching w.
func (t *Tx) ListSubnets(w Where) ([]*Subnet, error) {
	cond, args := w.sql()
	rows, err := t.query("SELECT "+subnetCols+" FROM subnets"+cond+" ORDER BY id", args...)
	if err != nil {
		return nil, fmt.Errorf("listing subnets: %w", err)
	}
	defer rows.Close()
	var out []*Subnet
	for rows.Next() {
		s, err := scanSubnet(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// DeleteSubnet removes a subnet.
func (t *Tx) DeleteSubnet(id string) error {
	if t.tracking() {
		var netID string
		if err := t.queryRow("SELECT network_id FROM subnets WHERE id=?", id).Scan(&netID); err != nil {
			t.touchAll()
		}
		t.touchNetwork(netID)
	}
	_, err := t.exec("DELETE FROM subnets WHERE id=?", id)
	return err
}

// ---- ports and IP allocations

const portCols = "id, network_id, project_id, name, description, admin_state_up, mac_address, device_id, device_owner, status, host_id, revision_number, created_at, updated_at"

func scanPort(s scanner) (*Port, error) {
	var p Port
	var c, u int64
	if err := s.Scan(&p.ID, &p.NetworkID, &p.ProjectID, &p.Name, &p.Description, &p.AdminStateUp, &p.MACAddress, &p.DeviceID, &p.DeviceOwner, &p.Status, &p.HostID, &p.Revision, &c, &u); err != nil {
		return nil, err
	}
	p.CreatedAt, p.UpdatedAt = fromUS(c), fromUS(u)
	return &p, nil
}

// InsertPort stores a new port and its fixed IPs. An address already taken
// surfaces as a unique violation (IsUniqueViolation).
func (t *Tx) InsertPort(p *Port) error {
	t.touchPort(portLocation{p.NetworkID, p.DeviceID, p.DeviceOwner, p.HostID}, false)
	p.CreatedAt, p.UpdatedAt, p.Revision = t.Now, t.Now, 1
	_, err := t.exec("INSERT INTO ports ("+portCols+") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
		p.ID, p.NetworkID, p.ProjectID, p.Name, p.Description, p.AdminStateUp, p.MACAddress, p.DeviceID, p.DeviceOwner, p.Status, p.HostID, p.Revision, us(p.CreatedAt), us(p.UpdatedAt))
	if err != nil {
		return fmt.Errorf("inserting port %s: %w", p.ID, err)
	}
	return t.insertIPs(p)
}

func (t *Tx) insertIPs(p *Port) error {
	for _, ip := range p.FixedIPs {
		if _, err := t.exec("INSERT INTO ip_allocations (subnet_id, ip_address, port_id, network_id) VALUES (?,?,?,?)", ip.SubnetID, ip.IPAddress, p.ID, p.NetworkID); err != nil {
			return fmt.Errorf("allocating %s to port %s: %w", ip.IPAddress, p.ID, err)
		}
	}
	return nil
}

// UpdatePort writes a port's mutable fields and fixed IPs, bumping its revision.
func (t *Tx) UpdatePort(p *Port) error {
	t.touchPortChange(p.ID, &portLocation{p.NetworkID, p.DeviceID, p.DeviceOwner, p.HostID})
	p.Revision++
	p.UpdatedAt = t.Now
	_, err := t.exec("UPDATE ports SET name=?, description=?, admin_state_up=?, device_id=?, device_owner=?, status=?, host_id=?, project_id=?, revision_number=?, updated_at=? WHERE id=?",
		p.Name, p.Description, p.AdminStateUp, p.DeviceID, p.DeviceOwner, p.Status, p.HostID, p.ProjectID, p.Revision, us(p.UpdatedAt), p.ID)
	if err != nil {
		return fmt.Errorf("updating port %s: %w", p.ID, err)
	}
	if _, err := t.exec("DELETE FROM ip_allocations WHERE port_id=?", p.ID); err != nil {
		return err
	}
	return t.insertIPs(p)
}

// SetPortHost moves a port's binding:host_id without bumping the global
// revision (used by quiet ha_state reports).
func (t *Tx) SetPortHost(portID, host string) error {
	if t.tracking() {
		if l, ok := t.portLocationOf(portID); ok {
			l.host = host
			t.touchPortChange(portID, &l)
		} else {
			t.touchAll()
		}
	}
	_, err := t.exec("UPDATE ports SET host_id=?, updated_at=? WHERE id=? AND host_id<>?", host, us(t.Now), portID, host)
	return err
}

// GetPort returns the port with its fixed IPs, or ErrNotFound.
func (t *Tx) GetPort(id string) (*Port, error) {
	ps, err := t.ListPorts(Where{"id": id})
	if err != nil {
		return nil, err
	}
	if len(ps) == 0 {
		return nil, ErrNotFound
	}
	return ps[0], nil
}

// ListPorts returns ports matching w, with their fixed IPs.
func (t *Tx) ListPorts(w Where) ([]*Port, error) {
	cond, args := w.sql()
	rows, err := t.query("SELECT "+portCols+" FROM ports"+cond+" ORDER BY id", args...)
	if err != nil {
		return nil, fmt.Errorf("listing ports: %w", err)
	}
	var out []*Port
	byID := map[string]*Port{}
	for rows.Next() {
		p, err := scanPort(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, p)
		byID[p.ID] = p
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(out) == 0 {
		return out, err
	}
	// Fixed IPs: for a small set by id, otherwise for the same filter joined.
	var q string
	var qargs []any
	if len(out) <= 200 {
		ids := make([]string, len(out))
		for i, p := range out {
			ids[i] = p.ID
		}
		c, a := Where{"port_id": ids}.sql()
		q, qargs = "SELECT port_id, subnet_id, ip_address FROM ip_allocations"+c, a
	} else {
		q, qargs = "SELECT port_id, subnet_id, ip_address FROM ip_allocations WHERE port_id IN (SELECT id FROM ports"+cond+")", args
	}
	rows, err = t.query(q+" ORDER BY port_id, subnet_id, ip_address", qargs...)
	if err != nil {
		return nil, fmt.Errorf("listing fixed IPs: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var portID string
		var ip FixedIP
		if err := rows.Scan(&portID, &ip.SubnetID, &ip.IPAddress); err != nil {
			return nil, err
		}
		if p := byID[portID]; p != nil {
			p.FixedIPs = append(p.FixedIPs, ip)
		}
	}
	return out, rows.Err()
}

// DeletePort removes a port and its IP allocations.
func (t *Tx) DeletePort(id string) error {
	t.touchPortChange(id, nil)
	if _, err := t.exec("DELETE FROM ip_allocations WHERE port_id=?", id); err != nil {
		return err
	}
	_, err := t.exec("DELETE FROM ports WHERE id=?", id)
	return err
}

// PortLocation is where a port is: its network, its device and owner, and
// the host it is bound to.
type PortLocation struct {
	NetworkID, DeviceID, DeviceOwner, HostID string
}

// ListPortLocations returns the location of every port matching w: a
// narrow read, without the rest of the port and its fixed IPs, for
// computing which hosts need a network.
func (t *Tx) ListPortLocations(w Where) ([]PortLocation, error) {
	cond, args := w.sql()
	rows, err := t.query("SELECT network_id, device_id, device_owner, host_id FROM ports"+cond, args...)
	if err != nil {
		return nil, fmt.Errorf("listing port locations: %w", err)
	}
	defer rows.Close()
	var out []PortLocation
	for rows.Next() {
		var l PortLocation
		if err := rows.Scan(&l.NetworkID, &l.DeviceID, &l.DeviceOwner, &l.HostID); err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, rows.Err()
}

// UsedIPs returns the allocated addresses of a subnet.
func (t *Tx) UsedIPs(subnetID string) (map[string]bool, error) {
	rows, err := t.query("SELECT ip_address FROM ip_allocations WHERE subnet_id=?", subnetID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	used := map[string]bool{}
	for rows.Next() {
		var ip string
		if err := rows.Scan(&ip); err != nil {
			return nil, err
		}
		used[ip] = true
	}
	return used, rows.Err()
}

// IPAllocated reports which port holds ip in subnet ("" if free).
func (t *Tx) IPAllocated(subnetID, ip string) (string, error) {
	var port string
	err := t.queryRow("SELECT port_id FROM ip_allocations WHERE subnet_id=? AND ip_address=?", subnetID, ip).Scan(&port)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return port, err
}

// CountSubnetAllocations counts addresses allocated from a subnet.
func (t *Tx) CountSubnetAllocations(subnetID string) (int, error) {
	var n int
	err := t.queryRow("SELECT COUNT(*) FROM ip_allocations WHERE subnet_id=?", subnetID).Scan(&n)
	return n, err
}

// ---- routers

const routerCols = "id, project_id, name, description, admin_state_up, status, ha, distributed, gw_port_id, enable_snat, routes, revision_number, created_at, updated_at"

func scanRouter(s scanner) (*Router, error) {
	var r Router
	var gw sql.NullString
	var routes string
	var c, u int64
	if err := s.Scan(&r.ID, &r.ProjectID, &r.Name, &r.Description, &r.AdminStateUp, &r.Status, &r.HA, &r.Distributed, &gw, &r.EnableSNAT, &routes, &r.Revision, &c, &u); err != nil {
		return nil, err
	}
	if gw.Valid {
		r.GWPortID = &gw.String
	}
	if err := json.Unmarshal([]byte(routes), &r.Routes); err != nil {
		return nil, fmt.Errorf("decoding routes of router %s: %w", r.ID, err)
	}
	r.CreatedAt, r.UpdatedAt = fromUS(c), fromUS(u)
	return &r, nil
}

// InsertRouter stores a new router.
func (t *Tx) InsertRouter(r *Router) error {
	t.touchRouter(r.ID)
	r.CreatedAt, r.UpdatedAt, r.Revision = t.Now, t.Now, 1
	_, err := t.exec("INSERT INTO routers ("+routerCols+") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
		r.ID, r.ProjectID, r.Name, r.Description, r.AdminStateUp, r.Status, r.HA, r.Distributed, r.GWPortID, r.EnableSNAT, mustJSON(nonNil(r.Routes)), r.Revision, us(r.CreatedAt), us(r.UpdatedAt))
	if err != nil {
		return fmt.Errorf("inserting router %s: %w", r.ID, err)
	}
	return nil
}

// UpdateRouter writes a router's mutable fields and bumps its revision.
func (t *Tx) UpdateRouter(r *Router) error {
	t.touchRouter(r.ID)
	r.Revision++
	r.UpdatedAt = t.Now
	_, err := t.exec("UPDATE routers SET name=?, description=?, admin_state_up=?, status=?, ha=?, distributed=?, gw_port_id=?, enable_snat=?, routes=?, revision_number=?, updated_at=? WHERE id=?",
		r.Name, r.Description, r.AdminStateUp, r.Status, r.HA, r.Distributed, r.GWPortID, r.EnableSNAT, mustJSON(nonNil(r.Routes)), r.Revision, us(r.UpdatedAt), r.ID)
	if err != nil {
		return fmt.Errorf("updating router %s: %w", r.ID, err)
	}
	return nil
}

// GetRouter returns the router or ErrNotFound.
func (t *Tx) GetRouter(id string) (*Router, error) {
	r, err := scanRouter(t.queryRow("SELECT "+routerCols+" FROM routers WHERE id=?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return r, err
}

// ListRouters returns routers matching w.
func (t *Tx) ListRouters(w Where) ([]*Router, error) {
	cond, args := w.sql()
	rows, err := t.query("SELECT "+routerCols+" FROM routers"+cond+" ORDER BY id", args...)
	if err != nil {
		return nil, fmt.Errorf("listing routers: %w", err)
	}
	defer rows.Close()
	var out []*Router
	for rows.Next() {
		r, err := scanRouter(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// CountRouters counts routers matching w.
func (t *Tx) CountRouters(w Where) (int, error) {
	cond, args := w.sql()
	var n int
	err := t.queryRow("SELECT COUNT(*) FROM routers"+cond, args...).Scan(&n)
	return n, err
}

// DeleteRouter removes a router (bindings, VRID and HA transitions go with
// it).
func (t *Tx) DeleteRouter(id string) error {
	t.touchRouter(id) // its bindings go too: the hosts holding it rebuild
	t.bindingsUnknown()
	for _, q := range []string{"DELETE FROM router_bindings WHERE router_id=?", "DELETE FROM ha_vrids WHERE router_id=?", "DELETE FROM ha_transitions WHERE router_id=?", "DELETE FROM routers WHERE id=?"} {
		if _, err := t.exec(q, id); err != nil {
			return fmt.Errorf("deleting router %s: %w", id, err)
		}
	}
	return nil
}

// ---- floating IPs

// touchFloatingIP records the router a floating IP is associated with
// before it changes.
func (t *Tx) touchFloatingIP(id string) {
	if !t.tracking() {
		return
	}
	var router sql.NullString
	if err := t.queryRow("SELECT router_id FROM floatingips WHERE id=?", id).Scan(&router); err != nil {
		t.touchAll()
		return
	}
	if router.Valid {
		t.touchRouter(router.String)
	}
}

const fipCols = "id, project_id, description, floating_network_id, floating_ip_address, floating_port_id, fixed_port_id, fixed_ip_address, router_id, status, revision_number, created_at, updated_at"

func scanFIP(s scanner) (*FloatingIP, error) {
	var f FloatingIP
	var port, ip, router sql.NullString
	var c, u int64
	if err := s.Scan(&f.ID, &f.ProjectID, &f.Description, &f.FloatingNetworkID, &f.FloatingIP, &f.FloatingPortID, &port, &ip, &router, &f.Status, &f.Revision, &c, &u); err != nil {
		return nil, err
	}
	if port.Valid {
		f.FixedPortID = &port.String
	}
	if ip.Valid {
		f.FixedIP = &ip.String
	}
	if router.Valid {
		f.RouterID = &router.String
	}
	f.CreatedAt, f.UpdatedAt = fromUS(c), fromUS(u)
	return &f, nil
}

// InsertFloatingIP stores a new floating IP.
func (t *Tx) InsertFloatingIP(f *FloatingIP) error {
	if f.RouterID != nil {
		t.touchRouter(*f.RouterID)
	}
	f.CreatedAt, f.UpdatedAt, f.Revision = t.Now, t.Now, 0
	_, err := t.exec("INSERT INTO floatingips ("+fipCols+") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
		f.ID, f.ProjectID, f.Description, f.FloatingNetworkID, f.FloatingIP, f.FloatingPortID, f.FixedPortID, f.FixedIP, f.RouterID, f.Status, f.Revision, us(f.CreatedAt), us(f.UpdatedAt))
	if err != nil {
		return fmt.Errorf("inserting floating IP %s: %w", f.ID, err)
	}
	return nil
}

// UpdateFloatingIP writes a floating IP's association and bumps its revision.
func (t *Tx) UpdateFloatingIP(f *FloatingIP) error {
	t.touchFloatingIP(f.ID)
	if f.RouterID != nil {
		t.touchRouter(*f.RouterID)
	}
	f.Revision++
	f.UpdatedAt = t.Now
	_, err := t.exec("UPDATE floatingips SET description=?, fixed_port_id=?, fixed_ip_address=?, router_id=?, status=?, revision_number=?, updated_at=? WHERE id=?",
		f.Description, f.FixedPortID, f.FixedIP, f.RouterID, f.Status, f.Revision, us(f.UpdatedAt), f.ID)
	return err
}

// GetFloatingIP returns the floating IP or ErrNotFound.
func (t *Tx) GetFloatingIP(id string) (*FloatingIP, error) {
	f, err := scanFIP(t.queryRow("SELECT "+fipCols+" FROM floatingips WHERE id=?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return f, err
}

// ListFloatingIPs returns floating IPs matching w.
func (t *Tx) ListFloatingIPs(w Where) ([]*FloatingIP, error) {
	cond, args := w.sql()
	rows, err := t.query("SELECT "+fipCols+" FROM floatingips"+cond+" ORDER BY id", args...)
	if err != nil {
		return nil, fmt.Errorf("listing floating IPs: %w", err)
	}
	defer rows.Close()
	var out []*FloatingIP
	for rows.Next() {
		f, err := scanFIP(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, rows.Err()
}

// DeleteFloatingIP removes a floating IP row.
func (t *Tx) DeleteFloatingIP(id string) error {
	t.touchFloatingIP(id)
	_, err := t.exec("DELETE FROM floatingips WHERE id=?", id)
	return err
}

// ---- agents and bindings

const agentCols = "id, agent_type, binary_name, topic, host, availability_zone, admin_state_up, configurations, description, heartbeat_at, started_at, created_at"

func scanAgent(s scanner) (*Agent, error) {
	var a Agent
	var conf string
	var desc sql.NullString
	var hb, st, c int64
	if err := s.Scan(&a.ID, &a.AgentType, &a.Binary, &a.Topic, &a.Host, &a.AvailabilityZone, &a.AdminStateUp, &conf, &desc, &hb, &st, &c); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(conf), &a.Configurations); err != nil {
		return nil, fmt.Errorf("decoding configurations of agent %s: %w", a.ID, err)
	}
	if desc.Valid {
		a.Description = &desc.String
	}
	a.HeartbeatAt, a.StartedAt, a.CreatedAt = fromUS(hb), fromUS(st), fromUS(c)
	return &a, nil
}

// InsertAgent registers a new agent.
func (t *Tx) InsertAgent(a *Agent) error {
	t.touchAll() // its local_ip may make it a peer of many hosts
	_, err := t.exec("INSERT INTO agents ("+agentCols+") VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
		a.ID, a.AgentType, a.Binary, a.Topic, a.Host, a.AvailabilityZone, a.AdminStateUp, mustJSON(a.Configurations), a.Description, us(a.HeartbeatAt), us(a.StartedAt), us(a.CreatedAt))
	if err != nil {
		return fmt.Errorf("registering agent %s on %s: %w", a.AgentType, a.Host, err)
	}
	return nil
}

// UpdateAgent writes an agent's mutable fields.
func (t *Tx) UpdateAgent(a *Agent) error {
	t.touchAll()
	_, err := t.exec("UPDATE agents SET admin_state_up=?, configurations=?, description=?, heartbeat_at=?, started_at=?, binary_name=?, topic=? WHERE id=?",
		a.AdminStateUp, mustJSON(a.Configurations), a.Description, us(a.HeartbeatAt), us(a.StartedAt), a.Binary, a.Topic, a.ID)
	return err
}

// GetAgent returns the agent or ErrNotFound.
func (t *Tx) GetAgent(id string) (*Agent, error) {
	a, err := scanAgent(t.queryRow("SELECT "+agentCols+" FROM agents WHERE id=?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return a, err
}

// ListAgents returns agents matching w, ordered by host.
func (t *Tx) ListAgents(w Where) ([]*Agent, error) {
	cond, args := w.sql()
	rows, err := t.query("SELECT "+agentCols+" FROM agents"+cond+" ORDER BY host, agent_type", args...)
	if err != nil {
		return nil, fmt.Errorf("listing agents: %w", err)
	}
	defer rows.Close()
	var out []*Agent
	for rows.Next() {
		a, err := scanAgent(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// DeleteAgent removes an agent and its bindings.
func (t *Tx) DeleteAgent(id string) error {
	t.touchAll()
	t.bindingsUnknown()
	if _, err := t.exec("DELETE FROM router_bindings WHERE agent_id=?", id); err != nil {
		return err
	}
	_, err := t.exec("DELETE FROM agents WHERE id=?", id)
	return err
}

// InsertBinding binds a router to an agent.
func (t *Tx) InsertBinding(b Binding) error {
	_, err := t.exec("INSERT INTO router_bindings (router_id, agent_id, binding_index, ha_state) VALUES (?,?,?,?)", b.RouterID, b.AgentID, b.BindingIndex, b.HAState)
	if err != nil {
		return fmt.Errorf("binding router %s to agent %s: %w", b.RouterID, b.AgentID, err)
	}
	t.bindingDelta(b.RouterID, b.AgentID, +1, b.BindingIndex == 1)
	return nil
}

// ListBindings returns bindings matching w, ordered by router and index.
func (t *Tx) ListBindings(w Where) ([]Binding, error) {
	cond, args := w.sql()
	rows, err := t.query("SELECT "+bindingCols+" FROM router_bindings"+cond+" ORDER BY router_id, binding_index", args...)
	if err != nil {
		return nil, fmt.Errorf("listing bindings: %w", err)
	}
	return scanBindings(rows)
}

const bindingCols = "router_id, agent_id, binding_index, ha_state, ha_state_at, ha_state_fresh_until"

func scanBindings(rows *sql.Rows) ([]Binding, error) {
	defer rows.Close()
	var out []Binding
	for rows.Next() {
		var b Binding
		var at, fresh int64
		if err := rows.Scan(&b.RouterID, &b.AgentID, &b.BindingIndex, &b.HAState, &at, &fresh); err != nil {
			return nil, err
		}
		b.HAStateAt, b.HAStateFreshUntil = fromUSOrZero(at), fromUSOrZero(fresh)
		out = append(out, b)
	}
	return out, rows.Err()
}

// fromUSOrZero is fromUS with 0 as the zero time ("never").
func fromUSOrZero(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return fromUS(v)
}

// ActiveBindingsOf returns the bindings of routerIDs whose ha_state is
// active, except agentID's, ordered by router and index: the other claims to
// mastership an ha_state report of agentID must weigh. Usually none.
func (t *Tx) ActiveBindingsOf(routerIDs []string, exceptAgentID string) ([]Binding, error) {
	var out []Binding
	for ids := range slices.Chunk(routerIDs, maxListArgs) {
		cond, args := Where{"router_id": ids, "ha_state": "active"}.sql()
		rows, err := t.query("SELECT "+bindingCols+" FROM router_bindings"+cond+" AND agent_id <> ? ORDER BY router_id, binding_index", append(args, exceptAgentID)...)
		if err != nil {
			return nil, fmt.Errorf("listing active bindings: %w", err)
		}
		bs, err := scanBindings(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, bs...)
	}
	return out, nil
}

// maxListArgs bounds the ids of one IN list in the ha_state statements, well
// under SQLite's and PostgreSQL's limits on bound parameters.
const maxListArgs = 1000

// DeleteBinding unbinds a router from an agent.
func (t *Tx) DeleteBinding(routerID, agentID string) error {
	index := 0
	if t.tracking() {
		err := t.queryRow("SELECT binding_index FROM router_bindings WHERE router_id=? AND agent_id=?", routerID, agentID).Scan(&index)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
	}
	if _, err := t.exec("DELETE FROM router_bindings WHERE router_id=? AND agent_id=?", routerID, agentID); err != nil {
		return err
	}
	t.bindingDelta(routerID, agentID, -1, index == 1)
	return nil
}

// SetHAState sets the HA state of a binding without touching when it was
// reported (a demotion decided by the server); it reports whether such a
// binding exists.
func (t *Tx) SetHAState(routerID, agentID, state string) (bool, error) {
	res, err := t.exec("UPDATE router_bindings SET ha_state=? WHERE router_id=? AND agent_id=?", state, routerID, agentID)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// SetReportedHAState records, in one statement, the HA state an agent
// reported for a router, when (the transaction's time) and until when the
// report counts as fresh; it reports whether such a binding exists.
func (t *Tx) SetReportedHAState(routerID, agentID, state string, freshUntil time.Time) (bool, error) {
	res, err := t.exec("UPDATE router_bindings SET ha_state=?, ha_state_at=?, ha_state_fresh_until=? WHERE router_id=? AND agent_id=?",
		state, us(t.Now), us(freshUntil), routerID, agentID)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// RefreshHAStates records that agentID reported state again for routerIDs
// (now, fresh until freshUntil), in one statement per thousand routers,
// touching only bindings whose ha_state already is state; it returns how
// many it touched, so that a caller learns whether every router's state
// was unchanged.
func (t *Tx) RefreshHAStates(agentID, state string, routerIDs []string, freshUntil time.Time) (int, error) {
	total := 0
	for ids := range slices.Chunk(routerIDs, maxListArgs) {
		cond, args := Where{"router_id": ids, "agent_id": agentID, "ha_state": state}.sql()
		res, err := t.exec("UPDATE router_bindings SET ha_state_at=?, ha_state_fresh_until=?"+cond, append([]any{us(t.Now), us(freshUntil)}, args...)...)
		if err != nil {
			return total, fmt.Errorf("refreshing ha_state: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, err
		}
		total += int(n)
	}
	return total, nil
}

// CountSplitBrainRouters returns how many HA routers have an active binding
// on more than one admin-up agent that heartbeated after aliveAfter: the
// routers the API shows active on two agents at once.
func (t *Tx) CountSplitBrainRouters(aliveAfter time.Time) (int, error) {
	var n int
	err := t.queryRow(`SELECT COUNT(*) FROM (SELECT b.router_id FROM router_bindings b
		JOIN agents a ON a.id = b.agent_id JOIN routers r ON r.id = b.router_id
		WHERE b.ha_state = 'active' AND r.ha = ? AND a.admin_state_up = ? AND a.heartbeat_at > ?
		GROUP BY b.router_id HAVING COUNT(*) > 1) s`, true, true, us(aliveAfter)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("counting split-brain routers: %w", err)
	}
	return n, nil
}

// RouterCountsByAgent returns how many routers each agent hosts (in a
// write, from counts kept between writes: changes.go).
func (t *Tx) RouterCountsByAgent() (map[string]int, error) {
	return t.keptCounts(&t.db.routerCounts, &t.routerCounts, func() (map[string]int, error) { return t.countBindingsWhere("") })
}

func (t *Tx) countBindingsWhere(cond string) (map[string]int, error) {
	rows, err := t.query("SELECT agent_id, COUNT(*) FROM router_bindings" + cond + " GROUP BY agent_id")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			return nil, err
		}
		out[id] = n
	}
	return out, rows.Err()
}
