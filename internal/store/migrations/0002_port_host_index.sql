-- Desired-state rebuilds look up the ports bound to a host (compute nodes'
-- instance ports) and MACs per network.
CREATE INDEX ports_host ON ports (host_id);
