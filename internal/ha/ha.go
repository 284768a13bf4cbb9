// Package ha is l3ha's HA-router logic, as Neutron's l3_hamode and L3
// scheduler define it: a project's HA networks on l3_ha_net_cidr, VRID
// allocation (1..254 per HA network, a further HA network when one is full),
// HA ports, scheduling routers onto the least-loaded L3 agents with unique
// binding indexes, auto-scheduling when agents join, and the ha_state the API
// shows (a dead agent's "active" is not believed).
//
// The choosing functions (PickVRID, ChooseAgents, ViewStates) are pure; the
// Manager applies them inside a store write transaction.
package ha

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"sort"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/l3ha/l3ha/internal/agentapi"
	"github.com/l3ha/l3ha/internal/ipam"
	"github.com/l3ha/l3ha/internal/store"
)

// Device owners of router ports, as Neutron names them.
const (
	OwnerHAInterface         = "network:router_ha_interface"
	OwnerRouterInterface     = "network:router_interface"
	OwnerReplicatedInterface = "network:ha_router_replicated_interface"
	OwnerRouterGateway       = "network:router_gateway"
	OwnerFloatingIP          = "network:floatingip"
	MaxVRID                  = 254
)

// SwitchoverTimeout bounds an operator's switchover: a request whose target
// has not reported active by then is dropped (the master stays where it is),
// so that no agent acts on an old one after a restart. A switchover takes
// the target one apply of its desired state plus one advert round trip.
const SwitchoverTimeout = 30 * time.Second

// Config holds the server's HA options (Neutron's names in comments).
type Config struct {
	MaxAgents       int           // max_l3_agents_per_router; 0 = every eligible agent
	MinAgents       int           // min_l3_agents_per_router
	NetCIDR         netip.Prefix  // l3_ha_net_cidr
	NetworkType     string        // l3_ha_network_type ("" = vxlan)
	PhysicalNetwork string        // l3_ha_network_physical_name
	VNIs            ipam.VNIRange // VXLAN ids for HA (and tenant) networks
	AgentDownTime   time.Duration // agent_down_time
	// RoutersPerNetwork is l3_ha_routers_per_network (l3ha's): at most
	// this many routers (VRIDs) share an HA network; 0 means MaxVRID, as
	// Neutron. Every advert reaches every ha- port of its HA network on
	// every node, so this bounds that flood.
	RoutersPerNetwork int
}

// routersPerNetwork is RoutersPerNetwork, 0 meaning MaxVRID.
func (c Config) routersPerNetwork() int {
	if c.RoutersPerNetwork <= 0 || c.RoutersPerNetwork > MaxVRID {
		return MaxVRID
	}
	return c.RoutersPerNetwork
}

// ErrNotEnoughAgents is Neutron's HANotEnoughAvailableAgents.
type ErrNotEnoughAgents struct{ Min, Available int }

func (e *ErrNotEnoughAgents) Error() string {
	return fmt.Sprintf("Not enough l3 agents available to ensure HA. Minimum required %d, available %d.", e.Min, e.Available)
}

// Manager applies HA semantics inside store transactions.
type Manager struct {
	cfg  Config
	log  *slog.Logger
	live liveness
}

// NewManager returns a Manager for cfg.
func NewManager(cfg Config, log *slog.Logger) *Manager {
	if cfg.NetworkType == "" {
		cfg.NetworkType = "vxlan"
	}
	return &Manager{cfg: cfg, log: log}
}

// Config returns the manager's configuration.
func (m *Manager) Config() Config { return m.cfg }

func newRand() *rand.Rand { return rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())) }

