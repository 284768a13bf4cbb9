package dataplane

// Gateway health check, Neutron's ha_vrrp_health_check_interval: every node
// of an HA router checks, every interval, that the router's upstream gateway
// answers on its qg- device, and the VRRP engine lowers the router's
// priority on a node whose gateway is unhealthy, so that a master that
// cannot reach the outside world hands over to a backup that can. This file
// is the schedule and the decision; the probe itself is linux.GatewayProber.

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/l3ha/l3ha/internal/linux"
)

// Fall and rise follow keepalived's vrrp_script: fall consecutive failed
// checks make the gateway unhealthy, rise consecutive good ones healthy
// again, and any result against the streak restarts the count. Neutron's
// keepalived uses fall 2, rise 2 with a ping; a single ARP probe per
// interval is less redundant than that (gateways' control planes rate-limit
// ARP, and one probe lost to a burst of a failover's gratuitous ARP must not
// move a master), so fall is 3: two lost probes in a row are tolerated and a
// real outage is still seen within three intervals. Rise stays 2, so that a
// flapping gateway does not bounce the priority back on a single reply.
const (
	DefaultHealthFall = 3
	DefaultHealthRise = 2
)

// maxProbeTimeout bounds a probe's wait for the gateway, like the 1 s
// deadline of Neutron's `ping -c 1 -w 1`: a gateway slower than that to
// answer ARP is as good as down for the routers behind it.
const maxProbeTimeout = time.Second

// GatewayHealth is the health of one router's gateway, derived from the
// results of its checks. It starts healthy: a router is not penalised
// before it has been checked. The zero value uses the default thresholds.
type GatewayHealth struct {
	fall, rise int
	unhealthy  bool
	streak     int // consecutive results contrary to the current state
}

// NewGatewayHealth returns a healthy tracker that turns unhealthy after fall
// consecutive failures and healthy again after rise consecutive successes;
// values below 1 mean the defaults.
func NewGatewayHealth(fall, rise int) GatewayHealth {
	return GatewayHealth{fall: fall, rise: rise}
}

// Healthy reports the current state.
func (h *GatewayHealth) Healthy() bool { return !h.unhealthy }

// Observe records one check and reports whether it changed the state.
func (h *GatewayHealth) Observe(ok bool) (changed bool) {
	if ok != h.unhealthy { // agrees with the state: the streak against it ends
		h.streak = 0
		return false
	}
	h.streak++
	need := orDefault(h.fall, DefaultHealthFall)
	if h.unhealthy {
		need = orDefault(h.rise, DefaultHealthRise)
	}
	if h.streak < need {
		return false
	}
	h.unhealthy = !h.unhealthy
	h.streak = 0
	return true
}

func orDefault(n, def int) int {
	if n < 1 {
		return def
	}
	return n
}

// GatewayProbe checks one router's gateway from one device; the real one is
// linux.GatewayProber. It is long-lived: the checker opens one per router
// and closes it when the router is no longer checked.
type GatewayProbe interface {
	// Probe asks once whether gateway answers within timeout: true if it
	// did, false with a nil error if it did not, an error if the check
	// could not be made. Both failures count against the gateway.
	Probe(ctx context.Context, gateway netip.Addr, timeout time.Duration) (bool, error)
	Close() error
}

// GatewayTarget is what is checked for one router: its gateway, asked from
// its qg- device in its namespace.
type GatewayTarget struct {
	Namespace string
	Device    string
	Gateway   netip.Addr
}

// checkable reports whether t can be checked. Only IPv4 gateways are: the
// probe is ARP, and an IPv6-only gateway is left alone rather than reported
// down (which would move its master for nothing).
func (t GatewayTarget) checkable() bool {
	gw := t.Gateway.Unmap()
	return t.Device != "" && gw.Is4() && !gw.IsUnspecified()
}

// GatewayTargets returns the gateway of every HA router of p that has one
// (its IPv4 default route through a qg- device), by router id: what
// HealthChecker.Set takes. Legacy routers have no VRRP to step down.
func GatewayTargets(p Plan) map[string]GatewayTarget {
	out := make(map[string]GatewayTarget)
	defaultRoute := netip.MustParsePrefix("0.0.0.0/0")
	for _, r := range p.Routers {
		if r.HA == nil {
			continue
		}
		for _, rt := range r.Routes {
			if rt.Dst == defaultRoute && rt.Gateway.IsValid() && strings.HasPrefix(rt.Dev, linux.PrefixGateway) {
				out[r.ID] = GatewayTarget{Namespace: r.Namespace, Device: rt.Dev, Gateway: rt.Gateway}
				break
			}
		}
	}
	return out
}

