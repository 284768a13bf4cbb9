package store

import (
	"maps"
	"slices"
	"sync"
)

// Changes says what a committed write may have changed in agents' desired
// states, so that the agent endpoint rebuilds only the states that depend
// on it instead of every host's on every commit. It is filled by the Tx
// methods that write (never by callers) and is conservative: a write it
// cannot describe cheaply sets All.
type Changes struct {
	// All: anything may have changed (agents registered or reconfigured,
	// rows deleted by cascade, a revision committed by another server).
	All bool
	// Routers whose row, ports, VRID, floating IPs or bindings changed.
	Routers map[string]bool
	// Networks whose row or subnets changed, that a router port was added
	// to or removed from, or that lost a port.
	Networks map[string]bool
	// Agents whose bindings changed.
	Agents map[string]bool
	// Hosts that an added, moved or removed non-router port is bound to.
	Hosts map[string]bool
	// Joined holds (network, host) for every non-router port added on the
	// network and bound to the host: the host may be a new peer there.
	Joined map[[2]string]bool
}

func addKey[K comparable](m *map[K]bool, k K) {
	if *m == nil {
		*m = map[K]bool{}
	}
	(*m)[k] = true
}

// routerOwned reports whether a port is a router's interface or gateway
// (their networks' peers follow the router's bindings, not the port's host).
func routerOwned(owner string) bool {
	return owner == "network:router_interface" || owner == "network:ha_router_replicated_interface" || owner == "network:router_gateway"
}

// tracking reports whether t records changes: only writes that bump the
// revision do (quiet writes change no desired state).
func (t *Tx) tracking() bool { return t.Revision > 0 }

func (t *Tx) changes() *Changes {
	if t.ch == nil {
		t.ch = &Changes{}
	}
	return t.ch
}

func (t *Tx) touchAll() {
	if t.tracking() {
		t.changes().All = true
	}
}

func (t *Tx) touchRouter(id string) {
	if t.tracking() && id != "" {
		addKey(&t.changes().Routers, id)
	}
}

func (t *Tx) touchNetwork(id string) {
	if t.tracking() && id != "" {
		addKey(&t.changes().Networks, id)
	}
}

// portLocation is what of a port matters to desired states beyond its own
// router's spec.
type portLocation struct{ network, device, owner, host string }

// touchPort records a port added (removed=false) or removed at loc.
func (t *Tx) touchPort(loc portLocation, removed bool) {
	if !t.tracking() {
		return
	}
	c := t.changes()
	if loc.device != "" {
		addKey(&c.Routers, loc.device) // harmless when the device is an instance
	}
	if routerOwned(loc.owner) || removed {
		addKey(&c.Networks, loc.network)
	}
	if !routerOwned(loc.owner) && loc.host != "" {
		addKey(&c.Hosts, loc.host)
		addKey(&c.Joined, [2]string{loc.network, loc.host})
	}
}

// portLocationOf reads a port's location before it changes; ok is false
// when the port does not exist or cannot be read (the caller then records
// All).
func (t *Tx) portLocationOf(id string) (portLocation, bool) {
	var l portLocation
	err := t.queryRow("SELECT network_id, device_id, device_owner, host_id FROM ports WHERE id=?", id).Scan(&l.network, &l.device, &l.owner, &l.host)
	return l, err == nil
}

// touchPortChange records a port about to move from its stored location
// to loc (an update), or about to be removed (loc nil).
func (t *Tx) touchPortChange(id string, loc *portLocation) {
	if !t.tracking() {
		return
	}
	old, ok := t.portLocationOf(id)
	switch {
	case !ok:
		t.touchAll()
	case loc == nil:
		t.touchPort(old, true)
	case old == *loc:
		t.touchPort(old, false)
	default:
		t.touchPort(old, true)
		t.touchPort(*loc, false)
	}
}

// bindingDelta records d bindings added (+) or removed (-) on an agent,
// with binding index 1 when master, for the counts kept between writes
// (RouterCountsByAgent, MasterCountsByAgent).
func (t *Tx) bindingDelta(routerID, agentID string, d int, master bool) {
	if !t.tracking() {
		return
	}
	c := t.changes()
	addKey(&c.Routers, routerID)
	addKey(&c.Agents, agentID)
	t.routerCounts.add(agentID, d)
	if master {
		t.masterCounts.add(agentID, d)
	}
}

