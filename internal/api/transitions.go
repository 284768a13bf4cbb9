package api

import (
	"context"
	"net/url"

	"github.com/l3ha/l3ha/internal/store"
)

// routerHATransitions is GET /v2.0/routers/{id}/ha_transitions: the HA
// transitions of the router's bindings as the server recorded them, oldest
// first; ?limit=N gives the newest N (still oldest first), 0 or none all
// that are kept. Admin only, as l3-agents; a router the caller cannot see
// (another project's, or none) is a 404 as for any router request, and a
// tenant asking about its own router gets the 403. A legacy router has
// none: an empty list (as l3-agents lists a legacy router's agents with
// ha_state null instead of refusing); one that was HA keeps the history of
// that time until it is pruned.
func (a *API) routerHATransitions(ctx context.Context, id Identity, routerID string, q url.Values) (any, error) {
	limit, err := parseLimit(q)
	if err != nil {
		return nil, err
	}
	var rows []store.HATransition
	err = a.db.Read(ctx, func(tx *store.Tx) error {
		r, err := ownedRouter(tx, id, routerID)
		if err != nil {
			return err
		}
		if err := requireAdmin(id, "get_ha_transitions"); err != nil {
			return err
		}
		rows, err = tx.ListHATransitions(r.ID, limit)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make([]any, 0, len(rows))
	for _, t := range rows {
		out = append(out, map[string]any{
			"agent_id": t.AgentID, "host": t.Host, "from": t.From, "to": t.To,
			"at": ts(t.At), "reason": t.Reason,
		})
	}
	return map[string]any{"ha_transitions": out}, nil
}
