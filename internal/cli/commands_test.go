package cli

import (
	"bytes"
	"encoding/json"
	"net/http"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// wantReq is one request a verb must send: method, path with query, and the
// JSON body ("" for none), compared as JSON values.
type wantReq struct {
	method, uri, body string
}

type verbCase struct {
	name    string
	args    []string
	setup   func(f *fakeNeutron)
	want    []wantReq // every request, in order
	wantOut []string  // substrings of stdout, runs of blanks compared as one
	exact   string    // when not "": the whole stdout, alignment included
	wantErr string    // substring of stderr; "" means the command must succeed
}

// Lookups by name used by many cases.
func withNetworkNamed(f *fakeNeutron) {
	f.on("GET /v2.0/networks?name=demo-net", 200, many("networks", demoNetwork))
	f.on("GET /v2.0/networks?name=public", 200, many("networks", publicNetwork))
}

func withRouterNamed(f *fakeNeutron) {
	f.on("GET /v2.0/routers?name=ha-router", 200, many("routers", haRouterTenant))
}

func runVerbCases(t *testing.T, cases []verbCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			f := newFakeNeutron(t)
			if tc.setup != nil {
				tc.setup(f)
			}
			res := runCLI(t, f.srv.URL, tc.args...)
			if tc.wantErr == "" {
				if res.err != nil {
					t.Fatalf("unexpected error %v\nstderr: %s", res.err, res.errOut)
				}
			} else {
				if res.err == nil {
					t.Fatalf("want error containing %q, got success\nstdout: %s", tc.wantErr, res.out)
				}
				if !strings.Contains(res.errOut, tc.wantErr) {
					t.Fatalf("stderr %q does not contain %q", res.errOut, tc.wantErr)
				}
			}
			checkRequests(t, f.requests(), tc.want)
			for _, w := range tc.wantOut {
				if !strings.Contains(squeeze(res.out), squeeze(w)) {
					t.Errorf("stdout does not contain %q:\n%s", w, res.out)
				}
			}
			if tc.exact != "" && res.out != tc.exact {
				t.Errorf("stdout\n got:\n%s\nwant:\n%s", res.out, tc.exact)
			}
		})
	}
}

var blanks = regexp.MustCompile(` {2,}`)

// squeeze turns runs of blanks into one, so that checks of table cells do not
// depend on column widths.
func squeeze(s string) string { return blanks.ReplaceAllString(s, " ") }

func checkRequests(t *testing.T, got []recordedRequest, want []wantReq) {
	t.Helper()
	if len(got) != len(want) {
		var gs []string
		for _, g := range got {
			gs = append(gs, g.Method+" "+g.URI+" "+g.Body)
		}
		t.Fatalf("got %d requests, want %d:\n%s", len(got), len(want), strings.Join(gs, "\n"))
	}
	for i, w := range want {
		g := got[i]
		if g.Method != w.method || g.URI != w.uri {
			t.Errorf("request %d: got %s %s, want %s %s", i, g.Method, g.URI, w.method, w.uri)
			continue
		}
		if w.body == "" {
			if g.Body != "" {
				t.Errorf("request %d (%s %s): unexpected body %s", i, g.Method, g.URI, g.Body)
			}
			continue
		}
		if ct := g.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("request %d: Content-Type %q", i, ct)
		}
		var gv, wv any
		if err := json.Unmarshal([]byte(g.Body), &gv); err != nil {
			t.Errorf("request %d: body is not JSON: %v: %s", i, err, g.Body)
			continue
		}
		if err := json.Unmarshal([]byte(w.body), &wv); err != nil {
			t.Fatalf("request %d: bad test want body: %v", i, err)
		}
		if !reflect.DeepEqual(gv, wv) {
			t.Errorf("request %d (%s %s): body\n got %s\nwant %s", i, g.Method, g.URI, g.Body, w.body)
		}
	}
}

