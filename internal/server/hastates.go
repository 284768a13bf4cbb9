package server

import (
	"fmt"
	"maps"
	"net/http"

	"github.com/l3ha/l3ha/internal/agentapi"
	"github.com/l3ha/l3ha/internal/ha"
	"github.com/l3ha/l3ha/internal/store"
)

// haStates records a batch of transitions. The master's host also becomes
// the binding:host_id of the router's interface and gateway ports, as in
// Neutron, so L2 population follows the master.
func (s *Server) haStates(w http.ResponseWriter, r *http.Request) error {
	var rep agentapi.HAStateReport
	if err := decodeAgentBody(r, &rep); err != nil {
		return err
	}
	for id, st := range rep.States {
		if st != agentapi.HAActive && st != agentapi.HAStandby {
			return endpointError{http.StatusBadRequest, "HTTPBadRequest", fmt.Sprintf("router %s: ha_state %q (want active or standby)", id, st)}
		}
	}
	states := maps.Clone(rep.States)
	err := s.db.WriteQuiet(r.Context(), func(tx *store.Tx) error {
		// A router port created concurrently must either see this report
		// (and take the active host) or be seen by it.
		if err := tx.LockWrites(); err != nil {
			return err
		}
		a, err := s.agentByHost(tx, rep.Host)
		if err != nil {
			return err
		}
		if a == nil {
			return endpointError{http.StatusNotFound, "AgentNotFound", fmt.Sprintf("no L3 agent registered on host %s", rep.Host)}
		}
		for routerID, st := range states {
			ok, err := tx.SetHAState(routerID, a.ID, st)
			if err != nil {
				return err
			}
			if !ok {
				s.log.Debug("ha_state for a router no longer bound to the agent", "router_id", routerID, "host", rep.Host)
				continue
			}
			if st == agentapi.HAActive {
				// VRRP has one master: a fresh active report supersedes older
				// claims (a node that just died still looks alive until
				// agent_down_time). Two live masters would keep reporting,
				// and are logged here as split brain.
				bs, err := tx.ListBindings(store.Where{"router_id": routerID, "ha_state": agentapi.HAActive})
				if err != nil {
					return err
				}
				for _, b := range bs {
					if b.AgentID == a.ID {
						continue
					}
					if _, err := tx.SetHAState(routerID, b.AgentID, agentapi.HAStandby); err != nil {
						return err
					}
					s.log.Warn("router reported active by a new master; the previous active binding is now shown standby (if both stay master this is split brain)", "router_id", routerID, "host", rep.Host, "previous_agent_id", b.AgentID)
				}
				ports, err := tx.ListPorts(store.Where{"device_id": routerID, "device_owner": []string{ha.OwnerReplicatedInterface, ha.OwnerRouterInterface, ha.OwnerRouterGateway}})
				if err != nil {
					return err
				}
				for _, p := range ports {
					if err := tx.SetPortHost(p.ID, rep.Host); err != nil {
						return err
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for routerID, st := range states {
		s.metrics.haReports.WithLabelValues(st).Inc()
		s.log.Info("ha_state reported", "router_id", routerID, "host", rep.Host, "ha_state", st)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
