package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/agentapi"
	"github.com/l3ha/l3ha/internal/api"
	"github.com/l3ha/l3ha/internal/servertest"
)

// Bad input must be refused with Neutron's status code and NeutronError, and
// must change nothing: every case below runs against a settled, realistic
// fixture (external network, tenant networks, an HA router with an interface,
// a gateway and a floating IP, two agents), and the whole database is dumped
// before and after each request and compared.
//
// The fixture is settled before the first case: both agents have reported
// their ha_state and the router's ports have moved to the active host, and two
// dumps taken apart are equal. After that nothing changes the database on its
// own (routine heartbeats only touch agents.heartbeat_at, which Dump leaves
// out), so the comparison is exact: router_bindings.ha_state included.

// biWho is the identity a request is sent as (noauth headers).
type biWho string

const (
	biAdmin  biWho = "admin" // X-Project-Id admin, X-Roles admin
	biDemo   biWho = "demo"  // the fixture's tenant
	biOther  biWho = "other" // another tenant
	biNobody biWho = ""      // no identity headers at all
)

// biCase is one bad request and the answer Neutron gives to it.
type biCase struct {
	name   string
	who    biWho
	method string
	path   string
	header map[string]string // extra headers
	body   string
	status int
	typ    string // NeutronError type
	msg    string // exact message, when Neutron's is known ("" = not checked)
	substr string // the message must contain this ("" = not checked)
	// plain401 marks the API's own 401: Neutron's keystonemiddleware answers
	// it in text/plain, not as a NeutronError, and so does l3ha.
	plain401 bool
}

// biFixture holds the ids of the fixture's objects.
type biFixture struct {
	extNet, extSub     string
	net, sub           string // demo-net 10.0.0.0/24, on the router
	net2, sub2         string // demo-net2 10.0.0.0/25, overlaps sub
	router             string
	ifacePort          string // the router's interface on sub (10.0.0.1)
	gwPort             string
	vmPort, vmIP       string
	fip, fip2          string // fip: on vmPort; fip2: unassociated
	lonelyPort         string // on net2, which no router connects outside
	haNet, haSub       string
	haPort             string
	agents             []string // agent ids
	seg                int      // demo-net's VXLAN id
	otherNet, otherSub string   // belong to project "other"
}

func TestBadInputIsRejectedAndChangesNothing(t *testing.T) {
	for _, backend := range servertest.Backends(t) {
		t.Run(backend, func(t *testing.T) {
			srv := servertest.Start(t, servertest.Options{Backend: backend})
			srv.StartFakeAgent(t, "net1")
			srv.StartFakeAgent(t, "net2")
			fx := biBuildFixture(t, srv)
			biSettle(t, srv, fx)
			for _, c := range biCases(fx) {
				biRunCase(t, srv, c)
			}
			// The fixture survived every case: the router still has one
			// active and one standby agent.
			biSettle(t, srv, fx)
		})
	}
}

// TestBadInputAgentEndpointNeedsTheAgentToken: an agent endpoint request
// without an agent token, or with a wrong one, is 401, one with another
// host's credential is 403, and neither changes anything, even when it
// would register an agent or claim mastership.
func TestBadInputAgentEndpointNeedsTheAgentToken(t *testing.T) {
	for _, backend := range servertest.Backends(t) {
		t.Run(backend, func(t *testing.T) {
			srv := servertest.Start(t, servertest.Options{Backend: backend})
			srv.StartFakeAgent(t, "net1")
			srv.StartFakeAgent(t, "net2")
			fx := biBuildFixture(t, srv)
			biSettle(t, srv, fx)
			hb := `{"host": "intruder", "agent_type": "L3 agent", "configurations": {}}`
			// Claim that both hosts are active: accepted, this would make
			// two masters.
			claim := fmt.Sprintf(`{"host": "net1", "states": {%q: "active"}}`, fx.router)
			claim2 := fmt.Sprintf(`{"host": "net2", "states": {%q: "active"}}`, fx.router)
			const typ, msg = "HTTPUnauthorized", "missing or invalid agent token"
			for _, c := range []biCase{
				{name: "heartbeat without token", method: "POST", path: agentapi.PathHeartbeat, body: hb, status: 401, typ: typ, msg: msg},
				{name: "heartbeat with wrong token", method: "POST", path: agentapi.PathHeartbeat, body: hb,
					header: map[string]string{agentapi.TokenHeader: "nope"}, status: 401, typ: typ, msg: msg},
				{name: "heartbeat with a longer token", method: "POST", path: agentapi.PathHeartbeat, body: hb,
					header: map[string]string{agentapi.TokenHeader: "x" + servertest.AgentTokenOf("intruder")}, status: 401, typ: typ, msg: msg},
				{name: "heartbeat with the API token header instead", method: "POST", path: agentapi.PathHeartbeat, body: hb,
					header: map[string]string{"X-Auth-Token": servertest.AgentTokenOf("intruder")}, status: 401, typ: typ, msg: msg},
				{name: "state without token", method: "GET", path: agentapi.PathState + "?host=net1", status: 401, typ: typ, msg: msg},
				{name: "ha_states without token", method: "POST", path: agentapi.PathHAStates, body: claim, status: 401, typ: typ, msg: msg},
				{name: "ha_states with wrong token (net1)", method: "POST", path: agentapi.PathHAStates, body: claim,
					header: map[string]string{agentapi.TokenHeader: "wrong"}, status: 401, typ: typ, msg: msg},
				{name: "ha_states with wrong token (net2)", method: "POST", path: agentapi.PathHAStates, body: claim2,
					header: map[string]string{agentapi.TokenHeader: "wrong"}, status: 401, typ: typ, msg: msg},
				{name: "unknown agent path without token", method: "GET", path: "/agent/v1/nothing", status: 401, typ: typ, msg: msg},
				// A host's credential speaks for that host only.
				{name: "heartbeat as another host", method: "POST", path: agentapi.PathHeartbeat, body: `{"host": "net2", "agent_type": "L3 agent", "configurations": {}}`,
					header: map[string]string{agentapi.TokenHeader: servertest.AgentTokenOf("net1")}, status: 403, typ: "HTTPForbidden"},
				{name: "heartbeat registering a new host with another host's credential", method: "POST", path: agentapi.PathHeartbeat, body: hb,
					header: map[string]string{agentapi.TokenHeader: servertest.AgentTokenOf("net1")}, status: 403, typ: "HTTPForbidden"},
				{name: "desired state of another host", method: "GET", path: agentapi.PathState + "?host=net2",
					header: map[string]string{agentapi.TokenHeader: servertest.AgentTokenOf("net1")}, status: 403, typ: "HTTPForbidden"},
				{name: "ha_states for another host", method: "POST", path: agentapi.PathHAStates, body: claim2,
					header: map[string]string{agentapi.TokenHeader: servertest.AgentTokenOf("net1")}, status: 403, typ: "HTTPForbidden"},
				// With the right token, bad bodies are still refused.
				{name: "ha_states bad state", method: "POST", path: agentapi.PathHAStates,
					body:   fmt.Sprintf(`{"host": "net1", "states": {%q: "master"}}`, fx.router),
					header: map[string]string{agentapi.TokenHeader: servertest.AgentTokenOf("net1")}, status: 400, typ: "HTTPBadRequest"},
				{name: "ha_states malformed", method: "POST", path: agentapi.PathHAStates, body: `{"host": "net1", "states": `,
					header: map[string]string{agentapi.TokenHeader: servertest.AgentTokenOf("net1")}, status: 400, typ: "HTTPBadRequest"},
				{name: "ha_states unknown host", method: "POST", path: agentapi.PathHAStates,
					body:   fmt.Sprintf(`{"host": "nobody", "states": {%q: "active"}}`, fx.router),
					header: map[string]string{agentapi.TokenHeader: servertest.AgentTokenOf("nobody")}, status: 404, typ: "AgentNotFound"},
				{name: "heartbeat without host", method: "POST", path: agentapi.PathHeartbeat, body: `{"agent_type": "L3 agent"}`,
					header: map[string]string{agentapi.TokenHeader: servertest.AgentTokenOf("net1")}, status: 400, typ: "HTTPBadRequest"},
				{name: "heartbeat of another agent type", method: "POST", path: agentapi.PathHeartbeat,
					body:   `{"host": "intruder", "agent_type": "DHCP agent"}`,
					header: map[string]string{agentapi.TokenHeader: servertest.AgentTokenOf("intruder")}, status: 400, typ: "HTTPBadRequest"},
			} {
				biRunCase(t, srv, c)
			}
		})
	}
}

