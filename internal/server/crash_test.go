package server_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/servertest"
	"github.com/l3ha/l3ha/internal/store"
)

// TestServerKilledMidTransactionLeavesNothingHalfMade (issue 13's fault
// table): the server, a process of its own, is SIGKILLed while 40 HA router
// creates are in flight (each one transaction: router, HA network on the
// first, HA ports, bindings, VRID). Started again on the same database:
// the database passes its integrity check, every create the client saw
// succeed is there, and every HA router there is complete (its VRID, two
// bindings, two HA ports); no HA port belongs to a router that is not.
func TestServerKilledMidTransactionLeavesNothingHalfMade(t *testing.T) {
	for _, backend := range servertest.Backends(t) {
		t.Run(backend, func(t *testing.T) {
			db := servertest.DatabaseURL(t, backend)
			p := servertest.StartProcess(t, db)
			inst := &servertest.Instance{URL: p.URL}
			fsHeartbeat(t, inst, "net1")
			fsHeartbeat(t, inst, "net2")

			var created sync.Map // router id → name, as the client saw 201
			var done atomic.Int32
			var wg sync.WaitGroup
			for i := range 40 {
				wg.Go(func() {
					var out struct{ Router map[string]any }
					err := call(p.URL, "POST", "/v2.0/routers", map[string]any{"router": map[string]any{"name": fmt.Sprintf("crash-%d", i), "ha": true}}, &out)
					if err == nil {
						created.Store(out.Router["id"], out.Router["name"])
						done.Add(1)
					}
				})
			}
			// Kill once some went through and others are surely in flight.
			deadline := time.Now().Add(60 * time.Second)
			for done.Load() < 5 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			p.Kill()
			wg.Wait()
			t.Logf("%d of 40 creates answered 201 before the kill", done.Load())

			p = servertest.StartProcess(t, db)
			d, err := store.Open(t.Context(), db, servertest.Logger(t))
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if err := d.CheckIntegrity(t.Context()); err != nil {
				t.Fatal(err)
			}
			var routers struct{ Routers []map[string]any }
			if err := call(p.URL, "GET", "/v2.0/routers", nil, &routers); err != nil {
				t.Fatal(err)
			}
			exists := map[any]bool{}
			for _, r := range routers.Routers {
				exists[r["id"]] = true
				id := r["id"].(string)
				var agents struct{ Agents []map[string]any }
				if err := call(p.URL, "GET", "/v2.0/routers/"+id+"/l3-agents", nil, &agents); err != nil {
					t.Fatal(err)
				}
				var ports struct{ Ports []map[string]any }
				if err := call(p.URL, "GET", "/v2.0/ports?device_owner=network:router_ha_interface&device_id="+id, nil, &ports); err != nil {
					t.Fatal(err)
				}
				if r["ha"] != true || r["status"] != "ACTIVE" || len(agents.Agents) != 2 || len(ports.Ports) != 2 {
					t.Errorf("router %s (%v) after the crash: ha %v, status %v, %d agents, %d HA ports; want a complete HA router", id, r["name"], r["ha"], r["status"], len(agents.Agents), len(ports.Ports))
				}
			}
			created.Range(func(id, name any) bool {
				if !exists[id] {
					t.Errorf("router %v (%v) was created (201) but is gone after the crash", name, id)
				}
				return true
			})
			var haPorts struct{ Ports []map[string]any }
			if err := call(p.URL, "GET", "/v2.0/ports?device_owner=network:router_ha_interface", nil, &haPorts); err != nil {
				t.Fatal(err)
			}
			for _, port := range haPorts.Ports {
				if !exists[port["device_id"]] {
					t.Errorf("HA port %v of router %v, which does not exist", port["id"], port["device_id"])
				}
			}
			// The restarted server works: a create succeeds.
			if err := call(p.URL, "POST", "/v2.0/routers", map[string]any{"router": map[string]any{"name": "after", "ha": true}}, nil); err != nil {
				t.Errorf("create after the restart: %v", err)
			}
			t.Logf("after the restart: %d routers, all complete; %d HA ports", len(routers.Routers), len(haPorts.Ports))
		})
	}
}
