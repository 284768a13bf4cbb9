package server_test

import (
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"testing"

	"github.com/l3ha/l3ha/internal/servertest"
)

// Behaviours of Neutron's API that tempest's network tests exercise (the
// tempest test named in each comment), checked here without tempest.

// TestBulkCreateIsAllOrNothing: POST {"networks": [...]} (and subnets,
// ports) creates every object in one go and answers them in order; when one
// of them cannot be created none is (tempest BulkNetworkOpsTest,
// PortsTestJSON.test_create_bulk_port).
func TestBulkCreateIsAllOrNothing(t *testing.T) {
	for _, backend := range servertest.Backends(t) {
		t.Run(backend, func(t *testing.T) {
			c := newHACloud(t, servertest.Options{Backend: backend})
			demo := c.tenant("demo")
			// Items bare or wrapped in their singular key, as Neutron takes them.
			nets := demo.mustDo("POST", "/v2.0/networks", haObj{"networks": []haObj{{"name": "b1"}, {"network": haObj{"name": "b2"}}}}, http.StatusCreated).objs("networks")
			if len(nets) != 2 || nets[0].str("name") != "b1" || nets[1].str("name") != "b2" || nets[0].str("project_id") != "demo" {
				t.Fatalf("bulk networks: %v", nets)
			}
			subs := demo.mustDo("POST", "/v2.0/subnets", haObj{"subnets": []haObj{
				{"network_id": nets[0].str("id"), "cidr": "10.1.0.0/24", "ip_version": 4},
				{"network_id": nets[1].str("id"), "cidr": "10.2.0.0/24", "ip_version": 4},
			}}, http.StatusCreated).objs("subnets")
			if len(subs) != 2 || subs[0].str("cidr") != "10.1.0.0/24" || subs[1].str("network_id") != nets[1].str("id") {
				t.Fatalf("bulk subnets: %v", subs)
			}
			ports := demo.mustDo("POST", "/v2.0/ports", haObj{"ports": []haObj{
				{"network_id": nets[0].str("id"), "name": "p1"}, {"network_id": nets[1].str("id"), "name": "p2"},
			}}, http.StatusCreated).objs("ports")
			if len(ports) != 2 || ports[0].str("name") != "p1" || ports[1].str("network_id") != nets[1].str("id") {
				t.Fatalf("bulk ports: %v", ports)
			}
			ip, _ := ports[0].fixedIP()

			// The second port asks for the first one's address: neither is created.
			before := len(demo.list("/v2.0/ports"))
			demo.do("POST", "/v2.0/ports", haObj{"ports": []haObj{
				{"network_id": nets[0].str("id"), "name": "p3"},
				{"network_id": nets[0].str("id"), "name": "p4", "fixed_ips": []haObj{{"ip_address": ip}}},
			}}).wantError(t, http.StatusConflict, "IpAddressAlreadyAllocated", "")
			if after := demo.list("/v2.0/ports"); len(after) != before {
				t.Errorf("failed bulk create left ports behind: %d ports, had %d", len(after), before)
			}
			// The third network overlaps nothing but names a segment in use.
			admin := c.admin()
			seg := admin.mustDo("GET", "/v2.0/networks/"+nets[0].str("id"), nil, http.StatusOK).obj("network")["provider:segmentation_id"]
			beforeNets := len(admin.list("/v2.0/networks"))
			admin.do("POST", "/v2.0/networks", haObj{"networks": []haObj{
				{"name": "b3"}, {"name": "b4"}, {"name": "b5", "provider:network_type": "vxlan", "provider:segmentation_id": seg},
			}}).wantError(t, http.StatusConflict, "TunnelIdInUse", "")
			if after := admin.list("/v2.0/networks"); len(after) != beforeNets {
				t.Errorf("failed bulk create left networks behind: %d networks, had %d", len(after), beforeNets)
			}
			demo.do("POST", "/v2.0/networks", haObj{"networks": []haObj{}}).wantError(t, http.StatusBadRequest, "HTTPBadRequest", "Resources required")
			demo.do("POST", "/v2.0/networks", haObj{"nets": []haObj{{}}}).wantError(t, http.StatusBadRequest, "HTTPBadRequest", "Unable to find 'network' in request body")
		})
	}
}

