package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/l3ha/l3ha/internal/agentapi"
	"github.com/l3ha/l3ha/internal/store"
)

type metrics struct {
	haReports   *prometheus.CounterVec
	heartbeats  prometheus.Counter
	transitions *prometheus.CounterVec // by reason (transitions.go)
}

func newMetrics() *metrics {
	return &metrics{
		haReports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "l3ha_server_ha_state_reports_total", Help: "HA state reports received from agents, by reported state.",
		}, []string{"state"}),
		heartbeats: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "l3ha_server_agent_heartbeats_total", Help: "Agent heartbeats received.",
		}),
		transitions: newTransitionsCounter(),
	}
}

// maxWait caps a state long-poll.
const maxWait = 60 * time.Second

type endpointError struct {
	status  int
	typ     string
	message string
}

func writeEndpointError(w http.ResponseWriter, e endpointError) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.status)
	_ = json.NewEncoder(w).Encode(map[string]any{"NeutronError": map[string]any{"type": e.typ, "message": e.message, "detail": ""}})
}

func (s *Server) agentEndpoint() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, ok := "", false
		if tok := r.Header.Get(agentapi.TokenHeader); tok != "" && s.cfg.AgentCredentials != nil {
			host, ok = s.cfg.AgentCredentials.HostFor(tok)
		}
		if !ok {
			s.log.Warn("agent request with a missing or wrong agent token", "remote", r.RemoteAddr, "path", r.URL.Path)
			writeEndpointError(w, endpointError{http.StatusUnauthorized, "HTTPUnauthorized", "missing or invalid agent token"})
			return
		}
		r = r.WithContext(withAgentHost(r.Context(), host))
		var err error
		switch {
		case r.URL.Path == agentapi.PathHeartbeat && r.Method == http.MethodPost:
			err = s.heartbeat(w, r)
		case r.URL.Path == agentapi.PathState && r.Method == http.MethodGet:
			err = s.waitState(w, r)
		case r.URL.Path == agentapi.PathHAStates && r.Method == http.MethodPost:
			err = s.haStates(w, r)
		default:
			err = endpointError{http.StatusNotFound, "HTTPNotFound", "no such agent endpoint"}
		}
		if err != nil {
			var e endpointError
			if errors.As(err, &e) {
				if e.status == http.StatusForbidden {
					s.log.Warn("agent request refused", "remote", r.RemoteAddr, "path", r.URL.Path, "credential_host", host, "reason", e.message)
				}
			} else {
				if r.Context().Err() != nil {
					return
				}
				s.log.Error("agent endpoint failed", "path", r.URL.Path, "err", err)
				e = endpointError{http.StatusInternalServerError, "HTTPInternalServerError", "internal error"}
			}
			writeEndpointError(w, e)
		}
	})
}

func (e endpointError) Error() string { return e.message }

func decodeAgentBody(r *http.Request, v any) error {
	r.Body = http.MaxBytesReader(nil, r.Body, 4<<20)
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		return endpointError{http.StatusBadRequest, "HTTPBadRequest", "Body contains invalid data: " + err.Error()}
	}
	return nil
}

func (s *Server) agentByHost(tx *store.Tx, host string) (*store.Agent, error) {
	as, err := tx.ListAgents(store.Where{"agent_type": agentapi.AgentTypeL3, "host": host})
	if err != nil || len(as) == 0 {
		return nil, err
	}
	return as[0], nil
}