// agentCounts are counts per agent kept between writes, as of rev.
type agentCounts struct {
	m   map[string]int
	rev int64
}

// txCounts is a write's view of kept counts: its own changes (delta) and,
// once read, the counts before it (base).
type txCounts struct {
	delta map[string]int
	base  map[string]int
}

func (c *txCounts) add(agentID string, d int) {
	if c.delta == nil {
		c.delta = map[string]int{}
	}
	c.delta[agentID] += d
}

func applyDelta(m, delta map[string]int, sign int) {
	for a, d := range delta {
		m[a] += sign * d
		if m[a] <= 0 {
			delete(m, a)
		}
	}
}

// keptCounts returns counts per agent: in a write, from those kept as of
// the previous revision plus the write's own changes, instead of counting
// every binding (which per router create would grow with the number of
// routers); otherwise, or when none are kept, from count.
func (t *Tx) keptCounts(kept *agentCounts, tc *txCounts, count func() (map[string]int, error)) (map[string]int, error) {
	if !t.tracking() || t.deltaUnknown {
		return count()
	}
	t.db.mu.Lock()
	var base map[string]int
	if kept.m != nil && kept.rev == t.Revision-1 {
		base = maps.Clone(kept.m)
	}
	t.db.mu.Unlock()
	if base == nil {
		out, err := count()
		if err != nil {
			return nil, err
		}
		// count saw this write's own changes: take them out for the base.
		base = maps.Clone(out)
		applyDelta(base, tc.delta, -1)
	}
	tc.base = base
	out := maps.Clone(base)
	applyDelta(out, tc.delta, +1)
	return out, nil
}

// keep updates counts kept after a write committed as rev (db.mu held).
// Revisions are consecutive for writes serialized on the revision row, so
// counts kept as of rev-1 plus the write's changes are the counts as of rev.
func (kept *agentCounts) keep(rev int64, tc *txCounts, unknown bool) {
	switch {
	case kept.m != nil && kept.rev >= rev:
		return // a later write, done first, kept newer counts
	case unknown:
		kept.m = nil
		return
	case tc.base != nil:
		kept.m = tc.base
	case kept.m != nil && kept.rev == rev-1:
	default:
		kept.m = nil
		return
	}
	applyDelta(kept.m, tc.delta, +1)
	kept.rev = rev
}

// MasterCountsByAgent returns how many routers each agent hosts with
// binding index 1: the agent that starts VRRP first and so becomes master.
func (t *Tx) MasterCountsByAgent() (map[string]int, error) {
	return t.keptCounts(&t.db.masters, &t.masterCounts, func() (map[string]int, error) {
		return t.countBindingsWhere(" WHERE binding_index = 1")
	})
}

// bindingsUnknown records that bindings changed in a way not counted
// (cascades): the kept router counts are dropped at commit.
func (t *Tx) bindingsUnknown() {
	if t.tracking() {
		t.deltaUnknown = true
	}
}

// changeLogSize is how many recent revisions' changes are kept; a waiter
// further behind rebuilds.
const changeLogSize = 4096

