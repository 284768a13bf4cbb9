package engine

// Kernel tier: a router whose ha- device goes down is in fault, as
// keepalived's FAULT state (see enterFault in loop.go). Root only.

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/vrrp"
)

// bridgedPair is newPair with the two ha- devices plugged into a bridge in a
// third namespace, as on a network node (the ha- veth's peer is on the HA
// network's bridge), so that one ha- device going down leaves the other's
// carrier up. It also returns the switch namespace and each side's port on
// the bridge.
func bridgedPair(t *testing.T, opts Options, vrid uint8) (a, b *side, sw string, ports [2]string) {
	t.Helper()
	requireRoot(t)
	id := "router-" + randHex(4)
	sw = newNS(t)
	run(t, "ip", "-n", sw, "link", "add", "br0", "type", "bridge")
	run(t, "ip", "-n", sw, "link", "set", "br0", "up")
	var sides [2]*side
	for i, host := range []byte{10, 11} {
		ns := newNS(t)
		dev := "ha-" + randHex(5)[:8] + "-" + string(rune('a'+i))
		port := "sw" + randHex(4)[:6] + string(rune('a'+i))
		vethPair(t, ns, dev, sw, port, 1500)
		ports[i] = port
		run(t, "ip", "-n", sw, "link", "set", port, "master", "br0")
		ha := netip.PrefixFrom(netip.AddrFrom4([4]byte{169, 254, 192, host}), 18)
		addAddr(t, ns, dev, ha)
		s := &side{haNode: haNode{ns: ns, router: testRouter(id, ns, dev, vrid, ha)}}
		s.withRouterAddresses(t)
		s.snf = startSniffer(t, s.ns, s.router.Device)
		s.te = startEngine(t, string(rune('A'+i)), opts)
		sides[i] = s
	}
	return sides[0], sides[1], sw, ports
}

func setLink(t *testing.T, s *side, up bool) {
	t.Helper()
	state := "down"
	if up {
		state = "up"
	}
	run(t, "ip", "-n", s.ns, "link", "set", s.router.Device, state)
}