func TestNetworkVerbs(t *testing.T) {
	runVerbCases(t, []verbCase{
		{
			name:  "create plain",
			args:  []string{"network", "create", "demo-net"},
			setup: func(f *fakeNeutron) { f.on("POST /v2.0/networks", 201, one("network", demoNetwork)) },
			want:  []wantReq{{"POST", "/v2.0/networks", `{"network":{"name":"demo-net"}}`}},
			wantOut: []string{
				"Field ", "provider:segmentation_id  981", "subnets                   " + subnetID,
				"ipv4_address_scope", "router:external           False",
			},
		},
		{
			name:  "create external flat disabled",
			args:  []string{"network", "create", "--external", "--provider-network-type", "flat", "--provider-physical-network", "public", "--disable", "public"},
			setup: func(f *fakeNeutron) { f.on("POST /v2.0/networks", 201, one("network", publicNetwork)) },
			want: []wantReq{{"POST", "/v2.0/networks", `{"network":{"name":"public","router:external":true,
				"provider:network_type":"flat","provider:physical_network":"public","admin_state_up":false}}`}},
			wantOut: []string{"router:external", "True"},
		},
		{
			name:  "create vxlan with segment",
			args:  []string{"network", "create", "--provider-network-type", "vxlan", "--provider-segment", "981", "n1"},
			setup: func(f *fakeNeutron) { f.on("POST /v2.0/networks", 201, one("network", demoNetwork)) },
			want:  []wantReq{{"POST", "/v2.0/networks", `{"network":{"name":"n1","provider:network_type":"vxlan","provider:segmentation_id":981}}`}},
		},
		{
			name:    "create bad type sends nothing",
			args:    []string{"network", "create", "--provider-network-type", "vlan", "n1"},
			wantErr: `Error: invalid --provider-network-type "vlan"`,
		},
		{
			name:    "list",
			args:    []string{"network", "list"},
			setup:   func(f *fakeNeutron) { f.on("GET /v2.0/networks", 200, many("networks", demoNetwork, publicNetwork)) },
			want:    []wantReq{{"GET", "/v2.0/networks", ""}},
			wantOut: []string{"id", "name", "subnets", netID + "  demo-net  " + subnetID},
		},
		{
			name: "show by name",
			args: []string{"network", "show", "demo-net"},
			setup: func(f *fakeNeutron) {
				withNetworkNamed(f)
				f.on("GET /v2.0/networks/"+netID, 200, one("network", demoNetwork))
			},
			want: []wantReq{
				{"GET", "/v2.0/networks?name=demo-net", ""},
				{"GET", "/v2.0/networks/" + netID, ""},
			},
			wantOut: []string{"name                      demo-net"},
		},
		{
			name:  "show by id does no lookup",
			args:  []string{"network", "show", netID},
			setup: func(f *fakeNeutron) { f.on("GET /v2.0/networks/"+netID, 200, one("network", demoNetwork)) },
			want:  []wantReq{{"GET", "/v2.0/networks/" + netID, ""}},
		},
		{
			name:    "delete by name",
			args:    []string{"network", "delete", "demo-net"},
			setup:   func(f *fakeNeutron) { withNetworkNamed(f); f.on("DELETE /v2.0/networks/"+netID, 204, "") },
			want:    []wantReq{{"GET", "/v2.0/networks?name=demo-net", ""}, {"DELETE", "/v2.0/networks/" + netID, ""}},
			wantOut: []string{"Deleted network: demo-net"},
		},
	})
}

func TestSubnetVerbs(t *testing.T) {
	runVerbCases(t, []verbCase{
		{
			name: "create full",
			args: []string{"subnet", "create", "--network", "demo-net", "--subnet-range", "10.0.0.0/24", "--gateway", "none",
				"--allocation-pool", "start=10.0.0.10,end=10.0.0.20", "--allocation-pool", "end=10.0.0.40, start=10.0.0.30",
				"--no-dhcp", "--name", "demo-subnet"},
			setup: func(f *fakeNeutron) { withNetworkNamed(f); f.on("POST /v2.0/subnets", 201, one("subnet", demoSubnet)) },
			want: []wantReq{
				{"GET", "/v2.0/networks?name=demo-net", ""},
				{"POST", "/v2.0/subnets", `{"subnet":{"network_id":"` + netID + `","ip_version":4,"cidr":"10.0.0.0/24",
					"gateway_ip":null,"allocation_pools":[{"start":"10.0.0.10","end":"10.0.0.20"},{"start":"10.0.0.30","end":"10.0.0.40"}],
					"enable_dhcp":false,"name":"demo-subnet"}}`},
			},
			wantOut: []string{"cidr", "10.0.0.0/24", `[{"end":"10.0.0.254","start":"10.0.0.2"}]`},
		},
		{
			name:  "create minimal with gateway by network id",
			args:  []string{"subnet", "create", "--network", extNetID, "--subnet-range", "172.24.4.0/24", "--gateway", "172.24.4.1"},
			setup: func(f *fakeNeutron) { f.on("POST /v2.0/subnets", 201, one("subnet", demoSubnet)) },
			want: []wantReq{{"POST", "/v2.0/subnets",
				`{"subnet":{"network_id":"` + extNetID + `","ip_version":4,"cidr":"172.24.4.0/24","gateway_ip":"172.24.4.1"}}`}},
		},
		{
			name:    "create bad pool sends nothing",
			args:    []string{"subnet", "create", "--network", "demo-net", "--subnet-range", "10.0.0.0/24", "--allocation-pool", "start=10.0.0.10"},
			wantErr: `Error: invalid --allocation-pool "start=10.0.0.10": missing "end"`,
		},
		{
			name:    "create needs --network",
			args:    []string{"subnet", "create", "--subnet-range", "10.0.0.0/24"},
			wantErr: `required flag(s) "network" not set`,
		},
		{
			name: "list filtered by network name",
			args: []string{"subnet", "list", "--network", "demo-net"},
			setup: func(f *fakeNeutron) {
				withNetworkNamed(f)
				f.on("GET /v2.0/subnets?network_id="+netID, 200, many("subnets", demoSubnet))
			},
			want: []wantReq{
				{"GET", "/v2.0/networks?name=demo-net", ""},
				{"GET", "/v2.0/subnets?network_id=" + netID, ""},
			},
			wantOut: []string{subnetID + "  demo-subnet  " + netID + "  10.0.0.0/24"},
		},
		{
			name:  "list all",
			args:  []string{"subnet", "list"},
			setup: func(f *fakeNeutron) { f.on("GET /v2.0/subnets", 200, many("subnets")) },
			want:  []wantReq{{"GET", "/v2.0/subnets", ""}},
		},
	})
}

