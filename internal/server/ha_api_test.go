package server_test

// HA-semantics acceptance tests: what an operator and a tenant observe of
// Neutron's Layer-3 High Availability through the API (raw HTTP here; the
// gophercloud client in gophercloud_test.go), and what agents are told
// through the agent endpoint (VRIDs, HA ports), which Neutron's API does not
// expose. Every test runs on every database backend of servertest.Backends.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/agentapi"
	"github.com/l3ha/l3ha/internal/servertest"
)

const (
	haNetCIDR       = "169.254.192.0/18"
	haOwnerHAPort   = "network:router_ha_interface"
	haOwnerLegacyIf = "network:router_interface"
	haOwnerHAIf     = "network:ha_router_replicated_interface"
	haOwnerGateway  = "network:router_gateway"
	// haWait bounds every wait for the control plane to converge: generous,
	// so that a loaded 2-core machine running -race does not flake.
	haWait = 20 * time.Second
)

// ---------------------------------------------------------------------------
// HA router creation: flag, HA network, HA subnet, HA ports, VRID.

// TestAdminCreatesHARouterWithHANetworkPortsAndVRID: an admin's HA router for
// a tenant gets the tenant's HA network and subnet (owned by no project,
// visible to admins only), one HA port per hosting agent on it, and a VRID
// in 1..254 that every hosting agent is told.
func TestAdminCreatesHARouterWithHANetworkPortsAndVRID(t *testing.T) {
	for _, backend := range servertest.Backends(t) {
		t.Run(backend, func(t *testing.T) {
			c := newHACloud(t, servertest.Options{Backend: backend})
			c.startAgents("net1", "net2")
			admin, demo := c.admin(), c.tenant("demo")

			router := admin.mustDo("POST", "/v2.0/routers", haBody("router", haObj{"name": "ha-router", "ha": true, "tenant_id": "demo"}), http.StatusCreated).obj("router")
			if router["ha"] != true || router["distributed"] != false || router.str("project_id") != "demo" || router.str("tenant_id") != "demo" {
				t.Fatalf("created router = %v; want ha true, distributed false, project demo", router)
			}
			rid := router.str("id")
			if got := admin.mustDo("GET", "/v2.0/routers/"+rid, nil, http.StatusOK).obj("router"); got["ha"] != true {
				t.Fatalf("admin GET router: ha = %v, want true", got["ha"])
			}

			// The project's HA network and subnet, owned by no project.
			haNet := c.haNetworkOf("demo")
			if haNet == nil {
				t.Fatal(`no network named "HA network tenant demo"`)
			}
			if haNet.str("project_id") != "" || haNet.str("tenant_id") != "" || haNet["shared"] != false || haNet["router:external"] != false {
				t.Errorf("HA network = %v; want project_id and tenant_id \"\", not shared, not external", haNet)
			}
			subnetIDs := haNet.strs("subnets")
			if len(subnetIDs) != 1 {
				t.Fatalf("HA network has subnets %v, want exactly one", subnetIDs)
			}
			haSub := admin.mustDo("GET", "/v2.0/subnets/"+subnetIDs[0], nil, http.StatusOK).obj("subnet")
			if haSub.str("name") != "HA subnet tenant demo" || haSub.str("cidr") != haNetCIDR || haSub["enable_dhcp"] != false ||
				haSub["gateway_ip"] != nil || haSub.str("project_id") != "" {
				t.Errorf("HA subnet = %v; want name \"HA subnet tenant demo\", cidr %s, no DHCP, no gateway, project \"\"", haSub, haNetCIDR)
			}

			// One HA port per hosting agent.
			hosts := c.hostsOf(rid)
			if len(hosts) != 2 {
				t.Fatalf("router hosted on %v, want both agents", hosts)
			}
			haPorts := c.haPortsOf(rid)
			var portHosts []string
			seenIP := map[string]bool{}
			for _, p := range haPorts {
				portHosts = append(portHosts, p.str("binding:host_id"))
				if p.str("device_owner") != haOwnerHAPort || p.str("name") != "HA port tenant demo" || p.str("project_id") != "" || p.str("network_id") != haNet.str("id") {
					t.Errorf("HA port = %v; want owner %s, name \"HA port tenant demo\", project \"\", on network %s", p, haOwnerHAPort, haNet.str("id"))
				}
				ip, sub := p.fixedIP()
				if !haInCIDR(ip, haNetCIDR) || sub != haSub.str("id") {
					t.Errorf("HA port %s has address %s on subnet %s; want one in %s on the HA subnet", p.str("id"), ip, sub, haNetCIDR)
				}
				if seenIP[ip] {
					t.Errorf("two HA ports share address %s", ip)
				}
				seenIP[ip] = true
			}
			sort.Strings(portHosts)
			if !slices.Equal(portHosts, hosts) {
				t.Errorf("HA ports bound to hosts %v, want one per hosting agent %v", portHosts, hosts)
			}

			// Every hosting agent is told the same VRID and its own HA port.
			vrid := 0
			for _, host := range hosts {
				spec := c.routerSpec(host, rid)
				if spec == nil {
					t.Fatalf("agent %s is not told to run router %s", host, rid)
				}
				if spec.VRID < 1 || spec.VRID > 254 {
					t.Errorf("agent %s: VRID %d, want 1..254", host, spec.VRID)
				}
				if vrid != 0 && spec.VRID != vrid {
					t.Errorf("agents disagree on the VRID: %d and %d", vrid, spec.VRID)
				}
				vrid = spec.VRID
				if spec.HAPort == nil || spec.HAPort.NetworkID != haNet.str("id") {
					t.Errorf("agent %s: HA port %+v, want one on the HA network", host, spec.HAPort)
				} else if p := haPortOnHost(haPorts, host); p == nil || p.str("id") != spec.HAPort.ID {
					t.Errorf("agent %s is told HA port %s, but the API binds %v to it", host, spec.HAPort.ID, p)
				}
			}

			// The tenant sees none of it.
			for _, n := range demo.list("/v2.0/networks") {
				if strings.HasPrefix(n.str("name"), "HA network") {
					t.Errorf("tenant lists the HA network %v", n)
				}
			}
			for _, s := range demo.list("/v2.0/subnets") {
				if strings.HasPrefix(s.str("name"), "HA subnet") {
					t.Errorf("tenant lists the HA subnet %v", s)
				}
			}
			if ps := demo.list("/v2.0/ports?device_owner=" + url.QueryEscape(haOwnerHAPort)); len(ps) != 0 {
				t.Errorf("tenant lists HA ports %v", ps)
			}
			demo.mustDo("GET", "/v2.0/networks/"+haNet.str("id"), nil, http.StatusNotFound)
			demo.mustDo("GET", "/v2.0/subnets/"+haSub.str("id"), nil, http.StatusNotFound)
			demo.mustDo("GET", "/v2.0/ports/"+haPorts[0].str("id"), nil, http.StatusNotFound)
		})
	}
}

// TestL3HADefaultDecidesWhenHAIsOmitted: l3_ha=true makes routers created
// without `ha` HA routers (also a tenant's, who may not send `ha`);
// l3_ha=false makes them legacy; an admin's explicit value always wins.
func TestL3HADefaultDecidesWhenHAIsOmitted(t *testing.T) {
	cases := []struct {
		name      string
		defaultHA bool
		tenant    bool  // created by the tenant rather than by an admin for it
		ha        *bool // the request's ha; nil: omitted
		wantHA    bool
	}{
		{name: "l3_ha true, ha omitted", defaultHA: true, wantHA: true},
		{name: "l3_ha true, ha omitted by tenant", defaultHA: true, tenant: true, wantHA: true},
		{name: "l3_ha false, ha omitted", defaultHA: false, wantHA: false},
		{name: "l3_ha false, ha omitted by tenant", defaultHA: false, tenant: true, wantHA: false},
		{name: "l3_ha true, admin sends ha false", defaultHA: true, ha: haBool(false), wantHA: false},
		{name: "l3_ha false, admin sends ha true", defaultHA: false, ha: haBool(true), wantHA: true},
	}
	for _, backend := range servertest.Backends(t) {
		t.Run(backend, func(t *testing.T) {
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					c := newHACloud(t, servertest.Options{Backend: backend, DefaultHA: tc.defaultHA})
					c.startAgents("net1", "net2")
					body := haObj{"name": "r"}
					creator := c.tenant("demo")
					if !tc.tenant {
						creator = c.admin()
						body["tenant_id"] = "demo"
					}
					if tc.ha != nil {
						body["ha"] = *tc.ha
					}
					created := creator.mustDo("POST", "/v2.0/routers", haBody("router", body), http.StatusCreated).obj("router")
					if tc.tenant && (created.has("ha") || created.has("distributed")) {
						t.Errorf("tenant's create response shows ha/distributed: %v", created)
					}
					rid := created.str("id")
					if got := c.admin().mustDo("GET", "/v2.0/routers/"+rid, nil, http.StatusOK).obj("router")["ha"]; got != tc.wantHA {
						t.Fatalf("ha = %v, want %v", got, tc.wantHA)
					}
					if hasNet := c.haNetworkOf("demo") != nil; hasNet != tc.wantHA {
						t.Errorf("project has an HA network: %v, want %v", hasNet, tc.wantHA)
					}
					wantBindings := 1
					if tc.wantHA {
						wantBindings = 2
					}
					if hosts := c.hostsOf(rid); len(hosts) != wantBindings {
						t.Errorf("router hosted on %v, want %d agents", hosts, wantBindings)
					}
					spec := c.routerSpec(c.hostsOf(rid)[0], rid)
					if gotVRID := spec.VRID != 0; gotVRID != tc.wantHA || (spec.HAPort != nil) != tc.wantHA {
						t.Errorf("agent is told VRID %d and HA port %v; want both iff HA", spec.VRID, spec.HAPort)
					}
				})
			}
		})
	}
}