// ChangesSince returns the changes of the revisions after from up to to,
// oldest first. ok is false when one of them is unknown (committed by
// another server, or too old to be kept) or changed everything: the caller
// must then assume anything changed.
func (db *DB) ChangesSince(from, to int64) (out []*Changes, ok bool) {
	if to <= from {
		return nil, true
	}
	if to-from > changeLogSize {
		return nil, false
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	for r := from + 1; r <= to; r++ {
		c := db.changeLog[r]
		if c == nil || c.All {
			return nil, false
		}
		out = append(out, c)
	}
	return out, true
}

// logChanges records the changes committed as rev (db.mu held).
func (db *DB) logChanges(rev int64, c *Changes) {
	if db.changeLog == nil {
		db.changeLog = map[int64]*Changes{}
	}
	if c == nil {
		c = &Changes{} // a write that touched nothing
	}
	db.changeLog[rev] = c
	if old := rev - changeLogSize; old > 0 {
		for r := range db.changeLog {
			if r <= old {
				delete(db.changeLog, r)
			}
		}
	}
}

// NetworkPorts is what the ports on one network say about who needs it:
// the hosts its non-router ports are bound to, and the routers that have
// an interface or gateway on it (whose agents need it too).
type NetworkPorts struct {
	Hosts   map[string]bool // never ""; shared: do not modify
	Routers []string        // shared: do not modify
	asOf    int64

	memoMu  sync.Mutex
	memoKey any
	memoVal any
}

// Memo returns what compute returns for key, computing it once for this
// NetworkPorts and key (a newer key replaces the older): for what callers
// derive from the network's ports and want to share across builds.
func (np *NetworkPorts) Memo(key any, compute func() any) any {
	np.memoMu.Lock()
	defer np.memoMu.Unlock()
	if np.memoVal == nil || np.memoKey != key {
		np.memoKey, np.memoVal = key, compute()
	}
	return np.memoVal
}

// NetworkPortsOf returns NetworkPorts for each of netIDs. Hosts' desired
// states need them for every network they wire, and an HA network holds a
// port per router and agent, so reading them per build would grow with the
// number of routers: they are kept between transactions, updated by what
// local writes change (a port added on a host) and read again after
// anything else (a port removed, a router port, another server's write).
func (t *Tx) NetworkPortsOf(netIDs []string) (map[string]*NetworkPorts, error) {
	db := t.db
	out := make(map[string]*NetworkPorts, len(netIDs))
	var miss []string
	db.mu.Lock()
	for _, id := range netIDs {
		if e := db.netCache[id]; e != nil {
			out[id] = e
		} else {
			miss = append(miss, id)
		}
	}
	db.mu.Unlock()
	if len(miss) == 0 {
		return out, nil
	}
	locs, err := t.ListPortLocations(Where{"network_id": miss})
	if err != nil {
		return nil, err
	}
	fresh := make(map[string]*NetworkPorts, len(miss))
	for _, id := range miss {
		fresh[id] = &NetworkPorts{Hosts: map[string]bool{}, asOf: t.minRev}
	}
	for _, l := range locs {
		e := fresh[l.NetworkID]
		if e == nil {
			continue
		}
		if routerOwned(l.DeviceOwner) {
			if !slices.Contains(e.Routers, l.DeviceID) {
				e.Routers = append(e.Routers, l.DeviceID)
			}
		} else if l.HostID != "" {
			e.Hosts[l.HostID] = true
		}
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.netCache == nil {
		db.netCache = map[string]*NetworkPorts{}
	}
	for id, e := range fresh {
		out[id] = e
		// Kept only if nothing committed after this transaction's start
		// changed the network's ports (or the change is applied to it).
		if db.netCache[id] == nil && t.minRev >= db.unknownRev && t.minRev >= db.netRev[id] && t.minRev >= db.joinRev[id] {
			db.netCache[id] = e
		}
	}
	return out, nil
}

// AgentsShared returns every agent for reading hosts and configurations:
// kept between transactions until an agent is registered, changed or
// deleted (writes that change everything). HeartbeatAt is not current and
// the agents are shared: do not modify them.
func (t *Tx) AgentsShared() ([]*Agent, error) {
	db := t.db
	db.mu.Lock()
	if db.agentsCache != nil {
		as := db.agentsCache
		db.mu.Unlock()
		return as, nil
	}
	db.mu.Unlock()
	as, err := t.ListAgents(nil)
	if err != nil {
		return nil, err
	}
	db.mu.Lock()
	if db.agentsCache == nil && t.minRev >= db.unknownRev {
		db.agentsCache = as
	}
	db.mu.Unlock()
	return as, nil
}

// keepNetworks updates the kept NetworkPorts and agents after a local
// write committed as rev (db.mu held).
func (db *DB) keepNetworks(rev int64, c *Changes) {
	if c == nil {
		return
	}
	if c.All {
		db.forgetKept(rev)
		return
	}
	if db.netRev == nil {
		db.netRev, db.joinRev = map[string]int64{}, map[string]int64{}
	}
	for n := range c.Networks {
		db.netRev[n] = max(db.netRev[n], rev)
		delete(db.netCache, n)
	}
	for k := range c.Joined {
		n, host := k[0], k[1]
		db.joinRev[n] = max(db.joinRev[n], rev)
		if e := db.netCache[n]; e != nil && !e.Hosts[host] {
			hosts := maps.Clone(e.Hosts)
			hosts[host] = true
			db.netCache[n] = &NetworkPorts{Hosts: hosts, Routers: e.Routers, asOf: e.asOf}
		}
	}
}

// forgetKept drops what is kept between transactions: rev changed
// something unknown (db.mu held).
func (db *DB) forgetKept(rev int64) {
	db.netCache, db.agentsCache = nil, nil
	db.unknownRev = max(db.unknownRev, rev)
}