func TestRouterVerbs(t *testing.T) {
	routerByID := func(f *fakeNeutron) { f.on("PUT /v2.0/routers/"+routerID, 200, one("router", haRouterAdmin)) }
	runVerbCases(t, []verbCase{
		{
			name:    "create ha distributed",
			args:    []string{"router", "create", "--ha", "--distributed", "ha-router"},
			setup:   func(f *fakeNeutron) { f.on("POST /v2.0/routers", 201, one("router", haRouterAdmin)) },
			want:    []wantReq{{"POST", "/v2.0/routers", `{"router":{"name":"ha-router","ha":true,"distributed":true}}`}},
			wantOut: []string{"ha                       True"},
		},
		{
			name:  "create without ha flags sends no ha",
			args:  []string{"router", "create", "r1"},
			setup: func(f *fakeNeutron) { f.on("POST /v2.0/routers", 201, one("router", haRouterTenant)) },
			want:  []wantReq{{"POST", "/v2.0/routers", `{"router":{"name":"r1"}}`}},
		},
		{
			name:  "create no-ha",
			args:  []string{"router", "create", "--no-ha", "r1"},
			setup: func(f *fakeNeutron) { f.on("POST /v2.0/routers", 201, one("router", haRouterAdmin)) },
			want:  []wantReq{{"POST", "/v2.0/routers", `{"router":{"name":"r1","ha":false}}`}},
		},
		{
			name:    "create ha and no-ha conflict",
			args:    []string{"router", "create", "--ha", "--no-ha", "r1"},
			wantErr: "were all set",
		},
		{
			name:    "list as admin shows ha",
			args:    []string{"router", "list"},
			setup:   func(f *fakeNeutron) { f.on("GET /v2.0/routers", 200, many("routers", haRouterAdmin)) },
			want:    []wantReq{{"GET", "/v2.0/routers", ""}},
			wantOut: []string{"admin_state_up  ha\n", routerID + "  ha-router  ACTIVE  True            True\n"},
		},
		{
			name: "show vertical",
			args: []string{"router", "show", "ha-router"},
			setup: func(f *fakeNeutron) {
				withRouterNamed(f)
				f.on("GET /v2.0/routers/"+routerID, 200, one("router", haRouterTenant))
			},
			want:    []wantReq{{"GET", "/v2.0/routers?name=ha-router", ""}, {"GET", "/v2.0/routers/" + routerID, ""}},
			wantOut: []string{"Field                    Value\n", `external_gateway_info    {"enable_snat":true,`, "\nroutes\n"},
		},
		{
			name: "update everything",
			args: []string{"router", "update", routerID, "--name", "r2", "--disable", "--ha",
				"--route", "destination=10.1.0.0/24,gateway=10.0.0.5", "--route", "destination=10.2.0.0/24,nexthop=10.0.0.6"},
			setup: routerByID,
			want: []wantReq{{"PUT", "/v2.0/routers/" + routerID, `{"router":{"name":"r2","admin_state_up":false,"ha":true,
				"routes":[{"destination":"10.1.0.0/24","nexthop":"10.0.0.5"},{"destination":"10.2.0.0/24","nexthop":"10.0.0.6"}]}}`}},
		},
		{
			name:  "update no-route and enable and no-ha",
			args:  []string{"router", "update", "ha-router", "--no-route", "--enable", "--no-ha"},
			setup: func(f *fakeNeutron) { withRouterNamed(f); routerByID(f) },
			want: []wantReq{
				{"GET", "/v2.0/routers?name=ha-router", ""},
				{"PUT", "/v2.0/routers/" + routerID, `{"router":{"routes":[],"admin_state_up":true,"ha":false}}`},
			},
		},
		{
			name:    "update nothing",
			args:    []string{"router", "update", routerID},
			wantErr: "Error: nothing to update",
		},
		{
			name:    "update bad route",
			args:    []string{"router", "update", routerID, "--route", "destination=10.1.0.0/24"},
			wantErr: `invalid --route "destination=10.1.0.0/24": missing "gateway"`,
		},
		{
			name:    "update enable and disable conflict",
			args:    []string{"router", "update", routerID, "--enable", "--disable"},
			wantErr: "were all set",
		},
		{
			name: "delete several",
			args: []string{"router", "delete", routerID, "ha-router"},
			setup: func(f *fakeNeutron) {
				withRouterNamed(f)
				f.on("DELETE /v2.0/routers/"+routerID, 204, "")
			},
			want: []wantReq{
				{"DELETE", "/v2.0/routers/" + routerID, ""},
				{"GET", "/v2.0/routers?name=ha-router", ""},
				{"DELETE", "/v2.0/routers/" + routerID, ""},
			},
			wantOut: []string{"Deleted router: " + routerID + "\nDeleted router: ha-router\n"},
		},
		{
			name: "delete goes on after a failure",
			args: []string{"router", "delete", router2ID, routerID},
			setup: func(f *fakeNeutron) {
				f.on("DELETE /v2.0/routers/"+router2ID, 404, neutronError("RouterNotFound", "Router "+router2ID+" could not be found"))
				f.on("DELETE /v2.0/routers/"+routerID, 204, "")
			},
			want: []wantReq{
				{"DELETE", "/v2.0/routers/" + router2ID, ""},
				{"DELETE", "/v2.0/routers/" + routerID, ""},
			},
			wantOut: []string{"Deleted router: " + routerID},
			wantErr: "Failed to delete router " + router2ID + ": Error (HTTP 404 Not Found, RouterNotFound): Router " + router2ID +
				" could not be found\nError: 1 of 2 routers failed to delete",
		},
		{
			name: "add-interface by names",
			args: []string{"router", "add-interface", "ha-router", "demo-subnet"},
			setup: func(f *fakeNeutron) {
				withRouterNamed(f)
				f.on("GET /v2.0/subnets?name=demo-subnet", 200, many("subnets", demoSubnet))
				f.on("PUT /v2.0/routers/"+routerID+"/add_router_interface", 200, addInterfaceAnswer)
			},
			want: []wantReq{
				{"GET", "/v2.0/routers?name=ha-router", ""},
				{"GET", "/v2.0/subnets?name=demo-subnet", ""},
				{"PUT", "/v2.0/routers/" + routerID + "/add_router_interface", `{"subnet_id":"` + subnetID + `"}`},
			},
			wantOut: []string{"Added interface " + ifacePortID + " to router ha-router."},
		},
		{
			name: "add-interface port=",
			args: []string{"router", "add-interface", routerID, "port=" + portID},
			setup: func(f *fakeNeutron) {
				f.on("PUT /v2.0/routers/"+routerID+"/add_router_interface", 200, addInterfaceAnswer)
			},
			want: []wantReq{{"PUT", "/v2.0/routers/" + routerID + "/add_router_interface", `{"port_id":"` + portID + `"}`}},
		},
		{
			name: "remove-interface",
			args: []string{"router", "remove-interface", routerID, "subnet=" + subnetID},
			setup: func(f *fakeNeutron) {
				f.on("PUT /v2.0/routers/"+routerID+"/remove_router_interface", 200, addInterfaceAnswer)
			},
			want:    []wantReq{{"PUT", "/v2.0/routers/" + routerID + "/remove_router_interface", `{"subnet_id":"` + subnetID + `"}`}},
			wantOut: []string{"Removed interface from router " + routerID + "."},
		},
		{
			name:  "set-gateway disable-snat",
			args:  []string{"router", "set-gateway", "ha-router", "public", "--disable-snat"},
			setup: func(f *fakeNeutron) { withRouterNamed(f); withNetworkNamed(f); routerByID(f) },
			want: []wantReq{
				{"GET", "/v2.0/routers?name=ha-router", ""},
				{"GET", "/v2.0/networks?name=public", ""},
				{"PUT", "/v2.0/routers/" + routerID, `{"router":{"external_gateway_info":{"network_id":"` + extNetID + `","enable_snat":false}}}`},
			},
			wantOut: []string{"Set gateway for router ha-router"},
		},
		{
			name:  "set-gateway",
			args:  []string{"router", "set-gateway", routerID, extNetID},
			setup: routerByID,
			want:  []wantReq{{"PUT", "/v2.0/routers/" + routerID, `{"router":{"external_gateway_info":{"network_id":"` + extNetID + `"}}}`}},
		},
		{
			name:    "clear-gateway",
			args:    []string{"router", "clear-gateway", routerID},
			setup:   routerByID,
			want:    []wantReq{{"PUT", "/v2.0/routers/" + routerID, `{"router":{"external_gateway_info":{}}}`}},
			wantOut: []string{"Removed gateway from router " + routerID},
		},
		{
			name: "agents",
			args: []string{"router", "agents", "ha-router"},
			setup: func(f *fakeNeutron) {
				withRouterNamed(f)
				f.on("GET /v2.0/routers/"+routerID+"/l3-agents", 200, many("agents", l3AgentA, l3AgentB))
			},
			want: []wantReq{
				{"GET", "/v2.0/routers?name=ha-router", ""},
				{"GET", "/v2.0/routers/" + routerID + "/l3-agents", ""},
			},
			exact: "id                                    host  admin_state_up  alive  ha_state\n" +
				agentAID + "  l3-a  True            :-)    active\n" +
				agentBID + "  l3-b  True            xxx    standby\n",
		},
		{
			name: "history",
			args: []string{"router", "history", "ha-router"},
			setup: func(f *fakeNeutron) {
				withRouterNamed(f)
				f.on("GET /v2.0/routers/"+routerID+"/ha_transitions", 200, haTransitionsAnswer)
			},
			want: []wantReq{
				{"GET", "/v2.0/routers?name=ha-router", ""},
				{"GET", "/v2.0/routers/" + routerID + "/ha_transitions", ""},
			},
			exact: "at                    host  from     to       reason     agent_id\n" +
				"2026-11-21T16:02:10Z  l3-a  standby  active   startup    " + agentAID + "\n" +
				"2026-11-21T16:09:41Z  l3-b  standby  active   peer_lost  " + agentBID + "\n" +
				"2026-11-21T16:09:41Z  l3-a  active   standby  peer_lost  " + agentAID + "\n" +
				"2026-11-21T16:12:00Z  l3-a  standby  active              " + agentAID + "\n",
		},
		{
			name: "history with a limit, as JSON",
			args: []string{"-o", "json", "router", "history", "--limit", "1", routerID},
			setup: func(f *fakeNeutron) {
				f.on("GET /v2.0/routers/"+routerID+"/ha_transitions?limit=1", 200,
					`{"ha_transitions": [{"agent_id": "`+agentAID+`", "host": "l3-a", "from": "standby", "to": "active", "at": "2026-11-21T16:12:00Z", "reason": ""}]}`)
			},
			want:    []wantReq{{"GET", "/v2.0/routers/" + routerID + "/ha_transitions?limit=1", ""}},
			wantOut: []string{"[", `"host": "l3-a"`, `"reason": ""`},
		},
		{
			name: "switchover without waiting",
			args: []string{"router", "switchover", "ha-router", "--to-host", "l3-b", "--wait", "0"},
			setup: func(f *fakeNeutron) {
				withRouterNamed(f)
				f.on("GET /v2.0/routers/"+routerID+"/l3-agents", 200, many("agents", l3AgentA, l3AgentB))
				f.on("POST /v2.0/routers/"+routerID+"/switchover", 202,
					`{"switchover": {"router_id": "`+routerID+`", "agent_id": "`+agentBID+`", "host": "l3-b", "requested_at": "2026-11-21T16:12:00Z"}}`)
			},
			want: []wantReq{
				{"GET", "/v2.0/routers?name=ha-router", ""},
				{"GET", "/v2.0/routers/" + routerID + "/l3-agents", ""},
				{"POST", "/v2.0/routers/" + routerID + "/switchover", `{"agent_id":"` + agentBID + `"}`},
			},
			wantOut: []string{"host", "l3-b", agentBID},
		},
		{
			name: "switchover waits until the host is the only active one",
			args: []string{"router", "switchover", routerID, "--to-host", "l3-a"},
			setup: func(f *fakeNeutron) {
				f.on("GET /v2.0/routers/"+routerID+"/l3-agents", 200, many("agents", l3AgentA, l3AgentB))
				f.on("POST /v2.0/routers/"+routerID+"/switchover", 202,
					`{"switchover": {"router_id": "`+routerID+`", "agent_id": "`+agentAID+`", "host": "l3-a", "requested_at": null}}`)
			},
			want: []wantReq{
				{"GET", "/v2.0/routers/" + routerID + "/l3-agents", ""},
				{"POST", "/v2.0/routers/" + routerID + "/switchover", `{"agent_id":"` + agentAID + `"}`},
				{"GET", "/v2.0/routers/" + routerID + "/l3-agents", ""},
			},
			wantOut: []string{"router " + routerID + ": master on l3-a (l3-a=active l3-b=standby)"},
		},
		{
			name: "switchover to a host without the router's agent",
			args: []string{"router", "switchover", routerID, "--to-host", "l3-z"},
			setup: func(f *fakeNeutron) {
				f.on("GET /v2.0/routers/"+routerID+"/l3-agents", 200, many("agents", l3AgentA, l3AgentB))
			},
			want:    []wantReq{{"GET", "/v2.0/routers/" + routerID + "/l3-agents", ""}},
			wantErr: `router ` + routerID + ` has no L3 agent on host "l3-z" (its agents are on: l3-a, l3-b)`,
		},
		{
			name: "history of a router the server does not show",
			args: []string{"router", "history", routerID},
			setup: func(f *fakeNeutron) {
				f.on("GET /v2.0/routers/"+routerID+"/ha_transitions", 404, neutronError("RouterNotFound", "Router "+routerID+" could not be found"))
			},
			want:    []wantReq{{"GET", "/v2.0/routers/" + routerID + "/ha_transitions", ""}},
			wantErr: "Router " + routerID + " could not be found",
		},
	})
}

