package group

import (
	"slices"
	"testing"
	"time"
)

// net is two sessions and the messages in flight between them, delivered
// in order (or dropped) by the test, on a fake clock.
type net struct {
	t        *testing.T
	now      time.Time
	s        map[string]*Session
	inflight []msg
	// what the engines were told
	modes    map[string]map[string]Mode // node → router → mode
	down     map[string][][]string      // node → PeerDown.Masters, in order
	states   map[string][]PeerState
	masterOf map[string]string // router → node where it is master
	silenced string            // a dead node: its modes no longer matter
}

type msg struct {
	to   string
	hb   *Heartbeat
	tbl  *Table
	req  bool
	from string
}

const iv = 100 * time.Millisecond

func newNet(t *testing.T) *net {
	n := &net{t: t, now: time.Unix(1000, 0), s: map[string]*Session{},
		modes: map[string]map[string]Mode{"a": {}, "b": {}}, down: map[string][][]string{}, states: map[string][]PeerState{}, masterOf: map[string]string{}}
	n.s["a"] = New(Config{Local: "a", Peer: "b", Interval: iv, Skew: 10 * time.Millisecond})
	n.s["b"] = New(Config{Local: "b", Peer: "a", Interval: iv, Skew: 20 * time.Millisecond})
	return n
}

func other(node string) string {
	if node == "a" {
		return "b"
	}
	return "a"
}

func (n *net) apply(node string, acts []Action) {
	for _, a := range acts {
		switch a := a.(type) {
		case SendHeartbeat:
			h := a.Heartbeat
			n.inflight = append(n.inflight, msg{to: other(node), hb: &h, from: node})
		case SendTable:
			t := a.Table
			n.inflight = append(n.inflight, msg{to: other(node), tbl: &t, from: node})
		case RequestTable:
			n.inflight = append(n.inflight, msg{to: other(node), req: true, from: node})
		case SetMode:
			n.modes[node][a.Router] = a.Mode
		case PeerDown:
			n.down[node] = append(n.down[node], a.Masters)
		case PeerState:
			n.states[node] = append(n.states[node], a)
		}
		n.checkSafe()
	}
}

// checkSafe is the session's safety property: a router's master goes quiet
// (no per-router adverts) only while its backup takes liveness from the
// session.
func (n *net) checkSafe() {
	n.t.Helper()
	for r, m := range n.masterOf {
		if m == n.silenced {
			continue
		}
		b := other(m)
		if n.modes[m][r] == ModeQuiet && n.modes[b][r] == ModePerRouter {
			if _, listed := n.s[b].local[r]; listed {
				n.t.Fatalf("router %s: master %s quiet while backup %s waits for per-router adverts", r, m, b)
			}
		}
	}
}

// deliver delivers every message in flight (and those they cause).
func (n *net) deliver() {
	for len(n.inflight) > 0 {
		m := n.inflight[0]
		n.inflight = n.inflight[1:]
		s := n.s[m.to]
		switch {
		case m.hb != nil:
			n.apply(m.to, s.ReceiveHeartbeat(n.now, *m.hb))
		case m.tbl != nil:
			n.apply(m.to, s.ReceiveTable(n.now, *m.tbl))
		case m.req:
			n.apply(m.to, s.TableRequested(n.now))
		}
	}
}

// drop drops what node has in flight.
func (n *net) drop(from string) {
	n.inflight = slices.DeleteFunc(n.inflight, func(m msg) bool { return m.from == from })
}

// run advances the clock by d in steps, ticking both sessions and
// delivering (unless a node is silenced).
func (n *net) run(d time.Duration, silenced string) {
	n.silenced = silenced
	end := n.now.Add(d)
	for n.now.Before(end) {
		n.now = n.now.Add(5 * time.Millisecond)
		for _, node := range []string{"a", "b"} {
			if node == silenced {
				continue
			}
			n.apply(node, n.s[node].Tick(n.now))
		}
		if silenced != "" {
			n.drop(silenced)
		}
		n.deliver()
	}
}

func (n *net) setLocal(node string, rs ...Local) {
	for _, r := range rs {
		if r.Master {
			n.masterOf[r.Router] = node
		}
	}
	n.apply(node, n.s[node].SetLocal(n.now, rs))
}

func (n *net) start() {
	for _, node := range []string{"a", "b"} {
		n.apply(node, n.s[node].Start(n.now))
	}
}