// PickVRID returns a random free VRID in 1..254, or false when all are used.
// Random (not lowest-free) so that a VRID freed by a deleted router is not
// immediately handed to a new one while stale VRRP traffic may linger.
func PickVRID(used map[int]bool, rnd *rand.Rand) (int, bool) {
	free := make([]int, 0, MaxVRID)
	for v := 1; v <= MaxVRID; v++ {
		if !used[v] {
			free = append(free, v)
		}
	}
	if len(free) == 0 {
		return 0, false
	}
	return free[rnd.IntN(len(free))], true
}

// Candidate is an agent that may host a router, with its current load.
type Candidate struct {
	AgentID string
	Routers int
}

// ChooseAgents returns the n least-loaded candidates. Ties are broken at
// random so that, with nopreempt, the first (master-to-be) binding of each
// router lands on different agents (LP#1365429).
func ChooseAgents(cands []Candidate, n int, rnd *rand.Rand) []Candidate {
	c := append([]Candidate(nil), cands...)
	rnd.Shuffle(len(c), func(i, j int) { c[i], c[j] = c[j], c[i] })
	sort.SliceStable(c, func(i, j int) bool { return c[i].Routers < c[j].Routers })
	if n < len(c) {
		c = c[:n]
	}
	return c
}

// FewestMastersFirst moves the candidate with the fewest masters (the
// first such in cands' order) to the front, keeping the others' order.
func FewestMastersFirst(cands []Candidate, masters map[string]int) []Candidate {
	best := 0
	for i, c := range cands {
		if masters[c.AgentID] < masters[cands[best].AgentID] {
			best = i
		}
	}
	out := make([]Candidate, 0, len(cands))
	out = append(out, cands[best])
	out = append(out, cands[:best]...)
	return append(out, cands[best+1:]...)
}

// Alive reports whether an agent's last heartbeat is recent enough by the
// wall clock (Manager.Alive also survives steps of the clock).
func Alive(a *store.Agent, now time.Time, downTime time.Duration) bool {
	return now.Sub(a.HeartbeatAt) < downTime
}

// HostedBy is one binding of a router as the API sees it.
type HostedBy struct {
	Agent   *store.Agent
	Binding store.Binding
}

// ViewStates returns the ha_state the API shows for each binding of one HA
// router: what the agent reported, except that an agent that is dead or
// administratively down is never shown active (LP#1682145), and when every
// hosting agent is dead the state is unknown.
func ViewStates(bs []HostedBy, alive func(*store.Agent) bool) []string {
	out := make([]string, len(bs))
	anyAlive := false
	for _, b := range bs {
		if alive(b.Agent) {
			anyAlive = true
		}
	}
	for i, b := range bs {
		switch {
		case !anyAlive:
			out[i] = agentapi.HAUnknown
		case b.Binding.HAState == agentapi.HAActive && (!alive(b.Agent) || !b.Agent.AdminStateUp):
			out[i] = agentapi.HAStandby
		case b.Binding.HAState == "":
			out[i] = agentapi.HAStandby
		default:
			out[i] = b.Binding.HAState
		}
	}
	return out
}

// eligible returns the agents that may host routers now: alive, admin-up
// L3 agents in legacy or dvr_snat mode.
func (m *Manager) eligible(tx *store.Tx) ([]*store.Agent, error) {
	agents, err := tx.ListAgents(store.Where{"agent_type": agentapi.AgentTypeL3})
	if err != nil {
		return nil, err
	}
	var out []*store.Agent
	for _, a := range agents {
		mode, _ := a.Configurations["agent_mode"].(string)
		if mode == "" {
			mode = agentapi.ModeLegacy
		}
		if a.AdminStateUp && m.Alive(a, tx.Now) && (mode == agentapi.ModeLegacy || mode == agentapi.ModeDVRSNAT) {
			out = append(out, a)
		}
	}
	return out, nil
}

// CheckEnoughAgents enforces min_l3_agents_per_router for a new HA router.
func (m *Manager) CheckEnoughAgents(tx *store.Tx) error {
	if m.cfg.MinAgents <= 0 {
		return nil
	}
	el, err := m.eligible(tx)
	if err != nil {
		return err
	}
	if len(el) < m.cfg.MinAgents {
		return &ErrNotEnoughAgents{Min: m.cfg.MinAgents, Available: len(el)}
	}
	return nil
}

