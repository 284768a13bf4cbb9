package server_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/l3ha/l3ha/internal/servertest"
)

// TestRoutersPerHANetworkBoundsTheFloodDomain: with
// l3_ha_routers_per_network 2, a project's third HA router starts a second
// HA network (and its fifth a third), each with its own VXLAN id, so that
// no more than two routers' VRRP adverts share one network; every router
// has a VRID and both agents are told the same one.
func TestRoutersPerHANetworkBoundsTheFloodDomain(t *testing.T) {
	c := newHACloud(t, servertest.Options{MaxAgents: servertest.Int(2), RoutersPerNetwork: 2})
	c.startAgents("net1", "net2")
	admin := c.admin()
	var ids []string
	for i := range 5 {
		ids = append(ids, admin.mustDo("POST", "/v2.0/routers", haBody("router", haObj{"name": fmt.Sprintf("r%d", i), "ha": true, "tenant_id": "p"}), http.StatusCreated).obj("router").str("id"))
	}
	specs1, specs2 := c.routerSpecs("net1"), c.routerSpecs("net2")
	perNetwork := map[string]int{}
	for _, id := range ids {
		s1, s2 := specs1[id], specs2[id]
		if s1 == nil || s2 == nil || s1.HAPort == nil || s2.HAPort == nil || s1.VRID != s2.VRID || s1.HAPort.NetworkID != s2.HAPort.NetworkID {
			t.Fatalf("router %s: %+v / %+v", id, s1, s2)
		}
		perNetwork[s1.HAPort.NetworkID]++
	}
	if len(perNetwork) != 3 {
		t.Errorf("routers per HA network %v, want 3 networks of at most 2", perNetwork)
	}
	vnis := map[float64]bool{}
	for _, net := range admin.list("/v2.0/networks") {
		if strings.HasPrefix(net.str("name"), "HA network tenant p") {
			if n := perNetwork[net.str("id")]; n < 1 || n > 2 {
				t.Errorf("HA network %s carries %d routers", net.str("name"), n)
			}
			vni, _ := net["provider:segmentation_id"].(float64)
			if vnis[vni] {
				t.Errorf("HA networks share VXLAN id %v", vni)
			}
			vnis[vni] = true
		}
	}
	if len(vnis) != 3 {
		t.Errorf("%d HA networks of project p listed, want 3", len(vnis))
	}
}
