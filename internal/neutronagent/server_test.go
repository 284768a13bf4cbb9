package neutronagent

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/agentapi"
)

// fakeNeutron is a fake neutron-server for unit tests: it answers the L3
// plugin's calls from a table of router dicts and records every call.
type fakeNeutron struct {
	mu      sync.Mutex
	routers map[string]json.RawMessage // id → router dict of this host
	calls   []string                   // "method args"
	status  string                     // report_state's answer
	fail    error
	// duringSync runs inside a sync_routers call, unlocked (a cast that
	// arrives while the agent's sync is under way).
	duringSync func()
}

func (f *fakeNeutron) Call(_ context.Context, topic, version, method string, args map[string]any) (json.RawMessage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, _ := json.Marshal(args)
	f.calls = append(f.calls, method+" "+string(b))
	if f.fail != nil {
		return nil, f.fail
	}
	switch method {
	case "report_state":
		return json.Marshal(f.status)
	case "get_router_ids":
		ids := make([]string, 0, len(f.routers))
		for id := range f.routers {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		return json.Marshal(ids)
	case "sync_routers":
		if hook := f.duringSync; hook != nil {
			f.duringSync = nil
			f.mu.Unlock()
			hook()
			f.mu.Lock()
		}
		var out []json.RawMessage
		for _, id := range args["router_ids"].([]string) {
			if r, ok := f.routers[id]; ok {
				out = append(out, r)
			}
		}
		if out == nil {
			return json.RawMessage("[]"), nil
		}
		return json.Marshal(out)
	case "update_floatingip_statuses":
		return json.RawMessage("null"), nil
	}
	return nil, fmt.Errorf("fake neutron-server: no method %s", method)
}

func (f *fakeNeutron) Cast(ctx context.Context, topic, version, method string, args map[string]any) error {
	_, err := f.Call(ctx, topic, version, method, args)
	if err != nil && strings.Contains(err.Error(), "no method") {
		return nil // recorded
	}
	return err
}

func (f *fakeNeutron) took(method string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		if strings.HasPrefix(c, method+" ") {
			out = append(out, strings.TrimPrefix(c, method+" "))
		}
	}
	return out
}

func fixtureRouters(t *testing.T) map[string]json.RawMessage {
	t.Helper()
	raw, err := os.ReadFile("testdata/sync_routers_ha.json")
	if err != nil {
		t.Fatal(err)
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		t.Fatal(err)
	}
	m := map[string]json.RawMessage{}
	for _, it := range items {
		var id struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(it, &id)
		if id.ID != "" {
			m[id.ID] = it
		}
	}
	return m
}

const goodRouter = "11111111-1111-4111-8111-111111111111"

func testConfig() *Config {
	return &Config{Host: "net2", InterfaceDriver: "linuxbridge", AvailabilityZone: "nova", HADriver: "native", HandleInternalOnly: true, ReportInterval: 5 * time.Second}
}

// report_state registers an "L3 agent" of binary neutron-l3-agent with
// start_flag once; a "revived" answer asks for a full sync and a new agent
// id, so the agent re-reports its HA states.
func TestReportStateRegistersAnL3AgentAndRevivalResyncs(t *testing.T) {
	fn := &fakeNeutron{routers: map[string]json.RawMessage{}, status: "alive"}
	s := NewServer(testConfig(), fn, nil)
	ctx := context.Background()
	r1, err := s.Heartbeat(ctx, agentapi.Heartbeat{})
	if err != nil {
		t.Fatal(err)
	}
	if r1.IntervalSeconds != 5 {
		t.Errorf("interval %v, want report_interval 5", r1.IntervalSeconds)
	}
	r2, _ := s.Heartbeat(ctx, agentapi.Heartbeat{})
	reports := fn.took("report_state")
	if len(reports) != 2 {
		t.Fatalf("reports %v", reports)
	}
	for _, want := range []string{`"agent_type":"L3 agent"`, `"binary":"neutron-l3-agent"`, `"host":"net2"`, `"topic":"l3_agent"`, `"start_flag":true`, `"agent_mode":"legacy"`} {
		if !strings.Contains(reports[0], want) {
			t.Errorf("first report lacks %s: %s", want, reports[0])
		}
	}
	if strings.Contains(reports[1], "start_flag") || r1.AgentID != r2.AgentID {
		t.Errorf("second report %s, ids %s %s", reports[1], r1.AgentID, r2.AgentID)
	}
	_, _, _ = s.WaitState(ctx, "net2", "", time.Millisecond) // the start's full sync
	before := len(fn.took("get_router_ids"))
	fn.status = "revived"
	r3, _ := s.Heartbeat(ctx, agentapi.Heartbeat{})
	if r3.AgentID == r2.AgentID {
		t.Error("revived: same agent id, the agent would not re-report its HA states")
	}
	_, _, _ = s.WaitState(ctx, "net2", "", time.Millisecond)
	if got := len(fn.took("get_router_ids")); got != before+1 {
		t.Errorf("revived: %d full syncs, want one more than %d", got, before)
	}
}

