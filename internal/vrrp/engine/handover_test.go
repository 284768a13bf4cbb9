package engine

// Kernel tier: the graceful handover of a resigning master (see handover in
// loop.go). Root only.

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/vrrp"
)

// TestKernelGracefulHandoverLeavesNoGap (v3 at 0.1s): a master that stops
// gracefully sends priority 0 but keeps its addresses until it has heard the
// new master (plus HandoverGrace), so the router's addresses are never
// missing from both nodes; once they are gone from the old master it sends a
// second priority-0 advert, which the new master answers with another round
// of gratuitous ARP.
func TestKernelGracefulHandoverLeavesNoGap(t *testing.T) {
	opts := Options{Version: 3, AdvertInterval: 100 * time.Millisecond, GARPDelay: -1}
	a, b := newPair(t, opts, 11)
	ctx := context.Background()
	id := a.router.ID
	m, bk := electPair(t, a, b, true)
	excl := bk.router.Excluded[0]
	wm, wb := watchAddrs(t, m.ns), watchAddrs(t, bk.ns)
	garp := startARPSniffer(t, bk.ns, bk.qrPeer)
	t0 := time.Now()
	if err := m.te.e.Shutdown(ctx, true); err != nil {
		t.Fatal(err)
	}
	took := time.Since(t0)
	if !m.holdsAll(t, false) {
		t.Error("resigned master still holds addresses after Shutdown returned")
	}
	if got := m.te.rec.states(id); !slices.Equal(got, []vrrp.State{vrrp.Backup, vrrp.Master, vrrp.Backup}) {
		t.Errorf("resigned master reported %v", got)
	}
	waitFor(t, waitLong, "takeover", func() bool { return bk.te.rec.is(id, vrrp.Master) && bk.holdsAll(t, true) })
	var added, removed time.Time
	waitFor(t, waitLong, "address events", func() bool {
		for _, e := range wb.changes(excl.Prefix, t0) {
			if e.added && added.IsZero() {
				added = e.at
			}
		}
		for _, e := range wm.changes(excl.Prefix, t0) {
			if !e.added && removed.IsZero() {
				removed = e.at
			}
		}
		return !added.IsZero() && !removed.IsZero()
	})
	skew := time.Duration(256-DefaultPriority) * opts.AdvertInterval / 256
	t.Logf("Shutdown took %v; new master added %v at +%v, old master removed it at +%v (overlap %v; Skew_Time %v, HandoverGrace %v)",
		took.Round(time.Millisecond), excl.Prefix, added.Sub(t0).Round(time.Millisecond), removed.Sub(t0).Round(time.Millisecond),
		removed.Sub(added).Round(time.Millisecond), skew, DefaultHandoverGrace)
	if !removed.After(added) {
		t.Errorf("the old master removed %v at +%v, before the new master had it (+%v): traffic had nowhere to go",
			excl.Prefix, removed.Sub(t0), added.Sub(t0))
	}
	if took > 3*opts.AdvertInterval+skew+DefaultHandoverGrace+time.Second {
		t.Errorf("Shutdown took %v", took)
	}
	var zeros int
	waitFor(t, waitLong, "two priority-0 adverts", func() bool {
		zeros = 0
		for _, p := range bk.snf.from(m.router.Address.Addr()) {
			if p.priority == 0 && !p.at.Before(t0) {
				zeros++
			}
		}
		return zeros >= 2
	})
	// Gratuitous ARP on taking over (GARPRepeat announcements, the first at
	// once, the others later), and more on the second priority-0 advert
	// (which may replace the first ones still to come).
	waitFor(t, waitLong, "gratuitous ARP on taking over and again", func() bool { return garp.count(excl.Prefix.Addr()) > DefaultGARPRepeat })
	if got := bk.te.rec.states(id); !slices.Equal(got, []vrrp.State{vrrp.Backup, vrrp.Master}) {
		t.Errorf("new master reported %v, want [backup master]", got)
	}
}

// TestKernelGracefulHandoverWithoutBackup: with no backup to take over, a
// resigning master gives its addresses up after Master_Down_Interval plus
// HandoverGrace, the longest a live backup could take.
func TestKernelGracefulHandoverWithoutBackup(t *testing.T) {
	opts := Options{Version: 3, AdvertInterval: 100 * time.Millisecond, GARPDelay: -1}
	a, _ := newPair(t, opts, 12)
	ctx := context.Background()
	id := a.router.ID
	if err := a.te.e.Ensure(ctx, a.router); err != nil {
		t.Fatal(err)
	}
	waitFor(t, waitLong, "master", func() bool { return a.te.rec.is(id, vrrp.Master) && a.holdsAll(t, true) })
	t0 := time.Now()
	if err := a.te.e.Shutdown(ctx, true); err != nil {
		t.Fatal(err)
	}
	took := time.Since(t0)
	limit := 3*opts.AdvertInterval + time.Duration(256-DefaultPriority)*opts.AdvertInterval/256 + DefaultHandoverGrace
	t.Logf("Shutdown without a backup took %v (limit %v)", took.Round(time.Millisecond), limit)
	if took < limit-10*time.Millisecond || took > limit+time.Second {
		t.Errorf("Shutdown took %v, want about %v", took, limit)
	}
	if !a.holdsAll(t, false) {
		t.Error("resigned master still holds addresses after Shutdown returned")
	}
}