func TestFloatingIPVerbs(t *testing.T) {
	runVerbCases(t, []verbCase{
		{
			name: "create with port and address",
			args: []string{"floatingip", "create", "public", "--port", "vm-port", "--floating-ip-address", "172.24.4.112"},
			setup: func(f *fakeNeutron) {
				withNetworkNamed(f)
				f.on("GET /v2.0/ports?name=vm-port", 200, many("ports", vmPort))
				f.on("POST /v2.0/floatingips", 201, one("floatingip", fipAssociated))
			},
			want: []wantReq{
				{"GET", "/v2.0/networks?name=public", ""},
				{"GET", "/v2.0/ports?name=vm-port", ""},
				{"POST", "/v2.0/floatingips", `{"floatingip":{"floating_network_id":"` + extNetID + `","port_id":"` + portID + `","floating_ip_address":"172.24.4.112"}}`},
			},
			wantOut: []string{"floating_ip_address  172.24.4.112"},
		},
		{
			name:    "create plain",
			args:    []string{"floatingip", "create", extNetID},
			setup:   func(f *fakeNeutron) { f.on("POST /v2.0/floatingips", 201, one("floatingip", fipUnassociated)) },
			want:    []wantReq{{"POST", "/v2.0/floatingips", `{"floatingip":{"floating_network_id":"` + extNetID + `"}}`}},
			wantOut: []string{"\nport_id\n", "floating_ip_address 172.24.4.143\n"},
		},
		{
			name:    "associate by ids",
			args:    []string{"floatingip", "associate", fipID, portID},
			setup:   func(f *fakeNeutron) { f.on("PUT /v2.0/floatingips/"+fipID, 200, one("floatingip", fipAssociated)) },
			want:    []wantReq{{"PUT", "/v2.0/floatingips/" + fipID, `{"floatingip":{"port_id":"` + portID + `"}}`}},
			wantOut: []string{"Associated floating IP " + fipID},
		},
		{
			name: "associate by address and port name",
			args: []string{"floatingip", "associate", "172.24.4.143", "vm-port"},
			setup: func(f *fakeNeutron) {
				f.on("GET /v2.0/floatingips?floating_ip_address=172.24.4.143", 200, many("floatingips", fipUnassociated))
				f.on("GET /v2.0/ports?name=vm-port", 200, many("ports", vmPort))
				f.on("PUT /v2.0/floatingips/"+fipID, 200, one("floatingip", fipAssociated))
			},
			want: []wantReq{
				{"GET", "/v2.0/floatingips?floating_ip_address=172.24.4.143", ""},
				{"GET", "/v2.0/ports?name=vm-port", ""},
				{"PUT", "/v2.0/floatingips/" + fipID, `{"floatingip":{"port_id":"` + portID + `"}}`},
			},
		},
		{
			name: "associate conflict",
			args: []string{"floatingip", "associate", fipID, portID},
			setup: func(f *fakeNeutron) {
				f.on("PUT /v2.0/floatingips/"+fipID, 409, neutronError("FloatingIPPortAlreadyAssociated", "Cannot associate floating IP."))
			},
			want:    []wantReq{{"PUT", "/v2.0/floatingips/" + fipID, `{"floatingip":{"port_id":"` + portID + `"}}`}},
			wantErr: "Error (HTTP 409 Conflict, FloatingIPPortAlreadyAssociated): Cannot associate floating IP.\n",
		},
		{
			name:    "disassociate",
			args:    []string{"floatingip", "disassociate", fip2ID},
			setup:   func(f *fakeNeutron) { f.on("PUT /v2.0/floatingips/"+fip2ID, 200, one("floatingip", fipUnassociated)) },
			want:    []wantReq{{"PUT", "/v2.0/floatingips/" + fip2ID, `{"floatingip":{"port_id":null}}`}},
			wantOut: []string{"Disassociated floating IP " + fip2ID},
		},
		{
			name: "list",
			args: []string{"floatingip", "list"},
			setup: func(f *fakeNeutron) {
				f.on("GET /v2.0/floatingips", 200, many("floatingips", fipUnassociated, fipAssociated))
			},
			want: []wantReq{{"GET", "/v2.0/floatingips", ""}},
			exact: "id                                    floating_ip_address  fixed_ip_address  port_id\n" +
				fipID + "  172.24.4.143\n" +
				fip2ID + "  172.24.4.112         10.0.0.242        " + portID + "\n",
		},
		{
			name:    "delete",
			args:    []string{"floatingip", "delete", fipID},
			setup:   func(f *fakeNeutron) { f.on("DELETE /v2.0/floatingips/"+fipID, 204, "") },
			want:    []wantReq{{"DELETE", "/v2.0/floatingips/" + fipID, ""}},
			wantOut: []string{"Deleted floatingip: " + fipID},
		},
		{
			name:    "neither id nor address",
			args:    []string{"floatingip", "delete", "my-fip"},
			wantErr: `Error: "my-fip" is neither a floating IP id nor an IP address`,
		},
	})
}

