package dataplane

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/l3ha/l3ha/internal/agent"
	"github.com/l3ha/l3ha/internal/agentapi"
	"github.com/l3ha/l3ha/internal/linux"
	"github.com/l3ha/l3ha/internal/vrrp"
	"github.com/l3ha/l3ha/internal/vrrp/engine"
)

// TestNativeReasonMapsEveryCause: each cause the native engine reports
// has its reason; those no reason describes have none.
func TestNativeReasonMapsEveryCause(t *testing.T) {
	for _, tc := range []struct {
		cause vrrp.Cause
		want  string
	}{
		{vrrp.CauseStartup, agentapi.ReasonStartup},
		{vrrp.CauseOwner, agentapi.ReasonStartup},
		{vrrp.CauseAdopted, agentapi.ReasonRestartAdopted},
		{vrrp.CauseMasterDown, agentapi.ReasonPeerLost},
		{vrrp.CauseMasterResigned, agentapi.ReasonPeerResigned},
		{vrrp.CauseHigherPriority, agentapi.ReasonSplitBrain},
		{vrrp.CausePreempt, ""},
		{vrrp.CauseResign, ""},
		{vrrp.CauseShutdown, ""},
		{engine.CauseFault, ""},
		{"something new", ""},
	} {
		if got := nativeReason(tc.cause); got != tc.want {
			t.Errorf("nativeReason(%q) = %q, want %q", tc.cause, got, tc.want)
		}
	}
}

// TestKeepalivedReasonsAreWhatTheDriverKnows: keepalived does not say why
// a state changed; the driver gives a router's first state startup, or
// restart_adopted when it adopted the router's keepalived, and every later
// one none.
func TestKeepalivedReasonsAreWhatTheDriverKnows(t *testing.T) {
	d := &KeepalivedDriver{firstSeen: map[string]bool{}, adopting: true}
	steps := []struct {
		router   string
		adopting bool
		want     string
	}{
		{"adopted", true, agentapi.ReasonRestartAdopted},
		{"adopted", false, ""},
		{"started", false, agentapi.ReasonStartup},
		{"started", false, ""},
		{"adopted", false, ""},
	}
	for i, s := range steps {
		d.adopting = s.adopting
		if got := d.reasonOf(s.router); got != s.want {
			t.Errorf("step %d: reason of %s = %q, want %q", i, s.router, got, s.want)
		}
	}
}

// recordingDriver is an HADriver that runs nothing and records removals.
type recordingDriver struct {
	mu      sync.Mutex
	running []string
	fail    map[string]bool
	removed []string
}

func (d *recordingDriver) Start(context.Context, func(routerID, state, reason string)) error {
	return nil
}
func (d *recordingDriver) Ensure(context.Context, HARouter) error { return nil }
func (d *recordingDriver) Stop(context.Context, bool) error       { return nil }
func (d *recordingDriver) Running() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.running)
}
func (d *recordingDriver) Remove(_ context.Context, id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fail[id] {
		return errors.New("stuck")
	}
	d.removed = append(d.removed, id)
	d.running = slices.DeleteFunc(d.running, func(r string) bool { return r == id })
	return nil
}

// TestAdminDownRouterIsReportedStandby: a router the HA driver ran that
// goes because it was set admin down is reported standby with reason
// admin_down (the driver reports nothing for a router it removes); one
// that goes because it is no longer the node's, or whose VRRP could not
// be stopped, is not.
func TestAdminDownRouterIsReportedStandby(t *testing.T) {
	const suffix = "-l3ha-unit-9f3c" // no namespace of this machine ends so
	drv := &recordingDriver{running: []string{"down", "stuck-down", "unbound", "kept"}, fail: map[string]bool{"stuck-down": true}}
	l := New(Config{Suffix: suffix}, drv)
	var reports []agent.Transition
	if err := l.Start(context.Background(), func(tr agent.Transition) { reports = append(reports, tr) }); err != nil {
		t.Fatal(err)
	}
	wanted := map[string]bool{linux.RouterNamespace("kept", suffix): true}
	adminDown := adminDownHA(agentapi.DesiredState{Routers: []agentapi.RouterSpec{
		{ID: "down", HA: true}, {ID: "stuck-down", HA: true}, {ID: "kept", HA: true, AdminStateUp: true},
		{ID: "legacy-down", HA: false},
	}})
	if !hasExactly(adminDown, "down", "stuck-down") {
		t.Fatalf("admin-down HA routers %v, want down and stuck-down", adminDown)
	}
	if err := l.removeStaleRouters(context.Background(), wanted, adminDown); err == nil {
		t.Error("a router whose VRRP could not be stopped is not an error")
	}
	slices.Sort(drv.removed)
	if want := []string{"down", "unbound"}; !slices.Equal(drv.removed, want) {
		t.Errorf("removed %v, want %v", drv.removed, want)
	}
	want := []agent.Transition{{RouterID: "down", State: agentapi.HAStandby, Reason: agentapi.ReasonAdminDown}}
	if !slices.Equal(reports, want) {
		t.Errorf("reported %v, want %v", reports, want)
	}
}

// hasExactly reports whether set holds exactly keys.
func hasExactly(set map[string]bool, keys ...string) bool {
	if len(set) != len(keys) {
		return false
	}
	for _, k := range keys {
		if !set[k] {
			return false
		}
	}
	return true
}
