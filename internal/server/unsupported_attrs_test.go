package server_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/servertest"
)

// What l3ha does not implement it neither advertises, accepts nor shows
// (issue 12): an attribute of an extension l3ha does not list is refused
// as Neutron refuses one of an extension that is not loaded — a 400 with
// "Unrecognized attribute(s) '…'" — and changes nothing, so that no tenant
// believes a port is filtered when nothing filters it.

// unsupportedFixture is one project's resources to create and update.
type unsupportedFixture struct {
	c                 *haCloud
	admin, demo       *haAPI
	net, sub          string
	port, router, fip string
	public            string
}

func newUnsupportedFixture(t *testing.T) *unsupportedFixture {
	t.Helper()
	c := newHACloud(t, servertest.Options{})
	f := &unsupportedFixture{c: c, admin: c.admin(), demo: c.tenant("demo")}
	f.net, f.sub = f.demo.createNetwork("n", "10.0.0.0/24")
	f.port = f.demo.mustDo("POST", "/v2.0/ports", haBody("port", haObj{"network_id": f.net, "name": "p"}), http.StatusCreated).obj("port").str("id")
	f.router = f.demo.mustDo("POST", "/v2.0/routers", haBody("router", haObj{"name": "r"}), http.StatusCreated).obj("router").str("id")
	f.public = f.admin.mustDo("POST", "/v2.0/networks", haBody("network", haObj{
		"name": "public", "router:external": true, "provider:network_type": "flat", "provider:physical_network": "public",
	}), http.StatusCreated).obj("network").str("id")
	f.admin.mustDo("POST", "/v2.0/subnets", haBody("subnet", haObj{"network_id": f.public, "cidr": "172.24.4.0/24", "ip_version": 4}), http.StatusCreated)
	f.fip = f.demo.mustDo("POST", "/v2.0/floatingips", haBody("floatingip", haObj{"floating_network_id": f.public}), http.StatusCreated).obj("floatingip").str("id")
	return f
}

// createBody is a valid create body of collection with extra attributes.
func (f *unsupportedFixture) createBody(collection string, extra haObj) haObj {
	var o haObj
	switch collection {
	case "networks":
		o = haObj{"name": "refused"}
	case "subnets":
		o = haObj{"network_id": f.net, "cidr": "10.1.0.0/24", "ip_version": 4}
	case "ports":
		o = haObj{"network_id": f.net, "name": "refused"}
	case "routers":
		o = haObj{"name": "refused"}
	case "floatingips":
		o = haObj{"floating_network_id": f.public}
	}
	for k, v := range extra {
		o[k] = v
	}
	return haBody(strings.TrimSuffix(collection, "s"), o)
}

// caseName names a subtest after a request body: `ports {"x":1}`.
func caseName(collection string, attrs haObj) string {
	b, _ := json.Marshal(attrs)
	return collection + " " + string(b)
}

// member is the fixture's resource of collection.
func (f *unsupportedFixture) member(collection string) string {
	return map[string]string{"networks": f.net, "subnets": f.sub, "ports": f.port, "routers": f.router, "floatingips": f.fip}[collection]
}

// wantRefusedAndUnchanged sends a create and an update carrying attrs and
// checks both are refused with want and change nothing: no object created,
// the updated one as it was (revision included).
func (f *unsupportedFixture) wantRefusedAndUnchanged(t *testing.T, collection string, attrs haObj, status int, typ, want string) {
	t.Helper()
	admin, demo := f.admin.on(t), f.demo.on(t)
	before := len(admin.list("/v2.0/" + collection))
	demo.do("POST", "/v2.0/"+collection, f.createBody(collection, attrs)).wantError(t, status, typ, want)
	// In bulk too: one refused item refuses the request.
	demo.do("POST", "/v2.0/"+collection, haObj{collection: []haObj{
		f.createBody(collection, nil)[strings.TrimSuffix(collection, "s")].(haObj),
		f.createBody(collection, attrs)[strings.TrimSuffix(collection, "s")].(haObj),
	}}).wantError(t, status, typ, want)
	if after := len(admin.list("/v2.0/" + collection)); after != before {
		t.Errorf("refused creates of %s: %d %s, had %d", attrs, after, collection, before)
	}
	path := "/v2.0/" + collection + "/" + f.member(collection)
	old := admin.mustDo("GET", path, nil, http.StatusOK)
	demo.do("PUT", path, haBody(strings.TrimSuffix(collection, "s"), attrs)).wantError(t, status, typ, want)
	if got := admin.mustDo("GET", path, nil, http.StatusOK); !reflect.DeepEqual(got, old) {
		t.Errorf("refused update with %v changed %s:\n got %v\nwant %v", attrs, path, got, old)
	}
}

