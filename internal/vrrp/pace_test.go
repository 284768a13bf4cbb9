package vrrp

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// l3haNode is a node that runs l3ha in a Neutron cloud: Neutron's VRRPv2
// settings (2 s, PASS, priority 50) with l3ha's 0.2 s pace.
func l3haNode(addr string) Config {
	return v2(func(c *Config) { c.Primary = netip.MustParseAddr(addr); c.Pace = 200 * time.Millisecond })
}

var (
	nodeA = netip.MustParseAddr("169.254.192.1")
	nodeB = netip.MustParseAddr("169.254.192.2")
)

// elect runs a segment for a minute from a cold start; B, the higher
// address, wins (Neutron's equal priorities).
func elect(t *testing.T, cfgs ...Config) *segment {
	t.Helper()
	n := newNet(t, cfgs...)
	for i, m := range n.ms {
		n.do(i, m.Start(n.now, StartInit))
	}
	n.run(at(time.Minute))
	n.wantMaster(nodeB)
	return n
}

// lastTakeover is how long after the fault at from the last transition to
// master happened.
func lastTakeover(t *testing.T, n *segment, from time.Time) time.Duration {
	t.Helper()
	for i := len(n.history) - 1; i >= 0; i-- {
		if n.times[i].After(from) {
			return n.times[i].Sub(from)
		}
	}
	t.Fatalf("no transition after the fault; history %q", n.history)
	return 0
}

func TestPaceRejectsInvalidConfig(t *testing.T) {
	for name, c := range map[string]Config{
		"v3 pace":              v3(func(c *Config) { c.Pace = 100 * time.Millisecond }),
		"pace 5ms":             v2(func(c *Config) { c.Pace = 5 * time.Millisecond }),
		"pace over half of 2s": v2(func(c *Config) { c.Pace = 1500 * time.Millisecond }),
		"pace with 255s":       v2(func(c *Config) { c.AdvertInterval = 255 * time.Second; c.Pace = time.Second }),
	} {
		if _, err := New(c); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
	if _, err := New(v2(func(c *Config) { c.Pace = time.Second })); err != nil {
		t.Errorf("pace of half the interval: %v", err)
	}
}

// A paced master advertises every pace, and its adverts say Neutron's
// interval: keepalived (an unpaced v2 machine here) accepts every one.
func TestPacedMasterAdvertisesAtPaceWithNeutronsInterval(t *testing.T) {
	c := l3haNode("169.254.192.2")
	m := started(t, c, StartMaster)
	for i := 1; i <= 5; i++ {
		now := at(time.Duration(i) * c.Pace)
		acts := m.Tick(now)
		if len(acts) != 1 {
			t.Fatalf("tick %d: %+v", i, acts)
		}
		if got := acts[0].(SendAdvert).Packet.AdvertInterval; got != 2 {
			t.Errorf("advert says %d s, want Neutron's 2", got)
		}
		wantState(t, m, Master, now.Add(c.Pace))
	}
	ka := started(t, neutronNode("169.254.192.1"), StartInit)
	receive(t, ka, at(time.Second), nodeB, advertOf(c, 50).Packet)
	if ka.Status().Master != nodeB {
		t.Errorf("keepalived's master %v, want %v", ka.Status().Master, nodeB)
	}
}

// The point of the pace: between l3ha nodes a node fault moves the router in
// 3 paces + skew (0.2 s × (3 + 206/256) = 0.76 s), not Neutron's 3 × 2 s +
// 206/256 s = 6.8 s; with a keepalived node on either side, Neutron's.
func TestPaceFailoverTimeByPeer(t *testing.T) {
	for _, tc := range []struct {
		name   string
		a, b   Config // b is the master that dies
		within time.Duration
		after  time.Duration
	}{
		// The fault falls between two adverts: the takeover comes
		// Master_Down_Interval after the last one.
		{"l3ha to l3ha", l3haNode("169.254.192.1"), l3haNode("169.254.192.2"), 770 * time.Millisecond, 550 * time.Millisecond},
		{"keepalived master, l3ha backup", l3haNode("169.254.192.1"), neutronNode("169.254.192.2"), 6810 * time.Millisecond, 4800 * time.Millisecond},
		{"l3ha master, keepalived backup", neutronNode("169.254.192.1"), l3haNode("169.254.192.2"), 6810 * time.Millisecond, 6600 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := elect(t, tc.a, tc.b)
			before := len(n.history)
			fault := n.now
			n.up[1] = false
			n.run(fault.Add(20 * time.Second))
			n.wantMaster(nodeA)
			if got := n.history[before:]; !slices.Equal(got, []string{"169.254.192.1: backup->master master_down"}) {
				t.Errorf("transitions: %q", got)
			}
			if got := lastTakeover(t, n, fault); got > tc.within || got < tc.after {
				t.Errorf("took over %v after the fault, want %v..%v", got, tc.after, tc.within)
			}
		})
	}
}

