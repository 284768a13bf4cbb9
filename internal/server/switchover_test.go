package server_test

// Tests of the switchover API (issue 11, item 1): POST
// /v2.0/routers/{id}/switchover {"agent_id": …} puts the request in the
// router's agents' desired state until the target reports active, and the
// reports it causes are recorded with reason switchover. The data plane's
// side (the target takes over before the old master lets go) is tested in
// internal/vrrp, internal/vrrp/engine and the lab.

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/agentapi"
	"github.com/l3ha/l3ha/internal/servertest"
)

// switchoverOf returns the switchover in host's desired state for the
// router, nil if none.
func switchoverOf(c *haCloud, host, routerID string) *agentapi.SwitchoverSpec {
	c.t.Helper()
	for _, r := range c.desiredState(host).Routers {
		if r.ID == routerID {
			return r.Switchover
		}
	}
	c.t.Fatalf("router %s is not in %s's desired state", routerID, host)
	return nil
}

func TestSwitchoverRequestReachesTheAgentsUntilTheTargetIsActive(t *testing.T) {
	for _, backend := range servertest.Backends(t) {
		t.Run(backend, func(t *testing.T) {
			srv, id := fsRouter(t, backend)
			ids := map[string]string{"net1": fsHeartbeat(t, srv, "net1"), "net2": fsHeartbeat(t, srv, "net2")}
			c := &haCloud{t: t, srv: srv}
			admin := c.admin()
			fsReport(t, srv, transitionOf("net1", id, "active"))

			got := admin.mustDo("POST", "/v2.0/routers/"+id+"/switchover", map[string]any{"agent_id": ids["net2"]}, http.StatusAccepted).obj("switchover")
			if got.str("agent_id") != ids["net2"] || got.str("host") != "net2" || got.str("router_id") != id {
				t.Errorf("switchover answer %v, want router %s to agent %s on net2", got, id, ids["net2"])
			}
			for _, host := range []string{"net1", "net2"} {
				sw := switchoverOf(c, host, id)
				if sw == nil || sw.AgentID != ids["net2"] || sw.Host != "net2" || sw.ID == "" {
					t.Fatalf("%s's desired state: switchover %+v, want one to net2", host, sw)
				}
			}
			// The old master steps down when it hears the target (VRRP says
			// higher_priority, which the agent reports as split_brain), the
			// target reports active: both are the switchover.
			rep := transitionOf("net2", id, "active")
			rep.Reasons = map[string]string{id: agentapi.ReasonSwitchover}
			fsReport(t, srv, rep)
			rep = transitionOf("net1", id, "standby")
			rep.Reasons = map[string]string{id: agentapi.ReasonSplitBrain}
			fsReport(t, srv, rep)
			wantStates(t, srv, id, map[string]string{"net1": "standby", "net2": "active"})
			want := []histRow{{"net1", "standby", "active", ""}, {"net2", "standby", "active", "switchover"}, {"net1", "active", "standby", "switchover"}}
			if h := history(t, srv, id, "", ids); !slices.Equal(h, want) {
				t.Errorf("history %v, want %v", h, want)
			}
			for _, host := range []string{"net1", "net2"} {
				if sw := switchoverOf(c, host, id); sw != nil {
					t.Errorf("%s's desired state still has the completed switchover %+v", host, sw)
				}
			}
			// Asking again for the master changes nothing.
			got = admin.mustDo("POST", "/v2.0/routers/"+id+"/switchover", map[string]any{"agent_id": ids["net2"]}, http.StatusAccepted).obj("switchover")
			if got["requested_at"] != nil {
				t.Errorf("switchover to the master: %v, want requested_at null (nothing to do)", got)
			}
			if sw := switchoverOf(c, "net1", id); sw != nil {
				t.Errorf("switchover to the master left a request: %+v", sw)
			}
			// A later failover is not a switchover.
			rep = transitionOf("net1", id, "active")
			rep.Reasons = map[string]string{id: agentapi.ReasonPeerLost}
			fsReport(t, srv, rep)
			if h := history(t, srv, id, "?limit=2", ids); !slices.Equal(h, []histRow{{"net1", "standby", "active", "peer_lost"}, {"net2", "active", "standby", "peer_lost"}}) {
				t.Errorf("failover after the switchover recorded as %v", h)
			}
		})
	}
}

