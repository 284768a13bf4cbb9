package vrrp

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"
)

// t0 is the fake clock's origin; tests pass at(d) as "now".
var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

var (
	me     = netip.MustParseAddr("169.254.192.5")
	lower  = netip.MustParseAddr("169.254.192.4")
	higher = netip.MustParseAddr("169.254.192.6")
	vip    = netip.MustParseAddr("169.254.0.1")
)

// v3 returns a VRRPv3 config: priority 100, 1s adverts, nopreempt.
func v3(mut ...func(*Config)) Config {
	c := Config{Version: 3, VRID: 1, Priority: 100, AdvertInterval: time.Second,
		Primary: me, Addresses: []netip.Addr{vip}}
	for _, f := range mut {
		f(&c)
	}
	return c
}

// v2 returns a VRRPv2 config as Neutron writes keepalived's: priority 50,
// advert_int 2, nopreempt, PASS auth.
func v2(mut ...func(*Config)) Config {
	c := Config{Version: 2, VRID: 1, Priority: 50, AdvertInterval: 2 * time.Second,
		Primary: me, Addresses: []netip.Addr{vip}, Password: "secret"}
	for _, f := range mut {
		f(&c)
	}
	return c
}

func newMachine(t *testing.T, c Config) *Machine {
	t.Helper()
	m, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// started returns a machine that went through Start(at(0), mode).
func started(t *testing.T, c Config, mode StartMode) *Machine {
	t.Helper()
	m := newMachine(t, c)
	m.Start(at(0), mode)
	return m
}

// settledMaster is a master since at(0) that was not adopted moments ago
// (StartMaster's adoption window is over): one elected long before, whose
// split brains the RFC's tie-break settles.
func settledMaster(t *testing.T, c Config) *Machine {
	t.Helper()
	m := started(t, c, StartMaster)
	m.adoptedUntil = time.Time{}
	return m
}

// peer is an advert from another router of c's group with priority prio.
func peer(c Config, prio uint8) Packet {
	m, err := New(c)
	if err != nil {
		panic(err)
	}
	return m.advert(prio).Packet
}

func advertOf(c Config, prio uint8) SendAdvert {
	m, _ := New(c)
	return m.advert(prio)
}

func receive(t *testing.T, m *Machine, now time.Time, src netip.Addr, p Packet) []Action {
	t.Helper()
	acts, err := m.Receive(now, src, TTL, p)
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	return acts
}

func wantActions(t *testing.T, got []Action, want ...Action) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("actions:\n got  %+v\n want %+v", got, want)
	}
}