// heartbeat registers an agent or refreshes it. A new, revived or restarted
// agent takes the write path (auto-scheduling may give it routers); a
// routine heartbeat is a quiet write that wakes nobody.
func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request) error {
	var hb agentapi.Heartbeat
	if err := decodeAgentBody(r, &hb); err != nil {
		return err
	}
	if hb.Host == "" || len(hb.Host) > 255 {
		return endpointError{http.StatusBadRequest, "HTTPBadRequest", "heartbeat needs a host of at most 255 characters"}
	}
	if err := actFor(r, hb.Host); err != nil {
		return err
	}
	if hb.AgentType == "" {
		hb.AgentType = agentapi.AgentTypeL3
	}
	if hb.AgentType != agentapi.AgentTypeL3 {
		return endpointError{http.StatusBadRequest, "HTTPBadRequest", fmt.Sprintf("unsupported agent_type %q", hb.AgentType)}
	}
	if hb.Binary == "" {
		hb.Binary = agentapi.BinaryL3
	}
	if hb.Topic == "" {
		hb.Topic = agentapi.TopicL3
	}
	if hb.Configurations == nil {
		hb.Configurations = map[string]any{}
	}
	if hb.StartedAt.IsZero() {
		hb.StartedAt = time.Now()
	}
	s.metrics.heartbeats.Inc()
	down := s.cfg.HA.AgentDownTime
	ctx := r.Context()
	var agentID string
	var stored time.Time // the heartbeat time written, for s.ha.Heard
	quiet := false
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		a, err := s.agentByHost(tx, hb.Host)
		if err != nil || a == nil {
			return err
		}
		agentID = a.ID
		quiet = s.ha.Alive(a, tx.Now) && a.StartedAt.Equal(hb.StartedAt.UTC().Truncate(time.Microsecond)) && sameConfig(a.Configurations, hb.Configurations)
		return nil
	})
	if err != nil {
		return err
	}
	if quiet {
		err = s.db.WriteQuiet(ctx, func(tx *store.Tx) error {
			a, err := tx.GetAgent(agentID)
			if err != nil {
				return err
			}
			a.HeartbeatAt, stored = tx.Now, tx.Now
			return tx.UpdateAgent(a)
		})
	} else {
		_, err = s.db.Write(ctx, func(tx *store.Tx) error {
			a, err := s.agentByHost(tx, hb.Host)
			if err != nil {
				return err
			}
			event, isNew := "agent registered", a == nil
			if isNew {
				a = &store.Agent{
					ID: uuid.NewString(), AgentType: hb.AgentType, Host: hb.Host, AvailabilityZone: agentapi.DefaultAZ,
					AdminStateUp: true, CreatedAt: tx.Now,
				}
			} else if !s.ha.Alive(a, tx.Now) {
				event = "agent revived"
			} else {
				event = "agent restarted or reconfigured"
			}
			a.Binary, a.Topic, a.Configurations = hb.Binary, hb.Topic, hb.Configurations
			a.HeartbeatAt, a.StartedAt = tx.Now, hb.StartedAt.UTC()
			stored = tx.Now
			if isNew {
				if err := tx.InsertAgent(a); err != nil {
					return err
				}
			} else if err := tx.UpdateAgent(a); err != nil {
				return err
			}
			agentID = a.ID
			n := 0
			if s.cfg.AutoSchedule {
				if n, err = s.ha.AutoSchedule(tx, a); err != nil {
					return err
				}
			}
			s.log.Info(event, "host", a.Host, "agent_id", a.ID, "auto_scheduled_routers", n)
			return nil
		})
	}
	if err != nil {
		return err
	}
	s.ha.Heard(agentID, stored)
	writeJSONBody(w, http.StatusOK, agentapi.HeartbeatReply{
		AgentID: agentID, IntervalSeconds: down.Seconds() / 3, AgentDownTimeSeconds: down.Seconds(),
	})
	return nil
}

