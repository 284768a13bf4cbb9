package dashboard

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/l3ha/l3ha/internal/agentapi"
	"github.com/l3ha/l3ha/internal/ha"
	"github.com/l3ha/l3ha/internal/store"
)

// State is GET /dashboard/state.json: what the page shows, read in one
// transaction so that its parts agree (a router's master is among the
// agents, their counts add up). States are the API's view (ha.ViewStates):
// a dead or disabled agent is never shown active, and when all of a
// router's agents are dead its bindings are unknown.
type State struct {
	// GeneratedAt is the server's time of the snapshot: the page measures
	// ages against it, not against the browser's clock.
	GeneratedAt          Time    `json:"generated_at"`
	AgentDownTimeSeconds float64 `json:"agent_down_time_seconds"`
	// BenchPlot says whether /dashboard/bench.svg is configured.
	BenchPlot bool `json:"bench_plot"`
	// Agents are every registered agent, by host.
	Agents []Agent `json:"agents"`
	// Routers are the HA routers, by name then id.
	Routers []Router `json:"routers"`
	// Transitions are the newest HA transitions of all routers (at most
	// Options.RecentTransitions), oldest first as in the API's
	// ha_transitions.
	Transitions []Transition `json:"transitions"`
}

// Agent is an agent with what it hosts.
type Agent struct {
	ID           string `json:"id"`
	Host         string `json:"host"`
	AgentType    string `json:"agent_type"`
	Alive        bool   `json:"alive"`
	AdminStateUp bool   `json:"admin_state_up"`
	HeartbeatAt  Time   `json:"heartbeat_at"`
	// Routers counts the routers bound to the agent (legacy ones too),
	// Masters the HA routers it is shown active for.
	Routers int `json:"routers"`
	Masters int `json:"masters"`
}

// Router is an HA router and where it runs.
type Router struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	ProjectID    string `json:"project_id"`
	AdminStateUp bool   `json:"admin_state_up"`
	Status       string `json:"status"`
	// Master is the host of the one binding shown active; "" when none
	// is, or when several are (SplitBrain).
	Master     string `json:"master"`
	SplitBrain bool   `json:"split_brain"`
	// Bindings are the router's agents, by host.
	Bindings []Binding `json:"bindings"`
	// LastTransition is the router's newest HA transition, nil if none.
	LastTransition *Transition `json:"last_transition"`
}

// Binding is one agent of a router.
type Binding struct {
	AgentID string `json:"agent_id"`
	Host    string `json:"host"`
	// HAState is active, standby or unknown, as the API's l3-agents shows.
	HAState string `json:"ha_state"`
	Alive   bool   `json:"alive"`
	// ReportedAt is when the agent last reported the binding's state
	// (nil: never).
	ReportedAt *Time `json:"reported_at"`
}

// Transition is one HA transition as the API's ha_transitions shows it,
// with the router it belongs to (RouterName "" for a router that is no
// longer HA: its history stays until pruned).
type Transition struct {
	RouterID   string `json:"router_id"`
	RouterName string `json:"router_name"`
	AgentID    string `json:"agent_id"`
	Host       string `json:"host"`
	From       string `json:"from"`
	To         string `json:"to"`
	At         Time   `json:"at"`
	Reason     string `json:"reason"`
}

// Time is a UTC time in JSON with milliseconds ("2026-11-21T16:09:41.123Z"):
// failovers take well under a second, which the API's whole seconds would
// hide.
type Time time.Time

// TimeFormat is Time's layout.
const TimeFormat = "2006-01-02T15:04:05.000Z"

// MarshalJSON implements json.Marshaler.
func (t Time) MarshalJSON() ([]byte, error) {
	return []byte(`"` + time.Time(t).UTC().Format(TimeFormat) + `"`), nil
}

// UnmarshalJSON implements json.Unmarshaler.
func (t *Time) UnmarshalJSON(b []byte) error {
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return fmt.Errorf("dashboard time %s is not a string", b)
	}
	v, err := time.Parse(TimeFormat, string(b[1:len(b)-1]))
	if err != nil {
		return err
	}
	*t = Time(v)
	return nil
}