func wantState(t *testing.T, m *Machine, s State, deadline time.Time) {
	t.Helper()
	if m.State() != s {
		t.Errorf("state = %v, want %v", m.State(), s)
	}
	if !m.NextDeadline().Equal(deadline) {
		t.Errorf("next deadline = %v, want %v", m.NextDeadline().Sub(t0), deadline.Sub(t0))
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	for name, c := range map[string]Config{
		"version 1":              v3(func(c *Config) { c.Version = 1 }),
		"vrid 0":                 v3(func(c *Config) { c.VRID = 0 }),
		"priority 0":             v3(func(c *Config) { c.Priority = 0 }),
		"no primary":             v3(func(c *Config) { c.Primary = netip.Addr{} }),
		"IPv6 primary":           v3(func(c *Config) { c.Primary = netip.MustParseAddr("fe80::1") }),
		"IPv6 address":           v3(func(c *Config) { c.Addresses = []netip.Addr{netip.MustParseAddr("fe80::1")} }),
		"v3 interval 5ms":        v3(func(c *Config) { c.AdvertInterval = 5 * time.Millisecond }),
		"v3 interval 15ms":       v3(func(c *Config) { c.AdvertInterval = 15 * time.Millisecond }),
		"v3 interval 41s":        v3(func(c *Config) { c.AdvertInterval = 41 * time.Second }),
		"v3 password":            v3(func(c *Config) { c.Password = "x" }),
		"v2 interval 500ms":      v2(func(c *Config) { c.AdvertInterval = 500 * time.Millisecond }),
		"v2 interval 1.5s":       v2(func(c *Config) { c.AdvertInterval = 1500 * time.Millisecond }),
		"v2 interval 256s":       v2(func(c *Config) { c.AdvertInterval = 256 * time.Second }),
		"negative preempt delay": v3(func(c *Config) { c.PreemptDelay = -1 }),
	} {
		if _, err := New(c); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
	for name, c := range map[string]Config{
		"v3 10ms":      v3(func(c *Config) { c.AdvertInterval = 10 * time.Millisecond }),
		"v3 40.95s":    v3(func(c *Config) { c.AdvertInterval = 40950 * time.Millisecond }),
		"v2 255s":      v2(func(c *Config) { c.AdvertInterval = 255 * time.Second }),
		"v2 no auth":   v2(func(c *Config) { c.Password = "" }),
		"no addresses": v3(func(c *Config) { c.Addresses = nil }),
	} {
		if _, err := New(c); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// RFC 5798 §6.1 and RFC 3768 §6.1: Skew_Time and Master_Down_Interval.
func TestRFC5798_6_1_MasterDownInterval(t *testing.T) {
	cases := []struct {
		name       string
		c          Config
		skew, down time.Duration
	}{
		// v3: Skew_Time = (256-Priority)*Master_Adver_Interval/256.
		{"v3 prio 100 1s", v3(), 609375 * time.Microsecond, 3*time.Second + 609375*time.Microsecond},
		{"v3 prio 255 1s", v3(func(c *Config) { c.Priority = 255 }), 3906250, 3*time.Second + 3906250},
		{"v3 prio 1 1s", v3(func(c *Config) { c.Priority = 1 }), 996093750, 3*time.Second + 996093750},
		{"v3 prio 128 10ms", v3(func(c *Config) { c.Priority = 128; c.AdvertInterval = 10 * time.Millisecond }),
			5 * time.Millisecond, 35 * time.Millisecond},
		// v2: Skew_Time = (256-Priority)/256 seconds, whatever the interval.
		// Neutron's defaults: 3×2s + 206/256s = 6.8046875s.
		{"v2 prio 50 2s", v2(), 804687500, 6*time.Second + 804687500},
		{"v2 prio 128 10s", v2(func(c *Config) { c.Priority = 128; c.AdvertInterval = 10 * time.Second }),
			500 * time.Millisecond, 30*time.Second + 500*time.Millisecond},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := started(t, c.c, StartBackup)
			if got := m.skew(); got != c.skew {
				t.Errorf("Skew_Time = %v, want %v", got, c.skew)
			}
			if got := m.Status().MasterDownInterval; got != c.down {
				t.Errorf("Master_Down_Interval = %v, want %v", got, c.down)
			}
			wantState(t, m, Backup, at(c.down))
		})
	}
}

// RFC 5798 §6.4.1: the owner (priority 255) sends an advert, announces its
// addresses and becomes Master at once.
func TestRFC5798_6_4_1_OwnerStartsAsMaster(t *testing.T) {
	c := v3(func(c *Config) { c.Priority = 255 })
	m := newMachine(t, c)
	acts := m.Start(at(0), StartInit)
	wantActions(t, acts,
		advertOf(c, 255),
		InstallAddresses{Accept: true}, // §6.1: the owner always accepts
		SendGratuitousARP{},
		StateChanged{Initialize, Master, CauseOwner})
	wantState(t, m, Master, at(time.Second))
}

// RFC 5798 §6.4.1: any other router becomes Backup with Master_Down_Timer
// set to Master_Down_Interval.
func TestRFC5798_6_4_1_NonOwnerStartsAsBackup(t *testing.T) {
	m := newMachine(t, v3())
	wantActions(t, m.Start(at(0), StartInit), StateChanged{Initialize, Backup, CauseStartup})
	wantState(t, m, Backup, at(m.Status().MasterDownInterval))
	if got := m.Start(at(1), StartInit); got != nil {
		t.Errorf("second Start = %v, want nothing", got)
	}
}

// StartBackup keeps even the owner out of Master until Master_Down_Interval
// passed without a master, so a restart never disturbs a live master.
func TestStartBackupKeepsOwnerInBackup(t *testing.T) {
	m := newMachine(t, v3(func(c *Config) { c.Priority = 255 }))
	wantActions(t, m.Start(at(0), StartBackup), StateChanged{Initialize, Backup, CauseStartup})
	wantState(t, m, Backup, at(3*time.Second+3906250))
}

// StartMaster adopts mastership across an agent restart: an advert at once,
// no address changes, no gratuitous ARP, then adverts every interval.
func TestStartMasterAdoptsWithoutTouchingAddresses(t *testing.T) {
	c := v3()
	m := newMachine(t, c)
	wantActions(t, m.Start(at(0), StartMaster), advertOf(c, 100), StateChanged{Initialize, Master, CauseAdopted})
	wantState(t, m, Master, at(time.Second))
	wantActions(t, m.Tick(at(time.Second)), advertOf(c, 100))
}

// RFC 5798 §6.4.2: "If the Master_Down_Timer fires": send an advert,
// broadcast gratuitous ARP, set Adver_Timer, become Master.
func TestRFC5798_6_4_2_BackupBecomesMasterWhenMasterDownTimerFires(t *testing.T) {
	c := v3()
	m := started(t, c, StartInit)
	down := m.NextDeadline()
	wantActions(t, m.Tick(down.Add(-1)))
	wantState(t, m, Backup, down)
	wantActions(t, m.Tick(down),
		advertOf(c, 100),
		InstallAddresses{Accept: false},
		SendGratuitousARP{},
		StateChanged{Backup, Master, CauseMasterDown})
	wantState(t, m, Master, down.Add(time.Second))
}

// RFC 5798 §6.4.3: "If the Adver_Timer fires": send an advert and reset the
// timer to Advertisement_Interval. Early ticks do nothing.
func TestRFC5798_6_4_3_MasterAdvertisesEveryInterval(t *testing.T) {
	c := v3(func(c *Config) { c.Priority = 255 })
	m := started(t, c, StartInit)
	for i := 1; i <= 3; i++ {
		now := at(time.Duration(i) * time.Second)
		wantActions(t, m.Tick(now.Add(-time.Millisecond)))
		wantActions(t, m.Tick(now), advertOf(c, 255))
		wantState(t, m, Master, now.Add(time.Second))
	}
	// A late tick re-arms from the time it ran, not from the missed deadline.
	wantActions(t, m.Tick(at(4500*time.Millisecond)), advertOf(c, 255))
	wantState(t, m, Master, at(5500*time.Millisecond))
}

// RFC 5798 §6.4.2: an acceptable advert resets Master_Down_Timer to
// Master_Down_Interval, so a backup never takes over from a live master.
func TestRFC5798_6_4_2_BackupAdvertResetsMasterDownTimer(t *testing.T) {
	c := v3()
	m := started(t, c, StartInit)
	mdi := m.Status().MasterDownInterval
	for i := 1; i <= 10; i++ {
		now := at(time.Duration(i) * time.Second)
		wantActions(t, m.Tick(now))
		wantActions(t, receive(t, m, now, higher, peer(c, 100)))
		wantState(t, m, Backup, now.Add(mdi))
	}
	s := m.Status()
	if s.Master != higher || s.MasterPriority != 100 {
		t.Errorf("status master = %v/%d, want %v/100", s.Master, s.MasterPriority, higher)
	}
}

// RFC 5798 §6.4.2: "If the Priority in the ADVERTISEMENT is zero, then: Set
// the Master_Down_Timer to Skew_Time."
func TestRFC5798_6_4_2_BackupPriorityZeroSetsSkewTimer(t *testing.T) {
	for _, c := range []Config{v3(), v2()} {
		m := started(t, c, StartInit)
		now := at(time.Second)
		wantActions(t, receive(t, m, now, higher, peer(c, 0)))
		wantState(t, m, Backup, now.Add(m.skew()))
		acts := m.Tick(now.Add(m.skew()))
		if got := acts[len(acts)-1]; got != (StateChanged{Backup, Master, CauseMasterResigned}) {
			t.Errorf("v%d: last action %+v", c.Version, got)
		}
	}
}

// RFC 5798 §6.4.2: "Set Master_Adver_Interval to Adver Interval contained in
// the ADVERTISEMENT. Recompute the Master_Down_Interval." (v3 only.)
func TestRFC5798_6_4_2_BackupLearnsMasterAdverInterval(t *testing.T) {
	c := v3()
	m := started(t, c, StartInit)
	p := peer(c, 200)
	p.MaxAdvertInterval = 250 // the master advertises every 2.5s
	now := at(time.Second)
	receive(t, m, now, higher, p)
	// 3×2.5s + 156×2.5s/256
	want := 7500*time.Millisecond + 1523437500
	s := m.Status()
	if s.MasterAdverInterval != 2500*time.Millisecond || s.MasterDownInterval != want {
		t.Errorf("learned %v / %v, want 2.5s / %v", s.MasterAdverInterval, s.MasterDownInterval, want)
	}
	wantState(t, m, Backup, now.Add(want))
	// Once master itself, it advertises its own configured interval.
	acts := m.Tick(now.Add(want))
	if got := acts[0].(SendAdvert).Packet.MaxAdvertInterval; got != 100 {
		t.Errorf("master advertises %d cs, want its own 100", got)
	}
	wantState(t, m, Master, now.Add(want+time.Second))
}

// RFC 3768 §7.1: "MUST verify that the Adver Interval in the packet is the
// same as the locally configured for this virtual router"; a v2 backup
// drops, and counts, the others.
func TestRFC3768_7_1_IntervalMismatchDropped(t *testing.T) {
	c := v2()
	m := started(t, c, StartInit)
	deadline := m.NextDeadline()
	p := peer(c, 100)
	p.AdvertInterval = 1
	for range 2 {
		_, err := m.Receive(at(time.Second), higher, TTL, p)
		if !errors.Is(err, &DropError{Reason: ReasonIntervalMismatch}) {
			t.Fatalf("Receive: %v, want interval_mismatch", err)
		}
	}
	wantState(t, m, Backup, deadline)
	if got := m.Status().Drops[ReasonIntervalMismatch]; got != 2 {
		t.Errorf("drops = %d, want 2", got)
	}
}

// RFC 5798 §6.4.2 with Preempt_Mode: a backup discards adverts of lower
// priority, lets Master_Down_Timer run out and takes over; equal or higher
// priority adverts are accepted.
func TestRFC5798_6_4_2_PreemptDiscardsLowerPriority(t *testing.T) {
	c := v3(func(c *Config) { c.Preempt = true; c.Priority = 200 })
	m := started(t, c, StartInit)
	deadline := m.NextDeadline()
	for _, now := range []time.Time{at(time.Second), at(2 * time.Second), at(3 * time.Second)} {
		wantActions(t, receive(t, m, now, higher, peer(c, 199)))
		wantState(t, m, Backup, deadline)
	}
	acts := m.Tick(deadline)
	wantActions(t, acts[3:], StateChanged{Backup, Master, CausePreempt})

	for _, prio := range []uint8{200, 201} {
		m := started(t, c, StartInit)
		receive(t, m, at(time.Second), lower, peer(c, prio))
		wantState(t, m, Backup, at(time.Second+m.Status().MasterDownInterval))
	}
}

// keepalived's nopreempt (Preempt false, Neutron's setting): a backup of
// higher priority keeps accepting a live lower-priority master forever.
func TestNopreemptBackupNeverTakesOverFromLiveMaster(t *testing.T) {
	c := v3(func(c *Config) { c.Priority = 255 - 1 })
	m := started(t, c, StartInit)
	for i := 1; i <= 100; i++ {
		now := at(time.Duration(i) * time.Second)
		wantActions(t, m.Tick(now))
		receive(t, m, now, lower, peer(c, 1))
	}
	wantState(t, m, Backup, at(100*time.Second+m.Status().MasterDownInterval))
}

// keepalived's preempt_delay: a lower-priority master is tolerated for
// PreemptDelay after its first advert, then preempted.
func TestPreemptDelayToleratesLowerPriorityMaster(t *testing.T) {
	c := v3(func(c *Config) { c.Preempt = true; c.Priority = 200; c.PreemptDelay = 10 * time.Second })
	m := started(t, c, StartInit)
	mdi := m.Status().MasterDownInterval
	for i := 1; i <= 10; i++ { // first advert at 1s: tolerated until 11s
		now := at(time.Duration(i) * time.Second)
		receive(t, m, now, lower, peer(c, 100))
		wantState(t, m, Backup, now.Add(mdi))
	}
	receive(t, m, at(11*time.Second), lower, peer(c, 100))
	wantState(t, m, Backup, at(10*time.Second+mdi)) // discarded
	acts := m.Tick(at(10*time.Second + mdi))
	wantActions(t, acts[3:], StateChanged{Backup, Master, CausePreempt})

	// A higher-priority advert in between restarts the delay.
	m = started(t, c, StartInit)
	receive(t, m, at(1*time.Second), lower, peer(c, 100))
	receive(t, m, at(5*time.Second), higher, peer(c, 250))
	receive(t, m, at(9*time.Second), lower, peer(c, 100))
	receive(t, m, at(18*time.Second), lower, peer(c, 100))
	wantState(t, m, Backup, at(18*time.Second+mdi))
}

// RFC 5798 §6.4.3: a master receiving priority 0 sends an advert at once and
// resets Adver_Timer. l3ha's addition: the other master just stepped down
// (a healed split brain's loser, see below), so this one announces its
// addresses again and says who lost, at most once a second.
func TestRFC5798_6_4_3_MasterAnswersPriorityZero(t *testing.T) {
	c := v3()
	m := started(t, c, StartMaster)
	now := at(300 * time.Millisecond)
	wantActions(t, receive(t, m, now, higher, peer(c, 0)), advertOf(c, 100), SplitBrainWon{higher, 0}, SendGratuitousARP{})
	wantState(t, m, Master, now.Add(time.Second))
	wantActions(t, receive(t, m, now.Add(time.Second/2), higher, peer(c, 0)), advertOf(c, 100))
}

// RFC 5798 §6.4.3: a master that hears a higher priority gives up its
// addresses and becomes Backup, learning the new master's interval (v3).
// l3ha's addition: it says so with a priority-0 advert, so that the winner
// — which may never have heard this one's adverts, if its own crossed the
// healed partition first — announces its addresses again.
func TestRFC5798_6_4_3_MasterYieldsToHigherPriority(t *testing.T) {
	c := v3()
	m := started(t, c, StartMaster)
	p := peer(c, 101)
	p.MaxAdvertInterval = 200
	now := at(500 * time.Millisecond)
	wantActions(t, receive(t, m, now, lower, p),
		advertOf(c, 0), RemoveAddresses{}, StateChanged{Master, Backup, CauseHigherPriority})
	down := 6*time.Second + 156*2*time.Second/256 // our priority 100, their 2s
	wantState(t, m, Backup, now.Add(down))
	if s := m.Status(); s.Master != lower || s.MasterPriority != 101 {
		t.Errorf("master = %v/%d", s.Master, s.MasterPriority)
	}
}

// RFC 5798 §6.4.3: with equal priorities the higher primary address wins;
// the lower one is discarded (split brain healed in one advert).
func TestRFC5798_6_4_3_EqualPriorityHigherAddressWins(t *testing.T) {
	for _, tc := range []struct {
		src  netip.Addr
		want State
	}{{higher, Backup}, {lower, Master}} {
		c := v3()
		m := settledMaster(t, c)
		receive(t, m, at(time.Second/2), tc.src, peer(c, 100))
		if m.State() != tc.want {
			t.Errorf("advert from %v: state %v, want %v", tc.src, m.State(), tc.want)
		}
	}
	// Lower priority from a higher address still loses.
	c := v3()
	m := started(t, c, StartMaster)
	wantActions(t, receive(t, m, at(time.Second/2), higher, peer(c, 99)))
	wantState(t, m, Master, at(time.Second))
}

// keepalived (not lower_prio_no_advert): a master answers a lower-priority
// advert at once, without moving Adver_Timer; the other master of a healed
// split brain may have drawn traffic with its gratuitous ARP, so the winner
// announces its addresses again, at most once a second.
func TestAnswerLowerPriority(t *testing.T) {
	c := v3(func(c *Config) { c.AnswerLowerPriority = true })
	m := settledMaster(t, c)
	wantActions(t, receive(t, m, at(time.Second/2), lower, peer(c, 100)), advertOf(c, 100), SplitBrainWon{lower, 100}, SendGratuitousARP{})
	wantActions(t, receive(t, m, at(time.Second/2), higher, peer(c, 50)), advertOf(c, 100))
	wantActions(t, receive(t, m, at(3*time.Second/2), higher, peer(c, 50)), advertOf(c, 100), SplitBrainWon{higher, 50}, SendGratuitousARP{})
	wantState(t, m, Master, at(time.Second))
}

// RFC 5798 §6.4.3: "If a Shutdown event is received": cancel Adver_Timer,
// send an advert with priority 0, go to Initialize. §6.4.2 for a backup:
// cancel Master_Down_Timer, go to Initialize.
func TestRFC5798_6_4_3_ShutdownFromMasterSendsPriorityZero(t *testing.T) {
	c := v3()
	m := started(t, c, StartMaster)
	wantActions(t, m.Shutdown(at(time.Second/2)),
		advertOf(c, 0), RemoveAddresses{}, StateChanged{Master, Initialize, CauseShutdown})
	wantState(t, m, Initialize, time.Time{})
	wantActions(t, m.Tick(at(time.Hour)))
	if _, err := m.Receive(at(time.Hour), higher, TTL, peer(c, 100)); ReasonOf(err) != ReasonNotRunning {
		t.Errorf("Receive in Initialize: %v", err)
	}
	wantActions(t, m.Shutdown(at(time.Hour)))
	// It can be started again.
	wantActions(t, m.Start(at(time.Hour), StartInit), StateChanged{Initialize, Backup, CauseStartup})
}

func TestRFC5798_6_4_2_ShutdownFromBackup(t *testing.T) {
	m := started(t, v3(), StartInit)
	wantActions(t, m.Shutdown(at(time.Second)), StateChanged{Backup, Initialize, CauseShutdown})
	wantState(t, m, Initialize, time.Time{})
}

// Resign is a graceful switchover: priority 0 so backups take over after
// Skew_Time, while the old master waits a full Master_Down_Interval.
func TestResignHandsOverMastership(t *testing.T) {
	c := v3()
	m := started(t, c, StartMaster)
	now := at(time.Second / 2)
	wantActions(t, m.Resign(now), advertOf(c, 0), RemoveAddresses{}, StateChanged{Master, Backup, CauseResign})
	wantState(t, m, Backup, now.Add(m.Status().MasterDownInterval))
	wantActions(t, m.Resign(now))
	// Nobody took over: it comes back.
	acts := m.Tick(m.NextDeadline())
	wantActions(t, acts[3:], StateChanged{Backup, Master, CauseMasterDown})
}

func TestGARPDelaySendsSecondRound(t *testing.T) {
	c := v3(func(c *Config) { c.GARPDelay = 2500 * time.Millisecond })
	m := started(t, c, StartBackup)
	down := m.NextDeadline()
	m.Tick(down)
	wantState(t, m, Master, down.Add(time.Second))
	wantActions(t, m.Tick(down.Add(time.Second)), advertOf(c, 100))
	wantActions(t, m.Tick(down.Add(2*time.Second)), advertOf(c, 100))
	wantState(t, m, Master, down.Add(2500*time.Millisecond))
	wantActions(t, m.Tick(down.Add(2500*time.Millisecond)), SendGratuitousARP{})
	wantState(t, m, Master, down.Add(3*time.Second))
	// Leaving Master cancels a pending round.
	m = started(t, c, StartBackup)
	m.Tick(down)
	m.Resign(down)
	for _, a := range m.Tick(down.Add(2500 * time.Millisecond)) {
		if _, ok := a.(SendGratuitousARP); ok {
			t.Error("gratuitous ARP after resigning")
		}
	}
}

func TestAcceptModeIsPassedOn(t *testing.T) {
	m := started(t, v3(func(c *Config) { c.AcceptMode = true }), StartBackup)
	acts := m.Tick(m.NextDeadline())
	if acts[1] != (InstallAddresses{Accept: true}) {
		t.Errorf("got %+v", acts[1])
	}
}

// RFC 5798 §7.1 and RFC 3768 §7.1: packets the virtual router must not act
// on are dropped with a reason, counted, and change nothing.
func TestRFC5798_7_1_ReceiveDrops(t *testing.T) {
	cases := []struct {
		name string
		c    Config
		mode StartMode
		src  netip.Addr
		ttl  uint8
		mut  func(*Packet)
		want Reason
	}{
		{"ttl 254", v3(), StartInit, higher, 254, nil, ReasonBadTTL},
		{"ttl 1", v2(), StartInit, higher, 1, nil, ReasonBadTTL},
		{"v2 advert to v3 router", v3(), StartInit, higher, TTL,
			func(p *Packet) { *p = peer(v2(), 100) }, ReasonVersionMismatch},
		{"v3 advert to v2 router", v2(), StartInit, higher, TTL,
			func(p *Packet) { *p = peer(v3(), 100) }, ReasonVersionMismatch},
		{"other VRID", v3(), StartInit, higher, TTL, func(p *Packet) { p.VRID = 2 }, ReasonVRIDMismatch},
		{"not an advert", v3(), StartInit, higher, TTL, func(p *Packet) { p.Type = 2 }, ReasonBadType},
		{"IPv6 source", v3(), StartInit, netip.MustParseAddr("fe80::1"), TTL, nil, ReasonBadFamily},
		{"local owner", v3(func(c *Config) { c.Priority = 255 }), StartInit, higher, TTL, nil, ReasonLocalOwner},
		{"own advert looped back", v3(), StartMaster, me, TTL, nil, ReasonOwnAdvert},
		{"v2 no auth to PASS router", v2(), StartInit, higher, TTL,
			func(p *Packet) { p.AuthType, p.AuthData = AuthNone, [8]byte{} }, ReasonAuthTypeMismatch},
		{"v2 PASS to no-auth router", v2(func(c *Config) { c.Password = "" }), StartInit, higher, TTL,
			func(p *Packet) { p.AuthType, p.AuthData = AuthPassword, PasswordAuthData("secret") }, ReasonAuthTypeMismatch},
		{"v2 AH", v2(), StartInit, higher, TTL, func(p *Packet) { p.AuthType = AuthAH }, ReasonAuthTypeMismatch},
		{"v2 wrong password", v2(), StartInit, higher, TTL,
			func(p *Packet) { p.AuthData = PasswordAuthData("secreT") }, ReasonAuthMismatch},
		{"v2 interval", v2(), StartMaster, higher, TTL, func(p *Packet) { p.AdvertInterval = 3 }, ReasonIntervalMismatch},
		{"v3 interval 0", v3(), StartInit, higher, TTL, func(p *Packet) { p.MaxAdvertInterval = 0 }, ReasonBadInterval},
		{"missing address", v3(), StartInit, higher, TTL, func(p *Packet) { p.Addresses = nil }, ReasonAddressMismatch},
		{"other address", v3(), StartInit, higher, TTL,
			func(p *Packet) { p.Addresses = []netip.Addr{netip.MustParseAddr("169.254.0.2")} }, ReasonAddressMismatch},
		{"extra address", v2(), StartMaster, higher, TTL,
			func(p *Packet) { p.Addresses = []netip.Addr{vip, vip} }, ReasonAddressMismatch},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := started(t, tc.c, tc.mode)
			state, deadline := m.State(), m.NextDeadline()
			p := peer(tc.c, 254) // would preempt or displace us if accepted
			if tc.mut != nil {
				tc.mut(&p)
			}
			acts, err := m.Receive(at(time.Second), tc.src, tc.ttl, p)
			if ReasonOf(err) != tc.want || acts != nil {
				t.Fatalf("Receive = %v, %v; want drop %q", acts, err, tc.want)
			}
			wantState(t, m, state, deadline)
			if got := m.Status().Drops; !reflect.DeepEqual(got, map[Reason]uint64{tc.want: 1}) {
				t.Errorf("drops = %v", got)
			}
		})
	}
}

