package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// HATransition is one change of the ha_state of a router's binding.
type HATransition struct {
	RouterID, AgentID, Host string
	// From and To are ha_state values (active, standby).
	From, To string
	// At is when the change was recorded: the writing transaction's time
	// unless set.
	At time.Time
	// Reason is one of agentapi's Reason* values, "" when not known.
	Reason string
}

// HATransitionRetention bounds the HA transitions kept: none older than
// MaxAge, at most PerRouter per router (whichever keeps fewer).
type HATransitionRetention struct {
	MaxAge    time.Duration
	PerRouter int
}

const haTransitionCols = "router_id, agent_id, host, from_state, to_state, at, seq, reason"

// InsertHATransitions records rows, in their order (rows of the same time
// keep it), in a few statements.
func (t *Tx) InsertHATransitions(rows []HATransition) error {
	const perStatement = 100 // 800 parameters, well under both limits
	seq := 0
	for chunk := range slices.Chunk(rows, perStatement) {
		var q strings.Builder
		q.WriteString("INSERT INTO ha_transitions (" + haTransitionCols + ") VALUES ")
		args := make([]any, 0, 8*len(chunk))
		for i, r := range chunk {
			if i > 0 {
				q.WriteByte(',')
			}
			q.WriteString("(?,?,?,?,?,?,?,?)")
			at := r.At
			if at.IsZero() {
				at = t.Now
			}
			args = append(args, r.RouterID, r.AgentID, r.Host, r.From, r.To, us(at), seq, r.Reason)
			seq++
		}
		if _, err := t.exec(q.String(), args...); err != nil {
			return fmt.Errorf("recording %d HA transitions: %w", len(rows), err)
		}
	}
	return nil
}

// ListHATransitions returns the router's HA transitions, oldest first; with
// limit > 0 only the newest limit of them (still oldest first).
func (t *Tx) ListHATransitions(routerID string, limit int) ([]HATransition, error) {
	q := "SELECT " + haTransitionCols + " FROM ha_transitions WHERE router_id=? ORDER BY at DESC, seq DESC"
	args := []any{routerID}
	if limit > 0 {
		q += " LIMIT ?"
		args = append(args, limit)
	}
	rows, err := t.query(q, args...)
	if err != nil {
		return nil, fmt.Errorf("listing HA transitions of router %s: %w", routerID, err)
	}
	defer rows.Close()
	var out []HATransition
	for rows.Next() {
		var r HATransition
		var at int64
		var seq int
		if err := rows.Scan(&r.RouterID, &r.AgentID, &r.Host, &r.From, &r.To, &at, &seq, &r.Reason); err != nil {
			return nil, fmt.Errorf("listing HA transitions of router %s: %w", routerID, err)
		}
		r.At = fromUS(at)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing HA transitions of router %s: %w", routerID, err)
	}
	slices.Reverse(out)
	return out, nil
}

// Pruning. Both bounds delete a router's (or the table's) oldest rows up to
// a cut, found by a read that uses an index and takes no lock; the rows go
// in quiet write transactions of at most batch rows each (no revision bump,
// and on PostgreSQL not the global write lock), so that another writer
// waits for one small batch at most. Nothing scans the table: the age cut
// reads the (at, seq) index, a router's cut its (router_id, at, seq) one.

// rowKey orders rows: by time, then by seq.
type rowKey struct {
	at  int64
	seq int
}

// PruneHATransitionsBefore deletes every HA transition recorded before
// before, in batches of batch rows; it returns how many rows went.
func (db *DB) PruneHATransitionsBefore(ctx context.Context, before time.Time, batch int) (int, error) {
	var cut rowKey
	found := false
	err := db.Read(ctx, func(tx *Tx) error {
		err := tx.queryRow("SELECT at, seq FROM ha_transitions WHERE at < ? ORDER BY at DESC, seq DESC LIMIT 1", us(before)).Scan(&cut.at, &cut.seq)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		found = err == nil
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("pruning HA transitions before %v: %w", before, err)
	}
	if !found {
		return 0, nil
	}
	n, err := db.deleteTransitionsUpTo(ctx, "", nil, cut, batch)
	if err != nil {
		return n, fmt.Errorf("pruning HA transitions before %v: %w", before, err)
	}
	return n, nil
}

// TrimHATransitions keeps the newest keep HA transitions of each of
// routerIDs and deletes their older ones, in batches of batch rows; it
// returns how many rows went. Routers within the bound cost one indexed
// read each, no write.
func (db *DB) TrimHATransitions(ctx context.Context, routerIDs []string, keep, batch int) (int, error) {
	total := 0
	for chunk := range slices.Chunk(routerIDs, 500) {
		cuts := map[string]rowKey{}
		err := db.Read(ctx, func(tx *Tx) error {
			clear(cuts)
			for _, id := range chunk {
				var c rowKey
				err := tx.queryRow("SELECT at, seq FROM ha_transitions WHERE router_id=? ORDER BY at DESC, seq DESC LIMIT 1 OFFSET ?", id, keep).Scan(&c.at, &c.seq)
				if errors.Is(err, sql.ErrNoRows) {
					continue
				}
				if err != nil {
					return err
				}
				cuts[id] = c
			}
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("trimming HA transitions to %d per router: %w", keep, err)
		}
		for _, id := range chunk {
			c, ok := cuts[id]
			if !ok {
				continue
			}
			n, err := db.deleteTransitionsUpTo(ctx, "router_id = ? AND ", []any{id}, c, batch)
			total += n
			if err != nil {
				return total, fmt.Errorf("trimming HA transitions of router %s to %d: %w", id, keep, err)
			}
		}
	}
	return total, nil
}

// deleteTransitionsUpTo deletes the rows of scope (a condition followed by
// AND, or "") up to and including cut, the oldest batch of them per quiet
// write transaction.
func (db *DB) deleteTransitionsUpTo(ctx context.Context, scope string, args []any, cut rowKey, batch int) (int, error) {
	batch = max(batch, 1)
	total := 0
	for {
		done := false
		var n int64
		err := db.WriteQuiet(ctx, func(tx *Tx) error {
			edge := cut
			err := tx.queryRow("SELECT at, seq FROM ha_transitions WHERE "+scope+"(at, seq) <= (?, ?) ORDER BY at, seq LIMIT 1 OFFSET ?",
				append(slices.Clone(args), cut.at, cut.seq, batch-1)...).Scan(&edge.at, &edge.seq)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				edge = cut // fewer than batch rows left
			case err != nil:
				return err
			}
			res, err := tx.exec("DELETE FROM ha_transitions WHERE "+scope+"(at, seq) <= (?, ?)", append(slices.Clone(args), edge.at, edge.seq)...)
			if err != nil {
				return err
			}
			n, err = res.RowsAffected()
			done = edge == cut
			return err
		})
		if err != nil {
			return total, err
		}
		total += int(n)
		if done {
			return total, nil
		}
	}
}
