package server_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/servertest"
)

// TestNewMasterReportSupersedesOldActiveClaim: when a backup becomes
// master (the old master's node died but its agent is not yet declared
// dead), the API shows exactly one active binding — the new master — at
// once, not two until agent_down_time passes.
func TestNewMasterReportSupersedesOldActiveClaim(t *testing.T) {
	srv := servertest.Start(t, servertest.Options{})
	a1 := srv.StartFakeAgent(t, "net1")
	a2 := srv.StartFakeAgent(t, "net2")
	var created struct{ Router map[string]any }
	servertest.Eventually(t, 10*time.Second, func() error {
		return call(srv.URL, "POST", "/v2.0/routers", map[string]any{"router": map[string]any{"name": "r", "ha": true}}, &created)
	})
	id := created.Router["id"].(string)
	states := func() (map[string]string, error) {
		var out struct{ Agents []map[string]any }
		if err := call(srv.URL, "GET", "/v2.0/routers/"+id+"/l3-agents", nil, &out); err != nil {
			return nil, err
		}
		m := map[string]string{}
		for _, a := range out.Agents {
			m[a["host"].(string)] = fmt.Sprint(a["ha_state"])
		}
		return m, nil
	}
	var master, backup *servertest.FakeAgent
	servertest.Eventually(t, 10*time.Second, func() error {
		m, err := states()
		if err != nil {
			return err
		}
		switch {
		case m["net1"] == "active" && m["net2"] == "standby":
			master, backup = a1, a2
		case m["net2"] == "active" && m["net1"] == "standby":
			master, backup = a2, a1
		default:
			return fmt.Errorf("states %v", m)
		}
		return nil
	})
	// The old master's agent goes silent without resigning (its node died);
	// it is still within agent_down_time.
	master.Stop()
	if err := backup.Dataplane.SetState(id, "active"); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 5*time.Second, func() error {
		m, err := states()
		if err != nil {
			return err
		}
		if m[backup.Host] != "active" || m[master.Host] != "standby" {
			return fmt.Errorf("states %v, want only %s active", m, backup.Host)
		}
		return nil
	})
}
