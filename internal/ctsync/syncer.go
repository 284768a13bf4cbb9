package ctsync

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// Defaults of Config.
const (
	// DefaultFlushInterval batches a master's events: a new connection
	// reaches the backups within it (the window in which a node fault can
	// lose a flow), and a burst of connections shares datagrams.
	DefaultFlushInterval = 10 * time.Millisecond
	// DefaultRefreshInterval is how often a master renews its backups'
	// entries that could expire before an event renews them (an idle UDP
	// flow's lasts 120 s): a refresh sends the flows that expire within
	// refreshHorizon, and every fullRefreshEvery-th refresh the whole
	// table, which heals a lost datagram. Established TCP (5 days)
	// therefore costs nothing at rest between full tables.
	DefaultRefreshInterval = 30 * time.Second
	refreshHorizon         = 10 * time.Minute
	fullRefreshEvery       = 10
)

// Config is one router's sync.
type Config struct {
	RouterID  string
	Namespace string // the router namespace
	HADevice  string // its ha- device
	VRID      int
	// HANet is the HA network's prefix: flows on it (VRRP, the sync)
	// are the router's own and never synchronised.
	HANet           netip.Prefix
	FlushInterval   time.Duration
	RefreshInterval time.Duration
	Logger          *slog.Logger
}

// Stats count what a syncer did, for metrics and tests.
type Stats struct {
	FlowsSent, DeletesSent, Datagrams, TablesSent   uint64
	Installed, Deleted, InstallErrors, BadDatagrams uint64
}

// Syncer is one HA router's conntrack sync (see the package doc). It
// starts as a backup; SetMaster follows the router's VRRP state.
type Syncer struct {
	cfg    Config
	router [16]byte
	log    *slog.Logger
	table  table
	link   link
	listen func() (changes, error)

	role      chan bool
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once

	flowsSent, deletesSent, datagrams, tablesSent   atomic.Uint64
	installed, deleted, installErrors, badDatagrams atomic.Uint64
}

// table is the kernel's conntrack table (Table; a fake in unit tests).
type table interface {
	Dump() ([]Flow, error)
	Install(Flow) error
	Delete(Flow) error
	Close() error
}

// link is the sync's socket on the HA network (transport).
type link interface {
	Send([]byte) error
	Receive([]byte) (int, error)
	Close() error
}

// changes is a subscription to conntrack events (eventStream).
type changes interface {
	Changes() <-chan change
	Errors() <-chan error
	Close() error
}

func (s *eventStream) Changes() <-chan change { return s.C }
func (s *eventStream) Errors() <-chan error   { return s.Errs }

// Start opens the router's conntrack table and sync socket and runs the
// sync until Close.
func Start(cfg Config) (*Syncer, error) {
	id, err := uuid.Parse(cfg.RouterID)
	if err != nil {
		return nil, fmt.Errorf("conntrack sync of router %q: %w", cfg.RouterID, err)
	}
	if cfg.VRID < 1 || cfg.VRID > 255 {
		return nil, fmt.Errorf("conntrack sync of router %s: VRID %d out of range", cfg.RouterID, cfg.VRID)
	}
	tbl, err := OpenTable(cfg.Namespace)
	if err != nil {
		return nil, err
	}
	tr, err := openTransport(cfg.Namespace, cfg.HADevice, cfg.VRID)
	if err != nil {
		tbl.Close()
		return nil, err
	}
	ns := cfg.Namespace
	return start(cfg, id, tbl, tr, func() (changes, error) { return listenEvents(ns) }), nil
}

