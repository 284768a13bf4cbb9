package keepalived

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// fakeProc is a keepalived that exists only in the test.
type fakeProc struct {
	pid        int
	exitOnTerm bool

	mu          sync.Mutex
	sigs        []syscall.Signal
	sigAt       []time.Time
	groupKilled bool
	done        chan struct{}
	once        sync.Once
}

func (p *fakeProc) Pid() int              { return p.pid }
func (p *fakeProc) Done() <-chan struct{} { return p.done }
func (p *fakeProc) Release()              {}
func (p *fakeProc) exit()                 { p.once.Do(func() { close(p.done) }) }

func (p *fakeProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *fakeProc) Signal(sig syscall.Signal) error {
	if p.exited() {
		return os.ErrProcessDone
	}
	p.mu.Lock()
	p.sigs = append(p.sigs, sig)
	p.sigAt = append(p.sigAt, time.Now())
	p.mu.Unlock()
	if sig == syscall.SIGKILL || sig == syscall.SIGTERM && p.exitOnTerm {
		p.exit()
	}
	return nil
}

func (p *fakeProc) KillGroup() {
	p.mu.Lock()
	p.groupKilled = true
	p.mu.Unlock()
	p.exit()
}

func (p *fakeProc) signals(sig syscall.Signal) (n int, at []time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, s := range p.sigs {
		if s == sig {
			n++
			at = append(at, p.sigAt[i])
		}
	}
	return n, at
}

// fakeStarter hands out fakeProcs and remembers them.
type fakeStarter struct {
	mu         sync.Mutex
	procs      []*fakeProc
	specs      []procSpec
	startedAt  []time.Time
	fail       int // fail this many starts first
	exitOnTerm bool
}

func (s *fakeStarter) start(spec procSpec) (process, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail > 0 {
		s.fail--
		return nil, errors.New("fake start failure")
	}
	p := &fakeProc{pid: 1000 + len(s.procs), exitOnTerm: s.exitOnTerm, done: make(chan struct{})}
	s.procs = append(s.procs, p)
	s.specs = append(s.specs, spec)
	s.startedAt = append(s.startedAt, time.Now())
	return p, nil
}

func (s *fakeStarter) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.procs)
}

func (s *fakeStarter) last() *fakeProc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.procs[len(s.procs)-1]
}

type fakeManager struct {
	*Manager
	starter   *fakeStarter
	watches   []watchSpec
	readyFlag bool
	wmu       sync.Mutex
}

func newFakeManager(t *testing.T, opts Options) *fakeManager {
	t.Helper()
	if opts.StateDir == "" {
		opts.StateDir = t.TempDir()
	}
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	fm := &fakeManager{Manager: m, starter: &fakeStarter{exitOnTerm: true}, readyFlag: true}
	m.start = fm.starter.start
	m.watch = func(s watchSpec) (func(), error) {
		fm.wmu.Lock()
		defer fm.wmu.Unlock()
		if s.Namespace == "missing" {
			return nil, errors.New("no such namespace")
		}
		fm.watches = append(fm.watches, s)
		s.Report(stateOf(false))
		return func() {}, nil
	}
	m.ready = func(*router) bool {
		fm.wmu.Lock()
		defer fm.wmu.Unlock()
		return fm.readyFlag
	}
	return fm
}

func testConfig(n int) Config {
	c := Config{VRID: 7, HAInterface: "ha-00000000-01", AdvertInt: time.Second}
	for i := range n {
		c.Excluded = append(c.Excluded, Address{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i), 1}), 24), Dev: "qr-00000000-01"})
	}
	return c
}

