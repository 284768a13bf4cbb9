-- When each binding's ha_state was last reported by its agent (transition or
-- periodic re-assertion), and until when that report counts as fresh: the
-- agent re-asserts every few seconds, and an active binding whose report is
-- no longer fresh gives way to another agent's active report, while two
-- fresh actives are shown as the split brain they are. Unix microseconds;
-- 0 = never reported.
ALTER TABLE router_bindings ADD COLUMN ha_state_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE router_bindings ADD COLUMN ha_state_fresh_until BIGINT NOT NULL DEFAULT 0;
