package api

import (
	"net/http"
)

// extension is an entry of /v2.0/extensions: what clients probe before
// using an attribute (openstackclient checks "l3-ha", "router", …).
type extension struct{ alias, name, description, updated string }

// extensionList is what l3ha implements, and only that: tempest and
// clients take an extension listed as a promise. Not listed, and their
// attributes refused as unrecognized (400) and not shown: security-group
// (no /v2.0/security-groups either), port-security,
// allowed-address-pairs, extra_dhcp_opt — nothing filters a port's traffic
// and there is no DHCP service —, dvr (errNoDVR), qos, dns-integration,
// the availability-zone, address-scope, subnet-allocation, segment,
// subnet-service-types, auto-allocated-topology, l3-flavors and
// standard-attr-tag extensions. binding is listed because
// binding:host_id places a port (the agents wire a compute node's networks
// from it and router ports follow their active agent); only vnic_type
// normal and an empty profile are accepted.
var extensionList = []extension{
	{"agent", "agent", "The agent management extension.", "2013-02-03T10:00:00-00:00"},
	{"binding", "Port Binding", "Expose port bindings of a virtual port to external application", "2014-02-03T10:00:00-00:00"},
	{"external-net", "Neutron external network", "Adds external network attribute to network resource.", "2013-01-14T10:00:00-00:00"},
	{"ext-gw-mode", "Neutron L3 Configurable external gateway mode", "Extension of the router abstraction for specifying whether SNAT should occur on the external gateway", "2013-03-28T10:00:00-00:00"},
	{"extraroute", "Neutron Extra Route", "Extra routes configuration for L3 router", "2013-02-01T10:00:00-00:00"},
	{"filter-validation", "Filter parameters validation", "Provides validation on filter parameters.", "2018-07-04T10:00:00-00:00"},
	{"fip-port-details", "Floating IP Port Details Extension", "Add port_details attribute to Floating IP resource", "2018-04-09T10:00:00-00:00"},
	{"ip-substring-filtering", "IP address substring filtering", "Provides IP address substring filtering when listing ports", "2017-11-28T09:00:00-00:00"},
	{"l3-ha", "HA Router extension", "Adds HA capability to routers.", "2014-04-26T00:00:00-00:00"},
	{"l3-port-ip-change-not-allowed", "Prevent L3 router ports IP address change extension", "Prevent change of IP address for some L3 router ports", "2018-10-09T10:00:00-00:00"},
	{"l3_agent_scheduler", "L3 Agent Scheduler", "Schedule routers among l3 agents", "2013-02-07T10:00:00-00:00"},
	{"net-mtu", "Network MTU", "Provides MTU attribute for a network resource.", "2015-03-25T10:00:00-00:00"},
	{"net-mtu-writable", "Network MTU (writable)", "Provides a writable MTU attribute for a network resource.", "2017-07-12T00:00:00-00:00"},
	{"pagination", "Pagination support", "Extension that indicates that pagination is enabled.", "2016-06-12T00:00:00-00:00"},
	{"project-id", "project_id field enabled", "Extension that indicates that project_id field is enabled.", "2016-09-09T09:09:09-09:09"},
	{"provider", "Provider Network", "Expose mapping of virtual networks to physical networks", "2012-09-07T10:00:00-00:00"},
	{"router", "Neutron L3 Router", "Router abstraction for basic L3 forwarding between L2 Neutron networks and access to external networks via a NAT gateway.", "2012-07-20T10:00:00-00:00"},
	{"standard-attr-description", "standard-attr-description", "Extension to add descriptions to standard attributes", "2016-02-10T10:00:00-00:00"},
	{"standard-attr-revisions", "Resource revision numbers", "This extension will display the revision number of neutron resources.", "2016-04-11T10:00:00-00:00"},
	{"standard-attr-timestamp", "Resource timestamps", "Adds created_at and updated_at fields to all Neutron resources that have Neutron standard attributes.", "2016-09-12T10:00:00-00:00"},
}

func (e extension) view() map[string]any {
	return map[string]any{"alias": e.alias, "name": e.name, "description": e.description, "links": []any{}, "updated": e.updated}
}

func (a *API) extensions(w http.ResponseWriter, r *http.Request, rest []string) {
	if r.Method != http.MethodGet {
		a.writeError(w, r, errMethod)
		return
	}
	switch len(rest) {
	case 0:
		out := make([]any, 0, len(extensionList))
		for _, e := range extensionList {
			out = append(out, e.view())
		}
		writeJSON(w, http.StatusOK, map[string]any{"extensions": out})
	case 1:
		for _, e := range extensionList {
			if e.alias == rest[0] {
				writeJSON(w, http.StatusOK, map[string]any{"extension": e.view()})
				return
			}
		}
		a.writeError(w, r, errf(http.StatusNotFound, "HTTPNotFound", "Extension with alias %s does not exist", rest[0]))
	default:
		a.writeError(w, r, errNotFoundResource)
	}
}