// TestUnimplementedExtensionAttributesAreRefused: security groups, port
// security, allowed address pairs, extra DHCP options and the other
// attributes of extensions l3ha does not list are unrecognized on create
// (single and bulk) and update, with Neutron's body, and change nothing.
func TestUnimplementedExtensionAttributesAreRefused(t *testing.T) {
	f := newUnsupportedFixture(t)
	const sg = "2c8a1e1f-4e3b-4c0e-9d3a-0b8e5e2f6a71"
	for _, tc := range []struct {
		collection string
		attrs      haObj
		message    string
	}{
		{"ports", haObj{"security_groups": []string{sg}}, "Unrecognized attribute(s) 'security_groups'"},
		{"ports", haObj{"security_groups": []string{}}, "Unrecognized attribute(s) 'security_groups'"},
		{"ports", haObj{"port_security_enabled": false}, "Unrecognized attribute(s) 'port_security_enabled'"},
		{"ports", haObj{"port_security_enabled": true}, "Unrecognized attribute(s) 'port_security_enabled'"},
		{"ports", haObj{"allowed_address_pairs": []haObj{{"ip_address": "10.0.0.99"}}}, "Unrecognized attribute(s) 'allowed_address_pairs'"},
		{"ports", haObj{"extra_dhcp_opts": []haObj{{"opt_name": "mtu", "opt_value": "1400"}}}, "Unrecognized attribute(s) 'extra_dhcp_opts'"},
		{"ports", haObj{"security_groups": []string{sg}, "port_security_enabled": true, "allowed_address_pairs": []haObj{}},
			"Unrecognized attribute(s) 'allowed_address_pairs, port_security_enabled, security_groups'"},
		{"networks", haObj{"port_security_enabled": false}, "Unrecognized attribute(s) 'port_security_enabled'"},
		{"networks", haObj{"port_security_enabled": true}, "Unrecognized attribute(s) 'port_security_enabled'"},
		{"networks", haObj{"availability_zone_hints": []string{"nova"}}, "Unrecognized attribute(s) 'availability_zone_hints'"},
		{"subnets", haObj{"service_types": []string{"compute:nova"}}, "Unrecognized attribute(s) 'service_types'"},
		{"subnets", haObj{"segment_id": sg}, "Unrecognized attribute(s) 'segment_id'"},
		{"routers", haObj{"availability_zone_hints": []string{"nova"}}, "Unrecognized attribute(s) 'availability_zone_hints'"},
		{"routers", haObj{"flavor_id": nil}, "Unrecognized attribute(s) 'flavor_id'"},
		{"floatingips", haObj{"dns_name": "www", "dns_domain": "example.org."}, "Unrecognized attribute(s) 'dns_domain, dns_name'"},
	} {
		t.Run(caseName(tc.collection, tc.attrs), func(t *testing.T) {
			f.wantRefusedAndUnchanged(t, tc.collection, tc.attrs, http.StatusBadRequest, "HTTPBadRequest", tc.message)
		})
	}
	// The whole body, as Neutron writes it.
	r := f.demo.do("POST", "/v2.0/ports", f.createBody("ports", haObj{"security_groups": []string{sg}}))
	want := haObj{"NeutronError": map[string]any{"type": "HTTPBadRequest", "message": "Unrecognized attribute(s) 'security_groups'", "detail": ""}}
	if r.status != http.StatusBadRequest || !reflect.DeepEqual(r.body, want) {
		t.Errorf("POST port with security_groups: %d %s, want 400 %v", r.status, r.raw, want)
	}
	// An admin is refused alike.
	f.admin.do("PUT", "/v2.0/ports/"+f.port, haBody("port", haObj{"port_security_enabled": false})).wantError(t,
		http.StatusBadRequest, "HTTPBadRequest", "Unrecognized attribute(s) 'port_security_enabled'")
}

