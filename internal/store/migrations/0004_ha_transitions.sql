-- Every HA transition of a router's bindings, with its reason (GET
-- /v2.0/routers/{id}/ha_transitions): written when an agent's report or the
-- server itself changes a binding's ha_state, never for a report that
-- changes nothing. agent_id and host are copied, not referenced, so that the
-- history outlives an agent; the rows go with their router. at is unix
-- microseconds; seq orders the rows one transaction writes at the same at.
-- The server prunes old rows in small batches (ha_transitions_max_age,
-- ha_transitions_per_router): ha_transitions_at serves the age bound,
-- ha_transitions_router the per-router bound and the API.
CREATE TABLE ha_transitions (
    router_id TEXT NOT NULL REFERENCES routers (id) ON DELETE CASCADE,
    agent_id TEXT NOT NULL,
    host TEXT NOT NULL,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    at BIGINT NOT NULL,
    seq INTEGER NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX ha_transitions_router ON ha_transitions (router_id, at, seq);
CREATE INDEX ha_transitions_at ON ha_transitions (at, seq);