// TestListFiltersAreValidated: with filter-validation a filter on an
// attribute the resource does not have is a 400, not an empty list; a
// known one filters (tempest ExternalNetworksTestJSON.
// test_delete_external_networks_with_floating_ip lists floating IPs by
// floating_network_id). fixed_ips filters match one address on every key
// given, any of a key's values, and ip_address_substr matches part of an
// address (PortsTestJSON.test_port_list_filter_by_ip_substr).
func TestListFiltersAreValidated(t *testing.T) {
	c := newHACloud(t, servertest.Options{})
	admin, demo := c.admin(), c.tenant("demo")
	net, sub := demo.createNetwork("n", "10.0.0.0/24")
	net2, sub2 := demo.createNetwork("n2", "10.9.0.0/24")
	demo.do("GET", "/v2.0/floatingips?invalid_filter=x", nil).wantError(t, http.StatusBadRequest, "HTTPBadRequest", "['invalid_filter'] is invalid attribute for filtering")
	admin.do("GET", "/v2.0/networks?b=1&a=2&name=n", nil).wantError(t, http.StatusBadRequest, "HTTPBadRequest", "['a', 'b'] is invalid attribute for filtering")
	if got := demo.list("/v2.0/networks?name=n&router:external=false&fields=id"); len(got) != 1 || got[0].str("id") != net {
		t.Errorf("networks?name=n: %v", got)
	}
	// Attributes a tenant does not see are still attributes: no 400, no match.
	if got := demo.list("/v2.0/networks?provider:network_type=vxlan"); len(got) != 0 {
		t.Errorf("tenant filtering on a hidden attribute finds %v", got)
	}

	mk := func(ip, network, subnet string) string {
		fixed := []haObj{{"subnet_id": subnet, "ip_address": ip}}
		return demo.mustDo("POST", "/v2.0/ports", haBody("port", haObj{"network_id": network, "fixed_ips": fixed}), http.StatusCreated).obj("port").str("id")
	}
	p11, p12, p21 := mk("10.0.0.11", net, sub), mk("10.0.0.12", net, sub), mk("10.9.0.21", net2, sub2)
	ids := func(q url.Values) []string {
		var out []string
		for _, p := range demo.list("/v2.0/ports?" + q.Encode()) {
			out = append(out, p.str("id"))
		}
		sort.Strings(out)
		return out
	}
	want := func(ids ...string) []string { sort.Strings(ids); return ids }
	for _, tc := range []struct {
		q    []string
		want []string
	}{
		{[]string{"ip_address=10.0.0.11"}, want(p11)},
		{[]string{"ip_address=10.0.0.11", "ip_address=10.9.0.21"}, want(p11, p21)},
		{[]string{"subnet_id=" + sub, "ip_address=10.9.0.21"}, nil},
		{[]string{"subnet_id=" + sub, "ip_address=10.0.0.12"}, want(p12)},
		{[]string{"ip_address_substr=10.0.0.1"}, want(p11, p12)},
		{[]string{"ip_address_substr=.21"}, want(p21)},
		{[]string{"ip_address_substr=10.", "subnet_id=" + sub2}, want(p21)},
	} {
		if got := ids(url.Values{"fixed_ips": tc.q}); fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("ports?fixed_ips=%v: %v, want %v", tc.q, got, tc.want)
		}
	}
}