func start(cfg Config, id [16]byte, tbl table, l link, listen func() (changes, error)) *Syncer {
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = DefaultFlushInterval
	}
	if cfg.RefreshInterval <= 0 {
		cfg.RefreshInterval = DefaultRefreshInterval
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Syncer{
		cfg: cfg, router: id, table: tbl, link: l, listen: listen,
		log:  log.With("router_id", cfg.RouterID, "vrid", cfg.VRID),
		role: make(chan bool, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
	recv := make(chan Message, 64)
	go s.receive(recv)
	go s.run(recv)
	return s
}

// SetMaster tells the syncer the router's VRRP state on this node: a
// master sends its table, a backup installs what it receives.
func (s *Syncer) SetMaster(master bool) {
	for {
		select {
		case s.role <- master:
			return
		case <-s.role: // only the newest state matters
		case <-s.done:
			return
		}
	}
}

// Close sends what a master still has pending and releases everything. The
// kernel's table stays as it is.
func (s *Syncer) Close() error {
	s.closeOnce.Do(func() { close(s.stop) })
	<-s.done
	return nil
}

// Stats returns the syncer's counters.
func (s *Syncer) Stats() Stats {
	return Stats{
		FlowsSent: s.flowsSent.Load(), DeletesSent: s.deletesSent.Load(), Datagrams: s.datagrams.Load(), TablesSent: s.tablesSent.Load(),
		Installed: s.installed.Load(), Deleted: s.deleted.Load(), InstallErrors: s.installErrors.Load(), BadDatagrams: s.badDatagrams.Load(),
	}
}

func (s *Syncer) receive(out chan<- Message) {
	buf := make([]byte, 65536)
	for {
		n, err := s.link.Receive(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("conntrack sync: receive failed", "err", err)
			select {
			case <-s.stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		m, err := Decode(buf[:n])
		if err != nil {
			s.badDatagrams.Add(1)
			continue
		}
		if m.Router != s.router {
			// Another HA network's router with the same VRID: not ours.
			continue
		}
		select {
		case out <- m:
		case <-s.stop:
			return
		}
	}
}

// state is the loop's own: touched by run only.
type state struct {
	master  bool
	events  changes
	pending map[Key]change
	flush   *time.Timer
	armed   bool
	// quiet: the last table sent was empty and no event came since, so a
	// refresh has nothing to send and skips the dump (a ctnetlink dump
	// walks the kernel's one conntrack hash of every namespace: ~10 ms
	// even for an empty table, which 500 idle routers would pay every
	// RefreshInterval).
	quiet bool
	// refreshes counts the refreshes, for the full ones.
	refreshes int
	// errAt rate-limits the logging of install errors.
	errAt time.Time
}

func (s *Syncer) run(recv <-chan Message) {
	defer close(s.done)
	st := &state{pending: map[Key]change{}, flush: time.NewTimer(time.Hour)}
	st.flush.Stop()
	refresh := time.NewTicker(s.cfg.RefreshInterval)
	defer refresh.Stop()
	defer func() {
		if st.events != nil {
			st.events.Close()
		}
		s.link.Close()
		s.table.Close()
	}()
	s.send(Message{Kind: KindResync}) // a (re)started backup catches up
	for {
		var evC <-chan change
		var evErr <-chan error
		if st.events != nil {
			evC, evErr = st.events.Changes(), st.events.Errors()
		}
		select {
		case <-s.stop:
			if st.master {
				s.flushPending(st)
			}
			return
		case m := <-s.role:
			s.setRole(st, m)
		case c := <-evC:
			if !Synchronised(c.flow, s.cfg.HANet) {
				continue
			}
			st.pending[c.flow.Key()] = c
			st.quiet = false
			if !st.armed {
				st.flush.Reset(s.cfg.FlushInterval)
				st.armed = true
			}
		case err := <-evErr:
			s.log.Warn("conntrack sync: events lost, sending the whole table", "err", err)
			st.events.Close()
			st.events = s.subscribe()
			st.quiet = s.sendTable() == 0
		case <-st.flush.C:
			st.armed = false
			s.flushPending(st)
		case <-refresh.C:
			if st.master && (!st.quiet || st.events == nil) {
				st.refreshes++
				var horizon time.Duration
				if st.refreshes%fullRefreshEvery != 0 {
					horizon = max(refreshHorizon, 2*s.cfg.RefreshInterval)
				}
				st.quiet = s.sendFlows(horizon) == 0 && st.events != nil
			}
		case m := <-recv:
			s.handle(st, m)
		}
	}
}

func (s *Syncer) subscribe() changes {
	ev, err := s.listen()
	if err != nil {
		s.log.Error("conntrack sync: cannot follow the master's connections", "err", err)
		return nil
	}
	return ev
}

func (s *Syncer) setRole(st *state, master bool) {
	if master == st.master {
		return
	}
	st.master = master
	if master {
		// Events first, then the table: nothing falls between the two.
		st.events = s.subscribe()
		st.quiet = s.sendTable() == 0 && st.events != nil
		s.log.Info("conntrack sync: master, sending connections to the backups")
		return
	}
	if st.events != nil {
		st.events.Close()
		st.events = nil
	}
	clear(st.pending)
	s.send(Message{Kind: KindResync})
	s.log.Info("conntrack sync: backup, installing the master's connections")
}

func (s *Syncer) handle(st *state, m Message) {
	switch m.Kind {
	case KindResync:
		if st.master {
			st.quiet = s.sendTable() == 0 && st.events != nil
		}
	case KindFlows, KindDeletes:
		if st.master {
			return // split brain, or the old master's last batch: ours rule
		}
		for _, f := range m.Flows {
			if !Synchronised(f, s.cfg.HANet) {
				continue
			}
			var err error
			if m.Kind == KindFlows {
				if err = s.table.Install(f); err == nil {
					s.installed.Add(1)
				}
			} else if err = s.table.Delete(f); err == nil {
				s.deleted.Add(1)
			}
			if err != nil {
				s.installErrors.Add(1)
				if time.Since(st.errAt) > 10*time.Second {
					st.errAt = time.Now()
					s.log.Warn("conntrack sync: cannot install a connection of the master", "err", err)
				}
			}
		}
	}
}

func (s *Syncer) flushPending(st *state) {
	if len(st.pending) == 0 {
		return
	}
	var up, down []Flow
	for _, c := range st.pending {
		if c.ended {
			down = append(down, c.flow)
		} else {
			up = append(up, c.flow)
		}
	}
	clear(st.pending)
	s.send(Message{Kind: KindFlows, Flows: up})
	s.send(Message{Kind: KindDeletes, Flows: down})
	s.flowsSent.Add(uint64(len(up)))
	s.deletesSent.Add(uint64(len(down)))
}

// sendTable sends the whole table and returns how many flows it held;
// -1 when it could not be read.
func (s *Syncer) sendTable() int { return s.sendFlows(0) }

// sendFlows sends the table's flows that expire within horizon (every flow
// if 0) and returns how many flows the table held; -1 when it could not be
// read.
func (s *Syncer) sendFlows(horizon time.Duration) int {
	flows, err := s.table.Dump()
	if err != nil {
		s.log.Warn("conntrack sync: cannot read the router's connections", "err", err)
		return -1
	}
	out := flows[:0]
	held := 0
	for _, f := range flows {
		if !Synchronised(f, s.cfg.HANet) {
			continue
		}
		held++
		if horizon == 0 || time.Duration(f.Timeout)*time.Second <= horizon {
			out = append(out, f)
		}
	}
	s.tablesSent.Add(1)
	s.flowsSent.Add(uint64(len(out)))
	if len(out) > 0 {
		s.send(Message{Kind: KindFlows, Flows: out})
	}
	return held
}

func (s *Syncer) send(m Message) {
	if m.Kind != KindResync && len(m.Flows) == 0 {
		return
	}
	m.Router = s.router
	dgrams, err := Encode(m, MaxDatagram)
	if err != nil {
		s.log.Warn("conntrack sync: cannot encode", "kind", m.Kind, "err", err)
		return
	}
	for _, d := range dgrams {
		if err := s.link.Send(d); err != nil {
			s.log.Warn("conntrack sync: send failed", "kind", m.Kind, "err", err)
			return
		}
		s.datagrams.Add(1)
	}
}
