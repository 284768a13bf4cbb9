package ha

import (
	"sync"
	"time"

	"github.com/l3ha/l3ha/internal/store"
)

// liveness remembers, on this server's monotonic clock, when it stored
// each agent's last heartbeat. A heartbeat's stored time is the wall clock
// of the server that took it, and the wall clock can step (NTP, `date -s`):
// set forward, every agent would look dead until its next heartbeat; set
// back, a dead one would look alive for as long as the step. While the
// stored heartbeat is still the one this server took, its age is measured
// on the monotonic clock instead. A heartbeat another server took (several
// servers on one database) falls back to the wall clock.
type liveness struct {
	mu    sync.Mutex
	heard map[string]heard
}

type heard struct {
	stored time.Time // the heartbeat time written to the database
	at     time.Time // when, with its monotonic reading
}

// Heard records that this server stored heartbeat time stored for agent id.
func (m *Manager) Heard(agentID string, stored time.Time) {
	m.live.mu.Lock()
	defer m.live.mu.Unlock()
	if m.live.heard == nil {
		m.live.heard = map[string]heard{}
	}
	m.live.heard[agentID] = heard{stored: stored, at: time.Now()}
}

// Forget drops what the server remembers of a deleted agent.
func (m *Manager) Forget(agentID string) {
	m.live.mu.Lock()
	defer m.live.mu.Unlock()
	delete(m.live.heard, agentID)
}

// Alive reports whether agent a, as read in a transaction at now, is
// alive: its last heartbeat is younger than agent_down_time.
func (m *Manager) Alive(a *store.Agent, now time.Time) bool {
	return m.SilentFor(a, now) < m.cfg.AgentDownTime
}

// SilentFor is how long agent a, as read in a transaction at now, has sent
// no heartbeat.
func (m *Manager) SilentFor(a *store.Agent, now time.Time) time.Duration {
	m.live.mu.Lock()
	h, ok := m.live.heard[a.ID]
	m.live.mu.Unlock()
	// The database keeps microseconds.
	if ok && h.stored.Sub(a.HeartbeatAt).Abs() < time.Millisecond {
		return time.Since(h.at)
	}
	return now.Sub(a.HeartbeatAt)
}