// TestTenantsSeeSubnetsOfTheirOwnAndSharedNetworksOnly: an external network
// is visible to every project, its subnets only when it is shared too
// (NetworksTest.test_external_network_visibility).
func TestTenantsSeeSubnetsOfTheirOwnAndSharedNetworksOnly(t *testing.T) {
	c := newHACloud(t, servertest.Options{})
	admin, demo := c.admin(), c.tenant("demo")
	ext := admin.mustDo("POST", "/v2.0/networks", haBody("network", haObj{"name": "public", "router:external": true}), http.StatusCreated).obj("network").str("id")
	extSub := admin.mustDo("POST", "/v2.0/subnets", haBody("subnet", haObj{"network_id": ext, "cidr": "172.24.4.0/24", "ip_version": 4}), http.StatusCreated).obj("subnet").str("id")
	shared := admin.mustDo("POST", "/v2.0/networks", haBody("network", haObj{"name": "shared", "shared": true}), http.StatusCreated).obj("network").str("id")
	sharedSub := admin.mustDo("POST", "/v2.0/subnets", haBody("subnet", haObj{"network_id": shared, "cidr": "10.5.0.0/24", "ip_version": 4}), http.StatusCreated).obj("subnet").str("id")
	_, own := demo.createNetwork("own", "10.0.0.0/24")

	if got := demo.list("/v2.0/networks?router:external=true"); len(got) != 1 || got[0].str("id") != ext {
		t.Errorf("tenant's external networks: %v", got)
	}
	if got := demo.list("/v2.0/subnets?network_id=" + ext); len(got) != 0 {
		t.Errorf("tenant sees the subnets of a non-shared external network: %v", got)
	}
	demo.do("GET", "/v2.0/subnets/"+extSub, nil).wantError(t, http.StatusNotFound, "SubnetNotFound", "Subnet "+extSub+" could not be found.")
	var seen []string
	for _, s := range demo.list("/v2.0/subnets") {
		seen = append(seen, s.str("id"))
	}
	sort.Strings(seen)
	w := []string{own, sharedSub}
	sort.Strings(w)
	if fmt.Sprint(seen) != fmt.Sprint(w) {
		t.Errorf("tenant's subnets %v, want its own and the shared network's %v", seen, w)
	}
	if len(admin.list("/v2.0/subnets?network_id="+ext)) != 1 {
		t.Errorf("admin does not see the external subnet")
	}
}

// TestTenantListsNoAgents: agents are admin-only, and a list leaves out what
// policy forbids showing: a tenant gets an empty list, not a 403, and an
// agent it asks for does not exist
// (AgentManagementNegativeTest.test_list_agents_non_admin).
func TestTenantListsNoAgents(t *testing.T) {
	c := newHACloud(t, servertest.Options{})
	c.startAgents("net1")
	admin, demo := c.admin(), c.tenant("demo")
	agents := admin.list("/v2.0/agents")
	if len(agents) != 1 {
		t.Fatalf("admin sees %d agents, want 1", len(agents))
	}
	if got := demo.mustDo("GET", "/v2.0/agents", nil, http.StatusOK); len(got.objs("agents")) != 0 || got["agents"] == nil {
		t.Errorf("tenant's agent list: %v, want []", got)
	}
	demo.do("GET", "/v2.0/agents/"+agents[0].str("id"), nil).wantError(t, http.StatusNotFound, "HTTPNotFound", "The resource could not be found.")
}