func readConf(t *testing.T, m *Manager, id string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(m.Dir(id), ConfFile))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustRender(t *testing.T, c Config) []byte {
	t.Helper()
	b, err := Render(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCoalescedReload: many config changes inside one ReloadDelay window give
// exactly one SIGHUP (LP#1647432), which comes after the last change was
// written; an unchanged config gives none.
func TestCoalescedReload(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		m := newFakeManager(t, Options{ReloadDelay: 300 * time.Millisecond})
		defer m.Close()
		if err := m.Ensure(ctx, "r1", "ns1", testConfig(0)); err != nil {
			t.Fatal(err)
		}
		if m.starter.count() != 1 {
			t.Fatalf("starts = %d, want 1", m.starter.count())
		}
		p := m.starter.last()
		if !slices.Contains(m.starter.specs[0].Args, "--dont-fork") || m.starter.specs[0].Namespace != "ns1" {
			t.Errorf("start spec = %+v", m.starter.specs[0])
		}

		// Unchanged: nothing, however often and however long.
		for range 5 {
			if err := m.Ensure(ctx, "r1", "ns1", testConfig(0)); err != nil {
				t.Fatal(err)
			}
			if st, _ := m.Status("r1"); st.ReloadPending {
				t.Fatal("reload scheduled for an unchanged config")
			}
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if n, _ := p.signals(syscall.SIGHUP); n != 0 {
			t.Fatalf("unchanged config sent %d SIGHUPs", n)
		}

		// Ten changes 20ms apart: one SIGHUP.
		start := time.Now()
		for i := 1; i <= 10; i++ {
			if err := m.Ensure(ctx, "r1", "ns1", testConfig(i)); err != nil {
				t.Fatal(err)
			}
			if got := readConf(t, m.Manager, "r1"); string(got) != string(mustRender(t, testConfig(i))) {
				t.Fatalf("change %d not written at once", i)
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		n, at := p.signals(syscall.SIGHUP)
		if n != 1 {
			t.Fatalf("10 changes in one window sent %d SIGHUPs, want 1", n)
		}
		if d := at[0].Sub(start); d != 300*time.Millisecond {
			t.Errorf("SIGHUP %v after the first change, want one ReloadDelay (300ms)", d)
		}
		st, _ := m.Status("r1")
		if st.Reloads != 1 || st.ReloadPending || st.Starts != 1 || st.PID != p.pid {
			t.Errorf("status = %+v", st)
		}
		if _, err := os.Stat(filepath.Join(m.Dir("r1"), reloadMarker)); !os.IsNotExist(err) {
			t.Errorf("reload marker left after the SIGHUP: %v", err)
		}

		// A storm of 100 changes, one every 50ms: SIGHUPs at least ReloadDelay
		// apart, and the last change still gets one.
		for i := 11; i <= 110; i++ {
			if err := m.Ensure(ctx, "r1", "ns1", testConfig(i)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		lastChange := time.Now().Add(-50 * time.Millisecond)
		time.Sleep(time.Second)
		synctest.Wait()
		n, at = p.signals(syscall.SIGHUP)
		storm := n - 1
		if storm < 10 || storm > 5000/300+2 {
			t.Errorf("storm of 100 changes over 5s sent %d SIGHUPs, want about 5s/300ms", storm)
		}
		for i := 1; i < len(at); i++ {
			if gap := at[i].Sub(at[i-1]); gap < 300*time.Millisecond {
				t.Errorf("SIGHUPs %d and %d only %v apart", i-1, i, gap)
			}
		}
		if !at[len(at)-1].After(lastChange) {
			t.Error("last change of the storm got no SIGHUP")
		}
		if p.exited() || m.starter.count() != 1 {
			t.Error("keepalived restarted for a config change")
		}
	})
}

// TestReloadWaitsUntilReady: a SIGHUP to a keepalived that has not finished
// starting would kill it, so the reload waits.
func TestReloadWaitsUntilReady(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		m := newFakeManager(t, Options{ReloadDelay: 200 * time.Millisecond})
		defer m.Close()
		m.readyFlag = false
		if err := m.Ensure(ctx, "r1", "ns1", testConfig(0)); err != nil {
			t.Fatal(err)
		}
		if err := m.Ensure(ctx, "r1", "ns1", testConfig(1)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		p := m.starter.last()
		if n, _ := p.signals(syscall.SIGHUP); n != 0 {
			t.Fatalf("SIGHUP sent before keepalived was ready")
		}
		if st, _ := m.Status("r1"); !st.ReloadPending {
			t.Fatal("reload forgotten while waiting")
		}
		m.wmu.Lock()
		m.readyFlag = true
		m.wmu.Unlock()
		time.Sleep(200 * time.Millisecond)
		synctest.Wait()
		if n, _ := p.signals(syscall.SIGHUP); n != 1 {
			t.Fatalf("SIGHUPs = %d, want 1 once ready", n)
		}
	})
}

// TestRespawnBackoff: a keepalived that dies is started again after
// MinBackoff, doubling up to MaxBackoff while it keeps dying, and back to
// MinBackoff once it has lived long enough.
func TestRespawnBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		m := newFakeManager(t, Options{MinBackoff: time.Second, MaxBackoff: 8 * time.Second})
		defer m.Close()
		if err := m.Ensure(ctx, "r1", "ns1", testConfig(0)); err != nil {
			t.Fatal(err)
		}
		var gaps []time.Duration
		for range 6 {
			n := m.starter.count()
			died := time.Now()
			m.starter.last().exit()
			for m.starter.count() == n {
				time.Sleep(10 * time.Millisecond)
			}
			gaps = append(gaps, m.starter.startedAt[n].Sub(died))
		}
		want := []time.Duration{1 * time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second, 8 * time.Second}
		for i := range want {
			if gaps[i] != want[i] {
				t.Errorf("respawn %d after %v, want %v (all: %v)", i, gaps[i], want[i], gaps)
			}
		}
		// Leftovers of a dead keepalived (its VRRP child) are killed before
		// the next one starts, not at once (the child hands over first).
		for _, p := range m.starter.procs[:len(m.starter.procs)-1] {
			if !p.groupKilled {
				t.Errorf("process group of dead pid %d not killed before respawn", p.pid)
			}
		}
		// A long life resets the backoff.
		time.Sleep(time.Minute)
		n := m.starter.count()
		died := time.Now()
		m.starter.last().exit()
		for m.starter.count() == n {
			time.Sleep(10 * time.Millisecond)
		}
		if gap := m.starter.startedAt[n].Sub(died); gap != time.Second {
			t.Errorf("respawn after a long life took %v, want 1s", gap)
		}
		st, _ := m.Status("r1")
		if st.Starts != 8 || st.PID != m.starter.last().pid {
			t.Errorf("status = %+v", st)
		}
	})
}

// TestEnsureDuringBackoff: while a respawn is pending Ensure writes the new
// config but neither starts early nor signals the dead process; the respawn
// reads the new config.
func TestEnsureDuringBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		m := newFakeManager(t, Options{MinBackoff: 5 * time.Second})
		defer m.Close()
		if err := m.Ensure(ctx, "r1", "ns1", testConfig(0)); err != nil {
			t.Fatal(err)
		}
		first := m.starter.last()
		first.exit()
		synctest.Wait()
		if err := m.Ensure(ctx, "r1", "ns1", testConfig(3)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if m.starter.count() != 1 {
			t.Fatal("Ensure started keepalived during the backoff")
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if m.starter.count() != 2 {
			t.Fatalf("starts = %d, want 2", m.starter.count())
		}
		if n, _ := first.signals(syscall.SIGHUP); n != 0 {
			t.Error("dead keepalived signalled")
		}
		if n, _ := m.starter.last().signals(syscall.SIGHUP); n != 0 {
			t.Error("fresh keepalived signalled: it read the new config when it started")
		}
		if string(readConf(t, m.Manager, "r1")) != string(mustRender(t, testConfig(3))) {
			t.Error("new config not on disk")
		}
	})
}