func (m *Manager) target(r *store.Router, eligible int) int {
	if !r.HA {
		return 1
	}
	if m.cfg.MaxAgents == 0 {
		return eligible
	}
	return m.cfg.MaxAgents
}

// EnableHA gives router r a VRID on one of its project's HA networks,
// creating the network (and subnet) when the project has none with a free
// VRID. r.HA must already be true.
func (m *Manager) EnableHA(tx *store.Tx, r *store.Router) error {
	nets, err := tx.ListHANetworks(store.Where{"project_id": r.ProjectID})
	if err != nil {
		return err
	}
	rnd := newRand()
	for _, hn := range nets {
		// A project's full HA networks are skipped by counting, so that a
		// create does not read every VRID of the project.
		if n, err := tx.CountVRIDs(hn.NetworkID); err != nil {
			return err
		} else if n >= m.cfg.routersPerNetwork() {
			continue
		}
		used, err := m.usedVRIDs(tx, hn.NetworkID)
		if err != nil {
			return err
		}
		if v, ok := PickVRID(used, rnd); ok {
			return tx.InsertVRID(store.VRIDAllocation{NetworkID: hn.NetworkID, VRID: v, RouterID: r.ID})
		}
	}
	seq := 1
	if len(nets) > 0 {
		seq = nets[len(nets)-1].Seq + 1
	}
	netID, err := m.createHANetwork(tx, r.ProjectID, seq, rnd)
	if err != nil {
		return fmt.Errorf("creating HA network %d of project %s: %w", seq, r.ProjectID, err)
	}
	v, _ := PickVRID(nil, rnd)
	return tx.InsertVRID(store.VRIDAllocation{NetworkID: netID, VRID: v, RouterID: r.ID})
}

func (m *Manager) usedVRIDs(tx *store.Tx, networkID string) (map[int]bool, error) {
	as, err := tx.ListVRIDs(store.Where{"network_id": networkID})
	if err != nil {
		return nil, err
	}
	used := make(map[int]bool, len(as))
	for _, a := range as {
		used[a.VRID] = true
	}
	return used, nil
}

// HANetworkName is Neutron's name for a project's HA network; a project's
// further HA networks (l3ha's way past 254 routers) carry a sequence suffix.
func HANetworkName(project string, seq int) string {
	if seq <= 1 {
		return "HA network tenant " + project
	}
	return "HA network tenant " + project + " #" + strconv.Itoa(seq)
}

func (m *Manager) createHANetwork(tx *store.Tx, project string, seq int, rnd *rand.Rand) (string, error) {
	n := &store.Network{
		ID: uuid.NewString(), ProjectID: "", Name: HANetworkName(project, seq),
		AdminStateUp: true, Status: "ACTIVE", NetworkType: m.cfg.NetworkType, MTU: 1450,
	}
	switch m.cfg.NetworkType {
	case "vxlan":
		vni, err := ipam.AllocateVNI(tx, m.cfg.VNIs, rnd)
		if err != nil {
			return "", err
		}
		n.SegmentationID = &vni
	case "flat":
		// Several HA networks cannot share one flat physnet; Neutron has the
		// same limit. Operators choose vxlan for HA networks.
		pn := m.cfg.PhysicalNetwork
		n.PhysicalNetwork, n.MTU = &pn, 1500
	default:
		return "", fmt.Errorf("unsupported l3_ha_network_type %q", m.cfg.NetworkType)
	}
	if err := tx.InsertNetwork(n); err != nil {
		return "", err
	}
	if err := tx.InsertHANetwork(store.HANetwork{NetworkID: n.ID, ProjectID: project, Seq: seq}); err != nil {
		return "", err
	}
	prefix := m.cfg.NetCIDR.Masked()
	sub := &store.Subnet{
		ID: uuid.NewString(), NetworkID: n.ID, ProjectID: "", Name: "HA subnet tenant " + project,
		CIDR: prefix.String(), EnableDHCP: false, IPVersion: 4,
		AllocationPools: ipam.DefaultPools(prefix, nil),
	}
	if err := tx.InsertSubnet(sub); err != nil {
		return "", err
	}
	if err := tx.TouchNetwork(n.ID); err != nil {
		return "", err
	}
	m.log.Info("created HA network", "project_id", project, "network_id", n.ID, "seq", seq)
	return n.ID, nil
}