// TestNetworkOwnerMaySetPortMAC: create_port:mac_address is
// admin_or_network_owner (PortsTestJSON.
// test_create_show_delete_port_user_defined_mac); on another project's
// network it is refused.
func TestNetworkOwnerMaySetPortMAC(t *testing.T) {
	c := newHACloud(t, servertest.Options{})
	admin, demo := c.admin(), c.tenant("demo")
	net, _ := demo.createNetwork("n", "10.0.0.0/24")
	p := demo.mustDo("POST", "/v2.0/ports", haBody("port", haObj{"network_id": net}), http.StatusCreated).obj("port")
	mac := p.str("mac_address")
	demo.mustDo("DELETE", "/v2.0/ports/"+p.str("id"), nil, http.StatusNoContent)
	again := demo.mustDo("POST", "/v2.0/ports", haBody("port", haObj{"network_id": net, "mac_address": mac}), http.StatusCreated).obj("port")
	if again.str("mac_address") != mac {
		t.Errorf("port created with MAC %s has %s", mac, again.str("mac_address"))
	}
	shared := admin.mustDo("POST", "/v2.0/networks", haBody("network", haObj{"name": "shared", "shared": true}), http.StatusCreated).obj("network").str("id")
	admin.mustDo("POST", "/v2.0/subnets", haBody("subnet", haObj{"network_id": shared, "cidr": "10.5.0.0/24", "ip_version": 4}), http.StatusCreated)
	demo.do("POST", "/v2.0/ports", haBody("port", haObj{"network_id": shared, "mac_address": "fa:16:3e:00:00:42"})).wantError(t,
		http.StatusForbidden, "PolicyNotAuthorized", "(rule:create_port and rule:create_port:mac_address) is disallowed by policy")
	demo.mustDo("POST", "/v2.0/ports", haBody("port", haObj{"network_id": shared}), http.StatusCreated)
	admin.mustDo("POST", "/v2.0/ports", haBody("port", haObj{"network_id": shared, "mac_address": "fa:16:3e:00:00:42"}), http.StatusCreated)
}

// TestPortUpdateKeepsTheAddressesItNames: a fixed_ips entry naming only a
// subnet the port has an address on keeps that address, as Neutron's IPAM
// does; so a router interface port may be "updated" to what it has
// (RoutersTest.test_router_interface_port_update_with_fixed_ip), while
// changing its addresses is refused (l3-port-ip-change-not-allowed).
func TestPortUpdateKeepsTheAddressesItNames(t *testing.T) {
	c := newHACloud(t, servertest.Options{})
	demo := c.tenant("demo")
	net, sub := demo.createNetwork("n", "10.0.0.0/24")
	port := demo.mustDo("POST", "/v2.0/ports", haBody("port", haObj{"network_id": net}), http.StatusCreated).obj("port")
	ip, _ := port.fixedIP()
	upd := demo.mustDo("PUT", "/v2.0/ports/"+port.str("id"), haBody("port", haObj{"fixed_ips": []haObj{{"subnet_id": sub}}}), http.StatusOK).obj("port")
	if got, _ := upd.fixedIP(); got != ip || len(upd.objs("fixed_ips")) != 1 {
		t.Errorf("port updated to its own subnet moved from %s to %v", ip, upd["fixed_ips"])
	}
	two := demo.mustDo("PUT", "/v2.0/ports/"+port.str("id"), haBody("port", haObj{"fixed_ips": []haObj{{"subnet_id": sub}, {"subnet_id": sub}}}), http.StatusOK).obj("port")
	if fips := two.objs("fixed_ips"); len(fips) != 2 || fips[0].str("ip_address") != ip {
		t.Errorf("a second address on the subnet: %v (first should stay %s)", two["fixed_ips"], ip)
	}
	one := demo.mustDo("PUT", "/v2.0/ports/"+port.str("id"), haBody("port", haObj{"fixed_ips": []haObj{{"ip_address": ip}}}), http.StatusOK).obj("port")
	if fips := one.objs("fixed_ips"); len(fips) != 1 || fips[0].str("ip_address") != ip {
		t.Errorf("back to the first address: %v", one["fixed_ips"])
	}

	rid := demo.mustDo("POST", "/v2.0/routers", haBody("router", haObj{"name": "r"}), http.StatusCreated).obj("router").str("id")
	iface := demo.mustDo("PUT", "/v2.0/routers/"+rid+"/add_router_interface", haObj{"subnet_id": sub}, http.StatusOK)
	pid := iface.str("port_id")
	got := demo.mustDo("PUT", "/v2.0/ports/"+pid, haBody("port", haObj{"fixed_ips": []haObj{{"subnet_id": sub}}}), http.StatusOK).obj("port")
	if gip, gsub := got.fixedIP(); gip != "10.0.0.1" || gsub != sub {
		t.Errorf("router interface port after a no-op update: %v", got["fixed_ips"])
	}
	demo.mustDo("PUT", "/v2.0/ports/"+pid, haBody("port", haObj{"fixed_ips": []haObj{{"subnet_id": sub, "ip_address": "10.0.0.1"}}, "name": "renamed"}), http.StatusOK)
	msg := "Bad ports request: IP updates for port " + pid + " are not allowed."
	demo.do("PUT", "/v2.0/ports/"+pid, haBody("port", haObj{"fixed_ips": []haObj{{"subnet_id": sub, "ip_address": "10.0.0.77"}}})).wantError(t, http.StatusBadRequest, "BadRequest", msg)
	demo.do("PUT", "/v2.0/ports/"+pid, haBody("port", haObj{"fixed_ips": []haObj{{"subnet_id": sub}, {"subnet_id": sub}}})).wantError(t, http.StatusBadRequest, "BadRequest", msg)
	demo.do("PUT", "/v2.0/ports/"+pid, haBody("port", haObj{"fixed_ips": []haObj{}})).wantError(t, http.StatusBadRequest, "BadRequest", msg)
	after := demo.mustDo("GET", "/v2.0/ports/"+pid, nil, http.StatusOK).obj("port")
	if gip, _ := after.fixedIP(); gip != "10.0.0.1" || len(after.objs("fixed_ips")) != 1 || after.str("name") != "renamed" {
		t.Errorf("router interface port after refused updates: %v", after)
	}
}

