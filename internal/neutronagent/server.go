package neutronagent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/l3ha/l3ha/internal/agent"
	"github.com/l3ha/l3ha/internal/agentapi"
)

// Neutron's RPC topics (neutron_lib.agent.topics) and the versions of the
// methods, as neutron-l3-agent (Zed) prepares them.
const (
	TopicL3Agent  = "l3_agent"         // neutron-server → agents
	topicL3Plugin = "q-l3-plugin"      // agents → the L3 plugin
	topicReports  = "q-reports-plugin" // state reports

	versionReportState  = "1.2"
	versionSyncRouters  = "1.0"
	versionRouterIDs    = "1.9"
	versionFIPStatuses  = "1.1"
	versionHARouterStat = "1.5"

	// syncChunk is how many routers one sync_routers call asks for
	// (neutron-l3-agent's SYNC_ROUTERS_MAX_CHUNK_SIZE).
	syncChunk = 256
)

// RPC is what the agent needs of oslo.messaging: calls and casts to
// neutron-server's topics (internal/oslo implements it).
type RPC interface {
	Call(ctx context.Context, topic, version, method string, args map[string]any) (json.RawMessage, error)
	Cast(ctx context.Context, topic, version, method string, args map[string]any) error
}

// Server is neutron-server as the l3ha agent sees it (agent.Server):
// heartbeats are report_state, the desired state is built from
// sync_routers whenever neutron-server's casts (Endpoint) say something
// changed, and HA states go out with update_ha_routers_states.
type Server struct {
	cfg *Config
	rpc RPC
	log *slog.Logger

	mu         sync.Mutex
	routers    map[string]router // as last synced
	bad        map[string]string // router id → why its dict was skipped (logged once)
	dirty      map[string]uint64 // routers to sync again → the mark's sequence number
	full       uint64            // sync everything (start, revived, reconnect) while > 0: the mark's sequence number
	seq        uint64            // numbers the marks, so that a sync clears only what it saw
	wake       chan struct{}     // cap 1
	generation int               // bumped when neutron-server forgot us
	started    bool              // the first report (start_flag) was accepted
	reported   map[string]string // floating IP id → status last reported
}

var _ agent.Server = (*Server)(nil)

// NewServer returns the neutron-server side of `l3ha neutron-l3-agent`.
func NewServer(cfg *Config, rpc RPC, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{
		cfg: cfg, rpc: rpc, log: log.With("host", cfg.Host),
		routers: map[string]router{}, bad: map[string]string{}, dirty: map[string]uint64{},
		full: 1, seq: 1, wake: make(chan struct{}, 1), reported: map[string]string{},
	}
}

func (s *Server) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Resync asks for a full sync of every router (after a reconnect to
// RabbitMQ: casts may have been lost meanwhile).
func (s *Server) Resync() {
	s.mu.Lock()
	s.seq++
	s.full = s.seq
	s.mu.Unlock()
	s.poke()
}

// Heartbeat implements agent.Server with report_state (a call, as
// neutron-l3-agent makes it): the agent is registered as an "L3 agent"
// of binary neutron-l3-agent, so Neutron's scheduler places routers on
// it.
func (s *Server) Heartbeat(ctx context.Context, hb agentapi.Heartbeat) (agentapi.HeartbeatReply, error) {
	s.mu.Lock()
	st := s.agentStateLocked()
	s.mu.Unlock()
	raw, err := s.rpc.Call(ctx, topicReports, versionReportState, "report_state", map[string]any{
		"agent_state": map[string]any{"agent_state": st},
		"time":        time.Now().UTC().Format("2006-01-02T15:04:05.000000"),
	})
	if err != nil {
		return agentapi.HeartbeatReply{}, fmt.Errorf("report_state: %w", err)
	}
	var status string
	_ = json.Unmarshal(raw, &status)
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case !s.started:
		s.started = true
	case status == "revived" || status == "new":
		// neutron-server had us dead (or forgot us): routers may have been
		// rescheduled meanwhile, and our HA states may be stale there.
		s.log.Info("neutron-server says the agent was "+status+"; full sync", "status", status)
		s.seq++
		s.full = s.seq
		s.generation++
		s.poke()
	}
	return agentapi.HeartbeatReply{
		AgentID:         fmt.Sprintf("neutron:%s:%d", s.cfg.Host, s.generation),
		IntervalSeconds: s.cfg.ReportInterval.Seconds(),
	}, nil
}

