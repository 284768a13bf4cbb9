package store_test

import (
	"maps"
	"testing"

	"github.com/l3ha/l3ha/internal/servertest"
	"github.com/l3ha/l3ha/internal/store"
)

// TestChanges checks, on every backend, what writes record for the agent
// endpoint (store.Changes) and that the router counts and network ports
// kept between transactions always equal what the database holds.
func TestChanges(t *testing.T) {
	for _, backend := range servertest.Backends(t) {
		t.Run(backend, func(t *testing.T) {
			testChanges(t, open(t, servertest.DatabaseURL(t, backend)))
		})
	}
}

func testChanges(t *testing.T, db *store.DB) {
	since := func(from, to int64) *store.Changes {
		t.Helper()
		cs, ok := db.ChangesSince(from, to)
		if !ok {
			return &store.Changes{All: true}
		}
		if len(cs) != int(to-from) {
			t.Fatalf("ChangesSince(%d, %d): %d entries", from, to, len(cs))
		}
		return cs[len(cs)-1]
	}
	// The kept data must always equal a fresh read.
	check := func(netIDs ...string) {
		t.Helper()
		read(t, db, func(tx *store.Tx) error {
			kept, err := tx.NetworkPortsOf(netIDs)
			if err != nil {
				return err
			}
			locs, err := tx.ListPortLocations(store.Where{"network_id": netIDs})
			if err != nil {
				return err
			}
			want := map[string]map[string]bool{}
			for _, l := range locs {
				if l.HostID != "" && l.DeviceOwner != "network:router_interface" {
					if want[l.NetworkID] == nil {
						want[l.NetworkID] = map[string]bool{}
					}
					want[l.NetworkID][l.HostID] = true
				}
			}
			for _, n := range netIDs {
				got := kept[n].Hosts
				if len(got) != len(want[n]) || (len(got) > 0 && !maps.Equal(got, want[n])) {
					t.Errorf("network %s: kept hosts %v, database %v", n, got, want[n])
				}
			}
			return nil
		})
		write(t, db, func(tx *store.Tx) error {
			kept, err := tx.RouterCountsByAgent()
			if err != nil {
				return err
			}
			bs, err := tx.ListBindings(nil)
			if err != nil {
				return err
			}
			want, wantMasters := map[string]int{}, map[string]int{}
			for _, b := range bs {
				want[b.AgentID]++
				if b.BindingIndex == 1 {
					wantMasters[b.AgentID]++
				}
			}
			if !maps.Equal(kept, want) {
				t.Errorf("kept router counts %v, database %v", kept, want)
			}
			masters, err := tx.MasterCountsByAgent()
			if err != nil {
				return err
			}
			if !maps.Equal(masters, wantMasters) {
				t.Errorf("kept master counts %v, database %v", masters, wantMasters)
			}
			return nil
		})
	}

	a1, a2 := newAgent("h1"), newAgent("h2")
	rev := write(t, db, func(tx *store.Tx) error {
		if err := tx.InsertAgent(a1); err != nil {
			return err
		}
		return tx.InsertAgent(a2)
	})
	if c := since(rev-1, rev); !c.All {
		t.Errorf("registering agents: %+v, want All", c)
	}
	n := newNetwork(ptr(100))
	r := newRouter("p1")
	rev = write(t, db, func(tx *store.Tx) error {
		if err := tx.InsertNetwork(n); err != nil {
			return err
		}
		return tx.InsertRouter(r)
	})
	if c := since(rev-1, rev); c.All || !c.Networks[n.ID] || !c.Routers[r.ID] {
		t.Errorf("network and router: %+v", c)
	}
	check(n.ID)

	// Binding with an HA port: the router, the agent, the host joining.
	p := newPort(n.ID, "fa:16:3e:00:00:01")
	p.DeviceID, p.DeviceOwner, p.HostID = r.ID, "network:router_ha_interface", "h1"
	rev = write(t, db, func(tx *store.Tx) error {
		if _, err := tx.RouterCountsByAgent(); err != nil {
			return err
		}
		if err := tx.InsertBinding(store.Binding{RouterID: r.ID, AgentID: a1.ID, BindingIndex: 1, HAState: "standby"}); err != nil {
			return err
		}
		return tx.InsertPort(p)
	})
	c := since(rev-1, rev)
	if c.All || !c.Routers[r.ID] || !c.Agents[a1.ID] || !c.Hosts["h1"] || !c.Joined[[2]string{n.ID, "h1"}] || c.Networks[n.ID] {
		t.Errorf("binding with HA port: %+v", c)
	}
	check(n.ID)

	// A second host joins (the kept ports are updated, not dropped).
	p2 := newPort(n.ID, "fa:16:3e:00:00:02")
	p2.DeviceID, p2.DeviceOwner, p2.HostID = r.ID, "network:router_ha_interface", "h2"
	write(t, db, func(tx *store.Tx) error {
		if err := tx.InsertBinding(store.Binding{RouterID: r.ID, AgentID: a2.ID, BindingIndex: 2, HAState: "standby"}); err != nil {
			return err
		}
		return tx.InsertPort(p2)
	})
	check(n.ID)

	// An interface port: the network changes for everyone on it.
	ip := newPort(n.ID, "fa:16:3e:00:00:03")
	ip.DeviceID, ip.DeviceOwner = r.ID, "network:router_interface"
	rev = write(t, db, func(tx *store.Tx) error { return tx.InsertPort(ip) })
	if c := since(rev-1, rev); !c.Networks[n.ID] || !c.Routers[r.ID] {
		t.Errorf("interface port: %+v", c)
	}
	check(n.ID)

	// Moving a port records where it was and where it goes.
	ip.DeviceOwner, ip.HostID = "compute:nova", "h3"
	rev = write(t, db, func(tx *store.Tx) error { return tx.UpdatePort(ip) })
	if c := since(rev-1, rev); !c.Networks[n.ID] || !c.Hosts["h3"] || !c.Joined[[2]string{n.ID, "h3"}] {
		t.Errorf("moved port: %+v", c)
	}
	check(n.ID)

	// Removing a binding and a port.
	rev = write(t, db, func(tx *store.Tx) error {
		if err := tx.DeleteBinding(r.ID, a2.ID); err != nil {
			return err
		}
		return tx.DeletePort(p2.ID)
	})
	if c := since(rev-1, rev); !c.Agents[a2.ID] || !c.Networks[n.ID] || !c.Routers[r.ID] {
		t.Errorf("unbinding: %+v", c)
	}
	check(n.ID)

	// A router update concerns only the router.
	r.Name = "renamed"
	rev = write(t, db, func(tx *store.Tx) error { return tx.UpdateRouter(r) })
	if c := since(rev-1, rev); c.All || len(c.Routers) != 1 || len(c.Networks)+len(c.Agents)+len(c.Hosts) != 0 {
		t.Errorf("rename: %+v", c)
	}

	// Deleting the router drops its bindings uncounted: counts are read again.
	rev = write(t, db, func(tx *store.Tx) error {
		for _, id := range []string{p.ID, ip.ID} {
			if err := tx.DeletePort(id); err != nil {
				return err
			}
		}
		return tx.DeleteRouter(r.ID)
	})
	check(n.ID)

	// Quiet writes record nothing and do not advance.
	rev = db.Revision()
	if err := db.WriteQuiet(ctxT(t), func(tx *store.Tx) error {
		a1.HeartbeatAt = tx.Now
		return tx.UpdateAgent(a1)
	}); err != nil {
		t.Fatal(err)
	}
	if got := db.Revision(); got != rev {
		t.Errorf("revision %d after a quiet write, want %d", got, rev)
	}
	if _, ok := db.ChangesSince(rev, rev+1); ok {
		t.Error("changes of a revision not committed yet are known")
	}
	if _, ok := db.ChangesSince(0, rev); ok {
		t.Error("changes across agent registration are not All")
	}
}