// TestUnhonouredValuesOfKnownAttributesAreRefused: attributes l3ha knows
// but whose other values would ask for what it does not do are refused
// for those values — a vnic type other than normal, a binding profile, a
// subnet pool, IPv6 address modes, a QoS policy on the gateway — and
// accepted for the values that ask for nothing.
func TestUnhonouredValuesOfKnownAttributesAreRefused(t *testing.T) {
	f := newUnsupportedFixture(t)
	for _, tc := range []struct {
		collection string
		attrs      haObj
		update     bool // also refused on update (else a create-only attribute)
		typ, msg   string
	}{
		{"ports", haObj{"binding:vnic_type": "direct"}, true, "HTTPBadRequest", "Invalid input for binding:vnic_type. Reason: 'direct' is not in ['normal']."},
		{"ports", haObj{"binding:vnic_type": "bogus"}, true, "HTTPBadRequest", "Invalid input for binding:vnic_type. Reason: 'bogus' is not in ['normal']."},
		{"routers", haObj{"external_gateway_info": haObj{"network_id": f.public, "qos_policy_id": nil}}, true, "HTTPBadRequest",
			"Invalid input for external_gateway_info. Reason: Unexpected keys supplied: qos_policy_id."},
	} {
		t.Run(caseName(tc.collection, tc.attrs), func(t *testing.T) {
			f.wantRefusedAndUnchanged(t, tc.collection, tc.attrs, http.StatusBadRequest, tc.typ, tc.msg)
		})
	}
	// Admin-only attributes (binding:profile) and create-only ones
	// (subnets' subnetpool_id, prefixlen, ipv6 modes): no update to try.
	for _, tc := range []struct {
		who        *haAPI
		collection string
		attrs      haObj
		typ, msg   string
	}{
		{f.admin, "ports", haObj{"binding:profile": haObj{"pci_slot": "0000:03:00.1"}}, "HTTPBadRequest",
			"Invalid input for binding:profile. Reason: l3ha reads no binding profile; it must be empty."},
		{f.admin, "ports", haObj{"binding:profile": "x"}, "HTTPBadRequest", "Invalid input for binding:profile. Reason: 'x' is not a dictionary."},
		{f.demo, "subnets", haObj{"subnetpool_id": "2c8a1e1f-4e3b-4c0e-9d3a-0b8e5e2f6a71"}, "HTTPBadRequest",
			"Invalid input for subnetpool_id. Reason: subnet pools are not implemented by l3ha; subnetpool_id must be null."},
		{f.demo, "subnets", haObj{"prefixlen": 26}, "BadRequest", "Bad subnets request: cidr and prefixlen must not be supplied together."},
		{f.demo, "subnets", haObj{"ipv6_ra_mode": "slaac"}, "InvalidInput",
			"Invalid input for operation: ipv6_ra_mode applies to IPv6 subnets, which l3ha does not support."},
		{f.demo, "subnets", haObj{"ipv6_address_mode": "dhcpv6-stateful"}, "InvalidInput",
			"Invalid input for operation: ipv6_address_mode applies to IPv6 subnets, which l3ha does not support."},
	} {
		t.Run("create "+caseName(tc.collection, tc.attrs), func(t *testing.T) {
			before := len(f.admin.on(t).list("/v2.0/" + tc.collection))
			tc.who.on(t).do("POST", "/v2.0/"+tc.collection, f.createBody(tc.collection, tc.attrs)).wantError(t, http.StatusBadRequest, tc.typ, tc.msg)
			if after := len(f.admin.on(t).list("/v2.0/" + tc.collection)); after != before {
				t.Errorf("refused create left %s behind: %d, had %d", tc.collection, after, before)
			}
		})
	}
	f.admin.do("PUT", "/v2.0/ports/"+f.port, haBody("port", haObj{"binding:profile": haObj{"migrating_to": "x"}})).wantError(t,
		http.StatusBadRequest, "HTTPBadRequest", "Invalid input for binding:profile. Reason: l3ha reads no binding profile; it must be empty.")
	f.demo.do("POST", "/v2.0/subnets", haBody("subnet", haObj{"network_id": f.net, "prefixlen": 26, "ip_version": 4})).wantError(t,
		http.StatusBadRequest, "BadRequest", "Bad subnets request: prefixlen allocates from a subnet pool, and l3ha has none: give a cidr.")

	// The values that ask for nothing are accepted.
	p := f.admin.mustDo("POST", "/v2.0/ports", f.createBody("ports", haObj{"binding:vnic_type": "normal", "binding:profile": haObj{}}), http.StatusCreated).obj("port")
	if p.str("binding:vnic_type") != "normal" {
		t.Errorf("port %v", p)
	}
	f.admin.mustDo("PUT", "/v2.0/ports/"+p.str("id"), haBody("port", haObj{"binding:vnic_type": "normal", "binding:profile": nil}), http.StatusOK)
	f.demo.mustDo("POST", "/v2.0/subnets", f.createBody("subnets", haObj{"subnetpool_id": nil, "prefixlen": nil, "ipv6_ra_mode": nil, "ipv6_address_mode": nil}), http.StatusCreated)
	// IPv6 is refused first, whatever else the body asks.
	f.demo.do("POST", "/v2.0/subnets", haBody("subnet", haObj{"network_id": f.net, "cidr": "2001:db8::/64", "ip_version": 6, "ipv6_ra_mode": "slaac"})).wantError(t,
		http.StatusBadRequest, "InvalidInput", "Invalid input for operation: IPv6 subnets are not supported by l3ha yet.")
}