// TestBadInputTokenModeNeedsAKnownToken: in token mode a request without
// X-Auth-Token or with an unknown one is 401 (in Neutron's text/plain) and
// changes nothing; a known token still gets Neutron's errors.
func TestBadInputTokenModeNeedsAKnownToken(t *testing.T) {
	for _, backend := range servertest.Backends(t) {
		t.Run(backend, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "tokens")
			if err := os.WriteFile(file, []byte("# test tokens\nadmintok admin admin\ndemotok demo member,reader\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			auth, err := api.LoadTokenFile(file)
			if err != nil {
				t.Fatal(err)
			}
			srv := servertest.Start(t, servertest.Options{Backend: backend, Auth: auth})
			var net struct{ Network map[string]any }
			if err := biCall(srv.URL, "POST", "/v2.0/networks", map[string]string{"X-Auth-Token": "demotok"},
				`{"network": {"name": "demo-net"}}`, 201, &net); err != nil {
				t.Fatal(err)
			}
			id := net.Network["id"].(string)
			if net.Network["project_id"] != "demo" {
				t.Fatalf("network created with demotok belongs to %v", net.Network["project_id"])
			}
			none := map[string]string{}
			bad := map[string]string{"X-Auth-Token": "not-a-token"}
			// X-Project-Id/X-Roles mean nothing in token mode.
			spoof := map[string]string{"X-Project-Id": "admin", "X-Roles": "admin"}
			empty := map[string]string{"X-Auth-Token": ""}
			upper := map[string]string{"X-Auth-Token": "ADMINTOK"}
			var cases []biCase
			for _, h := range []struct {
				name string
				hdr  map[string]string
			}{{"no token", none}, {"unknown token", bad}, {"noauth headers", spoof}, {"empty token", empty}, {"token of another case", upper}} {
				for _, r := range []struct{ method, path, body string }{
					{"GET", "/v2.0/networks", ""},
					{"GET", "/v2.0/networks/" + id, ""},
					{"POST", "/v2.0/networks", `{"network": {"name": "x"}}`},
					{"PUT", "/v2.0/networks/" + id, `{"network": {"name": "pwn"}}`},
					{"DELETE", "/v2.0/networks/" + id, ""},
					{"POST", "/v2.0/routers", `{"router": {"name": "r", "ha": true}}`},
					{"GET", "/v2.0/extensions", ""},
					{"GET", "/v2.0", ""},
				} {
					cases = append(cases, biCase{
						name: fmt.Sprintf("%s %s %s", h.name, r.method, r.path), method: r.method, path: r.path,
						header: h.hdr, body: r.body, status: 401, plain401: true,
					})
				}
			}
			demo := map[string]string{"X-Auth-Token": "demotok"}
			cases = append(cases,
				biCase{name: "known token, malformed JSON", method: "POST", path: "/v2.0/networks", header: demo,
					body: `{"network": {`, status: 400, typ: "HTTPBadRequest", msg: "Body contains invalid data"},
				biCase{name: "known tenant token sets ha", method: "POST", path: "/v2.0/routers", header: demo,
					body: `{"router": {"name": "r", "ha": true}}`, status: 403, typ: "PolicyNotAuthorized",
					msg: "(rule:create_router and rule:create_router:ha) is disallowed by policy"},
				biCase{name: "known tenant token creates an external network", method: "POST", path: "/v2.0/networks", header: demo,
					body: `{"network": {"router:external": true}}`, status: 403, typ: "PolicyNotAuthorized",
					msg: "(rule:create_network and rule:create_network:router:external) is disallowed by policy"},
			)
			for _, c := range cases {
				biRunCase(t, srv, c)
			}
		})
	}
}