func TestAgentList(t *testing.T) {
	runVerbCases(t, []verbCase{
		{
			name:  "all",
			args:  []string{"agent", "list"},
			setup: func(f *fakeNeutron) { f.on("GET /v2.0/agents", 200, many("agents", lbAgent, l3AgentA, l3AgentB)) },
			want:  []wantReq{{"GET", "/v2.0/agents", ""}},
			exact: "id                                    agent_type          host  alive  admin_state_up\n" +
				lbAgentID + "  Linux bridge agent  l3-a  :-)    False\n" +
				agentAID + "  L3 agent            l3-a  :-)    True\n" +
				agentBID + "  L3 agent            l3-b  xxx    True\n",
		},
		{
			name: "filtered",
			args: []string{"agent", "list", "--agent-type", "L3 agent", "--host", "l3-a"},
			setup: func(f *fakeNeutron) {
				f.on("GET /v2.0/agents?agent_type=L3+agent&host=l3-a", 200, many("agents", l3AgentA))
			},
			want: []wantReq{{"GET", "/v2.0/agents?agent_type=L3+agent&host=l3-a", ""}},
		},
	})
}

// Names resolve to ids through a ?name= filter; 0 or 2 matches are errors and
// nothing else is sent.
func TestNameResolution(t *testing.T) {
	runVerbCases(t, []verbCase{
		{
			name:    "no network of that name",
			args:    []string{"network", "show", "nope"},
			setup:   func(f *fakeNeutron) { f.on("GET /v2.0/networks?name=nope", 200, many("networks")) },
			want:    []wantReq{{"GET", "/v2.0/networks?name=nope", ""}},
			wantErr: "Error: Unable to find network with name 'nope'\n",
		},
		{
			name: "two routers of that name",
			args: []string{"router", "delete", "dup"},
			setup: func(f *fakeNeutron) {
				f.on("GET /v2.0/routers?name=dup", 200, many("routers", `{"id":"`+routerID+`","name":"dup"}`, `{"id":"`+router2ID+`","name":"dup"}`))
			},
			want:    []wantReq{{"GET", "/v2.0/routers?name=dup", ""}},
			wantErr: "Error: Multiple router matches found for name 'dup', use an ID to be more specific.\n",
		},
		{
			name: "two subnets of that name stop add-interface",
			args: []string{"router", "add-interface", routerID, "dup"},
			setup: func(f *fakeNeutron) {
				f.on("GET /v2.0/subnets?name=dup", 200, many("subnets", `{"id":"`+subnetID+`","name":"dup"}`, `{"id":"`+netID+`","name":"dup"}`))
			},
			want:    []wantReq{{"GET", "/v2.0/subnets?name=dup", ""}},
			wantErr: "Multiple subnet matches found for name 'dup'",
		},
		{
			name: "a server ignoring the filter does not pick a wrong one",
			args: []string{"network", "delete", "demo"},
			setup: func(f *fakeNeutron) {
				f.on("GET /v2.0/networks?name=demo", 200, many("networks", demoNetwork, publicNetwork))
			},
			want:    []wantReq{{"GET", "/v2.0/networks?name=demo", ""}},
			wantErr: "Unable to find network with name 'demo'",
		},
		{
			name: "no floating IP at that address",
			args: []string{"floatingip", "disassociate", "172.24.4.9"},
			setup: func(f *fakeNeutron) {
				f.on("GET /v2.0/floatingips?floating_ip_address=172.24.4.9", 200, many("floatingips"))
			},
			want:    []wantReq{{"GET", "/v2.0/floatingips?floating_ip_address=172.24.4.9", ""}},
			wantErr: "Unable to find floatingip with address '172.24.4.9'",
		},
		{
			name:    "name with spaces is escaped",
			args:    []string{"router", "show", "my router"},
			setup:   func(f *fakeNeutron) { f.on("GET /v2.0/routers?name=my+router", 200, many("routers")) },
			want:    []wantReq{{"GET", "/v2.0/routers?name=my+router", ""}},
			wantErr: "Unable to find router with name 'my router'",
		},
	})
}

