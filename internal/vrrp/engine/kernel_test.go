package engine

// Kernel tier: native engines on two "network nodes" (namespaces whose ha-
// devices are joined by a veth pair). Root only.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/vrrp"
)

// side is one node of a pair with its engine.
type side struct {
	haNode
	te  *testEngine
	snf *sniffer // adverts arriving at this node (i.e. the peer's)
}

// electPair starts one engine per node and waits until exactly one is
// master: it holds the VIP, the excluded addresses and the routes, and its
// last report is master; the other holds nothing and its last report is
// backup. It returns (master, backup).
//
// With stagger, b starts once a is master, as on a real cloud where agents
// never start within the same millisecond. Without, both start together:
// their Master_Down_Timers expire together, both become master, and the
// equal-priority tie-break (RFC 5798 §6.4.3: the higher address wins) must
// leave exactly one; keepalived does exactly the same.
func electPair(t *testing.T, a, b *side, stagger bool) (*side, *side) {
	t.Helper()
	ctx := context.Background()
	id := a.router.ID
	for _, s := range []*side{a, b} {
		if err := s.te.e.Ensure(ctx, s.router); err != nil {
			t.Fatal(err)
		}
		if stagger && s == a {
			waitFor(t, waitLong, "first node master", func() bool { return a.te.rec.is(id, vrrp.Master) })
		}
	}
	var m, bk *side
	waitFor(t, waitLong, "exactly one master", func() bool {
		for _, c := range [][2]*side{{a, b}, {b, a}} {
			if c[0].te.rec.is(id, vrrp.Master) && c[1].te.rec.is(id, vrrp.Backup) &&
				c[0].te.state(t, id) == vrrp.Master && c[1].te.state(t, id) == vrrp.Backup &&
				c[0].holdsAll(t, true) && c[1].holdsAll(t, false) {
				m, bk = c[0], c[1]
				return true
			}
		}
		return false
	})
	mr, br := m.te.rec.states(id), bk.te.rec.states(id)
	t.Logf("election: master %s reported %v, backup %s reported %v", m.te.name, mr, bk.te.name, br)
	if !slices.Equal(mr, []vrrp.State{vrrp.Backup, vrrp.Master}) {
		t.Errorf("master %s reported %v, want [backup master]", m.te.name, mr)
	}
	// Nobody was master before: the winner elected itself at startup, not
	// because a master went down.
	if got := m.te.rec.causes(id); !slices.Equal(got, []vrrp.Cause{vrrp.CauseStartup, vrrp.CauseStartup}) {
		t.Errorf("master %s reported causes %v, want [startup startup]", m.te.name, got)
	}
	switch bc := bk.te.rec.causes(id); {
	case slices.Equal(br, []vrrp.State{vrrp.Backup}):
		if !slices.Equal(bc, []vrrp.Cause{vrrp.CauseStartup}) {
			t.Errorf("backup %s reported causes %v, want [startup]", bk.te.name, bc)
		}
	case !stagger && slices.Equal(br, []vrrp.State{vrrp.Backup, vrrp.Master, vrrp.Backup}):
		// Two masters for a moment, one yielded: a split brain healed.
		if !slices.Equal(bc, []vrrp.Cause{vrrp.CauseStartup, vrrp.CauseStartup, vrrp.CauseHigherPriority}) {
			t.Errorf("backup %s reported causes %v, want [startup startup higher_priority]", bk.te.name, bc)
		}
		// Both were master for a moment: the tie-break kept the higher
		// address.
		if m.router.Address.Addr().Less(bk.router.Address.Addr()) {
			t.Errorf("equal priorities: %s (%v) beat %s (%v), want the higher address", m.te.name, m.router.Address, bk.te.name, bk.router.Address)
		}
	default:
		t.Errorf("backup %s reported %v", bk.te.name, br)
	}
	// Until the backup has heard the master, a takeover of its would be
	// at startup, not for a master gone down: the tests fault a pair that
	// runs.
	waitFor(t, waitLong, "the backup to hear its master", func() bool {
		st, _ := bk.te.e.Status(id)
		return st.Machine.Master == m.router.Address.Addr()
	})
	return m, bk
}