// TestStartFailureRetried: a failing start is reported and retried with
// backoff.
func TestStartFailureRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := newFakeManager(t, Options{MinBackoff: time.Second})
		defer m.Close()
		m.starter.fail = 2
		if err := m.Ensure(context.Background(), "r1", "ns1", testConfig(0)); err == nil {
			t.Fatal("Ensure hid a failed start")
		}
		time.Sleep(1500 * time.Millisecond)
		synctest.Wait()
		if m.starter.count() != 0 {
			t.Fatal("second failure not simulated")
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if m.starter.count() != 1 {
			t.Fatalf("starts = %d after retries, want 1", m.starter.count())
		}
	})
}

// TestRemove: SIGTERM and files gone; a keepalived that ignores SIGTERM is
// SIGKILLed (with its process group) after StopTimeout; nothing respawns.
func TestRemove(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		m := newFakeManager(t, Options{StopTimeout: 3 * time.Second})
		defer m.Close()
		if err := m.Ensure(ctx, "r1", "ns1", testConfig(1)); err != nil {
			t.Fatal(err)
		}
		p := m.starter.last()
		if err := m.Ensure(ctx, "r1", "ns1", testConfig(2)); err != nil { // pending reload
			t.Fatal(err)
		}
		start := time.Now()
		if err := m.Remove(ctx, "r1"); err != nil {
			t.Fatal(err)
		}
		if time.Since(start) != 0 {
			t.Errorf("Remove of an obedient keepalived took %v", time.Since(start))
		}
		if n, _ := p.signals(syscall.SIGTERM); n != 1 || p.groupKilled {
			t.Errorf("SIGTERMs = %d, group killed = %v", n, p.groupKilled)
		}
		if _, err := os.Stat(m.Dir("r1")); !os.IsNotExist(err) {
			t.Errorf("router directory left: %v", err)
		}
		if _, ok := m.Status("r1"); ok || len(m.Routers()) != 0 {
			t.Error("router still known")
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if m.starter.count() != 1 {
			t.Error("removed keepalived respawned")
		}
		if n, _ := p.signals(syscall.SIGHUP); n != 0 {
			t.Error("pending reload fired after Remove")
		}

		// Stubborn.
		m.starter.exitOnTerm = false
		if err := m.Ensure(ctx, "r2", "ns2", testConfig(1)); err != nil {
			t.Fatal(err)
		}
		p = m.starter.last()
		start = time.Now()
		if err := m.Remove(ctx, "r2"); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != 3*time.Second || !p.groupKilled {
			t.Errorf("stubborn keepalived: Remove took %v (want StopTimeout 3s), group killed %v", d, p.groupKilled)
		}

		// A cancelled context cuts the wait short.
		if err := m.Ensure(ctx, "r3", "ns3", testConfig(1)); err != nil {
			t.Fatal(err)
		}
		p = m.starter.last()
		cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		start = time.Now()
		if err := m.Remove(cctx, "r3"); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != 500*time.Millisecond || !p.groupKilled {
			t.Errorf("Remove with a 500ms context took %v, group killed %v", d, p.groupKilled)
		}

		// Unknown router: fine.
		if err := m.Remove(ctx, "nope"); err != nil {
			t.Errorf("Remove of an unknown router: %v", err)
		}
	})
}

