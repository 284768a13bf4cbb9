package server_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/servertest"
)

// TestHARouterHasExactlyOneActiveAgent is the control plane end to end: two
// real agent loops (fake data plane) register, an admin creates an HA
// router, and the API shows one active and one standby binding.
func TestHARouterHasExactlyOneActiveAgent(t *testing.T) {
	for _, backend := range servertest.Backends(t) {
		t.Run(backend, func(t *testing.T) {
			srv := servertest.Start(t, servertest.Options{Backend: backend})
			srv.StartFakeAgent(t, "net1")
			srv.StartFakeAgent(t, "net2")
			servertest.Eventually(t, 10*time.Second, func() error {
				var out struct{ Agents []map[string]any }
				if err := call(srv.URL, "GET", "/v2.0/agents", nil, &out); err != nil {
					return err
				}
				if len(out.Agents) != 2 {
					return fmt.Errorf("%d agents registered", len(out.Agents))
				}
				return nil
			})
			var created struct{ Router map[string]any }
			if err := call(srv.URL, "POST", "/v2.0/routers", map[string]any{"router": map[string]any{"name": "r1", "ha": true, "tenant_id": "demo"}}, &created); err != nil {
				t.Fatal(err)
			}
			id := created.Router["id"].(string)
			servertest.Eventually(t, 10*time.Second, func() error {
				var out struct{ Agents []map[string]any }
				if err := call(srv.URL, "GET", "/v2.0/routers/"+id+"/l3-agents", nil, &out); err != nil {
					return err
				}
				states := map[string]int{}
				for _, a := range out.Agents {
					states[fmt.Sprint(a["ha_state"])]++
				}
				if len(out.Agents) != 2 || states["active"] != 1 || states["standby"] != 1 {
					return fmt.Errorf("ha states %v", states)
				}
				return nil
			})
		})
	}
}

func call(base, method, path string, body, out any) error {
	return servertest.Call(base, method, path, body, out)
}
