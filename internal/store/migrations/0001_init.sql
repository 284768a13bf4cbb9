-- l3ha schema v1. Portable between SQLite and PostgreSQL: TEXT ids, BIGINT
-- times in unix microseconds, JSON lists in TEXT columns.
CREATE TABLE meta (
    id INTEGER PRIMARY KEY,
    revision BIGINT NOT NULL
);
INSERT INTO meta (id, revision) VALUES (1, 0);

CREATE TABLE networks (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    admin_state_up BOOLEAN NOT NULL,
    status TEXT NOT NULL,
    shared BOOLEAN NOT NULL,
    external BOOLEAN NOT NULL,
    network_type TEXT NOT NULL,
    physical_network TEXT,
    segmentation_id INTEGER,
    mtu INTEGER NOT NULL,
    revision_number INTEGER NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX networks_segment ON networks (network_type, segmentation_id) WHERE segmentation_id IS NOT NULL;
CREATE UNIQUE INDEX networks_flat_physnet ON networks (physical_network) WHERE network_type = 'flat';

-- An HA network belongs to a project (the network row itself has project '').
-- seq numbers a project's HA networks: 254 VRIDs each, more made on demand.
CREATE TABLE ha_networks (
    network_id TEXT PRIMARY KEY REFERENCES networks (id) ON DELETE CASCADE,
    project_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    UNIQUE (project_id, seq)
);

CREATE TABLE subnets (
    id TEXT PRIMARY KEY,
    network_id TEXT NOT NULL REFERENCES networks (id),
    project_id TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    cidr TEXT NOT NULL,
    gateway_ip TEXT,
    enable_dhcp BOOLEAN NOT NULL,
    ip_version INTEGER NOT NULL,
    allocation_pools TEXT NOT NULL,
    dns_nameservers TEXT NOT NULL,
    host_routes TEXT NOT NULL,
    revision_number INTEGER NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX subnets_network ON subnets (network_id);

CREATE TABLE ports (
    id TEXT PRIMARY KEY,
    network_id TEXT NOT NULL REFERENCES networks (id),
    project_id TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    admin_state_up BOOLEAN NOT NULL,
    mac_address TEXT NOT NULL,
    device_id TEXT NOT NULL,
    device_owner TEXT NOT NULL,
    status TEXT NOT NULL,
    host_id TEXT NOT NULL,
    revision_number INTEGER NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (network_id, mac_address)
);
CREATE INDEX ports_device ON ports (device_id);
CREATE INDEX ports_network ON ports (network_id);

CREATE TABLE ip_allocations (
    subnet_id TEXT NOT NULL REFERENCES subnets (id),
    ip_address TEXT NOT NULL,
    port_id TEXT NOT NULL REFERENCES ports (id) ON DELETE CASCADE,
    network_id TEXT NOT NULL,
    PRIMARY KEY (subnet_id, ip_address)
);
CREATE INDEX ip_allocations_port ON ip_allocations (port_id);

CREATE TABLE routers (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    admin_state_up BOOLEAN NOT NULL,
    status TEXT NOT NULL,
    ha BOOLEAN NOT NULL,
    distributed BOOLEAN NOT NULL,
    gw_port_id TEXT REFERENCES ports (id),
    enable_snat BOOLEAN NOT NULL,
    routes TEXT NOT NULL,
    revision_number INTEGER NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX routers_project ON routers (project_id);

-- One VRID per HA router, unique per HA network (RFC 5798: 1..255, Neutron 1..254).
CREATE TABLE ha_vrids (
    network_id TEXT NOT NULL REFERENCES networks (id),
    vrid INTEGER NOT NULL CHECK (vrid BETWEEN 1 AND 254),
    router_id TEXT NOT NULL UNIQUE REFERENCES routers (id) ON DELETE CASCADE,
    PRIMARY KEY (network_id, vrid)
);

CREATE TABLE agents (
    id TEXT PRIMARY KEY,
    agent_type TEXT NOT NULL,
    binary_name TEXT NOT NULL,
    topic TEXT NOT NULL,
    host TEXT NOT NULL,
    availability_zone TEXT NOT NULL,
    admin_state_up BOOLEAN NOT NULL,
    configurations TEXT NOT NULL,
    description TEXT,
    heartbeat_at BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (agent_type, host)
);

-- A router hosted by an agent. binding_index 1..N is unique per router so that
-- two schedulers racing cannot both add the Nth binding.
CREATE TABLE router_bindings (
    router_id TEXT NOT NULL REFERENCES routers (id) ON DELETE CASCADE,
    agent_id TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    binding_index INTEGER NOT NULL,
    ha_state TEXT NOT NULL,
    PRIMARY KEY (router_id, agent_id),
    UNIQUE (router_id, binding_index)
);
CREATE INDEX router_bindings_agent ON router_bindings (agent_id);

CREATE TABLE floatingips (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    description TEXT NOT NULL,
    floating_network_id TEXT NOT NULL REFERENCES networks (id),
    floating_ip_address TEXT NOT NULL,
    floating_port_id TEXT NOT NULL REFERENCES ports (id),
    fixed_port_id TEXT REFERENCES ports (id),
    fixed_ip_address TEXT,
    router_id TEXT REFERENCES routers (id),
    status TEXT NOT NULL,
    revision_number INTEGER NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX floatingips_fixed ON floatingips (fixed_port_id, fixed_ip_address) WHERE fixed_port_id IS NOT NULL;
CREATE INDEX floatingips_router ON floatingips (router_id);
