package agent

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/l3ha/l3ha/internal/agentapi"
)

// heartbeatLoop registers the agent and keeps it alive. It owns the
// "server unreachable"/"server reachable again" log lines: one each per
// outage, whatever the number of attempts.
func (a *agent) heartbeatLoop(ctx context.Context) {
	hb := agentapi.Heartbeat{
		Host:           a.cfg.Host,
		AgentType:      agentapi.AgentTypeL3,
		Binary:         agentapi.BinaryL3,
		Topic:          agentapi.TopicL3,
		StartedAt:      time.Now().UTC(),
		Configurations: a.configurations(),
	}
	interval := a.cfg.HeartbeatInterval
	bo := backoff{min: a.cfg.MinBackoff, max: a.cfg.MaxBackoff}
	var (
		registered bool
		down       bool
		agentID    string
	)
	for {
		hb.Configurations = a.configurations() // a state directory error comes and goes
		rctx, cancel := context.WithTimeout(ctx, min(a.cfg.RequestTimeout, max(interval, time.Second)))
		reply, err := a.client.Heartbeat(rctx, hb)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			switch {
			case !down && !registered:
				a.log.Warn("registering with the server failed; retrying", "err", err)
			case !down:
				a.log.Warn("lost contact with the server; the data plane keeps running", "err", err)
			default:
				a.log.Debug("heartbeat failed", "err", err)
			}
			down = true
			// Never wait longer than a heartbeat interval, or the server
			// would declare the agent dead as soon as it is back.
			if !sleep(ctx, bo.next(interval)) {
				return
			}
			continue
		}
		bo.reset()
		if reply.IntervalSeconds > 0 {
			interval = max(time.Duration(reply.IntervalSeconds*float64(time.Second)), 10*time.Millisecond)
		} else {
			interval = a.cfg.HeartbeatInterval
		}
		switch {
		case !registered:
			registered = true
			a.log.Info("registered with the server", "agent_id", reply.AgentID, "heartbeat_interval", interval)
			close(a.registered)
			a.rep.resendAll()
		case down:
			a.log.Info("server reachable again", "agent_id", reply.AgentID)
			a.rep.resendAll()
		case reply.AgentID != agentID:
			// The server forgot us (e.g. a fresh database): tell it everything again.
			a.log.Info("server gave a new agent id; re-reporting HA states", "agent_id", reply.AgentID, "old_agent_id", agentID)
			a.rep.resendAll()
		}
		down = false
		agentID = reply.AgentID
		if !sleep(ctx, interval) {
			return
		}
	}
}

// pollLoop long-polls the desired state and hands each new one to the applier.
func (a *agent) pollLoop(ctx context.Context) {
	select {
	case <-a.registered:
	case <-ctx.Done():
		return
	}
	bo := backoff{min: a.cfg.MinBackoff, max: a.cfg.MaxBackoff}
	fails := streak{log: a.log, what: "long-poll of the desired state"}
	etag := ""
	for {
		rctx, cancel := context.WithTimeout(ctx, a.cfg.PollWait+a.cfg.RequestTimeout)
		st, changed, err := a.client.WaitState(rctx, a.cfg.Host, etag, a.cfg.PollWait)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil && changed && st.Host != "" && st.Host != a.cfg.Host {
			err = fmt.Errorf("server sent the desired state of host %q", st.Host)
		}
		if err != nil {
			fails.failed(err)
			if !sleep(ctx, bo.next(0)) {
				return
			}
			continue
		}
		bo.reset()
		if fails.succeeded() {
			// The server may have restarted between two heartbeats: make
			// sure it has our HA states.
			a.rep.resendAll()
		}
		if !changed {
			continue
		}
		if st.ETag == etag {
			// A server that answers "changed" with what we hold would make
			// us spin; slow down.
			a.log.Debug("server sent the desired state we already hold", "etag", etag)
			if !sleep(ctx, a.cfg.MinBackoff) {
				return
			}
			continue
		}
		a.log.Debug("new desired state", "etag", st.ETag, "routers", len(st.Routers), "networks", len(st.Networks))
		etag = st.ETag
		a.app.set(st)
	}
}

// applier applies the latest desired state to the data plane: when it
// changes, after a failure (with backoff) and every ResyncInterval.
type applier struct {
	a      *agent
	wake   chan struct{}
	latest chan *agentapi.DesiredState // holds at most the latest state
}

func newApplier(a *agent) *applier {
	return &applier{a: a, wake: make(chan struct{}, 1), latest: make(chan *agentapi.DesiredState, 1)}
}

// set makes st the state to apply, replacing any not yet applied.
func (p *applier) set(st *agentapi.DesiredState) {
	for {
		select {
		case p.latest <- st:
			return
		default:
		}
		select {
		case <-p.latest:
		default:
		}
	}
}

func (p *applier) run(ctx context.Context) {
	a := p.a
	bo := backoff{min: a.cfg.MinBackoff, max: a.cfg.MaxBackoff}
	var (
		cur         *agentapi.DesiredState // the state to converge onto
		appliedETag string                 // the last state applied successfully
		failing     bool
		retry       <-chan time.Time
		resync      <-chan time.Time
	)
	for {
		select {
		case <-ctx.Done():
			return
		case cur = <-p.latest:
		case <-retry:
		case <-resync:
		}
		retry, resync = nil, nil
		err := a.dp.Apply(ctx, *cur)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			failing = true
			d := bo.next(0)
			a.log.Error("applying the desired state failed; will retry", "err", err, "etag", cur.ETag, "retry_in", d)
			retry = time.After(d)
			continue
		}
		bo.reset()
		if cur.ETag != appliedETag || failing {
			a.log.Info("applied the desired state", "etag", cur.ETag, "routers", len(cur.Routers), "networks", len(cur.Networks))
		} else {
			a.log.Debug("resynced the desired state", "etag", cur.ETag)
		}
		failing = false
		appliedETag = cur.ETag
		a.rep.keepOnly(cur)
		if a.cfg.ResyncInterval > 0 {
			resync = time.After(a.cfg.ResyncInterval)
		}
	}
}

// streak logs a run of failures of one kind of request once when it starts
// and once when it ends, not per attempt.
type streak struct {
	log   *slog.Logger
	what  string
	fails int
}

func (s *streak) failed(err error) {
	s.fails++
	if s.fails == 1 {
		s.log.Warn(s.what+" failed; retrying", "err", err)
	} else {
		s.log.Debug(s.what+" failed again", "err", err, "attempt", s.fails)
	}
}

// succeeded reports whether it ended a streak of failures.
func (s *streak) succeeded() bool {
	if s.fails == 0 {
		return false
	}
	s.log.Info(s.what+" works again", "failed_attempts", s.fails)
	s.fails = 0
	return true
}

// backoff is an exponential backoff with jitter.
type backoff struct {
	min, max time.Duration
	cur      time.Duration
}

// next returns the next delay; a positive limit caps it (below max).
func (b *backoff) next(limit time.Duration) time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	d := b.cur
	if limit > 0 && d > limit {
		d = limit
	}
	// ±20% so that agents restarted together do not retry in lockstep.
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

func (b *backoff) reset() { b.cur = 0 }

// sleep waits d or until ctx is done; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
