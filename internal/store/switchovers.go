package store

import (
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Switchover is an operator's request that a router's master move to one
// of its agents (POST /v2.0/routers/{id}/switchover).
type Switchover struct {
	RouterID, AgentID string
	// RequestedAt is when it was asked; with the router it names the
	// request, so that an agent acts on each request once.
	RequestedAt time.Time
}

// SetSwitchover records a switchover request for its router, replacing any
// earlier one, and wakes the router's agents.
func (t *Tx) SetSwitchover(s Switchover) error {
	if _, err := t.exec("DELETE FROM ha_switchovers WHERE router_id=?", s.RouterID); err != nil {
		return fmt.Errorf("replacing the switchover of router %s: %w", s.RouterID, err)
	}
	if _, err := t.exec("INSERT INTO ha_switchovers (router_id, agent_id, requested_at) VALUES (?,?,?)",
		s.RouterID, s.AgentID, us(s.RequestedAt)); err != nil {
		return fmt.Errorf("recording the switchover of router %s: %w", s.RouterID, err)
	}
	t.touchRouter(s.RouterID)
	return nil
}

// ClearSwitchover ends the router's switchover request, if any, and wakes
// its agents when there was one.
func (t *Tx) ClearSwitchover(routerID string) error {
	res, err := t.exec("DELETE FROM ha_switchovers WHERE router_id=?", routerID)
	if err != nil {
		return fmt.Errorf("ending the switchover of router %s: %w", routerID, err)
	}
	if n, err := res.RowsAffected(); err == nil && n > 0 {
		t.touchRouter(routerID)
	}
	return nil
}

// GetSwitchover returns the router's switchover request, nil if none.
func (t *Tx) GetSwitchover(routerID string) (*Switchover, error) {
	var s Switchover
	var at int64
	err := t.queryRow("SELECT router_id, agent_id, requested_at FROM ha_switchovers WHERE router_id=?", routerID).
		Scan(&s.RouterID, &s.AgentID, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the switchover of router %s: %w", routerID, err)
	}
	s.RequestedAt = time.UnixMicro(at).UTC()
	return &s, nil
}

// SwitchoversOf returns the switchover requests of the given routers, by
// router id.
func (t *Tx) SwitchoversOf(routerIDs []string) (map[string]Switchover, error) {
	out := map[string]Switchover{}
	for ids := range slices.Chunk(routerIDs, maxListArgs) {
		cond, args := Where{"router_id": ids}.sql()
		rows, err := t.query("SELECT router_id, agent_id, requested_at FROM ha_switchovers"+cond, args...)
		if err != nil {
			return nil, fmt.Errorf("listing switchovers: %w", err)
		}
		for rows.Next() {
			var s Switchover
			var at int64
			if err := rows.Scan(&s.RouterID, &s.AgentID, &at); err != nil {
				rows.Close()
				return nil, fmt.Errorf("listing switchovers: %w", err)
			}
			s.RequestedAt = time.UnixMicro(at).UTC()
			out[s.RouterID] = s
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("listing switchovers: %w", err)
		}
	}
	return out, nil
}

// ClearSwitchoverRequest ends the switchover request s, unless a newer one
// replaced it, and wakes the router's agents when it did.
func (t *Tx) ClearSwitchoverRequest(s Switchover) error {
	res, err := t.exec("DELETE FROM ha_switchovers WHERE router_id=? AND requested_at=?", s.RouterID, us(s.RequestedAt))
	if err != nil {
		return fmt.Errorf("ending the switchover of router %s: %w", s.RouterID, err)
	}
	if n, err := res.RowsAffected(); err == nil && n > 0 {
		t.touchRouter(s.RouterID)
	}
	return nil
}

// SwitchoversBefore returns the switchover requests made before at.
func (t *Tx) SwitchoversBefore(at time.Time) ([]Switchover, error) {
	rows, err := t.query("SELECT router_id, agent_id, requested_at FROM ha_switchovers WHERE requested_at < ? ORDER BY requested_at", us(at))
	if err != nil {
		return nil, fmt.Errorf("listing old switchovers: %w", err)
	}
	defer rows.Close()
	var out []Switchover
	for rows.Next() {
		var s Switchover
		var rat int64
		if err := rows.Scan(&s.RouterID, &s.AgentID, &rat); err != nil {
			return nil, fmt.Errorf("listing old switchovers: %w", err)
		}
		s.RequestedAt = time.UnixMicro(rat).UTC()
		out = append(out, s)
	}
	return out, rows.Err()
}
