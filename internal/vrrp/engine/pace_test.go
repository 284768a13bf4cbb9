package engine

// Kernel tier: l3ha's pace (vrrp.Config.Pace) between two native engines that
// speak Neutron's VRRPv2 (2 s, PASS): adverts at the pace saying 2 s, a
// restart the backup does not notice although it lasts longer than three
// paces, and a node fault taken over in three paces, not Neutron's 6.8 s.

import (
	"context"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/vrrp"
)

func TestKernelPacedPairFailsOverInPacesAndRestartsWithoutTransition(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	const pace = 200 * time.Millisecond
	opts := Options{Version: 2, AdvertInterval: 2 * time.Second, Password: "l3ha-pw1", Pace: pace, GARPDelay: -1}
	id := "router-" + randHex(4)
	a, b := pairNodes(t, id, 61, 1500)
	spec := agentSpec{Router: a.router, StateDir: t.TempDir(), Interval: opts.AdvertInterval, Version: 2, Password: opts.Password, Pace: pace}
	p := startAgentSpec(t, spec)
	p.waitState(t, "backup")
	p.waitState(t, "master")
	peer := startEngine(t, "peer", opts)
	snf := startSniffer(t, b.ns, b.router.Device)
	if err := peer.e.Ensure(ctx, b.router); err != nil {
		t.Fatal(err)
	}
	paced := func() bool {
		st, _ := peer.e.Status(id)
		return st.Machine.State == vrrp.Backup && st.Machine.MasterAdverInterval == pace
	}
	waitFor(t, waitLong, "peer backup at the pace", paced)

	// On the wire: adverts every pace, each saying Neutron's 2 s.
	from := time.Now()
	waitFor(t, waitLong, "a second of adverts", func() bool { return time.Since(from) > time.Second })
	var n int
	for _, s := range snf.from(a.router.Address.Addr()) {
		if s.at.After(from) {
			n++
			if s.adverInt != 2 {
				t.Errorf("advert says %d s, want Neutron's 2", s.adverInt)
			}
		}
	}
	if gap, _ := snf.maxGap(a.router.Address.Addr(), from, time.Now()); n < 4 || gap > 2*pace {
		t.Errorf("%d adverts in a second, %v apart at most; want the pace (%v)", n, gap, pace)
	}

	// Restart: SIGUSR2 stops the agent (its last advert breaks the pace);
	// the next process starts 1.5 s later, longer than three paces and
	// skew (0.76 s) and shorter than Neutron's 6.8 s.
	t0 := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	<-p.done
	pause := time.NewTimer(1500 * time.Millisecond)
	<-pause.C
	p = startAgentSpec(t, spec)
	p.waitState(t, "master") // adopted
	waitFor(t, waitLong, "peer back at the pace", paced)
	gap, _ := snf.maxGap(a.router.Address.Addr(), t0.Add(-pace), time.Now())
	t.Logf("restart with a 1.5 s pause: longest advert gap %v", gap.Round(time.Millisecond))
	if gap < time.Second {
		t.Errorf("the restart left a gap of %v only: the test proves nothing", gap)
	}
	if got := peer.rec.states(id); !slices.Equal(got, []vrrp.State{vrrp.Backup}) {
		t.Errorf("the backup noticed the restart: %v", got)
	}

	// Node fault: the agent dies without a word (SIGKILL).
	down := time.Now()
	p.kill()
	waitFor(t, waitLong, "peer takes over", func() bool { return peer.rec.is(id, vrrp.Master) && b.holdsAll(t, true) })
	ev, _ := peer.rec.last(id)
	took := ev.at.Sub(down)
	t.Logf("node fault at a 0.2 s pace: taken over %v after the kill (Master_Down_Interval 0.76 s; Neutron's 6.8 s)", took.Round(time.Millisecond))
	if took > 3*time.Second {
		t.Errorf("failover took %v: the pace was not applied", took)
	}
}
