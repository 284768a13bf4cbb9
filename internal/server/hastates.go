package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/l3ha/l3ha/internal/agentapi"
	"github.com/l3ha/l3ha/internal/ha"
	"github.com/l3ha/l3ha/internal/store"
)

// How the ha_state of a router's bindings follows the agents' reports
// (agentapi.HAStateReport):
//
//   - A transition to active supersedes the router's other active bindings
//     at once: VRRP's new master only takes over after not hearing the old
//     one, so the old one is most likely dead (a dead node's agent still
//     looks alive until agent_down_time). The API shows the new master
//     within the agent's batch delay.
//   - A re-assertion of active (agents re-assert every router's state
//     every few seconds) takes over from an active binding whose last
//     report is stale, or whose agent is dead; but while that binding is
//     fresh too, both masters are real: that is split brain, and it is
//     shown as such, both bindings active, with a warning and the
//     l3ha_server_split_brain_routers gauge, until one steps down and
//     reports standby. So a master superseded by a transition that is in
//     fact still master shows active again at its next re-assertion, and
//     after a partition heals the API shows the one master that is left.
//   - Every report records when the binding's state was reported and until
//     when that counts as fresh (router_bindings.ha_state_at and
//     ha_state_fresh_until).
//
// A master's host also becomes the binding:host_id of the router's
// interface and gateway ports, as in Neutron, so L2 population follows the
// master.

// defaultReassert is the agents' default re-assertion interval
// (agent.DefaultReassertInterval), assumed for reports that do not say
// theirs.
const defaultReassert = 10 * time.Second

// freshWindow is how long a report of an agent that re-asserts every
// reassertSeconds (0: not said) stays fresh: twice the interval, so that one
// lost or late re-assertion does not make a live master look stale, plus
// slack for batching and a loaded server (10 s: 25 s).
func freshWindow(reassertSeconds float64) time.Duration {
	iv := defaultReassert
	if reassertSeconds > 0 {
		iv = time.Duration(min(reassertSeconds, 3600) * float64(time.Second))
	}
	return 2*iv + min(max(iv/2, time.Second), 5*time.Second)
}

// errNeedLock makes haStates run a report again with the write lock taken
// first: the unlocked fast path for re-assertions found something to change.
var errNeedLock = errors.New("ha_state report needs the write lock")

// haOutcome is what a report did, logged after it committed.
type haOutcome struct {
	changed   []haChange
	demoted   []haDemotion
	split     []haSplit // split brain that this report made visible
	ongoing   []string  // routers whose split brain this report re-asserted
	unbound   []string  // routers no longer bound to the agent
	refreshed int       // routers whose state was only confirmed
	switched  []string  // routers whose switchover this report completed
	healed    []haSplit // split brains this report ended (others: the masters left)
	// transitions are the history rows written (transitions.go).
	transitions []store.HATransition
}

type haChange struct{ routerID, state, previous, reason string }

type haDemotion struct{ routerID, agentID, host, reason string }

type haSplit struct {
	routerID string
	others   []string // hosts of the other fresh active bindings
}

