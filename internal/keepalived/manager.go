package keepalived

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"
)

// Defaults of Options fields.
const (
	DefaultReloadDelay = 300 * time.Millisecond
	DefaultStopTimeout = 10 * time.Second
	DefaultMinBackoff  = 1 * time.Second
	DefaultMaxBackoff  = 60 * time.Second
)

// Names of the files kept for each router in <StateDir>/ha_confs/<router_id>/.
const (
	ConfFile    = "keepalived.conf"
	PidFile     = "keepalived.pid"
	VRRPPidFile = "keepalived-vrrp.pid"
	LogFile     = "keepalived.log"
	// MetaFile records the namespace and Config, so that a restarted agent
	// can watch an adopted router before it is told the desired state.
	MetaFile = "l3ha-router.json"
	// reloadMarker exists while a written config has not been signalled yet,
	// so that an agent that dies in between reloads it after adoption.
	reloadMarker = "reload-pending"
)

// ErrClosed is returned by a Manager's methods after Close.
var ErrClosed = errors.New("keepalived: manager closed")

// Options configures a Manager. Zero durations take the defaults above.
type Options struct {
	// StateDir holds ha_confs/<router_id>/ (Neutron's ha_confs_path is
	// $state_path/ha_confs).
	StateDir string
	// OnTransition receives every HA state a router is seen in:
	// agentapi.HAActive or agentapi.HAStandby, first the state found when
	// the router is started or adopted, then each change that persisted for
	// one advert interval. Calls for one router are sequential; it must not
	// call back into the Manager.
	OnTransition func(routerID, state string)
	Logger       *slog.Logger
	// ReloadDelay is the window over which config changes are coalesced
	// into one SIGHUP (LP#1647432). Default 300ms.
	ReloadDelay time.Duration
	// StopTimeout is how long Remove waits after SIGTERM before SIGKILL.
	// Default 10s.
	StopTimeout time.Duration
	// MinBackoff and MaxBackoff bound the delay before a keepalived that died
	// is started again (doubling while it keeps dying). Defaults 1s and 60s.
	MinBackoff, MaxBackoff time.Duration
	// KeepalivedPath and IPPath are the programs run; defaults "keepalived"
	// and "ip" (from PATH).
	KeepalivedPath, IPPath string
}

// Status is a router as the Manager sees it.
type Status struct {
	RouterID  string
	Namespace string
	// PID is keepalived's (parent) pid, 0 when it is not running.
	PID int
	// Adopted is true when keepalived was started by an earlier agent.
	Adopted bool
	// State is the last HA state reported ("" before the first).
	State string
	// Starts counts keepalived processes this Manager started for the
	// router, Reloads the SIGHUPs it sent.
	Starts, Reloads int
	// ReloadPending is true while a written config awaits its SIGHUP.
	ReloadPending bool
}

// Manager runs one keepalived per HA router of the node.
type Manager struct {
	opts    Options
	log     *slog.Logger
	haConfs string

	start starter
	watch watchFunc
	// ready reports whether keepalived has set itself up far enough to take
	// a SIGHUP (an early SIGHUP would kill it).
	ready func(r *router) bool

	mu      sync.Mutex
	routers map[string]*router
	closed  bool
	closing chan struct{}

	stateMu sync.Mutex // guards router.state (reports come without mu)
}

type router struct {
	id, ns string
	dir    string
	cfg    Config

	proc      process
	dead      process // the last keepalived, if it died
	adopted   bool
	startedAt time.Time
	backoff   time.Duration

	reloadTimer  *time.Timer
	respawnTimer *time.Timer

	stopWatch func()
	watchKey  string

	state           string // guarded by Manager.stateMu
	starts, reloads int
	removed         bool
}

func (r *router) path(name string) string { return filepath.Join(r.dir, name) }