// snapshot reads the State in one read transaction.
func (h *handler) snapshot(ctx context.Context) (*State, error) {
	st := &State{
		AgentDownTimeSeconds: h.opts.AgentDownTime.Seconds(), BenchPlot: h.opts.BenchPlot != "",
		Agents: []Agent{}, Routers: []Router{}, Transitions: []Transition{},
	}
	err := h.db.Read(ctx, func(tx *store.Tx) error {
		st.GeneratedAt = Time(tx.Now)
		st.Agents, st.Routers, st.Transitions = st.Agents[:0], st.Routers[:0], st.Transitions[:0]
		agents, err := tx.ListAgents(nil)
		if err != nil {
			return err
		}
		routers, err := tx.ListRouters(store.Where{"ha": true})
		if err != nil {
			return err
		}
		bindings, err := tx.ListBindings(nil)
		if err != nil {
			return err
		}
		last, err := tx.LastHATransitions()
		if err != nil {
			return err
		}
		recent, err := tx.RecentHATransitions(h.opts.RecentTransitions)
		if err != nil {
			return err
		}
		h.assemble(st, tx.Now, agents, routers, bindings, last, recent)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the dashboard's snapshot: %w", err)
	}
	return st, nil
}

// assemble fills st from the rows of one transaction at now.
func (h *handler) assemble(st *State, now time.Time, agents []*store.Agent, routers []*store.Router,
	bindings []store.Binding, last map[string]store.HATransition, recent []store.HATransition) {
	alive := func(a *store.Agent) bool {
		if h.opts.Alive != nil {
			return h.opts.Alive(a, now)
		}
		return ha.Alive(a, now, h.opts.AgentDownTime)
	}
	byID := make(map[string]*store.Agent, len(agents))
	index := make(map[string]int, len(agents)) // agent id → position in st.Agents
	for _, a := range agents {
		byID[a.ID] = a
		index[a.ID] = len(st.Agents)
		st.Agents = append(st.Agents, Agent{
			ID: a.ID, Host: a.Host, AgentType: a.AgentType, Alive: alive(a),
			AdminStateUp: a.AdminStateUp, HeartbeatAt: Time(a.HeartbeatAt),
		})
	}
	hosted := map[string][]ha.HostedBy{} // router id → its bindings
	for _, b := range bindings {
		a, ok := byID[b.AgentID]
		if !ok {
			continue // not possible in one transaction; skipped, not fatal
		}
		st.Agents[index[a.ID]].Routers++
		hosted[b.RouterID] = append(hosted[b.RouterID], ha.HostedBy{Agent: a, Binding: b})
	}
	names := make(map[string]string, len(routers))
	for _, r := range routers {
		names[r.ID] = r.Name
		hs := hosted[r.ID]
		sort.Slice(hs, func(i, j int) bool { return hs[i].Agent.Host < hs[j].Agent.Host })
		states := ha.ViewStates(hs, alive)
		v := Router{ID: r.ID, Name: r.Name, ProjectID: r.ProjectID, AdminStateUp: r.AdminStateUp, Status: r.Status, Bindings: make([]Binding, 0, len(hs))}
		var masters []string
		for i, hb := range hs {
			b := Binding{AgentID: hb.Agent.ID, Host: hb.Agent.Host, HAState: states[i], Alive: alive(hb.Agent)}
			if !hb.Binding.HAStateAt.IsZero() {
				at := Time(hb.Binding.HAStateAt)
				b.ReportedAt = &at
			}
			if states[i] == agentapi.HAActive {
				masters = append(masters, hb.Agent.Host)
				st.Agents[index[hb.Agent.ID]].Masters++
			}
			v.Bindings = append(v.Bindings, b)
		}
		switch len(masters) {
		case 0:
		case 1:
			v.Master = masters[0]
		default:
			v.SplitBrain = true
		}
		if t, ok := last[r.ID]; ok {
			lt := transition(t, r.Name)
			v.LastTransition = &lt
		}
		st.Routers = append(st.Routers, v)
	}
	sort.SliceStable(st.Routers, func(i, j int) bool {
		a, b := st.Routers[i], st.Routers[j]
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return a.ID < b.ID
	})
	for _, t := range recent {
		st.Transitions = append(st.Transitions, transition(t, names[t.RouterID]))
	}
}

func transition(t store.HATransition, routerName string) Transition {
	return Transition{RouterID: t.RouterID, RouterName: routerName, AgentID: t.AgentID, Host: t.Host, From: t.From, To: t.To, At: Time(t.At), Reason: t.Reason}
}
