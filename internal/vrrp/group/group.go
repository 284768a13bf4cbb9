// Package group is the pure state machine of a liveness session between two
// nodes that both run l3ha's native VRRP engine (docs/group-liveness.md):
// one heartbeat per interval per node pair stands for the adverts of every
// router the two share, and when the peer falls silent, every router it was
// master of fails over in the same tick. Routers join and leave the session
// by a handshake, so that neither side ever stops waiting for a master the
// other side still advertises per router.
//
// Like package vrrp's Machine, a Session has no sockets, goroutines or
// clock: every input carries the time and returns the actions the caller
// must perform; NextDeadline says when it wants a Tick.
package group

import (
	"hash/fnv"
	"slices"
	"strings"
	"time"
)

// Defaults of Config.
const (
	DefaultMultiplier = 3
	DefaultFullEvery  = 10
)

// Config is one session: this node and its peer.
type Config struct {
	Local, Peer string // node ids (the agents' host names)
	// Interval is how often this node sends a heartbeat.
	Interval time.Duration
	// Multiplier heartbeats of silence, plus Skew, and the peer is down.
	Multiplier int
	Skew       time.Duration
	// FullEvery: the table goes out with every FullEvery-th heartbeat too,
	// besides whenever it changes.
	FullEvery int
}

// Stage is how far a router has come into the session, as one node says.
type Stage uint8

const (
	// Listed: the node runs the router natively with this peer.
	Listed Stage = iota + 1
	// Seen: and it has seen the peer list the router.
	Seen
	// Joined: and it has seen the peer see it: the router's liveness now
	// comes from the session on this node.
	Joined
)

// Row is one router in a node's table.
type Row struct {
	Router   string
	Master   bool
	Priority uint8
	Stage    Stage
}

// Local is what the engine says of one router it runs with this peer.
type Local struct {
	Router   string
	Master   bool
	Priority uint8
}

// Heartbeat is the session's packet, every Interval.
type Heartbeat struct {
	From     string
	Seq      uint32
	Interval time.Duration
	// Digest is the sender's table's (TableDigest): a receiver whose copy
	// differs asks for the table.
	Digest uint64
}

// Table is a node's rows, sent when they change and every FullEvery
// heartbeats.
type Table struct {
	From string
	Rows []Row
}

// Mode is how the engine must run a router's VRRP.
type Mode uint8

const (
	// ModePerRouter: plain VRRP on the HA network — adverts and timers of
	// its own.
	ModePerRouter Mode = iota
	// ModeSession: a backup's Master_Down comes from the session
	// (PeerDown); a master still advertises per router, because the peer
	// may not have joined yet.
	ModeSession
	// ModeQuiet: both sides joined: no per-router adverts and no
	// per-router timer.
	ModeQuiet
)

// Action is something the caller must do.
type Action interface{ isAction() }

// SendHeartbeat asks the caller to send h to the peer.
type SendHeartbeat struct{ Heartbeat Heartbeat }

// SendTable asks the caller to send t to the peer.
type SendTable struct{ Table Table }

// RequestTable asks the caller to ask the peer for its table.
type RequestTable struct{}

// PeerUp: the peer's heartbeats arrive.
type PeerUp struct{}

// PeerDown: the peer fell silent. Masters are the routers it was master of
// whose liveness this node took from the session: take them over now.
type PeerDown struct{ Masters []string }

// SetMode asks the caller to run router's VRRP in mode from now on.
type SetMode struct {
	Router string
	Mode   Mode
}

// PeerState reports a member router's row as the peer now gives it, when it
// changed: the evidence a per-router advert would carry (a master's
// priority; Master false from a former master is its resignation).
type PeerState struct {
	Router   string
	Master   bool
	Priority uint8
}

func (SendHeartbeat) isAction() {}
func (SendTable) isAction()     {}
func (RequestTable) isAction()  {}
func (PeerUp) isAction()        {}
func (PeerDown) isAction()      {}
func (SetMode) isAction()       {}
func (PeerState) isAction()     {}