// A paced backup never times out a keepalived master that advertises every
// 2 s: the pace is learned only from a master that keeps it.
func TestPacedBackupKeepsKeepalivedMaster(t *testing.T) {
	n := elect(t, l3haNode("169.254.192.1"), neutronNode("169.254.192.2"))
	before := len(n.history)
	n.run(n.now.Add(10 * time.Minute))
	n.wantMaster(nodeB)
	if got := n.history[before:]; len(got) != 0 {
		t.Errorf("transitions with a live keepalived master: %q", got)
	}
	if s := n.ms[0].Status(); s.MasterAdverInterval != 2*time.Second {
		t.Errorf("paced backup learned %v from keepalived, want 2s", s.MasterAdverInterval)
	}
}

// One or two lost adverts do not lose the pace; a master that stops keeping
// it (the gap exceeds three paces) is timed out as RFC 3768 says only if it
// keeps Neutron's interval, which a paced backup then waits for.
func TestPaceLearnedFromArrivals(t *testing.T) {
	c := l3haNode("169.254.192.1")
	p := advertOf(l3haNode("169.254.192.2"), 50).Packet
	for _, tc := range []struct {
		name string
		gaps []time.Duration // between the adverts after the first
		want time.Duration   // Master_Adver_Interval after them
	}{
		{"first advert", nil, 2 * time.Second},
		{"two at pace", []time.Duration{200 * time.Millisecond}, 200 * time.Millisecond},
		{"two lost", []time.Duration{200 * time.Millisecond, 600 * time.Millisecond}, 200 * time.Millisecond},
		{"three lost", []time.Duration{200 * time.Millisecond, 800 * time.Millisecond}, 2 * time.Second},
		{"back at pace", []time.Duration{800 * time.Millisecond, 200 * time.Millisecond}, 200 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := started(t, c, StartInit)
			now := at(time.Second)
			receive(t, m, now, nodeB, p)
			for _, g := range tc.gaps {
				now = now.Add(g)
				receive(t, m, now, nodeB, p)
			}
			if got := m.Status().MasterAdverInterval; got != tc.want {
				t.Errorf("Master_Adver_Interval %v, want %v", got, tc.want)
			}
		})
	}
	// Another master's advert does not inherit the pace of the last one.
	m := started(t, c, StartInit)
	receive(t, m, at(time.Second), nodeB, p)
	receive(t, m, at(1200*time.Millisecond), nodeB, p)
	receive(t, m, at(1400*time.Millisecond), netip.MustParseAddr("169.254.192.3"), p)
	if got := m.Status().MasterAdverInterval; got != 2*time.Second {
		t.Errorf("new master inherited the pace: %v", got)
	}
}

// A paced master that stops for a restart says so with one advert of a
// longer interval (PaceBreakInterval): its paced backups wait Neutron's
// Master_Down_Interval for the next engine, which adopts the mastership, and
// nobody transitions. keepalived drops that advert as a mismatch.
func TestPaceBreakLetsTheMasterRestart(t *testing.T) {
	n := elect(t, l3haNode("169.254.192.1"), l3haNode("169.254.192.2"))
	before := len(n.history)

	brk := advertOf(l3haNode("169.254.192.2"), 50)
	brk.Packet.AdvertInterval = PaceBreakInterval(2 * time.Second)
	n.do(1, []Action{brk}) // its last advert: delivered, then nothing more
	n.up[1] = false        // the agent exits and takes 3 s to come back
	n.run(n.now.Add(3 * time.Second))
	n.up[1] = true
	n.ms[1] = newMachine(t, l3haNode("169.254.192.2"))
	n.do(1, n.ms[1].Start(n.now, StartMaster))
	n.run(n.now.Add(time.Minute))
	n.wantMaster(nodeB)
	if got := n.history[before:]; !slices.Equal(got, []string{"169.254.192.2: initialize->master adopted"}) {
		t.Errorf("transitions after restart: %q", got)
	}
	if got := n.ms[0].Status().MasterAdverInterval; got != 200*time.Millisecond {
		t.Errorf("backup back at %v after the restart, want the pace", got)
	}

	ka := started(t, neutronNode("169.254.192.1"), StartInit)
	if _, err := ka.Receive(at(time.Second), nodeB, TTL, brk.Packet); !errors.Is(err, &DropError{Reason: ReasonIntervalMismatch}) {
		t.Errorf("keepalived-like backup: %v, want interval_mismatch", err)
	}
	// Without the break, three paces are too short for the restart.
	n = elect(t, l3haNode("169.254.192.1"), l3haNode("169.254.192.2"))
	n.up[1] = false
	n.run(n.now.Add(3 * time.Second))
	n.wantMaster(nodeA)
}
