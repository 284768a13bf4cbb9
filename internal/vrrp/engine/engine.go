package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/l3ha/l3ha/internal/linux"
	"github.com/l3ha/l3ha/internal/vrrp"
)

// Defaults of Options fields.
const (
	DefaultVersion        = 2
	DefaultAdvertInterval = 2 * time.Second // Neutron's ha_vrrp_advert_int
	DefaultPriority       = 50              // Neutron's keepalived priority
	DefaultGARPDelay      = 60 * time.Second
	DefaultGARPRepeat     = 5 // keepalived's garp_master_repeat
	DefaultWorkers        = 4
	// DefaultHandoverGrace is Options.HandoverGrace's default: time for the
	// new master to install the addresses and send gratuitous ARP, with
	// margin for a loaded node.
	DefaultHandoverGrace = 200 * time.Millisecond
	// DefaultRestartAdvertInterval is Options.RestartAdvertInterval's
	// default: backups wait 3.8 s for a restarting agent (0.38 s at 0.1 s
	// adverts without it), and a node that dies while its agent restarts
	// fails over that much later.
	DefaultRestartAdvertInterval = time.Second
	// DefaultQueueLen bounds the packets a router may have waiting for the
	// loop; a flood beyond it is dropped as ReasonQueueFull.
	DefaultQueueLen = 64
)

// Drop reasons of the adapter, besides the vrrp package's.
const (
	ReasonOversized   vrrp.Reason = "oversized"     // datagram larger than any VRRP advert can be
	ReasonBadIPHeader vrrp.Reason = "bad_ip_header" // IP header unreadable or not IPv4/VRRP
	ReasonQueueFull   vrrp.Reason = "queue_full"    // the router's queue to the loop was full
)

// ErrNotRunning is returned by the methods that need the loop before Start
// or after Shutdown.
var ErrNotRunning = errors.New("vrrp engine: not running")

// Options configures an Engine. The VRRP settings are the node's, the same
// for all its routers, like the keepalived driver's.
type Options struct {
	// Version is 2 (RFC 3768, keepalived's default) or 3 (RFC 5798); 0
	// means 2.
	Version int
	// AdvertInterval: v2 whole seconds, v3 whole centiseconds; 0 means 2s.
	AdvertInterval time.Duration
	// Pace, with v2, is l3ha's own advert interval between l3ha nodes
	// (vrrp.Config.Pace): masters advertise this often, adverts still say
	// AdvertInterval, and backups learn from the arrivals whether their
	// master keeps it. Zero: none.
	Pace time.Duration
	// Password is the v2 PASS authentication password; empty: none.
	Password string
	// Priority is every router's priority (1..254); 0 means 50. Equal
	// priorities elect the highest ha- address.
	Priority uint8
	// Preempt drops nopreempt (Neutron never preempts).
	Preempt bool
	// HealthPreempt lets a backup take over from a master that advertises a
	// lower priority than its own: one whose health check failed
	// (SetHealthy), when every node has the same Priority
	// (vrrp.Config.HealthPreempt). Set it with health checks.
	HealthPreempt bool
	// GARPDelay is keepalived's garp_master_delay: a second round of
	// gratuitous ARP this long after becoming master. 0 means 60s, as
	// Neutron writes it; negative: no second round.
	GARPDelay time.Duration
	// GARPRepeat is how many gratuitous ARPs each address gets per round
	// (keepalived's garp_master_repeat); 0 means 5.
	GARPRepeat int
	// RouteProtocol is the rtnetlink protocol of the routes the engine
	// installs; 0 means linux.RouteProtocolVRRP.
	RouteProtocol int
	// StateDir, if set, is where the engine remembers its routers
	// (<StateDir>/ha_confs/<router_id>/vrrp.json) so that Start adopts them
	// before the first Ensure.
	StateDir string
	// Workers is the number of goroutines applying addresses and routes; 0
	// means 4.
	Workers int
	// QueueLen bounds each router's queue of received packets; 0 means 64.
	QueueLen int
	// HandoverGrace is how long a master resigning in a graceful Shutdown
	// keeps its addresses after it heard the new master's advert, so that
	// traffic flows through it until the new master holds them (see
	// handover); 0 means DefaultHandoverGrace, negative none.
	HandoverGrace time.Duration
	// RestartAdvertInterval is the interval a VRRPv3 master announces in the
	// last advert it sends when it stops for a restart: backups adopt the
	// master's interval (RFC 5798 §6.4.2), so they wait three of these
	// before taking over, time for the next engine to adopt the master
	// (its first advert sets the interval back); 0 means
	// DefaultRestartAdvertInterval, negative: the configured interval.
	RestartAdvertInterval time.Duration
	// ResignOnCancel makes the engine resign its masters when the context
	// given to Start is cancelled (a graceful stop). By default a cancelled
	// context stops it for a restart: masters keep their addresses.
	ResignOnCancel bool
	Logger         *slog.Logger
	// Registerer receives the engine's Prometheus metrics; nil: none.
	Registerer prometheus.Registerer
}