// The first WaitState syncs everything; a cast marks one router, and only
// that router is asked for again; a router neutron-server no longer gives
// is removed; a router whose dict turns malformed keeps what it had.
func TestCastsResyncOnlyTheRoutersTheyName(t *testing.T) {
	fn := &fakeNeutron{routers: fixtureRouters(t), status: "alive"}
	s := NewServer(testConfig(), fn, nil)
	ctx := context.Background()
	st, changed, err := s.WaitState(ctx, "net2", "", time.Second)
	if err != nil || !changed {
		t.Fatalf("first state: %v %v", changed, err)
	}
	if len(st.Routers) != 1 || st.Routers[0].ID != goodRouter || st.Routers[0].HAPending {
		t.Fatalf("routers %+v", st.Routers)
	}
	// Nothing new: the wait times out.
	if _, changed, err := s.WaitState(ctx, "net2", st.ETag, 50*time.Millisecond); changed || err != nil {
		t.Fatalf("no change: changed %v err %v", changed, err)
	}
	// The HA port goes down (a full resync after a reboot): VRRP must wait.
	fn.mu.Lock()
	fn.routers[goodRouter] = json.RawMessage(strings.Replace(string(fn.routers[goodRouter]), `"device_owner": "network:router_ha_interface", "status": "ACTIVE"`, `"device_owner": "network:router_ha_interface", "status": "DOWN"`, 1))
	fn.mu.Unlock()
	h := s.Endpoint()
	if _, err := h["routers_updated"](ctx, json.RawMessage(`{"routers": ["`+goodRouter+`"]}`)); err != nil {
		t.Fatal(err)
	}
	st2, changed, err := s.WaitState(ctx, "net2", st.ETag, time.Second)
	if err != nil || !changed || !st2.Routers[0].HAPending {
		t.Fatalf("after routers_updated: changed %v err %v routers %+v", changed, err, st2.Routers)
	}
	syncs := fn.took("sync_routers")
	if last := syncs[len(syncs)-1]; !strings.Contains(last, `"router_ids":["`+goodRouter+`"]`) {
		t.Errorf("resync asked %s, want only the router cast", last)
	}
	// Malformed now: the router keeps its last good state.
	fn.mu.Lock()
	fn.routers[goodRouter] = json.RawMessage(`{"id": "` + goodRouter + `", "ha": "very"}`)
	fn.mu.Unlock()
	_, _ = h["router_added_to_agent"](ctx, json.RawMessage(`{"payload": ["`+goodRouter+`"]}`))
	if st3, changed, _ := s.WaitState(ctx, "net2", st2.ETag, 50*time.Millisecond); changed {
		t.Errorf("a malformed dict changed the state: %+v", st3.Routers)
	}
	// Removed from the agent: gone.
	fn.mu.Lock()
	delete(fn.routers, goodRouter)
	fn.mu.Unlock()
	_, _ = h["router_removed_from_agent"](ctx, json.RawMessage(`{"payload": {"router_id": "`+goodRouter+`"}}`))
	st4, changed, err := s.WaitState(ctx, "net2", st2.ETag, time.Second)
	if err != nil || !changed || len(st4.Routers) != 0 {
		t.Fatalf("after removal: changed %v err %v routers %+v", changed, err, st4.Routers)
	}
}