// agentStateLocked is the agent_state of report_state.
func (s *Server) agentStateLocked() map[string]any {
	var gw, ifaces, fips int
	for _, r := range s.routers {
		if r.Spec.Gateway != nil {
			gw++
		}
		ifaces += len(r.Spec.Interfaces)
		fips += len(r.Spec.FloatingIPs)
	}
	st := map[string]any{
		"binary": agentapi.BinaryL3, "host": s.cfg.Host, "availability_zone": s.cfg.AvailabilityZone,
		"topic": TopicL3Agent, "agent_type": agentapi.AgentTypeL3,
		"configurations": map[string]any{
			"agent_mode": "legacy", "handle_internal_only_routers": s.cfg.HandleInternalOnly,
			"interface_driver": s.cfg.InterfaceDriver, "log_agent_heartbeats": false, "extensions": []string{},
			"routers": len(s.routers), "ex_gw_ports": gw, "interfaces": ifaces, "floating_ips": fips,
			// l3ha's own, for operators: which agents are l3ha.
			"l3ha": map[string]any{"ha_driver": s.cfg.HADriver},
		},
	}
	if !s.started {
		st["start_flag"] = true
	}
	return st
}

// WaitState implements agent.Server: it syncs what neutron-server said
// changed (everything at start) and returns the new state, or waits for a
// change until wait passes.
func (s *Server) WaitState(ctx context.Context, host, etag string, wait time.Duration) (*agentapi.DesiredState, bool, error) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	recheck := time.NewTicker(pendingRecheck)
	defer recheck.Stop()
	for {
		if err := s.sync(ctx); err != nil {
			return nil, false, err
		}
		st := s.desired()
		if st.ETag != etag {
			return st, true, nil
		}
		select {
		case <-s.wake:
		case <-recheck.C:
			// The cast that says an HA port is bound may have been lost
			// (RabbitMQ or neutron-server restarting): ask again.
			s.markDirty(s.pendingRouters()...)
		case <-timer.C:
			return nil, false, nil
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
}

// pendingRecheck is how often routers whose VRRP waits for its HA port are
// synced again although no cast said so.
const pendingRecheck = 5 * time.Second

// pendingRouters are the HA routers whose HA port is not bound yet.
func (s *Server) pendingRouters() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for id, r := range s.routers {
		if r.Spec.HA && !r.HAPortActive {
			ids = append(ids, id)
		}
	}
	return ids
}

// sync asks neutron-server for the routers marked dirty (all of them after
// a full-sync request). On failure the marks stay for the next try; a mark
// made while the sync was under way (a cast that came meanwhile) stays too,
// so that no notification is lost.
func (s *Server) sync(ctx context.Context) error {
	s.mu.Lock()
	full, marks := s.full, maps.Clone(s.dirty)
	s.mu.Unlock()
	if full == 0 && len(marks) == 0 {
		return nil
	}
	if full != 0 {
		raw, err := s.rpc.Call(ctx, topicL3Plugin, versionRouterIDs, "get_router_ids", map[string]any{"host": s.cfg.Host})
		if err != nil {
			return fmt.Errorf("get_router_ids: %w", err)
		}
		var ids []string
		if err := json.Unmarshal(raw, &ids); err != nil {
			return fmt.Errorf("get_router_ids: answer is not a list of ids: %w", err)
		}
		got, bad, err := s.syncRouters(ctx, ids)
		if err != nil {
			return err
		}
		s.mu.Lock()
		// A router that failed to decode keeps what it runs.
		for id := range bad {
			if r, ok := s.routers[id]; ok {
				got[id] = r
			}
		}
		s.routers = got
		s.noteBadLocked(bad)
		if s.full == full {
			s.full = 0
		}
		s.clearMarksLocked(marks)
		s.mu.Unlock()
		s.log.Info("full sync with neutron-server", "routers", len(got), "skipped", len(bad))
		return nil
	}
	ids := slices.Sorted(maps.Keys(marks))
	got, bad, err := s.syncRouters(ctx, ids)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if r, ok := got[id]; ok {
			s.routers[id] = r
		} else if _, skipped := bad[id]; !skipped {
			// Not ours any more (deleted, unscheduled, admin down).
			delete(s.routers, id)
		}
		// A router whose dict is malformed keeps what it runs: a bad
		// answer must not become an outage.
	}
	s.clearMarksLocked(marks)
	s.noteBadLocked(bad)
	return nil
}

// clearMarksLocked removes the marks a sync has served, unless a router
// was marked again meanwhile.
func (s *Server) clearMarksLocked(served map[string]uint64) {
	for id, seq := range served {
		if s.dirty[id] == seq {
			delete(s.dirty, id)
		}
	}
}

