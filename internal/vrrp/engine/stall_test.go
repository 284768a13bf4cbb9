package engine

// Kernel tier: an engine whose process was not running (a loaded node) does
// not mistake its own stall for the master's death. Root only.

import (
	"context"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/vrrp"
)

// TestKernelFrozenBackupStaysBackup (v3 at 0.1s): the backup's process is
// stopped (SIGSTOP) for a second, far beyond Master_Down_Interval (0.38 s),
// three times, while the master goes on advertising. Each time it runs
// again its Master_Down_Timer has expired, but the master's adverts are
// waiting in its socket: it reads them before electing itself, and stays a
// backup. Neither side reports a transition.
func TestKernelFrozenBackupStaysBackup(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	const interval = 100 * time.Millisecond
	id := "router-" + randHex(4)
	a, b := pairNodes(t, id, 34, 1500)
	m := startEngine(t, "master", Options{Version: 3, AdvertInterval: interval, GARPDelay: -1})
	if err := m.e.Ensure(ctx, b.router); err != nil {
		t.Fatal(err)
	}
	waitFor(t, waitLong, "master", func() bool { return m.rec.is(id, vrrp.Master) })
	p := startAgent(t, a.router, t.TempDir(), interval)
	p.waitState(t, "backup")
	for i := range 3 {
		if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second) // the fault: the backup's process has no CPU
		if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		select {
		case st := <-p.states:
			t.Fatalf("freeze %d: the backup reported %s when it ran again", i+1, st)
		case <-p.done:
			t.Fatal("backup process exited")
		case <-time.After(time.Second):
		}
	}
	if got := m.rec.states(id); !slices.Equal(got, []vrrp.State{vrrp.Backup, vrrp.Master}) {
		t.Errorf("master reported %v", got)
	}
	if !hasAddr(t, b.ns, b.router.Device, b.router.VIP) || hasAddr(t, a.ns, a.router.Device, a.router.VIP) {
		t.Error("the VIP moved")
	}
}

// TestKernelFrozenPairStaysStable (v3 at 0.1s): both processes, master and
// backup, are stopped for a second (a whole host without CPU), three times.
// When they run again the backup's Master_Down_Timer has expired, and the
// master's advert is not there yet: the master, stopped too, is only about
// to send it. The backup's timer fired far later than due, which says its
// own process was not running; it gives the master one more advert interval
// and stays a backup.
func TestKernelFrozenPairStaysStable(t *testing.T) {
	requireRoot(t)
	const interval = 100 * time.Millisecond
	id := "router-" + randHex(4)
	a, b := pairNodes(t, id, 35, 1500)
	pm := startAgent(t, b.router, t.TempDir(), interval)
	pm.waitState(t, "backup")
	pm.waitState(t, "master")
	pb := startAgent(t, a.router, t.TempDir(), interval)
	pb.waitState(t, "backup")
	for i := range 3 {
		for _, p := range []*agentProc{pm, pb} {
			if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(time.Second)                  // the fault: neither process has a CPU
		for _, p := range []*agentProc{pb, pm} { // the backup first: the worse order
			if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case st := <-pb.states:
			t.Fatalf("freeze %d: the backup reported %s when it ran again", i+1, st)
		case st := <-pm.states:
			t.Fatalf("freeze %d: the master reported %s when it ran again", i+1, st)
		case <-time.After(time.Second):
		}
	}
	if !hasAddr(t, b.ns, b.router.Device, b.router.VIP) || hasAddr(t, a.ns, a.router.Device, a.router.VIP) {
		t.Error("the VIP moved")
	}
}

// TestKernelSlowRestartKeepsMaster (v3 at 0.1s): the agent holding the
// master stops for a restart and the next one starts only 1.5 s later (a
// host too loaded to restart a process within Master_Down_Interval, 0.38
// s). The stopping engine's last advert announced RestartAdvertInterval
// (1 s), which the backup adopted (RFC 5798 §6.4.2): it waits 3.8 s, the
// new engine adopts the master within them, and nobody changes state; the
// backup is back at 0.1 s adverts after the new engine's first advert.
func TestKernelSlowRestartKeepsMaster(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	const interval = 100 * time.Millisecond
	id := "router-" + randHex(4)
	a, b := pairNodes(t, id, 36, 1500)
	dir := t.TempDir()
	p := startAgent(t, a.router, dir, interval)
	p.waitState(t, "backup")
	p.waitState(t, "master")
	peer := startEngine(t, "peer", Options{Version: 3, AdvertInterval: interval, GARPDelay: -1})
	if err := peer.e.Ensure(ctx, b.router); err != nil {
		t.Fatal(err)
	}
	waitFor(t, waitLong, "peer backup", func() bool { return peer.rec.is(id, vrrp.Backup) })
	if err := p.cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(waitLong):
		t.Fatal("agent process ignored SIGUSR2")
	}
	waitFor(t, waitLong, "the backup to learn the restart interval", func() bool {
		st, _ := peer.e.Status(id)
		return st.Machine.MasterAdverInterval == DefaultRestartAdvertInterval
	})
	time.Sleep(1500 * time.Millisecond) // the fault: a slow restart
	if st := peer.state(t, id); st != vrrp.Backup {
		t.Fatalf("the backup is %v during the slow restart", st)
	}
	p = startAgent(t, a.router, dir, interval)
	p.waitState(t, "master") // adopted
	waitFor(t, waitLong, "the backup back at the configured interval", func() bool {
		st, _ := peer.e.Status(id)
		return st.Machine.MasterAdverInterval == interval
	})
	if got := peer.rec.states(id); !slices.Equal(got, []vrrp.State{vrrp.Backup}) {
		t.Errorf("the backup noticed the restart: %v", got)
	}
}