func TestEndpointRefusesMalformedCasts(t *testing.T) {
	s := NewServer(testConfig(), &fakeNeutron{}, nil)
	h := s.Endpoint()
	for method, args := range map[string]string{
		"routers_updated":           `{"routers": 7}`,
		"router_deleted":            `{}`,
		"router_added_to_agent":     `{"payload": {"x": 1}}`,
		"router_removed_from_agent": `{"payload": []}`,
		"network_update":            `{"network": "x"}`,
	} {
		if _, err := h[method](context.Background(), json.RawMessage(args)); err == nil {
			t.Errorf("%s %s: accepted", method, args)
		}
	}
}

func TestHAStatesGoToNeutronAsUpdateHARoutersStates(t *testing.T) {
	fn := &fakeNeutron{}
	s := NewServer(testConfig(), fn, nil)
	if err := s.ReportHAStates(context.Background(), agentapi.HAStateReport{Host: "net2", States: map[string]string{goodRouter: "active"}}); err != nil {
		t.Fatal(err)
	}
	got := fn.took("update_ha_routers_states")
	if len(got) != 1 || got[0] != `{"host":"net2","states":{"`+goodRouter+`":"active"}}` {
		t.Errorf("casts %v", got)
	}
}

// A cast that arrives while the agent is syncing that very router (the HA
// port turned ACTIVE just after the answer was built) is not lost: the
// router is synced again.
func TestCastDuringSyncIsNotLost(t *testing.T) {
	fn := &fakeNeutron{routers: fixtureRouters(t), status: "alive"}
	down := json.RawMessage(strings.Replace(string(fn.routers[goodRouter]), `"device_owner": "network:router_ha_interface", "status": "ACTIVE"`, `"device_owner": "network:router_ha_interface", "status": "DOWN"`, 1))
	up := fn.routers[goodRouter]
	fn.routers[goodRouter] = down
	s := NewServer(testConfig(), fn, nil)
	ctx := context.Background()
	st, _, err := s.WaitState(ctx, "net2", "", time.Second)
	if err != nil || !st.Routers[0].HAPending {
		t.Fatalf("first state: %v %+v", err, st.Routers)
	}
	h := s.Endpoint()
	fn.mu.Lock()
	fn.duringSync = func() {
		// The port is bound now, and neutron-server says so while the
		// agent's sync (which saw it DOWN) is in flight.
		fn.mu.Lock()
		fn.routers[goodRouter] = up
		fn.mu.Unlock()
		_, _ = h["routers_updated"](ctx, json.RawMessage(`{"routers": ["`+goodRouter+`"]}`))
	}
	fn.routers[goodRouter] = down
	fn.mu.Unlock()
	_, _ = h["routers_updated"](ctx, json.RawMessage(`{"routers": ["`+goodRouter+`"]}`))
	etag := st.ETag
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		st, changed, err := s.WaitState(ctx, "net2", etag, 100*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if changed {
			etag = st.ETag
			if !st.Routers[0].HAPending {
				return
			}
		}
	}
	t.Fatal("the cast that came during the sync was lost: the router still waits for its HA port")
}

// A router whose VRRP waits for its HA port is synced again every
// pendingRecheck even when no cast comes (it may have been lost).
func TestPendingRouterIsRecheckedWithoutACast(t *testing.T) {
	fn := &fakeNeutron{routers: fixtureRouters(t), status: "alive"}
	up := fn.routers[goodRouter]
	fn.routers[goodRouter] = json.RawMessage(strings.Replace(string(up), `"device_owner": "network:router_ha_interface", "status": "ACTIVE"`, `"device_owner": "network:router_ha_interface", "status": "DOWN"`, 1))
	s := NewServer(testConfig(), fn, nil)
	ctx := context.Background()
	st, _, err := s.WaitState(ctx, "net2", "", time.Second)
	if err != nil || !st.Routers[0].HAPending {
		t.Fatalf("first state: %v %+v", err, st.Routers)
	}
	fn.mu.Lock()
	fn.routers[goodRouter] = up // bound; the cast saying so is lost
	fn.mu.Unlock()
	st2, changed, err := s.WaitState(ctx, "net2", st.ETag, 3*pendingRecheck)
	if err != nil || !changed || st2.Routers[0].HAPending {
		t.Fatalf("after %v: changed %v err %v routers %+v", 3*pendingRecheck, changed, err, st2.Routers)
	}
}