// syncRouters calls sync_routers for ids, in chunks.
func (s *Server) syncRouters(ctx context.Context, ids []string) (map[string]router, map[string]error, error) {
	got, bad := map[string]router{}, map[string]error{}
	for start := 0; start < len(ids); start += syncChunk {
		chunk := ids[start:min(start+syncChunk, len(ids))]
		raw, err := s.rpc.Call(ctx, topicL3Plugin, versionSyncRouters, "sync_routers", map[string]any{"host": s.cfg.Host, "router_ids": chunk})
		if err != nil {
			return nil, nil, fmt.Errorf("sync_routers: %w", err)
		}
		rs, b, err := decodeRouters(raw)
		if err != nil {
			return nil, nil, fmt.Errorf("sync_routers: %w", err)
		}
		for _, r := range rs {
			if !r.Spec.HA || s.cfg.HandleInternalOnly || r.Spec.Gateway != nil {
				got[r.Spec.ID] = r
			}
		}
		maps.Copy(bad, b)
	}
	return got, bad, nil
}

func (s *Server) noteBadLocked(bad map[string]error) {
	for id, err := range bad {
		if s.bad[id] != err.Error() {
			s.bad[id] = err.Error()
			s.log.Error("router from neutron-server skipped: its dict is malformed or unsupported; the others are served", "router_id", id, "err", err)
		}
	}
	for id := range s.bad {
		if _, still := bad[id]; !still && !s.dirtyOrFullLocked() {
			delete(s.bad, id)
		}
	}
}

func (s *Server) dirtyOrFullLocked() bool { return s.full != 0 || len(s.dirty) > 0 }

// desired is the agent's desired state from the routers last synced.
func (s *Server) desired() *agentapi.DesiredState {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &agentapi.DesiredState{Host: s.cfg.Host, Routers: make([]agentapi.RouterSpec, 0, len(s.routers)), Networks: []agentapi.NetworkSpec{}}
	for _, r := range s.routers {
		spec := r.Spec
		spec.HAPending = spec.HA && !r.HAPortActive
		st.Routers = append(st.Routers, spec)
	}
	sort.Slice(st.Routers, func(i, j int) bool { return st.Routers[i].ID < st.Routers[j].ID })
	b, _ := json.Marshal(st)
	sum := sha256.Sum256(b)
	st.ETag = hex.EncodeToString(sum[:12])
	return st
}

// ReportHAStates implements agent.Server with update_ha_routers_states,
// which takes states only: the transitions' reasons (rep.Reasons) are l3ha's
// and are not sent.
func (s *Server) ReportHAStates(ctx context.Context, rep agentapi.HAStateReport) error {
	if len(rep.States) == 0 {
		return nil
	}
	if err := s.rpc.Cast(ctx, topicL3Plugin, versionHARouterStat, "update_ha_routers_states", map[string]any{
		"host": s.cfg.Host, "states": rep.States,
	}); err != nil {
		return fmt.Errorf("update_ha_routers_states: %w", err)
	}
	return nil
}

// Applied tells neutron-server the floating IPs of a state the data plane
// has applied are ACTIVE (update_floatingip_statuses), once per change.
func (s *Server) Applied(ctx context.Context, st agentapi.DesiredState) {
	s.mu.Lock()
	type update struct {
		router   string
		statuses map[string]string
	}
	var updates []update
	for _, spec := range st.Routers {
		r, ok := s.routers[spec.ID]
		if !ok || len(spec.FloatingIPs) == 0 {
			continue
		}
		statuses := map[string]string{}
		changed := false
		for _, f := range spec.FloatingIPs {
			statuses[f.ID] = "ACTIVE"
			if r.FloatingIPs[f.ID] != "ACTIVE" && s.reported[f.ID] != "ACTIVE" {
				changed = true
			}
		}
		if changed {
			updates = append(updates, update{spec.ID, statuses})
		}
	}
	s.mu.Unlock()
	for _, u := range updates {
		if _, err := s.rpc.Call(ctx, topicL3Plugin, versionFIPStatuses, "update_floatingip_statuses", map[string]any{
			"router_id": u.router, "fip_statuses": u.statuses,
		}); err != nil {
			s.log.Warn("reporting floating IP statuses failed; retried with the next change", "router_id", u.router, "err", err)
			continue
		}
		s.mu.Lock()
		for id, st := range u.statuses {
			s.reported[id] = st
		}
		s.mu.Unlock()
	}
}
