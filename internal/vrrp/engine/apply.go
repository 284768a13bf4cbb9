package engine

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/l3ha/l3ha/internal/linux"
	"github.com/l3ha/l3ha/internal/vrrp"
)

// job is the desired data-plane state of one router, as the loop last
// decided it: whether its addresses and routes are installed, whether
// gratuitous ARP is due, which state to report once it is done. Jobs of a
// router run one at a time, in order; a job that arrives while another waits
// replaces it (merge), so a burst of changes costs one convergence.
type job struct {
	seq     uint64
	spec    Router
	install bool
	garp    bool
	// garpRounds is how many gratuitous ARPs per address this job sends
	// (0: one now, and the rest of Options.GARPRepeat later; see
	// applier.followUp).
	garpRounds int
	// report asks for state to be reported once the job is done; suppress
	// (a removed router) cancels the reports of the jobs it replaces.
	report   bool
	suppress bool
	state    vrrp.State
	cause    vrrp.Cause // why the router entered state
	// Left over from earlier specs, to remove.
	staleAddrs []Address
	staleDevs  []string

	done  []chan error
	retry bool
}

// merge combines a waiting job with a newer one: the newer decides, the
// older contributes what must not be lost (a due report or gratuitous ARP,
// things to clean up, its waiters).
func merge(old, nw *job) *job {
	base, other := nw, old
	if old.seq > nw.seq {
		base, other = old, nw
	}
	m := *base
	m.garp = base.install && (base.garp || other.garp)
	m.report = !base.suppress && (base.report || other.report)
	m.staleAddrs = append(slices.Clone(other.staleAddrs), base.staleAddrs...)
	m.staleDevs = append(slices.Clone(other.staleDevs), base.staleDevs...)
	m.done = append(slices.Clone(old.done), nw.done...)
	m.retry = false
	return &m
}

// applier runs jobs on a few worker goroutines, one job per router at a
// time.
type applier struct {
	e       *Engine
	workers int

	mu      sync.Mutex
	cond    *sync.Cond
	slots   map[string]*slot
	queue   []string
	seq     uint64
	started bool
	stopped bool
	wg      sync.WaitGroup

	// later holds the rest of the gratuitous ARP rounds of jobs that sent
	// their first: run when queue is empty, so that when many routers take
	// over at once every one gets its addresses and its first announcement
	// before any gets its repeats. (Each announcement on a gateway device
	// is a broadcast that the node's external bridge delivers to every
	// router's gateway port: 5 rounds for each of 500 routers cost seconds
	// on two cores, and the last routers waited for them.) A newer job
	// that removes the addresses cancels a router's follow-up; one that
	// keeps them gives it its spec.
	later   map[string]*job
	laterID []string
}

type slot struct {
	pending *job
	running bool
	queued  bool
	lastSeq uint64 // of the last job run
	backoff time.Duration
}

const (
	minRetry = 500 * time.Millisecond
	maxRetry = 30 * time.Second
)

func newApplier(e *Engine, workers int) *applier {
	a := &applier{e: e, workers: workers, slots: map[string]*slot{}, later: map[string]*job{}}
	a.cond = sync.NewCond(&a.mu)
	return a
}

func (a *applier) start() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.started {
		return
	}
	a.started = true
	for range a.workers {
		a.wg.Add(1)
		go a.work()
	}
}