// TestViewsShowNoUnimplementedExtensionAttribute: neither an admin nor a
// tenant sees attributes of extensions l3ha does not list
// (security_groups: [] on a port read as "no security group" rather than
// "none enforced").
func TestViewsShowNoUnimplementedExtensionAttribute(t *testing.T) {
	f := newUnsupportedFixture(t)
	hidden := map[string][]string{
		"networks":    {"port_security_enabled", "availability_zone_hints", "availability_zones", "ipv4_address_scope", "ipv6_address_scope", "is_default", "tags"},
		"subnets":     {"service_types", "segment_id", "tags"},
		"ports":       {"security_groups", "port_security_enabled", "allowed_address_pairs", "extra_dhcp_opts", "tags"},
		"routers":     {"availability_zone_hints", "availability_zones", "flavor_id", "tags"},
		"floatingips": {"dns_name", "dns_domain", "qos_policy_id", "tags"},
	}
	check := func(t *testing.T, what string, o haObj, keys []string) {
		t.Helper()
		for _, k := range keys {
			if o.has(k) {
				t.Errorf("%s shows %s: %v", what, k, o[k])
			}
		}
	}
	for collection, keys := range hidden {
		t.Run(collection, func(t *testing.T) {
			singular := strings.TrimSuffix(collection, "s")
			for who, api := range map[string]*haAPI{"admin": f.admin.on(t), "tenant": f.demo.on(t)} {
				path := "/v2.0/" + collection + "/" + f.member(collection)
				check(t, who+" GET "+path, api.mustDo("GET", path, nil, http.StatusOK).obj(singular), keys)
				for _, o := range api.list("/v2.0/" + collection) {
					check(t, who+" list of "+collection, o, keys)
				}
			}
			// Nor does the answer to a create (ports/networks were
			// created by the fixture; a fresh one of each kind here).
			created := f.demo.on(t).mustDo("POST", "/v2.0/"+collection, f.createBody(collection, nil), http.StatusCreated).obj(singular)
			check(t, "POST "+collection, created, keys)
		})
	}
	// The external network (is_default was shown on those).
	check(t, "external network", f.admin.mustDo("GET", "/v2.0/networks/"+f.public, nil, http.StatusOK).obj("network"), hidden["networks"])
}

