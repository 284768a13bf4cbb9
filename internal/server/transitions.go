package server

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/l3ha/l3ha/internal/agentapi"
	"github.com/l3ha/l3ha/internal/store"
)

// The HA transition history (GET /v2.0/routers/{id}/ha_transitions): every
// change of a binding's ha_state that an ha_state report makes, the
// reporter's own and those the server decides on while applying it, is
// written in the report's transaction (store.HATransition). A report that
// changes nothing — most re-assertions — writes no row: its fast path
// (recordHAStates) never gets here.
//
// The reason of a change of the reporter's own binding:
//
//	report                                 reason
//	re-assertion of active beside another  split_brain: two masters, both
//	  fresh active (the split brain          reporting (detected)
//	  becomes visible)
//	transition with a reason               the agent's (from the VRRP cause,
//	                                         internal/dataplane)
//	transition to standby without one,     split_brain: one master of two
//	  while another fresh active exists      steps down (healed)
//	active without one, superseding a      peer_lost: that claim's agent is
//	  stale or dead agent's claim            dead or silent
//	any other re-assertion of active       split_brain: the server had shown
//	                                         it standby because another node
//	                                         claimed the router while it
//	                                         stayed master
//	anything else                          "" (not known: an agent that sends
//	                                         no reasons, as before them)
//
// An active binding of another agent that the report demotes is recorded
// with peer_lost when that agent is dead or its claim stale (the server
// gives the claim up because it lost the agent), and otherwise with the
// reason of the takeover that demotes it (the reporter's, "" if it gave
// none). A reason an agent sends that is not one of agentapi.Reasons is
// recorded as "" and the report still applies.

// ownReason is the reason recorded for a change of the reporter's own
// binding to st (from was its state): see above. said is the agent's
// reason for the router, "" if none (or not a transition); superseded
// tells whether the report demotes stale or dead claims; otherFresh
// whether another agent's active claim is fresh.
func ownReason(said string, trans, split bool, from, st string, superseded bool, otherFresh func() (bool, error)) (string, error) {
	switch {
	case split:
		return agentapi.ReasonSplitBrain, nil
	case said != "":
		return said, nil
	case trans && st == agentapi.HAStandby && from == agentapi.HAActive:
		ok, err := otherFresh()
		if err != nil || !ok {
			return "", err
		}
		return agentapi.ReasonSplitBrain, nil
	case st == agentapi.HAActive && superseded:
		return agentapi.ReasonPeerLost, nil
	case st == agentapi.HAActive && !trans:
		return agentapi.ReasonSplitBrain, nil
	}
	return "", nil
}

// reasonsOf returns the agent's reasons of rep that the server knows;
// unknown ones are left out (logged), so that the report still applies.
func (s *Server) reasonsOf(rep *agentapi.HAStateReport) map[string]string {
	out := make(map[string]string, len(rep.Reasons))
	for id, r := range rep.Reasons {
		switch {
		case r == "":
		case agentapi.KnownReason(r):
			out[id] = r
		default:
			s.log.Debug("unknown HA transition reason in a report; recorded as none", "router_id", id, "host", rep.Host, "reason", r)
		}
	}
	return out
}

// shownState is the state a binding's stored ha_state is shown as: none
// yet is standby (ha.ViewStates).
func shownState(st string) string {
	if st == "" {
		return agentapi.HAStandby
	}
	return st
}

// unknownReasonLabel is the metric label of transitions without a reason.
const unknownReasonLabel = "unknown"

func newTransitionsCounter() *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "l3ha_server_ha_transitions_total",
		Help: "HA transitions of router bindings this server recorded (GET /v2.0/routers/{id}/ha_transitions), by reason (unknown: none was given).",
	}, []string{"reason"})
	for _, r := range append(slices.Clone(agentapi.Reasons), unknownReasonLabel) {
		c.WithLabelValues(r) // every reason shows, 0 until it happens
	}
	return c
}

// transitionLog keeps what the pruner needs between its runs: the routers
// that got transitions since the last trim, and how many.
type transitionLog struct {
	retention store.HATransitionRetention
	wake      chan struct{} // cap 1: a router is well over its bound

	mu    sync.Mutex
	dirty map[string]int
}

func newTransitionLog(r store.HATransitionRetention) *transitionLog {
	if r.MaxAge <= 0 {
		r.MaxAge = DefaultTransitionRetention.MaxAge
	}
	if r.PerRouter <= 0 {
		r.PerRouter = DefaultTransitionRetention.PerRouter
	}
	return &transitionLog{retention: r, wake: make(chan struct{}, 1), dirty: map[string]int{}}
}

// recorded notes committed rows: counted by reason, their routers marked
// for the next trim (which comes early when one router got a quarter of its
// bound since the last).
func (s *Server) recorded(rows []store.HATransition) {
	if len(rows) == 0 {
		return
	}
	for _, r := range rows {
		label := r.Reason
		if label == "" {
			label = unknownReasonLabel
		}
		s.metrics.transitions.WithLabelValues(label).Inc()
	}
	h := s.history
	early := false
	h.mu.Lock()
	for _, r := range rows {
		h.dirty[r.RouterID]++
		early = early || h.dirty[r.RouterID] >= max(h.retention.PerRouter/4, 1)
	}
	h.mu.Unlock()
	if early {
		select {
		case h.wake <- struct{}{}:
		default:
		}
	}
}

// pruneInterval is how often the history is pruned.
const pruneInterval = time.Minute

// pruneBatch is the most rows one pruning transaction deletes.
const pruneBatch = 500

// pruneTransitions applies the retention every pruneInterval, and early
// when a router's transitions pile up, until ctx ends.
func (s *Server) pruneTransitions(ctx context.Context) {
	t := time.NewTicker(pruneInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.history.wake:
		}
		if _, err := s.PruneTransitions(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("pruning HA transitions", "err", err)
		}
	}
}

// PruneTransitions applies the retention now: the transitions older than
// ha_transitions_max_age go, and so do those beyond
// ha_transitions_per_router of the routers that got transitions since the
// last run (a router gets no more rows without one). It returns how many
// rows went.
func (s *Server) PruneTransitions(ctx context.Context) (int, error) {
	h := s.history
	h.mu.Lock()
	dirty := h.dirty
	h.dirty = map[string]int{}
	h.mu.Unlock()
	aged, err := s.db.PruneHATransitionsBefore(ctx, time.Now().Add(-h.retention.MaxAge), pruneBatch)
	trimmed := 0
	if err == nil {
		ids := slices.Sorted(maps.Keys(dirty))
		trimmed, err = s.db.TrimHATransitions(ctx, ids, h.retention.PerRouter, pruneBatch)
	}
	if err != nil {
		// Trimmed again next time.
		h.mu.Lock()
		for id, n := range dirty {
			h.dirty[id] += n
		}
		h.mu.Unlock()
		return aged + trimmed, err
	}
	if aged+trimmed > 0 {
		s.log.Debug("pruned HA transitions", "older_than_max_age", aged, "beyond_per_router", trimmed, "routers_checked", len(dirty))
	}
	return aged + trimmed, nil
}
