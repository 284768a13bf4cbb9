package cli

// Canned Neutron answers, shaped after the neutron-server 21.0.0 transcripts
// in /work/shared/neutron-transcripts.

const (
	netID       = "feeaf6fb-9615-4593-ac4d-a5efb9caed14" // demo-net
	extNetID    = "8132a5e5-801e-4bcb-9c5a-3fd4d1038bd0" // public
	subnetID    = "30dea653-5c70-4f6b-b1c4-981b8f4c6760" // demo-subnet
	routerID    = "d50b7147-0cd9-43e7-b91f-a5235c2b0a11" // ha-router
	router2ID   = "bed08d79-c44d-445b-85a8-6fd0dfef3a06" // legacy-router
	portID      = "3ab8d23f-1d6c-4667-9214-4e254abf83f5" // vm-port
	ifacePortID = "8d0fb0fa-04b1-4b15-8112-1e37b0d2e498"
	fipID       = "5eb06b18-da4f-4379-81e2-69adf95cfe6c" // 172.24.4.143
	fip2ID      = "67d553c0-b6f1-4cdc-83f8-cb45fffb94a0" // 172.24.4.112
	agentAID    = "9e241002-f133-47a4-9834-3649062535d8"
	agentBID    = "e9cf7231-7cee-4ba0-8f76-0f823ec36cd6"
	lbAgentID   = "074ae044-edf6-4252-bb05-fd9eb4276f29"
)

const demoNetwork = `{
  "admin_state_up": true,
  "availability_zone_hints": [],
  "availability_zones": [],
  "created_at": "2026-11-21T15:58:16Z",
  "description": "",
  "id": "feeaf6fb-9615-4593-ac4d-a5efb9caed14",
  "ipv4_address_scope": null,
  "ipv6_address_scope": null,
  "is_default": false,
  "mtu": 1450,
  "name": "demo-net",
  "port_security_enabled": true,
  "project_id": "demo-project",
  "provider:network_type": "vxlan",
  "provider:physical_network": null,
  "provider:segmentation_id": 981,
  "revision_number": 2,
  "router:external": false,
  "shared": false,
  "status": "ACTIVE",
  "subnets": ["30dea653-5c70-4f6b-b1c4-981b8f4c6760"],
  "tags": [],
  "tenant_id": "demo-project",
  "updated_at": "2026-11-21T15:58:16Z"
}`

const publicNetwork = `{
  "admin_state_up": true,
  "id": "8132a5e5-801e-4bcb-9c5a-3fd4d1038bd0",
  "mtu": 1500,
  "name": "public",
  "project_id": "admin-project",
  "provider:network_type": "flat",
  "provider:physical_network": "public",
  "provider:segmentation_id": null,
  "router:external": true,
  "shared": false,
  "status": "ACTIVE",
  "subnets": [],
  "tenant_id": "admin-project"
}`

const demoSubnet = `{
  "allocation_pools": [{"end": "10.0.0.254", "start": "10.0.0.2"}],
  "cidr": "10.0.0.0/24",
  "description": "",
  "dns_nameservers": [],
  "enable_dhcp": true,
  "gateway_ip": "10.0.0.1",
  "host_routes": [],
  "id": "30dea653-5c70-4f6b-b1c4-981b8f4c6760",
  "ip_version": 4,
  "name": "demo-subnet",
  "network_id": "feeaf6fb-9615-4593-ac4d-a5efb9caed14",
  "project_id": "demo-project",
  "tenant_id": "demo-project"
}`

// haRouterAdmin is the admin view of the HA router (ha/distributed shown).
const haRouterAdmin = `{
  "admin_state_up": true,
  "availability_zone_hints": [],
  "availability_zones": ["nova"],
  "created_at": "2026-11-21T15:58:14Z",
  "description": "",
  "distributed": false,
  "external_gateway_info": null,
  "flavor_id": null,
  "ha": true,
  "id": "d50b7147-0cd9-43e7-b91f-a5235c2b0a11",
  "name": "ha-router",
  "project_id": "demo-project",
  "revision_number": 4,
  "routes": [],
  "status": "ACTIVE",
  "tags": [],
  "tenant_id": "demo-project",
  "updated_at": "2026-11-21T15:58:15Z"
}`

// haRouterTenant is the tenant view of the same router (no ha/distributed).
const haRouterTenant = `{
  "admin_state_up": true,
  "availability_zone_hints": [],
  "availability_zones": ["nova"],
  "created_at": "2026-11-21T15:58:14Z",
  "description": "",
  "external_gateway_info": {
    "enable_snat": true,
    "external_fixed_ips": [{"ip_address": "172.24.4.194", "subnet_id": "a40cfe1b-ef2e-43b3-8880-30ef1c2ccc8b"}],
    "network_id": "8132a5e5-801e-4bcb-9c5a-3fd4d1038bd0"
  },
  "flavor_id": null,
  "id": "d50b7147-0cd9-43e7-b91f-a5235c2b0a11",
  "name": "ha-router",
  "project_id": "demo-project",
  "revision_number": 6,
  "routes": [],
  "status": "ACTIVE",
  "tags": [],
  "tenant_id": "demo-project",
  "updated_at": "2026-11-21T15:58:18Z"
}`