// TestTenantSettingHAIsForbiddenAndNeverSeesHA: `ha` and `distributed` are
// admin-only to set (403 PolicyNotAuthorized, even for false, even on a
// router of one's own) and to see (the keys are absent from every tenant
// view); a forbidden request changes nothing.
func TestTenantSettingHAIsForbiddenAndNeverSeesHA(t *testing.T) {
	for _, backend := range servertest.Backends(t) {
		t.Run(backend, func(t *testing.T) {
			c := newHACloud(t, servertest.Options{Backend: backend})
			c.startAgents("net1", "net2")
			admin, demo := c.admin(), c.tenant("demo")
			rid := admin.mustDo("POST", "/v2.0/routers", haBody("router", haObj{"name": "ha-router", "ha": true, "tenant_id": "demo"}), http.StatusCreated).obj("router").str("id")

			forbidden := []struct {
				name, method, path string
				body               haObj
				message            string
			}{
				{"create with ha true", "POST", "/v2.0/routers", haObj{"name": "t", "ha": true}, "(rule:create_router and rule:create_router:ha) is disallowed by policy"},
				{"create with ha false", "POST", "/v2.0/routers", haObj{"name": "t", "ha": false}, "(rule:create_router and rule:create_router:ha) is disallowed by policy"},
				{"create with distributed false", "POST", "/v2.0/routers", haObj{"name": "t", "distributed": false}, "(rule:create_router and rule:create_router:distributed) is disallowed by policy"},
				{"update ha to false", "PUT", "/v2.0/routers/" + rid, haObj{"ha": false}, "(rule:update_router and rule:update_router:ha) is disallowed by policy"},
				{"update ha to its current value", "PUT", "/v2.0/routers/" + rid, haObj{"ha": true}, "(rule:update_router and rule:update_router:ha) is disallowed by policy"},
				{"update ha with admin_state_up false", "PUT", "/v2.0/routers/" + rid, haObj{"ha": false, "admin_state_up": false}, "(rule:update_router and rule:update_router:ha) is disallowed by policy"},
				{"update distributed", "PUT", "/v2.0/routers/" + rid, haObj{"distributed": true}, "(rule:update_router and rule:update_router:distributed) is disallowed by policy"},
			}
			routersBefore := len(admin.list("/v2.0/routers"))
			for _, f := range forbidden {
				t.Run(f.name, func(t *testing.T) {
					r := demo.on(t).do(f.method, f.path, haBody("router", f.body))
					r.wantError(t, http.StatusForbidden, "PolicyNotAuthorized", f.message)
				})
			}
			if n := len(admin.list("/v2.0/routers")); n != routersBefore {
				t.Errorf("forbidden requests changed the number of routers from %d to %d", routersBefore, n)
			}
			after := admin.mustDo("GET", "/v2.0/routers/"+rid, nil, http.StatusOK).obj("router")
			if after["ha"] != true || after["admin_state_up"] != true || after["distributed"] != false {
				t.Errorf("forbidden updates changed the router: %v", after)
			}

			// No tenant view shows the keys.
			own := demo.mustDo("POST", "/v2.0/routers", haBody("router", haObj{"name": "own"}), http.StatusCreated).obj("router")
			views := map[string]haObj{
				"create response": own,
				"GET":             demo.mustDo("GET", "/v2.0/routers/"+rid, nil, http.StatusOK).obj("router"),
				"GET ?fields=ha":  demo.mustDo("GET", "/v2.0/routers/"+rid+"?fields=ha&fields=distributed&fields=id", nil, http.StatusOK).obj("router"),
				"PUT response":    demo.mustDo("PUT", "/v2.0/routers/"+rid, haBody("router", haObj{"name": "renamed"}), http.StatusOK).obj("router"),
			}
			for i, r := range demo.list("/v2.0/routers") {
				views[fmt.Sprintf("list item %d", i)] = r
			}
			for what, v := range views {
				if v.has("ha") || v.has("distributed") {
					t.Errorf("tenant %s shows ha/distributed: %v", what, v)
				}
			}
			if got := demo.list("/v2.0/routers?ha=true"); len(got) != 0 {
				t.Errorf("tenant filtering on ha finds %v; the attribute is hidden from tenants", got)
			}
			// The tenant may not see the agents either.
			demo.do("GET", "/v2.0/routers/"+rid+"/l3-agents", nil).wantError(t, http.StatusForbidden, "PolicyNotAuthorized", "rule:get_l3-agents is disallowed by policy")
		})
	}
}

// ---------------------------------------------------------------------------
// HA networks and VRIDs per project.

// TestEachProjectHasItsOwnHANetworkAndVRIDSpace: routers of different
// projects live on different HA networks (each on the same l3_ha_net_cidr),
// so VRIDs are allocated per project: unique within one, independent across.
func TestEachProjectHasItsOwnHANetworkAndVRIDSpace(t *testing.T) {
	for _, backend := range servertest.Backends(t) {
		t.Run(backend, func(t *testing.T) {
			c := newHACloud(t, servertest.Options{Backend: backend})
			c.startAgents("net1", "net2")
			admin := c.admin()
			projects := []string{"project-a", "project-b"}
			routersOf := map[string][]string{}
			for i := range 3 {
				for _, p := range projects {
					r := admin.mustDo("POST", "/v2.0/routers", haBody("router", haObj{"name": fmt.Sprintf("r%d", i), "ha": true, "tenant_id": p}), http.StatusCreated).obj("router")
					routersOf[p] = append(routersOf[p], r.str("id"))
				}
			}
			specs := c.routerSpecs("net1")
			netOf := map[string]string{}
			for _, p := range projects {
				haNet := c.haNetworkOf(p)
				if haNet == nil {
					t.Fatalf("project %s has no HA network", p)
				}
				netOf[p] = haNet.str("id")
				sub := admin.mustDo("GET", "/v2.0/subnets/"+haNet.strs("subnets")[0], nil, http.StatusOK).obj("subnet")
				if sub.str("cidr") != haNetCIDR || sub.str("name") != "HA subnet tenant "+p {
					t.Errorf("project %s: HA subnet %v, want %q on %s", p, sub, "HA subnet tenant "+p, haNetCIDR)
				}
				vrids := map[int]string{}
				for _, rid := range routersOf[p] {
					s := specs[rid]
					if s == nil || s.HAPort == nil {
						t.Fatalf("net1 runs no HA router %s: %+v", rid, s)
					}
					if s.HAPort.NetworkID != netOf[p] {
						t.Errorf("router %s of %s has its HA port on network %s, not on its project's HA network %s", rid, p, s.HAPort.NetworkID, netOf[p])
					}
					if other, dup := vrids[s.VRID]; dup {
						t.Errorf("routers %s and %s of project %s share VRID %d", other, rid, p, s.VRID)
					}
					vrids[s.VRID] = rid
				}
			}
			if netOf[projects[0]] == netOf[projects[1]] {
				t.Errorf("both projects share HA network %s", netOf[projects[0]])
			}
		})
	}
}

