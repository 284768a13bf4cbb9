package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
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
	var buf bytes.Buffer
	if body != nil {
		if err := json.NewEncoder(&buf).Encode(body); err != nil {
			return err
		}
	}
	req, err := http.NewRequest(method, base+path, &buf)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return fmt.Errorf("%s %s: %d %v", method, path, resp.StatusCode, e)
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}
