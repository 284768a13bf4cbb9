package server

import (
	"context"
	"strconv"
	"time"

	"github.com/l3ha/l3ha/internal/agentapi"
	"github.com/l3ha/l3ha/internal/ha"
	"github.com/l3ha/l3ha/internal/store"
)

// Switchovers (POST /v2.0/routers/{id}/switchover, internal/api): the
// request is a row the router's agents see in their desired state
// (agentapi.RouterSpec.Switchover) until the target reports active — its
// report and the old master's stepping down are recorded with reason
// switchover — or until ha.SwitchoverTimeout, when expireSwitchovers drops
// it and says so.

// liveSwitchovers returns the switchover requests of routerIDs that have not
// expired, as agents see them.
func liveSwitchovers(tx *store.Tx, routerIDs []string) (map[string]*agentapi.SwitchoverSpec, error) {
	rows, err := tx.SwitchoversOf(routerIDs)
	if err != nil || len(rows) == 0 {
		return nil, err
	}
	out := make(map[string]*agentapi.SwitchoverSpec, len(rows))
	for id, sw := range rows {
		if tx.Now.Sub(sw.RequestedAt) >= ha.SwitchoverTimeout {
			continue
		}
		ag, err := tx.GetAgent(sw.AgentID)
		if err != nil {
			continue // the agent went: nothing to switch to
		}
		out[id] = &agentapi.SwitchoverSpec{ID: strconv.FormatInt(sw.RequestedAt.UnixMicro(), 10), AgentID: ag.ID, Host: ag.Host}
	}
	return out, nil
}

// switchoverReason applies a switchover in progress to a change an ha_state
// report makes: the target becoming active, or another agent stepping down
// from active, is the switchover, whatever VRRP cause the agent gave (the
// old master sees only a better master, and keepalived says nothing). It
// returns the reason to record and whether the switchover is complete.
func switchoverReason(sw *store.Switchover, now time.Time, agentID, from, to, reason string) (string, bool) {
	if sw == nil || now.Sub(sw.RequestedAt) >= ha.SwitchoverTimeout {
		return reason, false
	}
	switch {
	case agentID == sw.AgentID && to == agentapi.HAActive:
		return agentapi.ReasonSwitchover, true
	case agentID != sw.AgentID && from == agentapi.HAActive && to == agentapi.HAStandby:
		return agentapi.ReasonSwitchover, false
	}
	return reason, false
}

// expireSwitchovers drops, every second, the switchover requests older than
// ha.SwitchoverTimeout: their target never reported active.
func (s *Server) expireSwitchovers(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var expired []store.Switchover
		err := s.db.Read(ctx, func(tx *store.Tx) error {
			var err error
			expired, err = tx.SwitchoversBefore(tx.Now.Add(-ha.SwitchoverTimeout))
			return err
		})
		if err == nil && len(expired) > 0 {
			_, err = s.db.Write(ctx, func(tx *store.Tx) error {
				for _, sw := range expired {
					if err := tx.ClearSwitchoverRequest(sw); err != nil {
						return err
					}
				}
				return nil
			})
		}
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("expiring switchovers", "err", err)
			}
			continue
		}
		for _, sw := range expired {
			s.log.Warn("switchover did not complete: its target never reported active; the master stays where it is",
				"router_id", sw.RouterID, "agent_id", sw.AgentID, "requested_at", sw.RequestedAt, "timeout", ha.SwitchoverTimeout)
		}
	}
}
