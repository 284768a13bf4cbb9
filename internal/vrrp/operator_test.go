package vrrp

import (
	"testing"
	"time"
)

// Operator-driven behaviour beyond the RFCs: a switchover (TakeOver) and a
// health check (SetHealthy, Config.HealthPreempt). Neutron's groups have one
// priority for every router and nopreempt, which v2() reproduces.

// A switchover's target installs and announces the addresses without an
// advert (the caller sends Announce once they are in), then outbids the
// master it replaces for 4 advert intervals.
func TestTakeOverInstallsBeforeItAdvertises(t *testing.T) {
	c := v2()
	m := started(t, c, StartBackup)
	receive(t, m, at(time.Second), higher, peer(c, 50))

	wantActions(t, m.TakeOver(at(2*time.Second)),
		InstallAddresses{}, SendGratuitousARP{}, StateChanged{Backup, Master, CauseSwitchover})
	if m.State() != Master {
		t.Fatalf("state %v after TakeOver, want master", m.State())
	}
	wantActions(t, m.Announce(at(2*time.Second)), advertOf(c, 51))
	wantActions(t, m.Tick(at(4*time.Second)), advertOf(c, 51))
	// 4 intervals (8s) after the takeover the boost is over.
	wantActions(t, m.Tick(at(10*time.Second)), advertOf(c, 50))
}

// The master being replaced steps down on the target's first advert, even
// though its address is higher and nopreempt holds: the target outbids it.
func TestSwitchoverTargetOutbidsTheMaster(t *testing.T) {
	c := v2()
	old := started(t, c, StartMaster) // me, 169.254.192.5
	target := v2(func(c *Config) { c.Primary = lower })
	tm := started(t, target, StartBackup)
	receive(t, tm, at(time.Second), me, peer(c, 50))
	tm.TakeOver(at(2 * time.Second))
	adv := tm.Announce(at(2 * time.Second))[0].(SendAdvert).Packet

	wantActions(t, receive(t, old, at(2*time.Second), lower, adv),
		advertOf(c, 0), RemoveAddresses{}, StateChanged{Master, Backup, CauseHigherPriority})
	// Afterwards, at equal priorities, the old master stays backup.
	receive(t, old, at(12*time.Second), lower, peer(c, 50))
	if old.State() != Backup {
		t.Fatalf("old master is %v after the boost, want backup (nopreempt)", old.State())
	}
}

func TestTakeOverOutsideBackupDoesNothing(t *testing.T) {
	c := v2()
	if acts := newMachine(t, c).TakeOver(at(0)); acts != nil {
		t.Errorf("TakeOver in Initialize: %v, want nothing", acts)
	}
	m := started(t, c, StartMaster)
	if acts := m.TakeOver(at(time.Second)); acts != nil {
		t.Errorf("TakeOver as master: %v, want nothing", acts)
	}
	if acts := started(t, c, StartBackup).Announce(at(time.Second)); acts != nil {
		t.Errorf("Announce as backup: %v, want nothing", acts)
	}
}

// A backup that loses to a better master loses its boost too: a boosted
// backup with HealthPreempt would otherwise preempt the master it lost to.
func TestBoostEndsWhenTheTargetStepsDown(t *testing.T) {
	c := v2(func(c *Config) { c.HealthPreempt = true })
	m := started(t, c, StartBackup)
	m.TakeOver(at(time.Second))
	receive(t, m, at(time.Second), higher, peer(c, 52))
	receive(t, m, at(2*time.Second), higher, peer(c, 50))
	wantState(t, m, Backup, at(2*time.Second).Add(m.masterDownInterval()))
}