// TestDeletingAnExternalNetworkDeletesItsFreeFloatingIPs: floating IPs
// associated with nothing go with their external network, as in Neutron
// (ExternalNetworksTestJSON.test_delete_external_networks_with_floating_ip);
// an associated one keeps the network in use.
func TestDeletingAnExternalNetworkDeletesItsFreeFloatingIPs(t *testing.T) {
	c := newHACloud(t, servertest.Options{})
	admin, demo := c.admin(), c.tenant("demo")
	mkExt := func(name, cidr string) string {
		ext := admin.mustDo("POST", "/v2.0/networks", haBody("network", haObj{"name": name, "router:external": true}), http.StatusCreated).obj("network").str("id")
		admin.mustDo("POST", "/v2.0/subnets", haBody("subnet", haObj{"network_id": ext, "cidr": cidr, "ip_version": 4, "enable_dhcp": false}), http.StatusCreated)
		return ext
	}
	ext := mkExt("public", "172.24.4.0/24")
	fip := demo.mustDo("POST", "/v2.0/floatingips", haBody("floatingip", haObj{"floating_network_id": ext}), http.StatusCreated).obj("floatingip").str("id")
	admin.mustDo("DELETE", "/v2.0/networks/"+ext, nil, http.StatusNoContent)
	demo.do("GET", "/v2.0/floatingips/"+fip, nil).wantError(t, http.StatusNotFound, "FloatingIPNotFound", "")
	if got := admin.list("/v2.0/ports"); len(got) != 0 {
		t.Errorf("ports left after the external network went: %v", got)
	}

	// An associated floating IP keeps its network.
	ext2 := mkExt("public2", "172.24.5.0/24")
	net, sub := demo.createNetwork("n", "10.0.0.0/24")
	rid := demo.mustDo("POST", "/v2.0/routers", haBody("router", haObj{"name": "r", "external_gateway_info": haObj{"network_id": ext2}}), http.StatusCreated).obj("router").str("id")
	demo.mustDo("PUT", "/v2.0/routers/"+rid+"/add_router_interface", haObj{"subnet_id": sub}, http.StatusOK)
	vm := demo.mustDo("POST", "/v2.0/ports", haBody("port", haObj{"network_id": net}), http.StatusCreated).obj("port").str("id")
	demo.mustDo("POST", "/v2.0/floatingips", haBody("floatingip", haObj{"floating_network_id": ext2, "port_id": vm}), http.StatusCreated)
	free := demo.mustDo("POST", "/v2.0/floatingips", haBody("floatingip", haObj{"floating_network_id": ext2}), http.StatusCreated).obj("floatingip").str("id")
	admin.do("DELETE", "/v2.0/networks/"+ext2, nil).wantError(t, http.StatusConflict, "NetworkInUse", "")
	// The refused delete changed nothing.
	demo.mustDo("GET", "/v2.0/floatingips/"+free, nil, http.StatusOK)
}