// The address list is compared as a set (peers may order it differently),
// and RFC 3768 §7.1 lets the owner's adverts through even if it differs.
func TestRFC3768_7_1_AddressCheck(t *testing.T) {
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	c := v3(func(c *Config) { c.Addresses = []netip.Addr{a, b} })
	m := started(t, c, StartMaster)
	p := peer(c, 50)
	p.Addresses = []netip.Addr{b, a}
	receive(t, m, at(time.Second/2), lower, p)
	p = peer(c, 255)
	p.Addresses = []netip.Addr{a}
	receive(t, m, at(time.Second/2), lower, p)
	if m.State() != Backup {
		t.Errorf("owner advert did not displace us: %v", m.State())
	}
}

// keepalived interop: a machine configured as Neutron configures keepalived
// sends the very bytes keepalived 2.2.7 sends, and accepts keepalived's.
func TestKeepalivedInteropV2(t *testing.T) {
	kaSrc := netip.MustParseAddr("169.254.192.1")
	kaWire := unhex(t, "21013201"+"0102c5af"+"a9fe0001"+"7365637265740000")

	ours := started(t, v2(func(c *Config) { c.Primary = kaSrc }), StartMaster)
	b, err := Marshal(ours.advert(50).Packet, kaSrc, Group)
	if err != nil || !bytes.Equal(b, kaWire) {
		t.Errorf("our advert = %x, %v; keepalived's %x", b, err, kaWire)
	}

	m := started(t, v2(), StartInit)
	p, err := Parse(kaWire, kaSrc, Group)
	if err != nil {
		t.Fatal(err)
	}
	receive(t, m, at(time.Second), kaSrc, p)
	wantState(t, m, Backup, at(time.Second+m.Status().MasterDownInterval))
	if m.Status().Master != kaSrc {
		t.Errorf("master = %v", m.Status().Master)
	}
}