// TestKernelHADeviceDownIsAFault (v3 at 0.1s): the master's ha- device goes
// down (the L3 HA blog's test): the master gives its addresses up within an
// advert interval and reports standby, the backup takes over after
// Master_Down_Interval; when the device is up again the old master is a
// backup and stays one (nopreempt), instead of being a second master that
// wins the tie-break. A backup whose ha- device is down never elects itself.
func TestKernelHADeviceDownIsAFault(t *testing.T) {
	opts := Options{Version: 3, AdvertInterval: 100 * time.Millisecond, GARPDelay: -1}
	a, b, _, _ := bridgedPair(t, opts, 21)
	id := a.router.ID
	m, bk := electPair(t, a, b, true)

	t0 := time.Now()
	setLink(t, m, false)
	waitFor(t, waitLong, "the master to give up", func() bool {
		st, _ := m.te.e.Status(id)
		return st.Fault && m.te.rec.is(id, vrrp.Backup) && m.holdsAll(t, false)
	})
	gaveUp := time.Since(t0)
	waitFor(t, waitLong, "the backup to take over", func() bool { return bk.te.rec.is(id, vrrp.Master) && bk.holdsAll(t, true) })
	tookOver := time.Since(t0)
	t.Logf("ha- device down on the master: it gave up after %v, the backup took over after %v", gaveUp.Round(time.Millisecond), tookOver.Round(time.Millisecond))
	if gaveUp > opts.AdvertInterval+time.Second {
		t.Errorf("the master gave its addresses up %v after its ha- device went down", gaveUp)
	}
	if got := m.te.rec.states(id); !slices.Equal(got, []vrrp.State{vrrp.Backup, vrrp.Master, vrrp.Backup}) {
		t.Errorf("faulted master reported %v", got)
	}
	if got := m.te.rec.causes(id); !slices.Equal(got, []vrrp.Cause{vrrp.CauseStartup, vrrp.CauseStartup, CauseFault}) {
		t.Errorf("faulted master reported causes %v, want [startup startup fault]", got)
	}
	if ev, _ := bk.te.rec.last(id); ev.cause != vrrp.CauseMasterDown {
		t.Errorf("backup took over with cause %q, want %q", ev.cause, vrrp.CauseMasterDown)
	}

	// Back up: a backup, and it stays one.
	setLink(t, m, true)
	waitFor(t, waitLong, "the old master to be a backup", func() bool {
		st, _ := m.te.e.Status(id)
		return !st.Fault && st.Machine.State == vrrp.Backup
	})
	stable(t, 1500*time.Millisecond, bk, m)
	if !m.holdsAll(t, false) || !bk.holdsAll(t, true) {
		t.Error("addresses moved after the ha- device came back")
	}

	// A backup with its ha- device down hears no master: it must not elect
	// itself (its Master_Down_Timer finds the device down).
	setLink(t, m, false)
	n := len(m.te.rec.states(id))
	end := time.Now().Add(time.Second)
	for time.Now().Before(end) {
		if m.holdsVIP(t) || m.te.state(t, id) == vrrp.Master {
			t.Fatal("a backup with its ha- device down elected itself")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st, _ := m.te.e.Status(id); !st.Fault {
		t.Errorf("backup with its ha- device down not in fault: %+v", st.Machine)
	}
	if got := m.te.rec.states(id); len(got) != n {
		t.Errorf("faulted backup reported %v", got[n:])
	}
	setLink(t, m, true)
	waitFor(t, waitLong, "the backup to be back", func() bool {
		st, _ := m.te.e.Status(id)
		return !st.Fault && st.Machine.State == vrrp.Backup
	})
	stable(t, time.Second, bk, m)

	// The engine stops cleanly with a router in fault.
	setLink(t, m, false)
	waitFor(t, waitLong, "fault", func() bool { st, _ := m.te.e.Status(id); return st.Fault })
	if err := m.te.e.Remove(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if _, ok := m.te.e.Status(id); ok {
		t.Error("removed router still runs")
	}
}

// TestKernelSplitBrainWinnerAnnounces (v3 at 0.1s): the HA network is cut
// between the two nodes (the backup's port leaves the bridge; every link
// stays up), so the backup becomes a second master, announcing the
// router's addresses; when the network heals, the equal-priority tie-break
// leaves one master, and that one announces the addresses again (gratuitous
// ARP, as keepalived does when it hears a lower-priority master), so that
// traffic the loser drew to itself comes back.
func TestKernelSplitBrainWinnerAnnounces(t *testing.T) {
	opts := Options{Version: 3, AdvertInterval: 100 * time.Millisecond, GARPDelay: -1}
	a, b, sw, ports := bridgedPair(t, opts, 22)
	id := a.router.ID
	m, bk := electPair(t, a, b, true)
	port := ports[0]
	if bk == b {
		port = ports[1]
	}
	arp := map[*side]*arpSniffer{m: startARPSniffer(t, m.ns, m.qrPeer), bk: startARPSniffer(t, bk.ns, bk.qrPeer)}
	excl := m.router.Excluded[0].Prefix.Addr()
	run(t, "ip", "-n", sw, "link", "set", "dev", port, "nomaster") // out of the bridge, link up
	waitFor(t, waitLong, "two masters", func() bool { return bk.te.rec.is(id, vrrp.Master) && bk.holdsAll(t, true) })
	// The second master's own announcements are over.
	waitFor(t, waitLong, "the second master's gratuitous ARP", func() bool { return arp[bk].count(excl) >= DefaultGARPRepeat })
	base := map[*side]int{m: arp[m].count(excl), bk: arp[bk].count(excl)}
	run(t, "ip", "-n", sw, "link", "set", "dev", port, "master", "br0")
	var winner, loser *side
	waitFor(t, waitLong, "one master again", func() bool {
		for _, c := range [][2]*side{{m, bk}, {bk, m}} {
			if c[0].te.state(t, id) == vrrp.Master && c[1].te.state(t, id) == vrrp.Backup && c[0].holdsAll(t, true) && c[1].holdsAll(t, false) {
				winner, loser = c[0], c[1]
				return true
			}
		}
		return false
	})
	waitFor(t, waitLong, "the winner's gratuitous ARP", func() bool { return arp[winner].count(excl) > base[winner] })
	// The cut backup had heard the master: it took over because the master
	// went silent; the loser yielded to a better master.
	if got := bk.te.rec.causes(id); len(got) < 2 || got[1] != vrrp.CauseMasterDown {
		t.Errorf("the cut backup reported causes %v, want master_down for its takeover", got)
	}
	waitFor(t, waitLong, "the loser's report", func() bool { return loser.te.rec.is(id, vrrp.Backup) })
	if ev, _ := loser.te.rec.last(id); ev.cause != vrrp.CauseHigherPriority {
		t.Errorf("the loser yielded with cause %q, want %q", ev.cause, vrrp.CauseHigherPriority)
	}
	t.Logf("split brain healed: %s kept the router (%d gratuitous ARPs for %v after the heal), %s yielded",
		winner.te.name, arp[winner].count(excl)-base[winner], excl, loser.te.name)
}