// An unhealthy master advertises half its priority at once; a healthy
// backup with HealthPreempt lets Master_Down_Timer run out on it and takes
// over (CauseHealthCheck), and the old master steps down when it hears it.
func TestUnhealthyMasterIsReplacedByAHealthyBackup(t *testing.T) {
	c := v2(func(c *Config) { c.HealthPreempt = true })
	master := started(t, c, StartMaster)
	backup := started(t, v2(func(c *Config) { c.HealthPreempt = true; c.Primary = lower }), StartBackup)
	receive(t, backup, at(time.Second), me, peer(c, 50))

	wantActions(t, master.SetHealthy(at(2*time.Second), false), advertOf(c, 25))
	wantActions(t, master.SetHealthy(at(2*time.Second), false)) // no change, nothing
	receive(t, backup, at(2*time.Second), me, peer(c, 25))
	downAt := at(time.Second).Add(backup.masterDownInterval())
	acts := backup.Tick(downAt)
	if backup.State() != Master || !hasChange(acts, StateChanged{Backup, Master, CauseHealthCheck}) {
		t.Fatalf("healthy backup: %v %v, want master by health_check", backup.State(), acts)
	}
	wantActions(t, receive(t, master, downAt, lower, peer(c, 50)),
		advertOf(c, 0), RemoveAddresses{}, StateChanged{Master, Backup, CauseHealthCheck})
}

// When every router's health check fails, all advertise the same lowered
// priority: nobody preempts, the master stays (no ping-pong).
func TestAllUnhealthyKeepsTheMaster(t *testing.T) {
	c := v2(func(c *Config) { c.HealthPreempt = true })
	master := started(t, c, StartMaster)
	backup := started(t, v2(func(c *Config) { c.HealthPreempt = true; c.Primary = lower }), StartBackup)
	backup.SetHealthy(at(0), false)
	master.SetHealthy(at(time.Second), false)
	for i := 1; i <= 20; i++ {
		now := at(time.Duration(i) * 2 * time.Second)
		receive(t, backup, now, me, peer(c, 25))
		if acts := backup.Tick(now.Add(time.Millisecond)); len(acts) > 0 {
			t.Fatalf("unhealthy backup acted at %v: %v", now.Sub(t0), acts)
		}
	}
	if master.State() != Master || backup.State() != Backup {
		t.Fatalf("master %v, backup %v; want them unchanged", master.State(), backup.State())
	}
	// Without HealthPreempt a lower-priority master is accepted, as before.
	plain := started(t, v2(), StartBackup)
	receive(t, plain, at(time.Second), higher, peer(c, 25))
	wantState(t, plain, Backup, at(time.Second).Add(plain.masterDownInterval()))
}

// A recovered master advertises its full priority again.
func TestHealthyAgainRestoresThePriority(t *testing.T) {
	c := v2()
	m := started(t, c, StartMaster)
	m.SetHealthy(at(time.Second), false)
	wantActions(t, m.SetHealthy(at(2*time.Second), true), advertOf(c, 50))
	if !m.Healthy() {
		t.Error("Healthy() = false after SetHealthy(true)")
	}
}

func hasChange(acts []Action, want StateChanged) bool {
	for _, a := range acts {
		if a == Action(want) {
			return true
		}
	}
	return false
}

// A master adopted after an agent restart yields to another master of equal
// priority it hears within a Master_Down_Interval, even with the higher
// address: that one took over while no engine ran and carries the traffic.
// After the window the RFC's tie-break applies again.
func TestAdoptedMasterYieldsToTheMasterThatTookOver(t *testing.T) {
	c := v2() // me is above lower
	m := started(t, c, StartMaster)
	acts := receive(t, m, at(time.Second), lower, peer(c, 50))
	if m.State() != Backup || !hasChange(acts, StateChanged{Master, Backup, CauseHigherPriority}) {
		t.Fatalf("adopted master hearing the master that took over: %v %v, want backup", m.State(), acts)
	}
	late := started(t, c, StartMaster)
	window := 3*c.AdvertInterval + late.skew()
	receive(t, late, at(window+time.Millisecond), lower, peer(c, 50))
	if late.State() != Master {
		t.Errorf("after the adoption window a lower address took the router: %v", late.State())
	}
}
