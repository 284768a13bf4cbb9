package store_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/store"
)

// transitionsOf reads a router's transitions (limit 0: all).
func transitionsOf(t *testing.T, db *store.DB, routerID string, limit int) []store.HATransition {
	t.Helper()
	var out []store.HATransition
	read(t, db, func(tx *store.Tx) error {
		var err error
		out, err = tx.ListHATransitions(routerID, limit)
		return err
	})
	return out
}

// hosts lists the hosts of rows, in order: the tests name each row by its
// host.
func hosts(rows []store.HATransition) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r.Host
	}
	return out
}

// testHATransitionsRoundTrip: rows come back as written, oldest first (rows
// of one time in the order written), limit gives the newest, other routers'
// rows stay apart, a write needs no revision bump, and the rows go with
// their router.
func testHATransitionsRoundTrip(t *testing.T, _, url string) {
	db := open(t, url)
	r, other := newRouter("p1"), newRouter("p2")
	write(t, db, func(tx *store.Tx) error { return errors.Join(tx.InsertRouter(r), tx.InsertRouter(other)) })
	base := time.Now().UTC().Add(-time.Hour).Truncate(time.Microsecond)
	rev := db.Revision()
	var stamped time.Time
	err := db.WriteQuiet(ctxT(t), func(tx *store.Tx) error {
		stamped = tx.Now
		return tx.InsertHATransitions([]store.HATransition{
			{RouterID: r.ID, AgentID: "a1", Host: "h1", From: "standby", To: "active", At: base, Reason: "startup"},
			{RouterID: other.ID, AgentID: "a1", Host: "other", From: "standby", To: "active", At: base, Reason: "startup"},
			// One report: a takeover and the demotion it makes, same time.
			{RouterID: r.ID, AgentID: "a2", Host: "h2", From: "standby", To: "active", At: base.Add(time.Minute), Reason: "peer_lost"},
			{RouterID: r.ID, AgentID: "a1", Host: "h1-demoted", From: "active", To: "standby", At: base.Add(time.Minute), Reason: "peer_lost"},
			{RouterID: r.ID, AgentID: "a2", Host: "h2-now", From: "active", To: "standby"}, // stamped with the transaction's time, no reason
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if db.Revision() != rev {
		t.Errorf("recording transitions bumped the revision %d → %d", rev, db.Revision())
	}
	all := transitionsOf(t, db, r.ID, 0)
	if got, want := hosts(all), []string{"h1", "h2", "h1-demoted", "h2-now"}; !slices.Equal(got, want) {
		t.Fatalf("transitions %v, want %v", got, want)
	}
	first, last := all[0], all[3]
	if first.RouterID != r.ID || first.AgentID != "a1" || first.From != "standby" || first.To != "active" || !first.At.Equal(base) || first.Reason != "startup" {
		t.Errorf("first row %+v", first)
	}
	if !sameTime(last.At, stamped) || last.Reason != "" {
		t.Errorf("row without a time: %+v, want at %v and no reason", last, stamped)
	}
	for _, tc := range []struct {
		limit int
		want  []string
	}{
		{1, []string{"h2-now"}},
		{3, []string{"h2", "h1-demoted", "h2-now"}},
		{4, []string{"h1", "h2", "h1-demoted", "h2-now"}},
		{100, []string{"h1", "h2", "h1-demoted", "h2-now"}},
	} {
		if got := hosts(transitionsOf(t, db, r.ID, tc.limit)); !slices.Equal(got, tc.want) {
			t.Errorf("limit %d: %v, want %v", tc.limit, got, tc.want)
		}
	}
	if got := hosts(transitionsOf(t, db, other.ID, 0)); !slices.Equal(got, []string{"other"}) {
		t.Errorf("other router's transitions %v", got)
	}
	if got := transitionsOf(t, db, id(), 0); len(got) != 0 {
		t.Errorf("unknown router has transitions %v", got)
	}

	write(t, db, func(tx *store.Tx) error { return tx.DeleteRouter(r.ID) })
	if got := transitionsOf(t, db, r.ID, 0); len(got) != 0 {
		t.Errorf("deleted router keeps transitions %v", got)
	}
	d, err := db.Dump(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if rows := d["ha_transitions"]; len(rows) != 1 {
		t.Errorf("ha_transitions after the delete: %q, want the other router's row alone", rows)
	}
}

// testHATransitionsPruning: the age bound removes exactly the rows older
// than the cut, the per-router bound keeps exactly each router's newest,
// both in batches much smaller than what goes, and neither touches what it
// must keep.
func testHATransitionsPruning(t *testing.T, _, url string) {
	db := open(t, url)
	now := time.Now().UTC().Truncate(time.Microsecond)
	week := 7 * 24 * time.Hour
	busy, old, calm := newRouter("p1"), newRouter("p1"), newRouter("p1")
	write(t, db, func(tx *store.Tx) error {
		return errors.Join(tx.InsertRouter(busy), tx.InsertRouter(old), tx.InsertRouter(calm))
	})
	var rows []store.HATransition
	// busy: 130 recent rows, the last 10 sharing one time (one report).
	for i := range 130 {
		at := now.Add(-time.Hour + time.Duration(min(i, 120))*time.Second)
		rows = append(rows, store.HATransition{RouterID: busy.ID, AgentID: "a", Host: fmt.Sprint("busy-", i), From: "standby", To: "active", At: at})
	}
	// old: 40 rows older than a week, 2 younger.
	for i := range 42 {
		at := now.Add(-week - time.Duration(40-i)*time.Minute)
		if i >= 40 {
			at = now.Add(-week + time.Duration(i)*time.Minute)
		}
		rows = append(rows, store.HATransition{RouterID: old.ID, AgentID: "a", Host: fmt.Sprint("old-", i), From: "active", To: "standby", At: at})
	}
	// calm: 5 recent rows.
	for i := range 5 {
		rows = append(rows, store.HATransition{RouterID: calm.ID, AgentID: "a", Host: fmt.Sprint("calm-", i), From: "standby", To: "active", At: now.Add(-time.Duration(5-i) * time.Minute)})
	}
	if err := db.WriteQuiet(ctxT(t), func(tx *store.Tx) error { return tx.InsertHATransitions(rows) }); err != nil {
		t.Fatal(err)
	}
	want := func(prefix string, from, to int) []string {
		var out []string
		for i := from; i < to; i++ {
			out = append(out, fmt.Sprint(prefix, i))
		}
		return out
	}

	for _, step := range []struct {
		name    string
		prune   func() (int, error)
		deleted int
		busy    []string
		old     []string
		calm    []string
	}{
		{
			name:    "age bound, batches of 7",
			prune:   func() (int, error) { return db.PruneHATransitionsBefore(ctxT(t), now.Add(-week), 7) },
			deleted: 40, busy: want("busy-", 0, 130), old: want("old-", 40, 42), calm: want("calm-", 0, 5),
		},
		{
			name:    "age bound again: nothing",
			prune:   func() (int, error) { return db.PruneHATransitionsBefore(ctxT(t), now.Add(-week), 7) },
			deleted: 0, busy: want("busy-", 0, 130), old: want("old-", 40, 42), calm: want("calm-", 0, 5),
		},
		{
			// The cut falls inside the 10 rows of one time: seq decides.
			name:    "per-router bound of 5, batches of 3",
			prune:   func() (int, error) { return db.TrimHATransitions(ctxT(t), []string{busy.ID, calm.ID, id()}, 5, 3) },
			deleted: 125, busy: want("busy-", 125, 130), old: want("old-", 40, 42), calm: want("calm-", 0, 5),
		},
		{
			name:    "per-router bound of 1, one batch",
			prune:   func() (int, error) { return db.TrimHATransitions(ctxT(t), []string{old.ID, calm.ID}, 1, 500) },
			deleted: 5, busy: want("busy-", 125, 130), old: want("old-", 41, 42), calm: want("calm-", 4, 5),
		},
	} {
		rev := db.Revision()
		n, err := step.prune()
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if n != step.deleted {
			t.Errorf("%s: deleted %d rows, want %d", step.name, n, step.deleted)
		}
		if db.Revision() != rev {
			t.Errorf("%s: pruning bumped the revision", step.name)
		}
		for _, r := range []struct {
			id   string
			want []string
		}{{busy.ID, step.busy}, {old.ID, step.old}, {calm.ID, step.calm}} {
			if got := hosts(transitionsOf(t, db, r.id, 0)); !slices.Equal(got, r.want) {
				t.Errorf("%s: left %v, want %v", step.name, got, r.want)
			}
		}
	}
}