// TestFiltersOnUnimplementedAttributesAreRefused: with filter-validation, a
// filter on an attribute of an extension l3ha does not implement is a 400
// like any unknown filter, not an empty (or full) list.
func TestFiltersOnUnimplementedAttributesAreRefused(t *testing.T) {
	f := newUnsupportedFixture(t)
	for _, tc := range []struct{ collection, filter string }{
		{"ports", "security_groups"}, {"ports", "port_security_enabled"}, {"ports", "allowed_address_pairs"},
		{"ports", "extra_dhcp_opts"}, {"ports", "tags"}, {"networks", "port_security_enabled"},
		{"networks", "availability_zone_hints"}, {"networks", "is_default"}, {"networks", "tags"},
		{"subnets", "service_types"}, {"subnets", "segment_id"}, {"routers", "availability_zones"},
		{"routers", "flavor_id"}, {"floatingips", "dns_name"}, {"agents", "changed_since"},
	} {
		t.Run(tc.collection+"?"+tc.filter, func(t *testing.T) {
			for _, api := range []*haAPI{f.admin.on(t), f.demo.on(t)} {
				api.do("GET", "/v2.0/"+tc.collection+"?"+tc.filter+"=true", nil).wantError(t, http.StatusBadRequest, "HTTPBadRequest",
					fmt.Sprintf("['%s'] is invalid attribute for filtering", tc.filter))
			}
		})
	}
}

// TestSecurityGroupResourcesDoNotExist: l3ha enforces no security group,
// so /v2.0/security-groups and security-group-rules are unknown resources,
// a 404 as in a Neutron without the extension, whatever the method.
func TestSecurityGroupResourcesDoNotExist(t *testing.T) {
	f := newUnsupportedFixture(t)
	for _, path := range []string{"/v2.0/security-groups", "/v2.0/security-group-rules", "/v2.0/security-groups/2c8a1e1f-4e3b-4c0e-9d3a-0b8e5e2f6a71"} {
		for _, method := range []string{"GET", "POST", "PUT", "DELETE"} {
			var body any
			if method == "POST" || method == "PUT" {
				body = haObj{"security_group": haObj{"name": "sg"}}
			}
			f.demo.do(method, path, body).wantError(t, http.StatusNotFound, "HTTPNotFound", "The resource could not be found.")
		}
	}
	for _, r := range f.demo.mustDo("GET", "/v2.0/", nil, http.StatusOK).objs("resources") {
		if strings.HasPrefix(r.str("collection"), "security") {
			t.Errorf("/v2.0/ lists %v", r)
		}
	}
}

// TestExtensionsListOnlyWhatL3haDoes: /v2.0/extensions, which tempest and
// clients read as promises, names none of the extensions l3ha does not
// implement, and each of those is a 404 by alias; it does name what the
// API above implements.
func TestExtensionsListOnlyWhatL3haDoes(t *testing.T) {
	f := newUnsupportedFixture(t)
	var aliases []string
	for _, e := range f.demo.mustDo("GET", "/v2.0/extensions", nil, http.StatusOK).objs("extensions") {
		aliases = append(aliases, e.str("alias"))
	}
	for _, gone := range []string{
		"security-group", "port-security", "allowed-address-pairs", "extra_dhcp_opt", "dvr", "qos", "qos-gateway-ip",
		"dns-integration", "availability_zone", "network_availability_zone", "router_availability_zone", "address-scope",
		"subnet_allocation", "segment", "subnet-service-types", "auto-allocated-topology", "l3-flavors", "standard-attr-tag",
		"sorting", "quotas", "dhcp_agent_scheduler",
	} {
		if slices.Contains(aliases, gone) {
			t.Errorf("/v2.0/extensions lists %s", gone)
		}
		f.demo.do("GET", "/v2.0/extensions/"+gone, nil).wantError(t, http.StatusNotFound, "HTTPNotFound", "Extension with alias "+gone+" does not exist")
	}
	for _, kept := range []string{"router", "l3-ha", "binding", "net-mtu", "net-mtu-writable", "filter-validation", "pagination", "standard-attr-timestamp"} {
		if !slices.Contains(aliases, kept) {
			t.Errorf("/v2.0/extensions does not list %s: %v", kept, aliases)
		}
	}
}

