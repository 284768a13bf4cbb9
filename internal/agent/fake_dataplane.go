package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"

	"github.com/l3ha/l3ha/internal/agentapi"
)

// FakeDataplane is a Dataplane that touches nothing on the node, for tests
// and for simulating nodes in the control plane. Its "VRRP election" is a
// rule: on Apply a router whose BindingIndex is 1 becomes active and every
// other one standby; a state is reported only when it differs from what was
// last reported for the router, and routers missing from the desired state are
// forgotten (and reported again if they come back). A router whose HA flag or
// VRID changes (legacy↔HA migration) is a new VRRP instance, as on a real
// node, and reports its state again. The first state of a router is
// reported with reason startup, the rule's later changes with none.
// SetState and SetStateWithReason simulate a failover. An operator's
// switchover in the desired state is acted on once, as VRRP would: the
// target becomes active, the others standby, with reason switchover. It is
// safe for concurrent use.
type FakeDataplane struct {
	mu        sync.Mutex
	report    ReportFunc
	states    map[string]string // router id → last reported state
	overrides map[string]string // router id → state set by SetState
	instances map[string]string // router id → HA flag and VRID its state belongs to
	switched  map[string]string // router id → the switchover acted on
	last      agentapi.DesiredState
	applies   int
	applyErr  error
}

// NewFakeDataplane returns a fake data plane running no routers.
func NewFakeDataplane() *FakeDataplane {
	return &FakeDataplane{states: map[string]string{}, overrides: map[string]string{}, instances: map[string]string{}, switched: map[string]string{}}
}

// Start records report. A fake has nothing to adopt: a fresh one runs no
// routers. Starting again (a restarted agent reusing the fake) reports the
// state of every router it runs to the new report function, as adopted
// (restart_adopted).
func (f *FakeDataplane) Start(ctx context.Context, report ReportFunc) error {
	if report == nil {
		return errors.New("fake data plane: nil report function")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.report = report
	for id, s := range f.states {
		report(Transition{RouterID: id, State: s, Reason: agentapi.ReasonRestartAdopted})
	}
	return nil
}

// Apply runs the routers of st: see FakeDataplane for the rule.
func (f *FakeDataplane) Apply(ctx context.Context, st agentapi.DesiredState) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.report == nil {
		return errors.New("fake data plane: Apply before Start")
	}
	if f.applyErr != nil {
		return f.applyErr
	}
	f.applies++
	f.last = st
	want := make(map[string]string, len(st.Routers))
	why := map[string]string{}
	order := make([]string, 0, len(st.Routers))
	for _, r := range st.Routers {
		if _, dup := want[r.ID]; !dup {
			order = append(order, r.ID)
		}
		if inst := fmt.Sprint(r.HA, "/", r.VRID); f.instances[r.ID] != inst {
			// A new VRRP instance: it reports its state afresh.
			f.instances[r.ID] = inst
			delete(f.states, r.ID)
		}
		s := agentapi.HAStandby
		if r.BindingIndex == 1 {
			s = agentapi.HAActive
		}
		if sw := r.Switchover; r.HA && sw != nil && f.switched[r.ID] != sw.ID {
			f.switched[r.ID] = sw.ID
			f.overrides[r.ID] = agentapi.HAStandby
			if sw.Host == st.Host {
				f.overrides[r.ID] = agentapi.HAActive
			}
			why[r.ID] = agentapi.ReasonSwitchover
		}
		if o, ok := f.overrides[r.ID]; ok {
			s = o
		}
		want[r.ID] = s
	}
	for id := range f.states {
		if _, ok := want[id]; !ok {
			delete(f.states, id)
			delete(f.overrides, id)
			delete(f.instances, id)
			delete(f.switched, id)
		}
	}
	// Reported under the lock, so that reports of concurrent calls cannot
	// overtake each other; ReportFunc never blocks.
	for _, id := range order {
		if prev, had := f.states[id]; !had || prev != want[id] {
			f.states[id] = want[id]
			reason := why[id]
			if !had {
				reason = agentapi.ReasonStartup
			}
			f.report(Transition{RouterID: id, State: want[id], Reason: reason})
		}
	}
	return nil
}

// SetState simulates a VRRP transition of a router the fake runs: it reports
// state (agentapi.HAActive or agentapi.HAStandby) if that differs from the
// router's current state, and keeps it over the BindingIndex rule until the
// router leaves the desired state.
func (f *FakeDataplane) SetState(routerID, state string) error {
	return f.SetStateWithReason(routerID, state, "")
}

// SetStateWithReason is SetState with the reason of the transition
// (agentapi.Reason*), as a real data plane reports it.
func (f *FakeDataplane) SetStateWithReason(routerID, state, reason string) error {
	if state != agentapi.HAActive && state != agentapi.HAStandby {
		return fmt.Errorf("fake data plane: state %q is neither %s nor %s", state, agentapi.HAActive, agentapi.HAStandby)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, ok := f.states[routerID]
	if !ok {
		return fmt.Errorf("fake data plane: router %s is not running here", routerID)
	}
	f.overrides[routerID] = state
	if cur != state {
		f.states[routerID] = state
		if f.report != nil {
			f.report(Transition{RouterID: routerID, State: state, Reason: reason})
		}
	}
	return nil
}

// FailApply makes Apply return err (nil: succeed again), to test recovery.
func (f *FakeDataplane) FailApply(err error) {
	f.mu.Lock()
	f.applyErr = err
	f.mu.Unlock()
}

// States returns the state of every router the fake runs.
func (f *FakeDataplane) States() map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.states)
}

// LastApplied returns the last state applied successfully and the number of
// successful applies.
func (f *FakeDataplane) LastApplied() (agentapi.DesiredState, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last, f.applies
}
