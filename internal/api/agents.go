package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"time"

	"github.com/l3ha/l3ha/internal/agentapi"
	"github.com/l3ha/l3ha/internal/ha"
	"github.com/l3ha/l3ha/internal/store"
)

func init() {
	register(&resource{
		collection: "agents", singular: "agent",
		notFound: func(id string) *Error {
			return errf(http.StatusNotFound, "AgentNotFound", "Agent %s could not be found.", id)
		},
		load: (*API).loadAgents, get: (*API).getAgent,
		update: (*API).updateAgent, delete: (*API).deleteAgent,
		sample: func() map[string]any { return agentViewAt(&store.Agent{}, false) },
	})
}

func (a *API) agentView(ag *store.Agent, now time.Time) map[string]any {
	return agentViewAt(ag, a.ha.Alive(ag, now))
}

func agentViewAt(ag *store.Agent, alive bool) map[string]any {
	conf := ag.Configurations
	if conf == nil {
		conf = map[string]any{}
	}
	return map[string]any{
		"admin_state_up": ag.AdminStateUp, "agent_type": ag.AgentType, "alive": alive,
		"availability_zone": ag.AvailabilityZone, "binary": ag.Binary, "configurations": conf,
		"created_at": agentTS(ag.CreatedAt), "description": strOrNil(ag.Description),
		"heartbeat_timestamp": agentTS(ag.HeartbeatAt), "host": ag.Host, "id": ag.ID,
		"resource_versions": map[string]any{}, "resources_synced": nil,
		"started_at": agentTS(ag.StartedAt), "topic": ag.Topic,
	}
}

func requireAdmin(id Identity, rule string) error {
	if !id.Admin {
		return policyDenied("rule:" + rule)
	}
	return nil
}

func (a *API) loadAgents(tx *store.Tx, id Identity) ([]map[string]any, error) {
	if !id.Admin {
		// get_agent is admin-only: a list leaves out what policy forbids
		// showing, which for a tenant is every agent.
		return nil, nil
	}
	agents, err := tx.ListAgents(nil)
	if err != nil {
		return nil, err
	}
	out := make([]map[string]any, 0, len(agents))
	for _, ag := range agents {
		out = append(out, a.agentView(ag, tx.Now))
	}
	return out, nil
}

func getAgentRow(tx *store.Tx, agentID string) (*store.Agent, error) {
	ag, err := tx.GetAgent(agentID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, resources["agents"].notFound(agentID)
	}
	return ag, err
}

func (a *API) getAgent(tx *store.Tx, id Identity, agentID string) (map[string]any, error) {
	if !id.Admin {
		// What policy forbids showing does not exist, as in Neutron.
		return nil, errNotFoundResource
	}
	ag, err := getAgentRow(tx, agentID)
	if err != nil {
		return nil, err
	}
	return a.agentView(ag, tx.Now), nil
}

var agentAttrs = map[string]attr{"admin_state_up": {put: true, adminOnly: true}, "description": {put: true, adminOnly: true}}

