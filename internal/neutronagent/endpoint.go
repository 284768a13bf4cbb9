package neutronagent

import (
	"context"
	"encoding/json"
	"fmt"
)

// Handler serves one method of the L3 agent RPC API that neutron-server
// casts (or calls) to its agents on topic l3_agent.
type Handler func(ctx context.Context, args json.RawMessage) (any, error)

// Endpoint is the L3 agent RPC API (L3NATAgent, version 1.4) as l3ha
// serves it: every notification marks routers for a sync from
// neutron-server; the sync, not the cast, is the truth.
func (s *Server) Endpoint() map[string]Handler {
	return map[string]Handler{
		// routers: a list of router ids (or, from old servers, of dicts).
		"routers_updated": func(_ context.Context, args json.RawMessage) (any, error) {
			var a struct {
				Routers json.RawMessage `json:"routers"`
			}
			if err := json.Unmarshal(args, &a); err != nil {
				return nil, fmt.Errorf("routers_updated: %w", err)
			}
			ids, err := routerIDs(a.Routers)
			if err != nil {
				return nil, fmt.Errorf("routers_updated: %w", err)
			}
			s.markDirty(ids...)
			return nil, nil
		},
		"router_deleted": func(_ context.Context, args json.RawMessage) (any, error) {
			var a struct {
				RouterID string `json:"router_id"`
			}
			if err := json.Unmarshal(args, &a); err != nil || a.RouterID == "" {
				return nil, fmt.Errorf("router_deleted: no router_id in %s", args)
			}
			s.markDirty(a.RouterID)
			return nil, nil
		},
		// payload: a list of router ids.
		"router_added_to_agent": func(_ context.Context, args json.RawMessage) (any, error) {
			var a struct {
				Payload json.RawMessage `json:"payload"`
			}
			if err := json.Unmarshal(args, &a); err != nil {
				return nil, fmt.Errorf("router_added_to_agent: %w", err)
			}
			ids, err := routerIDs(a.Payload)
			if err != nil {
				return nil, fmt.Errorf("router_added_to_agent: %w", err)
			}
			s.markDirty(ids...)
			return nil, nil
		},
		// payload: {"router_id": id}.
		"router_removed_from_agent": func(_ context.Context, args json.RawMessage) (any, error) {
			var a struct {
				Payload struct {
					RouterID string `json:"router_id"`
				} `json:"payload"`
			}
			if err := json.Unmarshal(args, &a); err != nil || a.Payload.RouterID == "" {
				return nil, fmt.Errorf("router_removed_from_agent: no payload.router_id in %s", args)
			}
			s.markDirty(a.Payload.RouterID)
			return nil, nil
		},
		// A network's MTU changed: resync the routers with a port on it.
		"network_update": func(_ context.Context, args json.RawMessage) (any, error) {
			var a struct {
				Network struct {
					ID string `json:"id"`
				} `json:"network"`
			}
			if err := json.Unmarshal(args, &a); err != nil || a.Network.ID == "" {
				return nil, fmt.Errorf("network_update: no network.id in %s", args)
			}
			s.markDirty(s.routersOnNetwork(a.Network.ID)...)
			return nil, nil
		},
		// The agent's admin state or the like changed: sync everything.
		"agent_updated": func(_ context.Context, _ json.RawMessage) (any, error) {
			s.Resync()
			return nil, nil
		},
		// DVR only; nothing of it runs here.
		"fipnamespace_delete_on_ext_net": func(context.Context, json.RawMessage) (any, error) { return nil, nil },
	}
}

// routerIDs reads a list of router ids, or of router dicts with an id.
func routerIDs(raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var ids []string
	if err := json.Unmarshal(raw, &ids); err == nil {
		return ids, nil
	}
	var dicts []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(raw, &dicts); err != nil {
		return nil, fmt.Errorf("want a list of router ids: %s", raw)
	}
	for _, d := range dicts {
		if d.ID != "" {
			ids = append(ids, d.ID)
		}
	}
	return ids, nil
}

func (s *Server) markDirty(ids ...string) {
	if len(ids) == 0 {
		return
	}
	s.mu.Lock()
	s.seq++
	for _, id := range ids {
		s.dirty[id] = s.seq
	}
	s.mu.Unlock()
	s.poke()
}

func (s *Server) routersOnNetwork(networkID string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for id, r := range s.routers {
		on := r.Spec.Gateway != nil && r.Spec.Gateway.NetworkID == networkID
		for _, p := range r.Spec.Interfaces {
			on = on || p.NetworkID == networkID
		}
		if on {
			ids = append(ids, id)
		}
	}
	return ids
}