// New returns a Manager. It starts nothing: call Adopt to take over what an
// earlier agent left running, then Ensure for each router.
func New(opts Options) (*Manager, error) {
	if opts.StateDir == "" {
		return nil, errors.New("keepalived: no state directory")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&opts.ReloadDelay, DefaultReloadDelay)
	def(&opts.StopTimeout, DefaultStopTimeout)
	def(&opts.MinBackoff, DefaultMinBackoff)
	def(&opts.MaxBackoff, DefaultMaxBackoff)
	opts.MaxBackoff = max(opts.MaxBackoff, opts.MinBackoff)
	if opts.KeepalivedPath == "" {
		opts.KeepalivedPath = "keepalived"
	}
	if opts.IPPath == "" {
		opts.IPPath = "ip"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Manager{
		opts:    opts,
		log:     opts.Logger.With("ha_driver", "keepalived"),
		haConfs: filepath.Join(opts.StateDir, "ha_confs"),
		start:   execStarter(opts.IPPath, opts.KeepalivedPath),
		watch:   netlinkWatch,
		routers: map[string]*router{},
		closing: make(chan struct{}),
	}
	m.ready = func(r *router) bool {
		_, err := os.Stat(r.path(VRRPPidFile))
		return err == nil
	}
	return m, nil
}

// Dir returns the directory of a router's files.
func (m *Manager) Dir(routerID string) string { return filepath.Join(m.haConfs, routerID) }

func checkRouterID(id string) error {
	if id == "" || id == "." || id == ".." || len(id) > 255 {
		return fmt.Errorf("keepalived: invalid router id %q", id)
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("keepalived: invalid router id %q", id)
		}
	}
	return nil
}

type meta struct {
	Namespace string `json:"namespace"`
	Config    Config `json:"config"`
}

// Ensure makes keepalived run for the router in namespace nsName with cfg:
// it writes the config when it changed, starts keepalived when it is not
// running, and otherwise schedules one SIGHUP for all the changes of the
// next ReloadDelay. An unchanged config does nothing. The namespace must
// exist (the router's transitions are watched there).
func (m *Manager) Ensure(ctx context.Context, routerID, nsName string, cfg Config) error {
	if err := checkRouterID(routerID); err != nil {
		return err
	}
	if cfg.RouterID != "" && cfg.RouterID != routerID {
		return fmt.Errorf("keepalived: config of router %s given for router %s", cfg.RouterID, routerID)
	}
	if err := checkToken(nsName); err != nil || len(nsName) > 255 {
		return fmt.Errorf("keepalived: invalid namespace name %q", nsName)
	}
	conf, err := Render(cfg)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	r := m.routers[routerID]
	created := false
	if r == nil {
		r = &router{id: routerID, ns: nsName, dir: m.Dir(routerID)}
		if err := os.MkdirAll(r.dir, 0o750); err != nil {
			return err
		}
		// A keepalived left by an earlier agent that Adopt was not asked
		// about: take it over rather than start a second one.
		m.adoptLocked(r)
		m.routers[routerID] = r
		created = true
	} else if r.ns != nsName {
		if r.proc != nil || r.respawnTimer != nil {
			return fmt.Errorf("keepalived: router %s runs in namespace %s, not %s; remove it first", routerID, r.ns, nsName)
		}
		r.ns = nsName
	}
	r.cfg = cfg

	if key := fmt.Sprint(nsName, " ", cfg.VIP(), " ", cfg.Advert()); key != r.watchKey {
		if r.stopWatch != nil {
			r.stopWatch()
			r.stopWatch, r.watchKey = nil, ""
		}
		stop, err := m.watch(m.watchSpec(r))
		if err != nil {
			if created && r.proc == nil {
				delete(m.routers, routerID)
			}
			return fmt.Errorf("keepalived: router %s: watching transitions: %w", routerID, err)
		}
		r.stopWatch, r.watchKey = stop, key
	}

	changed, err := m.writeFiles(r, conf)
	if err != nil {
		return fmt.Errorf("keepalived: router %s: %w", routerID, err)
	}
	switch {
	case r.proc == nil && r.respawnTimer == nil:
		return m.startLocked(r)
	case r.proc != nil && changed:
		m.scheduleReloadLocked(r)
	}
	return nil
}