// --- Whole-group scenarios: machines wired together through the codec. ---

// segment is a discrete-event simulation of a VRRP segment: adverts are
// marshalled, delivered to every other machine after delay, and parsed.
type segment struct {
	t       *testing.T
	now     time.Time
	delay   time.Duration
	ms      []*Machine
	up      []bool // a down node neither sends nor receives
	inbox   []delivery
	history []string    // "node: from->to cause"
	times   []time.Time // when each history entry happened
}

type delivery struct {
	at   time.Time
	to   int
	from netip.Addr
	b    []byte
}

func newNet(t *testing.T, cfgs ...Config) *segment {
	n := &segment{t: t, now: t0, delay: time.Millisecond}
	for _, c := range cfgs {
		n.ms = append(n.ms, newMachine(t, c))
		n.up = append(n.up, true)
	}
	return n
}

func (n *segment) do(i int, acts []Action) {
	for _, a := range acts {
		switch a := a.(type) {
		case SendAdvert:
			src := n.ms[i].Config().Primary
			b, err := Marshal(a.Packet, src, Group)
			if err != nil {
				n.t.Fatal(err)
			}
			for j := range n.ms {
				if j != i && n.up[i] {
					n.inbox = append(n.inbox, delivery{n.now.Add(n.delay), j, src, b})
				}
			}
		case StateChanged:
			n.history = append(n.history, n.ms[i].Config().Primary.String()+": "+a.From.String()+"->"+a.To.String()+" "+string(a.Cause))
			n.times = append(n.times, n.now)
		}
	}
}