// VRIDOf returns a router's VRID allocation, if any.
func VRIDOf(tx *store.Tx, routerID string) (*store.VRIDAllocation, error) {
	as, err := tx.ListVRIDs(store.Where{"router_id": routerID})
	if err != nil || len(as) == 0 {
		return nil, err
	}
	return &as[0], nil
}

// DisableHA removes r's HA footprint: its HA ports, its VRID, and its HA
// network when no other router still has a VRID on it.
func (m *Manager) DisableHA(tx *store.Tx, r *store.Router) error {
	ports, err := tx.ListPorts(store.Where{"device_id": r.ID, "device_owner": OwnerHAInterface})
	if err != nil {
		return err
	}
	for _, p := range ports {
		if err := tx.DeletePort(p.ID); err != nil {
			return fmt.Errorf("deleting HA port %s: %w", p.ID, err)
		}
	}
	alloc, err := VRIDOf(tx, r.ID)
	if err != nil || alloc == nil {
		return err
	}
	if err := tx.DeleteVRID(r.ID); err != nil {
		return err
	}
	left, err := tx.ListVRIDs(store.Where{"network_id": alloc.NetworkID})
	if err != nil {
		return err
	}
	if len(left) > 0 {
		return nil
	}
	return m.deleteHANetwork(tx, alloc.NetworkID)
}

func (m *Manager) deleteHANetwork(tx *store.Tx, networkID string) error {
	ports, err := tx.ListPorts(store.Where{"network_id": networkID})
	if err != nil {
		return err
	}
	for _, p := range ports {
		if err := tx.DeletePort(p.ID); err != nil {
			return err
		}
	}
	subs, err := tx.ListSubnets(store.Where{"network_id": networkID})
	if err != nil {
		return err
	}
	for _, s := range subs {
		if err := tx.DeleteSubnet(s.ID); err != nil {
			return err
		}
	}
	if err := tx.DeleteHANetwork(networkID); err != nil {
		return err
	}
	if err := tx.DeleteNetwork(networkID); err != nil {
		return fmt.Errorf("deleting HA network %s: %w", networkID, err)
	}
	m.log.Info("deleted HA network", "network_id", networkID)
	return nil
}

// Schedule binds r to least-loaded eligible agents until it has its target
// number of bindings (1 for legacy routers; max_l3_agents_per_router, or every
// eligible agent when 0, for HA routers). It returns the agents added.
func (m *Manager) Schedule(tx *store.Tx, r *store.Router) ([]string, error) {
	el, err := m.eligible(tx)
	if err != nil {
		return nil, err
	}
	return m.scheduleOn(tx, r, el, nil)
}