// Session is the state machine. Not safe for concurrent use.
type Session struct {
	cfg     Config
	started bool
	seq     uint32
	beats   int
	beatAt  time.Time

	local map[string]Local
	peer  map[string]Row // the peer's last table; nil while the peer is down
	modes map[string]Mode

	peerUp      bool
	downAt      time.Time
	peerDigest  uint64
	requestedAt time.Time
}

// New returns a session for cfg (defaults filled in).
func New(cfg Config) *Session {
	if cfg.Multiplier <= 0 {
		cfg.Multiplier = DefaultMultiplier
	}
	if cfg.FullEvery <= 0 {
		cfg.FullEvery = DefaultFullEvery
	}
	return &Session{cfg: cfg, local: map[string]Local{}, modes: map[string]Mode{}}
}

// Start begins heartbeating now.
func (s *Session) Start(now time.Time) []Action {
	s.started = true
	s.beatAt = now
	return s.Tick(now)
}

// SetLocal replaces the routers this node runs natively with the peer (a
// router that goes is leaving; a new one is listed).
func (s *Session) SetLocal(now time.Time, routers []Local) []Action {
	next := make(map[string]Local, len(routers))
	for _, r := range routers {
		next[r.Router] = r
	}
	changed := len(next) != len(s.local)
	for id, r := range next {
		if s.local[id] != r {
			changed = true
		}
	}
	s.local = next
	acts := s.recompute()
	if changed || len(acts) > 0 {
		acts = append(acts, s.sendTable())
	}
	return acts
}

// ReceiveHeartbeat takes a heartbeat from the peer.
func (s *Session) ReceiveHeartbeat(now time.Time, h Heartbeat) []Action {
	if h.From != s.cfg.Peer || !s.started {
		return nil
	}
	var acts []Action
	iv := h.Interval
	if iv <= 0 {
		iv = s.cfg.Interval
	}
	s.downAt = now.Add(time.Duration(s.cfg.Multiplier)*iv + s.cfg.Skew)
	s.peerDigest = h.Digest
	if !s.peerUp {
		s.peerUp = true
		acts = append(acts, PeerUp{}, s.sendTable())
	}
	if s.peer == nil || TableDigest(rowsOf(s.peer)) != h.Digest {
		// At most one request an interval: the table may be on its way.
		if s.requestedAt.IsZero() || now.Sub(s.requestedAt) >= s.cfg.Interval {
			s.requestedAt = now
			acts = append(acts, RequestTable{})
		}
	}
	return acts
}

// ReceiveTable takes the peer's table.
func (s *Session) ReceiveTable(now time.Time, t Table) []Action {
	if t.From != s.cfg.Peer || !s.started || !s.peerUp {
		// A table before any heartbeat is not a live peer's: wait for one.
		return nil
	}
	old := s.peer
	s.peer = make(map[string]Row, len(t.Rows))
	for _, r := range t.Rows {
		s.peer[r.Router] = r
	}
	var acts []Action
	for id, r := range s.peer {
		if s.modes[id] == ModePerRouter {
			continue
		}
		if o, ok := old[id]; !ok || o.Master != r.Master || o.Priority != r.Priority {
			acts = append(acts, PeerState{Router: id, Master: r.Master, Priority: r.Priority})
		}
	}
	rec := s.recompute()
	acts = append(acts, rec...)
	if len(rec) > 0 {
		acts = append(acts, s.sendTable()) // our stages moved: tell the peer
	}
	return acts
}

// TableRequested answers the peer's request for the table.
func (s *Session) TableRequested(now time.Time) []Action {
	if !s.started {
		return nil
	}
	return []Action{s.sendTable()}
}

