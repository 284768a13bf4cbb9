package api

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"

	"github.com/l3ha/l3ha/internal/agentapi"
	"github.com/l3ha/l3ha/internal/store"
)

// routerSwitchover is POST /v2.0/routers/{id}/switchover {"agent_id": …}:
// an operator moves the router's master to one of its agents. Admin only;
// 202, because the move happens on the nodes afterwards (the target takes
// over before the old master lets go, see internal/vrrp Machine.TakeOver)
// and shows in ha_state and in the history (reason switchover). Refused,
// changing nothing: a router the caller cannot see (404) or may not move
// (403), a body that is not {"agent_id": "<uuid>"} (400), a legacy router
// (400), an unknown agent (404), an agent that does not host the router or
// is dead, or a router that is admin down (409). Asking for the agent that
// already is the only master succeeds and changes nothing; a new request
// replaces one still in progress.
func (a *API) routerSwitchover(ctx context.Context, id Identity, routerID string, body map[string]json.RawMessage) (any, error) {
	var out map[string]any
	_, err := a.db.Write(ctx, func(tx *store.Tx) error {
		r, err := ownedRouter(tx, id, routerID)
		if err != nil {
			return err
		}
		if err := requireAdmin(id, "switchover_router"); err != nil {
			return err
		}
		agentID, err := switchoverTarget(body)
		if err != nil {
			return err
		}
		if !r.HA {
			return badRequest("Router %s is not highly available (ha=False): it has no master to move.", r.ID)
		}
		ag, err := getAgentRow(tx, agentID)
		if err != nil {
			return err
		}
		bs, err := tx.ListBindings(store.Where{"router_id": r.ID})
		if err != nil {
			return err
		}
		i := slices.IndexFunc(bs, func(b store.Binding) bool { return b.AgentID == ag.ID })
		switch {
		case i < 0:
			return errf(http.StatusConflict, "RouterNotHostedByL3Agent", "The router %s is not hosted by L3 agent %s.", r.ID, ag.ID)
		case !a.ha.Alive(ag, tx.Now):
			return errf(http.StatusConflict, "L3AgentDead", "L3 agent %s (host %s) is dead: it cannot become the master of router %s.", ag.ID, ag.Host, r.ID)
		case !ag.AdminStateUp:
			return errf(http.StatusConflict, "L3AgentDisabled", "L3 agent %s (host %s) is administratively down: it cannot become the master of router %s.", ag.ID, ag.Host, r.ID)
		case !r.AdminStateUp:
			return errf(http.StatusConflict, "RouterAdminDown", "Router %s is administratively down: no agent runs it.", r.ID)
		}
		out = map[string]any{"router_id": r.ID, "agent_id": ag.ID, "host": ag.Host}
		onlyMaster := bs[i].HAState == agentapi.HAActive && !slices.ContainsFunc(bs, func(b store.Binding) bool {
			return b.AgentID != ag.ID && b.HAState == agentapi.HAActive
		})
		if onlyMaster {
			// Already there: nothing to do, and nothing left pending.
			out["requested_at"] = nil
			return tx.ClearSwitchover(r.ID)
		}
		out["requested_at"] = ts(tx.Now)
		return tx.SetSwitchover(store.Switchover{RouterID: r.ID, AgentID: ag.ID, RequestedAt: tx.Now})
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{"switchover": out}, nil
}

// switchoverTarget reads {"agent_id": "<uuid>"}, nothing else.
func switchoverTarget(body map[string]json.RawMessage) (string, error) {
	for k := range body {
		if k != "agent_id" {
			return "", badRequest("Unrecognized attribute(s) '%s'", k)
		}
	}
	in := input{m: body, singular: "switchover"}
	var agentID string
	if err := in.uuidAttr("agent_id", &agentID); err != nil {
		return "", err
	}
	if agentID == "" {
		return "", badRequest("Failed to parse request. Required attribute 'agent_id' not specified")
	}
	return agentID, nil
}