// HealthCheckConfig configures a HealthChecker.
type HealthCheckConfig struct {
	// Interval between two checks of a router (Neutron's
	// ha_vrrp_health_check_interval, in seconds there); 0 turns the check
	// off.
	Interval time.Duration
	// Fall and Rise: see GatewayHealth; 0 for the defaults.
	Fall, Rise int
	// Timeout of one probe; 0: the interval, at most one second.
	Timeout time.Duration
	// Open returns the probe of router routerID's device dev in namespace
	// ns. The router's id is there for the probe's source MAC, which must
	// be the node's own for that router, not the router's (see
	// linux.ProbeMAC):
	//
	//	func(routerID, ns, dev string) GatewayProbe {
	//		return linux.NewGatewayProber(ns, dev, linux.ProbeMAC(host, routerID))
	//	}
	Open func(routerID, ns, dev string) GatewayProbe
	// OnChange is called, one call at a time and in order, whenever a
	// router's gateway turns unhealthy or healthy again, and with healthy
	// true when a router that was unhealthy stops being checked (removed,
	// gateway gone or changed): a router that is not checked is not
	// penalised. It is never called under the checker's lock, so it may
	// call the checker.
	OnChange func(routerID string, healthy bool)
	Logger   *slog.Logger
}

// HealthChecker checks the gateways of a set of routers, each every
// interval, and reports their changes of health. The set follows the
// agent's desired state through Set. Each router's checks are offset by a
// fixed phase within the interval (from its id), so that a node with many
// routers spreads its probes instead of sending them all at once.
type HealthChecker struct {
	cfg HealthCheckConfig
	log *slog.Logger

	mu      sync.Mutex
	targets map[string]GatewayTarget // what Set asked for, checkable only
	checks  map[string]*gatewayCheck // running, while Run runs
	runCtx  context.Context          // Run's; nil when Run is not running
	started bool
	wg      sync.WaitGroup
	events  []healthEvent // to pass to OnChange, in order
	wake    chan struct{} // one token: events are waiting
}

// gatewayCheck is one router's running check. Its counters belong to its
// target: a new target is a new gatewayCheck, with fresh counters.
type gatewayCheck struct {
	id     string
	target GatewayTarget
	health GatewayHealth
	cancel context.CancelFunc
}

type healthEvent struct {
	routerID string
	healthy  bool
}

// NewHealthChecker returns a checker for cfg. Start it with Run.
func NewHealthChecker(cfg HealthCheckConfig) (*HealthChecker, error) {
	if cfg.Interval < 0 || cfg.Timeout < 0 || cfg.Fall < 0 || cfg.Rise < 0 {
		return nil, fmt.Errorf("gateway health check: negative interval %v, timeout %v, fall %d or rise %d",
			cfg.Interval, cfg.Timeout, cfg.Fall, cfg.Rise)
	}
	if cfg.Interval > 0 && cfg.Open == nil {
		return nil, errors.New("gateway health check: no probe (Open is nil)")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = min(cfg.Interval, maxProbeTimeout)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &HealthChecker{
		cfg:     cfg,
		log:     log,
		targets: map[string]GatewayTarget{},
		checks:  map[string]*gatewayCheck{},
		wake:    make(chan struct{}, 1),
	}, nil
}

// Enabled reports whether the checker checks anything at all (a non-zero
// interval).
func (c *HealthChecker) Enabled() bool { return c.cfg.Interval > 0 }

// Set replaces the routers to check: router id → target. Routers whose
// target has no IPv4 gateway are not checked. A router whose target changed
// starts afresh (healthy, counters at zero); one no longer in the set stops
// being checked. It may be called before Run, and as often as the desired
// state changes.
func (c *HealthChecker) Set(targets map[string]GatewayTarget) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.targets = make(map[string]GatewayTarget, len(targets))
	for id, t := range targets {
		if t.checkable() {
			t.Gateway = t.Gateway.Unmap()
			c.targets[id] = t
		}
	}
	c.reconcileLocked()
}

// Healthy reports whether routerID's gateway is healthy; a router that is
// not being checked is.
func (c *HealthChecker) Healthy(routerID string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if chk, ok := c.checks[routerID]; ok {
		return chk.health.Healthy()
	}
	return true
}