// TestNetworkMTUIsWritableWithinBounds: net-mtu-writable, listed because
// the agents apply a network's MTU to its bridge and ports: an update
// changes it, one outside 68..9000 is refused and changes nothing.
func TestNetworkMTUIsWritableWithinBounds(t *testing.T) {
	f := newUnsupportedFixture(t)
	path := "/v2.0/networks/" + f.net
	if got := f.demo.mustDo("PUT", path, haBody("network", haObj{"mtu": 1400}), http.StatusOK).obj("network"); got["mtu"] != float64(1400) {
		t.Fatalf("network after mtu 1400: %v", got)
	}
	old := f.demo.mustDo("GET", path, nil, http.StatusOK)
	for _, mtu := range []int{0, 67, 9001, -1} {
		f.demo.do("PUT", path, haBody("network", haObj{"mtu": mtu})).wantError(t, http.StatusBadRequest, "InvalidInput",
			fmt.Sprintf("Invalid input for operation: MTU %d is not between 68 and 9000.", mtu))
	}
	if got := f.demo.mustDo("GET", path, nil, http.StatusOK); !reflect.DeepEqual(got, old) {
		t.Errorf("refused mtu updates changed the network:\n got %v\nwant %v", got, old)
	}
	if got := f.demo.mustDo("POST", "/v2.0/networks", haBody("network", haObj{"name": "m", "mtu": 1300}), http.StatusCreated).obj("network"); got["mtu"] != float64(1300) {
		t.Errorf("network created with mtu 1300: %v", got)
	}
}

// TestListQueryParametersDoWhatTheySay: page_reverse (pagination) pages
// backwards from the marker, and changed_since (standard-attr-timestamp)
// keeps the objects updated since then; a malformed value is a 400.
func TestListQueryParametersDoWhatTheySay(t *testing.T) {
	f := newUnsupportedFixture(t)
	ids := func(objs []haObj) []string {
		var out []string
		for _, o := range objs {
			out = append(out, o.str("id"))
		}
		return out
	}
	all := ids(f.demo.list("/v2.0/ports"))
	for i := 0; len(all) < 4; i++ {
		f.demo.mustDo("POST", "/v2.0/ports", f.createBody("ports", haObj{"name": fmt.Sprint("pg", i)}), http.StatusCreated)
		all = ids(f.demo.list("/v2.0/ports"))
	}
	if got := ids(f.demo.list("/v2.0/ports?limit=2&page_reverse=true&marker=" + all[3])); !slices.Equal(got, all[1:3]) {
		t.Errorf("page before %s: %v, want %v (of %v)", all[3], got, all[1:3], all)
	}
	if got := ids(f.demo.list("/v2.0/ports?limit=2&page_reverse=false&marker=" + all[0])); !slices.Equal(got, all[1:3]) {
		t.Errorf("page after %s: %v, want %v", all[0], got, all[1:3])
	}
	page := f.demo.mustDo("GET", "/v2.0/ports?limit=1&page_reverse=True&marker="+all[2], nil, http.StatusOK)
	if got := ids(page.objs("ports")); !slices.Equal(got, all[1:2]) {
		t.Errorf("page before %s: %v, want %v", all[2], got, all[1:2])
	}
	if links := page.objs("ports_links"); len(links) != 1 || links[0].str("rel") != "previous" || !strings.Contains(links[0].str("href"), "marker="+all[1]) {
		t.Errorf("links of a reversed page: %v", links)
	}
	f.demo.do("GET", "/v2.0/ports?page_reverse=maybe", nil).wantError(t, http.StatusBadRequest, "HTTPBadRequest", "")

	if got := ids(f.demo.list("/v2.0/ports?changed_since=2000-01-01T00:00:00Z")); !slices.Equal(got, all) {
		t.Errorf("ports changed since 2000: %v, want %v", got, all)
	}
	future := url.QueryEscape(time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	if got := f.demo.list("/v2.0/ports?changed_since=" + future); len(got) != 0 {
		t.Errorf("ports changed in an hour: %v", ids(got))
	}
	// A port updated now is changed since a moment ago; the others are not.
	time.Sleep(1100 * time.Millisecond)
	since := url.QueryEscape(time.Now().UTC().Format("2006-01-02T15:04:05"))
	f.demo.mustDo("PUT", "/v2.0/ports/"+all[2], haBody("port", haObj{"name": "changed"}), http.StatusOK)
	if got := ids(f.demo.list("/v2.0/ports?changed_since=" + since)); !slices.Equal(got, all[2:3]) {
		t.Errorf("ports changed since %s: %v, want %v", since, got, all[2:3])
	}
	f.demo.do("GET", "/v2.0/networks?changed_since=yesterday", nil).wantError(t, http.StatusBadRequest, "InvalidInput",
		"Invalid input for operation: The input changed_since must be in the following format: YYYY-MM-DDTHH:MM:SSZ")
}