func biCases(fx *biFixture) []biCase {
	long := strings.Repeat("n", 256)
	huge := `{"network": {"name": "` + strings.Repeat("x", api.MaxBodyBytes) + `"}}`
	padded := `{"network": {"name": "padded"}}` + strings.Repeat(" ", api.MaxBodyBytes)
	const bogusID = "00000000-0000-0000-0000-000000000000"
	rtr := "/v2.0/routers/" + fx.router
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	return []biCase{
		// ---- body syntax (06-errors.06/07/08)
		{name: "malformed JSON", who: biDemo, method: "POST", path: "/v2.0/networks", body: `{"network": {`,
			status: 400, typ: "HTTPBadRequest", msg: "Body contains invalid data"},
		{name: "malformed JSON on update", who: biDemo, method: "PUT", path: rtr, body: `{"router": {"name": }}`,
			status: 400, typ: "HTTPBadRequest", msg: "Body contains invalid data"},
		{name: "empty body", who: biDemo, method: "POST", path: "/v2.0/networks", body: ``,
			status: 400, typ: "HTTPBadRequest", msg: "Body contains invalid data"},
		{name: "body is null", who: biDemo, method: "POST", path: "/v2.0/networks", body: `null`,
			status: 400, typ: "HTTPBadRequest", msg: "Body contains invalid data"},
		{name: "body is a list", who: biDemo, method: "POST", path: "/v2.0/networks", body: `[{"network": {}}]`,
			status: 400, typ: "HTTPBadRequest", msg: "Body contains invalid data"},
		{name: "two JSON documents", who: biDemo, method: "POST", path: "/v2.0/networks", body: `{"network": {"name": "a"}} {"network": {"name": "b"}}`,
			status: 400, typ: "HTTPBadRequest", msg: "Body contains invalid data"},
		{name: "trailing bracket", who: biDemo, method: "POST", path: "/v2.0/networks", body: `{"network": {"name": "a"}}]`,
			status: 400, typ: "HTTPBadRequest", msg: "Body contains invalid data"},
		{name: "resource is null", who: biDemo, method: "POST", path: "/v2.0/networks", body: `{"network": null}`,
			status: 400, typ: "HTTPBadRequest"},
		{name: "resource is a list", who: biDemo, method: "POST", path: "/v2.0/networks", body: `{"network": [{"name": "x"}]}`,
			status: 400, typ: "HTTPBadRequest"},
		{name: "missing resource key", who: biDemo, method: "POST", path: "/v2.0/networks", body: `{"name": "x"}`,
			status: 400, typ: "HTTPBadRequest", msg: "Unable to find 'network' in request body"},
		{name: "wrong resource key", who: biDemo, method: "PUT", path: rtr, body: `{"network": {"name": "x"}}`,
			status: 400, typ: "HTTPBadRequest", msg: "Unable to find 'router' in request body"},
		{name: "unknown attribute", who: biDemo, method: "POST", path: "/v2.0/networks", body: `{"network": {"name": "x", "bogus": 1}}`,
			status: 400, typ: "HTTPBadRequest", msg: "Unrecognized attribute(s) 'bogus'"},
		{name: "unknown attribute on update", who: biDemo, method: "PUT", path: rtr, body: `{"router": {"name": "x", "bogus": 1}}`,
			status: 400, typ: "HTTPBadRequest", msg: "Unrecognized attribute(s) 'bogus'"},
		{name: "read-only attribute on update", who: biDemo, method: "PUT", path: "/v2.0/subnets/" + fx.sub, body: `{"subnet": {"cidr": "10.9.0.0/24"}}`,
			status: 400, typ: "HTTPBadRequest", msg: "Cannot update read-only attribute cidr"},
		{name: "tenant_id on update", who: biDemo, method: "PUT", path: rtr, body: `{"router": {"tenant_id": "other"}}`,
			status: 400, typ: "HTTPBadRequest", msg: "Cannot update read-only attribute tenant_id"},
		{name: "oversized body", who: biDemo, method: "POST", path: "/v2.0/networks", body: huge,
			status: 413, typ: "HTTPRequestEntityTooLarge"},
		{name: "oversized body of whitespace after valid JSON", who: biDemo, method: "POST", path: "/v2.0/networks", body: padded,
			status: 413, typ: "HTTPRequestEntityTooLarge"},
		{name: "oversized add_router_interface", who: biDemo, method: "PUT", path: rtr + "/add_router_interface",
			body: `{"subnet_id": "` + strings.Repeat("x", api.MaxBodyBytes) + `"}`, status: 413, typ: "HTTPRequestEntityTooLarge"},

		// ---- wrong types (06-errors.10)
		{name: "router name is a number", who: biDemo, method: "POST", path: "/v2.0/routers", body: `{"router": {"name": 5}}`,
			status: 400, typ: "HTTPBadRequest", msg: "Invalid input for name. Reason: '5' is not a valid string."},
		{name: "router rename to a number", who: biDemo, method: "PUT", path: rtr, body: `{"router": {"name": 5}}`,
			status: 400, typ: "HTTPBadRequest", msg: "Invalid input for name. Reason: '5' is not a valid string."},
		{name: "network name is a list", who: biDemo, method: "POST", path: "/v2.0/networks", body: `{"network": {"name": ["a"]}}`,
			status: 400, typ: "HTTPBadRequest", substr: "is not a valid string"},
		{name: "admin_state_up maybe", who: biDemo, method: "POST", path: "/v2.0/networks", body: `{"network": {"name": "x", "admin_state_up": "maybe"}}`,
			status: 400, typ: "HTTPBadRequest", msg: "Invalid input for admin_state_up. Reason: 'maybe' cannot be converted to boolean."},
		{name: "router admin_state_up maybe", who: biDemo, method: "PUT", path: rtr, body: `{"router": {"name": "renamed", "admin_state_up": "maybe"}}`,
			status: 400, typ: "HTTPBadRequest", msg: "Invalid input for admin_state_up. Reason: 'maybe' cannot be converted to boolean."},
		{name: "admin_state_up 2", who: biDemo, method: "POST", path: "/v2.0/networks", body: `{"network": {"admin_state_up": 2}}`,
			status: 400, typ: "HTTPBadRequest", msg: "Invalid input for admin_state_up. Reason: '2' cannot be converted to boolean."},
		{name: "ip_version x", who: biDemo, method: "POST", path: "/v2.0/subnets",
			body:   fmt.Sprintf(`{"subnet": {"network_id": %q, "ip_version": "x", "cidr": "10.20.0.0/24"}}`, fx.net),
			status: 400, typ: "HTTPBadRequest", msg: "Invalid input for ip_version. Reason: 'x' is not an integer."},
		{name: "ip_version 5", who: biDemo, method: "POST", path: "/v2.0/subnets",
			body:   fmt.Sprintf(`{"subnet": {"network_id": %q, "ip_version": 5, "cidr": "10.20.0.0/24"}}`, fx.net),
			status: 400, typ: "HTTPBadRequest", msg: "Invalid input for ip_version. Reason: 5 is not in [4, 6]."},
		{name: "mtu is huge", who: biDemo, method: "POST", path: "/v2.0/networks", body: `{"network": {"mtu": 99999999999999999999999}}`,
			status: 400, typ: "HTTPBadRequest"},
		{name: "mtu out of range", who: biDemo, method: "POST", path: "/v2.0/networks", body: `{"network": {"mtu": 20}}`,
			status: 400, typ: "InvalidInput"},
		{name: "fixed_ips not a list", who: biDemo, method: "POST", path: "/v2.0/ports",
			body: fmt.Sprintf(`{"port": {"network_id": %q, "fixed_ips": "10.0.0.5"}}`, fx.net), status: 400, typ: "HTTPBadRequest"},
		{name: "external_gateway_info not a dict", who: biDemo, method: "PUT", path: rtr,
			body: `{"router": {"external_gateway_info": "public"}}`, status: 400, typ: "HTTPBadRequest"},
		{name: "external_gateway_info unknown key", who: biDemo, method: "PUT", path: rtr,
			body: fmt.Sprintf(`{"router": {"external_gateway_info": {"network_id": %q, "bogus": 1}}}`, fx.extNet), status: 400, typ: "HTTPBadRequest"},
		{name: "routes not a list", who: biDemo, method: "PUT", path: rtr, body: `{"router": {"routes": "10.1.0.0/24"}}`,
			status: 400, typ: "HTTPBadRequest"},
		{name: "dns_nameservers not IPs", who: biDemo, method: "POST", path: "/v2.0/subnets",
			body:   fmt.Sprintf(`{"subnet": {"network_id": %q, "ip_version": 4, "cidr": "10.21.0.0/24", "dns_nameservers": ["dns.example"]}}`, fx.net),
			status: 400, typ: "InvalidInput"},

		// ---- ids: a non-UUID in the path is a 404 (06-errors.03), in a body a 400
		{name: "GET router not-a-uuid", who: biDemo, method: "GET", path: "/v2.0/routers/not-a-uuid",
			status: 404, typ: "RouterNotFound", msg: "Router not-a-uuid could not be found"},
		{name: "PUT router not-a-uuid", who: biDemo, method: "PUT", path: "/v2.0/routers/not-a-uuid", body: `{"router": {"name": "x"}}`,
			status: 404, typ: "RouterNotFound", msg: "Router not-a-uuid could not be found"},
		{name: "DELETE router not-a-uuid", who: biDemo, method: "DELETE", path: "/v2.0/routers/not-a-uuid",
			status: 404, typ: "RouterNotFound", msg: "Router not-a-uuid could not be found"},
		{name: "add_router_interface on not-a-uuid", who: biDemo, method: "PUT", path: "/v2.0/routers/not-a-uuid/add_router_interface",
			body: fmt.Sprintf(`{"subnet_id": %q}`, fx.sub2), status: 404, typ: "RouterNotFound", msg: "Router not-a-uuid could not be found"},
		{name: "l3-agents of not-a-uuid", who: biAdmin, method: "GET", path: "/v2.0/routers/not-a-uuid/l3-agents",
			status: 404, typ: "RouterNotFound", msg: "Router not-a-uuid could not be found"},
		{name: "GET network not-a-uuid", who: biDemo, method: "GET", path: "/v2.0/networks/not-a-uuid",
			status: 404, typ: "NetworkNotFound", msg: "Network not-a-uuid could not be found."},
		{name: "DELETE network not-a-uuid", who: biDemo, method: "DELETE", path: "/v2.0/networks/not-a-uuid",
			status: 404, typ: "NetworkNotFound", msg: "Network not-a-uuid could not be found."},
		{name: "GET network with invalid UTF-8 id", who: biDemo, method: "GET", path: "/v2.0/networks/%ff%fe", status: 404, typ: "NetworkNotFound"},
		{name: "PUT router with a NUL in its id", who: biDemo, method: "PUT", path: "/v2.0/routers/a%00b", body: `{"router": {"name": "x"}}`,
			status: 404, typ: "RouterNotFound"},
		{name: "DELETE port with invalid UTF-8 id", who: biAdmin, method: "DELETE", path: "/v2.0/ports/%c3%28", status: 404, typ: "PortNotFound"},
		{name: "l3-routers of an agent with invalid UTF-8 id", who: biAdmin, method: "GET", path: "/v2.0/agents/%ff/l3-routers", status: 404, typ: "AgentNotFound"},
		{name: "GET unknown network", who: biDemo, method: "GET", path: "/v2.0/networks/" + bogusID,
			status: 404, typ: "NetworkNotFound", msg: "Network " + bogusID + " could not be found."},
		{name: "DELETE unknown floatingip", who: biDemo, method: "DELETE", path: "/v2.0/floatingips/" + bogusID,
			status: 404, typ: "FloatingIPNotFound", msg: "Floating IP " + bogusID + " could not be found"},
		{name: "subnet network_id not-a-uuid", who: biDemo, method: "POST", path: "/v2.0/subnets",
			body:   `{"subnet": {"network_id": "not-a-uuid", "ip_version": 4, "cidr": "10.22.0.0/24"}}`,
			status: 400, typ: "HTTPBadRequest", msg: "Invalid input for network_id. Reason: 'not-a-uuid' is not a valid UUID."},
		{name: "port network_id is a number", who: biDemo, method: "POST", path: "/v2.0/ports", body: `{"port": {"network_id": 7}}`,
			status: 400, typ: "HTTPBadRequest", msg: "Invalid input for network_id. Reason: '7' is not a valid UUID."},
		{name: "floating_network_id not-a-uuid", who: biDemo, method: "POST", path: "/v2.0/floatingips",
			body:   `{"floatingip": {"floating_network_id": "public"}}`,
			status: 400, typ: "HTTPBadRequest", msg: "Invalid input for floating_network_id. Reason: 'public' is not a valid UUID."},
		{name: "gateway network_id not-a-uuid", who: biDemo, method: "PUT", path: rtr,
			body: `{"router": {"external_gateway_info": {"network_id": "public"}}}`, status: 400, typ: "HTTPBadRequest",
			msg: "Invalid input for network_id. Reason: 'public' is not a valid UUID."},
		{name: "add_router_interface subnet_id not-a-uuid", who: biDemo, method: "PUT", path: rtr + "/add_router_interface",
			body: `{"subnet_id": "demo-subnet"}`, status: 400, typ: "HTTPBadRequest",
			msg: "Invalid input for subnet_id. Reason: 'demo-subnet' is not a valid UUID."},
		{name: "fip port_id not-a-uuid", who: biDemo, method: "PUT", path: "/v2.0/floatingips/" + fx.fip2,
			body: `{"floatingip": {"port_id": "vm-port"}}`, status: 400, typ: "HTTPBadRequest",
			msg: "Invalid input for port_id. Reason: 'vm-port' is not a valid UUID."},
		{name: "subnet of unknown network", who: biDemo, method: "POST", path: "/v2.0/subnets",
			body:   fmt.Sprintf(`{"subnet": {"network_id": %q, "ip_version": 4, "cidr": "10.22.0.0/24"}}`, bogusID),
			status: 404, typ: "NetworkNotFound"},
		{name: "subnet without network_id", who: biDemo, method: "POST", path: "/v2.0/subnets",
			body: `{"subnet": {"ip_version": 4, "cidr": "10.22.0.0/24"}}`, status: 400, typ: "HTTPBadRequest"},

		// ---- addresses (06-errors.09)
		{name: "invalid CIDR", who: biDemo, method: "POST", path: "/v2.0/subnets",
			body:   fmt.Sprintf(`{"subnet": {"network_id": %q, "ip_version": 4, "cidr": "10.0.0/33"}}`, fx.net),
			status: 400, typ: "InvalidInput", msg: "Invalid input for operation: 10.0.0/33 is not in a CIDR format."},
		{name: "CIDR with host bits", who: biDemo, method: "POST", path: "/v2.0/subnets",
			body:   fmt.Sprintf(`{"subnet": {"network_id": %q, "ip_version": 4, "cidr": "10.23.0.7/24"}}`, fx.net),
			status: 400, typ: "InvalidInput"},
		{name: "CIDR is a word", who: biDemo, method: "POST", path: "/v2.0/subnets",
			body:   fmt.Sprintf(`{"subnet": {"network_id": %q, "ip_version": 4, "cidr": "everything"}}`, fx.net),
			status: 400, typ: "InvalidInput", msg: "Invalid input for operation: everything is not in a CIDR format."},
		{name: "subnet without cidr", who: biDemo, method: "POST", path: "/v2.0/subnets",
			body: fmt.Sprintf(`{"subnet": {"network_id": %q, "ip_version": 4}}`, fx.net), status: 400, typ: "HTTPBadRequest"},
		{name: "subnet overlapping on its network", who: biDemo, method: "POST", path: "/v2.0/subnets",
			body:   fmt.Sprintf(`{"subnet": {"network_id": %q, "ip_version": 4, "cidr": "10.0.0.128/25"}}`, fx.net),
			status: 400, typ: "InvalidInput"},
		{name: "invalid gateway_ip", who: biDemo, method: "POST", path: "/v2.0/subnets",
			body:   fmt.Sprintf(`{"subnet": {"network_id": %q, "ip_version": 4, "cidr": "10.24.0.0/24", "gateway_ip": "10.24.0.300"}}`, fx.net),
			status: 400, typ: "InvalidInput"},
		{name: "gateway outside the subnet", who: biDemo, method: "POST", path: "/v2.0/subnets",
			body:   fmt.Sprintf(`{"subnet": {"network_id": %q, "ip_version": 4, "cidr": "10.24.0.0/24", "gateway_ip": "10.25.0.1"}}`, fx.net),
			status: 400, typ: "InvalidInput"},
		{name: "gateway is the network address", who: biDemo, method: "POST", path: "/v2.0/subnets",
			body:   fmt.Sprintf(`{"subnet": {"network_id": %q, "ip_version": 4, "cidr": "10.24.0.0/24", "gateway_ip": "10.24.0.0"}}`, fx.net),
			status: 400, typ: "InvalidInput"},
		{name: "update gateway outside the subnet", who: biDemo, method: "PUT", path: "/v2.0/subnets/" + fx.sub2,
			body: `{"subnet": {"gateway_ip": "192.168.1.1"}}`, status: 400, typ: "InvalidInput"},
		{name: "update allocation pool outside the subnet", who: biDemo, method: "PUT", path: "/v2.0/subnets/" + fx.sub2,
			body: `{"subnet": {"name": "renamed", "allocation_pools": [{"start": "10.0.0.200", "end": "10.0.0.210"}]}}`, status: 400, typ: "InvalidInput"},
		{name: "update enable_dhcp maybe", who: biDemo, method: "PUT", path: "/v2.0/subnets/" + fx.sub2,
			body: `{"subnet": {"enable_dhcp": "maybe"}}`, status: 400, typ: "HTTPBadRequest"},
		{name: "allocation pool outside the subnet", who: biDemo, method: "POST", path: "/v2.0/subnets",
			body:   fmt.Sprintf(`{"subnet": {"network_id": %q, "ip_version": 4, "cidr": "10.26.0.0/24", "allocation_pools": [{"start": "10.27.0.2", "end": "10.27.0.9"}]}}`, fx.net),
			status: 400, typ: "InvalidInput"},
		{name: "allocation pool not addresses", who: biDemo, method: "POST", path: "/v2.0/subnets",
			body:   fmt.Sprintf(`{"subnet": {"network_id": %q, "ip_version": 4, "cidr": "10.26.0.0/24", "allocation_pools": [{"start": "a", "end": "b"}]}}`, fx.net),
			status: 400, typ: "InvalidInput"},
		{name: "invalid fixed_ips ip_address", who: biDemo, method: "POST", path: "/v2.0/ports",
			body:   fmt.Sprintf(`{"port": {"network_id": %q, "fixed_ips": [{"ip_address": "10.0.0.999"}]}}`, fx.net),
			status: 400, typ: "InvalidInput", msg: "Invalid input for operation: '10.0.0.999' is not a valid IP address."},
		{name: "fixed_ips ip_address on no subnet", who: biDemo, method: "POST", path: "/v2.0/ports",
			body:   fmt.Sprintf(`{"port": {"network_id": %q, "fixed_ips": [{"ip_address": "192.168.7.7"}]}}`, fx.net),
			status: 400, typ: "HTTPBadRequest"},
		{name: "fixed_ips subnet of another network", who: biDemo, method: "POST", path: "/v2.0/ports",
			body:   fmt.Sprintf(`{"port": {"network_id": %q, "fixed_ips": [{"subnet_id": %q}]}}`, fx.net, fx.sub2),
			status: 400, typ: "HTTPBadRequest"},
		{name: "fixed_ips broadcast address", who: biDemo, method: "POST", path: "/v2.0/ports",
			body:   fmt.Sprintf(`{"port": {"network_id": %q, "fixed_ips": [{"ip_address": "10.0.0.255"}]}}`, fx.net),
			status: 400, typ: "HTTPBadRequest"},
		{name: "invalid floating_ip_address", who: biDemo, method: "POST", path: "/v2.0/floatingips",
			body:   fmt.Sprintf(`{"floatingip": {"floating_network_id": %q, "floating_ip_address": "not-an-ip"}}`, fx.extNet),
			status: 400, typ: "HTTPBadRequest", msg: "Invalid input for floating_ip_address. Reason: 'not-an-ip' is not a valid IP address."},
		{name: "floating_ip_address outside the network", who: biAdmin, method: "POST", path: "/v2.0/floatingips",
			body:   fmt.Sprintf(`{"floatingip": {"floating_network_id": %q, "floating_ip_address": "198.51.100.7", "tenant_id": "demo"}}`, fx.extNet),
			status: 400, typ: "HTTPBadRequest"},
		{name: "invalid fixed_ip_address of a fip", who: biDemo, method: "POST", path: "/v2.0/floatingips",
			body:   fmt.Sprintf(`{"floatingip": {"floating_network_id": %q, "port_id": %q, "fixed_ip_address": "10.0.0"}}`, fx.extNet, fx.vmPort),
			status: 400, typ: "InvalidInput"},
		{name: "invalid MAC", who: biAdmin, method: "POST", path: "/v2.0/ports",
			body:   fmt.Sprintf(`{"port": {"network_id": %q, "mac_address": "fa:16:3e:zz:00:01", "tenant_id": "demo"}}`, fx.net),
			status: 400, typ: "HTTPBadRequest", msg: "Invalid input for mac_address. Reason: 'fa:16:3e:zz:00:01' is not a valid MAC address."},
		{name: "MAC too short", who: biAdmin, method: "POST", path: "/v2.0/ports",
			body: fmt.Sprintf(`{"port": {"network_id": %q, "mac_address": "fa:16:3e:00:01"}}`, fx.net), status: 400, typ: "HTTPBadRequest"},
		{name: "invalid route nexthop", who: biDemo, method: "PUT", path: rtr,
			body: `{"router": {"routes": [{"destination": "10.30.0.0/24", "nexthop": "10.0.0.300"}]}}`, status: 400, typ: "InvalidInput"},
		{name: "route nexthop not connected", who: biDemo, method: "PUT", path: rtr,
			body: `{"router": {"name": "partial", "routes": [{"destination": "10.30.0.0/24", "nexthop": "192.168.50.1"}]}}`, status: 400, typ: "InvalidRoutes"},
		{name: "route destination not a CIDR", who: biDemo, method: "PUT", path: rtr,
			body: `{"router": {"routes": [{"destination": "10.30.0.0/40", "nexthop": "10.0.0.20"}]}}`, status: 400, typ: "InvalidInput"},

		// ---- names (Neutron: at most 255 characters)
		{name: "network name 256 chars", who: biDemo, method: "POST", path: "/v2.0/networks", body: fmt.Sprintf(`{"network": {"name": %q}}`, long),
			status: 400, typ: "HTTPBadRequest", substr: "exceeds maximum length of 255"},
		{name: "router name 256 chars", who: biDemo, method: "PUT", path: rtr, body: fmt.Sprintf(`{"router": {"name": %q}}`, long),
			status: 400, typ: "HTTPBadRequest", substr: "exceeds maximum length of 255"},
		{name: "subnet name 256 chars", who: biDemo, method: "POST", path: "/v2.0/subnets",
			body:   fmt.Sprintf(`{"subnet": {"network_id": %q, "ip_version": 4, "cidr": "10.28.0.0/24", "name": %q}}`, fx.net, long),
			status: 400, typ: "HTTPBadRequest", substr: "exceeds maximum length of 255"},
		{name: "port name 256 chars", who: biDemo, method: "PUT", path: "/v2.0/ports/" + fx.vmPort, body: fmt.Sprintf(`{"port": {"name": %q}}`, long),
			status: 400, typ: "HTTPBadRequest", substr: "exceeds maximum length of 255"},
		{name: "fip description 256 chars", who: biDemo, method: "PUT", path: "/v2.0/floatingips/" + fx.fip, body: fmt.Sprintf(`{"floatingip": {"description": %q}}`, long),
			status: 400, typ: "HTTPBadRequest", substr: "exceeds maximum length of 255"},
		{name: "name with a NUL character", who: biDemo, method: "POST", path: "/v2.0/networks", body: `{"network": {"name": "a\u0000b"}}`,
			status: 400, typ: "HTTPBadRequest", msg: `Invalid input for name. Reason: 'a\u0000b' contains a NUL character.`},

		// ---- another project's resources are 404 (06-errors.12, 01-networks.09)
		{name: "other GET router", who: biOther, method: "GET", path: rtr, status: 404, typ: "RouterNotFound",
			msg: "Router " + fx.router + " could not be found"},
		{name: "other PUT router", who: biOther, method: "PUT", path: rtr, body: `{"router": {"name": "pwn"}}`, status: 404, typ: "RouterNotFound",
			msg: "Router " + fx.router + " could not be found"},
		{name: "other DELETE router", who: biOther, method: "DELETE", path: rtr, status: 404, typ: "RouterNotFound",
			msg: "Router " + fx.router + " could not be found"},
		{name: "other add_router_interface", who: biOther, method: "PUT", path: rtr + "/add_router_interface",
			body: fmt.Sprintf(`{"subnet_id": %q}`, fx.otherSub), status: 404, typ: "RouterNotFound"},
		{name: "other remove_router_interface", who: biOther, method: "PUT", path: rtr + "/remove_router_interface",
			body: fmt.Sprintf(`{"subnet_id": %q}`, fx.sub), status: 404, typ: "RouterNotFound"},
		{name: "other GET network", who: biOther, method: "GET", path: "/v2.0/networks/" + fx.net, status: 404, typ: "NetworkNotFound",
			msg: "Network " + fx.net + " could not be found."},
		{name: "other PUT network", who: biOther, method: "PUT", path: "/v2.0/networks/" + fx.net, body: `{"network": {"name": "pwn"}}`,
			status: 404, typ: "NetworkNotFound"},
		{name: "other DELETE network", who: biOther, method: "DELETE", path: "/v2.0/networks/" + fx.net2, status: 404, typ: "NetworkNotFound"},
		{name: "other GET subnet", who: biOther, method: "GET", path: "/v2.0/subnets/" + fx.sub, status: 404, typ: "SubnetNotFound"},
		{name: "other PUT subnet", who: biOther, method: "PUT", path: "/v2.0/subnets/" + fx.sub2, body: `{"subnet": {"name": "pwn"}}`,
			status: 404, typ: "SubnetNotFound"},
		{name: "other DELETE subnet", who: biOther, method: "DELETE", path: "/v2.0/subnets/" + fx.sub2, status: 404, typ: "SubnetNotFound"},
		{name: "other subnet on demo's network", who: biOther, method: "POST", path: "/v2.0/subnets",
			body:   fmt.Sprintf(`{"subnet": {"network_id": %q, "ip_version": 4, "cidr": "10.29.0.0/24"}}`, fx.net2),
			status: 404, typ: "NetworkNotFound"},
		{name: "other GET port", who: biOther, method: "GET", path: "/v2.0/ports/" + fx.vmPort, status: 404, typ: "PortNotFound"},
		{name: "other PUT port", who: biOther, method: "PUT", path: "/v2.0/ports/" + fx.vmPort, body: `{"port": {"name": "pwn"}}`,
			status: 404, typ: "PortNotFound"},
		{name: "other DELETE port", who: biOther, method: "DELETE", path: "/v2.0/ports/" + fx.vmPort, status: 404, typ: "PortNotFound"},
		{name: "other port on demo's network", who: biOther, method: "POST", path: "/v2.0/ports",
			body: fmt.Sprintf(`{"port": {"network_id": %q}}`, fx.net), status: 404, typ: "NetworkNotFound"},
		{name: "other GET floatingip", who: biOther, method: "GET", path: "/v2.0/floatingips/" + fx.fip, status: 404, typ: "FloatingIPNotFound",
			msg: "Floating IP " + fx.fip + " could not be found"},
		{name: "other PUT floatingip", who: biOther, method: "PUT", path: "/v2.0/floatingips/" + fx.fip2,
			body: fmt.Sprintf(`{"floatingip": {"port_id": %q}}`, fx.vmPort), status: 404, typ: "FloatingIPNotFound"},
		{name: "other DELETE floatingip", who: biOther, method: "DELETE", path: "/v2.0/floatingips/" + fx.fip, status: 404, typ: "FloatingIPNotFound"},
		{name: "other fip on demo's port", who: biOther, method: "POST", path: "/v2.0/floatingips",
			body: fmt.Sprintf(`{"floatingip": {"floating_network_id": %q, "port_id": %q}}`, fx.extNet, fx.vmPort), status: 404, typ: "PortNotFound"},
		{name: "demo attaches other's subnet", who: biDemo, method: "PUT", path: rtr + "/add_router_interface",
			body: fmt.Sprintf(`{"subnet_id": %q}`, fx.otherSub), status: 404, typ: "SubnetNotFound"},
		{name: "tenant GET HA network", who: biDemo, method: "GET", path: "/v2.0/networks/" + fx.haNet, status: 404, typ: "NetworkNotFound"},
		{name: "tenant DELETE HA network", who: biDemo, method: "DELETE", path: "/v2.0/networks/" + fx.haNet, status: 404, typ: "NetworkNotFound"},
		{name: "tenant GET HA port", who: biDemo, method: "GET", path: "/v2.0/ports/" + fx.haPort, status: 404, typ: "PortNotFound"},
		{name: "tenant DELETE HA subnet", who: biDemo, method: "DELETE", path: "/v2.0/subnets/" + fx.haSub, status: 404, typ: "SubnetNotFound"},

		// ---- policy (06-errors.13/14, 02-ha-router.04/10, 04-ha-update.07, 00-noauth-rules.12/13)
		{name: "tenant updates external network", who: biDemo, method: "PUT", path: "/v2.0/networks/" + fx.extNet, body: `{"network": {"name": "pwn"}}`,
			status: 403, typ: "PolicyNotAuthorized", msg: "rule:update_network is disallowed by policy"},
		{name: "tenant deletes external network", who: biDemo, method: "DELETE", path: "/v2.0/networks/" + fx.extNet,
			status: 403, typ: "PolicyNotAuthorized", msg: "rule:delete_network is disallowed by policy"},
		{name: "tenant adds a subnet to the external network", who: biDemo, method: "POST", path: "/v2.0/subnets",
			body:   fmt.Sprintf(`{"subnet": {"network_id": %q, "ip_version": 4, "cidr": "172.25.0.0/24"}}`, fx.extNet),
			status: 403, typ: "PolicyNotAuthorized"},
		{name: "tenant deletes the external subnet", who: biDemo, method: "DELETE", path: "/v2.0/subnets/" + fx.extSub,
			status: 404, typ: "SubnetNotFound", msg: "Subnet " + fx.extSub + " could not be found."},
		{name: "tenant creates router with ha", who: biDemo, method: "POST", path: "/v2.0/routers", body: `{"router": {"name": "t-ha", "ha": true}}`,
			status: 403, typ: "PolicyNotAuthorized", msg: "(rule:create_router and rule:create_router:ha) is disallowed by policy"},
		{name: "tenant creates router with ha false", who: biDemo, method: "POST", path: "/v2.0/routers", body: `{"router": {"name": "t-ha", "ha": false}}`,
			status: 403, typ: "PolicyNotAuthorized", msg: "(rule:create_router and rule:create_router:ha) is disallowed by policy"},
		{name: "tenant updates ha", who: biDemo, method: "PUT", path: rtr, body: `{"router": {"ha": false, "admin_state_up": false}}`,
			status: 403, typ: "PolicyNotAuthorized", msg: "(rule:update_router and rule:update_router:ha) is disallowed by policy"},
		{name: "tenant updates distributed", who: biDemo, method: "PUT", path: rtr, body: `{"router": {"distributed": true}}`,
			status: 403, typ: "PolicyNotAuthorized", msg: "(rule:update_router and rule:update_router:distributed) is disallowed by policy"},
		{name: "tenant sets enable_snat", who: biDemo, method: "PUT", path: rtr,
			body:   fmt.Sprintf(`{"router": {"external_gateway_info": {"network_id": %q, "enable_snat": false}}}`, fx.extNet),
			status: 403, typ: "PolicyNotAuthorized"},
		{name: "tenant provider network", who: biDemo, method: "POST", path: "/v2.0/networks", body: `{"network": {"name": "t-prov", "provider:network_type": "vxlan"}}`,
			status: 403, typ: "PolicyNotAuthorized", msg: "(rule:create_network and rule:create_network:provider:network_type) is disallowed by policy"},
		{name: "tenant external network", who: biDemo, method: "POST", path: "/v2.0/networks", body: `{"network": {"router:external": true}}`,
			status: 403, typ: "PolicyNotAuthorized"},
		{name: "tenant names another project", who: biDemo, method: "POST", path: "/v2.0/networks", body: `{"network": {"name": "t-other", "tenant_id": "other"}}`,
			status: 400, typ: "HTTPBadRequest", msg: "Specifying 'project_id' or 'tenant_id' other than the authenticated project in request requires admin or advsvc privileges"},
		{name: "conflicting tenant_id and project_id", who: biAdmin, method: "POST", path: "/v2.0/networks",
			body: `{"network": {"tenant_id": "demo", "project_id": "other"}}`, status: 400, typ: "HTTPBadRequest"},
		{name: "tenant reads l3-agents", who: biDemo, method: "GET", path: rtr + "/l3-agents",
			status: 403, typ: "PolicyNotAuthorized", msg: "rule:get_l3-agents is disallowed by policy"},
		{name: "tenant shows an agent", who: biDemo, method: "GET", path: "/v2.0/agents/" + fx.agents[0],
			status: 404, typ: "HTTPNotFound", msg: "The resource could not be found."},
		{name: "tenant disables an agent", who: biDemo, method: "PUT", path: "/v2.0/agents/" + fx.agents[0], body: `{"agent": {"admin_state_up": false}}`,
			status: 403, typ: "PolicyNotAuthorized"},
		{name: "tenant deletes an agent", who: biDemo, method: "DELETE", path: "/v2.0/agents/" + fx.agents[0],
			status: 403, typ: "PolicyNotAuthorized"},
		{name: "tenant removes router from agent", who: biDemo, method: "DELETE", path: "/v2.0/agents/" + fx.agents[0] + "/l3-routers/" + fx.router,
			status: 403, typ: "PolicyNotAuthorized"},
		{name: "tenant sets a MAC", who: biDemo, method: "POST", path: "/v2.0/ports",
			body: fmt.Sprintf(`{"port": {"network_id": %q, "mac_address": "fa:16:3e:00:00:01"}}`, fx.extNet), status: 403, typ: "PolicyNotAuthorized",
			msg: "(rule:create_port and rule:create_port:mac_address) is disallowed by policy"},

		// ---- methods and paths (06-errors.04/19/20)
		{name: "POST to a member", who: biDemo, method: "POST", path: "/v2.0/networks/" + fx.net, body: `{"network": {}}`,
			status: 405, typ: "HTTPMethodNotAllowed", msg: "The server could not comply with the request since it is either malformed or otherwise incorrect."},
		{name: "POST to a router", who: biDemo, method: "POST", path: rtr, body: `{"router": {}}`, status: 405, typ: "HTTPMethodNotAllowed"},
		{name: "PATCH a network", who: biDemo, method: "PATCH", path: "/v2.0/networks/" + fx.net, body: `{"network": {"name": "x"}}`,
			status: 405, typ: "HTTPMethodNotAllowed"},
		{name: "POST add_router_interface", who: biDemo, method: "POST", path: rtr + "/add_router_interface",
			body: fmt.Sprintf(`{"subnet_id": %q}`, fx.sub2), status: 405, typ: "HTTPMethodNotAllowed"},
		{name: "PUT l3-agents", who: biAdmin, method: "PUT", path: rtr + "/l3-agents", body: `{}`, status: 405, typ: "HTTPMethodNotAllowed"},
		{name: "POST agents", who: biAdmin, method: "POST", path: "/v2.0/agents", body: `{"agent": {"host": "x"}}`, status: 405, typ: "HTTPMethodNotAllowed"},
		{name: "DELETE collection", who: biDemo, method: "DELETE", path: "/v2.0/networks",
			status: 404, typ: "NetworkNotFound", msg: "Network None could not be found."},
		{name: "unknown collection", who: biDemo, method: "GET", path: "/v2.0/nopes",
			status: 404, typ: "HTTPNotFound", msg: "The resource could not be found."},
		{name: "unknown router action", who: biDemo, method: "PUT", path: rtr + "/add_gateway", body: `{}`,
			status: 404, typ: "HTTPNotFound", msg: "The resource could not be found."},
		{name: "unknown API version", who: biDemo, method: "GET", path: "/v3/networks", status: 404, typ: "HTTPNotFound"},
		{name: "DELETE version document", who: biDemo, method: "DELETE", path: "/", status: 405, typ: "HTTPMethodNotAllowed"},
		{name: "POST extensions", who: biAdmin, method: "POST", path: "/v2.0/extensions", body: `{}`, status: 405, typ: "HTTPMethodNotAllowed"},
		{name: "unknown extension", who: biDemo, method: "GET", path: "/v2.0/extensions/nope", status: 404, typ: "HTTPNotFound"},
		{name: "negative limit", who: biDemo, method: "GET", path: "/v2.0/networks?limit=-1", status: 400, typ: "HTTPBadRequest"},
		{name: "limit not a number", who: biDemo, method: "GET", path: "/v2.0/routers?limit=ten", status: 400, typ: "HTTPBadRequest"},

		// ---- conflicts (06-errors.15/16/17/18, 03-router-ops.02/12/14/15, 01-networks.03)
		{name: "delete subnet in use", who: biDemo, method: "DELETE", path: "/v2.0/subnets/" + fx.sub, status: 409, typ: "SubnetInUse",
			msg: "Unable to complete operation on subnet " + fx.sub + ": One or more ports have an IP allocation from this subnet."},
		{name: "delete network in use", who: biDemo, method: "DELETE", path: "/v2.0/networks/" + fx.net, status: 409, typ: "NetworkInUse",
			substr: "Unable to complete operation on network " + fx.net + ". There are one or more ports still in use on the network, id for these ports is: "},
		{name: "admin deletes external network in use", who: biAdmin, method: "DELETE", path: "/v2.0/networks/" + fx.extNet, status: 409, typ: "NetworkInUse",
			substr: "Unable to complete operation on network " + fx.extNet + ". There are one or more ports still in use on the network"},
		{name: "admin deletes external subnet in use", who: biAdmin, method: "DELETE", path: "/v2.0/subnets/" + fx.extSub, status: 409, typ: "SubnetInUse"},
		{name: "admin deletes HA network", who: biAdmin, method: "DELETE", path: "/v2.0/networks/" + fx.haNet, status: 409, typ: "NetworkInUse"},
		{name: "admin deletes HA subnet", who: biAdmin, method: "DELETE", path: "/v2.0/subnets/" + fx.haSub, status: 409, typ: "SubnetInUse"},
		{name: "admin deletes HA port", who: biAdmin, method: "DELETE", path: "/v2.0/ports/" + fx.haPort, status: 409, typ: "ServicePortInUse"},
		{name: "admin re-addresses HA port", who: biAdmin, method: "PUT", path: "/v2.0/ports/" + fx.haPort,
			body: `{"port": {"fixed_ips": [{"ip_address": "169.254.192.99"}]}}`, status: 400, typ: "BadRequest",
			msg: "Bad ports request: IP updates for port " + fx.haPort + " are not allowed."},
		{name: "tenant deletes router interface port", who: biDemo, method: "DELETE", path: "/v2.0/ports/" + fx.ifacePort, status: 409, typ: "ServicePortInUse"},
		{name: "tenant re-addresses router interface port", who: biDemo, method: "PUT", path: "/v2.0/ports/" + fx.ifacePort,
			body: `{"port": {"fixed_ips": [{"ip_address": "10.0.0.77"}]}}`, status: 400, typ: "BadRequest",
			msg: "Bad ports request: IP updates for port " + fx.ifacePort + " are not allowed."},
		{name: "tenant empties router interface port", who: biDemo, method: "PUT", path: "/v2.0/ports/" + fx.ifacePort,
			body: `{"port": {"fixed_ips": []}}`, status: 400, typ: "BadRequest"},
		{name: "admin re-addresses gateway port", who: biAdmin, method: "PUT", path: "/v2.0/ports/" + fx.gwPort,
			body: `{"port": {"fixed_ips": [{"ip_address": "172.24.4.99"}]}}`, status: 409, typ: "L3PortIPChangeNotAllowed"},
		{name: "tenant moves router interface port to another device", who: biDemo, method: "PUT", path: "/v2.0/ports/" + fx.ifacePort,
			body: `{"port": {"device_id": "elsewhere"}}`, status: 409, typ: "L3PortIPChangeNotAllowed"},
		{name: "unknown filter", who: biDemo, method: "GET", path: "/v2.0/networks?name=x&colour=red", status: 400, typ: "HTTPBadRequest",
			msg: "['colour'] is invalid attribute for filtering"},
		{name: "unknown filters, admin", who: biAdmin, method: "GET", path: "/v2.0/ports?foo=1&bar=2", status: 400, typ: "HTTPBadRequest",
			msg: "['bar', 'foo'] is invalid attribute for filtering"},
		{name: "bulk create with an empty list", who: biDemo, method: "POST", path: "/v2.0/networks", body: `{"networks": []}`,
			status: 400, typ: "HTTPBadRequest", msg: "Resources required"},
		{name: "bulk create with a non-object", who: biDemo, method: "POST", path: "/v2.0/networks", body: `{"networks": [{"name": "ok"}, 7]}`,
			status: 400, typ: "HTTPBadRequest", msg: "Body contains invalid data"},
		{name: "bulk create whose last item fails", who: biDemo, method: "POST", path: "/v2.0/networks",
			body:   `{"networks": [{"name": "b1"}, {"network": {"name": "b2"}}, {"name": "b3", "router:external": true}]}`,
			status: 403, typ: "PolicyNotAuthorized"},
		{name: "bulk port create whose second item's IP is taken", who: biDemo, method: "POST", path: "/v2.0/ports",
			body:   fmt.Sprintf(`{"ports": [{"network_id": %q}, {"network_id": %q, "fixed_ips": [{"ip_address": "10.0.0.1"}]}]}`, fx.net, fx.net),
			status: 409, typ: "IpAddressAlreadyAllocated"},
		{name: "tenant creates a port as router interface", who: biDemo, method: "POST", path: "/v2.0/ports",
			body:   fmt.Sprintf(`{"port": {"network_id": %q, "device_owner": "network:router_interface", "device_id": %q}}`, fx.net, fx.router),
			status: 400, typ: "HTTPBadRequest"},
		{name: "IP already allocated", who: biDemo, method: "POST", path: "/v2.0/ports",
			body:   fmt.Sprintf(`{"port": {"network_id": %q, "fixed_ips": [{"ip_address": "10.0.0.1"}]}}`, fx.net),
			status: 409, typ: "IpAddressAlreadyAllocated", msg: "IP address 10.0.0.1 already allocated in subnet " + fx.sub},
		{name: "IP twice in one request", who: biDemo, method: "POST", path: "/v2.0/ports",
			body:   fmt.Sprintf(`{"port": {"network_id": %q, "fixed_ips": [{"ip_address": "10.0.0.50"}, {"ip_address": "10.0.0.50"}]}}`, fx.net),
			status: 409, typ: "IpAddressAlreadyAllocated"},
		{name: "port moved onto an allocated IP", who: biDemo, method: "PUT", path: "/v2.0/ports/" + fx.vmPort,
			body:   `{"port": {"name": "renamed", "fixed_ips": [{"ip_address": "10.0.0.1"}]}}`,
			status: 409, typ: "IpAddressAlreadyAllocated", msg: "IP address 10.0.0.1 already allocated in subnet " + fx.sub},
		{name: "port drops the address its fip uses", who: biDemo, method: "PUT", path: "/v2.0/ports/" + fx.vmPort,
			body: `{"port": {"fixed_ips": [{"ip_address": "10.0.0.60"}]}}`, status: 409, typ: "FloatingIPPortAlreadyAssociated"},
		{name: "floating IP already allocated", who: biAdmin, method: "POST", path: "/v2.0/floatingips",
			body:   fmt.Sprintf(`{"floatingip": {"floating_network_id": %q, "floating_ip_address": %s, "tenant_id": "demo"}}`, fx.extNet, q(biFixtureFIPAddress)),
			status: 409, typ: "IpAddressAlreadyAllocated"},
		{name: "second fip on the same fixed IP", who: biDemo, method: "PUT", path: "/v2.0/floatingips/" + fx.fip2,
			body: fmt.Sprintf(`{"floatingip": {"port_id": %q}}`, fx.vmPort), status: 409, typ: "FloatingIPPortAlreadyAssociated"},
		{name: "fip on a router port", who: biDemo, method: "PUT", path: "/v2.0/floatingips/" + fx.fip2,
			body: fmt.Sprintf(`{"floatingip": {"port_id": %q}}`, fx.ifacePort), status: 400, typ: "HTTPBadRequest"},
		{name: "fip on a tenant network", who: biDemo, method: "POST", path: "/v2.0/floatingips",
			body: fmt.Sprintf(`{"floatingip": {"floating_network_id": %q}}`, fx.net), status: 400, typ: "HTTPBadRequest"},
		{name: "fip for an unreachable port", who: biDemo, method: "POST", path: "/v2.0/floatingips",
			body: fmt.Sprintf(`{"floatingip": {"floating_network_id": %q, "port_id": %q}}`, fx.extNet, fx.lonelyPort), status: 404, typ: "ExternalGatewayForFloatingIPNotFound"},
		{name: "remove_router_interface while a FIP uses it", who: biDemo, method: "PUT", path: rtr + "/remove_router_interface",
			body: fmt.Sprintf(`{"subnet_id": %q}`, fx.sub), status: 409, typ: "RouterInterfaceInUseByFloatingIP",
			msg: fmt.Sprintf("Router interface for subnet %s on router %s cannot be deleted, as it is required by one or more floating IPs.", fx.sub, fx.router)},
		{name: "remove_router_interface by port while a FIP uses it", who: biDemo, method: "PUT", path: rtr + "/remove_router_interface",
			body: fmt.Sprintf(`{"port_id": %q}`, fx.ifacePort), status: 409, typ: "RouterInterfaceInUseByFloatingIP"},
		{name: "clear gateway while FIPs exist", who: biDemo, method: "PUT", path: rtr, body: `{"router": {"external_gateway_info": {}}}`,
			status: 409, typ: "RouterExternalGatewayInUseByFloatingIp",
			msg: fmt.Sprintf("Gateway cannot be updated for router %s, since a gateway to external network %s is required by one or more floating IPs.", fx.router, fx.extNet)},
		{name: "clear gateway (null) while FIPs exist, with a rename", who: biDemo, method: "PUT", path: rtr,
			body: `{"router": {"name": "renamed", "external_gateway_info": null}}`, status: 409, typ: "RouterExternalGatewayInUseByFloatingIp"},
		{name: "delete router with interfaces", who: biDemo, method: "DELETE", path: rtr, status: 409, typ: "RouterInUse"},
		{name: "add same subnet again", who: biDemo, method: "PUT", path: rtr + "/add_router_interface",
			body: fmt.Sprintf(`{"subnet_id": %q}`, fx.sub), status: 400, typ: "BadRequest",
			msg: fmt.Sprintf("Bad router request: Router already has a port on subnet %s.", fx.sub)},
		{name: "overlapping subnets on one router", who: biDemo, method: "PUT", path: rtr + "/add_router_interface",
			body: fmt.Sprintf(`{"subnet_id": %q}`, fx.sub2), status: 400, typ: "BadRequest",
			msg: fmt.Sprintf("Bad router request: Cidr 10.0.0.0/25 of subnet %s overlaps with cidr 10.0.0.0/24 of subnet %s.", fx.sub2, fx.sub)},
		{name: "add_router_interface with {}", who: biDemo, method: "PUT", path: rtr + "/add_router_interface", body: `{}`,
			status: 400, typ: "BadRequest", msg: "Bad router request: Either subnet_id or port_id must be specified."},
		{name: "add_router_interface with both ids", who: biDemo, method: "PUT", path: rtr + "/add_router_interface",
			body: fmt.Sprintf(`{"subnet_id": %q, "port_id": %q}`, fx.sub2, fx.vmPort), status: 400, typ: "BadRequest",
			msg: "Bad router request: Cannot specify both subnet-id and port-id"},
		{name: "add_router_interface with unknown key", who: biDemo, method: "PUT", path: rtr + "/add_router_interface",
			body: fmt.Sprintf(`{"subnet_id": %q, "bogus": 1}`, fx.sub2), status: 400, typ: "HTTPBadRequest"},
		{name: "add_router_interface subnet_id is a number", who: biDemo, method: "PUT", path: rtr + "/add_router_interface",
			body: `{"subnet_id": 5}`, status: 400, typ: "HTTPBadRequest"},
		{name: "add_router_interface malformed", who: biDemo, method: "PUT", path: rtr + "/add_router_interface",
			body: `{"subnet_id": `, status: 400, typ: "HTTPBadRequest", msg: "Body contains invalid data"},
		{name: "add_router_interface on the external subnet", who: biAdmin, method: "PUT", path: rtr + "/add_router_interface",
			body: fmt.Sprintf(`{"subnet_id": %q}`, fx.extSub), status: 400, typ: "BadRequest"},
		{name: "add_router_interface with a port in use", who: biDemo, method: "PUT", path: rtr + "/add_router_interface",
			body: fmt.Sprintf(`{"port_id": %q}`, fx.ifacePort), status: 409, typ: "PortInUse"},
		{name: "remove_router_interface of a subnet not attached", who: biDemo, method: "PUT", path: rtr + "/remove_router_interface",
			body: fmt.Sprintf(`{"subnet_id": %q}`, fx.sub2), status: 404, typ: "RouterInterfaceNotFoundForSubnet"},
		{name: "remove_router_interface of a port not attached", who: biDemo, method: "PUT", path: rtr + "/remove_router_interface",
			body: fmt.Sprintf(`{"port_id": %q}`, fx.vmPort), status: 404, typ: "RouterInterfaceNotFound"},
		{name: "remove_router_interface with {}", who: biDemo, method: "PUT", path: rtr + "/remove_router_interface", body: `{}`,
			status: 400, typ: "BadRequest", msg: "Bad router request: Either subnet_id or port_id must be specified."},
		{name: "gateway on a tenant network", who: biAdmin, method: "PUT", path: rtr,
			body:   fmt.Sprintf(`{"router": {"name": "renamed", "external_gateway_info": {"network_id": %q}}}`, fx.net2),
			status: 400, typ: "BadRequest", msg: fmt.Sprintf("Bad router request: Network %s is not an external network", fx.net2)},
		{name: "gateway on an invisible network", who: biDemo, method: "POST", path: "/v2.0/routers",
			body:   fmt.Sprintf(`{"router": {"name": "r2", "external_gateway_info": {"network_id": %q}}}`, fx.otherNet),
			status: 404, typ: "NetworkNotFound"},
		{name: "new router with gateway on a tenant network", who: biDemo, method: "POST", path: "/v2.0/routers",
			body:   fmt.Sprintf(`{"router": {"name": "r2", "external_gateway_info": {"network_id": %q}}}`, fx.net2),
			status: 400, typ: "BadRequest"},
		{name: "new HA router of a new project with a bad gateway", who: biAdmin, method: "POST", path: "/v2.0/routers",
			body:   fmt.Sprintf(`{"router": {"name": "r3", "ha": true, "tenant_id": "newproject", "external_gateway_info": {"network_id": %q}}}`, fx.net2),
			status: 400, typ: "BadRequest"},
		{name: "new router with a gateway IP already taken", who: biAdmin, method: "POST", path: "/v2.0/routers",
			body:   fmt.Sprintf(`{"router": {"name": "r4", "ha": true, "tenant_id": "demo", "external_gateway_info": {"network_id": %q, "external_fixed_ips": [{"ip_address": %s}]}}}`, fx.extNet, q(biFixtureFIPAddress)),
			status: 409, typ: "IpAddressAlreadyAllocated"},
		{name: "change ha of an active router", who: biAdmin, method: "PUT", path: rtr, body: `{"router": {"ha": false}}`,
			status: 400, typ: "BadRequest", msg: "Bad router request: Cannot change HA attribute of active routers. Please set router admin_state_up to False prior to upgrade."},
		{name: "change distributed of an active router", who: biAdmin, method: "PUT", path: rtr, body: `{"router": {"distributed": true}}`,
			status: 400, typ: "BadRequest", msg: "Bad router request: Cannot change the 'distributed' attribute of active routers. Please set router admin_state_up to False prior to upgrade."},
		{name: "external network made internal with gateways", who: biAdmin, method: "PUT", path: "/v2.0/networks/" + fx.extNet,
			body: `{"network": {"router:external": false}}`, status: 409, typ: "ExternalNetworkInUse"},
		{name: "second flat network on a physnet", who: biAdmin, method: "POST", path: "/v2.0/networks",
			body:   `{"network": {"name": "public2", "provider:network_type": "flat", "provider:physical_network": "public"}}`,
			status: 409, typ: "FlatNetworkInUse", msg: "Unable to create the flat network. Physical network public is in use."},
		{name: "VXLAN id in use", who: biAdmin, method: "POST", path: "/v2.0/networks",
			body:   fmt.Sprintf(`{"network": {"provider:network_type": "vxlan", "provider:segmentation_id": %d}}`, fx.seg),
			status: 409, typ: "TunnelIdInUse"},
		{name: "unsupported network type", who: biAdmin, method: "POST", path: "/v2.0/networks",
			body: `{"network": {"provider:network_type": "vlan", "provider:physical_network": "public"}}`, status: 400, typ: "InvalidInput"},
		{name: "flat without physnet", who: biAdmin, method: "POST", path: "/v2.0/networks",
			body: `{"network": {"provider:network_type": "flat"}}`, status: 400, typ: "InvalidInput"},
		{name: "router already on agent", who: biAdmin, method: "POST", path: "/v2.0/agents/" + fx.agents[0] + "/l3-routers",
			body: fmt.Sprintf(`{"router_id": %q}`, fx.router), status: 409, typ: "RouterHostedByL3Agent"},
		{name: "schedule without router_id", who: biAdmin, method: "POST", path: "/v2.0/agents/" + fx.agents[0] + "/l3-routers",
			body: `{}`, status: 400, typ: "HTTPBadRequest"},
		{name: "schedule not-a-uuid", who: biAdmin, method: "POST", path: "/v2.0/agents/" + fx.agents[0] + "/l3-routers",
			body: `{"router_id": "R"}`, status: 400, typ: "HTTPBadRequest"},
		{name: "schedule on unknown agent", who: biAdmin, method: "POST", path: "/v2.0/agents/" + bogusID + "/l3-routers",
			body: fmt.Sprintf(`{"router_id": %q}`, fx.router), status: 404, typ: "AgentNotFound"},
		{name: "unschedule from unknown agent", who: biAdmin, method: "DELETE", path: "/v2.0/agents/" + bogusID + "/l3-routers/" + fx.router,
			status: 404, typ: "AgentNotFound"},
		{name: "update agent with a bad boolean", who: biAdmin, method: "PUT", path: "/v2.0/agents/" + fx.agents[0],
			body: `{"agent": {"admin_state_up": "maybe"}}`, status: 400, typ: "HTTPBadRequest"},
		{name: "update agent host", who: biAdmin, method: "PUT", path: "/v2.0/agents/" + fx.agents[0],
			body: `{"agent": {"host": "elsewhere"}}`, status: 400, typ: "HTTPBadRequest"},
	}
}

