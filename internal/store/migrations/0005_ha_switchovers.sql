-- Operator switchovers in progress (POST /v2.0/routers/{id}/switchover): the
-- agent that must become the router's master, and when it was asked. The
-- router's agents see the request in their desired state until the target
-- reports active or the request expires (the server's switchover_timeout),
-- so that an agent that restarts later never acts on an old one. At most
-- one per router: a new request replaces the previous. requested_at is unix
-- microseconds and doubles as the request's id.
CREATE TABLE ha_switchovers (
    router_id TEXT PRIMARY KEY REFERENCES routers (id) ON DELETE CASCADE,
    agent_id TEXT NOT NULL,
    requested_at BIGINT NOT NULL
);