func TestErrorRendering(t *testing.T) {
	cases := []struct {
		name       string
		status     int
		body       string
		text       bool
		wantStderr string
	}{
		{
			name:   "neutron conflict",
			status: http.StatusConflict,
			body: neutronError("IpAddressInUse",
				"Unable to complete operation for network "+netID+". The IP address 10.0.0.1 is in use."),
			wantStderr: "Error (HTTP 409 Conflict, IpAddressInUse): Unable to complete operation for network " + netID +
				". The IP address 10.0.0.1 is in use.\n",
		},
		{
			name:       "neutron not found",
			status:     http.StatusNotFound,
			body:       neutronError("NetworkNotFound", "Network "+netID+" could not be found."),
			wantStderr: "Error (HTTP 404 Not Found, NetworkNotFound): Network " + netID + " could not be found.\n",
		},
		{
			name:       "neutron error with detail",
			status:     http.StatusBadRequest,
			body:       `{"NeutronError":{"type":"HTTPBadRequest","message":"Invalid input","detail":"cidr is bad"}}`,
			wantStderr: "Error (HTTP 400 Bad Request, HTTPBadRequest): Invalid input\nDetail: cidr is bad\n",
		},
		{
			name:       "plain text 401",
			status:     http.StatusUnauthorized,
			body:       "401 Unauthorized\n\nThis server could not verify that you are authorized to access the document you requested.\n",
			text:       true,
			wantStderr: "Error (HTTP 401 Unauthorized): 401 Unauthorized\n",
		},
		{
			name:       "empty body",
			status:     http.StatusServiceUnavailable,
			body:       "",
			wantStderr: "Error (HTTP 503 Service Unavailable): Service Unavailable\n",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			f := newFakeNeutron(t)
			if tc.text {
				f.onText("GET /v2.0/networks/"+netID, tc.status, tc.body)
			} else {
				f.on("GET /v2.0/networks/"+netID, tc.status, tc.body)
			}
			res := runCLI(t, f.srv.URL, "network", "show", netID)
			if res.err == nil {
				t.Fatal("want an error (non-zero exit)")
			}
			if res.errOut != tc.wantStderr {
				t.Errorf("stderr\n got %q\nwant %q", res.errOut, tc.wantStderr)
			}
			if res.out != "" {
				t.Errorf("stdout should be empty, got %q", res.out)
			}
		})
	}
}