// stable checks for d that nothing changes: same master, no report.
func stable(t *testing.T, d time.Duration, m, bk *side) {
	t.Helper()
	id := m.router.ID
	nm, nb := len(m.te.rec.states(id)), len(bk.te.rec.states(id))
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if m.te.state(t, id) != vrrp.Master || bk.te.state(t, id) != vrrp.Backup {
			t.Fatalf("mastership moved: %s %v, %s %v", m.te.name, m.te.state(t, id), bk.te.name, bk.te.state(t, id))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(m.te.rec.states(id)) != nm || len(bk.te.rec.states(id)) != nb {
		t.Fatalf("reports while stable: %v / %v", m.te.rec.states(id), bk.te.rec.states(id))
	}
}

func newPair(t *testing.T, opts Options, vrid uint8) (*side, *side) {
	t.Helper()
	requireRoot(t)
	id := "router-" + randHex(4)
	na, nb := pairNodes(t, id, vrid, 1500)
	a, b := &side{haNode: na}, &side{haNode: nb}
	for i, s := range []*side{a, b} {
		s.withRouterAddresses(t)
		s.snf = startSniffer(t, s.ns, s.router.Device)
		o := opts
		if o.StateDir != "" {
			o.StateDir = filepath.Join(o.StateDir, fmt.Sprint(i))
		}
		s.te = startEngine(t, string(rune('A'+i)), o)
	}
	return a, b
}

// TestKernelNativePairElectionAndFailover (RFC 5798 §6.4, v3 at 0.1s): two
// engines elect exactly one master, which alone holds the router's
// addresses and routes; address changes reach the master without flapping
// what stays; when the master's node dies (its engine stops without a word)
// the backup takes over after Master_Down_Interval; the dead node comes back
// clean as a backup (nopreempt), and takes over when the new master dies:
// failover both ways.
func TestKernelNativePairElectionAndFailover(t *testing.T) {
	opts := Options{Version: 3, AdvertInterval: 100 * time.Millisecond, GARPDelay: 300 * time.Millisecond}
	a, b := newPair(t, opts, 42)
	ctx := context.Background()
	id := a.router.ID
	// Gratuitous ARP as each node hears it from the other (ha- devices) or
	// from itself (the qr- stand-in's other end).
	haARP := map[*side]*arpSniffer{a: startARPSniffer(t, b.ns, b.router.Device), b: startARPSniffer(t, a.ns, a.router.Device)}
	qrARP := map[*side]*arpSniffer{a: startARPSniffer(t, a.ns, a.qrPeer), b: startARPSniffer(t, b.ns, b.qrPeer)}
	m, bk := electPair(t, a, b, false)
	stable(t, 1500*time.Millisecond, m, bk)
	// RFC 5798 §6.4.1: the new master announces every address, once at once
	// and once more after the GARP delay, 5 times each (keepalived's
	// garp_master_repeat); the backup announces nothing.
	garps := func(s *side) (int, int) {
		return haARP[s].count(s.router.VIP.Addr()), qrARP[s].count(s.router.Excluded[0].Prefix.Addr())
	}
	waitFor(t, waitLong, "two rounds of gratuitous ARP from the master", func() bool {
		v, x := garps(m)
		return v >= 2*DefaultGARPRepeat && x >= 2*DefaultGARPRepeat
	})
	if v, x := garps(bk); (v != 0 || x != 0) && !slices.Contains(bk.te.rec.states(id), vrrp.Master) {
		t.Errorf("the backup, never master, sent gratuitous ARP: VIP %d, excluded %d", v, x)
	}

	// Config changes: a new excluded address appears on the master only; the
	// address that stays is never removed and re-added; an unchanged Ensure
	// touches nothing.
	w := watchAddrs(t, m.ns)
	since := time.Now()
	kept := m.router.Excluded[0].Prefix
	added := netip.MustParsePrefix("10.99.1.1/24")
	for _, s := range []*side{m, bk} {
		s.router.Excluded = append(slices.Clone(s.router.Excluded), Address{Dev: s.router.Excluded[0].Dev, Prefix: added})
		if err := s.te.e.Ensure(ctx, s.router); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, waitLong, "the new address on the master", func() bool { return hasAddr(t, m.ns, m.router.Excluded[0].Dev, added) })
	if hasAddr(t, bk.ns, bk.router.Excluded[0].Dev, added) {
		t.Error("the backup got the new address")
	}
	for range 3 {
		if err := m.te.e.Ensure(ctx, m.router); err != nil {
			t.Fatal(err)
		}
	}
	// A last Ensure with a removal, waited for through the added address.
	for _, s := range []*side{m, bk} {
		s.router.Excluded = s.router.Excluded[:1]
		if err := s.te.e.Ensure(ctx, s.router); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, waitLong, "the removed address gone", func() bool { return !hasAddr(t, m.ns, m.router.Excluded[0].Dev, added) })
	if ev := w.changes(kept, since); len(ev) != 0 {
		t.Errorf("address %v flapped on config changes: %v", kept, ev)
	}
	if ev := w.changes(m.router.VIP, since); len(ev) != 0 {
		t.Errorf("VIP flapped on config changes: %v", ev)
	}
	if got := m.te.rec.states(id); len(got) != 2 {
		t.Errorf("config changes were reported as transitions: %v", got)
	}

	// The master's node dies: its engine stops without a word (what a
	// crashed agent leaves: addresses in place, no adverts).
	failover := func(dead, live *side) time.Duration {
		t.Helper()
		t0 := time.Now()
		if err := dead.te.e.Shutdown(ctx, false); err != nil {
			t.Fatal(err)
		}
		waitFor(t, waitLong, live.te.name+" takes over", func() bool {
			return live.te.rec.is(id, vrrp.Master) && live.holdsAll(t, true)
		})
		reported, _ := live.te.rec.last(id)
		if reported.cause != vrrp.CauseMasterDown {
			t.Errorf("%s took over with cause %q, want %q", live.te.name, reported.cause, vrrp.CauseMasterDown)
		}
		// On the wire: the dead node's last advert to the live one's first,
		// from the sniffers (kernel timestamps).
		deadAdverts := live.snf.from(dead.router.Address.Addr())
		var wire time.Duration
		if len(deadAdverts) > 0 {
			last := deadAdverts[len(deadAdverts)-1].at
			waitFor(t, waitLong, "the new master's adverts on the wire", func() bool {
				for _, p := range dead.snf.from(live.router.Address.Addr()) {
					if p.at.After(last) {
						wire = p.at.Sub(last)
						return true
					}
				}
				return false
			})
		}
		took := reported.at.Sub(t0)
		md := 3*opts.AdvertInterval + time.Duration(256-DefaultPriority)*opts.AdvertInterval/256
		t.Logf("failover %s → %s: last advert → first advert %v (Master_Down_Interval %v); stop → reported active with addresses %v",
			dead.te.name, live.te.name, wire.Round(time.Millisecond), md, took.Round(time.Millisecond))
		if wire != 0 && wire < 3*opts.AdvertInterval {
			t.Errorf("took over %v after the last advert, before Master_Down_Interval", wire)
		}
		if took > 5*time.Second {
			t.Errorf("failover took %v", took)
		}
		return took
	}
	failover(m, bk)

	// The dead node reboots (nothing left) and its agent starts again: it
	// stays backup (nopreempt), then takes over when the other dies.
	m.clearRouterState(t)
	m.te = startEngine(t, m.te.name+"'", opts)
	if err := m.te.e.Ensure(ctx, m.router); err != nil {
		t.Fatal(err)
	}
	waitFor(t, waitLong, "restarted node reports backup", func() bool { return m.te.rec.is(id, vrrp.Backup) })
	stable(t, 1500*time.Millisecond, bk, m)
	failover(bk, m)
}

// TestKernelGracefulResignTakesSkewTime (RFC 3768 §6.4.3, v2 with PASS at
// 1s): a master that stops gracefully sends priority 0 and removes its
// addresses; the backup takes over after Skew_Time ((256-50)/256 s), not
// Master_Down_Interval (3.8 s).
func TestKernelGracefulResignTakesSkewTime(t *testing.T) {
	opts := Options{Version: 2, AdvertInterval: time.Second, Password: "l3hatest", GARPDelay: -1}
	a, b := newPair(t, opts, 7)
	ctx := context.Background()
	id := a.router.ID
	m, bk := electPair(t, a, b, true)
	t0 := time.Now()
	if err := m.te.e.Shutdown(ctx, true); err != nil {
		t.Fatal(err)
	}
	if !m.holdsAll(t, false) {
		t.Error("resigned master still holds addresses after Shutdown returned")
	}
	if got := m.te.rec.states(id); !slices.Equal(got, []vrrp.State{vrrp.Backup, vrrp.Master, vrrp.Backup}) {
		t.Errorf("resigned master reported %v", got)
	}
	if got := m.te.rec.causes(id); !slices.Equal(got, []vrrp.Cause{vrrp.CauseStartup, vrrp.CauseStartup, vrrp.CauseShutdown}) {
		t.Errorf("resigned master reported causes %v, want [startup startup shutdown]", got)
	}
	waitFor(t, waitLong, "takeover", func() bool { return bk.te.rec.is(id, vrrp.Master) && bk.holdsAll(t, true) })
	ev, _ := bk.te.rec.last(id)
	if ev.cause != vrrp.CauseMasterResigned {
		t.Errorf("backup took over with cause %q, want %q", ev.cause, vrrp.CauseMasterResigned)
	}
	took := ev.at.Sub(t0)
	skew := time.Duration(256-DefaultPriority) * time.Second / 256
	t.Logf("graceful takeover after %v (Skew_Time %v, Master_Down_Interval %v)", took.Round(time.Millisecond), skew, 3*time.Second+skew)
	if took < skew/2 || took > 3*time.Second {
		t.Errorf("takeover after %v, want about Skew_Time %v and well below Master_Down_Interval", took, skew)
	}
	zero := false
	for _, p := range bk.snf.from(m.router.Address.Addr()) {
		zero = zero || p.priority == 0
	}
	if !zero {
		t.Error("no priority-0 advert seen from the resigning master")
	}
}

// TestKernelRestartAdoptsMastership (v3 at 0.1s): an agent restart (engine
// stopped for a restart, a new one started on the same state directory)
// keeps the master a master: the new engine adopts it from its saved
// routers before any Ensure, advertises within the backup's
// Master_Down_Interval, reports active once, and neither the addresses nor
// the peer move. Then Remove hands over at once.
func TestKernelRestartAdoptsMastership(t *testing.T) {
	opts := Options{Version: 3, AdvertInterval: 100 * time.Millisecond, StateDir: t.TempDir(), GARPDelay: -1}
	a, b := newPair(t, opts, 99)
	ctx := context.Background()
	id := a.router.ID
	m, bk := electPair(t, a, b, true)
	stable(t, 500*time.Millisecond, m, bk)
	dir := m.te.e.Options().StateDir
	if _, err := os.Stat(savedPath(dir, id)); err != nil {
		t.Fatalf("router not saved: %v", err)
	}
	w := watchAddrs(t, m.ns)
	wb := watchAddrs(t, bk.ns)
	t0 := time.Now()
	if err := m.te.e.Shutdown(ctx, false); err != nil {
		t.Fatal(err)
	}
	o := opts
	o.StateDir = dir
	m.te = startEngine(t, m.te.name+"'", o)
	adopted := time.Now()
	st, ok := m.te.e.Status(id)
	if !ok || !st.Adopted || st.Machine.State != vrrp.Master {
		t.Fatalf("not adopted by Start: %+v %v", st, ok)
	}
	waitFor(t, waitLong, "adopted state reported", func() bool { return m.te.rec.is(id, vrrp.Master) })
	// The agent's first Apply: nothing changes.
	if err := m.te.e.Ensure(ctx, m.router); err != nil {
		t.Fatal(err)
	}
	stable(t, time.Second, m, bk)
	gap, n := bk.snf.maxGap(m.router.Address.Addr(), t0.Add(-300*time.Millisecond), time.Now())
	md := 3*opts.AdvertInterval + time.Duration(256-DefaultPriority)*opts.AdvertInterval/256
	t.Logf("restart: stop → adopted by Start %v; longest advert gap %v over %d adverts (Master_Down_Interval %v)",
		adopted.Sub(t0).Round(time.Microsecond), gap.Round(time.Millisecond), n, md)
	if gap >= md {
		t.Errorf("adverts stopped for %v across the restart: the backup could have taken over", gap)
	}
	if got := m.te.rec.states(id); !slices.Equal(got, []vrrp.State{vrrp.Master}) {
		t.Errorf("adopting engine reported %v, want [master]", got)
	}
	if got := m.te.rec.causes(id); !slices.Equal(got, []vrrp.Cause{vrrp.CauseAdopted}) {
		t.Errorf("adopting engine reported causes %v, want [adopted]", got)
	}
	if got := bk.te.rec.states(id); !slices.Equal(got, []vrrp.State{vrrp.Backup}) {
		t.Errorf("peer reported %v across the restart, want [backup] only", got)
	}
	for _, p := range append(slices.Clone(m.router.Excluded), Address{Dev: m.router.Device, Prefix: m.router.VIP}) {
		if ev := w.changes(p.Prefix, t0); len(ev) != 0 {
			t.Errorf("%v changed across the restart: %v", p.Prefix, ev)
		}
		if ev := wb.changes(p.Prefix, t0); len(ev) != 0 {
			t.Errorf("%v changed on the peer across the restart: %v", p.Prefix, ev)
		}
	}

	// Remove: the master resigns; its addresses and saved file go; the peer
	// takes over after Skew_Time.
	t1 := time.Now()
	if err := m.te.e.Remove(ctx, id); err != nil {
		t.Fatal(err)
	}
	if !m.holdsAll(t, false) {
		t.Error("removed router left addresses")
	}
	if _, err := os.Stat(savedPath(dir, id)); !os.IsNotExist(err) {
		t.Errorf("saved router left: %v", err)
	}
	if r := m.te.e.Running(); len(r) != 0 {
		t.Errorf("still running %v", r)
	}
	waitFor(t, waitLong, "takeover after Remove", func() bool { return bk.te.rec.is(id, vrrp.Master) && bk.holdsAll(t, true) })
	ev, _ := bk.te.rec.last(id)
	t.Logf("takeover after Remove: %v", ev.at.Sub(t1).Round(time.Millisecond))
	if ev.cause != vrrp.CauseMasterResigned {
		t.Errorf("takeover after Remove with cause %q, want %q", ev.cause, vrrp.CauseMasterResigned)
	}
	if got := m.te.rec.states(id); !slices.Equal(got, []vrrp.State{vrrp.Master}) {
		t.Errorf("Remove reported %v", got)
	}
}

// agentEnv makes the test binary a stand-in agent (see TestMain): it runs
// an engine on a state directory for one router until SIGUSR2, which stops
// it for a restart, as `l3ha agent` does on SIGUSR2 (cancelled context, then
// a stop without resigning).
const agentEnv = "L3HA_TEST_VRRP_AGENT"

type agentSpec struct {
	Router   Router
	StateDir string
	Interval time.Duration
	// Version 0 is 3; Password and Pace are v2's.
	Version  int
	Password string
	Pace     time.Duration
}

func agentMain(spec string) int {
	var s agentSpec
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if s.Version == 0 {
		s.Version = 3
	}
	e, err := New(Options{Version: s.Version, AdvertInterval: s.Interval, Password: s.Password, Pace: s.Pace,
		StateDir: s.StateDir, GARPDelay: -1, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGUSR2)
	defer stop()
	if err := e.Start(ctx, func(_ string, st vrrp.State, _ vrrp.Cause) { fmt.Printf("state %s\n", st) }); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// The agent's first Apply, once its server answers.
	if err := e.Ensure(context.Background(), s.Router); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	<-e.Done()
	return 0
}

// agentProc is a stand-in agent process.
type agentProc struct {
	cmd    *exec.Cmd
	states chan string
	done   chan struct{}
}

func startAgent(t *testing.T, r Router, dir string, interval time.Duration) *agentProc {
	t.Helper()
	return startAgentSpec(t, agentSpec{Router: r, StateDir: dir, Interval: interval})
}

func startAgentSpec(t *testing.T, s agentSpec) *agentProc {
	t.Helper()
	spec, _ := json.Marshal(s)
	p := &agentProc{cmd: exec.Command(os.Args[0], "-test.run=^$"), states: make(chan string, 16), done: make(chan struct{})}
	// A race-enabled binary otherwise sleeps a second before exiting.
	p.cmd.Env = append(os.Environ(), agentEnv+"="+string(spec), "GORACE=atexit_sleep_ms=0")
	p.cmd.Stderr = newTestLogWriter(t)
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if st, ok := strings.CutPrefix(sc.Text(), "state "); ok {
				p.states <- st
			}
		}
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.kill() })
	return p
}

