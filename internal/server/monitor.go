package server

import (
	"context"
	"time"

	"github.com/l3ha/l3ha/internal/store"
)

// monitorAgents checks agent liveness every agent_down_time/2 (Neutron's
// period): it logs agents that died or came back and, with
// allow_automatic_l3agent_failover, moves legacy routers off agents dead for
// twice agent_down_time. HA routers are left alone: VRRP already moved their
// traffic, and their other bindings keep them redundant.
func (s *Server) monitorAgents(ctx context.Context) {
	down := s.cfg.HA.AgentDownTime
	period := max(down/2, 500*time.Millisecond)
	t := time.NewTicker(period)
	defer t.Stop()
	alive := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var agents []*store.Agent
		var now time.Time
		err := s.db.Read(ctx, func(tx *store.Tx) error {
			var err error
			agents, err = tx.ListAgents(nil)
			now = tx.Now
			return err
		})
		if err != nil {
			s.log.Warn("agent monitor could not read agents", "err", err)
			continue
		}
		for _, a := range agents {
			now := s.ha.Alive(a, now)
			if was, known := alive[a.ID]; known && was != now {
				if now {
					s.log.Info("agent is alive again", "host", a.Host, "agent_id", a.ID)
				} else {
					s.log.Warn("agent is dead: no heartbeat within agent_down_time", "host", a.Host, "agent_id", a.ID, "last_heartbeat", a.HeartbeatAt, "agent_down_time", down)
				}
			}
			alive[a.ID] = now
		}
		if s.cfg.AutomaticFailover {
			s.failoverLegacyRouters(ctx, agents, now)
		}
	}
}

func (s *Server) failoverLegacyRouters(ctx context.Context, agents []*store.Agent, now time.Time) {
	for _, a := range agents {
		if s.ha.SilentFor(a, now) < 2*s.cfg.HA.AgentDownTime {
			continue
		}
		// Only take the write lock (which wakes every agent's long-poll) when
		// the dead agent still hosts a legacy router.
		legacy := 0
		err := s.db.Read(ctx, func(tx *store.Tx) error {
			bs, err := tx.ListBindings(store.Where{"agent_id": a.ID})
			if err != nil || len(bs) == 0 {
				return err
			}
			ids := make([]string, len(bs))
			for i, b := range bs {
				ids[i] = b.RouterID
			}
			legacy, err = tx.CountRouters(store.Where{"id": ids, "ha": false})
			return err
		})
		if err != nil || legacy == 0 {
			continue
		}
		_, err = s.db.Write(ctx, func(tx *store.Tx) error {
			bs, err := tx.ListBindings(store.Where{"agent_id": a.ID})
			if err != nil {
				return err
			}
			for _, b := range bs {
				r, err := tx.GetRouter(b.RouterID)
				if err != nil {
					return err
				}
				if r.HA {
					continue
				}
				if err := s.ha.Unbind(tx, r, a); err != nil {
					return err
				}
				added, err := s.ha.Schedule(tx, r)
				if err != nil {
					return err
				}
				s.log.Warn("legacy router moved off dead agent", "router_id", r.ID, "from_host", a.Host, "to_agents", added)
			}
			return nil
		})
		if err != nil {
			s.log.Error("failing over routers of dead agent", "host", a.Host, "err", err)
		}
	}
}