// writeFiles writes the metadata and the config when they differ from what
// is on disk, and reports whether the config did.
func (m *Manager) writeFiles(r *router, conf []byte) (bool, error) {
	if err := os.MkdirAll(r.dir, 0o750); err != nil {
		return false, err
	}
	mb, err := json.MarshalIndent(meta{Namespace: r.ns, Config: r.cfg}, "", "  ")
	if err != nil {
		return false, err
	}
	if old, err := os.ReadFile(r.path(MetaFile)); err != nil || !bytes.Equal(old, mb) {
		if err := writeFileAtomic(r.path(MetaFile), mb); err != nil {
			return false, err
		}
	}
	if old, err := os.ReadFile(r.path(ConfFile)); err == nil && bytes.Equal(old, conf) {
		return false, nil
	}
	if r.proc != nil {
		// Written before the config: an agent dying before the SIGHUP leaves
		// the marker for the next one to find.
		if err := os.WriteFile(r.path(reloadMarker), nil, 0o640); err != nil {
			return false, err
		}
	}
	return true, writeFileAtomic(r.path(ConfFile), conf)
}

// writeFileAtomic replaces path with data: keepalived never reads half a
// file.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o640)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

func (m *Manager) args(r *router) []string {
	return []string{
		"--dont-fork", "--log-console", "--log-detail", "--no-syslog", "--vrrp",
		"-f", r.path(ConfFile), "-p", r.path(PidFile), "-r", r.path(VRRPPidFile),
	}
}

// startLocked starts keepalived for r; on failure it schedules a retry.
func (m *Manager) startLocked(r *router) error {
	m.stopReloadLocked(r)
	m.reapDeadLocked(r)
	// keepalived refuses to start when the pid in its pid file is alive,
	// which a stale file of a dead keepalived may name after pid reuse.
	os.Remove(r.path(PidFile))
	os.Remove(r.path(VRRPPidFile))
	os.Remove(r.path(reloadMarker))
	p, err := m.start(procSpec{Namespace: r.ns, Args: m.args(r), LogPath: r.path(LogFile)})
	if err != nil {
		m.log.Error("starting keepalived failed", "router_id", r.id, "err", err)
		m.scheduleRespawnLocked(r)
		return fmt.Errorf("keepalived: router %s: starting keepalived: %w", r.id, err)
	}
	r.proc, r.adopted, r.startedAt = p, false, time.Now()
	r.starts++
	m.log.Info("keepalived started", "router_id", r.id, "namespace", r.ns, "pid", p.Pid())
	go m.supervise(r, p)
	return nil
}

// supervise waits for p to exit and, when that was not asked for, starts
// keepalived again after a backoff.
func (m *Manager) supervise(r *router, p process) {
	select {
	case <-p.Done():
	case <-m.closing:
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if r.proc != p {
		return // stopped on purpose, or replaced
	}
	r.proc = nil
	m.stopReloadLocked(r)
	if r.removed || m.closed {
		p.Release()
		return
	}
	// Its VRRP child, if it outlived the parent, must go before a new one
	// starts; not now, though: a child whose parent was killed gets SIGTERM
	// from the kernel and hands mastership over with a priority-0 advert.
	r.dead = p
	lived := time.Since(r.startedAt)
	if r.startedAt.IsZero() || lived > 2*m.opts.MaxBackoff {
		r.backoff = 0
	}
	m.log.Warn("keepalived exited unexpectedly", "router_id", r.id, "pid", p.Pid(), "lived", lived.Round(time.Millisecond))
	m.scheduleRespawnLocked(r)
}

func (m *Manager) scheduleRespawnLocked(r *router) {
	if r.respawnTimer != nil || r.removed || m.closed {
		return
	}
	if r.backoff == 0 {
		r.backoff = m.opts.MinBackoff
	} else {
		r.backoff = min(2*r.backoff, m.opts.MaxBackoff)
	}
	m.log.Info("keepalived will be restarted", "router_id", r.id, "in", r.backoff)
	r.respawnTimer = time.AfterFunc(r.backoff, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		r.respawnTimer = nil
		if r.removed || m.closed || r.proc != nil {
			return
		}
		_ = m.startLocked(r)
	})
}

// reapDeadLocked kills what is left of r's previous keepalived.
func (m *Manager) reapDeadLocked(r *router) {
	if r.dead != nil {
		r.dead.KillGroup()
		r.dead.Release()
		r.dead = nil
	}
}

func (m *Manager) scheduleReloadLocked(r *router) {
	if r.reloadTimer != nil {
		return // the pending SIGHUP will read this config too
	}
	r.reloadTimer = time.AfterFunc(m.opts.ReloadDelay, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		r.reloadTimer = nil
		if r.removed || m.closed || r.proc == nil {
			return
		}
		if !m.ready(r) {
			m.scheduleReloadLocked(r)
			return
		}
		m.reloadLocked(r)
	})
}