func (m *Manager) scheduleOn(tx *store.Tx, r *store.Router, el []*store.Agent, loads map[string]int) ([]string, error) {
	existing, err := tx.ListBindings(store.Where{"router_id": r.ID})
	if err != nil {
		return nil, err
	}
	want := m.target(r, len(el)) - len(existing)
	if want <= 0 {
		return nil, nil
	}
	if loads == nil {
		if loads, err = tx.RouterCountsByAgent(); err != nil {
			return nil, err
		}
	}
	hosting := map[string]bool{}
	for _, b := range existing {
		hosting[b.AgentID] = true
	}
	var cands []Candidate
	byID := map[string]*store.Agent{}
	for _, a := range el {
		if !hosting[a.ID] {
			cands = append(cands, Candidate{AgentID: a.ID, Routers: loads[a.ID]})
			byID[a.ID] = a
		}
	}
	chosen := ChooseAgents(cands, want, newRand())
	if len(existing) == 0 && len(chosen) > 1 {
		// A new router: its first binding (index 1) starts VRRP first and
		// becomes master; give it to the chosen agent with fewest masters,
		// so that masters spread as evenly as routers.
		masters, err := tx.MasterCountsByAgent()
		if err != nil {
			return nil, err
		}
		chosen = FewestMastersFirst(chosen, masters)
	}
	var added []string
	for _, c := range chosen {
		if err := m.bind(tx, r, byID[c.AgentID], existing); err != nil {
			return nil, err
		}
		loads[c.AgentID]++
		existing = append(existing, store.Binding{RouterID: r.ID, AgentID: c.AgentID, BindingIndex: nextIndex(existing)})
		added = append(added, c.AgentID)
	}
	return added, nil
}

func nextIndex(bs []store.Binding) int {
	used := map[int]bool{}
	for _, b := range bs {
		used[b.BindingIndex] = true
	}
	i := 1
	for used[i] {
		i++
	}
	return i
}

// bind creates the binding (lowest free index) and, for HA routers, the
// router's HA port for that agent.
func (m *Manager) bind(tx *store.Tx, r *store.Router, a *store.Agent, existing []store.Binding) error {
	if err := tx.InsertBinding(store.Binding{RouterID: r.ID, AgentID: a.ID, BindingIndex: nextIndex(existing), HAState: agentapi.HAStandby}); err != nil {
		return err
	}
	if r.HA {
		if err := m.createHAPort(tx, r, a.Host); err != nil {
			return err
		}
	}
	m.log.Info("router scheduled", "router_id", r.ID, "agent_id", a.ID, "host", a.Host)
	return nil
}

func (m *Manager) createHAPort(tx *store.Tx, r *store.Router, host string) error {
	alloc, err := VRIDOf(tx, r.ID)
	if err != nil {
		return err
	}
	if alloc == nil {
		return fmt.Errorf("HA router %s has no VRID", r.ID)
	}
	hns, err := tx.ListHANetworks(store.Where{"network_id": alloc.NetworkID})
	if err != nil || len(hns) == 0 {
		return fmt.Errorf("HA network %s of router %s: %w", alloc.NetworkID, r.ID, errors.Join(err, store.ErrNotFound))
	}
	subs, err := tx.ListSubnets(store.Where{"network_id": alloc.NetworkID})
	if err != nil || len(subs) == 0 {
		return fmt.Errorf("HA subnet of network %s: %w", alloc.NetworkID, errors.Join(err, store.ErrNotFound))
	}
	rnd := newRand()
	ip, _, err := ipam.AllocateFixedIP(tx, subs[0], "", false, rnd)
	if err != nil {
		return fmt.Errorf("allocating HA port address: %w", err)
	}
	mac, err := ipam.AllocateMAC(tx, alloc.NetworkID, rnd)
	if err != nil {
		return fmt.Errorf("allocating HA port MAC: %w", err)
	}
	p := &store.Port{
		ID: uuid.NewString(), NetworkID: alloc.NetworkID, ProjectID: "", Name: "HA port tenant " + hns[0].ProjectID,
		AdminStateUp: true, MACAddress: mac, DeviceID: r.ID, DeviceOwner: OwnerHAInterface,
		Status: "DOWN", HostID: host, FixedIPs: []store.FixedIP{{SubnetID: subs[0].ID, IPAddress: ip}},
	}
	return tx.InsertPort(p)
}