func joined(t *testing.T, n *net) {
	t.Helper()
	masters := []Local{{"r1", true, 100}, {"r2", true, 100}, {"r3", true, 100}}
	backups := []Local{{"r1", false, 100}, {"r2", false, 100}, {"r3", false, 100}}
	n.setLocal("a", masters...)
	n.setLocal("b", backups...)
	n.start()
	n.run(3*iv, "")
	for _, node := range []string{"a", "b"} {
		for _, r := range []string{"r1", "r2", "r3"} {
			if m := n.modes[node][r]; m != ModeQuiet {
				t.Fatalf("%s: router %s in mode %d after the handshake, want quiet", node, r, m)
			}
		}
	}
}

func TestRoutersGoQuietOnlyOnceBothNodesJoined(t *testing.T) {
	n := newNet(t)
	joined(t, n) // checkSafe ran after every action of the handshake
}

func TestPeerSilenceFailsOverEveryMasterInOneTick(t *testing.T) {
	n := newNet(t)
	joined(t, n)
	n.run(iv, "a") // a dies: its heartbeats stop
	if len(n.down["b"]) != 0 {
		t.Fatalf("peer down after %s of silence: %v", iv, n.down["b"])
	}
	n.run(3*iv, "a")
	if len(n.down["b"]) != 1 || !slices.Equal(n.down["b"][0], []string{"r1", "r2", "r3"}) {
		t.Fatalf("PeerDown = %v, want once, with r1 r2 r3", n.down["b"])
	}
	for _, r := range []string{"r1", "r2", "r3"} {
		if n.modes["b"][r] != ModePerRouter {
			t.Errorf("%s after peer down: mode %d, want per-router VRRP again", r, n.modes["b"][r])
		}
	}
	if n.s["b"].PeerIsUp() {
		t.Error("peer still up")
	}
}

func TestDetectionTakesMultiplierIntervalsPlusSkew(t *testing.T) {
	n := newNet(t)
	joined(t, n)
	last := n.now
	deadline := n.s["b"].downAt
	// The last heartbeat from a arrived at most one step before last.
	want := 3*iv + 20*time.Millisecond
	if got := deadline.Sub(last); got > want || got < want-10*time.Millisecond {
		t.Fatalf("b's next deadline %s after the last delivery, want about %s", got, want)
	}
}

func TestALeavingRouterGoesBackToPerRouterVRRPAtOnce(t *testing.T) {
	n := newNet(t)
	joined(t, n)
	// a stops running r2 with this peer (say, r2 moves to keepalived):
	// it must advertise r2 itself before b learns it left.
	n.setLocal("a", Local{"r1", true, 100}, Local{"r3", true, 100})
	if n.modes["a"]["r2"] != ModePerRouter {
		t.Fatalf("a: r2 mode %d right after leaving, want per-router", n.modes["a"]["r2"])
	}
	n.deliver()
	if n.modes["b"]["r2"] != ModePerRouter {
		t.Fatalf("b: r2 mode %d after a's table, want per-router", n.modes["b"]["r2"])
	}
	if n.modes["b"]["r1"] != ModeQuiet {
		t.Fatalf("b: r1 left with r2")
	}
	// And joins again.
	n.setLocal("a", Local{"r1", true, 100}, Local{"r2", true, 100}, Local{"r3", true, 100})
	n.run(3*iv, "")
	if n.modes["a"]["r2"] != ModeQuiet || n.modes["b"]["r2"] != ModeQuiet {
		t.Fatalf("r2 did not join again: a %d, b %d", n.modes["a"]["r2"], n.modes["b"]["r2"])
	}
}

func TestABackupLeavingStopsTrustingTheSessionFirst(t *testing.T) {
	n := newNet(t)
	joined(t, n)
	n.setLocal("b", Local{"r1", false, 100}, Local{"r3", false, 100})
	if n.modes["b"]["r2"] != ModePerRouter {
		t.Fatalf("b: r2 mode %d right after leaving", n.modes["b"]["r2"])
	}
	n.deliver()
	if n.modes["a"]["r2"] != ModePerRouter {
		t.Fatalf("a: r2 mode %d after b left, want per-router (advertising again)", n.modes["a"]["r2"])
	}
}

func TestOneRoutersResignationMovesOnlyThatRouter(t *testing.T) {
	n := newNet(t)
	joined(t, n)
	n.states["b"] = nil
	// r2's ha- device went down on a: a no longer lists itself master.
	n.setLocal("a", Local{"r1", true, 100}, Local{"r2", false, 100}, Local{"r3", true, 100})
	n.deliver()
	if len(n.states["b"]) != 1 || n.states["b"][0] != (PeerState{Router: "r2", Master: false, Priority: 100}) {
		t.Fatalf("b heard %v, want r2's resignation only", n.states["b"])
	}
	if len(n.down["b"]) != 0 {
		t.Fatalf("peer down: %v", n.down["b"])
	}
}