func (m *Manager) reloadLocked(r *router) {
	if err := r.proc.Signal(syscall.SIGHUP); err != nil {
		m.log.Warn("reloading keepalived failed", "router_id", r.id, "pid", r.proc.Pid(), "err", err)
		return
	}
	r.reloads++
	os.Remove(r.path(reloadMarker))
	m.log.Info("keepalived reloaded", "router_id", r.id, "pid", r.proc.Pid())
}

func (m *Manager) stopReloadLocked(r *router) {
	if r.reloadTimer != nil {
		r.reloadTimer.Stop()
		r.reloadTimer = nil
	}
}

func (m *Manager) watchSpec(r *router) watchSpec {
	id := r.id
	log := m.log.With("router_id", id, "namespace", r.ns)
	return watchSpec{
		RouterID:  id,
		Namespace: r.ns,
		VIP:       r.cfg.VIP(),
		Delay:     FlapHold(r.cfg.Advert()),
		Log:       log,
		Report: func(state string) {
			m.stateMu.Lock()
			r.state = state
			m.stateMu.Unlock()
			if m.opts.OnTransition != nil {
				m.opts.OnTransition(id, state)
			}
		},
	}
}

// FlapHold is how long a VIP change must persist before it is reported:
// one advert interval as Neutron (LP#1837635), but at most a second, so that
// at Neutron's 2 s adverts the API still shows a new master within 2 s of the
// kernel transition.
func FlapHold(advert time.Duration) time.Duration { return min(advert, time.Second) }

// adoptLocked takes over r's keepalived if one runs from r's files.
func (m *Manager) adoptLocked(r *router) bool {
	pid, info, ok := findKeepalived(r.path(PidFile), r.path(ConfFile))
	if !ok {
		return false
	}
	p, err := adoptProcess(pid, info, r.path(ConfFile))
	if err != nil {
		m.log.Warn("adopting keepalived failed", "router_id", r.id, "pid", pid, "err", err)
		return false
	}
	r.proc, r.adopted, r.startedAt = p, true, time.Time{}
	m.log.Info("keepalived adopted", "router_id", r.id, "pid", pid)
	go m.supervise(r, p)
	if _, err := os.Stat(r.path(reloadMarker)); err == nil {
		m.scheduleReloadLocked(r)
	}
	return true
}

// Adopt takes over the keepalived processes an earlier agent left running,
// found through the pid files under ha_confs (a pid is adopted only if
// /proc shows keepalived reading that router's config, so a recycled pid is
// not), and starts watching their transitions, reporting each router's
// current state through OnTransition before it returns. It returns the ids
// of the routers adopted. Routers whose keepalived is not running are
// remembered (Routers lists them) but not started: Ensure starts them,
// Remove deletes them. Call Adopt before Ensure.
func (m *Manager) Adopt(ctx context.Context) ([]string, error) {
	entries, err := os.ReadDir(m.haConfs)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	var adopted []string
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return adopted, err
		}
		id := e.Name()
		if !e.IsDir() || checkRouterID(id) != nil || m.routers[id] != nil {
			continue
		}
		r := &router{id: id, dir: m.Dir(id)}
		b, err := os.ReadFile(r.path(MetaFile))
		if err != nil {
			m.log.Warn("ignoring router directory without metadata", "dir", r.dir, "err", err)
			continue
		}
		var md meta
		if err := json.Unmarshal(b, &md); err != nil {
			m.log.Warn("ignoring router directory with bad metadata", "dir", r.dir, "err", err)
			continue
		}
		r.ns, r.cfg = md.Namespace, md.Config
		m.routers[id] = r
		if !m.adoptLocked(r) {
			m.log.Info("found router whose keepalived is not running", "router_id", id)
			continue
		}
		adopted = append(adopted, id)
		stop, err := m.watch(m.watchSpec(r))
		if err != nil {
			m.log.Warn("watching transitions of adopted router failed", "router_id", id, "err", err)
			continue
		}
		r.stopWatch = stop
		r.watchKey = fmt.Sprint(r.ns, " ", r.cfg.VIP(), " ", r.cfg.Advert())
	}
	return adopted, nil
}