func (o *Options) setDefaults() error {
	if o.Version == 0 {
		o.Version = DefaultVersion
	}
	if o.AdvertInterval == 0 {
		o.AdvertInterval = DefaultAdvertInterval
	}
	if o.Priority == 0 {
		o.Priority = DefaultPriority
	}
	if o.Priority == vrrp.PriorityOwner {
		return errors.New("vrrp engine: priority 255 is the address owner's; routers share their addresses")
	}
	if o.GARPDelay == 0 {
		o.GARPDelay = DefaultGARPDelay
	}
	if o.GARPDelay < 0 {
		o.GARPDelay = 0
	}
	if o.GARPRepeat <= 0 {
		o.GARPRepeat = DefaultGARPRepeat
	}
	if o.RouteProtocol == 0 {
		o.RouteProtocol = linux.RouteProtocolVRRP
	}
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.HandoverGrace == 0 {
		o.HandoverGrace = DefaultHandoverGrace
	}
	if o.HandoverGrace < 0 {
		o.HandoverGrace = 0
	}
	if o.RestartAdvertInterval == 0 {
		o.RestartAdvertInterval = DefaultRestartAdvertInterval
	}
	if o.RestartAdvertInterval < o.AdvertInterval || o.Version != 3 {
		o.RestartAdvertInterval = o.AdvertInterval // v2 backups cannot learn an interval
	}
	if o.RestartAdvertInterval > 40950*time.Millisecond {
		o.RestartAdvertInterval = 40950 * time.Millisecond // v3's 12-bit centiseconds
	}
	if o.QueueLen <= 0 {
		o.QueueLen = DefaultQueueLen
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	// Let the state machine judge version, interval and password.
	_, err := vrrp.New(o.machineConfig(Router{VRID: 1, Address: netip.MustParsePrefix("192.0.2.1/24"), VIP: netip.MustParsePrefix("192.0.2.2/24")}))
	return err
}

// Router is one HA router as the engine runs it.
type Router struct {
	ID        string `json:"id"`
	Namespace string `json:"namespace"`
	VRID      uint8  `json:"vrid"`
	// Device is the ha- device: VRRP goes through it and the VIP lives on it.
	Device string `json:"device"`
	// Address is this node's own address on Device: the source of its
	// adverts and the tie-breaker between equal priorities. It is not the
	// engine's to add or remove.
	Address netip.Prefix `json:"address"`
	// VIP is the advertised virtual address (keepalived's
	// virtual_ipaddress), on Device while master.
	VIP netip.Prefix `json:"vip"`
	// Excluded are the addresses only the master holds but does not
	// advertise (virtual_ipaddress_excluded). The engine owns the addresses
	// of these devices: a master's carry exactly these, a backup's none
	// (IPv6 link-local ones aside).
	Excluded []Address `json:"excluded,omitempty"`
	// Routes are the routes only the master holds (virtual_routes).
	Routes []Route `json:"routes,omitempty"`
	// StartDelay postpones a new (not adopted) router's first possible
	// election: it starts as backup and hears adverts, but its first
	// Master_Down timer runs this much longer (keepalived's
	// vrrp_startup_delay). Not part of the group's configuration.
	StartDelay time.Duration `json:"start_delay,omitempty"`
}

// Address is an address on a device of the router's namespace.
type Address struct {
	Dev    string       `json:"dev"`
	Prefix netip.Prefix `json:"prefix"`
}

// Route is a route in the router's namespace.
type Route struct {
	Dst     netip.Prefix `json:"dst"`
	Gateway netip.Addr   `json:"gateway,omitzero"`
	Dev     string       `json:"dev,omitempty"`
}

func (r *Router) validate() error {
	switch {
	case r.ID == "" || r.ID == "." || r.ID == ".." || containsAny(r.ID, "/\\\x00"):
		return fmt.Errorf("vrrp engine: invalid router id %q", r.ID)
	case r.Namespace == "":
		return fmt.Errorf("vrrp engine: router %s: no namespace", r.ID)
	case r.Device == "":
		return fmt.Errorf("vrrp engine: router %s: no ha- device", r.ID)
	case r.VRID == 0:
		return fmt.Errorf("vrrp engine: router %s: VRID 0", r.ID)
	case !r.Address.IsValid() || !r.Address.Addr().Is4():
		return fmt.Errorf("vrrp engine: router %s: ha- address %v is not IPv4", r.ID, r.Address)
	case !r.VIP.IsValid() || !r.VIP.Addr().Is4():
		return fmt.Errorf("vrrp engine: router %s: VIP %v is not IPv4", r.ID, r.VIP)
	case r.VIP.Addr() == r.Address.Addr():
		return fmt.Errorf("vrrp engine: router %s: VIP %v is the ha- address", r.ID, r.VIP)
	}
	for _, a := range r.Excluded {
		if a.Dev == "" || !a.Prefix.IsValid() {
			return fmt.Errorf("vrrp engine: router %s: bad excluded address %v dev %q", r.ID, a.Prefix, a.Dev)
		}
		if a.Dev == r.Device && (a.Prefix.Addr() == r.Address.Addr()) {
			return fmt.Errorf("vrrp engine: router %s: excluded address %v is the ha- address", r.ID, a.Prefix)
		}
	}
	for _, rt := range r.Routes {
		if !rt.Dst.IsValid() || (!rt.Gateway.IsValid() && rt.Dev == "") {
			return fmt.Errorf("vrrp engine: router %s: bad route %v via %v dev %q", r.ID, rt.Dst, rt.Gateway, rt.Dev)
		}
	}
	return nil
}

func containsAny(s, chars string) bool {
	for _, c := range chars {
		for _, d := range s {
			if c == d {
				return true
			}
		}
	}
	return false
}

func (r Router) clone() Router {
	r.Excluded = slices.Clone(r.Excluded)
	r.Routes = slices.Clone(r.Routes)
	return r
}

func (r Router) equal(o Router) bool {
	return r.ID == o.ID && r.Namespace == o.Namespace && r.VRID == o.VRID && r.Device == o.Device &&
		r.Address == o.Address && r.VIP == o.VIP && slices.Equal(r.Excluded, o.Excluded) && slices.Equal(r.Routes, o.Routes)
}

// machineConfig is the vrrp.Config of a router under the engine's options.
func (o *Options) machineConfig(r Router) vrrp.Config {
	c := vrrp.Config{
		Version:        o.Version,
		VRID:           r.VRID,
		Priority:       o.Priority,
		AdvertInterval: o.AdvertInterval,
		Pace:           o.Pace,
		Preempt:        o.Preempt,
		HealthPreempt:  o.HealthPreempt,
		Primary:        r.Address.Addr(),
		Addresses:      []netip.Addr{r.VIP.Addr()},
		GARPDelay:      o.GARPDelay,
		// keepalived answers a lower-priority master at once, which heals
		// a split brain within one round trip; do as the peer does.
		AnswerLowerPriority: true,
	}
	if o.Version == 2 {
		c.Password = o.Password
	}
	return c
}

// sendInterval is how often a master advertises.
func (o *Options) sendInterval() time.Duration {
	if o.Pace > 0 {
		return o.Pace
	}
	return o.AdvertInterval
}

// Report receives the state of a router: vrrp.Master or vrrp.Backup, first
// the state it starts in (adopted or not), then every change, each once the
// data plane matches it, with why the router entered it: the machine's
// vrrp.Cause (a backup that elects itself without having heard a master
// since it started says vrrp.CauseStartup rather than
// vrrp.CauseMasterDown), or CauseFault. When changes coalesce (a flap over
// before the data plane followed it) the cause is the last one's. Calls for
// one router are sequential.
type Report func(routerID string, state vrrp.State, cause vrrp.Cause)

// CauseFault is the cause of a router's stop (reported as backup) when its
// ha- device went down (see enterFault).
const CauseFault vrrp.Cause = "fault"

// Status is a router as the engine sees it.
type Status struct {
	Router  Router
	Machine vrrp.Status
	// Drops counts every packet dropped for this router, by reason: the
	// receive side's (bad TTL, checksum, other VRID, ...) and the machine's.
	Drops map[vrrp.Reason]uint64
	// Received counts the adverts the machine accepted; Sent the adverts
	// sent; SendErrors the adverts the kernel refused.
	Received, Sent, SendErrors uint64
	// Adopted is true if the router was adopted as master.
	Adopted bool
	// Fault is true while the router's ha- device is down: it holds no
	// address and does not run VRRP until the device is up again (then it
	// starts as backup), as keepalived's FAULT state.
	Fault bool
}

// Engine runs VRRP for all the HA routers of a node. Its methods are safe for
// concurrent use.
type Engine struct {
	opts    Options
	log     *slog.Logger
	metrics *metrics
	apply   *applier
	garp    garpSender

	reqs   chan func()
	rxWake chan struct{} // cap 1: some router has packets queued

	readyMu sync.Mutex
	ready   []*rxQueue

	// opMu serialises Ensure, Remove and Shutdown (they prepare sockets
	// outside the loop).
	opMu sync.Mutex

	mu      sync.Mutex
	started bool
	stopped bool
	report  Report
	// reported is the state last reported per router.
	reported map[string]vrrp.State
	done     chan struct{} // closed when the loop has exited

	// Owned by the loop.
	routers map[string]*router
	timers  timerHeap
	// handovers counts the resigning masters a graceful Shutdown waits for.
	handovers int
}

// New returns an engine; call Start to run it.
func New(opts Options) (*Engine, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	e := &Engine{
		opts:     opts,
		log:      opts.Logger.With("ha_driver", "native"),
		reqs:     make(chan func()),
		rxWake:   make(chan struct{}, 1),
		done:     make(chan struct{}),
		routers:  map[string]*router{},
		reported: map[string]vrrp.State{},
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	e.metrics = m
	e.apply = newApplier(e, opts.Workers)
	return e, nil
}

// Options returns the engine's options, defaults filled in.
func (e *Engine) Options() Options { return e.opts }

// Start runs the engine until ctx is cancelled or Shutdown is called, and
// reports states through report. With a StateDir it first adopts the routers
// an earlier engine ran: those whose VIP is on their ha- device as masters
// (reported at once), the others as backups. A router that cannot be
// adopted (its namespace is gone) is forgotten; other failures are logged.
func (e *Engine) Start(ctx context.Context, report Report) error {
	if report == nil {
		report = func(string, vrrp.State, vrrp.Cause) {}
	}
	e.mu.Lock()
	if e.started {
		e.mu.Unlock()
		return errors.New("vrrp engine: already started")
	}
	e.started, e.report = true, report
	e.mu.Unlock()
	e.apply.start()
	go e.run(ctx)
	if e.opts.StateDir == "" {
		return nil
	}
	saved, err := loadRouters(e.opts.StateDir)
	for _, r := range saved {
		if ok, _ := linux.NamespaceExists(r.Namespace); !ok {
			e.log.Info("forgetting router whose namespace is gone", "router_id", r.ID, "namespace", r.Namespace)
			_ = forgetRouter(e.opts.StateDir, r.ID)
			continue
		}
		if err := e.Ensure(ctx, r); err != nil {
			e.log.Error("adopting router", "router_id", r.ID, "err", err)
		}
	}
	if err != nil {
		e.log.Error("reading saved routers", "err", err)
	}
	return nil
}

// call runs f in the loop and waits for it.
func (e *Engine) call(ctx context.Context, f func()) error {
	e.mu.Lock()
	ok := e.started
	e.mu.Unlock()
	if !ok {
		return ErrNotRunning
	}
	done := make(chan struct{})
	select {
	case e.reqs <- func() { f(); close(done) }:
	case <-e.done:
		return ErrNotRunning
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-e.done:
		// The loop ran f before it exited, or never will.
		select {
		case <-done:
			return nil
		default:
			return ErrNotRunning
		}
	}
}

// Ensure runs (or updates) VRRP for r; its namespace, ha- device and ha-
// address must exist. A router the engine does not run yet is adopted as
// master if its VIP is on its ha- device, and otherwise starts as backup
// (its addresses and routes removed if an earlier run left any). An
// unchanged router only has its data plane converged again (repairing
// drift, never flapping what is right).
func (e *Engine) Ensure(ctx context.Context, r Router) error {
	if err := r.validate(); err != nil {
		return err
	}
	r = r.clone()
	e.opMu.Lock()
	defer e.opMu.Unlock()

	// What runs now, to decide whether a new socket is needed.
	var cur sockKey
	var exists bool
	if err := e.call(ctx, func() {
		if rt := e.routers[r.ID]; rt != nil {
			exists, cur = true, rt.sock.key
		}
	}); err != nil {
		return err
	}
	ifindex, vipPresent, err := lookupDevice(r.Namespace, r.Device, r.VIP)
	if err != nil {
		return fmt.Errorf("vrrp engine: router %s: %w", r.ID, err)
	}
	key := sockKey{ns: r.Namespace, dev: r.Device, ifindex: ifindex, src: r.Address.Addr(), vrid: r.VRID}
	var sock *socket
	if !exists || cur != key {
		sock, err = openSocket(key, e.opts.Version)
		if err != nil {
			return fmt.Errorf("vrrp engine: router %s: %w", r.ID, err)
		}
	}
	var ensureErr error
	if err := e.call(ctx, func() { ensureErr = e.ensure(r, sock, vipPresent) }); err != nil {
		if sock != nil {
			sock.close()
		}
		return err
	}
	if ensureErr != nil {
		return ensureErr
	}
	if e.opts.StateDir != "" {
		if err := saveRouter(e.opts.StateDir, r); err != nil {
			e.log.Warn("remembering router for adoption", "router_id", r.ID, "err", err)
		}
	}
	return nil
}

// Remove stops VRRP for a router: a master resigns (priority-0 advert) and
// its addresses and routes are removed before Remove returns. An unknown
// router is not an error.
func (e *Engine) Remove(ctx context.Context, routerID string) error {
	e.opMu.Lock()
	defer e.opMu.Unlock()
	var wait []chan error
	err := e.call(ctx, func() {
		if r := e.routers[routerID]; r != nil {
			wait = e.remove(r, false)
		}
	})
	if err != nil {
		return err
	}
	err = waitAll(ctx, wait)
	if e.opts.StateDir != "" {
		err = errors.Join(err, forgetRouter(e.opts.StateDir, routerID))
	}
	return err
}

// Shutdown stops the engine. With resign (a graceful stop of the node's
// VRRP), every master sends a priority-0 advert, so that a backup takes over
// after its Skew_Time, keeps forwarding until it has heard the new master
// (plus HandoverGrace; at most Master_Down_Interval if nobody takes over),
// then removes its addresses and routes; it is reported as backup. Without (an agent restart or upgrade), nothing is sent and
// nothing removed: sockets just close, and the next engine adopts the masters
// before the backups' Master_Down_Interval runs out. The router files in
// StateDir are kept either way.
func (e *Engine) Shutdown(ctx context.Context, resign bool) error {
	e.opMu.Lock()
	defer e.opMu.Unlock()
	var wait []chan error
	err := e.call(ctx, func() { wait = e.stop(resign, true) })
	if errors.Is(err, ErrNotRunning) {
		err = nil // never started, or stopped already
	}
	err = errors.Join(err, waitAll(ctx, wait))
	e.apply.stop(ctx)
	e.garp.stop()
	return err
}

// Done is closed when the engine's loop has stopped.
func (e *Engine) Done() <-chan struct{} { return e.done }

// Running lists the routers the engine runs, sorted.
func (e *Engine) Running() []string {
	var ids []string
	if err := e.call(context.Background(), func() {
		for id := range e.routers {
			ids = append(ids, id)
		}
	}); err != nil {
		return nil
	}
	sort.Strings(ids)
	return ids
}

// Status returns a router's status.
func (e *Engine) Status(routerID string) (Status, bool) {
	var st Status
	var ok bool
	_ = e.call(context.Background(), func() {
		r := e.routers[routerID]
		if r == nil {
			return
		}
		ok = true
		st = Status{Router: r.spec.clone(), Machine: r.m.Status(), Adopted: r.adopted,
			Received: r.received, Sent: r.sent, SendErrors: r.sendErrors, Fault: r.fault}
		st.Drops = r.drops.snapshot()
	})
	return st, ok
}

// Drops returns the engine's drop counters over all routers, those removed
// included, by reason.
func (e *Engine) Drops() map[vrrp.Reason]uint64 { return e.metrics.dropSnapshot() }

func waitAll(ctx context.Context, chans []chan error) error {
	var errs []error
	for _, c := range chans {
		select {
		case err := <-c:
			errs = append(errs, err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return errors.Join(errs...)
}