// Tick runs the timers: the heartbeat, and the peer's silence.
func (s *Session) Tick(now time.Time) []Action {
	if !s.started {
		return nil
	}
	var acts []Action
	if !now.Before(s.beatAt) {
		s.seq++
		s.beats++
		acts = append(acts, SendHeartbeat{Heartbeat{From: s.cfg.Local, Seq: s.seq, Interval: s.cfg.Interval, Digest: TableDigest(s.rows())}})
		if s.beats%s.cfg.FullEvery == 0 {
			acts = append(acts, s.sendTable())
		}
		s.beatAt = s.beatAt.Add(s.cfg.Interval)
		if !s.beatAt.After(now) { // a stalled caller: no burst to catch up
			s.beatAt = now.Add(s.cfg.Interval)
		}
	}
	if s.peerUp && !now.Before(s.downAt) {
		s.peerUp = false
		var masters []string
		for id, r := range s.peer {
			if r.Master && s.modes[id] != ModePerRouter {
				masters = append(masters, id)
			}
		}
		slices.Sort(masters)
		acts = append(acts, PeerDown{Masters: masters})
		s.peer = nil
		acts = append(acts, s.recompute()...)
	}
	return acts
}

// NextDeadline is when the session next needs a Tick.
func (s *Session) NextDeadline() time.Time {
	if !s.started {
		return time.Time{}
	}
	if s.peerUp && s.downAt.Before(s.beatAt) {
		return s.downAt
	}
	return s.beatAt
}

// Mode returns how a router's VRRP must run now.
func (s *Session) Mode(router string) Mode { return s.modes[router] }

// PeerIsUp reports whether the peer's heartbeats arrive.
func (s *Session) PeerIsUp() bool { return s.peerUp }

// stage is where router id stands on this node.
func (s *Session) stage(id string) Stage {
	if _, ok := s.local[id]; !ok {
		return 0
	}
	p, ok := s.peer[id]
	switch {
	case !ok:
		return Listed
	case p.Stage >= Seen:
		return Joined
	default:
		return Seen
	}
}

// recompute derives every router's mode from the two tables and returns
// the changes. A router leaves at once when either side stops listing it;
// a backup joins (ModeSession) when both see each other's listing, and a
// router goes quiet only when the peer has joined too and not both claim
// to be its master.
func (s *Session) recompute() []Action {
	var acts []Action
	ids := make([]string, 0, len(s.local)+len(s.modes))
	for id := range s.local {
		ids = append(ids, id)
	}
	for id := range s.modes {
		if _, ok := s.local[id]; !ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		want := ModePerRouter
		if s.stage(id) == Joined {
			want = ModeSession
			// Both claiming master is a split brain: per-router adverts
			// must go on until VRRP's tie-break has a loser step down.
			if p := s.peer[id]; p.Stage == Joined && !(p.Master && s.local[id].Master) {
				want = ModeQuiet
			}
		}
		if s.modes[id] != want {
			if want == ModePerRouter {
				delete(s.modes, id)
			} else {
				s.modes[id] = want
			}
			acts = append(acts, SetMode{Router: id, Mode: want})
		}
	}
	return acts
}

func (s *Session) rows() []Row {
	out := make([]Row, 0, len(s.local))
	for id, l := range s.local {
		out = append(out, Row{Router: id, Master: l.Master, Priority: l.Priority, Stage: s.stage(id)})
	}
	return sortRows(out)
}

func (s *Session) sendTable() Action {
	return SendTable{Table{From: s.cfg.Local, Rows: s.rows()}}
}

func rowsOf(m map[string]Row) []Row {
	out := make([]Row, 0, len(m))
	for _, r := range m {
		out = append(out, r)
	}
	return sortRows(out)
}

// sortRows orders rows by router, as TableDigest needs.
func sortRows(rows []Row) []Row {
	slices.SortFunc(rows, func(a, b Row) int { return strings.Compare(a.Router, b.Router) })
	return rows
}

// TableDigest is a table's fingerprint (FNV-1a over its rows in router
// order).
func TableDigest(rows []Row) uint64 {
	h := fnv.New64a()
	for _, r := range rows {
		h.Write([]byte(r.Router))
		m := byte(0)
		if r.Master {
			m = 1
		}
		h.Write([]byte{0, m, r.Priority, byte(r.Stage)})
	}
	return h.Sum64()
}
