package agent

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"

	"github.com/l3ha/l3ha/internal/agentapi"
)

// transitionLog is a ReportFunc that records what it gets.
type transitionLog struct {
	mu  sync.Mutex
	got []Transition
}

func (l *transitionLog) report(t Transition) {
	l.mu.Lock()
	l.got = append(l.got, t)
	l.mu.Unlock()
}

// take returns and clears what was recorded.
func (l *transitionLog) take() []Transition {
	l.mu.Lock()
	defer l.mu.Unlock()
	got := l.got
	l.got = nil
	return got
}

func routers(idx map[string]int) agentapi.DesiredState {
	st := agentapi.DesiredState{Host: "net1"}
	for _, id := range slices.Sorted(maps.Keys(idx)) {
		st.Routers = append(st.Routers, agentapi.RouterSpec{ID: id, HA: true, BindingIndex: idx[id]})
	}
	return st
}

func TestFakeDataplaneRule(t *testing.T) {
	ctx := context.Background()
	dp := NewFakeDataplane()
	if err := dp.Apply(ctx, routers(map[string]int{"r1": 1})); err == nil {
		t.Error("Apply before Start succeeded")
	}
	var l transitionLog
	if err := dp.Start(ctx, l.report); err != nil {
		t.Fatal(err)
	}

	steps := []struct {
		name  string
		state map[string]int
		want  []Transition
	}{
		{"first", map[string]int{"r1": 1, "r2": 2, "r3": 3}, []Transition{{"r1", "active", "startup"}, {"r2", "standby", "startup"}, {"r3", "standby", "startup"}}},
		{"same again: nothing", map[string]int{"r1": 1, "r2": 2, "r3": 3}, nil},
		{"r2 promoted, r3 gone", map[string]int{"r1": 1, "r2": 1}, []Transition{{"r2", "active", ""}}},
		{"r1 demoted", map[string]int{"r1": 2, "r2": 1}, []Transition{{"r1", "standby", ""}}},
		{"r3 back: reported again", map[string]int{"r1": 2, "r2": 1, "r3": 3}, []Transition{{"r3", "standby", "startup"}}},
		{"nothing", map[string]int{}, nil},
		{"r1 back", map[string]int{"r1": 1}, []Transition{{"r1", "active", "startup"}}},
	}
	for _, s := range steps {
		if err := dp.Apply(ctx, routers(s.state)); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := l.take(); !slices.Equal(got, s.want) {
			t.Errorf("%s: reported %v, want %v", s.name, got, s.want)
		}
		want := map[string]string{}
		for id, idx := range s.state {
			want[id] = map[bool]string{true: "active", false: "standby"}[idx == 1]
		}
		if got := dp.States(); !maps.Equal(got, want) {
			t.Errorf("%s: States() = %v, want %v", s.name, got, want)
		}
	}
	if _, n := dp.LastApplied(); n != len(steps) {
		t.Errorf("LastApplied counts %d applies, want %d", n, len(steps))
	}
}

func TestFakeDataplaneSetState(t *testing.T) {
	ctx := context.Background()
	dp := NewFakeDataplane()
	var l transitionLog
	dp.Start(ctx, l.report)
	dp.Apply(ctx, routers(map[string]int{"r1": 1, "r2": 2}))
	l.take()

	if err := dp.SetState("r9", "active"); err == nil {
		t.Error("SetState of an unknown router succeeded")
	}
	if err := dp.SetState("r1", "master"); err == nil {
		t.Error("SetState to a bad state succeeded")
	}
	// Failover: r1 → standby, r2 → active; it sticks across applies.
	dp.SetState("r1", agentapi.HAStandby)
	dp.SetStateWithReason("r2", agentapi.HAActive, agentapi.ReasonPeerLost)
	dp.SetState("r2", agentapi.HAActive) // no change, no report
	dp.Apply(ctx, routers(map[string]int{"r1": 1, "r2": 2}))
	want := []Transition{{"r1", "standby", ""}, {"r2", "active", "peer_lost"}}
	if got := l.take(); !slices.Equal(got, want) {
		t.Errorf("reported %v, want %v", got, want)
	}
	// Gone and back: the override is forgotten.
	dp.Apply(ctx, routers(map[string]int{"r2": 2}))
	dp.Apply(ctx, routers(map[string]int{"r1": 1, "r2": 2}))
	want = []Transition{{"r1", "active", "startup"}}
	if got := l.take(); !slices.Equal(got, want) {
		t.Errorf("reported %v, want %v", got, want)
	}

	// A restarted agent starting the same fake learns every state.
	var l2 transitionLog
	dp.Start(ctx, l2.report)
	got := l2.take()
	slices.SortFunc(got, func(a, b Transition) int { return cmp.Compare(a.RouterID, b.RouterID) })
	want = []Transition{{"r1", "active", "restart_adopted"}, {"r2", "active", "restart_adopted"}}
	if !slices.Equal(got, want) {
		t.Errorf("Start reported %v, want %v", got, want)
	}
}

