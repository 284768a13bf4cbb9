// Package agent is the l3ha node agent: it registers with the server,
// heartbeats, long-polls its desired state and converges the data plane onto
// it, and reports HA transitions to the server in batches.
//
// The agent never stops the data plane because the server is unreachable: VRRP
// keeps failing routers over on its own, and the agent keeps every transition
// until the server takes it.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/l3ha/l3ha/internal/agentapi"
)

// Config configures Run. Zero durations take the defaults named beside them.
type Config struct {
	// Host is the name the agent registers under; the server binds routers to it.
	Host string
	// Servers are the base URLs of the servers' agent endpoints, e.g.
	// https://10.0.0.1:9696: the agent talks to one and moves to the next
	// when it fails (several servers may share one PostgreSQL).
	Servers []string
	// AgentToken is this host's agent credential.
	AgentToken string
	// Server, when set, is the control plane instead of the l3ha servers
	// of Servers (which, with AgentToken and HTTPClient, are then unused):
	// `l3ha neutron-l3-agent` serves neutron-server through it.
	Server Server
	// StateDir is where the agent keeps its files; every HA transition is
	// written to <StateDir>/ha_confs/<router_id>/state ("master" or "backup",
	// as Neutron does). Empty: no files are written.
	StateDir string
	// StateFileMaster is the word a state file holds for a master:
	// "master" (the default, what Neutron wrote until Yoga) or "primary"
	// (Neutron's word since Zed, which `l3ha neutron-l3-agent` writes).
	StateFileMaster string
	// AgentMode is legacy (default), dvr_snat or dvr.
	AgentMode string
	// LocalIP is the node's VXLAN underlay address, sent as the "local_ip"
	// configuration.
	LocalIP string
	// Configurations are extra entries of the agent's "configurations";
	// agent_mode and local_ip are set from the fields above.
	Configurations map[string]any

	// ReportBatchDelay is how long HA transitions are collected after the
	// first one before they are sent in one report. Default 200ms.
	ReportBatchDelay time.Duration
	// ReassertInterval is how often the current HA state of every router is
	// re-asserted to the server in one report (agentapi.HAStateReport.Full),
	// so that the ha_state the API shows is never stale for longer, whatever
	// was lost or superseded. Default 10s (±10% jitter); negative disables.
	ReassertInterval time.Duration
	// PollWait is how long the server may hold a desired-state long-poll.
	// Default 30s.
	PollWait time.Duration
	// ResyncInterval is how often the last desired state is applied again
	// although it did not change, to repair drift. Default 60s; negative
	// disables.
	ResyncInterval time.Duration
	// HeartbeatInterval is used until the server says otherwise (and when it
	// says 0). Default 10s.
	HeartbeatInterval time.Duration
	// RequestTimeout bounds heartbeats and reports (the long-poll gets
	// PollWait more). Default 15s.
	RequestTimeout time.Duration
	// MinBackoff and MaxBackoff bound the exponential backoff after failures.
	// Defaults 500ms and 30s. Heartbeats never back off beyond the heartbeat
	// interval.
	MinBackoff, MaxBackoff time.Duration
	// TransitionRetry caps the backoff of a report that carries
	// transitions: until it lands the API shows a master that is gone, so
	// a server that comes back must hear it within about this long.
	// Re-assertions alone back off to MaxBackoff. Default 1s.
	TransitionRetry time.Duration
	// HTTPClient is used for the agent endpoint; nil means a client without a
	// timeout (requests get deadlines from RequestTimeout and PollWait).
	HTTPClient *http.Client
	// Metrics receives the agent's metrics (HA transitions by state); nil:
	// none are kept.
	Metrics prometheus.Registerer
}

// Default values of Config fields.
const (
	DefaultReportBatchDelay  = 200 * time.Millisecond
	DefaultReassertInterval  = 10 * time.Second
	DefaultPollWait          = 30 * time.Second
	DefaultResyncInterval    = 60 * time.Second
	DefaultHeartbeatInterval = 10 * time.Second
	DefaultRequestTimeout    = 15 * time.Second
	DefaultMinBackoff        = 500 * time.Millisecond
	DefaultMaxBackoff        = 30 * time.Second
	DefaultTransitionRetry   = time.Second
)

// Transition is an HA state change of one router on this host, seen by the
// data plane.
type Transition struct {
	RouterID string
	// State is agentapi.HAActive or agentapi.HAStandby.
	State string
	// Reason is why the router entered State (agentapi.Reason*), "" when
	// the data plane cannot tell.
	Reason string
}

// ReportFunc receives the data plane's HA transitions. It is safe for
// concurrent use, never blocks for long and never calls back into the data
// plane, so a data plane may call it while holding its own locks (which keeps
// its reports in order).
type ReportFunc func(Transition)

// Dataplane is what the agent converges onto the desired state: the fake one
// for tests and simulations, the Linux one (namespaces, bridges, VXLAN,
// keepalived or native VRRP) on real nodes.
type Dataplane interface {
	// Start is called once, before any Apply. The data plane adopts what the
	// node already runs and reports, through report, the current HA state of
	// every router it adopted; from then on it reports every HA transition
	// (including the first state of a router that Apply creates). Anything it
	// starts runs until ctx is cancelled. An error is fatal to the agent.
	Start(ctx context.Context, report ReportFunc) error
	// Apply converges the node onto state, the full desired state of the
	// host: routers and networks not in it are removed. It is called each time
	// the state changes, again periodically to repair drift, and again after
	// it failed; it must be idempotent. Calls are never concurrent.
	Apply(ctx context.Context, state agentapi.DesiredState) error
}