// Remove stops the router's keepalived (SIGTERM, so that a master hands over
// at once with a priority-0 advert; SIGKILL to its process group after
// StopTimeout or when ctx ends), stops watching it and deletes its files.
// Removing an unknown router is not an error.
func (m *Manager) Remove(ctx context.Context, routerID string) error {
	if err := checkRouterID(routerID); err != nil {
		return err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	r := m.routers[routerID]
	var p process
	var stopWatch func()
	if r != nil {
		delete(m.routers, routerID)
		r.removed = true
		m.stopReloadLocked(r)
		if r.respawnTimer != nil {
			r.respawnTimer.Stop()
			r.respawnTimer = nil
		}
		p, r.proc = r.proc, nil
		stopWatch, r.stopWatch = r.stopWatch, nil
		m.reapDeadLocked(r)
	} else {
		// Not known (not adopted): a keepalived may still run from its files.
		rr := &router{id: routerID, dir: m.Dir(routerID)}
		if pid, info, ok := findKeepalived(rr.path(PidFile), rr.path(ConfFile)); ok {
			p, _ = adoptProcess(pid, info, rr.path(ConfFile))
		}
	}
	m.mu.Unlock()

	if stopWatch != nil {
		stopWatch()
	}
	var err error
	if p != nil {
		err = m.stopProcess(ctx, routerID, p)
	}
	if rerr := os.RemoveAll(m.Dir(routerID)); rerr != nil && err == nil {
		err = rerr
	}
	return err
}

func (m *Manager) stopProcess(ctx context.Context, routerID string, p process) error {
	defer p.Release()
	if err := p.Signal(syscall.SIGTERM); err != nil {
		m.log.Debug("SIGTERM failed", "router_id", routerID, "pid", p.Pid(), "err", err)
	}
	t := time.NewTimer(m.opts.StopTimeout)
	defer t.Stop()
	select {
	case <-p.Done():
		m.log.Info("keepalived stopped", "router_id", routerID, "pid", p.Pid())
		return nil
	case <-t.C:
	case <-ctx.Done():
	}
	m.log.Warn("keepalived did not stop; killing it", "router_id", routerID, "pid", p.Pid())
	p.KillGroup()
	select {
	case <-p.Done():
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("keepalived: router %s: pid %d survived SIGKILL", routerID, p.Pid())
	}
}

// Close stops supervising and watching without stopping any keepalived:
// they keep routing, and the next agent adopts them. Config changes still
// waiting for their SIGHUP get it now (or, from a keepalived still starting,
// after the next agent's Adopt).
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	var stops []func()
	for _, r := range m.routers {
		if r.reloadTimer != nil {
			m.stopReloadLocked(r)
			// Not ready yet: the reload marker stays for the next agent.
			if r.proc != nil && m.ready(r) {
				m.reloadLocked(r)
			}
		}
		if r.respawnTimer != nil {
			r.respawnTimer.Stop()
			r.respawnTimer = nil
		}
		if r.proc != nil {
			r.proc.Release()
		}
		if r.dead != nil {
			r.dead.Release()
			r.dead = nil
		}
		if r.stopWatch != nil {
			stops = append(stops, r.stopWatch)
			r.stopWatch = nil
		}
	}
	m.closed = true
	close(m.closing)
	m.mu.Unlock()
	for _, stop := range stops {
		stop()
	}
	return nil
}

// Routers returns the ids of the routers the Manager knows (started, adopted
// or found), sorted.
func (m *Manager) Routers() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	ids := make([]string, 0, len(m.routers))
	for id := range m.routers {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Status returns what the Manager knows of a router.
func (m *Manager) Status(routerID string) (Status, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.routers[routerID]
	if r == nil {
		return Status{}, false
	}
	s := Status{
		RouterID:      r.id,
		Namespace:     r.ns,
		Adopted:       r.adopted,
		Starts:        r.starts,
		Reloads:       r.reloads,
		ReloadPending: r.reloadTimer != nil,
	}
	if r.proc != nil {
		s.PID = r.proc.Pid()
	}
	m.stateMu.Lock()
	s.State = r.state
	m.stateMu.Unlock()
	return s, true
}