func sameConfig(a, b map[string]any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func writeJSONBody(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// builtState is the last desired state built for a host.
type builtState struct {
	rev  int64         // the revision known before the build began (or since which nothing relevant was committed)
	etag string        // what it built
	cost time.Duration // how long building took
	at   time.Time     // when it was built
	deps *stateDeps    // what it was built from
}

// builtStates remembers the last state built per host, so that an agent
// coming back with that state is not answered by building it again, and so
// that builds can be paced.
type builtStates struct {
	mu    sync.Mutex
	hosts map[string]builtState

	slotsOnce sync.Once
	slots     chan struct{}
}

// acquire waits for one of the build slots: half the CPUs (at least one)
// may build desired states at once, so that many hosts' rebuilds (a change
// that concerns hundreds of hosts, such as a host joining an HA network
// they all share) queue and batch instead of starving the API and each
// other.
func (b *builtStates) acquire(ctx context.Context) (release func(), err error) {
	b.slotsOnce.Do(func() { b.slots = make(chan struct{}, max(1, runtime.GOMAXPROCS(0)/2)) })
	select {
	case b.slots <- struct{}{}:
		return func() { <-b.slots }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (b *builtStates) load(host string) (builtState, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st, ok := b.hosts[host]
	return st, ok
}

// advance records that nothing committed up to rev changes the state last
// built for host, unless another build replaced it meanwhile.
func (b *builtStates) advance(host string, last builtState, rev int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if cur, ok := b.hosts[host]; ok && cur.deps == last.deps && cur.rev == last.rev && rev > cur.rev {
		cur.rev = rev
		b.hosts[host] = cur
	}
}

// unaffected reports whether no write committed after last.rev up to rev
// can change the state last built (store.Changes); a write another server
// committed is unknown, so it counts as relevant.
func (s *Server) unaffected(last builtState, rev int64) bool {
	if last.deps == nil {
		return false
	}
	changes, ok := s.db.ChangesSince(last.rev, rev)
	return ok && !last.deps.affectedBy(changes)
}

func (b *builtStates) store(host string, st builtState) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.hosts == nil {
		b.hosts = map[string]builtState{}
	}
	b.hosts[host] = st
}

// buildPause is how long after building a host's state the next build of
// it waits when changes keep coming: building is O(routers on the host), so
// rebuilding on every commit would make a stream of N creates cost O(N²) and
// starve the API. Pausing for four times the last build's cost (capped at
// 1 s) bounds each host's long-poll to a fifth of a CPU and batches the
// changes; a small state builds in about a millisecond, so the pause is then
// a few milliseconds.
func buildPause(cost time.Duration) time.Duration { return min(4*cost, time.Second) }

// waitState answers the long-poll: the host's desired state as soon as it
// differs from what the agent holds (etag), or 204 after wait.
func (s *Server) waitState(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	host, etag := q.Get("host"), q.Get("etag")
	if host == "" {
		return endpointError{http.StatusBadRequest, "HTTPBadRequest", "host is required"}
	}
	if err := actFor(r, host); err != nil {
		return err
	}
	wait := time.Duration(0)
	if ws := q.Get("wait"); ws != "" {
		f, err := strconv.ParseFloat(ws, 64)
		if err != nil || f < 0 {
			return endpointError{http.StatusBadRequest, "HTTPBadRequest", "wait must be a number of seconds"}
		}
		wait = min(time.Duration(f*float64(time.Second)), maxWait)
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	paced := false
	for {
		rev := s.db.Revision()
		if last, ok := s.built.load(host); ok && etag != "" && last.etag == etag && !paced {
			if last.rev == rev || s.unaffected(last, rev) {
				// The agent holds what was built at this revision and
				// nothing committed since concerns this host: wait without
				// building it again.
				s.built.advance(host, last, rev)
				if _, err := s.db.WaitRevision(ctx, rev); err != nil {
					if r.Context().Err() != nil {
						return nil
					}
					w.WriteHeader(http.StatusNoContent)
					return nil
				}
				continue
			}
			// Something changed: pace this host's builds (buildPause), so
			// that a stream of changes is answered in batches.
			if d := time.Until(last.at.Add(buildPause(last.cost))); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case <-ctx.Done(): // wait is over: build and answer now
					t.Stop()
					if r.Context().Err() != nil {
						return nil
					}
				}
			}
			paced = true
			continue
		}
		paced = false
		var st *agentapi.DesiredState
		var deps *stateDeps
		release, err := s.built.acquire(r.Context())
		if err != nil {
			return nil // the agent went away
		}
		rev = s.db.Revision()
		began := time.Now()
		err = s.db.Read(r.Context(), func(tx *store.Tx) error {
			a, err := s.agentByHost(tx, host)
			if err != nil {
				return err
			}
			if a == nil {
				return endpointError{http.StatusNotFound, "AgentNotFound", fmt.Sprintf("no L3 agent registered on host %s: heartbeat first", host)}
			}
			st, deps, err = buildDesiredState(tx, a)
			return err
		})
		release()
		if err != nil {
			return err
		}
		s.built.store(host, builtState{rev: rev, etag: st.ETag, cost: time.Since(began), at: time.Now(), deps: deps})
		if st.ETag != etag {
			writeJSONBody(w, http.StatusOK, st)
			return nil
		}
		if _, err := s.db.WaitRevision(ctx, rev); err != nil {
			if r.Context().Err() != nil {
				return nil
			}
			w.WriteHeader(http.StatusNoContent)
			return nil
		}
	}
}