// run advances the simulation until end, processing ticks and deliveries in
// time order.
func (n *segment) run(end time.Time) {
	for {
		next, tick := end, -1
		for i, m := range n.ms {
			if d := m.NextDeadline(); !d.IsZero() && d.Before(next) {
				next, tick = d, i
			}
		}
		slices.SortStableFunc(n.inbox, func(a, b delivery) int { return a.at.Compare(b.at) })
		if len(n.inbox) > 0 && !n.inbox[0].at.After(next) {
			d := n.inbox[0]
			n.inbox = n.inbox[1:]
			n.now = d.at
			if !n.up[d.to] {
				continue
			}
			p, err := Parse(d.b, d.from, Group)
			if err != nil {
				n.t.Fatal(err)
			}
			acts, _ := n.ms[d.to].Receive(n.now, d.from, TTL, p)
			n.do(d.to, acts)
			continue
		}
		n.now = next
		if tick < 0 {
			return
		}
		n.do(tick, n.ms[tick].Tick(n.now))
	}
}

func (n *segment) masters() []netip.Addr {
	var out []netip.Addr
	for i, m := range n.ms {
		if n.up[i] && m.State() == Master {
			out = append(out, m.Config().Primary)
		}
	}
	return out
}

func (n *segment) wantMaster(want netip.Addr) {
	n.t.Helper()
	if got := n.masters(); len(got) != 1 || got[0] != want {
		n.t.Fatalf("at %v masters = %v, want [%v]\nhistory: %q", n.now.Sub(t0), got, want, n.history)
	}
}

