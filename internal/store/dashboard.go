package store

import (
	"database/sql"
	"fmt"
	"slices"
)

// Queries of the web dashboard (internal/dashboard), which polls a snapshot
// of the whole cloud every second: each runs in one statement whose cost
// follows what it returns, not the size of the HA transition history, so
// that a long history does not make the page slow.

// RecentHATransitions returns the newest limit HA transitions across every
// router, oldest first, as ListHATransitions orders one router's. It reads
// the ha_transitions_at index backwards and stops after limit rows.
func (t *Tx) RecentHATransitions(limit int) ([]HATransition, error) {
	if limit <= 0 {
		return nil, nil
	}
	rows, err := t.query("SELECT "+haTransitionCols+" FROM ha_transitions ORDER BY at DESC, seq DESC LIMIT ?", limit)
	if err != nil {
		return nil, fmt.Errorf("listing the newest %d HA transitions: %w", limit, err)
	}
	out, err := scanDashboardTransitions(rows)
	if err != nil {
		return nil, fmt.Errorf("listing the newest %d HA transitions: %w", limit, err)
	}
	slices.Reverse(out)
	return out, nil
}

// LastHATransitions returns the newest HA transition of every HA router
// that has one, by router id. Per router it costs two index probes (the
// router's latest time, then its rows of that time), never a scan of its
// history. Of several rows written at the same time — a takeover and the
// demotion it caused — the last written wins, as ListHATransitions(id, 1)
// would return it.
func (t *Tx) LastHATransitions() (map[string]HATransition, error) {
	// MAX(at) for one router_id is a single probe of the
	// ha_transitions_router index on both SQLite and PostgreSQL; joining
	// on it returns the few rows of that instant, and the highest seq is
	// kept below (no portable SQL picks it without a sort of the history).
	// CROSS JOIN makes SQLite loop over routers outside: left to itself
	// it scans the whole history instead (0.6 s against 15 ms for 2000
	// routers of 50 transitions each); PostgreSQL's planner takes it as a
	// plain join.
	rows, err := t.query(`SELECT t.router_id, t.agent_id, t.host, t.from_state, t.to_state, t.at, t.seq, t.reason
		FROM routers r CROSS JOIN ha_transitions t
		WHERE r.ha = ? AND t.router_id = r.id AND t.at = (SELECT MAX(u.at) FROM ha_transitions u WHERE u.router_id = r.id)`, true)
	if err != nil {
		return nil, fmt.Errorf("listing the last HA transition of each router: %w", err)
	}
	defer rows.Close()
	out := map[string]HATransition{}
	seqs := map[string]int{}
	for rows.Next() {
		r, seq, err := scanDashboardTransition(rows)
		if err != nil {
			return nil, fmt.Errorf("listing the last HA transition of each router: %w", err)
		}
		if prev, ok := seqs[r.RouterID]; ok && prev >= seq {
			continue
		}
		out[r.RouterID], seqs[r.RouterID] = r, seq
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing the last HA transition of each router: %w", err)
	}
	return out, nil
}

// scanDashboardTransition reads one row of haTransitionCols and its seq.
func scanDashboardTransition(rows *sql.Rows) (HATransition, int, error) {
	var r HATransition
	var at int64
	var seq int
	if err := rows.Scan(&r.RouterID, &r.AgentID, &r.Host, &r.From, &r.To, &at, &seq, &r.Reason); err != nil {
		return r, 0, err
	}
	r.At = fromUS(at)
	return r, seq, nil
}

func scanDashboardTransitions(rows *sql.Rows) ([]HATransition, error) {
	defer rows.Close()
	var out []HATransition
	for rows.Next() {
		r, _, err := scanDashboardTransition(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