func (a *API) updateAgent(ctx context.Context, id Identity, agentID string, body map[string]json.RawMessage) (any, error) {
	if err := requireAdmin(id, "update_agent"); err != nil {
		return nil, err
	}
	in := input{m: body, singular: "agent"}
	if err := checkAttrs(in, agentAttrs, false, id); err != nil {
		return nil, err
	}
	var view map[string]any
	_, err := a.db.Write(ctx, func(tx *store.Tx) error {
		ag, err := getAgentRow(tx, agentID)
		if err != nil {
			return err
		}
		wasUp := ag.AdminStateUp
		if err := in.boolean("admin_state_up", &ag.AdminStateUp); err != nil {
			return err
		}
		if _, err := in.nullableStr("description", &ag.Description); err != nil {
			return err
		}
		if err := tx.UpdateAgent(ag); err != nil {
			return err
		}
		if !wasUp && ag.AdminStateUp {
			if n, err := a.ha.AutoSchedule(tx, ag); err != nil {
				return err
			} else if n > 0 {
				a.log.Info("auto-scheduled routers to re-enabled agent", "host", ag.Host, "routers", n)
			}
		}
		view = a.agentView(ag, tx.Now)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{"agent": view}, nil
}

func (a *API) deleteAgent(ctx context.Context, id Identity, agentID string) error {
	if err := requireAdmin(id, "delete_agent"); err != nil {
		return err
	}
	_, err := a.db.Write(ctx, func(tx *store.Tx) error {
		ag, err := getAgentRow(tx, agentID)
		if err != nil {
			return err
		}
		bs, err := tx.ListBindings(store.Where{"agent_id": ag.ID})
		if err != nil {
			return err
		}
		for _, b := range bs {
			r, err := tx.GetRouter(b.RouterID)
			if err != nil {
				return err
			}
			if err := a.ha.Unbind(tx, r, ag); err != nil {
				return err
			}
		}
		a.log.Info("agent deleted", "host", ag.Host, "agent_id", ag.ID)
		return tx.DeleteAgent(ag.ID)
	})
	return err
}

// routerL3Agents is GET /v2.0/routers/{id}/l3-agents with ha_state.
func (a *API) routerL3Agents(ctx context.Context, id Identity, routerID string) (any, error) {
	if err := requireAdmin(id, "get_l3-agents"); err != nil {
		return nil, err
	}
	var out []any
	err := a.db.Read(ctx, func(tx *store.Tx) error {
		r, err := ownedRouter(tx, id, routerID)
		if err != nil {
			return err
		}
		bs, err := tx.ListBindings(store.Where{"router_id": r.ID})
		if err != nil {
			return err
		}
		hosted := make([]ha.HostedBy, 0, len(bs))
		for _, b := range bs {
			ag, err := tx.GetAgent(b.AgentID)
			if err != nil {
				return err
			}
			hosted = append(hosted, ha.HostedBy{Agent: ag, Binding: b})
		}
		sort.Slice(hosted, func(i, j int) bool { return hosted[i].Agent.Host < hosted[j].Agent.Host })
		states := ha.ViewStates(hosted, func(ag *store.Agent) bool { return a.ha.Alive(ag, tx.Now) })
		for i, h := range hosted {
			v := a.agentView(h.Agent, tx.Now)
			if r.HA {
				v["ha_state"] = states[i]
			} else {
				v["ha_state"] = nil
			}
			out = append(out, v)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if out == nil {
		out = []any{}
	}
	return map[string]any{"agents": out}, nil
}

// agentL3Routers is GET /v2.0/agents/{id}/l3-routers.
func (a *API) agentL3Routers(ctx context.Context, id Identity, agentID string) (any, error) {
	if err := requireAdmin(id, "get_l3-routers"); err != nil {
		return nil, err
	}
	var out []map[string]any
	err := a.db.Read(ctx, func(tx *store.Tx) error {
		ag, err := getAgentRow(tx, agentID)
		if err != nil {
			return err
		}
		bs, err := tx.ListBindings(store.Where{"agent_id": ag.ID})
		if err != nil {
			return err
		}
		ids := make([]string, 0, len(bs))
		for _, b := range bs {
			ids = append(ids, b.RouterID)
		}
		routers, err := tx.ListRouters(store.Where{"id": ids})
		if err != nil {
			return err
		}
		rc, err := loadRouterContext(tx, routers)
		if err != nil {
			return err
		}
		for _, r := range routers {
			out = append(out, routerView(r, rc, true))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if out == nil {
		out = []map[string]any{}
	}
	return map[string]any{"routers": out}, nil
}

func l3Agent(tx *store.Tx, agentID string) (*store.Agent, error) {
	ag, err := getAgentRow(tx, agentID)
	if err != nil {
		return nil, err
	}
	if ag.AgentType != agentapi.AgentTypeL3 || !ag.AdminStateUp {
		return nil, errf(http.StatusBadRequest, "InvalidL3Agent", "Agent %s is not a L3 Agent or has been disabled", ag.ID)
	}
	return ag, nil
}

// agentAddRouter is POST /v2.0/agents/{id}/l3-routers {"router_id": …}.
func (a *API) agentAddRouter(ctx context.Context, id Identity, agentID string, body map[string]json.RawMessage) error {
	if err := requireAdmin(id, "create_l3-router"); err != nil {
		return err
	}
	in := input{m: body, singular: "router"}
	var routerID string
	if err := in.uuidAttr("router_id", &routerID); err != nil {
		return err
	}
	if routerID == "" {
		return badRequest("Failed to parse request. Required attribute 'router_id' not specified")
	}
	_, err := a.db.Write(ctx, func(tx *store.Tx) error {
		ag, err := l3Agent(tx, agentID)
		if err != nil {
			return err
		}
		r, err := ownedRouter(tx, id, routerID)
		if err != nil {
			return err
		}
		bs, err := tx.ListBindings(store.Where{"router_id": r.ID})
		if err != nil {
			return err
		}
		for _, b := range bs {
			if b.AgentID == ag.ID || !r.HA {
				return errf(http.StatusConflict, "RouterHostedByL3Agent", "The router %s has been already hosted by the L3 Agent %s.", r.ID, b.AgentID)
			}
		}
		if r.HA {
			if v, err := ha.VRIDOf(tx, r.ID); err != nil {
				return err
			} else if v == nil {
				return errf(http.StatusConflict, "RouterNotCompatibleWithAgent", "HA router %s has no VRID (status %s) and cannot be scheduled.", r.ID, r.Status)
			}
		}
		return a.ha.Bind(tx, r, ag)
	})
	return err
}

// agentRemoveRouter is DELETE /v2.0/agents/{id}/l3-routers/{router_id}.
func (a *API) agentRemoveRouter(ctx context.Context, id Identity, agentID, routerID string) error {
	if err := requireAdmin(id, "delete_l3-router"); err != nil {
		return err
	}
	_, err := a.db.Write(ctx, func(tx *store.Tx) error {
		ag, err := getAgentRow(tx, agentID)
		if err != nil {
			return err
		}
		r, err := ownedRouter(tx, id, routerID)
		if err != nil {
			return err
		}
		bs, err := tx.ListBindings(store.Where{"router_id": r.ID, "agent_id": ag.ID})
		if err != nil {
			return err
		}
		if len(bs) == 0 {
			return errf(http.StatusNotFound, "RouterNotHostedByL3Agent", "The router %s is not hosted by L3 agent %s.", r.ID, ag.ID)
		}
		return a.ha.Unbind(tx, r, ag)
	})
	return err
}