// TestClose: keepalived keeps running (the next agent adopts it), a pending
// reload is sent at once, nothing respawns, and the Manager refuses work.
func TestClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		m := newFakeManager(t, Options{})
		if err := m.Ensure(ctx, "r1", "ns1", testConfig(0)); err != nil {
			t.Fatal(err)
		}
		p := m.starter.last()
		if err := m.Ensure(ctx, "r1", "ns1", testConfig(1)); err != nil {
			t.Fatal(err)
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		if n, _ := p.signals(syscall.SIGHUP); n != 1 {
			t.Errorf("pending reload not flushed by Close (%d SIGHUPs)", n)
		}
		if n, _ := p.signals(syscall.SIGTERM); n != 0 || p.exited() {
			t.Error("Close stopped keepalived")
		}
		p.exit()
		time.Sleep(time.Minute)
		synctest.Wait()
		if m.starter.count() != 1 {
			t.Error("respawned after Close")
		}
		if err := m.Ensure(ctx, "r1", "ns1", testConfig(0)); !errors.Is(err, ErrClosed) {
			t.Errorf("Ensure after Close: %v", err)
		}
		if err := m.Remove(ctx, "r1"); !errors.Is(err, ErrClosed) {
			t.Errorf("Remove after Close: %v", err)
		}
		if _, err := m.Adopt(ctx); !errors.Is(err, ErrClosed) {
			t.Errorf("Adopt after Close: %v", err)
		}
		if err := m.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})
}