// PortHost returns the binding:host_id for a new interface or gateway port
// of r: for an HA router the host that reported active (preferring an alive
// agent; "" while none has), for a legacy router its agent's host. Later
// reports move the ports as they move the router's other ports.
func (m *Manager) PortHost(tx *store.Tx, r *store.Router) (string, error) {
	bs, err := tx.ListBindings(store.Where{"router_id": r.ID})
	if err != nil {
		return "", err
	}
	host := ""
	for _, b := range bs {
		if r.HA && b.HAState != agentapi.HAActive {
			continue
		}
		a, err := tx.GetAgent(b.AgentID)
		if err != nil {
			return "", err
		}
		if m.Alive(a, tx.Now) {
			return a.Host, nil
		}
		if host == "" {
			host = a.Host
		}
	}
	return host, nil
}

// Bind adds a router to a specific agent (l3-agent-router-add); this may
// exceed max_l3_agents_per_router, as in Neutron.
func (m *Manager) Bind(tx *store.Tx, r *store.Router, a *store.Agent) error {
	existing, err := tx.ListBindings(store.Where{"router_id": r.ID})
	if err != nil {
		return err
	}
	return m.bind(tx, r, a, existing)
}

// Unbind removes a router from an agent, with its HA port there.
func (m *Manager) Unbind(tx *store.Tx, r *store.Router, a *store.Agent) error {
	if err := tx.DeleteBinding(r.ID, a.ID); err != nil {
		return err
	}
	if r.HA {
		ports, err := tx.ListPorts(store.Where{"device_id": r.ID, "device_owner": OwnerHAInterface, "host_id": a.Host})
		if err != nil {
			return err
		}
		for _, p := range ports {
			if err := tx.DeletePort(p.ID); err != nil {
				return err
			}
		}
	}
	m.log.Info("router unscheduled", "router_id", r.ID, "agent_id", a.ID, "host", a.Host)
	return nil
}

// UnbindAll removes every binding of r (and HA ports with them).
func (m *Manager) UnbindAll(tx *store.Tx, r *store.Router) error {
	bs, err := tx.ListBindings(store.Where{"router_id": r.ID})
	if err != nil {
		return err
	}
	for _, b := range bs {
		a, err := tx.GetAgent(b.AgentID)
		if err != nil {
			return err
		}
		if err := m.Unbind(tx, r, a); err != nil {
			return err
		}
	}
	return nil
}

// AutoSchedule gives a newly (re)joined agent the routers that have fewer
// bindings than they should (router_auto_schedule). It returns how many
// routers were bound to it.
func (m *Manager) AutoSchedule(tx *store.Tx, agent *store.Agent) (int, error) {
	el, err := m.eligible(tx)
	if err != nil {
		return 0, err
	}
	isEligible := false
	for _, a := range el {
		if a.ID == agent.ID {
			isEligible = true
		}
	}
	if !isEligible {
		return 0, nil
	}
	routers, err := tx.ListRouters(nil)
	if err != nil {
		return 0, err
	}
	bindings, err := tx.ListBindings(nil)
	if err != nil {
		return 0, err
	}
	byRouter := map[string][]store.Binding{}
	onAgent := map[string]bool{}
	for _, b := range bindings {
		byRouter[b.RouterID] = append(byRouter[b.RouterID], b)
		if b.AgentID == agent.ID {
			onAgent[b.RouterID] = true
		}
	}
	n := 0
	for _, r := range routers {
		existing := byRouter[r.ID]
		if onAgent[r.ID] || len(existing) >= m.target(r, len(el)) {
			continue
		}
		if r.HA {
			if a, err := VRIDOf(tx, r.ID); err != nil || a == nil {
				continue // HA router without VRID (status ERROR) cannot run
			}
		}
		if err := m.bind(tx, r, agent, existing); err != nil {
			return n, fmt.Errorf("auto-scheduling router %s: %w", r.ID, err)
		}
		n++
	}
	return n, nil
}