// biFixtureFIPAddress is the address of the fixture's associated floating IP.
const biFixtureFIPAddress = "172.24.4.100"

func biHeaders(who biWho) map[string]string {
	switch who {
	case biAdmin:
		return map[string]string{"X-Project-Id": "admin", "X-Roles": "admin,member,reader"}
	case biNobody:
		return map[string]string{}
	default:
		return map[string]string{"X-Project-Id": string(who), "X-Roles": "member,reader"}
	}
}

// biCall sends a request and decodes a JSON answer of status want into out.
func biCall(base, method, path string, hdr map[string]string, body string, want int, out any) error {
	status, _, b, err := biDo(base, method, path, hdr, body)
	if err != nil {
		return err
	}
	if status != want {
		return fmt.Errorf("%s %s: status %d, want %d: %s", method, path, status, want, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return nil
}

func biDo(base, method, path string, hdr map[string]string, body string) (int, http.Header, []byte, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return 0, nil, nil, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b, err
}

// biMust is biCall as the fixture's builder uses it.
func biMust(t *testing.T, base string, who biWho, method, path string, body any, want int, out any) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if body == nil {
		s = ""
	}
	if err := biCall(base, method, path, biHeaders(who), s, want, out); err != nil {
		t.Fatal(err)
	}
}

type biObj = map[string]any

func biID(t *testing.T, base string, who biWho, collection string, body biObj) string {
	t.Helper()
	var out map[string]biObj
	biMust(t, base, who, "POST", "/v2.0/"+collection, body, 201, &out)
	for _, o := range out {
		return o["id"].(string)
	}
	t.Fatalf("POST %s returned nothing", collection)
	return ""
}

func biBuildFixture(t *testing.T, srv *servertest.Instance) *biFixture {
	t.Helper()
	u := srv.URL
	fx := &biFixture{}
	servertest.Eventually(t, 10*time.Second, func() error {
		var out struct{ Agents []biObj }
		if err := biCall(u, "GET", "/v2.0/agents", biHeaders(biAdmin), "", 200, &out); err != nil {
			return err
		}
		if len(out.Agents) != 2 {
			return fmt.Errorf("%d agents registered", len(out.Agents))
		}
		fx.agents = []string{out.Agents[0]["id"].(string), out.Agents[1]["id"].(string)}
		return nil
	})
	fx.extNet = biID(t, u, biAdmin, "networks", biObj{"network": biObj{
		"name": "public", "router:external": true, "provider:network_type": "flat", "provider:physical_network": "public",
	}})
	fx.extSub = biID(t, u, biAdmin, "subnets", biObj{"subnet": biObj{
		"name": "public-subnet", "network_id": fx.extNet, "ip_version": 4, "cidr": "172.24.4.0/24",
		"gateway_ip": "172.24.4.1", "enable_dhcp": false, "allocation_pools": []biObj{{"start": "172.24.4.10", "end": "172.24.4.250"}},
	}})
	fx.net = biID(t, u, biDemo, "networks", biObj{"network": biObj{"name": "demo-net"}})
	fx.sub = biID(t, u, biDemo, "subnets", biObj{"subnet": biObj{"name": "demo-subnet", "network_id": fx.net, "ip_version": 4, "cidr": "10.0.0.0/24"}})
	fx.net2 = biID(t, u, biDemo, "networks", biObj{"network": biObj{"name": "demo-net2"}})
	fx.sub2 = biID(t, u, biDemo, "subnets", biObj{"subnet": biObj{"name": "demo-subnet2", "network_id": fx.net2, "ip_version": 4, "cidr": "10.0.0.0/25"}})
	fx.otherNet = biID(t, u, biOther, "networks", biObj{"network": biObj{"name": "other-net"}})
	fx.otherSub = biID(t, u, biOther, "subnets", biObj{"subnet": biObj{"network_id": fx.otherNet, "ip_version": 4, "cidr": "10.50.0.0/24"}})
	var net struct{ Network biObj }
	biMust(t, u, biAdmin, "GET", "/v2.0/networks/"+fx.net, nil, 200, &net)
	fx.seg = int(net.Network["provider:segmentation_id"].(float64))

	// The HA router: only an admin may ask for ha.
	fx.router = biID(t, u, biAdmin, "routers", biObj{"router": biObj{"name": "ha-router", "ha": true, "tenant_id": "demo"}})
	var iface biObj
	biMust(t, u, biDemo, "PUT", "/v2.0/routers/"+fx.router+"/add_router_interface", biObj{"subnet_id": fx.sub}, 200, &iface)
	fx.ifacePort = iface["port_id"].(string)
	var rt struct{ Router biObj }
	biMust(t, u, biDemo, "PUT", "/v2.0/routers/"+fx.router, biObj{"router": biObj{"external_gateway_info": biObj{"network_id": fx.extNet}}}, 200, &rt)
	if rt.Router["external_gateway_info"] == nil {
		t.Fatalf("gateway not set: %v", rt.Router)
	}
	var ports struct{ Ports []biObj }
	biMust(t, u, biAdmin, "GET", "/v2.0/ports?device_id="+fx.router, nil, 200, &ports)
	for _, p := range ports.Ports {
		switch p["device_owner"] {
		case "network:router_gateway":
			fx.gwPort = p["id"].(string)
		case "network:router_ha_interface":
			fx.haPort = p["id"].(string)
			fx.haNet = p["network_id"].(string)
			fx.haSub = p["fixed_ips"].([]any)[0].(biObj)["subnet_id"].(string)
		}
	}
	if fx.gwPort == "" || fx.haPort == "" {
		t.Fatalf("router ports: %v", ports.Ports)
	}

	// A VM port with a floating IP, and a spare floating IP.
	var port struct{ Port biObj }
	biMust(t, u, biDemo, "POST", "/v2.0/ports", biObj{"port": biObj{"name": "vm-port", "network_id": fx.net}}, 201, &port)
	fx.vmPort = port.Port["id"].(string)
	fx.vmIP = port.Port["fixed_ips"].([]any)[0].(biObj)["ip_address"].(string)
	var fip struct{ Floatingip biObj }
	biMust(t, u, biAdmin, "POST", "/v2.0/floatingips", biObj{"floatingip": biObj{
		"floating_network_id": fx.extNet, "floating_ip_address": biFixtureFIPAddress, "port_id": fx.vmPort, "tenant_id": "demo",
	}}, 201, &fip)
	fx.fip = fip.Floatingip["id"].(string)
	if fip.Floatingip["router_id"] != fx.router || fip.Floatingip["fixed_ip_address"] != fx.vmIP {
		t.Fatalf("floating IP not associated through the router: %v", fip.Floatingip)
	}
	fx.fip2 = biID(t, u, biDemo, "floatingips", biObj{"floatingip": biObj{"floating_network_id": fx.extNet}})
	// A port on demo-net2, which no router connects to the external network.
	port2 := biID(t, u, biDemo, "ports", biObj{"port": biObj{"name": "lonely", "network_id": fx.net2}})
	fx.lonelyPort = port2
	return fx
}

// biSettle waits until the agents have reported: one active and one standby
// binding, the router's ports on the active host, and then until the
// database stops changing.
func biSettle(t *testing.T, srv *servertest.Instance, fx *biFixture) {
	t.Helper()
	servertest.Eventually(t, 15*time.Second, func() error {
		var ag struct{ Agents []biObj }
		if err := biCall(srv.URL, "GET", "/v2.0/routers/"+fx.router+"/l3-agents", biHeaders(biAdmin), "", 200, &ag); err != nil {
			return err
		}
		active := ""
		states := map[string]int{}
		for _, a := range ag.Agents {
			states[fmt.Sprint(a["ha_state"])]++
			if a["ha_state"] == "active" {
				active = a["host"].(string)
			}
		}
		if len(ag.Agents) != 2 || states["active"] != 1 || states["standby"] != 1 {
			return fmt.Errorf("ha states %v", states)
		}
		var ports struct{ Ports []biObj }
		if err := biCall(srv.URL, "GET", "/v2.0/ports?device_id="+fx.router, biHeaders(biAdmin), "", 200, &ports); err != nil {
			return err
		}
		for _, p := range ports.Ports {
			if p["device_owner"] != "network:router_ha_interface" && p["binding:host_id"] != active {
				return fmt.Errorf("port %v (%v) on host %q, active host %q", p["id"], p["device_owner"], p["binding:host_id"], active)
			}
		}
		return nil
	})
	biSettleQuiet(t, srv)
}

// biSettleQuiet waits until the database stops changing on its own: two
// dumps taken apart are equal.
func biSettleQuiet(t *testing.T, srv *servertest.Instance) {
	t.Helper()
	ctx := context.Background()
	servertest.Eventually(t, 15*time.Second, func() error {
		a, err := srv.Server.DB().Dump(ctx)
		if err != nil {
			return err
		}
		time.Sleep(300 * time.Millisecond)
		b, err := srv.Server.DB().Dump(ctx)
		if err != nil {
			return err
		}
		if d := biDiff(a, b); d != "" {
			return fmt.Errorf("database still changing:\n%s", d)
		}
		return nil
	})
}

func biRunCase(t *testing.T, srv *servertest.Instance, c biCase) {
	t.Helper()
	ctx := context.Background()
	before, err := srv.Server.DB().Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hdr := biHeaders(c.who)
	for k, v := range c.header {
		hdr[k] = v
	}
	status, rh, body, err := biDo(srv.URL, c.method, c.path, hdr, c.body)
	if err != nil {
		t.Errorf("%s: %v", c.name, err)
		return
	}
	show := string(body)
	if len(show) > 400 {
		show = show[:400] + "..."
	}
	if status != c.status {
		t.Errorf("%s: %s %s: status %d, want %d: %s", c.name, c.method, c.path, status, c.status, show)
	}
	if !strings.HasPrefix(c.path, "/agent/") && !strings.HasPrefix(rh.Get("X-Openstack-Request-Id"), "req-") {
		t.Errorf("%s: X-Openstack-Request-Id %q, want req-<uuid> as Neutron", c.name, rh.Get("X-Openstack-Request-Id"))
	}
	if c.plain401 {
		if ct := rh.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("%s: 401 Content-Type %q, want text/plain as Neutron", c.name, ct)
		}
		if !strings.HasPrefix(string(body), "401 Unauthorized") {
			t.Errorf("%s: 401 body %q", c.name, show)
		}
		if rh.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without WWW-Authenticate", c.name)
		}
	} else {
		biCheckNeutronError(t, c, rh, body)
	}
	after, err := srv.Server.DB().Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := biDiff(before, after); d != "" {
		t.Errorf("%s: %s %s changed the database:\n%s", c.name, c.method, c.path, d)
	}
}