func TestEnsureRejects(t *testing.T) {
	ctx := context.Background()
	m := newFakeManager(t, Options{})
	defer m.Close()
	for name, f := range map[string]func() error{
		"router id with slash": func() error { return m.Ensure(ctx, "../x", "ns", testConfig(0)) },
		"empty router id":      func() error { return m.Ensure(ctx, "", "ns", testConfig(0)) },
		"config of another":    func() error { c := testConfig(0); c.RouterID = "r2"; return m.Ensure(ctx, "r1", "ns", c) },
		"bad namespace":        func() error { return m.Ensure(ctx, "r1", "a b", testConfig(0)) },
		"bad config":           func() error { c := testConfig(0); c.VRID = 0; return m.Ensure(ctx, "r1", "ns", c) },
		"missing namespace":    func() error { return m.Ensure(ctx, "r1", "missing", testConfig(0)) },
	} {
		if err := f(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if m.starter.count() != 0 {
		t.Errorf("%d keepalived started for rejected routers", m.starter.count())
	}
	if err := m.Ensure(ctx, "r1", "ns1", testConfig(0)); err != nil {
		t.Fatal(err)
	}
	if err := m.Ensure(ctx, "r1", "ns2", testConfig(0)); err == nil {
		t.Error("namespace change accepted")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := m.Ensure(cctx, "r9", "ns9", testConfig(0)); err == nil {
		t.Error("cancelled context accepted")
	}
}

// TestWatcherFollowsConfig: the watcher watches the config's VIP with one
// advert interval of debounce, and is replaced when the VRID changes.
func TestWatcherFollowsConfig(t *testing.T) {
	ctx := context.Background()
	var got []string
	var mu sync.Mutex
	m := newFakeManager(t, Options{OnTransition: func(id, s string) {
		mu.Lock()
		got = append(got, id+"="+s)
		mu.Unlock()
	}})
	defer m.Close()
	c := testConfig(0)
	c.AdvertInt = 3 * time.Second
	if err := m.Ensure(ctx, "r1", "ns1", c); err != nil {
		t.Fatal(err)
	}
	if err := m.Ensure(ctx, "r1", "ns1", testConfig(1)); err != nil { // advert 1s
		t.Fatal(err)
	}
	c = testConfig(1)
	c.VRID = 8
	if err := m.Ensure(ctx, "r1", "ns1", c); err != nil {
		t.Fatal(err)
	}
	if err := m.Ensure(ctx, "r1", "ns1", c); err != nil {
		t.Fatal(err)
	}
	if len(m.watches) != 3 {
		t.Fatalf("watchers started = %d, want 3", len(m.watches))
	}
	w := m.watches
	if w[0].VIP.String() != "169.254.0.7/24" || w[0].Delay != FlapHold(3*time.Second) || w[1].Delay != time.Second || w[2].VIP.String() != "169.254.0.8/24" || w[2].Namespace != "ns1" {
		t.Errorf("watch specs = %+v", w)
	}
	if st, _ := m.Status("r1"); st.State != "standby" {
		t.Errorf("state = %q", st.State)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(got) != "[r1=standby r1=standby r1=standby]" {
		t.Errorf("transitions = %v", got)
	}
}

// TestCloseBeforeReady: a keepalived still starting is not signalled by
// Close; the reload marker stays for the next agent's Adopt.
func TestCloseBeforeReady(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		m := newFakeManager(t, Options{})
		m.readyFlag = false
		if err := m.Ensure(ctx, "r1", "ns1", testConfig(0)); err != nil {
			t.Fatal(err)
		}
		if err := m.Ensure(ctx, "r1", "ns1", testConfig(1)); err != nil {
			t.Fatal(err)
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		if n, _ := m.starter.last().signals(syscall.SIGHUP); n != 0 {
			t.Error("SIGHUP sent to a keepalived that was not ready")
		}
		if _, err := os.Stat(filepath.Join(m.Dir("r1"), reloadMarker)); err != nil {
			t.Errorf("reload marker: %v", err)
		}
	})
}