func neutronNode(addr string) Config {
	return v2(func(c *Config) { c.Primary = netip.MustParseAddr(addr) })
}

// neutron-facts: "All instances have equal priority, so the highest ha-
// address wins the first election; nopreempt keeps the current master
// afterwards." RFC 3768 §6.4.3 (and RFC 5798 §6.4.3) tie-break, with Neutron's v2 settings.
func TestRFC3768_6_4_3_ElectionEqualPriorityHighestAddressWins(t *testing.T) {
	n := newNet(t, neutronNode("169.254.192.1"), neutronNode("169.254.192.3"), neutronNode("169.254.192.2"))
	for i, m := range n.ms {
		n.do(i, m.Start(n.now, StartInit))
	}
	n.run(at(time.Minute))
	n.wantMaster(netip.MustParseAddr("169.254.192.3"))

	// The master dies: the next highest takes over within
	// Master_Down_Interval, then keeps mastership when the old one returns
	// (nopreempt, equal priority: it starts as backup and hears a master).
	n.up[1] = false
	before := len(n.history)
	n.run(at(2 * time.Minute))
	n.wantMaster(netip.MustParseAddr("169.254.192.2"))
	// Both survivors time out together (same priority, same skew), both
	// become master, and the tie-break settles it at once.
	if got := n.history[before:]; !slices.Equal(got, []string{
		"169.254.192.1: backup->master master_down",
		"169.254.192.2: backup->master master_down",
		"169.254.192.1: master->backup higher_priority",
	}) {
		t.Errorf("transitions after the master died: %q", got)
	}
	n.up[1] = true
	n.ms[1].Shutdown(n.now) // it lost its state, as after a reboot
	n.do(1, n.ms[1].Start(n.now, StartInit))
	n.run(at(3 * time.Minute))
	n.wantMaster(netip.MustParseAddr("169.254.192.2"))
}