// Run checks the routers until ctx ends, then stops every check, closes the
// probes and returns once the last OnChange call has returned. With the
// check off (interval 0) it returns at once. Run runs once.
func (c *HealthChecker) Run(ctx context.Context) error {
	if !c.Enabled() {
		return nil
	}
	c.mu.Lock()
	if c.started {
		c.mu.Unlock()
		return errors.New("gateway health check: Run called twice")
	}
	c.started = true
	c.runCtx = ctx
	c.reconcileLocked()
	c.mu.Unlock()
	c.log.Info("gateway health check started", "interval", c.cfg.Interval, "timeout", c.cfg.Timeout,
		"fall", orDefault(c.cfg.Fall, DefaultHealthFall), "rise", orDefault(c.cfg.Rise, DefaultHealthRise))

	for ctx.Err() == nil {
		select {
		case <-c.wake:
			c.deliver()
		case <-ctx.Done():
		}
	}
	c.mu.Lock()
	c.runCtx = nil
	for id, chk := range c.checks {
		chk.cancel()
		delete(c.checks, id)
	}
	c.mu.Unlock()
	c.wg.Wait()
	c.deliver()
	return nil
}

// deliver passes the waiting events to OnChange, outside the lock.
func (c *HealthChecker) deliver() {
	c.mu.Lock()
	evs := c.events
	c.events = nil
	c.mu.Unlock()
	if c.cfg.OnChange == nil {
		return
	}
	for _, e := range evs {
		c.cfg.OnChange(e.routerID, e.healthy)
	}
}

func (c *HealthChecker) notifyLocked(e healthEvent) {
	c.events = append(c.events, e)
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// reconcileLocked makes the running checks match the targets: stops those
// removed or changed, starts those missing. Nothing runs outside Run.
func (c *HealthChecker) reconcileLocked() {
	if c.runCtx == nil {
		return
	}
	for id, chk := range c.checks {
		if t, ok := c.targets[id]; ok && t == chk.target {
			continue
		}
		chk.cancel()
		delete(c.checks, id)
		if !chk.health.Healthy() {
			c.logger(chk).Info("gateway no longer checked: router no longer penalised")
			c.notifyLocked(healthEvent{id, true})
		}
	}
	for _, id := range slices.Sorted(maps.Keys(c.targets)) {
		if _, ok := c.checks[id]; ok {
			continue
		}
		ctx, cancel := context.WithCancel(c.runCtx)
		chk := &gatewayCheck{id: id, target: c.targets[id], health: NewGatewayHealth(c.cfg.Fall, c.cfg.Rise), cancel: cancel}
		c.checks[id] = chk
		c.wg.Go(func() { c.loop(ctx, chk) })
	}
}

// loop checks one router every interval, at its phase, until ctx ends.
func (c *HealthChecker) loop(ctx context.Context, chk *gatewayCheck) {
	probe := c.cfg.Open(chk.id, chk.target.Namespace, chk.target.Device)
	defer func() {
		if err := probe.Close(); err != nil {
			c.logger(chk).Debug("closing gateway probe", "error", err)
		}
	}()
	first := time.NewTimer(phase(chk.id, c.cfg.Interval))
	defer first.Stop()
	select {
	case <-ctx.Done():
		return
	case <-first.C:
	}
	// A ticker drops the ticks a slow probe missed instead of bunching
	// probes up after it.
	tick := time.NewTicker(c.cfg.Interval)
	defer tick.Stop()
	for {
		ok, err := probe.Probe(ctx, chk.target.Gateway, c.cfg.Timeout)
		if ctx.Err() != nil {
			return
		}
		c.observe(chk, ok && err == nil, err)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// observe records one result of chk, unless chk has been replaced meanwhile.
func (c *HealthChecker) observe(chk *gatewayCheck, ok bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.checks[chk.id] != chk {
		return
	}
	log := c.logger(chk)
	if err != nil {
		log.Debug("gateway check failed", "error", err)
	}
	if !chk.health.Observe(ok) {
		return
	}
	if chk.health.Healthy() {
		log.Info("gateway healthy again", "rise", orDefault(c.cfg.Rise, DefaultHealthRise))
	} else {
		log.Warn("gateway unhealthy", "fall", orDefault(c.cfg.Fall, DefaultHealthFall), "error", err)
	}
	c.notifyLocked(healthEvent{chk.id, chk.health.Healthy()})
}

func (c *HealthChecker) logger(chk *gatewayCheck) *slog.Logger {
	return c.log.With("router_id", chk.id, "gateway", chk.target.Gateway, "device", chk.target.Device,
		"namespace", chk.target.Namespace)
}

// phase is the fixed offset of a router's checks within the interval:
// stable across restarts of the agent and the same on every node, spread
// over the interval by a hash of the router id.
func phase(routerID string, interval time.Duration) time.Duration {
	if interval <= 0 {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte(routerID))
	return time.Duration(h.Sum64() % uint64(interval))
}