// haStates records a batch of HA states (transitions or a re-assertion of
// every router of the host): see above.
func (s *Server) haStates(w http.ResponseWriter, r *http.Request) error {
	var rep agentapi.HAStateReport
	if err := decodeAgentBody(r, &rep); err != nil {
		return err
	}
	if err := actFor(r, rep.Host); err != nil {
		return err
	}
	for id, st := range rep.States {
		if st != agentapi.HAActive && st != agentapi.HAStandby {
			return endpointError{http.StatusBadRequest, "HTTPBadRequest", fmt.Sprintf("router %s: ha_state %q (want active or standby)", id, st)}
		}
	}
	transition := map[string]bool{}
	for id := range rep.States {
		transition[id] = !rep.Full
	}
	if rep.Full {
		for _, id := range rep.Changed {
			if _, ok := rep.States[id]; ok {
				transition[id] = true
			}
		}
	}
	var out haOutcome
	locked := false
	for {
		err := s.db.WriteQuiet(r.Context(), func(tx *store.Tx) error {
			out = haOutcome{}
			return s.recordHAStates(tx, &rep, transition, locked, &out)
		})
		if errors.Is(err, errNeedLock) && !locked {
			locked = true
			continue
		}
		if err != nil {
			return err
		}
		break
	}
	s.recorded(out.transitions)
	s.logHAOutcome(&rep, transition, &out)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// recordHAStates applies one report in tx. Unless locked, a re-assertion
// that changes no state (the common case: every agent sends one every few
// seconds) only refreshes its bindings' report times, in a few statements
// and without the write lock; anything else takes the lock first (a router
// port created concurrently must either see this report and take the
// active host, or be seen by it) and returns errNeedLock if it finds that
// out after writing.
func (s *Server) recordHAStates(tx *store.Tx, rep *agentapi.HAStateReport, transition map[string]bool, locked bool, out *haOutcome) error {
	if locked {
		if err := tx.LockWrites(); err != nil {
			return err
		}
	}
	a, err := s.agentByHost(tx, rep.Host)
	if err != nil {
		return err
	}
	if a == nil {
		return endpointError{http.StatusNotFound, "AgentNotFound", fmt.Sprintf("no L3 agent registered on host %s", rep.Host)}
	}
	now := tx.Now
	freshUntil := now.Add(freshWindow(rep.ReassertSeconds))
	ids := make([]string, 0, len(rep.States))
	for id := range rep.States {
		ids = append(ids, id)
	}
	// One order for every report, so that concurrent ones lock rows in it.
	sort.Strings(ids)
	agents := map[string]*store.Agent{a.ID: a}
	fresh := func(b store.Binding) (bool, error) {
		o, err := s.cachedAgent(tx, agents, b.AgentID)
		if err != nil {
			return false, err
		}
		return b.HAStateFreshUntil.After(now) && s.ha.Alive(o, now), nil
	}

	if !locked {
		fast := true
		var active, standby []string
		for _, id := range ids {
			if transition[id] {
				fast = false
				break
			}
			if rep.States[id] == agentapi.HAActive {
				active = append(active, id)
			} else {
				standby = append(standby, id)
			}
		}
		var ongoing []string
		if fast {
			others, err := tx.ActiveBindingsOf(active, a.ID)
			if err != nil {
				return err
			}
			for _, o := range others {
				ok, err := fresh(o)
				if err != nil {
					return err
				}
				if !ok {
					fast = false // a stale claim to demote
					break
				}
				if len(ongoing) == 0 || ongoing[len(ongoing)-1] != o.RouterID {
					ongoing = append(ongoing, o.RouterID)
				}
			}
		}
		if fast {
			n, err := tx.RefreshHAStates(a.ID, agentapi.HAActive, active, freshUntil)
			if err != nil {
				return err
			}
			m, err := tx.RefreshHAStates(a.ID, agentapi.HAStandby, standby, freshUntil)
			if err != nil {
				return err
			}
			if n+m != len(ids) {
				// A state changed (or a binding went): rows are written
				// now, so start over with the lock taken first.
				return errNeedLock
			}
			out.refreshed, out.ongoing = len(ids), ongoing
			return nil
		}
		// Nothing written yet: the lock can be taken now.
		if err := tx.LockWrites(); err != nil {
			return err
		}
	}

	reasons := s.reasonsOf(rep)
	byRouter := map[string][]store.Binding{}
	for chunk := range slices.Chunk(ids, 1000) {
		bs, err := tx.ListBindings(store.Where{"router_id": chunk})
		if err != nil {
			return err
		}
		for _, b := range bs {
			byRouter[b.RouterID] = append(byRouter[b.RouterID], b)
		}
	}
	switchovers, err := tx.SwitchoversOf(ids)
	if err != nil {
		return err
	}
	unchanged := map[string][]string{}
	for _, id := range ids {
		st, trans := rep.States[id], transition[id]
		var mine *store.Binding
		var others []store.Binding // the other active bindings
		for _, b := range byRouter[id] {
			switch {
			case b.AgentID == a.ID:
				mine = &b
			case b.HAState == agentapi.HAActive:
				others = append(others, b)
			}
		}
		if mine == nil {
			out.unbound = append(out.unbound, id)
			continue
		}
		var demote, keep []store.Binding
		var demoteFresh []bool
		superseded := false // a stale or dead claim gives way
		if st == agentapi.HAActive {
			for _, o := range others {
				ok, err := fresh(o)
				if err != nil {
					return err
				}
				if trans || !ok {
					demote, demoteFresh = append(demote, o), append(demoteFresh, ok)
					superseded = superseded || !ok
				} else {
					keep = append(keep, o)
				}
			}
		}
		changed := mine.HAState != st
		if changed || len(demote) > 0 {
			if _, err := tx.SetReportedHAState(id, a.ID, st, freshUntil); err != nil {
				return err
			}
		} else {
			unchanged[st] = append(unchanged[st], id)
		}
		said := ""
		if trans {
			said = reasons[id]
		}
		if changed {
			reason, err := ownReason(said, trans, len(keep) > 0, shownState(mine.HAState), st, superseded, func() (bool, error) {
				for _, o := range others {
					if ok, err := fresh(o); err != nil || ok {
						return ok, err
					}
				}
				return false, nil
			})
			if err != nil {
				return err
			}
			var sw *store.Switchover
			if v, ok := switchovers[id]; ok {
				sw = &v
			}
			reason, done := switchoverReason(sw, now, a.ID, shownState(mine.HAState), st, reason)
			if done {
				if err := tx.ClearSwitchoverRequest(*sw); err != nil {
					return err
				}
				out.switched = append(out.switched, id)
			}
			if reason == agentapi.ReasonSplitBrain && st == agentapi.HAStandby {
				sp := haSplit{routerID: id}
				for _, o := range others {
					if ok, err := fresh(o); err == nil && ok {
						sp.others = append(sp.others, agents[o.AgentID].Host)
					}
				}
				out.healed = append(out.healed, sp)
			}
			out.changed = append(out.changed, haChange{id, st, mine.HAState, reason})
			out.transitions = append(out.transitions, store.HATransition{RouterID: id, AgentID: a.ID, Host: a.Host,
				From: shownState(mine.HAState), To: st, Reason: reason})
			// The takeover's reason, for the claims it demotes.
			said = reason
		} else if said == agentapi.ReasonHealthCheck {
			// A health check failed on a node that keeps its state (a
			// master with no healthier backup to hand over to): the
			// history says so, ha_state stays what it is.
			out.transitions = append(out.transitions, store.HATransition{RouterID: id, AgentID: a.ID, Host: a.Host,
				From: shownState(mine.HAState), To: st, Reason: said})
		}
		for i, o := range demote {
			if _, err := tx.SetHAState(id, o.AgentID, agentapi.HAStandby); err != nil {
				return err
			}
			reason := said
			if !demoteFresh[i] {
				reason = agentapi.ReasonPeerLost
			}
			host := agents[o.AgentID].Host
			out.demoted = append(out.demoted, haDemotion{id, o.AgentID, host, reason})
			out.transitions = append(out.transitions, store.HATransition{RouterID: id, AgentID: o.AgentID, Host: host,
				From: agentapi.HAActive, To: agentapi.HAStandby, Reason: reason})
		}
		if len(keep) > 0 {
			if changed {
				sp := haSplit{routerID: id}
				for _, o := range keep {
					sp.others = append(sp.others, agents[o.AgentID].Host)
				}
				out.split = append(out.split, sp)
			} else {
				out.ongoing = append(out.ongoing, id)
			}
		}
		// The ports follow the master: the reporter when it is (or claims
		// anew to be) master, another active binding when it steps down.
		host := ""
		switch {
		case st == agentapi.HAActive && (changed || trans || len(demote) > 0):
			host = a.Host
		case st == agentapi.HAStandby && changed && mine.HAState == agentapi.HAActive && len(others) > 0:
			h, err := s.successorHost(tx, agents, others, now)
			if err != nil {
				return err
			}
			host = h
		}
		if host != "" {
			if err := movePorts(tx, id, host); err != nil {
				return err
			}
		}
	}
	for st, l := range unchanged {
		n, err := tx.RefreshHAStates(a.ID, st, l, freshUntil)
		if err != nil {
			return err
		}
		if n != len(l) {
			return fmt.Errorf("refreshing ha_state of %d routers touched %d bindings, with the write lock held", len(l), n)
		}
		out.refreshed += n
	}
	if len(out.transitions) > 0 {
		if err := tx.InsertHATransitions(out.transitions); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) cachedAgent(tx *store.Tx, cache map[string]*store.Agent, id string) (*store.Agent, error) {
	if a, ok := cache[id]; ok {
		return a, nil
	}
	a, err := tx.GetAgent(id)
	if err != nil {
		return nil, err
	}
	cache[id] = a
	return a, nil
}

// successorHost is the host of the active binding among others that the
// ports move to when the router's master steps down: the most recently
// reported one of a live agent, else the most recently reported one.
func (s *Server) successorHost(tx *store.Tx, cache map[string]*store.Agent, others []store.Binding, now time.Time) (string, error) {
	var best *store.Agent
	var bestAt time.Time
	bestAlive := false
	for _, o := range others {
		a, err := s.cachedAgent(tx, cache, o.AgentID)
		if err != nil {
			return "", err
		}
		alive := s.ha.Alive(a, now)
		if best == nil || (alive && !bestAlive) || (alive == bestAlive && o.HAStateAt.After(bestAt)) {
			best, bestAt, bestAlive = a, o.HAStateAt, alive
		}
	}
	if best == nil {
		return "", nil
	}
	return best.Host, nil
}

// movePorts makes host the binding:host_id of the router's interface and
// gateway ports.
func movePorts(tx *store.Tx, routerID, host string) error {
	ports, err := tx.ListPorts(store.Where{"device_id": routerID, "device_owner": []string{ha.OwnerReplicatedInterface, ha.OwnerRouterInterface, ha.OwnerRouterGateway}})
	if err != nil {
		return err
	}
	for _, p := range ports {
		if err := tx.SetPortHost(p.ID, host); err != nil {
			return err
		}
	}
	return nil
}

// logHAOutcome logs what a committed report did and counts its transitions.
func (s *Server) logHAOutcome(rep *agentapi.HAStateReport, transition map[string]bool, out *haOutcome) {
	for id, st := range rep.States {
		if transition[id] {
			s.metrics.haReports.WithLabelValues(st).Inc()
		}
	}
	for _, c := range out.changed {
		s.log.Info("ha_state reported", "router_id", c.routerID, "host", rep.Host, "ha_state", c.state, "previous", c.previous,
			"transition", transition[c.routerID], "reason", c.reason)
	}
	for _, d := range out.demoted {
		s.log.Warn("router reported active by a new master; the previous active binding is now shown standby (it shows active again at its next re-assertion if it still is master: split brain)",
			"router_id", d.routerID, "host", rep.Host, "previous_host", d.host, "previous_agent_id", d.agentID, "reason", d.reason)
	}
	for _, sp := range out.split {
		s.log.Warn("split brain: router active on more than one agent, all shown active until one steps down",
			"router_id", sp.routerID, "host", rep.Host, "other_hosts", strings.Join(sp.others, ","))
	}
	for _, sp := range out.healed {
		s.log.Warn("split brain healed: the reporting host stepped down and is the loser; one master is left",
			"router_id", sp.routerID, "loser_host", rep.Host, "master_host", strings.Join(sp.others, ","))
	}
	for _, id := range out.switched {
		s.log.Info("switchover complete: the requested agent is the router's master", "router_id", id, "host", rep.Host)
	}
	if len(out.ongoing) > 0 {
		s.log.Warn("split brain goes on: routers re-asserted active while another agent's active binding is fresh",
			"host", rep.Host, "routers", len(out.ongoing), "router_ids", strings.Join(out.ongoing[:min(len(out.ongoing), 5)], ","))
	}
	for _, id := range out.unbound {
		s.log.Debug("ha_state for a router no longer bound to the agent", "router_id", id, "host", rep.Host)
	}
	if rep.Full {
		s.log.Debug("ha_state re-asserted", "host", rep.Host, "routers", len(rep.States), "confirmed", out.refreshed, "changed", len(out.changed))
	}
}

// SplitBrainRouters returns how many HA routers the API shows active on
// more than one live agent.
func (s *Server) SplitBrainRouters(ctx context.Context) (int, error) {
	var n int
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		var err error
		n, err = tx.CountSplitBrainRouters(tx.Now.Add(-s.cfg.HA.AgentDownTime))
		return err
	})
	return n, err
}

var splitBrainDesc = prometheus.NewDesc("l3ha_server_split_brain_routers",
	"HA routers shown active on more than one live agent (split brain: each master's report is fresh), read from the database at each scrape.", nil, nil)

// splitBrainCollector is the l3ha_server_split_brain_routers gauge.
type splitBrainCollector struct{ s *Server }

func (c splitBrainCollector) Describe(ch chan<- *prometheus.Desc) { ch <- splitBrainDesc }

func (c splitBrainCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := c.s.SplitBrainRouters(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(splitBrainDesc, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(splitBrainDesc, prometheus.GaugeValue, float64(n))
}

// SplitBrainCollector is the l3ha_server_split_brain_routers gauge, for the
// server's metrics registry.
func (s *Server) SplitBrainCollector() prometheus.Collector { return splitBrainCollector{s} }