// TestSubnetsAreIPv4Only: l3ha routes IPv4 only, so IPv6 subnets and
// addresses are refused rather than accepted and not served (which is why
// tempest runs with [network-feature-enabled] ipv6 = false).
func TestSubnetsAreIPv4Only(t *testing.T) {
	c := newHACloud(t, servertest.Options{})
	demo := c.tenant("demo")
	net := demo.mustDo("POST", "/v2.0/networks", haBody("network", haObj{"name": "n"}), http.StatusCreated).obj("network").str("id")
	demo.do("POST", "/v2.0/subnets", haBody("subnet", haObj{"network_id": net, "cidr": "2001:db8::/64", "ip_version": 6})).wantError(t,
		http.StatusBadRequest, "InvalidInput", "Invalid input for operation: IPv6 subnets are not supported by l3ha yet.")
	demo.do("POST", "/v2.0/subnets", haBody("subnet", haObj{"network_id": net, "cidr": "2001:db8::/64", "ip_version": 4})).wantError(t,
		http.StatusBadRequest, "InvalidInput", "")
	demo.do("POST", "/v2.0/subnets", haBody("subnet", haObj{"network_id": net, "cidr": "2001:db8::/64"})).wantError(t,
		http.StatusBadRequest, "InvalidInput", "")
	if got := demo.list("/v2.0/subnets"); len(got) != 0 {
		t.Fatalf("IPv6 subnets created: %v", got)
	}
	demo.mustDo("POST", "/v2.0/subnets", haBody("subnet", haObj{"network_id": net, "cidr": "10.0.0.0/24", "ip_version": 4}), http.StatusCreated)
	demo.do("POST", "/v2.0/ports", haBody("port", haObj{"network_id": net, "fixed_ips": []haObj{{"ip_address": "2001:db8::5"}}})).wantError(t,
		http.StatusBadRequest, "InvalidInput", "")
}

// TestDistributedRoutersAreRefused: l3ha's agents run every router
// centrally, so distributed=true is refused on create and on update (of a
// router that is down, where Neutron would migrate it) and dvr is not
// listed; distributed=false is accepted and shown (tempest's DVR tests are
// skipped for want of the extension).
func TestDistributedRoutersAreRefused(t *testing.T) {
	c := newHACloud(t, servertest.Options{})
	admin := c.admin()
	const msg = "Bad router request: distributed routers (DVR) are not implemented by l3ha; distributed must be false."
	admin.do("POST", "/v2.0/routers", haObj{"router": haObj{"name": "d", "distributed": true}}).wantError(t, http.StatusBadRequest, "BadRequest", msg)
	admin.do("POST", "/v2.0/routers", haObj{"router": haObj{"name": "d", "ha": true, "distributed": true}}).wantError(t, http.StatusBadRequest, "BadRequest", msg)
	r := admin.mustDo("POST", "/v2.0/routers", haObj{"router": haObj{"name": "c", "distributed": false, "admin_state_up": false}}, http.StatusCreated).obj("router")
	if r["distributed"] != false {
		t.Fatalf("router %v", r)
	}
	admin.do("PUT", "/v2.0/routers/"+r.str("id"), haObj{"router": haObj{"distributed": true}}).wantError(t, http.StatusBadRequest, "BadRequest", msg)
	if got := admin.mustDo("GET", "/v2.0/routers/"+r.str("id"), nil, http.StatusOK).obj("router"); got["distributed"] != false {
		t.Fatalf("router after a refused update: %v", got)
	}
	if len(admin.list("/v2.0/routers")) != 1 {
		t.Errorf("refused creates left routers behind")
	}
	admin.do("GET", "/v2.0/extensions/dvr", nil).wantError(t, http.StatusNotFound, "HTTPNotFound", "")
}
