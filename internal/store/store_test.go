package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"

	"github.com/l3ha/l3ha/internal/servertest"
	"github.com/l3ha/l3ha/internal/store"
)

// TestStore is the store's suite, run against every backend
// (servertest.Backends): SQLite always, PostgreSQL when L3HA_TEST_POSTGRES
// is set. Each subtest gets a fresh database.
func TestStore(t *testing.T) {
	suite := []struct {
		name string
		fn   func(t *testing.T, backend, url string)
	}{
		{"Migrations", testMigrations},
		{"Networks", testNetworks},
		{"Subnets", testSubnets},
		{"PortsAndFixedIPs", testPorts},
		{"Routers", testRouters},
		{"FloatingIPs", testFloatingIPs},
		{"AgentsAndBindings", testAgentsAndBindings},
		{"HANetworksAndVRIDs", testHANetworksAndVRIDs},
		{"UniqueViolations", testUniqueViolations},
		{"WriteBumpsRevisionAndWakes", testWriteBumpsRevision},
		{"WriteQuietDoesNotBump", testWriteQuiet},
		{"FailedWriteRollsBack", testFailedWriteRollsBack},
		{"NotifyAcrossHandles", testNotifyAcrossHandles},
		{"HATransitionsRoundTrip", testHATransitionsRoundTrip},
		{"HATransitionsPruning", testHATransitionsPruning},
	}
	for _, backend := range servertest.Backends(t) {
		t.Run(backend, func(t *testing.T) {
			for _, tc := range suite {
				t.Run(tc.name, func(t *testing.T) {
					tc.fn(t, backend, servertest.DatabaseURL(t, backend))
				})
			}
		})
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func open(t *testing.T, url string) *store.DB {
	t.Helper()
	db, err := store.Open(ctxT(t), url, nil)
	if err != nil {
		t.Fatalf("opening %s: %v", url, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// rawDB opens the database behind a store URL with plain database/sql, to
// look at what the store does not expose (schema_migrations).
func rawDB(t *testing.T, url string) *sql.DB {
	t.Helper()
	var db *sql.DB
	var err error
	if p, ok := strings.CutPrefix(url, "sqlite://"); ok {
		db, err = sql.Open("sqlite", "file:"+p+"?_pragma=busy_timeout(10000)")
	} else {
		db, err = sql.Open("pgx", url)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func write(t *testing.T, db *store.DB, fn func(*store.Tx) error) int64 {
	t.Helper()
	rev, err := db.Write(ctxT(t), fn)
	if err != nil {
		t.Fatalf("write: %v", err)
	}
	return rev
}

func read(t *testing.T, db *store.DB, fn func(*store.Tx) error) {
	t.Helper()
	if err := db.Read(ctxT(t), fn); err != nil {
		t.Fatalf("read: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }

func id() string { return uuid.NewString() }

func metaRevision(t *testing.T, db *store.DB) string {
	t.Helper()
	d, err := db.Dump(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(d["meta"], "|")
}

// sortedIPs orders fixed IPs by address (the store orders them by subnet id).
func sortedIPs(ips []store.FixedIP) []store.FixedIP {
	out := slices.Clone(ips)
	slices.SortFunc(out, func(a, b store.FixedIP) int { return strings.Compare(a.IPAddress, b.IPAddress) })
	return out
}

// sameTime compares times at the store's precision (microseconds).
func sameTime(a, b time.Time) bool {
	return a.Truncate(time.Microsecond).Equal(b.Truncate(time.Microsecond))
}

// ---- fixtures

func newNetwork(seg *int) *store.Network {
	return &store.Network{
		ID: id(), ProjectID: "p1", Name: "net", Description: "d", AdminStateUp: true, Status: "ACTIVE",
		NetworkType: "vxlan", SegmentationID: seg, MTU: 1450,
	}
}

func newSubnet(netID, cidr string) *store.Subnet {
	return &store.Subnet{
		ID: id(), NetworkID: netID, ProjectID: "p1", Name: "sub", CIDR: cidr, GatewayIP: ptr(strings.TrimSuffix(cidr, "0/24") + "1"),
		EnableDHCP: true, IPVersion: 4,
		AllocationPools: []store.AllocationPool{{Start: strings.TrimSuffix(cidr, "0/24") + "2", End: strings.TrimSuffix(cidr, "0/24") + "254"}},
	}
}

func newPort(netID, mac string, ips ...store.FixedIP) *store.Port {
	return &store.Port{
		ID: id(), NetworkID: netID, ProjectID: "p1", Name: "port", AdminStateUp: true, MACAddress: mac,
		DeviceID: "", DeviceOwner: "", Status: "DOWN", FixedIPs: ips,
	}
}

func newRouter(project string) *store.Router {
	return &store.Router{ID: id(), ProjectID: project, Name: "r", AdminStateUp: true, Status: "ACTIVE", HA: true, EnableSNAT: true}
}

func newAgent(host string) *store.Agent {
	now := time.Now().UTC()
	return &store.Agent{
		ID: id(), AgentType: "L3 agent", Binary: "neutron-l3-agent", Topic: "l3_agent", Host: host, AvailabilityZone: "nova",
		AdminStateUp: true, Configurations: map[string]any{"agent_mode": "legacy", "local_ip": "192.0.2.1"},
		HeartbeatAt: now, StartedAt: now, CreatedAt: now,
	}
}

// ---- migrations

func testMigrations(t *testing.T, backend, url string) {
	files, err := os.ReadDir("migrations")
	if err != nil {
		t.Fatal(err)
	}
	var versions []int
	for _, f := range files {
		var v int
		if _, err := fmt.Sscanf(f.Name(), "%d_", &v); err != nil {
			t.Fatalf("migration %s: %v", f.Name(), err)
		}
		versions = append(versions, v)
	}
	applied := func() []int {
		t.Helper()
		rows, err := rawDB(t, url).Query("SELECT version FROM schema_migrations ORDER BY version")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []int
		for rows.Next() {
			var v int
			if err := rows.Scan(&v); err != nil {
				t.Fatal(err)
			}
			out = append(out, v)
		}
		return out
	}

	// Two handles opening a fresh database at once: the migrations are
	// applied exactly once (PostgreSQL: advisory lock; SQLite: one writer).
	var wg sync.WaitGroup
	dbs := make([]*store.DB, 2)
	errs := make([]error, 2)
	for i := range dbs {
		wg.Go(func() { dbs[i], errs[i] = store.Open(ctxT(t), url, nil) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent open %d: %v", i, err)
		}
		t.Cleanup(func() { dbs[i].Close() })
	}
	if got := applied(); !reflect.DeepEqual(got, versions) {
		t.Fatalf("schema_migrations = %v, want %v", got, versions)
	}
	if rev := dbs[0].Revision(); rev != 0 {
		t.Fatalf("fresh database at revision %d, want 0", rev)
	}
	wantDialect := map[string]store.Dialect{"sqlite": store.SQLite, "postgres": store.Postgres}[backend]
	if d := dbs[0].Dialect(); d != wantDialect {
		t.Fatalf("dialect %v, want %v", d, wantDialect)
	}
	n := newNetwork(ptr(100))
	rev := write(t, dbs[0], func(tx *store.Tx) error { return tx.InsertNetwork(n) })
	for _, db := range dbs {
		db.Close()
	}

	// Reopening applies nothing again and keeps data and revision.
	db := open(t, url)
	if got := applied(); !reflect.DeepEqual(got, versions) {
		t.Fatalf("after reopen schema_migrations = %v, want %v", got, versions)
	}
	if db.Revision() != rev {
		t.Fatalf("reopened at revision %d, want %d", db.Revision(), rev)
	}
	read(t, db, func(tx *store.Tx) error {
		got, err := tx.GetNetwork(n.ID)
		if err != nil {
			return err
		}
		if got.Name != n.Name {
			return fmt.Errorf("network after reopen: %+v", got)
		}
		return nil
	})
	db.Close()
	db = open(t, url) // and a third time
	if got := applied(); !reflect.DeepEqual(got, versions) {
		t.Fatalf("after second reopen schema_migrations = %v, want %v", got, versions)
	}
}

// ---- CRUD round trips

func testNetworks(t *testing.T, _, url string) {
	db := open(t, url)
	n := newNetwork(ptr(4242))
	flat := &store.Network{ID: id(), ProjectID: "p2", Name: "ext", AdminStateUp: true, Status: "ACTIVE", Shared: true, External: true,
		NetworkType: "flat", PhysicalNetwork: ptr("physnet1"), MTU: 1500}
	var now time.Time
	write(t, db, func(tx *store.Tx) error {
		now = tx.Now
		return errors.Join(tx.InsertNetwork(n), tx.InsertNetwork(flat))
	})
	if n.Revision != 1 || !n.CreatedAt.Equal(now) || !n.UpdatedAt.Equal(now) {
		t.Fatalf("insert stamped %+v (tx time %v)", n, now)
	}
	read(t, db, func(tx *store.Tx) error {
		got, err := tx.GetNetwork(n.ID)
		if err != nil {
			return err
		}
		if got.ID != n.ID || got.ProjectID != "p1" || got.Name != "net" || got.Description != "d" || !got.AdminStateUp ||
			got.Shared || got.External || got.Status != "ACTIVE" || got.NetworkType != "vxlan" || got.PhysicalNetwork != nil ||
			got.SegmentationID == nil || *got.SegmentationID != 4242 || got.MTU != 1450 || got.Revision != 1 ||
			!sameTime(got.CreatedAt, now) || !sameTime(got.UpdatedAt, now) {
			t.Errorf("network round trip: got %+v, want %+v", got, n)
		}
		f, err := tx.GetNetwork(flat.ID)
		if err != nil {
			return err
		}
		if f.PhysicalNetwork == nil || *f.PhysicalNetwork != "physnet1" || f.SegmentationID != nil || !f.Shared || !f.External {
			t.Errorf("flat network round trip: %+v", f)
		}
		if used, err := tx.SegmentInUse("vxlan", 4242); err != nil || !used {
			t.Errorf("SegmentInUse(vxlan, 4242) = %v, %v", used, err)
		}
		if used, err := tx.SegmentInUse("vxlan", 4243); err != nil || used {
			t.Errorf("SegmentInUse(vxlan, 4243) = %v, %v", used, err)
		}
		if used, err := tx.FlatPhysnetInUse("physnet1"); err != nil || !used {
			t.Errorf("FlatPhysnetInUse(physnet1) = %v, %v", used, err)
		}
		ext, err := tx.ListNetworks(store.Where{"external": true})
		if err != nil {
			return err
		}
		if len(ext) != 1 || ext[0].ID != flat.ID {
			t.Errorf("external networks: %v", ext)
		}
		both, err := tx.ListNetworks(store.Where{"id": []string{n.ID, flat.ID, id()}})
		if err != nil {
			return err
		}
		if len(both) != 2 || both[0].ID > both[1].ID {
			t.Errorf("ListNetworks by ids: %d networks, want 2 ordered by id", len(both))
		}
		none, err := tx.ListNetworks(store.Where{"id": []string{}})
		if err != nil || len(none) != 0 {
			t.Errorf("ListNetworks(id IN ()) = %v, %v", none, err)
		}
		_, err = tx.GetNetwork(id())
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetNetwork(unknown) = %v, want ErrNotFound", err)
		}
		return nil
	})

	var later time.Time
	write(t, db, func(tx *store.Tx) error {
		later = tx.Now
		n.Name, n.Description, n.AdminStateUp, n.Shared, n.MTU = "renamed", "", false, true, 1400
		return tx.UpdateNetwork(n)
	})
	write(t, db, func(tx *store.Tx) error { return tx.TouchNetwork(n.ID) })
	read(t, db, func(tx *store.Tx) error {
		got, err := tx.GetNetwork(n.ID)
		if err != nil {
			return err
		}
		if got.Name != "renamed" || got.Description != "" || got.AdminStateUp || !got.Shared || got.MTU != 1400 ||
			got.Revision != 3 || !sameTime(got.CreatedAt, now) || got.UpdatedAt.Before(later.Truncate(time.Microsecond)) {
			t.Errorf("updated network: %+v", got)
		}
		return nil
	})
	write(t, db, func(tx *store.Tx) error { return tx.DeleteNetwork(n.ID) })
	read(t, db, func(tx *store.Tx) error {
		if _, err := tx.GetNetwork(n.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("deleted network: %v", err)
		}
		return nil
	})
}

func testSubnets(t *testing.T, _, url string) {
	db := open(t, url)
	n := newNetwork(nil)
	s := newSubnet(n.ID, "10.0.0.0/24")
	s.DNSNameservers = []string{"192.0.2.53", "192.0.2.54"}
	s.HostRoutes = []store.HostRoute{{Destination: "10.9.0.0/16", NextHop: "10.0.0.254"}}
	bare := &store.Subnet{ID: id(), NetworkID: n.ID, ProjectID: "p1", CIDR: "10.1.0.0/24", IPVersion: 4}
	write(t, db, func(tx *store.Tx) error {
		return errors.Join(tx.InsertNetwork(n), tx.InsertSubnet(s), tx.InsertSubnet(bare))
	})
	read(t, db, func(tx *store.Tx) error {
		got, err := tx.GetSubnet(s.ID)
		if err != nil {
			return err
		}
		if got.NetworkID != n.ID || got.CIDR != "10.0.0.0/24" || got.GatewayIP == nil || *got.GatewayIP != "10.0.0.1" ||
			!got.EnableDHCP || got.IPVersion != 4 || got.Revision != 0 ||
			!reflect.DeepEqual(got.AllocationPools, s.AllocationPools) || !reflect.DeepEqual(got.DNSNameservers, s.DNSNameservers) ||
			!reflect.DeepEqual(got.HostRoutes, s.HostRoutes) {
			t.Errorf("subnet round trip: got %+v, want %+v", got, s)
		}
		b, err := tx.GetSubnet(bare.ID)
		if err != nil {
			return err
		}
		// nil lists are stored as [] and come back empty, never null.
		if b.GatewayIP != nil || b.AllocationPools == nil || len(b.AllocationPools) != 0 || b.DNSNameservers == nil || b.HostRoutes == nil {
			t.Errorf("bare subnet round trip: %+v", b)
		}
		subs, err := tx.ListSubnets(store.Where{"network_id": n.ID})
		if err != nil || len(subs) != 2 {
			t.Errorf("ListSubnets = %d, %v", len(subs), err)
		}
		return nil
	})
	write(t, db, func(tx *store.Tx) error {
		s.GatewayIP = nil
		s.DNSNameservers = nil
		s.AllocationPools = append(s.AllocationPools, store.AllocationPool{Start: "10.0.0.1", End: "10.0.0.1"})
		return tx.UpdateSubnet(s)
	})
	read(t, db, func(tx *store.Tx) error {
		got, err := tx.GetSubnet(s.ID)
		if err != nil {
			return err
		}
		if got.GatewayIP != nil || len(got.DNSNameservers) != 0 || len(got.AllocationPools) != 2 || got.Revision != 1 {
			t.Errorf("updated subnet: %+v", got)
		}
		return nil
	})
	write(t, db, func(tx *store.Tx) error { return tx.DeleteSubnet(bare.ID) })
	read(t, db, func(tx *store.Tx) error {
		if _, err := tx.GetSubnet(bare.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("deleted subnet: %v", err)
		}
		return nil
	})
}

func testPorts(t *testing.T, _, url string) {
	db := open(t, url)
	n := newNetwork(nil)
	s1, s2 := newSubnet(n.ID, "10.0.0.0/24"), newSubnet(n.ID, "10.0.1.0/24")
	p := newPort(n.ID, "fa:16:3e:00:00:01", store.FixedIP{SubnetID: s1.ID, IPAddress: "10.0.0.5"}, store.FixedIP{SubnetID: s2.ID, IPAddress: "10.0.1.5"})
	p.DeviceID, p.DeviceOwner, p.HostID = "dev1", "compute:nova", "cmp1"
	q := newPort(n.ID, "fa:16:3e:00:00:02", store.FixedIP{SubnetID: s1.ID, IPAddress: "10.0.0.6"})
	q.DeviceID = "dev1"
	write(t, db, func(tx *store.Tx) error {
		return errors.Join(tx.InsertNetwork(n), tx.InsertSubnet(s1), tx.InsertSubnet(s2), tx.InsertPort(p), tx.InsertPort(q))
	})
	read(t, db, func(tx *store.Tx) error {
		got, err := tx.GetPort(p.ID)
		if err != nil {
			return err
		}
		want := *p
		if got.ID != want.ID || got.NetworkID != n.ID || got.MACAddress != want.MACAddress || got.DeviceID != "dev1" ||
			got.DeviceOwner != "compute:nova" || got.HostID != "cmp1" || got.Status != "DOWN" || !got.AdminStateUp || got.Revision != 1 ||
			!reflect.DeepEqual(sortedIPs(got.FixedIPs), sortedIPs(want.FixedIPs)) {
			t.Errorf("port round trip: got %+v, want %+v", got, want)
		}
		ports, err := tx.ListPorts(store.Where{"device_id": "dev1"})
		if err != nil {
			return err
		}
		if len(ports) != 2 {
			t.Fatalf("ListPorts(device dev1) = %d ports", len(ports))
		}
		for _, x := range ports {
			if x.ID == q.ID && !reflect.DeepEqual(x.FixedIPs, q.FixedIPs) {
				t.Errorf("listed port %s fixed IPs %v, want %v", x.ID, x.FixedIPs, q.FixedIPs)
			}
		}
		used, err := tx.UsedIPs(s1.ID)
		if err != nil {
			return err
		}
		if !reflect.DeepEqual(used, map[string]bool{"10.0.0.5": true, "10.0.0.6": true}) {
			t.Errorf("UsedIPs = %v", used)
		}
		if holder, err := tx.IPAllocated(s1.ID, "10.0.0.6"); err != nil || holder != q.ID {
			t.Errorf("IPAllocated(10.0.0.6) = %q, %v; want %s", holder, err, q.ID)
		}
		if holder, err := tx.IPAllocated(s1.ID, "10.0.0.7"); err != nil || holder != "" {
			t.Errorf("IPAllocated(10.0.0.7) = %q, %v; want free", holder, err)
		}
		if c, err := tx.CountSubnetAllocations(s1.ID); err != nil || c != 2 {
			t.Errorf("CountSubnetAllocations = %d, %v", c, err)
		}
		if _, err := tx.GetPort(id()); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetPort(unknown) = %v", err)
		}
		return nil
	})
	// Update moves the port to other addresses; the old ones are freed.
	write(t, db, func(tx *store.Tx) error {
		p.FixedIPs = []store.FixedIP{{SubnetID: s1.ID, IPAddress: "10.0.0.9"}}
		p.Name, p.Status, p.ProjectID = "renamed", "ACTIVE", "p9"
		return errors.Join(tx.UpdatePort(p), tx.SetPortHost(q.ID, "net1"))
	})
	read(t, db, func(tx *store.Tx) error {
		got, err := tx.GetPort(p.ID)
		if err != nil {
			return err
		}
		if got.Name != "renamed" || got.Status != "ACTIVE" || got.ProjectID != "p9" || got.Revision != 2 ||
			!reflect.DeepEqual(got.FixedIPs, []store.FixedIP{{SubnetID: s1.ID, IPAddress: "10.0.0.9"}}) {
			t.Errorf("updated port: %+v", got)
		}
		if holder, _ := tx.IPAllocated(s2.ID, "10.0.1.5"); holder != "" {
			t.Errorf("10.0.1.5 still held by %s after update", holder)
		}
		gq, err := tx.GetPort(q.ID)
		if err != nil {
			return err
		}
		if gq.HostID != "net1" || gq.Revision != 1 {
			t.Errorf("SetPortHost: %+v", gq)
		}
		return nil
	})
	write(t, db, func(tx *store.Tx) error { return tx.DeletePort(p.ID) })
	read(t, db, func(tx *store.Tx) error {
		if _, err := tx.GetPort(p.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("deleted port: %v", err)
		}
		if c, _ := tx.CountSubnetAllocations(s1.ID); c != 1 {
			t.Errorf("allocations after delete = %d, want 1", c)
		}
		return nil
	})

	// Above 200 ports, ListPorts fetches fixed IPs with a subquery.
	var many []*store.Port
	write(t, db, func(tx *store.Tx) error {
		for i := range 210 {
			x := newPort(n.ID, fmt.Sprintf("fa:16:3e:01:%02x:%02x", i/256, i%256), store.FixedIP{SubnetID: s2.ID, IPAddress: fmt.Sprintf("10.0.1.%d", 10+i)})
			x.DeviceID = "bulk"
			many = append(many, x)
			if err := tx.InsertPort(x); err != nil {
				return err
			}
		}
		return nil
	})
	read(t, db, func(tx *store.Tx) error {
		ports, err := tx.ListPorts(store.Where{"device_id": "bulk"})
		if err != nil {
			return err
		}
		if len(ports) != len(many) {
			t.Fatalf("ListPorts(bulk) = %d, want %d", len(ports), len(many))
		}
		for _, x := range ports {
			if len(x.FixedIPs) != 1 {
				t.Fatalf("bulk port %s has fixed IPs %v", x.ID, x.FixedIPs)
			}
		}
		return nil
	})
}

func testRouters(t *testing.T, _, url string) {
	db := open(t, url)
	ext := newNetwork(nil)
	gw := newPort(ext.ID, "fa:16:3e:00:00:0a")
	r := newRouter("p1")
	r.Routes = []store.Route{{Destination: "10.10.0.0/16", NextHop: "10.0.0.3"}, {Destination: "0.0.0.0/0", NextHop: "10.0.0.4"}}
	r.GWPortID = &gw.ID
	legacy := newRouter("p2")
	legacy.HA, legacy.Distributed, legacy.EnableSNAT = false, true, false
	write(t, db, func(tx *store.Tx) error {
		return errors.Join(tx.InsertNetwork(ext), tx.InsertPort(gw), tx.InsertRouter(r), tx.InsertRouter(legacy))
	})
	read(t, db, func(tx *store.Tx) error {
		got, err := tx.GetRouter(r.ID)
		if err != nil {
			return err
		}
		if got.ProjectID != "p1" || got.Name != "r" || !got.AdminStateUp || got.Status != "ACTIVE" || !got.HA || got.Distributed ||
			got.GWPortID == nil || *got.GWPortID != gw.ID || !got.EnableSNAT || got.Revision != 1 || !reflect.DeepEqual(got.Routes, r.Routes) {
			t.Errorf("router round trip: got %+v, want %+v", got, r)
		}
		l, err := tx.GetRouter(legacy.ID)
		if err != nil {
			return err
		}
		if l.HA || !l.Distributed || l.EnableSNAT || l.GWPortID != nil || l.Routes == nil || len(l.Routes) != 0 {
			t.Errorf("legacy router round trip: %+v", l)
		}
		if c, err := tx.CountRouters(store.Where{"project_id": "p1"}); err != nil || c != 1 {
			t.Errorf("CountRouters(p1) = %d, %v", c, err)
		}
		if c, err := tx.CountRouters(nil); err != nil || c != 2 {
			t.Errorf("CountRouters() = %d, %v", c, err)
		}
		has, err := tx.ListRouters(store.Where{"ha": true})
		if err != nil || len(has) != 1 || has[0].ID != r.ID {
			t.Errorf("ListRouters(ha) = %v, %v", has, err)
		}
		if _, err := tx.GetRouter(id()); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetRouter(unknown) = %v", err)
		}
		return nil
	})
	write(t, db, func(tx *store.Tx) error {
		r.Routes = nil
		r.GWPortID = nil
		r.Name, r.AdminStateUp, r.Status = "r2", false, "ERROR"
		return tx.UpdateRouter(r)
	})
	read(t, db, func(tx *store.Tx) error {
		got, err := tx.GetRouter(r.ID)
		if err != nil {
			return err
		}
		if got.Name != "r2" || got.AdminStateUp || got.Status != "ERROR" || got.GWPortID != nil || len(got.Routes) != 0 || got.Routes == nil || got.Revision != 2 {
			t.Errorf("updated router: %+v", got)
		}
		return nil
	})
	write(t, db, func(tx *store.Tx) error { return tx.DeleteRouter(r.ID) })
	read(t, db, func(tx *store.Tx) error {
		if _, err := tx.GetRouter(r.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("deleted router: %v", err)
		}
		return nil
	})
}

func testFloatingIPs(t *testing.T, _, url string) {
	db := open(t, url)
	ext, tenant := newNetwork(ptr(1)), newNetwork(ptr(2))
	extSub, tenSub := newSubnet(ext.ID, "203.0.113.0/24"), newSubnet(tenant.ID, "10.0.0.0/24")
	fport := newPort(ext.ID, "fa:16:3e:00:00:0b", store.FixedIP{SubnetID: extSub.ID, IPAddress: "203.0.113.7"})
	vm := newPort(tenant.ID, "fa:16:3e:00:00:0c", store.FixedIP{SubnetID: tenSub.ID, IPAddress: "10.0.0.7"})
	r := newRouter("p1")
	f := &store.FloatingIP{ID: id(), ProjectID: "p1", Description: "fip", FloatingNetworkID: ext.ID, FloatingIP: "203.0.113.7",
		FloatingPortID: fport.ID, Status: "DOWN"}
	write(t, db, func(tx *store.Tx) error {
		return errors.Join(tx.InsertNetwork(ext), tx.InsertNetwork(tenant), tx.InsertSubnet(extSub), tx.InsertSubnet(tenSub),
			tx.InsertPort(fport), tx.InsertPort(vm), tx.InsertRouter(r), tx.InsertFloatingIP(f))
	})
	read(t, db, func(tx *store.Tx) error {
		got, err := tx.GetFloatingIP(f.ID)
		if err != nil {
			return err
		}
		if got.FloatingIP != "203.0.113.7" || got.FloatingNetworkID != ext.ID || got.FloatingPortID != fport.ID ||
			got.FixedPortID != nil || got.FixedIP != nil || got.RouterID != nil || got.Status != "DOWN" || got.Description != "fip" || got.Revision != 0 {
			t.Errorf("floating IP round trip: %+v", got)
		}
		return nil
	})
	write(t, db, func(tx *store.Tx) error {
		f.FixedPortID, f.FixedIP, f.RouterID, f.Status = &vm.ID, ptr("10.0.0.7"), &r.ID, "ACTIVE"
		return tx.UpdateFloatingIP(f)
	})
	read(t, db, func(tx *store.Tx) error {
		fs, err := tx.ListFloatingIPs(store.Where{"router_id": r.ID})
		if err != nil {
			return err
		}
		if len(fs) != 1 {
			t.Fatalf("ListFloatingIPs(router) = %d", len(fs))
		}
		got := fs[0]
		if got.FixedPortID == nil || *got.FixedPortID != vm.ID || got.FixedIP == nil || *got.FixedIP != "10.0.0.7" ||
			got.RouterID == nil || *got.RouterID != r.ID || got.Status != "ACTIVE" || got.Revision != 1 {
			t.Errorf("associated floating IP: %+v", got)
		}
		return nil
	})
	write(t, db, func(tx *store.Tx) error { return tx.DeleteFloatingIP(f.ID) })
	read(t, db, func(tx *store.Tx) error {
		if _, err := tx.GetFloatingIP(f.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("deleted floating IP: %v", err)
		}
		return nil
	})
}

func testAgentsAndBindings(t *testing.T, _, url string) {
	db := open(t, url)
	a1, a2, a3 := newAgent("net1"), newAgent("net2"), newAgent("net3")
	a1.Description = ptr("first")
	r1, r2 := newRouter("p1"), newRouter("p1")
	write(t, db, func(tx *store.Tx) error {
		return errors.Join(tx.InsertAgent(a1), tx.InsertAgent(a2), tx.InsertAgent(a3), tx.InsertRouter(r1), tx.InsertRouter(r2),
			tx.InsertBinding(store.Binding{RouterID: r1.ID, AgentID: a1.ID, BindingIndex: 1, HAState: "standby"}),
			tx.InsertBinding(store.Binding{RouterID: r1.ID, AgentID: a2.ID, BindingIndex: 2, HAState: "standby"}),
			tx.InsertBinding(store.Binding{RouterID: r2.ID, AgentID: a1.ID, BindingIndex: 1, HAState: "standby"}))
	})
	read(t, db, func(tx *store.Tx) error {
		got, err := tx.GetAgent(a1.ID)
		if err != nil {
			return err
		}
		if got.AgentType != "L3 agent" || got.Binary != "neutron-l3-agent" || got.Topic != "l3_agent" || got.Host != "net1" ||
			got.AvailabilityZone != "nova" || !got.AdminStateUp || !reflect.DeepEqual(got.Configurations, a1.Configurations) ||
			got.Description == nil || *got.Description != "first" ||
			!sameTime(got.HeartbeatAt, a1.HeartbeatAt) || !sameTime(got.StartedAt, a1.StartedAt) || !sameTime(got.CreatedAt, a1.CreatedAt) {
			t.Errorf("agent round trip: got %+v, want %+v", got, a1)
		}
		as, err := tx.ListAgents(store.Where{"agent_type": "L3 agent"})
		if err != nil {
			return err
		}
		if len(as) != 3 || as[0].Host != "net1" || as[2].Host != "net3" || as[1].Description != nil {
			t.Errorf("ListAgents: %v", as)
		}
		bs, err := tx.ListBindings(store.Where{"router_id": r1.ID})
		if err != nil {
			return err
		}
		want := []store.Binding{{RouterID: r1.ID, AgentID: a1.ID, BindingIndex: 1, HAState: "standby"}, {RouterID: r1.ID, AgentID: a2.ID, BindingIndex: 2, HAState: "standby"}}
		if !reflect.DeepEqual(bs, want) {
			t.Errorf("bindings of r1 = %v, want %v", bs, want)
		}
		if bs, _ := tx.ListBindings(store.Where{"agent_id": a1.ID}); len(bs) != 2 {
			t.Errorf("bindings of a1 = %v", bs)
		}
		counts, err := tx.RouterCountsByAgent()
		if err != nil {
			return err
		}
		if !reflect.DeepEqual(counts, map[string]int{a1.ID: 2, a2.ID: 1}) {
			t.Errorf("RouterCountsByAgent = %v", counts)
		}
		return nil
	})
	hb := time.Now().Add(time.Minute).UTC()
	err := db.WriteQuiet(ctxT(t), func(tx *store.Tx) error {
		ok, err := tx.SetHAState(r1.ID, a2.ID, "active")
		if err != nil || !ok {
			return fmt.Errorf("SetHAState(bound) = %v, %v", ok, err)
		}
		if ok, err := tx.SetHAState(r2.ID, a2.ID, "active"); err != nil || ok {
			return fmt.Errorf("SetHAState(not bound) = %v, %v", ok, err)
		}
		a2.HeartbeatAt, a2.AdminStateUp, a2.Description = hb, false, ptr("second")
		a2.Configurations = map[string]any{"agent_mode": "dvr_snat"}
		return tx.UpdateAgent(a2)
	})
	if err != nil {
		t.Fatal(err)
	}
	read(t, db, func(tx *store.Tx) error {
		bs, _ := tx.ListBindings(store.Where{"router_id": r1.ID, "agent_id": a2.ID})
		if len(bs) != 1 || bs[0].HAState != "active" {
			t.Errorf("binding after SetHAState: %v", bs)
		}
		got, err := tx.GetAgent(a2.ID)
		if err != nil {
			return err
		}
		if got.AdminStateUp || !sameTime(got.HeartbeatAt, hb) || got.Description == nil || *got.Description != "second" || got.Configurations["agent_mode"] != "dvr_snat" {
			t.Errorf("updated agent: %+v", got)
		}
		return nil
	})
	write(t, db, func(tx *store.Tx) error { return tx.DeleteBinding(r1.ID, a1.ID) })
	write(t, db, func(tx *store.Tx) error { return tx.DeleteAgent(a2.ID) })
	read(t, db, func(tx *store.Tx) error {
		if bs, _ := tx.ListBindings(store.Where{"router_id": r1.ID}); len(bs) != 0 {
			t.Errorf("r1 still bound after unbinding and deleting the agent: %v", bs)
		}
		if _, err := tx.GetAgent(a2.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("deleted agent: %v", err)
		}
		return nil
	})
	// Deleting a router takes its bindings.
	write(t, db, func(tx *store.Tx) error { return tx.DeleteRouter(r2.ID) })
	read(t, db, func(tx *store.Tx) error {
		if bs, _ := tx.ListBindings(nil); len(bs) != 0 {
			t.Errorf("bindings left: %v", bs)
		}
		return nil
	})
}

func testHANetworksAndVRIDs(t *testing.T, _, url string) {
	db := open(t, url)
	n1, n2 := newNetwork(ptr(10)), newNetwork(ptr(11))
	r1, r2 := newRouter("p1"), newRouter("p1")
	write(t, db, func(tx *store.Tx) error {
		return errors.Join(tx.InsertNetwork(n1), tx.InsertNetwork(n2), tx.InsertRouter(r1), tx.InsertRouter(r2),
			tx.InsertHANetwork(store.HANetwork{NetworkID: n2.ID, ProjectID: "p1", Seq: 2}),
			tx.InsertHANetwork(store.HANetwork{NetworkID: n1.ID, ProjectID: "p1", Seq: 1}),
			tx.InsertVRID(store.VRIDAllocation{NetworkID: n1.ID, VRID: 254, RouterID: r1.ID}),
			tx.InsertVRID(store.VRIDAllocation{NetworkID: n1.ID, VRID: 1, RouterID: r2.ID}))
	})
	read(t, db, func(tx *store.Tx) error {
		hns, err := tx.ListHANetworks(store.Where{"project_id": "p1"})
		if err != nil {
			return err
		}
		want := []store.HANetwork{{NetworkID: n1.ID, ProjectID: "p1", Seq: 1}, {NetworkID: n2.ID, ProjectID: "p1", Seq: 2}}
		if !reflect.DeepEqual(hns, want) {
			t.Errorf("HA networks = %v, want %v (ordered by seq)", hns, want)
		}
		vs, err := tx.ListVRIDs(store.Where{"network_id": n1.ID})
		if err != nil {
			return err
		}
		wantV := []store.VRIDAllocation{{NetworkID: n1.ID, VRID: 1, RouterID: r2.ID}, {NetworkID: n1.ID, VRID: 254, RouterID: r1.ID}}
		if !reflect.DeepEqual(vs, wantV) {
			t.Errorf("VRIDs = %v, want %v", vs, wantV)
		}
		for _, c := range []struct {
			net  string
			want int
		}{{n1.ID, 2}, {n2.ID, 0}} {
			if got, err := tx.CountVRIDs(c.net); err != nil || got != c.want {
				t.Errorf("CountVRIDs(%s) = %d, %v; want %d", c.net, got, err, c.want)
			}
		}
		return nil
	})
	write(t, db, func(tx *store.Tx) error { return errors.Join(tx.DeleteVRID(r1.ID), tx.DeleteHANetwork(n2.ID)) })
	write(t, db, func(tx *store.Tx) error { return tx.DeleteRouter(r2.ID) }) // takes its VRID
	read(t, db, func(tx *store.Tx) error {
		if vs, _ := tx.ListVRIDs(nil); len(vs) != 0 {
			t.Errorf("VRIDs left: %v", vs)
		}
		if hns, _ := tx.ListHANetworks(nil); len(hns) != 1 || hns[0].NetworkID != n1.ID {
			t.Errorf("HA networks left: %v", hns)
		}
		return nil
	})
}

// ---- constraints

func testUniqueViolations(t *testing.T, _, url string) {
	db := open(t, url)
	n, other := newNetwork(ptr(20)), newNetwork(ptr(21))
	s := newSubnet(n.ID, "10.0.0.0/24")
	r1, r2 := newRouter("p1"), newRouter("p1")
	a1, a2 := newAgent("net1"), newAgent("net2")
	p1 := newPort(n.ID, "fa:16:3e:00:00:01", store.FixedIP{SubnetID: s.ID, IPAddress: "10.0.0.5"})
	write(t, db, func(tx *store.Tx) error {
		return errors.Join(tx.InsertNetwork(n), tx.InsertNetwork(other), tx.InsertSubnet(s), tx.InsertRouter(r1), tx.InsertRouter(r2),
			tx.InsertAgent(a1), tx.InsertAgent(a2), tx.InsertPort(p1),
			tx.InsertHANetwork(store.HANetwork{NetworkID: n.ID, ProjectID: "p1", Seq: 1}),
			tx.InsertVRID(store.VRIDAllocation{NetworkID: n.ID, VRID: 7, RouterID: r1.ID}),
			tx.InsertBinding(store.Binding{RouterID: r1.ID, AgentID: a1.ID, BindingIndex: 1, HAState: "standby"}))
	})
	before, err := db.Dump(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	rev := db.Revision()
	conflicts := []struct {
		name string
		fn   func(tx *store.Tx) error
	}{
		{"duplicate VRID on one HA network", func(tx *store.Tx) error {
			return tx.InsertVRID(store.VRIDAllocation{NetworkID: n.ID, VRID: 7, RouterID: r2.ID})
		}},
		{"second VRID for a router", func(tx *store.Tx) error {
			return tx.InsertVRID(store.VRIDAllocation{NetworkID: n.ID, VRID: 8, RouterID: r1.ID})
		}},
		{"duplicate binding_index per router", func(tx *store.Tx) error {
			return tx.InsertBinding(store.Binding{RouterID: r1.ID, AgentID: a2.ID, BindingIndex: 1, HAState: "standby"})
		}},
		{"router bound twice to one agent", func(tx *store.Tx) error {
			return tx.InsertBinding(store.Binding{RouterID: r1.ID, AgentID: a1.ID, BindingIndex: 2, HAState: "standby"})
		}},
		{"duplicate IP per subnet", func(tx *store.Tx) error {
			return tx.InsertPort(newPort(n.ID, "fa:16:3e:00:00:02", store.FixedIP{SubnetID: s.ID, IPAddress: "10.0.0.5"}))
		}},
		{"duplicate (project, seq) HA network", func(tx *store.Tx) error {
			return tx.InsertHANetwork(store.HANetwork{NetworkID: other.ID, ProjectID: "p1", Seq: 1})
		}},
		{"duplicate MAC on a network", func(tx *store.Tx) error {
			return tx.InsertPort(newPort(n.ID, "fa:16:3e:00:00:01"))
		}},
		{"duplicate VXLAN segment", func(tx *store.Tx) error { return tx.InsertNetwork(newNetwork(ptr(20))) }},
		{"duplicate agent host", func(tx *store.Tx) error { return tx.InsertAgent(newAgent("net1")) }},
		{"duplicate router id", func(tx *store.Tx) error { return tx.InsertRouter(&store.Router{ID: r1.ID, ProjectID: "p1"}) }},
	}
	for _, c := range conflicts {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			_, err := db.Write(ctxT(t), c.fn)
			if err == nil {
				t.Fatalf("%s: write succeeded", c.name)
			}
			if !store.IsUniqueViolation(err) {
				t.Fatalf("%s: IsUniqueViolation(%v) = false", c.name, err)
			}
		})
	}
	// The same allocations in another scope are fine: VRID 7 on another HA
	// network, binding index 1 of another router, seq 1 of another project,
	// 10.0.0.5 in another subnet.
	write(t, db, func(tx *store.Tx) error {
		s2 := newSubnet(other.ID, "10.0.0.0/24")
		return errors.Join(tx.InsertHANetwork(store.HANetwork{NetworkID: other.ID, ProjectID: "p2", Seq: 1}),
			tx.InsertVRID(store.VRIDAllocation{NetworkID: other.ID, VRID: 7, RouterID: r2.ID}),
			tx.InsertBinding(store.Binding{RouterID: r2.ID, AgentID: a1.ID, BindingIndex: 1, HAState: "standby"}),
			tx.InsertSubnet(s2), tx.InsertPort(newPort(other.ID, "fa:16:3e:00:00:01", store.FixedIP{SubnetID: s2.ID, IPAddress: "10.0.0.5"})))
	})
	if db.Revision() != rev+1 {
		t.Errorf("revision %d after failed writes and one good one, want %d", db.Revision(), rev+1)
	}

	// Other errors are not unique violations.
	_, err = db.Write(ctxT(t), func(tx *store.Tx) error {
		return tx.InsertVRID(store.VRIDAllocation{NetworkID: n.ID, VRID: 255, RouterID: id()})
	})
	if err == nil || store.IsUniqueViolation(err) {
		t.Errorf("VRID 255 (check/foreign key violation): err %v, IsUniqueViolation %v", err, store.IsUniqueViolation(err))
	}
	for _, e := range []error{nil, store.ErrNotFound, errors.New("unique constraint failed"), sql.ErrNoRows} {
		if store.IsUniqueViolation(e) {
			t.Errorf("IsUniqueViolation(%v) = true", e)
		}
	}
	// None of the failed writes left anything behind.
	after, err := db.Dump(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"networks", "agents", "routers"} {
		if !reflect.DeepEqual(before[table], after[table]) {
			t.Errorf("table %s changed by failed writes:\nbefore %v\nafter  %v", table, before[table], after[table])
		}
	}
}

// ---- revisions

func testWriteBumpsRevision(t *testing.T, _, url string) {
	db := open(t, url)
	rev0 := db.Revision()
	// Nothing committed yet: a wait for a newer revision times out.
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	got, err := db.WaitRevision(short, rev0)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || got != rev0 {
		t.Fatalf("WaitRevision with nothing new = %d, %v", got, err)
	}

	woke := make(chan int64, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r, err := db.WaitRevision(ctx, rev0)
		if err != nil {
			r = -1
		}
		woke <- r
	}()
	var inTx int64
	rev := write(t, db, func(tx *store.Tx) error {
		inTx = tx.Revision
		return tx.InsertNetwork(newNetwork(nil))
	})
	if rev != rev0+1 || inTx != rev {
		t.Fatalf("Write returned revision %d (tx.Revision %d), want %d", rev, inTx, rev0+1)
	}
	if db.Revision() != rev {
		t.Fatalf("Revision() = %d after write, want %d", db.Revision(), rev)
	}
	select {
	case r := <-woke:
		if r != rev {
			t.Fatalf("waiter woke with revision %d, want %d", r, rev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitRevision did not wake after a write")
	}
	if m := metaRevision(t, db); !strings.Contains(m, fmt.Sprintf("revision=%d;", rev)) {
		t.Fatalf("meta row %q, want revision %d", m, rev)
	}
	// Already past: returns at once.
	if r, err := db.WaitRevision(context.Background(), rev0); err != nil || r != rev {
		t.Fatalf("WaitRevision(past) = %d, %v", r, err)
	}
	// Every write bumps by exactly one, even with no changes.
	for i := int64(1); i <= 3; i++ {
		if r := write(t, db, func(*store.Tx) error { return nil }); r != rev+i {
			t.Fatalf("write %d committed revision %d, want %d", i, r, rev+i)
		}
	}
}

func testWriteQuiet(t *testing.T, _, url string) {
	db := open(t, url)
	a := newAgent("net1")
	rev := write(t, db, func(tx *store.Tx) error { return tx.InsertAgent(a) })
	meta := metaRevision(t, db)

	woke := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	go func() {
		_, err := db.WaitRevision(ctx, rev)
		woke <- err
	}()
	err := db.WriteQuiet(ctxT(t), func(tx *store.Tx) error {
		if tx.Revision != 0 {
			return fmt.Errorf("quiet write has tx.Revision %d", tx.Revision)
		}
		a.HeartbeatAt = tx.Now
		return tx.UpdateAgent(a)
	})
	if err != nil {
		t.Fatal(err)
	}
	if db.Revision() != rev || metaRevision(t, db) != meta {
		t.Fatalf("quiet write moved the revision: %d (meta %s), want %d (meta %s)", db.Revision(), metaRevision(t, db), rev, meta)
	}
	if err := <-woke; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a waiter woke after a quiet write: %v", err)
	}
	read(t, db, func(tx *store.Tx) error {
		got, err := tx.GetAgent(a.ID)
		if err != nil {
			return err
		}
		if !sameTime(got.HeartbeatAt, a.HeartbeatAt) {
			t.Errorf("quiet write not committed: heartbeat %v, want %v", got.HeartbeatAt, a.HeartbeatAt)
		}
		return nil
	})
	// A failing quiet write rolls back too.
	boom := errors.New("boom")
	err = db.WriteQuiet(ctxT(t), func(tx *store.Tx) error {
		if err := tx.InsertAgent(newAgent("net2")); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("failing quiet write returned %v", err)
	}
	read(t, db, func(tx *store.Tx) error {
		if as, _ := tx.ListAgents(nil); len(as) != 1 {
			t.Errorf("%d agents after a rolled-back quiet write, want 1", len(as))
		}
		return nil
	})
}

func testFailedWriteRollsBack(t *testing.T, _, url string) {
	db := open(t, url)
	n := newNetwork(ptr(30))
	s := newSubnet(n.ID, "10.0.0.0/24")
	write(t, db, func(tx *store.Tx) error {
		return errors.Join(tx.InsertNetwork(n), tx.InsertSubnet(s),
			tx.InsertPort(newPort(n.ID, "fa:16:3e:00:00:01", store.FixedIP{SubnetID: s.ID, IPAddress: "10.0.0.5"})))
	})
	before, err := db.Dump(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	rev := db.Revision()
	waitCtx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	woke := make(chan error, 1)
	go func() {
		_, err := db.WaitRevision(waitCtx, rev)
		woke <- err
	}()

	// fn's own error after many changes.
	boom := errors.New("boom")
	_, err = db.Write(ctxT(t), func(tx *store.Tx) error {
		r := newRouter("p1")
		a := newAgent("net1")
		n.Name = "changed"
		if err := errors.Join(tx.InsertRouter(r), tx.InsertAgent(a), tx.UpdateNetwork(n),
			tx.InsertBinding(store.Binding{RouterID: r.ID, AgentID: a.ID, BindingIndex: 1, HAState: "standby"}),
			tx.InsertVRID(store.VRIDAllocation{NetworkID: n.ID, VRID: 1, RouterID: r.ID}),
			tx.InsertPort(newPort(n.ID, "fa:16:3e:00:00:02", store.FixedIP{SubnetID: s.ID, IPAddress: "10.0.0.6"})),
			tx.DeleteSubnet(id())); err != nil {
			return err
		}
		return fmt.Errorf("late failure: %w", boom)
	})
	if !errors.Is(err, boom) {
		t.Fatalf("failing write returned %v, want boom", err)
	}
	// A constraint failure after other changes.
	_, err = db.Write(ctxT(t), func(tx *store.Tx) error {
		if err := tx.InsertRouter(newRouter("p1")); err != nil {
			return err
		}
		return tx.InsertPort(newPort(n.ID, "fa:16:3e:00:00:03", store.FixedIP{SubnetID: s.ID, IPAddress: "10.0.0.5"}))
	})
	if !store.IsUniqueViolation(err) {
		t.Fatalf("conflicting write returned %v, want a unique violation", err)
	}
	after, err := db.Dump(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("failed writes changed the database:\nbefore %v\nafter  %v", before, after)
	}
	if db.Revision() != rev {
		t.Fatalf("failed writes moved the revision from %d to %d", rev, db.Revision())
	}
	if err := <-woke; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a waiter woke after failed writes: %v", err)
	}
	// The database is still writable.
	if r := write(t, db, func(tx *store.Tx) error { return tx.InsertRouter(newRouter("p1")) }); r != rev+1 {
		t.Fatalf("next write committed %d, want %d", r, rev+1)
	}
}

// testNotifyAcrossHandles: two servers on one PostgreSQL database; a write
// through one wakes waiters on the other through LISTEN/NOTIFY.
func testNotifyAcrossHandles(t *testing.T, backend, url string) {
	if backend != "postgres" {
		t.Skip("LISTEN/NOTIFY is PostgreSQL's; SQLite has one server per database")
	}
	a, b := open(t, url), open(t, url)
	for i := range 5 {
		rev := b.Revision()
		type result struct {
			rev int64
			at  time.Time
			err error
		}
		woke := make(chan result, 1)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		go func() {
			r, err := b.WaitRevision(ctx, rev)
			woke <- result{r, time.Now(), err}
		}()
		start := time.Now()
		wrote := write(t, a, func(tx *store.Tx) error { return tx.InsertAgent(newAgent(fmt.Sprintf("host%d", i))) })
		committed := time.Now()
		res := <-woke
		cancel()
		if res.err != nil {
			t.Fatalf("round %d: B did not see A's write (revision %d): %v", i, wrote, res.err)
		}
		if res.rev < wrote {
			t.Fatalf("round %d: B woke at revision %d, A committed %d", i, res.rev, wrote)
		}
		lat := res.at.Sub(committed)
		if lat > time.Second {
			t.Fatalf("round %d: B woke %v after A's commit, want under 1s", i, lat)
		}
		t.Logf("round %d: write %v, B woke %v after commit", i, committed.Sub(start), max(lat, 0))
		// B reads what A wrote.
		read(t, b, func(tx *store.Tx) error {
			as, err := tx.ListAgents(nil)
			if err != nil {
				return err
			}
			if len(as) != i+1 {
				return fmt.Errorf("B sees %d agents, want %d", len(as), i+1)
			}
			return nil
		})
	}
	// And the other way round.
	rev := a.Revision()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := a.WaitRevision(ctx, rev); done <- err }()
	write(t, b, func(*store.Tx) error { return nil })
	if err := <-done; err != nil {
		t.Fatalf("A did not see B's write within 1s: %v", err)
	}
}