func TestFakeDataplaneFailApply(t *testing.T) {
	ctx := context.Background()
	dp := NewFakeDataplane()
	var l transitionLog
	dp.Start(ctx, l.report)
	dp.FailApply(fmt.Errorf("boom"))
	if err := dp.Apply(ctx, routers(map[string]int{"r1": 1})); err == nil {
		t.Fatal("Apply succeeded while failing")
	}
	if got := l.take(); len(got) != 0 {
		t.Errorf("a failed Apply reported %v", got)
	}
	dp.FailApply(nil)
	if err := dp.Apply(ctx, routers(map[string]int{"r1": 1})); err != nil {
		t.Fatal(err)
	}
	if got := l.take(); len(got) != 1 {
		t.Errorf("reported %v, want r1 active", got)
	}
}

// TestFakeDataplaneConcurrent checks, under -race, that concurrent Apply,
// SetState and readers are safe and that the reports, in order, always end
// with the state the fake holds.
func TestFakeDataplaneConcurrent(t *testing.T) {
	ctx := context.Background()
	dp := NewFakeDataplane()
	var l transitionLog
	dp.Start(ctx, l.report)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				dp.Apply(ctx, routers(map[string]int{"r1": 1 + (g+i)%2, "r2": 1 + (g+i+1)%2, fmt.Sprint("x", g): 1}))
				dp.SetState("r1", agentapi.HAStandby)
				dp.States()
				dp.LastApplied()
			}
		})
	}
	wg.Wait()
	final := map[string]string{}
	for _, tr := range l.take() {
		final[tr.RouterID] = tr.State
	}
	for id, s := range dp.States() {
		if final[id] != s {
			t.Errorf("last report of %s is %q, fake holds %q", id, final[id], s)
		}
	}
}

// The fake acts on an operator's switchover as VRRP does, once per request:
// the target becomes active and any other node standby, with reason
// switchover; the same request applied again changes nothing.
func TestFakeDataplaneActsOnASwitchoverOnce(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name       string
		index      int
		target     string
		want, then string
	}{
		{"target", 2, "net1", "active", "standby"},
		{"old master", 1, "net2", "standby", "active"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dp := NewFakeDataplane()
			var l transitionLog
			if err := dp.Start(ctx, l.report); err != nil {
				t.Fatal(err)
			}
			st := routers(map[string]int{"r1": tc.index})
			if err := dp.Apply(ctx, st); err != nil {
				t.Fatal(err)
			}
			l.take()
			st.Routers[0].Switchover = &agentapi.SwitchoverSpec{ID: "1", Host: tc.target}
			for range 2 {
				if err := dp.Apply(ctx, st); err != nil {
					t.Fatal(err)
				}
			}
			if got, want := l.take(), []Transition{{"r1", tc.want, agentapi.ReasonSwitchover}}; !slices.Equal(got, want) {
				t.Errorf("reports %v, want %v", got, want)
			}
			// A failover afterwards is the fake's to simulate, as before.
			if err := dp.SetState("r1", tc.then); err != nil {
				t.Fatal(err)
			}
			if err := dp.Apply(ctx, st); err != nil {
				t.Fatal(err)
			}
			if got := dp.States()["r1"]; got != tc.then {
				t.Errorf("state %s after the same request again, want %s (acted on once)", got, tc.then)
			}
		})
	}
}