// A master that shuts down gracefully hands over in Skew_Time, not
// Master_Down_Interval, and the highest-priority backup wins (RFC 5798
// §6.4.2 priority 0, §6.1 Skew_Time).
func TestRFC5798_6_4_2_GracefulShutdownFailoverTakesSkewTime(t *testing.T) {
	node := func(addr string, prio uint8) Config {
		return v3(func(c *Config) {
			c.Primary, c.Priority, c.Preempt = netip.MustParseAddr(addr), prio, true
			c.AdvertInterval = 100 * time.Millisecond
		})
	}
	n := newNet(t, node("10.0.0.1", 200), node("10.0.0.2", 150), node("10.0.0.3", 100))
	for i, m := range n.ms {
		n.do(i, m.Start(n.now, StartInit))
	}
	n.run(at(5 * time.Second))
	n.wantMaster(netip.MustParseAddr("10.0.0.1"))

	stop, before := n.now, len(n.history)
	n.do(0, n.ms[0].Shutdown(n.now))
	n.run(at(10 * time.Second))
	n.wantMaster(netip.MustParseAddr("10.0.0.2"))
	if got := n.history[before:]; !slices.Equal(got, []string{
		"10.0.0.1: master->initialize shutdown",
		"10.0.0.2: backup->master master_resigned",
	}) {
		t.Fatalf("transitions: %q", got)
	}
	// 1ms delivery + Skew_Time of priority 150 at 100ms (106×100ms/256),
	// far below its Master_Down_Interval (≈341ms).
	if got, want := n.times[before+1].Sub(stop), time.Millisecond+41406250; got != want {
		t.Errorf("failover took %v, want %v", got, want)
	}
}