// kill ends the process by pid (SIGKILL) if it still runs.
func (p *agentProc) kill() {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *agentProc) waitState(t *testing.T, want string) {
	t.Helper()
	select {
	case st := <-p.states:
		if st != want {
			t.Fatalf("agent process reported %s, want %s", st, want)
		}
	case <-p.done:
		t.Fatal("agent process exited")
	case <-time.After(waitLong):
		t.Fatalf("agent process did not report %s", want)
	}
}

func newTestLogWriter(t *testing.T) *testLog {
	l := &testLog{t: t}
	t.Cleanup(func() {
		l.mu.Lock()
		l.done = true
		l.mu.Unlock()
	})
	return l
}

// TestKernelAgentProcessRestartKeepsMaster (v3 at 0.1s): the agent process
// holding the master is restarted (SIGUSR2, then a new process on the same
// state directory), three times. The new process adopts the router in Start, before its
// first Ensure; the longest silence on the wire stays below the backup's
// Master_Down_Interval, so the backup never notices: this is the restart
// gap the native driver promises.
func TestKernelAgentProcessRestartKeepsMaster(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	const interval = 100 * time.Millisecond
	id := "router-" + randHex(4)
	a, b := pairNodes(t, id, 33, 1500)
	dir := t.TempDir()
	p := startAgent(t, a.router, dir, interval)
	p.waitState(t, "backup")
	p.waitState(t, "master")
	peer := startEngine(t, "peer", Options{Version: 3, AdvertInterval: interval, GARPDelay: -1})
	if err := peer.e.Ensure(ctx, b.router); err != nil {
		t.Fatal(err)
	}
	snf := startSniffer(t, b.ns, b.router.Device)
	waitFor(t, waitLong, "peer backup", func() bool { return peer.rec.is(id, vrrp.Backup) })
	w := watchAddrs(t, a.ns)
	waitFor(t, waitLong, "the master's adverts on the sniffer", func() bool { return len(snf.from(a.router.Address.Addr())) >= 3 })

	var gaps []time.Duration
	for i := range 3 {
		t0 := time.Now()
		if err := p.cmd.Process.Signal(syscall.SIGUSR2); err != nil {
			t.Fatal(err)
		}
		select {
		case <-p.done:
		case <-time.After(waitLong):
			t.Fatal("agent process ignored SIGUSR2")
		}
		exited := time.Now()
		p = startAgent(t, a.router, dir, interval)
		p.waitState(t, "master") // adopted: its only report
		adopted := time.Now()
		end := adopted.Add(500 * time.Millisecond)
		waitFor(t, waitLong, "adverts after the restart", func() bool { return time.Now().After(end) })
		gap, n := snf.maxGap(a.router.Address.Addr(), t0.Add(-2*interval), end)
		gaps = append(gaps, gap)
		t.Logf("restart %d: SIGUSR2 → exited %v → new process adopted %v; longest advert gap %v (%d adverts)", i+1,
			exited.Sub(t0).Round(time.Millisecond), adopted.Sub(exited).Round(time.Millisecond), gap.Round(time.Millisecond), n)
		if os.Getenv("L3HA_TEST_VRRP_DEBUG") != "" {
			for _, s := range snf.from(a.router.Address.Addr()) {
				if s.at.After(t0.Add(-300 * time.Millisecond)) {
					t.Logf("advert at t0%+v", s.at.Sub(t0).Round(time.Millisecond))
				}
			}
		}
		select {
		case st := <-p.states:
			t.Errorf("adopting process also reported %s", st)
		default:
		}
	}
	md := 3*interval + time.Duration(256-DefaultPriority)*interval/256
	for _, g := range gaps {
		if g >= md {
			t.Errorf("adverts stopped for %v across a restart, Master_Down_Interval is %v", g, md)
		}
	}
	if got := peer.rec.states(id); !slices.Equal(got, []vrrp.State{vrrp.Backup}) {
		t.Errorf("the backup noticed the restarts: %v", got)
	}
	if ev := w.changes(a.router.VIP, time.Time{}); len(ev) != 0 {
		t.Errorf("VIP changed across restarts: %v", ev)
	}
}
