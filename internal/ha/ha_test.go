package ha

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/agentapi"
	"github.com/l3ha/l3ha/internal/store"
)

func testRand() *rand.Rand { return rand.New(rand.NewPCG(7, 11)) }

func TestPickVRIDStaysInNeutronRangeAndSkipsUsed(t *testing.T) {
	rnd := testRand()
	used := map[int]bool{}
	for range MaxVRID {
		v, ok := PickVRID(used, rnd)
		if !ok {
			t.Fatalf("ran out after %d VRIDs", len(used))
		}
		if v < 1 || v > MaxVRID || used[v] {
			t.Fatalf("picked %d (used: %v)", v, used[v])
		}
		used[v] = true
	}
	if _, ok := PickVRID(used, rnd); ok {
		t.Fatal("255th VRID handed out; Neutron's range is 1..254")
	}
}

func TestChooseAgentsPrefersLeastLoaded(t *testing.T) {
	cands := []Candidate{{"a", 5}, {"b", 1}, {"c", 3}, {"d", 1}}
	tests := []struct {
		n    int
		want map[string]bool
	}{
		{1, map[string]bool{"b": true, "d": true}}, // either of the two least loaded
		{2, map[string]bool{"b": true, "d": true}},
		{3, map[string]bool{"b": true, "d": true, "c": true}},
		{9, map[string]bool{"a": true, "b": true, "c": true, "d": true}},
	}
	for _, tt := range tests {
		got := ChooseAgents(cands, tt.n, testRand())
		if len(got) != min(tt.n, len(cands)) {
			t.Fatalf("n=%d: got %d agents", tt.n, len(got))
		}
		for _, c := range got {
			if !tt.want[c.AgentID] {
				t.Fatalf("n=%d: chose %s (load %d) over a less loaded agent", tt.n, c.AgentID, c.Routers)
			}
		}
	}
}

// LP#1365429: with nopreempt the first binding becomes master, so equal
// loads must not always put the first binding on the same agent.
func TestChooseAgentsSpreadsTiesSoMastersSpread(t *testing.T) {
	cands := []Candidate{{"a", 0}, {"b", 0}, {"c", 0}}
	first := map[string]int{}
	rnd := testRand()
	for range 300 {
		first[ChooseAgents(cands, 3, rnd)[0].AgentID]++
	}
	for _, id := range []string{"a", "b", "c"} {
		if first[id] < 50 {
			t.Fatalf("agent %s first in only %d of 300 draws: %v", id, first[id], first)
		}
	}
}

func TestViewStatesNeverBelievesDeadOrDisabledActive(t *testing.T) {
	now := time.Unix(1000, 0)
	down := 10 * time.Second
	alive := func(id string, up bool) *store.Agent {
		return &store.Agent{ID: id, AdminStateUp: up, HeartbeatAt: now.Add(-time.Second)}
	}
	dead := func(id string) *store.Agent {
		return &store.Agent{ID: id, AdminStateUp: true, HeartbeatAt: now.Add(-time.Minute)}
	}
	b := func(a *store.Agent, st string) HostedBy {
		return HostedBy{Agent: a, Binding: store.Binding{AgentID: a.ID, HAState: st}}
	}
	tests := []struct {
		name string
		in   []HostedBy
		want []string
	}{
		{"all alive", []HostedBy{b(alive("a", true), "active"), b(alive("b", true), "standby")}, []string{"active", "standby"}},
		{"dead master shown standby", []HostedBy{b(dead("a"), "active"), b(alive("b", true), "standby")}, []string{"standby", "standby"}},
		{"admin-down master shown standby", []HostedBy{b(alive("a", false), "active"), b(alive("b", true), "active")}, []string{"standby", "active"}},
		{"every agent dead is unknown", []HostedBy{b(dead("a"), "active"), b(dead("b"), "standby")}, []string{"unknown", "unknown"}},
		{"never reported is standby", []HostedBy{b(alive("a", true), "")}, []string{"standby"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ViewStates(tt.in, func(a *store.Agent) bool { return Alive(a, now, down) })
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("got %v, want %v", got, tt.want)
				}
			}
		})
	}
	_ = agentapi.HAActive
}

func TestHANetworkNameMatchesNeutronForTheFirstNetwork(t *testing.T) {
	if got := HANetworkName("p1", 1); got != "HA network tenant p1" {
		t.Fatalf("got %q", got)
	}
	if got := HANetworkName("p1", 2); got != "HA network tenant p1 #2" {
		t.Fatalf("got %q", got)
	}
}

func TestFewestMastersFirst(t *testing.T) {
	c := []Candidate{{AgentID: "a"}, {AgentID: "b"}, {AgentID: "c"}}
	got := FewestMastersFirst(c, map[string]int{"a": 3, "b": 1, "c": 1})
	if got[0].AgentID != "b" || got[1].AgentID != "a" || got[2].AgentID != "c" {
		t.Errorf("got %v, want b a c", got)
	}
	if got := FewestMastersFirst(c, nil); got[0].AgentID != "a" || len(got) != 3 {
		t.Errorf("got %v, want the order kept", got)
	}
	if c[0].AgentID != "a" || c[1].AgentID != "b" {
		t.Errorf("input changed: %v", c)
	}
}

// TestAliveSurvivesStepsOfTheWallClock: an agent whose last heartbeat this
// server stored is judged by the heartbeat's age on the monotonic clock, so
// a wall clock set an hour forward shows it alive and one set an hour back
// shows it dead once it really is; a heartbeat another server stored is
// judged by the wall clock.
func TestAliveSurvivesStepsOfTheWallClock(t *testing.T) {
	down := 10 * time.Second
	m := NewManager(Config{AgentDownTime: down}, nil)
	stored := time.Now().UTC()
	a := &store.Agent{ID: "a1", HeartbeatAt: stored.Truncate(time.Microsecond)}
	m.Heard(a.ID, stored)
	if !m.Alive(a, stored.Add(time.Hour)) {
		t.Error("a fresh heartbeat, the clock an hour ahead: dead")
	}
	// A dead agent under a clock set back: only the monotonic memory knows.
	m.live.heard[a.ID] = heard{stored: stored, at: time.Now().Add(-time.Minute)}
	if m.Alive(a, stored.Add(-time.Hour)) {
		t.Error("a heartbeat a minute old, the clock an hour back: alive")
	}
	other := &store.Agent{ID: "a1", HeartbeatAt: stored.Add(3 * time.Second).Truncate(time.Microsecond)}
	if !m.Alive(other, stored.Add(5*time.Second)) {
		t.Error("a newer heartbeat another server stored: not judged by the wall clock")
	}
	if m.Alive(&store.Agent{ID: "never-heard", HeartbeatAt: stored}, stored.Add(time.Minute)) {
		t.Error("an agent this server never heard, a minute silent: alive")
	}
	// How long it has been silent (the automatic failover of legacy
	// routers waits twice agent_down_time) is monotonic too.
	if got := m.SilentFor(a, stored.Add(time.Hour)); got < time.Minute || got > time.Minute+time.Second {
		t.Errorf("SilentFor with the clock an hour ahead = %s, want the minute since the heartbeat", got)
	}
}