// An agent restart adopting mastership (StartMaster) within
// Master_Down_Interval causes no transition anywhere.
func TestStartMasterRestartIsInvisibleToBackups(t *testing.T) {
	n := newNet(t, neutronNode("169.254.192.1"), neutronNode("169.254.192.2"))
	for i, m := range n.ms {
		n.do(i, m.Start(n.now, StartInit))
	}
	n.run(at(time.Minute))
	n.wantMaster(netip.MustParseAddr("169.254.192.2"))
	before := len(n.history)

	// The agent dies silently (no Shutdown) and a new process adopts 3s
	// later: less than 3×2s+skew.
	n.up[1] = false
	n.run(n.now.Add(3 * time.Second))
	n.up[1] = true
	n.ms[1] = newMachine(t, neutronNode("169.254.192.2"))
	n.do(1, n.ms[1].Start(n.now, StartMaster))
	n.run(n.now.Add(time.Minute))
	n.wantMaster(netip.MustParseAddr("169.254.192.2"))
	if got := n.history[before:]; !slices.Equal(got, []string{"169.254.192.2: initialize->master adopted"}) {
		t.Errorf("transitions after restart: %q", got)
	}
}

// A backup started with a future start time (the engine's StartDelay, as
// keepalived's vrrp_startup_delay) cannot elect itself before start plus
// Master_Down_Interval, yet adverts heard meanwhile are taken as usual: a
// live master keeps it backup, and without one it elects itself later.
func TestDelayedStartPostponesOnlyTheFirstElection(t *testing.T) {
	c := v3()
	delay := 5 * time.Second
	m := newMachine(t, c)
	m.Start(at(0), StartBackup)
	undelayed := m.NextDeadline()

	m = newMachine(t, c)
	m.Start(at(delay), StartBackup)
	down := m.NextDeadline()
	if got := down.Sub(undelayed); got != delay {
		t.Fatalf("first Master_Down deadline moved by %s, want %s", got, delay)
	}
	wantActions(t, m.Tick(undelayed))
	if m.State() != Backup {
		t.Fatalf("state %v before the delayed deadline", m.State())
	}
	// An advert from a live master resets the timer to the normal interval.
	receive(t, m, at(time.Second), lower, peer(c, 100))
	if got := m.NextDeadline(); !got.Before(down) {
		t.Fatalf("advert did not bring the timer back: %s vs %s", got, down)
	}
	// Without a master the delayed backup elects itself in the end.
	m = newMachine(t, c)
	m.Start(at(delay), StartBackup)
	acts := m.Tick(m.NextDeadline())
	if m.State() != Master || len(acts) == 0 {
		t.Fatalf("state %v after the delayed deadline", m.State())
	}
}