// Run runs the agent until ctx is cancelled: it starts dp, then heartbeats
// (the first heartbeat registers the agent), long-polls the desired state
// and applies it to dp, and reports dp's HA transitions in batches. When the
// server is unreachable it retries with backoff and dp keeps running; once the
// server is reachable again (and once at start) the agent reports the current
// state of every router it knows. Run returns nil when ctx is cancelled, or an
// error if cfg is invalid or dp fails to start.
func Run(ctx context.Context, cfg Config, dp Dataplane, logger *slog.Logger) error {
	if err := cfg.setDefaults(); err != nil {
		return err
	}
	if dp == nil {
		return errors.New("agent: no data plane")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	log := logger.With("host", cfg.Host)
	a := &agent{
		cfg:        cfg,
		dp:         dp,
		log:        log,
		client:     cfg.Server,
		registered: make(chan struct{}),
	}
	if a.client == nil {
		a.client = agentapi.NewClient(cfg.Servers, cfg.AgentToken, cfg.HTTPClient, log)
	}
	a.transitions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "l3ha_agent_ha_transitions_total",
		Help: "HA state changes of this node's routers, by the state entered (active/standby).",
	}, []string{"state"})
	if cfg.Metrics != nil {
		if err := cfg.Metrics.Register(a.transitions); err != nil {
			return fmt.Errorf("agent: registering metrics: %w", err)
		}
	}
	a.rep = newReporter(a)
	a.app = newApplier(a)

	if err := dp.Start(ctx, a.rep.report); err != nil {
		return fmt.Errorf("agent: starting data plane: %w", err)
	}
	log.Info("agent started", "servers", strings.Join(cfg.Servers, " "), "agent_mode", cfg.AgentMode)

	var wg sync.WaitGroup
	wg.Go(func() { a.heartbeatLoop(ctx) })
	wg.Go(func() { a.pollLoop(ctx) })
	wg.Go(func() { a.app.run(ctx) })
	wg.Go(func() { a.rep.run(ctx) })
	wg.Wait()
	log.Info("agent stopped")
	return nil
}

func (c *Config) setDefaults() error {
	if c.Host == "" {
		return errors.New("agent: no host name")
	}
	if c.Server == nil && len(c.Servers) == 0 {
		return errors.New("agent: no server URL")
	}
	for _, u := range c.Servers {
		if u == "" {
			return errors.New("agent: an empty server URL")
		}
	}
	switch c.AgentMode {
	case "":
		c.AgentMode = agentapi.ModeLegacy
	case agentapi.ModeLegacy, agentapi.ModeDVRSNAT, agentapi.ModeDVR:
	default:
		return fmt.Errorf("agent: unknown agent mode %q (want %s, %s or %s)", c.AgentMode, agentapi.ModeLegacy, agentapi.ModeDVRSNAT, agentapi.ModeDVR)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.StateFileMaster == "" {
		c.StateFileMaster = "master"
	}
	def(&c.ReportBatchDelay, DefaultReportBatchDelay)
	def(&c.ReassertInterval, DefaultReassertInterval)
	def(&c.PollWait, DefaultPollWait)
	def(&c.ResyncInterval, DefaultResyncInterval)
	def(&c.HeartbeatInterval, DefaultHeartbeatInterval)
	def(&c.RequestTimeout, DefaultRequestTimeout)
	def(&c.MinBackoff, DefaultMinBackoff)
	def(&c.MaxBackoff, DefaultMaxBackoff)
	def(&c.TransitionRetry, DefaultTransitionRetry)
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = c.MinBackoff
	}
	return nil
}

// Server is the control plane an agent serves: l3ha's servers through the
// agent endpoint (agentapi.Client), or neutron-server through
// oslo.messaging (internal/neutronagent).
type Server interface {
	// Heartbeat registers the agent (first call) or keeps it alive.
	Heartbeat(ctx context.Context, hb agentapi.Heartbeat) (agentapi.HeartbeatReply, error)
	// WaitState returns the host's desired state when it differs from
	// etag, or changed=false after wait.
	WaitState(ctx context.Context, host, etag string, wait time.Duration) (st *agentapi.DesiredState, changed bool, err error)
	// ReportHAStates sends a batch of HA states.
	ReportHAStates(ctx context.Context, r agentapi.HAStateReport) error
}

// agent is the state shared by Run's loops.
type agent struct {
	cfg    Config
	dp     Dataplane
	log    *slog.Logger
	client Server
	rep    *reporter
	app    *applier
	// transitions counts HA transitions by the state entered.
	transitions *prometheus.CounterVec

	// registered is closed after the first successful heartbeat.
	registered chan struct{}

	// stateDirErr is the last failure to write the state directory ("" when
	// the last write worked), reported in heartbeats.
	stateDirMu  sync.Mutex
	stateDirErr string
}

// ConfigStateDirError is the "configurations" entry that carries the
// agent's failure to write its state directory (disk full, read-only),
// while it lasts: the data plane keeps running, but a restarted agent
// would not find what it must adopt.
const ConfigStateDirError = "state_dir_error"

func (a *agent) setStateDirError(err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	a.stateDirMu.Lock()
	a.stateDirErr = msg
	a.stateDirMu.Unlock()
}

// configurations is the agent's "configurations" as sent in heartbeats.
func (a *agent) configurations() map[string]any {
	m := make(map[string]any, len(a.cfg.Configurations)+2)
	maps.Copy(m, a.cfg.Configurations)
	m["agent_mode"] = a.cfg.AgentMode
	if a.cfg.LocalIP != "" {
		m[agentapi.ConfigLocalIP] = a.cfg.LocalIP
	}
	a.stateDirMu.Lock()
	if a.stateDirErr != "" {
		m[ConfigStateDirError] = a.stateDirErr
	}
	a.stateDirMu.Unlock()
	return m
}