// TestSwitchoverRefusesBadRequests: each refusal has Neutron's status and
// error body and changes nothing in the database.
func TestSwitchoverRefusesBadRequests(t *testing.T) {
	srv, id := fsRouterOf(t, servertest.Options{AgentDownTime: 3 * time.Second})
	ids := map[string]string{"net1": fsHeartbeat(t, srv, "net1"), "net2": fsHeartbeat(t, srv, "net2")}
	fsReport(t, srv, transitionOf("net1", id, "active"))
	c := &haCloud{t: t, srv: srv}
	admin := c.admin()
	own := admin.mustDo("POST", "/v2.0/routers", haBody("router", haObj{"name": "demo-ha", "ha": true, "project_id": "demo"}), http.StatusCreated).obj("router").str("id")
	legacy := admin.mustDo("POST", "/v2.0/routers", haBody("router", haObj{"name": "legacy", "ha": false}), http.StatusCreated).obj("router").str("id")
	down := admin.mustDo("POST", "/v2.0/routers", haBody("router", haObj{"name": "down", "ha": true}), http.StatusCreated).obj("router").str("id")
	admin.mustDo("PUT", "/v2.0/routers/"+down, haBody("router", haObj{"admin_state_up": false}), http.StatusOK)
	ids["net3"] = fsHeartbeat(t, srv, "net3")
	if bound := fsStates(t, srv, id); bound["net3"] != "" {
		admin.mustDo("DELETE", "/v2.0/agents/"+ids["net3"]+"/l3-routers/"+id, nil, http.StatusNoContent)
	}
	reader := &haAPI{t: t, base: srv.URL, headers: map[string]string{"X-Project-Id": "demo", "X-Roles": "reader"}}
	unknown := "0b5c7c4e-9d1a-4a4e-8c43-000000000000"
	path := func(router string) string { return "/v2.0/routers/" + router + "/switchover" }
	to := func(agent string) map[string]any { return map[string]any{"agent_id": agent} }
	notFound := func(router string) string { return "Router " + router + " could not be found" }

	type bad struct {
		name         string
		who          *haAPI
		method, path string
		body         any
		status       int
		typ, msg     string
	}
	check := func(t *testing.T, cases []bad) {
		before, err := srv.Server.DB().Dump(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				tc.who.on(t).do(tc.method, tc.path, tc.body).wantError(t, tc.status, tc.typ, tc.msg)
			})
		}
		after, err := srv.Server.DB().Dump(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if d := fsDiff(before, after); d != "" {
			t.Errorf("refused switchovers changed the database:\n%s", d)
		}
	}
	check(t, []bad{
		{name: "unknown router", who: admin, method: "POST", path: path(unknown), body: to(ids["net2"]), status: 404, typ: "RouterNotFound", msg: notFound(unknown)},
		{name: "tenant on its own router", who: c.tenant("demo"), method: "POST", path: path(own), body: to(ids["net2"]), status: 403, typ: "PolicyNotAuthorized", msg: "rule:switchover_router is disallowed by policy"},
		{name: "tenant on another project's router", who: c.tenant("demo"), method: "POST", path: path(id), body: to(ids["net2"]), status: 404, typ: "RouterNotFound", msg: notFound(id)},
		{name: "reader", who: reader, method: "POST", path: path(own), body: to(ids["net2"]), status: 403, typ: "PolicyNotAuthorized"},
		{name: "legacy router", who: admin, method: "POST", path: path(legacy), body: to(ids["net1"]), status: 400, typ: "HTTPBadRequest",
			msg: fmt.Sprintf("Router %s is not highly available (ha=False): it has no master to move.", legacy)},
		{name: "router admin down", who: admin, method: "POST", path: path(down), body: to(ids["net2"]), status: 409, typ: "RouterAdminDown"},
		{name: "agent not hosting the router", who: admin, method: "POST", path: path(id), body: to(ids["net3"]), status: 409, typ: "RouterNotHostedByL3Agent",
			msg: fmt.Sprintf("The router %s is not hosted by L3 agent %s.", id, ids["net3"])},
		{name: "unknown agent", who: admin, method: "POST", path: path(id), body: to(unknown), status: 404, typ: "AgentNotFound"},
		{name: "agent_id not a uuid", who: admin, method: "POST", path: path(id), body: to("net2"), status: 400, typ: "HTTPBadRequest"},
		{name: "agent_id not a string", who: admin, method: "POST", path: path(id), body: map[string]any{"agent_id": 7}, status: 400, typ: "HTTPBadRequest"},
		{name: "no agent_id", who: admin, method: "POST", path: path(id), body: map[string]any{}, status: 400, typ: "HTTPBadRequest",
			msg: "Failed to parse request. Required attribute 'agent_id' not specified"},
		{name: "unknown attribute", who: admin, method: "POST", path: path(id), body: map[string]any{"agent_id": ids["net2"], "force": true}, status: 400, typ: "HTTPBadRequest",
			msg: "Unrecognized attribute(s) 'force'"},
		{name: "not an object", who: admin, method: "POST", path: path(id), body: []any{ids["net2"]}, status: 400, typ: "HTTPBadRequest"},
		{name: "GET", who: admin, method: "GET", path: path(id), status: 405, typ: "HTTPMethodNotAllowed"},
		{name: "PUT", who: admin, method: "PUT", path: path(id), body: to(ids["net2"]), status: 405, typ: "HTTPMethodNotAllowed"},
	})

	// net2 dies (no heartbeat for agent_down_time): it cannot take over.
	servertest.Eventually(t, 15*time.Second, func() error {
		fsHeartbeat(t, srv, "net1")
		if st := fsStates(t, srv, id); st["net2"] != "unknown" && st["net2"] != "standby" {
			return fmt.Errorf("states %v", st)
		}
		var out struct{ Agent map[string]any }
		if err := call(srv.URL, "GET", "/v2.0/agents/"+ids["net2"], nil, &out); err != nil {
			return err
		}
		if out.Agent["alive"] != false {
			return fmt.Errorf("net2 alive %v", out.Agent["alive"])
		}
		return nil
	})
	fsHeartbeat(t, srv, "net1")
	check(t, []bad{
		{name: "dead agent", who: admin, method: "POST", path: path(id), body: to(ids["net2"]), status: 409, typ: "L3AgentDead"},
	})
}

// TestHealthCheckOfAMasterThatStaysIsRecorded: an agent reports its master's
// failed gateway check with the state unchanged (reason health_check, no
// healthier node to hand over to): ha_state stays active and the history
// gets an active → active row with that reason; other reasons that change
// nothing still record nothing.
func TestHealthCheckOfAMasterThatStaysIsRecorded(t *testing.T) {
	srv, id := fsRouter(t, "sqlite")
	ids := map[string]string{"net1": fsHeartbeat(t, srv, "net1"), "net2": fsHeartbeat(t, srv, "net2")}
	fsReport(t, srv, transitionOf("net1", id, "active"))
	for _, reason := range []string{agentapi.ReasonPeerLost, agentapi.ReasonHealthCheck} {
		rep := transitionOf("net1", id, "active")
		rep.Reasons = map[string]string{id: reason}
		fsReport(t, srv, rep)
	}
	wantStates(t, srv, id, map[string]string{"net1": "active", "net2": "standby"})
	want := []histRow{{"net1", "standby", "active", ""}, {"net1", "active", "active", "health_check"}}
	if h := history(t, srv, id, "", ids); !slices.Equal(h, want) {
		t.Errorf("history %v, want %v", h, want)
	}
}