const legacyRouterTenant = `{
  "admin_state_up": false,
  "external_gateway_info": null,
  "id": "bed08d79-c44d-445b-85a8-6fd0dfef3a06",
  "name": "legacy-router",
  "project_id": "demo-project",
  "routes": [],
  "status": "ACTIVE",
  "tenant_id": "demo-project"
}`

const addInterfaceAnswer = `{
  "id": "d50b7147-0cd9-43e7-b91f-a5235c2b0a11",
  "network_id": "feeaf6fb-9615-4593-ac4d-a5efb9caed14",
  "port_id": "8d0fb0fa-04b1-4b15-8112-1e37b0d2e498",
  "subnet_id": "30dea653-5c70-4f6b-b1c4-981b8f4c6760",
  "subnet_ids": ["30dea653-5c70-4f6b-b1c4-981b8f4c6760"],
  "tenant_id": "demo-project"
}`

const vmPort = `{
  "admin_state_up": true,
  "device_id": "",
  "device_owner": "",
  "fixed_ips": [{"ip_address": "10.0.0.242", "subnet_id": "30dea653-5c70-4f6b-b1c4-981b8f4c6760"}],
  "id": "3ab8d23f-1d6c-4667-9214-4e254abf83f5",
  "mac_address": "fa:16:3e:ac:93:2f",
  "name": "vm-port",
  "network_id": "feeaf6fb-9615-4593-ac4d-a5efb9caed14",
  "status": "DOWN"
}`

const fipUnassociated = `{
  "created_at": "2026-11-21T15:58:19Z",
  "description": "",
  "fixed_ip_address": null,
  "floating_ip_address": "172.24.4.143",
  "floating_network_id": "8132a5e5-801e-4bcb-9c5a-3fd4d1038bd0",
  "id": "5eb06b18-da4f-4379-81e2-69adf95cfe6c",
  "port_details": null,
  "port_id": null,
  "project_id": "demo-project",
  "revision_number": 0,
  "router_id": null,
  "status": "DOWN",
  "tags": [],
  "tenant_id": "demo-project",
  "updated_at": "2026-11-21T15:58:19Z"
}`

const fipAssociated = `{
  "fixed_ip_address": "10.0.0.242",
  "floating_ip_address": "172.24.4.112",
  "floating_network_id": "8132a5e5-801e-4bcb-9c5a-3fd4d1038bd0",
  "id": "67d553c0-b6f1-4cdc-83f8-cb45fffb94a0",
  "port_id": "3ab8d23f-1d6c-4667-9214-4e254abf83f5",
  "project_id": "demo-project",
  "router_id": "d50b7147-0cd9-43e7-b91f-a5235c2b0a11",
  "status": "ACTIVE"
}`

const l3AgentA = `{
  "admin_state_up": true,
  "agent_type": "L3 agent",
  "alive": true,
  "availability_zone": "nova",
  "binary": "neutron-l3-agent",
  "configurations": {"agent_mode": "legacy", "routers": 1},
  "ha_state": "active",
  "host": "l3-a",
  "id": "9e241002-f133-47a4-9834-3649062535d8",
  "topic": "l3_agent"
}`

const l3AgentB = `{
  "admin_state_up": true,
  "agent_type": "L3 agent",
  "alive": false,
  "availability_zone": "nova",
  "binary": "neutron-l3-agent",
  "configurations": {"agent_mode": "legacy", "routers": 1},
  "ha_state": "standby",
  "host": "l3-b",
  "id": "e9cf7231-7cee-4ba0-8f76-0f823ec36cd6",
  "topic": "l3_agent"
}`

const lbAgent = `{
  "admin_state_up": false,
  "agent_type": "Linux bridge agent",
  "alive": true,
  "binary": "neutron-linuxbridge-agent",
  "host": "l3-a",
  "id": "074ae044-edf6-4252-bb05-fd9eb4276f29",
  "topic": "N/A"
}`

// one wraps a resource as {"key": resource}; many as {"key": [resources]}.
// haTransitionsAnswer is a router's history as l3ha's server answers
// GET /v2.0/routers/{id}/ha_transitions (oldest first).
const haTransitionsAnswer = `{"ha_transitions": [
  {"agent_id": "` + agentAID + `", "host": "l3-a", "from": "standby", "to": "active", "at": "2026-11-21T16:02:10Z", "reason": "startup"},
  {"agent_id": "` + agentBID + `", "host": "l3-b", "from": "standby", "to": "active", "at": "2026-11-21T16:09:41Z", "reason": "peer_lost"},
  {"agent_id": "` + agentAID + `", "host": "l3-a", "from": "active", "to": "standby", "at": "2026-11-21T16:09:41Z", "reason": "peer_lost"},
  {"agent_id": "` + agentAID + `", "host": "l3-a", "from": "standby", "to": "active", "at": "2026-11-21T16:12:00Z", "reason": ""}
]}`

func one(key, res string) string { return `{"` + key + `": ` + res + `}` }

func many(key string, res ...string) string {
	s := `{"` + key + `": [`
	for i, r := range res {
		if i > 0 {
			s += ", "
		}
		s += r
	}
	return s + `]}`
}
