package neutronagent

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// A sync_routers answer with one good HA router and two bad ones: the bad
// ones are reported by id, the good one is translated whole.
func TestSyncRoutersAnswerBadRoutersAreSkippedAlone(t *testing.T) {
	raw, err := os.ReadFile("testdata/sync_routers_ha.json")
	if err != nil {
		t.Fatal(err)
	}
	ok, bad, err := decodeRouters(raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(ok) != 1 {
		t.Fatalf("translated %d routers, want 1; bad %v", len(ok), bad)
	}
	for _, id := range []string{"22222222-2222-4222-8222-222222222222", "33333333-3333-4333-8333-333333333333", "#3"} {
		if bad[id] == nil {
			t.Errorf("router %s not reported bad (bad: %v)", id, bad)
		}
	}
	r := ok[0]
	s := r.Spec
	if s.ID != "11111111-1111-4111-8111-111111111111" || !s.HA || s.VRID != 7 || !s.AdminStateUp || s.ProjectID != "demo-project" {
		t.Errorf("router %+v", s)
	}
	if !r.HAPortActive || s.HAPort == nil || s.HAPort.FixedIPs[0].CIDR != "169.254.192.0/18" || s.HAPort.FixedIPs[0].IPAddress != "169.254.192.5" {
		t.Errorf("HA port %+v (active %v)", s.HAPort, r.HAPortActive)
	}
	if s.Gateway == nil || s.Gateway.FixedIPs[0].GatewayIP != "172.24.4.1" || s.Gateway.FixedIPs[0].CIDR != "172.24.4.0/24" || !s.EnableSNAT {
		t.Errorf("gateway %+v snat %v", s.Gateway, s.EnableSNAT)
	}
	if len(s.Interfaces) != 1 || s.Interfaces[0].FixedIPs[0].IPAddress != "10.0.0.1" || s.Interfaces[0].MTU != 1450 {
		t.Errorf("interfaces %+v", s.Interfaces)
	}
	if len(s.FloatingIPs) != 1 || s.FloatingIPs[0].FixedIPAddress != "10.0.0.5" || r.FloatingIPs[s.FloatingIPs[0].ID] != "DOWN" {
		t.Errorf("floating IPs %+v %v", s.FloatingIPs, r.FloatingIPs)
	}
	if len(s.Routes) != 1 || s.Routes[0].NextHop != "10.0.0.254" {
		t.Errorf("routes %+v", s.Routes)
	}
}

func TestSyncRoutersAnswerThatIsNotAListIsAnError(t *testing.T) {
	for _, raw := range []string{`{"id": "x"}`, `null x`, `"routers"`} {
		if _, _, err := decodeRouters(json.RawMessage(raw)); err == nil || !strings.Contains(err.Error(), "not a list") {
			t.Errorf("%s: err = %v", raw, err)
		}
	}
}