func TestADifferentDigestAsksForTheTableOnceAnInterval(t *testing.T) {
	s := New(Config{Local: "b", Peer: "a", Interval: iv})
	now := time.Unix(1000, 0)
	s.Start(now)
	count := func(acts []Action) int {
		c := 0
		for _, a := range acts {
			if _, ok := a.(RequestTable); ok {
				c++
			}
		}
		return c
	}
	got := count(s.ReceiveHeartbeat(now, Heartbeat{From: "a", Interval: iv, Digest: 42}))
	got += count(s.ReceiveHeartbeat(now.Add(iv/2), Heartbeat{From: "a", Interval: iv, Digest: 42}))
	if got != 1 {
		t.Fatalf("%d table requests within one interval, want 1", got)
	}
	if count(s.ReceiveHeartbeat(now.Add(iv), Heartbeat{From: "a", Interval: iv, Digest: 42})) != 1 {
		t.Fatal("no request an interval later")
	}
	// Heartbeats from a node that is not the peer are not the peer's.
	if acts := s.ReceiveHeartbeat(now, Heartbeat{From: "c", Interval: iv}); len(acts) != 0 {
		t.Fatalf("a stranger's heartbeat: %v", acts)
	}
}

func TestAStalledCallerSendsOneHeartbeatNotABurst(t *testing.T) {
	s := New(Config{Local: "a", Peer: "b", Interval: iv})
	now := time.Unix(1000, 0)
	s.Start(now)
	acts := s.Tick(now.Add(10 * iv)) // the process was stopped for a second
	beats := 0
	for _, a := range acts {
		if _, ok := a.(SendHeartbeat); ok {
			beats++
		}
	}
	if beats != 1 {
		t.Fatalf("%d heartbeats after a stall, want 1", beats)
	}
	if next := s.NextDeadline(); next != now.Add(11*iv) {
		t.Fatalf("next heartbeat at +%s, want +%s", next.Sub(now), 11*iv)
	}
}

func TestATableBeforeAnyHeartbeatIsIgnored(t *testing.T) {
	s := New(Config{Local: "b", Peer: "a", Interval: iv})
	now := time.Unix(1000, 0)
	s.Start(now)
	s.SetLocal(now, []Local{{"r1", false, 100}})
	if acts := s.ReceiveTable(now, Table{From: "a", Rows: []Row{{Router: "r1", Master: true, Priority: 100, Stage: Joined}}}); len(acts) != 0 {
		t.Fatalf("acted on a table from a peer not heard: %v", acts)
	}
	if s.Mode("r1") != ModePerRouter {
		t.Fatal("joined without a live peer")
	}
}

func TestAPeerThatComesBackIsUpAgainAndItsRoutersRejoin(t *testing.T) {
	n := newNet(t)
	joined(t, n)
	n.run(5*iv, "a")
	if len(n.down["b"]) != 1 {
		t.Fatalf("PeerDown %v", n.down["b"])
	}
	// b took the routers over; a comes back believing it is still master
	// (a partition, not a crash): per-router VRRP settles who stays, the
	// session rejoins the routers only once both list them again.
	n.setLocal("b", Local{"r1", true, 100}, Local{"r2", true, 100}, Local{"r3", true, 100})
	n.masterOf = map[string]string{} // both claim: per-router VRRP decides
	n.run(3*iv, "")
	if !n.s["b"].PeerIsUp() {
		t.Fatal("peer not up again")
	}
	for _, node := range []string{"a", "b"} {
		if m := n.modes[node]["r1"]; m != ModeSession {
			t.Fatalf("%s: r1 mode %d while both claim it, want session (per-router adverts on)", node, m)
		}
	}
	// VRRP's tie-break: a (lower HA address, say) steps down.
	n.setLocal("a", Local{"r1", false, 100}, Local{"r2", false, 100}, Local{"r3", false, 100})
	n.masterOf = map[string]string{"r1": "b", "r2": "b", "r3": "b"}
	n.run(3*iv, "")
	for _, node := range []string{"a", "b"} {
		for _, r := range []string{"r1", "r2", "r3"} {
			if n.modes[node][r] != ModeQuiet {
				t.Fatalf("%s: %s mode %d after the peer came back", node, r, n.modes[node][r])
			}
		}
	}
	if len(n.down["b"]) != 1 {
		t.Fatalf("PeerDown again: %v", n.down["b"])
	}
}