// biCheckNeutronError checks the Content-Type and that the body is exactly
// {"NeutronError": {"type": …, "message": …, "detail": ""}}.
func biCheckNeutronError(t *testing.T, c biCase, rh http.Header, body []byte) {
	t.Helper()
	if ct := rh.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type %q, want application/json", c.name, ct)
	}
	var outer map[string]json.RawMessage
	if err := json.Unmarshal(body, &outer); err != nil || len(outer) != 1 || outer["NeutronError"] == nil {
		t.Errorf("%s: body is not {\"NeutronError\": {...}}: %.300s", c.name, body)
		return
	}
	var inner map[string]any
	if err := json.Unmarshal(outer["NeutronError"], &inner); err != nil {
		t.Errorf("%s: NeutronError is not an object: %.300s", c.name, body)
		return
	}
	keys := make([]string, 0, len(inner))
	for k := range inner {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if !reflect.DeepEqual(keys, []string{"detail", "message", "type"}) {
		t.Errorf("%s: NeutronError keys %v, want detail, message, type", c.name, keys)
	}
	typ, _ := inner["type"].(string)
	msg, msgOK := inner["message"].(string)
	if detail, ok := inner["detail"].(string); !ok || detail != "" {
		t.Errorf("%s: detail %#v, want \"\"", c.name, inner["detail"])
	}
	if !msgOK || msg == "" {
		t.Errorf("%s: message %#v, want a non-empty string", c.name, inner["message"])
	}
	if c.typ != "" && typ != c.typ {
		t.Errorf("%s: type %q, want %q (message %q)", c.name, typ, c.typ, msg)
	}
	if c.msg != "" && msg != c.msg {
		t.Errorf("%s: message\n  %q\nwant\n  %q", c.name, msg, c.msg)
	}
	if c.substr != "" && !strings.Contains(msg, c.substr) {
		t.Errorf("%s: message %q does not contain %q", c.name, msg, c.substr)
	}
}

// biDiff describes the rows only in a or only in b, per table.
func biDiff(a, b map[string][]string) string {
	var out bytes.Buffer
	tables := map[string]bool{}
	for k := range a {
		tables[k] = true
	}
	for k := range b {
		tables[k] = true
	}
	names := make([]string, 0, len(tables))
	for k := range tables {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, tb := range names {
		if reflect.DeepEqual(a[tb], b[tb]) {
			continue
		}
		inA := map[string]int{}
		for _, r := range a[tb] {
			inA[r]++
		}
		for _, r := range b[tb] {
			inA[r]--
		}
		rows := make([]string, 0)
		for r, n := range inA {
			for ; n > 0; n-- {
				rows = append(rows, "  - "+r)
			}
			for ; n < 0; n++ {
				rows = append(rows, "  + "+r)
			}
		}
		sort.Strings(rows)
		fmt.Fprintf(&out, "table %s:\n%s\n", tb, strings.Join(rows, "\n"))
	}
	return out.String()
}