func TestJSONOutput(t *testing.T) {
	t.Run("show prints the resource as returned", func(t *testing.T) {
		clearEnv(t)
		f := newFakeNeutron(t)
		f.on("GET /v2.0/routers/"+routerID, 200, `{"router":{"name":"ha-router","id":"`+routerID+`","ha":true,"routes":[]}}`)
		res := runCLI(t, f.srv.URL, "-o", "json", "router", "show", routerID)
		if res.err != nil {
			t.Fatal(res.err, res.errOut)
		}
		want := "{\n  \"name\": \"ha-router\",\n  \"id\": \"" + routerID + "\",\n  \"ha\": true,\n  \"routes\": []\n}\n"
		if res.out != want {
			t.Errorf("got\n%s\nwant\n%s", res.out, want)
		}
	})
	t.Run("list prints the array", func(t *testing.T) {
		clearEnv(t)
		f := newFakeNeutron(t)
		f.on("GET /v2.0/networks", 200, many("networks", demoNetwork, publicNetwork))
		res := runCLI(t, f.srv.URL, "network", "list", "--output", "json")
		if res.err != nil {
			t.Fatal(res.err, res.errOut)
		}
		var got []map[string]any
		if err := json.Unmarshal([]byte(res.out), &got); err != nil {
			t.Fatalf("not a JSON array: %v\n%s", err, res.out)
		}
		if len(got) != 2 || got[0]["id"] != netID || got[1]["router:external"] != true {
			t.Errorf("unexpected %v", got)
		}
		if !strings.Contains(res.out, "\n  {\n    \"admin_state_up\": true,") {
			t.Errorf("not indented:\n%s", res.out)
		}
	})
	t.Run("add-interface prints the answer", func(t *testing.T) {
		clearEnv(t)
		f := newFakeNeutron(t)
		f.on("PUT /v2.0/routers/"+routerID+"/add_router_interface", 200, addInterfaceAnswer)
		res := runCLI(t, f.srv.URL, "-o", "json", "router", "add-interface", routerID, subnetID)
		if res.err != nil {
			t.Fatal(res.err, res.errOut)
		}
		var want bytes.Buffer
		json.Indent(&want, []byte(addInterfaceAnswer), "", "  ")
		if res.out != want.String()+"\n" {
			t.Errorf("got\n%s", res.out)
		}
	})
	t.Run("delete prints nothing", func(t *testing.T) {
		clearEnv(t)
		f := newFakeNeutron(t)
		f.on("DELETE /v2.0/routers/"+routerID, 204, "")
		res := runCLI(t, f.srv.URL, "-o", "json", "router", "delete", routerID)
		if res.err != nil || res.out != "" {
			t.Errorf("err %v, out %q", res.err, res.out)
		}
	})
	t.Run("bad format", func(t *testing.T) {
		clearEnv(t)
		f := newFakeNeutron(t)
		res := runCLI(t, f.srv.URL, "-o", "yaml", "router", "list")
		if res.err == nil || !strings.Contains(res.errOut, `invalid --output "yaml"`) {
			t.Errorf("err %v, stderr %q", res.err, res.errOut)
		}
		if n := len(f.requests()); n != 0 {
			t.Errorf("%d requests sent", n)
		}
	})
}

func TestTableOutput(t *testing.T) {
	clearEnv(t)
	f := newFakeNeutron(t)
	f.on("GET /v2.0/routers", 200, many("routers", haRouterTenant, legacyRouterTenant))
	res := runCLI(t, f.srv.URL, "router", "list")
	if res.err != nil {
		t.Fatal(res.err, res.errOut)
	}
	// Tenants do not see "ha": no such column.
	want := "" +
		"id                                    name           status  admin_state_up\n" +
		routerID + "  ha-router      ACTIVE  True\n" +
		router2ID + "  legacy-router  ACTIVE  False\n"
	if res.out != want {
		t.Errorf("got\n%s\nwant\n%s", res.out, want)
	}
}