// TestHANetworkLivesAsLongAsTheProjectHasHARouters: the HA network (with
// its subnet) goes with the project's last HA router, not before; legacy
// routers of the project do not keep it, and other projects' HA networks
// are untouched.
func TestHANetworkLivesAsLongAsTheProjectHasHARouters(t *testing.T) {
	for _, backend := range servertest.Backends(t) {
		t.Run(backend, func(t *testing.T) {
			c := newHACloud(t, servertest.Options{Backend: backend})
			c.startAgents("net1", "net2")
			admin := c.admin()
			create := func(project string, ha bool) string {
				return admin.mustDo("POST", "/v2.0/routers", haBody("router", haObj{"name": "r", "ha": ha, "tenant_id": project}), http.StatusCreated).obj("router").str("id")
			}
			first, second := create("demo", true), create("demo", true)
			create("demo", false)
			create("other", true)
			haNet := c.haNetworkOf("demo")
			otherNet := c.haNetworkOf("other")
			if haNet == nil || otherNet == nil {
				t.Fatal("projects demo and other should each have an HA network")
			}

			admin.mustDo("DELETE", "/v2.0/routers/"+first, nil, http.StatusNoContent)
			if kept := c.haNetworkOf("demo"); kept == nil || kept.str("id") != haNet.str("id") {
				t.Fatalf("after deleting one of two HA routers the HA network is %v, want %s kept", kept, haNet.str("id"))
			}
			if ps := c.haPortsOf(first); len(ps) != 0 {
				t.Errorf("deleted router left HA ports %v", ps)
			}
			if ps := c.haPortsOf(second); len(ps) != 2 {
				t.Errorf("remaining router has %d HA ports, want 2", len(ps))
			}

			admin.mustDo("DELETE", "/v2.0/routers/"+second, nil, http.StatusNoContent)
			if gone := c.haNetworkOf("demo"); gone != nil {
				t.Fatalf("HA network %v survived the project's last HA router", gone)
			}
			admin.mustDo("GET", "/v2.0/networks/"+haNet.str("id"), nil, http.StatusNotFound)
			admin.mustDo("GET", "/v2.0/subnets/"+haNet.strs("subnets")[0], nil, http.StatusNotFound)
			if ps := admin.list("/v2.0/ports?network_id=" + haNet.str("id")); len(ps) != 0 {
				t.Errorf("ports left on the deleted HA network: %v", ps)
			}
			if still := c.haNetworkOf("other"); still == nil || still.str("id") != otherNet.str("id") {
				t.Errorf("project other's HA network is %v, want %s untouched", still, otherNet.str("id"))
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Changing `ha`: only on admin-down routers; legacy <-> HA migration.

// TestChangingHAOfAnActiveRouterIsRejected: with admin_state_up true (as it
// is or as the request leaves it) changing `ha` is Neutron's 400, and the
// router is left as it was.
func TestChangingHAOfAnActiveRouterIsRejected(t *testing.T) {
	const message = "Bad router request: Cannot change HA attribute of active routers. Please set router admin_state_up to False prior to upgrade."
	cases := []struct {
		name   string
		fromHA bool
		update haObj
	}{
		{"legacy to HA", false, haObj{"ha": true}},
		{"HA to legacy", true, haObj{"ha": false}},
		{"legacy to HA, admin_state_up true in the same request", false, haObj{"ha": true, "admin_state_up": true}},
	}
	for _, backend := range servertest.Backends(t) {
		t.Run(backend, func(t *testing.T) {
			c := newHACloud(t, servertest.Options{Backend: backend})
			c.startAgents("net1", "net2")
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					admin := c.admin().on(t)
					rid := admin.mustDo("POST", "/v2.0/routers", haBody("router", haObj{"name": "r", "ha": tc.fromHA, "tenant_id": "demo"}), http.StatusCreated).obj("router").str("id")
					admin.do("PUT", "/v2.0/routers/"+rid, haBody("router", tc.update)).wantError(t, http.StatusBadRequest, "BadRequest", message)
					r := admin.mustDo("GET", "/v2.0/routers/"+rid, nil, http.StatusOK).obj("router")
					if r["ha"] != tc.fromHA || r["admin_state_up"] != true {
						t.Errorf("router after the rejected update: %v", r)
					}
				})
			}
		})
	}
}

// TestAdminDownRouterMigratesBetweenLegacyAndHA: with admin_state_up false
// an admin turns a legacy router into an HA router and back. Legacy→HA:
// interfaces become network:ha_router_replicated_interface, the router
// gets a VRID, an HA network and one HA port per hosting agent. HA→legacy:
// interfaces become network:router_interface again, HA ports and VRID go,
// and so does the HA network if no other HA router of the project needs it.
func TestAdminDownRouterMigratesBetweenLegacyAndHA(t *testing.T) {
	for _, backend := range servertest.Backends(t) {
		t.Run(backend, func(t *testing.T) {
			for _, otherHARouter := range []bool{false, true} {
				name := "last HA router of the project"
				if otherHARouter {
					name = "project keeps another HA router"
				}
				t.Run(name, func(t *testing.T) {
					c := newHACloud(t, servertest.Options{Backend: backend})
					c.startAgents("net1", "net2")
					admin, demo := c.admin(), c.tenant("demo")
					_, subnet := demo.createNetwork("demo-net", "10.0.0.0/24")
					if otherHARouter {
						admin.mustDo("POST", "/v2.0/routers", haBody("router", haObj{"name": "other", "ha": true, "tenant_id": "demo"}), http.StatusCreated)
					}
					rid := admin.mustDo("POST", "/v2.0/routers", haBody("router", haObj{"name": "r", "ha": false, "tenant_id": "demo"}), http.StatusCreated).obj("router").str("id")
					ifPort := demo.mustDo("PUT", "/v2.0/routers/"+rid+"/add_router_interface", haObj{"subnet_id": subnet}, http.StatusOK).str("port_id")

					wantLegacy := func(stage string) {
						t.Helper()
						if owner := admin.mustDo("GET", "/v2.0/ports/"+ifPort, nil, http.StatusOK).obj("port").str("device_owner"); owner != haOwnerLegacyIf {
							t.Errorf("%s: interface owner %s, want %s", stage, owner, haOwnerLegacyIf)
						}
						if ps := c.haPortsOf(rid); len(ps) != 0 {
							t.Errorf("%s: legacy router has HA ports %v", stage, ps)
						}
						agents := c.l3Agents(rid)
						if len(agents) != 1 || agents[0]["ha_state"] != nil {
							t.Fatalf("%s: l3-agents %v, want one agent with ha_state null", stage, agents)
						}
						if spec := c.routerSpec(agents[0].str("host"), rid); spec == nil || spec.VRID != 0 || spec.HAPort != nil || spec.HA {
							t.Errorf("%s: agent is told %+v, want a legacy router without VRID or HA port", stage, spec)
						}
					}
					wantLegacy("legacy router")

					admin.mustDo("PUT", "/v2.0/routers/"+rid, haBody("router", haObj{"ha": true, "admin_state_up": false}), http.StatusOK)
					r := admin.mustDo("GET", "/v2.0/routers/"+rid, nil, http.StatusOK).obj("router")
					if r["ha"] != true || r["admin_state_up"] != false {
						t.Fatalf("after migration to HA: %v", r)
					}
					if owner := admin.mustDo("GET", "/v2.0/ports/"+ifPort, nil, http.StatusOK).obj("port").str("device_owner"); owner != haOwnerHAIf {
						t.Errorf("HA router's interface owner %s, want %s", owner, haOwnerHAIf)
					}
					haNet := c.haNetworkOf("demo")
					if haNet == nil {
						t.Fatal("migrated router's project has no HA network")
					}
					hosts := c.hostsOf(rid)
					if len(hosts) != 2 || len(c.haPortsOf(rid)) != 2 {
						t.Errorf("HA router hosted on %v with %d HA ports, want 2 and 2", hosts, len(c.haPortsOf(rid)))
					}
					for _, h := range hosts {
						spec := c.routerSpec(h, rid)
						if spec == nil || spec.VRID < 1 || spec.VRID > 254 || spec.HAPort == nil || spec.HAPort.NetworkID != haNet.str("id") || !spec.HA {
							t.Errorf("agent %s is told %+v, want an HA router with a VRID and an HA port on %s", h, spec, haNet.str("id"))
						}
					}

					// Back to legacy; admin_state_up is still false.
					admin.mustDo("PUT", "/v2.0/routers/"+rid, haBody("router", haObj{"ha": false}), http.StatusOK)
					if r := admin.mustDo("GET", "/v2.0/routers/"+rid, nil, http.StatusOK).obj("router"); r["ha"] != false {
						t.Fatalf("after migration to legacy: %v", r)
					}
					wantLegacy("migrated back to legacy")
					kept := c.haNetworkOf("demo")
					if otherHARouter && (kept == nil || kept.str("id") != haNet.str("id")) {
						t.Errorf("HA network %v, want %s kept for the project's other HA router", kept, haNet.str("id"))
					}
					if !otherHARouter && kept != nil {
						t.Errorf("HA network %v survived the project's last HA router becoming legacy", kept)
					}

					admin.mustDo("PUT", "/v2.0/routers/"+rid, haBody("router", haObj{"admin_state_up": true}), http.StatusOK)
					if r := admin.mustDo("GET", "/v2.0/routers/"+rid, nil, http.StatusOK).obj("router"); r["ha"] != false || r["admin_state_up"] != true {
						t.Errorf("router after admin_state_up true: %v", r)
					}
				})
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Scheduling.

// TestHARouterIsScheduledOnMaxL3AgentsPerRouter: an HA router gets
// min(max_l3_agents_per_router, alive agents) bindings, or every agent when
// the maximum is 0 — each with its own HA port.
func TestHARouterIsScheduledOnMaxL3AgentsPerRouter(t *testing.T) {
	for _, backend := range servertest.Backends(t) {
		t.Run(backend, func(t *testing.T) {
			for _, maxAgents := range []int{2, 3, 0} {
				for _, agents := range []int{1, 2, 4} {
					want := min(maxAgents, agents)
					if maxAgents == 0 {
						want = agents
					}
					t.Run(fmt.Sprintf("max %d, %d agents", maxAgents, agents), func(t *testing.T) {
						c := newHACloud(t, servertest.Options{Backend: backend, MaxAgents: servertest.Int(maxAgents), MinAgents: servertest.Int(1)})
						var hosts []string
						for i := range agents {
							hosts = append(hosts, fmt.Sprintf("net%d", i+1))
						}
						c.startAgents(hosts...)
						rid := c.admin().mustDo("POST", "/v2.0/routers", haBody("router", haObj{"name": "r", "ha": true, "tenant_id": "demo"}), http.StatusCreated).obj("router").str("id")
						bound := c.hostsOf(rid)
						if len(bound) != want {
							t.Fatalf("router hosted on %v, want %d agents", bound, want)
						}
						var portHosts []string
						for _, p := range c.haPortsOf(rid) {
							portHosts = append(portHosts, p.str("binding:host_id"))
						}
						sort.Strings(portHosts)
						if !slices.Equal(portHosts, bound) {
							t.Errorf("HA ports on hosts %v, want one per hosting agent %v", portHosts, bound)
						}
						c.waitHAStates(rid, func(states map[string]string) error {
							if n := haCount(states, "active"); n != 1 {
								return fmt.Errorf("%d active agents in %v", n, states)
							}
							return nil
						})
					})
				}
			}
		})
	}
}

// TestHARouterCreationNeedsMinL3AgentsAndLeavesNothingBehind: with fewer
// alive agents than min_l3_agents_per_router an HA router cannot be created
// (409 HANotEnoughAvailableAgents) and nothing is created: no router, no HA
// network, no ports. Nor can a legacy router be migrated to HA.
func TestHARouterCreationNeedsMinL3AgentsAndLeavesNothingBehind(t *testing.T) {
	cases := []struct {
		name      string
		minAgents int
		alive     []string
		dead      []string
	}{
		{name: "no agents", minAgents: 2},
		{name: "one agent", minAgents: 2, alive: []string{"net1"}},
		{name: "two agents, one dead", minAgents: 2, alive: []string{"net1"}, dead: []string{"net2"}},
		{name: "min 3, two agents", minAgents: 3, alive: []string{"net1", "net2"}},
	}
	for _, backend := range servertest.Backends(t) {
		t.Run(backend, func(t *testing.T) {
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					o := servertest.Options{Backend: backend, MinAgents: servertest.Int(tc.minAgents)}
					if len(tc.dead) > 0 {
						o.AgentDownTime = 3 * time.Second
					}
					c := newHACloud(t, o)
					c.startAgents(append(slices.Clone(tc.alive), tc.dead...)...)
					for _, h := range tc.dead {
						c.stopAgent(h)
					}
					c.waitAlive(tc.alive, tc.dead)
					admin := c.admin()
					routers := len(admin.list("/v2.0/routers"))
					networks := len(admin.list("/v2.0/networks"))
					ports := len(admin.list("/v2.0/ports"))

					message := fmt.Sprintf("Not enough l3 agents available to ensure HA. Minimum required %d, available %d.", tc.minAgents, len(tc.alive))
					admin.do("POST", "/v2.0/routers", haBody("router", haObj{"name": "r", "ha": true, "tenant_id": "demo"})).
						wantError(t, http.StatusConflict, "HANotEnoughAvailableAgents", message)
					if n := len(admin.list("/v2.0/routers")); n != routers {
						t.Errorf("routers: %d before, %d after the failed create", routers, n)
					}
					if n := len(admin.list("/v2.0/networks")); n != networks || c.haNetworkOf("demo") != nil {
						t.Errorf("networks: %d before, %d after the failed create (HA network %v)", networks, n, c.haNetworkOf("demo"))
					}
					if n := len(admin.list("/v2.0/ports")); n != ports {
						t.Errorf("ports: %d before, %d after the failed create", ports, n)
					}

					// A legacy router cannot become HA either, and stays as it was.
					rid := admin.mustDo("POST", "/v2.0/routers", haBody("router", haObj{"name": "legacy", "ha": false, "tenant_id": "demo", "admin_state_up": false}), http.StatusCreated).obj("router").str("id")
					admin.do("PUT", "/v2.0/routers/"+rid, haBody("router", haObj{"ha": true})).
						wantError(t, http.StatusConflict, "HANotEnoughAvailableAgents", message)
					if r := admin.mustDo("GET", "/v2.0/routers/"+rid, nil, http.StatusOK).obj("router"); r["ha"] != false {
						t.Errorf("router after the failed migration: %v", r)
					}
					if c.haNetworkOf("demo") != nil || len(c.haPortsOf(rid)) != 0 {
						t.Errorf("failed migration left an HA network or HA ports")
					}
				})
			}
		})
	}
}

// TestJoiningAgentGetsUnderScheduledRouters: router_auto_schedule gives an
// agent that registers the routers that have fewer agents than they should:
// HA routers below max_l3_agents_per_router (with an HA port and the
// router's VRID) and legacy routers created when no agent was there. Routers
// already at their target are left alone.
func TestJoiningAgentGetsUnderScheduledRouters(t *testing.T) {
	cases := []struct {
		name        string
		max         int
		before      []string
		ha          bool
		wantJoining bool
	}{
		{name: "HA router below max_l3_agents_per_router", max: 3, before: []string{"net1", "net2"}, ha: true, wantJoining: true},
		{name: "HA router at max_l3_agents_per_router", max: 2, before: []string{"net1", "net2"}, ha: true, wantJoining: false},
		{name: "legacy router created before any agent", max: 3, before: nil, ha: false, wantJoining: true},
		{name: "legacy router already hosted", max: 3, before: []string{"net1"}, ha: false, wantJoining: false},
	}
	for _, backend := range servertest.Backends(t) {
		t.Run(backend, func(t *testing.T) {
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					c := newHACloud(t, servertest.Options{Backend: backend, MaxAgents: servertest.Int(tc.max)})
					c.startAgents(tc.before...)
					rid := c.admin().mustDo("POST", "/v2.0/routers", haBody("router", haObj{"name": "r", "ha": tc.ha, "tenant_id": "demo"}), http.StatusCreated).obj("router").str("id")
					before := c.hostsOf(rid)
					vrid := 0
					if tc.ha {
						vrid = c.routerSpec(before[0], rid).VRID
					}

					c.startAgents("joining")
					// Auto-scheduling happens in the transaction that registers
					// the agent, so once it is listed the outcome is final.
					after := c.hostsOf(rid)
					if got := slices.Contains(after, "joining"); got != tc.wantJoining {
						t.Fatalf("router hosted on %v after the agent joined; joining agent hosts it: %v, want %v", after, got, tc.wantJoining)
					}
					if !tc.wantJoining {
						if !slices.Equal(after, before) {
							t.Errorf("bindings changed from %v to %v", before, after)
						}
						return
					}
					if len(after) != len(before)+1 {
						t.Errorf("router hosted on %v, want %v plus the joining agent", after, before)
					}
					spec := c.routerSpec("joining", rid)
					if spec == nil {
						t.Fatal("joining agent is not told to run the router")
					}
					if tc.ha {
						p := haPortOnHost(c.haPortsOf(rid), "joining")
						if p == nil || spec.HAPort == nil || spec.HAPort.ID != p.str("id") || spec.VRID != vrid {
							t.Errorf("joining agent: HA port %v (told %+v), VRID %d; want its own HA port and VRID %d", p, spec.HAPort, spec.VRID, vrid)
						}
						c.waitHAStates(rid, func(states map[string]string) error {
							if states["joining"] != "standby" || haCount(states, "active") != 1 {
								return fmt.Errorf("ha_states %v, want the joining agent standby and one active", states)
							}
							return nil
						})
					}
				})
			}
		})
	}
}

// TestAdminAddsAndRemovesRoutersOnAgents: l3-agent-router-add/remove
// (POST/DELETE /v2.0/agents/{id}/l3-routers): an HA router may be added to
// an agent beyond max_l3_agents_per_router (with an HA port there) and
// removed again (with its HA port); a legacy router is on one agent only;
// removing a router an agent does not host is a 404.
func TestAdminAddsAndRemovesRoutersOnAgents(t *testing.T) {
	for _, backend := range servertest.Backends(t) {
		t.Run(backend, func(t *testing.T) {
			c := newHACloud(t, servertest.Options{Backend: backend, MaxAgents: servertest.Int(2)})
			c.startAgents("net1", "net2", "net3")
			admin := c.admin()
			agentID := c.agentIDs()
			haRouter := admin.mustDo("POST", "/v2.0/routers", haBody("router", haObj{"name": "ha", "ha": true, "tenant_id": "demo"}), http.StatusCreated).obj("router").str("id")
			hosts := c.hostsOf(haRouter)
			if len(hosts) != 2 {
				t.Fatalf("HA router hosted on %v, want 2 agents", hosts)
			}
			free := ""
			for h := range agentID {
				if !slices.Contains(hosts, h) {
					free = h
				}
			}
			l3Routers := func(host string) []string {
				var ids []string
				for _, r := range admin.list("/v2.0/agents/" + agentID[host] + "/l3-routers") {
					ids = append(ids, r.str("id"))
				}
				return ids
			}
			if got := l3Routers(free); len(got) != 0 {
				t.Fatalf("agent %s hosts %v before anything was added", free, got)
			}
			for _, h := range hosts {
				if got := l3Routers(h); !slices.Equal(got, []string{haRouter}) {
					t.Errorf("agent %s hosts %v, want [%s]", h, got, haRouter)
				}
			}

			// Add the HA router to the third agent: beyond max, with an HA port.
			admin.mustDo("POST", "/v2.0/agents/"+agentID[free]+"/l3-routers", haObj{"router_id": haRouter}, http.StatusCreated)
			if got := l3Routers(free); !slices.Equal(got, []string{haRouter}) {
				t.Errorf("after adding, agent %s hosts %v", free, got)
			}
			if got := c.hostsOf(haRouter); len(got) != 3 {
				t.Errorf("HA router hosted on %v, want all 3 agents", got)
			}
			port := haPortOnHost(c.haPortsOf(haRouter), free)
			spec := c.routerSpec(free, haRouter)
			if port == nil || spec == nil || spec.HAPort == nil || spec.HAPort.ID != port.str("id") {
				t.Fatalf("added agent %s: HA port %v, told %+v", free, port, spec)
			}
			c.waitHAStates(haRouter, func(states map[string]string) error {
				if len(states) != 3 || haCount(states, "active") != 1 {
					return fmt.Errorf("ha_states %v, want 3 agents, one active", states)
				}
				return nil
			})

			// Remove it again: binding, HA port and desired state go.
			admin.mustDo("DELETE", "/v2.0/agents/"+agentID[free]+"/l3-routers/"+haRouter, nil, http.StatusNoContent)
			if got := l3Routers(free); len(got) != 0 {
				t.Errorf("after removing, agent %s hosts %v", free, got)
			}
			if got := c.hostsOf(haRouter); !slices.Equal(got, hosts) {
				t.Errorf("HA router hosted on %v, want %v", got, hosts)
			}
			if p := haPortOnHost(c.haPortsOf(haRouter), free); p != nil {
				t.Errorf("HA port %v left on %s after removal", p, free)
			}
			if spec := c.routerSpec(free, haRouter); spec != nil {
				t.Errorf("agent %s is still told to run the router: %+v", free, spec)
			}

			legacy := admin.mustDo("POST", "/v2.0/routers", haBody("router", haObj{"name": "legacy", "ha": false, "tenant_id": "demo"}), http.StatusCreated).obj("router").str("id")
			legacyHost := c.hostsOf(legacy)
			if len(legacyHost) != 1 {
				t.Fatalf("legacy router hosted on %v, want one agent", legacyHost)
			}
			other := "net1"
			if legacyHost[0] == other {
				other = "net2"
			}
			errorsCases := []struct {
				name, method, path string
				body               any
				status             int
				typ                string
			}{
				{"add a legacy router to a second agent", "POST", "/v2.0/agents/" + agentID[other] + "/l3-routers", haObj{"router_id": legacy}, http.StatusConflict, "RouterHostedByL3Agent"},
				{"add a legacy router to its own agent", "POST", "/v2.0/agents/" + agentID[legacyHost[0]] + "/l3-routers", haObj{"router_id": legacy}, http.StatusConflict, "RouterHostedByL3Agent"},
				{"add an HA router to an agent hosting it", "POST", "/v2.0/agents/" + agentID[hosts[0]] + "/l3-routers", haObj{"router_id": haRouter}, http.StatusConflict, "RouterHostedByL3Agent"},
				{"remove a router the agent does not host", "DELETE", "/v2.0/agents/" + agentID[free] + "/l3-routers/" + haRouter, nil, http.StatusNotFound, "RouterNotHostedByL3Agent"},
				{"remove a legacy router from another agent", "DELETE", "/v2.0/agents/" + agentID[other] + "/l3-routers/" + legacy, nil, http.StatusNotFound, "RouterNotHostedByL3Agent"},
			}
			for _, e := range errorsCases {
				t.Run(e.name, func(t *testing.T) {
					admin.on(t).do(e.method, e.path, e.body).wantError(t, e.status, e.typ, "")
				})
			}
			if got := c.hostsOf(legacy); !slices.Equal(got, legacyHost) {
				t.Errorf("legacy router hosted on %v after the rejected requests, want %v", got, legacyHost)
			}
			if got := c.hostsOf(haRouter); !slices.Equal(got, hosts) {
				t.Errorf("HA router hosted on %v after the rejected requests, want %v", got, hosts)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// ha_state.

// TestL3AgentsNeverShowADeadAgentActive: with every agent alive exactly one
// hosting agent is active. When the active agent dies its binding is shown
// standby (Neutron's LP#1682145 fix), the survivor can take over and is
// shown active, and when every hosting agent is dead all are unknown.
func TestL3AgentsNeverShowADeadAgentActive(t *testing.T) {
	for _, backend := range servertest.Backends(t) {
		t.Run(backend, func(t *testing.T) {
			c := newHACloud(t, servertest.Options{Backend: backend, AgentDownTime: 3 * time.Second})
			c.startAgents("net1", "net2")
			rid := c.admin().mustDo("POST", "/v2.0/routers", haBody("router", haObj{"name": "r", "ha": true, "tenant_id": "demo"}), http.StatusCreated).obj("router").str("id")
			var active, survivor string
			c.waitHAStates(rid, func(states map[string]string) error {
				if len(states) != 2 || haCount(states, "active") != 1 || haCount(states, "standby") != 1 {
					return fmt.Errorf("ha_states %v, want one active and one standby", states)
				}
				for h, s := range states {
					if s == "active" {
						active = h
					} else {
						survivor = h
					}
				}
				return nil
			})

			c.stopAgent(active)
			c.waitL3Agents(rid, func(agents []haObj) error {
				for _, a := range agents {
					if a["alive"] == false && a.str("ha_state") == "active" {
						t.Errorf("dead agent %s shown active", a.str("host"))
					}
				}
				states := haStates(agents)
				if haAlive(agents)[active] || states[active] != "standby" || states[survivor] != "standby" {
					return fmt.Errorf("ha_states %v (alive %v), want dead %s and %s both standby", states, haAlive(agents), active, survivor)
				}
				return nil
			})

			// VRRP on the survivor takes over; the API shows it.
			c.setHAState(survivor, rid, agentapi.HAActive)
			c.waitHAStates(rid, func(states map[string]string) error {
				if states[survivor] != "active" || states[active] != "standby" {
					return fmt.Errorf("ha_states %v, want %s active and dead %s standby", states, survivor, active)
				}
				return nil
			})

			c.stopAgent(survivor)
			c.waitL3Agents(rid, func(agents []haObj) error {
				states := haStates(agents)
				if states[active] != "unknown" || states[survivor] != "unknown" {
					return fmt.Errorf("ha_states %v (alive %v), want both unknown once every agent is dead", states, haAlive(agents))
				}
				return nil
			})
		})
	}
}

// TestDisabledAgentIsNotShownActive: an agent an admin disabled
// (admin_state_up false) may still report active, but is shown standby.
func TestDisabledAgentIsNotShownActive(t *testing.T) {
	for _, backend := range servertest.Backends(t) {
		t.Run(backend, func(t *testing.T) {
			c := newHACloud(t, servertest.Options{Backend: backend})
			c.startAgents("net1", "net2")
			rid := c.admin().mustDo("POST", "/v2.0/routers", haBody("router", haObj{"name": "r", "ha": true, "tenant_id": "demo"}), http.StatusCreated).obj("router").str("id")
			var active string
			c.waitHAStates(rid, func(states map[string]string) error {
				for h, s := range states {
					if s == "active" {
						active = h
					}
				}
				if haCount(states, "active") != 1 {
					return fmt.Errorf("ha_states %v, want one active", states)
				}
				return nil
			})
			c.admin().mustDo("PUT", "/v2.0/agents/"+c.agentIDs()[active], haBody("agent", haObj{"admin_state_up": false}), http.StatusOK)
			states := haStates(c.l3Agents(rid))
			if states[active] != "standby" || haCount(states, "active") != 0 {
				t.Errorf("ha_states %v, want the disabled agent %s shown standby", states, active)
			}
		})
	}
}

// TestRouterPortsFollowTheActiveHost: the binding:host_id of an HA router's
// interface and gateway ports is the host that last reported active, so L2
// population follows the master — also for ports added after the report.
func TestRouterPortsFollowTheActiveHost(t *testing.T) {
	for _, backend := range servertest.Backends(t) {
		t.Run(backend, func(t *testing.T) {
			c := newHACloud(t, servertest.Options{Backend: backend})
			c.startAgents("net1", "net2")
			admin, demo := c.admin(), c.tenant("demo")
			extNet := admin.mustDo("POST", "/v2.0/networks", haBody("network", haObj{"name": "public", "router:external": true}), http.StatusCreated).obj("network").str("id")
			admin.mustDo("POST", "/v2.0/subnets", haBody("subnet", haObj{"network_id": extNet, "cidr": "172.24.4.0/24", "ip_version": 4}), http.StatusCreated)
			_, sub1 := demo.createNetwork("net-a", "10.0.0.0/24")
			_, sub2 := demo.createNetwork("net-b", "10.0.1.0/24")
			rid := admin.mustDo("POST", "/v2.0/routers", haBody("router", haObj{"name": "r", "ha": true, "tenant_id": "demo"}), http.StatusCreated).obj("router").str("id")
			active, standby := c.waitOneActive(rid)

			if1 := demo.mustDo("PUT", "/v2.0/routers/"+rid+"/add_router_interface", haObj{"subnet_id": sub1}, http.StatusOK).str("port_id")
			demo.mustDo("PUT", "/v2.0/routers/"+rid, haBody("router", haObj{"external_gateway_info": haObj{"network_id": extNet}}), http.StatusOK)
			routerPorts := func() []haObj {
				var out []haObj
				for _, p := range admin.list("/v2.0/ports?device_id=" + rid) {
					if p.str("device_owner") != haOwnerHAPort {
						out = append(out, p)
					}
				}
				return out
			}
			wantPortsOn := func(host string, n int) {
				t.Helper()
				servertest.Eventually(t, haWait, func() error {
					ps := routerPorts()
					if len(ps) != n {
						return fmt.Errorf("router has %d interface and gateway ports, want %d", len(ps), n)
					}
					for _, p := range ps {
						if p.str("binding:host_id") != host {
							return fmt.Errorf("port %s (%s) bound to %q, want the active host %s", p.str("id"), p.str("device_owner"), p.str("binding:host_id"), host)
						}
					}
					return nil
				})
			}
			wantPortsOn(active, 2)
			if owner := admin.mustDo("GET", "/v2.0/ports/"+if1, nil, http.StatusOK).obj("port").str("device_owner"); owner != haOwnerHAIf {
				t.Errorf("HA router interface owner %s, want %s", owner, haOwnerHAIf)
			}

			// Failover: the standby becomes master, the old master backup.
			c.setHAState(active, rid, agentapi.HAStandby)
			c.setHAState(standby, rid, agentapi.HAActive)
			c.waitHAStates(rid, func(states map[string]string) error {
				if states[standby] != "active" || states[active] != "standby" {
					return fmt.Errorf("ha_states %v, want %s active after the failover", states, standby)
				}
				return nil
			})
			wantPortsOn(standby, 2)

			// A port added after the failover is bound to the current master.
			demo.mustDo("PUT", "/v2.0/routers/"+rid+"/add_router_interface", haObj{"subnet_id": sub2}, http.StatusOK)
			wantPortsOn(standby, 3)
		})
	}
}

// TestRouterPortsAddedWhileTheMasterReportsFollowIt: interfaces added while
// the agents' first ha_state reports come in are bound to the master too —
// the report and the new port must not miss each other (on PostgreSQL the
// quiet report transaction once ran beside the port's and both missed).
func TestRouterPortsAddedWhileTheMasterReportsFollowIt(t *testing.T) {
	for _, backend := range servertest.Backends(t) {
		t.Run(backend, func(t *testing.T) {
			c := newHACloud(t, servertest.Options{Backend: backend})
			c.startAgents("net1", "net2")
			admin, demo := c.admin(), c.tenant("demo")
			var subnets []string
			for i := range 8 {
				_, s := demo.createNetwork(fmt.Sprintf("net-%d", i), fmt.Sprintf("10.%d.0.0/24", i))
				subnets = append(subnets, s)
			}
			for round := range 8 {
				rid := admin.mustDo("POST", "/v2.0/routers", haBody("router", haObj{"name": "r", "ha": true, "tenant_id": "demo"}), http.StatusCreated).obj("router").str("id")
				for _, s := range subnets {
					demo.mustDo("PUT", "/v2.0/routers/"+rid+"/add_router_interface", haObj{"subnet_id": s}, http.StatusOK)
				}
				active, _ := c.waitOneActive(rid)
				servertest.Eventually(t, haWait, func() error {
					for _, p := range admin.list("/v2.0/ports?device_id=" + rid + "&device_owner=" + url.QueryEscape(haOwnerHAIf)) {
						if p.str("binding:host_id") != active {
							return fmt.Errorf("round %d: interface %s bound to %q, want the master %s", round, p.str("id"), p.str("binding:host_id"), active)
						}
					}
					return nil
				})
				for _, s := range subnets {
					demo.mustDo("PUT", "/v2.0/routers/"+rid+"/remove_router_interface", haObj{"subnet_id": s}, http.StatusOK)
				}
				admin.mustDo("DELETE", "/v2.0/routers/"+rid, nil, http.StatusNoContent)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// HA ports are the service's.

// TestHAPortsAreProtectedFromUsers: nobody deletes an HA port or changes its
// addresses or owner through the port API (admins get 409), and tenants
// cannot even see one (404).
func TestHAPortsAreProtectedFromUsers(t *testing.T) {
	for _, backend := range servertest.Backends(t) {
		t.Run(backend, func(t *testing.T) {
			c := newHACloud(t, servertest.Options{Backend: backend})
			c.startAgents("net1", "net2")
			admin, demo := c.admin(), c.tenant("demo")
			rid := admin.mustDo("POST", "/v2.0/routers", haBody("router", haObj{"name": "r", "ha": true, "tenant_id": "demo"}), http.StatusCreated).obj("router").str("id")
			port := c.haPortsOf(rid)[0]
			pid := port.str("id")
			ip, sub := port.fixedIP()
			otherIP := "169.254.200.200"
			if ip == otherIP {
				otherIP = "169.254.200.201"
			}

			cases := []struct {
				name   string
				api    *haAPI
				method string
				body   any
				status int
			}{
				{"admin deletes it", admin, "DELETE", nil, http.StatusConflict},
				// Neutron's l3-port-ip-change-not-allowed: 400.
				{"admin re-addresses it", admin, "PUT", haBody("port", haObj{"fixed_ips": []haObj{{"subnet_id": sub, "ip_address": otherIP}}}), http.StatusBadRequest},
				{"admin empties its addresses", admin, "PUT", haBody("port", haObj{"fixed_ips": []haObj{}}), http.StatusBadRequest},
				{"admin changes its owner", admin, "PUT", haBody("port", haObj{"device_owner": "compute:nova"}), http.StatusConflict},
				{"tenant reads it", demo, "GET", nil, http.StatusNotFound},
				{"tenant deletes it", demo, "DELETE", nil, http.StatusNotFound},
				{"tenant re-addresses it", demo, "PUT", haBody("port", haObj{"fixed_ips": []haObj{{"subnet_id": sub, "ip_address": otherIP}}}), http.StatusNotFound},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					tc.api.on(t).do(tc.method, "/v2.0/ports/"+pid, tc.body).wantError(t, tc.status, "", "")
				})
			}
			after := admin.mustDo("GET", "/v2.0/ports/"+pid, nil, http.StatusOK).obj("port")
			if gotIP, gotSub := after.fixedIP(); gotIP != ip || gotSub != sub || after.str("device_owner") != haOwnerHAPort || after.str("device_id") != rid {
				t.Errorf("HA port changed by rejected requests: %v", after)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Scale.

// TestThreeHundredHARoutersInOneProjectAllGetVRIDs: a project is not limited
// to 254 HA routers (Neutron's limit): the 255th router starts a second HA
// network of the project, so 300 routers all get a VRID, unique on their HA
// network. Another project's HA network reuses the VRIDs.
func TestThreeHundredHARoutersInOneProjectAllGetVRIDs(t *testing.T) {
	if testing.Short() {
		t.Skip("creates 300 routers")
	}
	const n = 300
	for _, backend := range servertest.Backends(t) {
		t.Run(backend, func(t *testing.T) {
			c := newHACloud(t, servertest.Options{Backend: backend, MaxAgents: servertest.Int(2)})
			c.startAgents("net1", "net2")
			admin := c.admin()
			ids := make([]string, 0, n)
			for i := range n {
				ids = append(ids, admin.mustDo("POST", "/v2.0/routers", haBody("router", haObj{"name": fmt.Sprintf("r%03d", i), "ha": true, "tenant_id": "big"}), http.StatusCreated).obj("router").str("id"))
			}
			one := admin.mustDo("POST", "/v2.0/routers", haBody("router", haObj{"name": "small", "ha": true, "tenant_id": "small"}), http.StatusCreated).obj("router").str("id")

			specs1, specs2 := c.routerSpecs("net1"), c.routerSpecs("net2")
			if len(specs1) != n+1 || len(specs2) != n+1 {
				t.Fatalf("agents run %d and %d routers, want %d each", len(specs1), len(specs2), n+1)
			}
			perNetwork := map[string]map[int]string{} // HA network → VRID → router
			for _, id := range ids {
				s1, s2 := specs1[id], specs2[id]
				if s1 == nil || s2 == nil || s1.HAPort == nil || s2.HAPort == nil {
					t.Fatalf("router %s not on both agents with HA ports: %+v %+v", id, s1, s2)
				}
				if s1.VRID < 1 || s1.VRID > 254 || s1.VRID != s2.VRID || s1.HAPort.NetworkID != s2.HAPort.NetworkID {
					t.Fatalf("router %s: agents told VRIDs %d/%d on HA networks %s/%s", id, s1.VRID, s2.VRID, s1.HAPort.NetworkID, s2.HAPort.NetworkID)
				}
				net := s1.HAPort.NetworkID
				if perNetwork[net] == nil {
					perNetwork[net] = map[int]string{}
				}
				if other, dup := perNetwork[net][s1.VRID]; dup {
					t.Errorf("routers %s and %s share VRID %d on HA network %s", other, id, s1.VRID, net)
				}
				perNetwork[net][s1.VRID] = id
			}
			var sizes []int
			for _, m := range perNetwork {
				sizes = append(sizes, len(m))
			}
			sort.Ints(sizes)
			if !slices.Equal(sizes, []int{n - 254, 254}) {
				t.Errorf("routers per HA network %v, want [%d 254]", sizes, n-254)
			}
			var names []string
			for _, net := range admin.list("/v2.0/networks") {
				if strings.HasPrefix(net.str("name"), "HA network tenant big") {
					names = append(names, net.str("name"))
					if _, ok := perNetwork[net.str("id")]; !ok {
						t.Errorf("HA network %s (%s) carries none of the project's routers", net.str("id"), net.str("name"))
					}
				}
			}
			if len(names) != 2 {
				t.Errorf("project has HA networks %v, want 2", names)
			}

			// The other project's router has its own HA network, and its
			// VRID is necessarily one the full HA network also uses.
			small := specs1[one]
			smallNet := c.haNetworkOf("small")
			if small == nil || small.HAPort == nil || smallNet == nil || small.HAPort.NetworkID != smallNet.str("id") {
				t.Fatalf("router of project small: %+v, HA network %v", small, smallNet)
			}
			reused := false
			for _, m := range perNetwork {
				if len(m) == 254 {
					_, reused = m[small.VRID]
				}
			}
			if !reused {
				t.Errorf("VRID %d of project small is not also used in project big's full HA network", small.VRID)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Helpers: a test cloud (server + fake agents) and its API seen by admins
// and tenants.

// haObj is a decoded JSON object.
type haObj map[string]any

func (o haObj) has(k string) bool { _, ok := o[k]; return ok }

func (o haObj) str(k string) string {
	s, _ := o[k].(string)
	return s
}

func (o haObj) obj(k string) haObj {
	m, _ := o[k].(map[string]any)
	return m
}

func (o haObj) objs(k string) []haObj {
	l, _ := o[k].([]any)
	out := make([]haObj, 0, len(l))
	for _, v := range l {
		m, _ := v.(map[string]any)
		out = append(out, m)
	}
	return out
}

func (o haObj) strs(k string) []string {
	l, _ := o[k].([]any)
	var out []string
	for _, v := range l {
		s, _ := v.(string)
		out = append(out, s)
	}
	return out
}

// fixedIP returns a port's first address and its subnet.
func (o haObj) fixedIP() (ip, subnet string) {
	ips := o.objs("fixed_ips")
	if len(ips) == 0 {
		return "", ""
	}
	return ips[0].str("ip_address"), ips[0].str("subnet_id")
}

func haBody(singular string, fields haObj) haObj { return haObj{singular: fields} }

func haBool(b bool) *bool { return &b }

func haInCIDR(ip, cidr string) bool {
	a, err := netip.ParseAddr(ip)
	return err == nil && netip.MustParsePrefix(cidr).Contains(a)
}

func haPortOnHost(ports []haObj, host string) haObj {
	for _, p := range ports {
		if p.str("binding:host_id") == host {
			return p
		}
	}
	return nil
}

func haStates(agents []haObj) map[string]string {
	out := map[string]string{}
	for _, a := range agents {
		out[a.str("host")] = a.str("ha_state")
	}
	return out
}

func haAlive(agents []haObj) map[string]bool {
	out := map[string]bool{}
	for _, a := range agents {
		out[a.str("host")] = a["alive"] == true
	}
	return out
}

func haCount(states map[string]string, state string) int {
	n := 0
	for _, s := range states {
		if s == state {
			n++
		}
	}
	return n
}

// haCloud is a test server with fake agents.
type haCloud struct {
	t      *testing.T
	srv    *servertest.Instance
	agents map[string]*servertest.FakeAgent
	// adminHeaders authenticate admin(); nil: noauth headers.
	adminHeaders map[string]string
}

func newHACloud(t *testing.T, o servertest.Options) *haCloud {
	t.Helper()
	c := &haCloud{t: t, srv: servertest.Start(t, o), agents: map[string]*servertest.FakeAgent{}}
	// Before the server stops: a connection a client dialed but never used
	// would hold up its graceful shutdown for 5s.
	t.Cleanup(func() {
		haHTTP.CloseIdleConnections()
		if tr, ok := http.DefaultTransport.(*http.Transport); ok {
			tr.CloseIdleConnections()
		}
	})
	return c
}

// admin acts as an admin of project "admin", tenant as a member of project.
func (c *haCloud) admin() *haAPI {
	if c.adminHeaders != nil {
		return &haAPI{t: c.t, base: c.srv.URL, headers: c.adminHeaders}
	}
	return &haAPI{t: c.t, base: c.srv.URL, headers: map[string]string{"X-Project-Id": "admin", "X-Roles": "admin,member,reader"}}
}

func (c *haCloud) tenant(project string) *haAPI {
	return &haAPI{t: c.t, base: c.srv.URL, headers: map[string]string{"X-Project-Id": project, "X-Roles": "member,reader"}}
}

// startAgents starts fake agents and waits until every one is registered
// and alive.
func (c *haCloud) startAgents(hosts ...string) {
	c.t.Helper()
	for _, h := range hosts {
		c.agents[h] = c.srv.StartFakeAgent(c.t, h)
	}
	c.waitAlive(hosts, nil)
}

func (c *haCloud) stopAgent(host string) {
	c.agents[host].Stop()
}

// waitAlive waits until the API shows the alive hosts alive and the dead
// ones registered but dead.
func (c *haCloud) waitAlive(alive, dead []string) {
	c.t.Helper()
	servertest.Eventually(c.t, haWait, func() error {
		r := c.admin().do("GET", "/v2.0/agents", nil)
		if r.status != http.StatusOK {
			return fmt.Errorf("GET agents: %d %s", r.status, r.raw)
		}
		got := haAlive(r.body.objs("agents"))
		for _, h := range alive {
			if !got[h] {
				return fmt.Errorf("agent %s not alive yet: %v", h, got)
			}
		}
		for _, h := range dead {
			if a, ok := got[h]; !ok || a {
				return fmt.Errorf("agent %s not dead yet: %v", h, got)
			}
		}
		return nil
	})
}

// agentIDs maps hosts to their agent ids.
func (c *haCloud) agentIDs() map[string]string {
	out := map[string]string{}
	for _, a := range c.admin().list("/v2.0/agents") {
		out[a.str("host")] = a.str("id")
	}
	return out
}

// haNetworkOf returns project's (first) HA network as an admin sees it.
func (c *haCloud) haNetworkOf(project string) haObj {
	nets := c.admin().list("/v2.0/networks?name=" + url.QueryEscape("HA network tenant "+project))
	if len(nets) > 1 {
		c.t.Fatalf("project %s has %d networks named as its HA network", project, len(nets))
	}
	if len(nets) == 0 {
		return nil
	}
	return nets[0]
}

// haPortsOf returns the HA ports of a router (admin view).
func (c *haCloud) haPortsOf(routerID string) []haObj {
	return c.admin().list("/v2.0/ports?device_id=" + routerID + "&device_owner=" + url.QueryEscape(haOwnerHAPort))
}

// l3Agents is GET /v2.0/routers/{id}/l3-agents as an admin.
func (c *haCloud) l3Agents(routerID string) []haObj {
	return c.admin().mustDo("GET", "/v2.0/routers/"+routerID+"/l3-agents", nil, http.StatusOK).objs("agents")
}

// hostsOf returns the sorted hosts of the agents hosting a router.
func (c *haCloud) hostsOf(routerID string) []string {
	var hosts []string
	for _, a := range c.l3Agents(routerID) {
		hosts = append(hosts, a.str("host"))
	}
	sort.Strings(hosts)
	return hosts
}

// waitL3Agents polls l3-agents until check accepts it.
func (c *haCloud) waitL3Agents(routerID string, check func([]haObj) error) {
	c.t.Helper()
	servertest.Eventually(c.t, haWait, func() error {
		r := c.admin().do("GET", "/v2.0/routers/"+routerID+"/l3-agents", nil)
		if r.status != http.StatusOK {
			return fmt.Errorf("GET l3-agents: %d %s", r.status, r.raw)
		}
		return check(r.body.objs("agents"))
	})
}

// waitHAStates polls the ha_state per host until check accepts it.
func (c *haCloud) waitHAStates(routerID string, check func(map[string]string) error) {
	c.t.Helper()
	c.waitL3Agents(routerID, func(agents []haObj) error { return check(haStates(agents)) })
}

// waitOneActive waits for a two-agent HA router to have one active and one
// standby agent and returns their hosts.
func (c *haCloud) waitOneActive(routerID string) (active, standby string) {
	c.t.Helper()
	c.waitHAStates(routerID, func(states map[string]string) error {
		if len(states) != 2 || haCount(states, "active") != 1 || haCount(states, "standby") != 1 {
			return fmt.Errorf("ha_states %v, want one active and one standby", states)
		}
		for h, s := range states {
			if s == "active" {
				active = h
			} else {
				standby = h
			}
		}
		return nil
	})
	return active, standby
}

// setHAState simulates a VRRP transition on host's fake data plane, once
// the agent runs the router (a binding shown standby may not be applied yet).
func (c *haCloud) setHAState(host, routerID, state string) {
	c.t.Helper()
	servertest.Eventually(c.t, haWait, func() error { return c.agents[host].Dataplane.SetState(routerID, state) })
}

// desiredState is what the agent endpoint tells host to run (GET
// /agent/v1/state without an etag answers at once).
func (c *haCloud) desiredState(host string) agentapi.DesiredState {
	c.t.Helper()
	req, err := http.NewRequest("GET", c.srv.URL+agentapi.PathState+"?host="+url.QueryEscape(host), nil)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set(agentapi.TokenHeader, servertest.AgentTokenOf(host))
	resp, err := haHTTP.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		c.t.Fatalf("GET desired state of %s: %d %s", host, resp.StatusCode, raw)
	}
	var st agentapi.DesiredState
	if err := json.Unmarshal(raw, &st); err != nil {
		c.t.Fatalf("decoding desired state of %s: %v", host, err)
	}
	return st
}

// routerSpecs returns the routers host is told to run, by id.
func (c *haCloud) routerSpecs(host string) map[string]*agentapi.RouterSpec {
	st := c.desiredState(host)
	out := map[string]*agentapi.RouterSpec{}
	for i := range st.Routers {
		out[st.Routers[i].ID] = &st.Routers[i]
	}
	return out
}

// routerSpec returns what host is told about one router, nil if nothing.
func (c *haCloud) routerSpec(host, routerID string) *agentapi.RouterSpec {
	c.t.Helper()
	return c.routerSpecs(host)[routerID]
}

var haHTTP = &http.Client{Timeout: 60 * time.Second}

// haAPI is the Neutron API as one identity (noauth headers).
type haAPI struct {
	t       *testing.T
	base    string
	headers map[string]string
}

// haReply is an API response.
type haReply struct {
	method, path string
	status       int
	body         haObj
	raw          []byte
}

// do sends a request; transport failures are fatal, statuses are the
// caller's to judge.
func (a *haAPI) do(method, path string, body any) haReply {
	a.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			a.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, a.base+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range a.headers {
		req.Header.Set(k, v)
	}
	resp, err := haHTTP.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	r := haReply{method: method, path: path, status: resp.StatusCode, raw: raw}
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			a.t.Fatalf("%s %s: %d, body is not a JSON object: %q", method, path, resp.StatusCode, raw)
		}
	}
	return r
}

// on returns the same identity acting for (and failing) t, for subtests.
func (a *haAPI) on(t *testing.T) *haAPI {
	b := *a
	b.t = t
	return &b
}

// mustDo sends a request and fails the test unless it gets status want.
func (a *haAPI) mustDo(method, path string, body any, want int) haObj {
	a.t.Helper()
	r := a.do(method, path, body)
	if r.status != want {
		a.t.Fatalf("%s %s: status %d, want %d: %s", method, path, r.status, want, r.raw)
	}
	return r.body
}

// list GETs a collection and returns its items.
func (a *haAPI) list(path string) []haObj {
	a.t.Helper()
	collection, _, _ := strings.Cut(path, "?")
	collection = collection[strings.LastIndex(collection, "/")+1:]
	if collection == "l3-routers" {
		collection = "routers"
	}
	return a.mustDo("GET", path, nil, http.StatusOK).objs(collection)
}

// createNetwork creates a network with one subnet and returns both ids.
func (a *haAPI) createNetwork(name, cidr string) (network, subnet string) {
	a.t.Helper()
	network = a.mustDo("POST", "/v2.0/networks", haBody("network", haObj{"name": name}), http.StatusCreated).obj("network").str("id")
	subnet = a.mustDo("POST", "/v2.0/subnets", haBody("subnet", haObj{"network_id": network, "cidr": cidr, "ip_version": 4, "name": name + "-subnet"}), http.StatusCreated).obj("subnet").str("id")
	return network, subnet
}

// wantError checks a NeutronError reply: status, and type and message when
// given.
func (r haReply) wantError(t *testing.T, status int, typ, message string) {
	t.Helper()
	if r.status != status {
		t.Errorf("%s %s: status %d, want %d: %s", r.method, r.path, r.status, status, r.raw)
		return
	}
	e := r.body.obj("NeutronError")
	if e == nil {
		t.Errorf("%s %s: %d without a NeutronError body: %s", r.method, r.path, r.status, r.raw)
		return
	}
	if typ != "" && e.str("type") != typ {
		t.Errorf("%s %s: error type %q, want %q (%s)", r.method, r.path, e.str("type"), typ, e.str("message"))
	}
	if message != "" && e.str("message") != message {
		t.Errorf("%s %s: error message %q, want %q", r.method, r.path, e.str("message"), message)
	}
}