// stop lets the workers finish the queued jobs, then ends them.
func (a *applier) stop(ctx context.Context) {
	a.mu.Lock()
	a.stopped = true
	a.cond.Broadcast()
	a.mu.Unlock()
	done := make(chan struct{})
	go func() { a.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// submit queues j for router id and returns a channel that receives the
// outcome of the job that carries it out (j, or one it was merged into).
func (a *applier) submit(id string, j *job) chan error {
	done := make(chan error, 1)
	j.done = append(j.done, done)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.seq++
	j.seq = a.seq
	if f := a.later[id]; f != nil {
		if j.install {
			f.spec = j.spec
		} else {
			delete(a.later, id) // the addresses go: nothing to announce
		}
	}
	a.enqueue(id, j)
	return done
}

// followUp queues the remaining gratuitous ARP rounds of j, a job that
// installed router id's addresses and sent one round. Called with a.mu
// held.
func (a *applier) followUp(id string, j *job) {
	rounds := a.e.opts.GARPRepeat - 1
	if j.garpRounds != 0 || rounds < 1 || !j.install || !j.garp {
		return
	}
	f := *j
	f.report, f.done, f.retry, f.staleAddrs, f.staleDevs, f.garpRounds = false, nil, false, nil, nil, rounds
	if a.later[id] == nil {
		a.laterID = append(a.laterID, id)
	}
	a.later[id] = &f
	a.cond.Signal()
}

// takeLater moves the first follow-up that is still due into queue; false
// when there is none. Called with a.mu held.
func (a *applier) takeLater() bool {
	for len(a.laterID) > 0 {
		id := a.laterID[0]
		a.laterID = a.laterID[1:]
		f := a.later[id]
		if f == nil {
			continue // cancelled
		}
		delete(a.later, id)
		a.seq++
		f.seq = a.seq
		a.enqueue(id, f)
		return true
	}
	return false
}

func (a *applier) enqueue(id string, j *job) {
	s := a.slots[id]
	if s == nil {
		s = &slot{}
		a.slots[id] = s
	}
	if s.pending != nil {
		j = merge(s.pending, j)
	}
	s.pending = j
	if !s.running && !s.queued {
		s.queued = true
		a.queue = append(a.queue, id)
		a.cond.Signal()
	}
}

func (a *applier) work() {
	defer a.wg.Done()
	a.mu.Lock()
	for {
		for len(a.queue) == 0 && !a.stopped && !a.takeLater() {
			a.cond.Wait()
		}
		if len(a.queue) == 0 {
			a.mu.Unlock()
			return
		}
		id := a.queue[0]
		a.queue = a.queue[1:]
		s := a.slots[id]
		j := s.pending
		s.pending, s.queued, s.running = nil, false, true
		a.mu.Unlock()

		err := a.e.converge(j)
		a.e.finish(id, j, err)

		a.mu.Lock()
		s.running = false
		s.lastSeq = j.seq
		switch {
		case s.pending != nil:
			s.queued = true
			a.queue = append(a.queue, id)
			a.cond.Signal()
		case err != nil && !a.stopped:
			a.retryLater(id, s, j)
		default:
			s.backoff = 0
			delete(a.slots, id)
			a.followUp(id, j)
		}
	}
}

// retryLater runs a failed job again after a backoff, unless a newer one
// came meanwhile. Called with a.mu held.
func (a *applier) retryLater(id string, s *slot, j *job) {
	s.backoff = min(max(2*s.backoff, minRetry), maxRetry)
	r := *j
	r.report, r.done, r.retry = false, nil, true
	time.AfterFunc(s.backoff, func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.stopped || a.slots[id] != s || s.lastSeq != r.seq || s.pending != nil || s.running {
			return
		}
		a.enqueue(id, &r)
	})
}

// finish reports and wakes the waiters of a job.
func (e *Engine) finish(id string, j *job, err error) {
	if err != nil {
		e.metrics.applyErrors.Inc()
		e.log.Error("applying VRRP state to the data plane", "router_id", id, "install", j.install, "retry", j.retry, "err", err)
	}
	if j.report && !j.suppress && (j.state == vrrp.Master || j.state == vrrp.Backup) {
		// Coalesced jobs may owe a report of the state last reported (a
		// flap that was over before the data plane could follow it): the
		// state is reported once per change.
		e.mu.Lock()
		report := e.report
		last, had := e.reported[id]
		e.reported[id] = j.state
		e.mu.Unlock()
		if !had || last != j.state {
			report(id, j.state, j.cause)
		}
	}
	if j.suppress {
		e.mu.Lock()
		delete(e.reported, id)
		e.mu.Unlock()
	}
	for _, c := range j.done {
		c <- err
	}
}

// converge makes the router's namespace match j: with install, the VIP on
// the ha- device, exactly the excluded addresses on their devices and
// exactly the routes; without, none of them. Then gratuitous ARP if due.
func (e *Engine) converge(j *job) error {
	s := &j.spec
	ns := s.Namespace
	var errs []error
	gone := func(err error) bool {
		// A device or namespace that is gone holds nothing to remove.
		return errors.Is(err, unix.ENODEV) || errors.Is(err, linux.ErrNamespaceNotFound)
	}
	keep := func(err error) {
		if err != nil && !(gone(err) && !j.install) {
			errs = append(errs, err)
		}
	}
	for _, a := range j.staleAddrs {
		if !(j.install && s.wants(a)) {
			if err := linux.DelAddress(ns, a.Dev, a.Prefix); err != nil && !gone(err) {
				errs = append(errs, err)
			}
		}
	}
	for _, d := range j.staleDevs {
		if d != s.Device && !s.hasExcludedDev(d) {
			if err := linux.SyncAddresses(ns, d, nil); err != nil && !gone(err) {
				errs = append(errs, err)
			}
		}
	}
	byDev, onHA := s.excludedByDev()
	routes := s.linuxRoutes()
	if j.install {
		keep(linux.AddAddress(ns, s.Device, s.VIP))
		for _, a := range onHA {
			keep(linux.AddAddress(ns, a.Dev, a.Prefix))
		}
		for _, dev := range sortedKeys(byDev) {
			keep(linux.SyncAddresses(ns, dev, byDev[dev]))
		}
		keep(linux.SyncRoutes(ns, e.opts.RouteProtocol, routes))
		if j.garp {
			keep(e.garp.send(ns, s.Device, s.announced(), max(j.garpRounds, 1)))
		}
	} else {
		keep(linux.SyncRoutes(ns, e.opts.RouteProtocol, nil))
		for _, dev := range sortedKeys(byDev) {
			keep(linux.SyncAddresses(ns, dev, nil))
		}
		for _, a := range onHA {
			keep(linux.DelAddress(ns, a.Dev, a.Prefix))
		}
		keep(linux.DelAddress(ns, s.Device, s.VIP))
	}
	return errors.Join(errs...)
}

// excludedByDev groups the excluded addresses by device; those on the ha-
// device come apart (that device also carries the node's own address, so
// it is never synced wholesale).
func (r *Router) excludedByDev() (map[string][]netip.Prefix, []Address) {
	by := map[string][]netip.Prefix{}
	var onHA []Address
	for _, a := range r.Excluded {
		if a.Dev == r.Device {
			onHA = append(onHA, a)
			continue
		}
		by[a.Dev] = append(by[a.Dev], a.Prefix)
	}
	return by, onHA
}

func (r *Router) wants(a Address) bool {
	return (a.Dev == r.Device && a.Prefix == r.VIP) || r.hasExcluded(a)
}

func (r *Router) hasExcluded(a Address) bool { return slices.Contains(r.Excluded, a) }

func (r *Router) hasExcludedDev(dev string) bool {
	return slices.ContainsFunc(r.Excluded, func(a Address) bool { return a.Dev == dev })
}

func (r *Router) linuxRoutes() []linux.Route {
	out := make([]linux.Route, 0, len(r.Routes))
	for _, rt := range r.Routes {
		out = append(out, linux.Route{Dst: rt.Dst, Gateway: rt.Gateway, Dev: rt.Dev})
	}
	return out
}

// announced is what gratuitous ARP announces: the VIP and every IPv4
// excluded address, each on its device.
func (r *Router) announced() []Address {
	out := []Address{{Dev: r.Device, Prefix: r.VIP}}
	for _, a := range r.Excluded {
		if a.Prefix.Addr().Is4() {
			out = append(out, a)
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
