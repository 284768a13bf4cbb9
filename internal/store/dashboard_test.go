package store_test

import (
	"errors"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/servertest"
	"github.com/l3ha/l3ha/internal/store"
)

// TestDashboardQueries runs the dashboard's queries on every backend
// (servertest.Backends), as TestStore does, each subtest on a fresh
// database.
func TestDashboardQueries(t *testing.T) {
	suite := []struct {
		name string
		fn   func(t *testing.T, url string)
	}{
		{"RecentHATransitionsAreTheNewestAcrossRouters", testRecentHATransitions},
		{"LastHATransitionIsEachHARoutersNewestRow", testLastHATransitions},
	}
	for _, backend := range servertest.Backends(t) {
		t.Run(backend, func(t *testing.T) {
			for _, tc := range suite {
				t.Run(tc.name, func(t *testing.T) { tc.fn(t, servertest.DatabaseURL(t, backend)) })
			}
		})
	}
}

// testRecentHATransitions: the newest rows of all routers together, oldest
// first, rows of one instant in the order written; a limit larger than the
// history returns all of it, a limit of 0 none.
func testRecentHATransitions(t *testing.T, url string) {
	db := open(t, url)
	r1, r2 := newRouter("p1"), newRouter("p2")
	write(t, db, func(tx *store.Tx) error { return errors.Join(tx.InsertRouter(r1), tx.InsertRouter(r2)) })
	base := time.Now().UTC().Add(-time.Hour).Truncate(time.Microsecond)
	err := db.WriteQuiet(ctxT(t), func(tx *store.Tx) error {
		return tx.InsertHATransitions([]store.HATransition{
			{RouterID: r1.ID, AgentID: "a1", Host: "r1-first", From: "standby", To: "active", At: base, Reason: "startup"},
			{RouterID: r2.ID, AgentID: "a2", Host: "r2-first", From: "standby", To: "active", At: base.Add(time.Second), Reason: "startup"},
			{RouterID: r1.ID, AgentID: "a2", Host: "r1-takeover", From: "standby", To: "active", At: base.Add(2 * time.Second), Reason: "peer_lost"},
			{RouterID: r1.ID, AgentID: "a1", Host: "r1-demoted", From: "active", To: "standby", At: base.Add(2 * time.Second), Reason: "peer_lost"},
			{RouterID: r2.ID, AgentID: "a1", Host: "r2-last", From: "active", To: "standby", At: base.Add(3 * time.Second)},
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		limit int
		want  []string
	}{
		{0, nil},
		{1, []string{"r2-last"}},
		{3, []string{"r1-takeover", "r1-demoted", "r2-last"}},
		{100, []string{"r1-first", "r2-first", "r1-takeover", "r1-demoted", "r2-last"}},
	} {
		var got []store.HATransition
		read(t, db, func(tx *store.Tx) error {
			var err error
			got, err = tx.RecentHATransitions(tc.limit)
			return err
		})
		if !slices.Equal(hosts(got), tc.want) {
			t.Errorf("limit %d: %v, want %v", tc.limit, hosts(got), tc.want)
		}
		if tc.limit == 100 {
			first := got[0]
			if first.RouterID != r1.ID || first.AgentID != "a1" || first.From != "standby" || first.To != "active" || !first.At.Equal(base) || first.Reason != "startup" {
				t.Errorf("oldest row %+v, want r1's first as written", first)
			}
		}
	}
}

// testLastHATransitions: per HA router its newest row — the last written of
// an instant that has several (a takeover and its demotion) — routers
// without history and legacy routers absent.
func testLastHATransitions(t *testing.T, url string) {
	db := open(t, url)
	failedOver, single, quiet, legacy := newRouter("p1"), newRouter("p1"), newRouter("p1"), newRouter("p1")
	legacy.HA = false
	write(t, db, func(tx *store.Tx) error {
		return errors.Join(tx.InsertRouter(failedOver), tx.InsertRouter(single), tx.InsertRouter(quiet), tx.InsertRouter(legacy))
	})
	base := time.Now().UTC().Add(-time.Hour).Truncate(time.Microsecond)
	err := db.WriteQuiet(ctxT(t), func(tx *store.Tx) error {
		return tx.InsertHATransitions([]store.HATransition{
			{RouterID: failedOver.ID, AgentID: "a1", Host: "h1", From: "standby", To: "active", At: base, Reason: "startup"},
			{RouterID: single.ID, AgentID: "a1", Host: "h1", From: "standby", To: "active", At: base.Add(time.Minute), Reason: "startup"},
			{RouterID: failedOver.ID, AgentID: "a2", Host: "h2", From: "standby", To: "active", At: base.Add(2 * time.Minute), Reason: "peer_lost"},
			{RouterID: failedOver.ID, AgentID: "a1", Host: "h1", From: "active", To: "standby", At: base.Add(2 * time.Minute), Reason: "peer_lost"},
			// A legacy router that was HA keeps its history; the
			// dashboard lists HA routers only.
			{RouterID: legacy.ID, AgentID: "a1", Host: "h1", From: "standby", To: "active", At: base},
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]store.HATransition
	read(t, db, func(tx *store.Tx) error {
		var err error
		got, err = tx.LastHATransitions()
		return err
	})
	want := map[string]store.HATransition{
		failedOver.ID: {RouterID: failedOver.ID, AgentID: "a1", Host: "h1", From: "active", To: "standby", At: base.Add(2 * time.Minute), Reason: "peer_lost"},
		single.ID:     {RouterID: single.ID, AgentID: "a1", Host: "h1", From: "standby", To: "active", At: base.Add(time.Minute), Reason: "startup"},
	}
	if !maps.EqualFunc(got, want, func(a, b store.HATransition) bool {
		return a.RouterID == b.RouterID && a.AgentID == b.AgentID && a.Host == b.Host && a.From == b.From && a.To == b.To && a.At.Equal(b.At) && a.Reason == b.Reason
	}) {
		t.Errorf("last transitions\n%+v\nwant\n%+v", got, want)
	}
}
