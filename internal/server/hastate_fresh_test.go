package server_test

// Tests of issue 12, point 1: the ha_state the API shows follows the
// freshest kernel truth. Agents re-assert every router's state periodically
// (agentapi.HAStateReport.Full); a transition to active supersedes other
// active bindings, a re-assertion of active supersedes only stale ones, and
// two fresh actives are shown as the split brain they are.
//
// Most tests drive the agent endpoint directly (heartbeat, ha_states) so
// that each report is exactly the one the test means; the end-to-end tests
// run real agent loops with the fake data plane and a short re-assertion
// interval.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/l3ha/l3ha/internal/agent"
	"github.com/l3ha/l3ha/internal/agentapi"
	"github.com/l3ha/l3ha/internal/servertest"
	"github.com/l3ha/l3ha/internal/store"
)

// fsPost sends body as host's agent to the agent endpoint path and checks
// the status.
func fsPost(t *testing.T, srv *servertest.Instance, host, path string, body any, want int) []byte {
	t.Helper()
	var buf bytes.Buffer
	switch b := body.(type) {
	case string:
		buf.WriteString(b)
	default:
		if err := json.NewEncoder(&buf).Encode(b); err != nil {
			t.Fatal(err)
		}
	}
	req, err := http.NewRequest(http.MethodPost, srv.URL+path, &buf)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(agentapi.TokenHeader, servertest.AgentTokenOf(host))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("POST %s as %s: %d, want %d: %s", path, host, resp.StatusCode, want, data)
	}
	return data
}

// fsHeartbeat registers host (or keeps it alive).
func fsHeartbeat(t *testing.T, srv *servertest.Instance, host string) string {
	t.Helper()
	data := fsPost(t, srv, host, agentapi.PathHeartbeat, agentapi.Heartbeat{
		Host: host, AgentType: agentapi.AgentTypeL3, StartedAt: time.Unix(1700000000, 0).UTC(),
		Configurations: map[string]any{"agent_mode": agentapi.ModeLegacy},
	}, http.StatusOK)
	var reply agentapi.HeartbeatReply
	if err := json.Unmarshal(data, &reply); err != nil {
		t.Fatal(err)
	}
	return reply.AgentID
}

// fsReport sends one ha_state report.
func fsReport(t *testing.T, srv *servertest.Instance, rep agentapi.HAStateReport) {
	t.Helper()
	fsPost(t, srv, rep.Host, agentapi.PathHAStates, rep, http.StatusNoContent)
}

// transitionOf is a transition report of one router, as agents send them.
func transitionOf(host, routerID, state string) agentapi.HAStateReport {
	return agentapi.HAStateReport{Host: host, States: map[string]string{routerID: state}, ReassertSeconds: 10}
}

// reassertOf is a re-assertion of one router's state (the host's only one).
func reassertOf(host, routerID, state string) agentapi.HAStateReport {
	return agentapi.HAStateReport{Host: host, States: map[string]string{routerID: state}, Full: true, ReassertSeconds: 10}
}

// fsStates returns host → ha_state of the router's agents, as the API shows.
func fsStates(t *testing.T, srv *servertest.Instance, routerID string) map[string]string {
	t.Helper()
	var out struct{ Agents []map[string]any }
	if err := call(srv.URL, "GET", "/v2.0/routers/"+routerID+"/l3-agents", nil, &out); err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, a := range out.Agents {
		m[a["host"].(string)] = fmt.Sprint(a["ha_state"])
	}
	return m
}

func wantStates(t *testing.T, srv *servertest.Instance, routerID string, want map[string]string) {
	t.Helper()
	if got := fsStates(t, srv, routerID); !maps.Equal(got, want) {
		t.Fatalf("ha_state %v, want %v", got, want)
	}
}

func wantSplitBrain(t *testing.T, srv *servertest.Instance, want int) {
	t.Helper()
	n, err := srv.Server.SplitBrainRouters(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n != want {
		t.Fatalf("split-brain routers %d, want %d", n, want)
	}
}

// fsRouter starts a server with agents net1 and net2 registered (by
// heartbeat, alive for the default agent_down_time of 75 s) and an HA
// router bound to both, and returns the server and the router's id.
func fsRouter(t *testing.T, backend string) (*servertest.Instance, string) {
	t.Helper()
	return fsRouterOf(t, servertest.Options{Backend: backend})
}

// fsRouterOf is fsRouter with a server started with o.
func fsRouterOf(t *testing.T, o servertest.Options) (*servertest.Instance, string) {
	t.Helper()
	srv := servertest.Start(t, o)
	fsHeartbeat(t, srv, "net1")
	fsHeartbeat(t, srv, "net2")
	var created struct{ Router map[string]any }
	if err := call(srv.URL, "POST", "/v2.0/routers", map[string]any{"router": map[string]any{"name": "r", "ha": true}}, &created); err != nil {
		t.Fatal(err)
	}
	id := created.Router["id"].(string)
	wantStates(t, srv, id, map[string]string{"net1": "standby", "net2": "standby"})
	return srv, id
}

// fsAge makes host's report about the router stale: its freshness ended a
// second ago (as if the agent had been silent for the whole window).
func fsAge(t *testing.T, srv *servertest.Instance, routerID, host string) {
	t.Helper()
	err := srv.Server.DB().WriteQuiet(context.Background(), func(tx *store.Tx) error {
		as, err := tx.ListAgents(store.Where{"host": host})
		if err != nil || len(as) != 1 {
			return fmt.Errorf("agent of %s: %v, %v", host, as, err)
		}
		bs, err := tx.ListBindings(store.Where{"router_id": routerID, "agent_id": as[0].ID})
		if err != nil || len(bs) != 1 {
			return fmt.Errorf("binding of %s: %v, %v", host, bs, err)
		}
		_, err = tx.SetReportedHAState(routerID, as[0].ID, bs[0].HAState, tx.Now.Add(-time.Second))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestHAStateConflictResolution: net1 is the router's active binding; then
// net2 reports active. Whether net1 is demoted depends on the kind of
// report and on whether net1's own report is still fresh.
func TestHAStateConflictResolution(t *testing.T) {
	for _, backend := range servertest.Backends(t) {
		for _, tc := range []struct {
			name       string
			net1Stale  bool
			report     func(id string) any // net2's report
			want       map[string]string
			splitBrain int
		}{
			{
				name: "transition supersedes fresh active", report: func(id string) any { return transitionOf("net2", id, "active") },
				want: map[string]string{"net1": "standby", "net2": "active"},
			},
			{
				name: "transition supersedes stale active", net1Stale: true, report: func(id string) any { return transitionOf("net2", id, "active") },
				want: map[string]string{"net1": "standby", "net2": "active"},
			},
			{
				name: "re-assertion beside fresh active is split brain", report: func(id string) any { return reassertOf("net2", id, "active") },
				want: map[string]string{"net1": "active", "net2": "active"}, splitBrain: 1,
			},
			{
				name: "re-assertion supersedes stale active", net1Stale: true, report: func(id string) any { return reassertOf("net2", id, "active") },
				want: map[string]string{"net1": "standby", "net2": "active"},
			},
			{
				name: "transition inside a re-assertion supersedes fresh active",
				report: func(id string) any {
					r := reassertOf("net2", id, "active")
					r.Changed = []string{id}
					return r
				},
				want: map[string]string{"net1": "standby", "net2": "active"},
			},
			{
				name:   "old report shape is a transition",
				report: func(id string) any { return `{"host":"net2","states":{"` + id + `":"active"}}` },
				want:   map[string]string{"net1": "standby", "net2": "active"},
			},
			{
				name: "standby re-assertion leaves the active alone", report: func(id string) any { return reassertOf("net2", id, "standby") },
				want: map[string]string{"net1": "active", "net2": "standby"},
			},
		} {
			t.Run(backend+"/"+tc.name, func(t *testing.T) {
				srv, id := fsRouter(t, backend)
				fsReport(t, srv, transitionOf("net1", id, "active"))
				fsReport(t, srv, reassertOf("net2", id, "standby"))
				wantStates(t, srv, id, map[string]string{"net1": "active", "net2": "standby"})
				if tc.net1Stale {
					fsAge(t, srv, id, "net1")
				}
				fsPost(t, srv, "net2", agentapi.PathHAStates, tc.report(id), http.StatusNoContent)
				wantStates(t, srv, id, tc.want)
				wantSplitBrain(t, srv, tc.splitBrain)
			})
		}
	}
}

// TestSplitBrainBothActiveShownUntilHealed: the HA network between net1
// and net2 is cut. net2 stops hearing net1 and becomes master (a
// transition, which supersedes net1 at once); net1, still master, re-asserts
// active and both are shown active, for as long as both keep re-asserting.
// When the partition heals, net2 steps down and the API shows net1 alone.
func TestSplitBrainBothActiveShownUntilHealed(t *testing.T) {
	for _, backend := range servertest.Backends(t) {
		t.Run(backend, func(t *testing.T) {
			srv, id := fsRouter(t, backend)
			fsReport(t, srv, transitionOf("net1", id, "active"))
			fsReport(t, srv, transitionOf("net2", id, "standby"))
			wantStates(t, srv, id, map[string]string{"net1": "active", "net2": "standby"})
			wantSplitBrain(t, srv, 0)

			// The partition.
			fsReport(t, srv, transitionOf("net2", id, "active"))
			wantStates(t, srv, id, map[string]string{"net1": "standby", "net2": "active"})
			fsReport(t, srv, reassertOf("net1", id, "active"))
			wantStates(t, srv, id, map[string]string{"net1": "active", "net2": "active"})
			wantSplitBrain(t, srv, 1)
			// Both keep re-asserting: it stays shown.
			for range 3 {
				fsReport(t, srv, reassertOf("net2", id, "active"))
				fsReport(t, srv, reassertOf("net1", id, "active"))
				wantStates(t, srv, id, map[string]string{"net1": "active", "net2": "active"})
			}
			wantSplitBrain(t, srv, 1)

			// The heal: net2 hears net1 (higher address) and steps down.
			fsReport(t, srv, transitionOf("net2", id, "standby"))
			wantStates(t, srv, id, map[string]string{"net1": "active", "net2": "standby"})
			wantSplitBrain(t, srv, 0)
			fsReport(t, srv, reassertOf("net1", id, "active"))
			fsReport(t, srv, reassertOf("net2", id, "standby"))
			wantStates(t, srv, id, map[string]string{"net1": "active", "net2": "standby"})

			// The ports follow the last master to claim the router.
			var ports struct{ Ports []map[string]any }
			if err := call(srv.URL, "GET", "/v2.0/ports?device_id="+id, nil, &ports); err != nil {
				t.Fatal(err)
			}
			for _, p := range ports.Ports {
				if p["device_owner"] != "network:router_ha_interface" && p["binding:host_id"] != "net1" {
					t.Errorf("port %v (%v) on %v, want net1", p["id"], p["device_owner"], p["binding:host_id"])
				}
			}
		})
	}
}

// TestReassertRestoresActiveAfterHeal is the review's case: net2 took over
// during a partition (superseding net1), the partition healed before net1
// re-asserted, and net1 — which never stopped being master — won: net2
// reports standby, and both bindings show standby. The next re-assertion of
// net1 shows it active again; before issue 12 both stayed standby forever.
func TestReassertRestoresActiveAfterHeal(t *testing.T) {
	for _, backend := range servertest.Backends(t) {
		t.Run(backend, func(t *testing.T) {
			srv, id := fsRouter(t, backend)
			fsReport(t, srv, transitionOf("net1", id, "active"))
			fsReport(t, srv, transitionOf("net2", id, "standby"))
			fsReport(t, srv, transitionOf("net2", id, "active"))
			fsReport(t, srv, transitionOf("net2", id, "standby"))
			wantStates(t, srv, id, map[string]string{"net1": "standby", "net2": "standby"})
			fsReport(t, srv, reassertOf("net1", id, "active"))
			wantStates(t, srv, id, map[string]string{"net1": "active", "net2": "standby"})
			wantSplitBrain(t, srv, 0)
		})
	}
}

// TestTransitionSupersedesStaleActive: net1's node dies silently (its agent
// still counts as alive until agent_down_time) and net2 takes over. Its
// transition shows it active at once; and when net2's transition was lost
// and only its re-assertion arrives, net1's claim has gone stale by then
// (net1 no longer re-asserts) and gives way too.
func TestTransitionSupersedesStaleActive(t *testing.T) {
	for _, backend := range servertest.Backends(t) {
		t.Run(backend, func(t *testing.T) {
			srv, id := fsRouter(t, backend)
			fsReport(t, srv, transitionOf("net1", id, "active"))
			fsReport(t, srv, transitionOf("net2", id, "standby"))
			fsReport(t, srv, transitionOf("net2", id, "active"))
			wantStates(t, srv, id, map[string]string{"net1": "standby", "net2": "active"})

			// A second router, whose net2 transition is lost.
			var created struct{ Router map[string]any }
			if err := call(srv.URL, "POST", "/v2.0/routers", map[string]any{"router": map[string]any{"name": "r2", "ha": true}}, &created); err != nil {
				t.Fatal(err)
			}
			id2 := created.Router["id"].(string)
			fsReport(t, srv, transitionOf("net1", id2, "active"))
			fsReport(t, srv, agentapi.HAStateReport{Host: "net2", States: map[string]string{id: "active", id2: "active"}, Full: true, ReassertSeconds: 10})
			wantStates(t, srv, id2, map[string]string{"net1": "active", "net2": "active"}) // net1 fresh: split brain
			fsAge(t, srv, id2, "net1")
			fsReport(t, srv, agentapi.HAStateReport{Host: "net2", States: map[string]string{id: "active", id2: "active"}, Full: true, ReassertSeconds: 10})
			wantStates(t, srv, id2, map[string]string{"net1": "standby", "net2": "active"})
			wantStates(t, srv, id, map[string]string{"net1": "standby", "net2": "active"})
			wantSplitBrain(t, srv, 0)
		})
	}
}

// TestStaleActiveOfDeadAgentIsNotSplitBrain: a dead agent's active binding
// is shown standby (as before issue 12) and never counts as a fresh claim,
// even within its freshness window; when another agent claims the router,
// the server gives the dead one's claim up and records it as lost, with
// the dead agent's host, beside the takeover.
func TestStaleActiveOfDeadAgentIsNotSplitBrain(t *testing.T) {
	srv, id := fsRouterOf(t, servertest.Options{AgentDownTime: 3 * time.Second})
	ids := map[string]string{"net1": fsHeartbeat(t, srv, "net1"), "net2": fsHeartbeat(t, srv, "net2")}
	fsReport(t, srv, transitionOf("net1", id, "active"))
	fsReport(t, srv, transitionOf("net2", id, "standby"))
	// net2 keeps heartbeating; net1 dies.
	servertest.Eventually(t, 10*time.Second, func() error {
		fsHeartbeat(t, srv, "net2")
		if m := fsStates(t, srv, id); m["net1"] != "standby" {
			return fmt.Errorf("states %v: net1 not yet shown dead", m)
		}
		return nil
	})
	fsReport(t, srv, reassertOf("net2", id, "active"))
	wantStates(t, srv, id, map[string]string{"net1": "standby", "net2": "active"})
	wantSplitBrain(t, srv, 0)
	// In the database too: net1 was demoted, not just hidden.
	err := srv.Server.DB().Read(context.Background(), func(tx *store.Tx) error {
		bs, err := tx.ListBindings(store.Where{"router_id": id, "ha_state": "active"})
		if err != nil {
			return err
		}
		if len(bs) != 1 {
			return fmt.Errorf("active bindings %+v, want net2's alone", bs)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []histRow{
		{"net1", "standby", "active", ""},
		{"net2", "standby", "active", "peer_lost"},
		{"net1", "active", "standby", "peer_lost"},
	}
	if got := history(t, srv, id, "", ids); !slices.Equal(got, want) {
		t.Fatalf("history\n%v\nwant\n%v", got, want)
	}
}

// TestReassertOf1000RoutersIsCheap: a re-assertion of 1000 routers that
// changes nothing is a quiet write (no revision bump, so no long-poll
// wakes up) that changes nothing but the report times, and records no HA
// transition; one that changes one router's state changes that router
// alone: its binding and one transition.
func TestReassertOf1000RoutersIsCheap(t *testing.T) {
	const n = 1000
	for _, backend := range servertest.Backends(t) {
		t.Run(backend, func(t *testing.T) {
			srv := servertest.Start(t, servertest.Options{Backend: backend, AutoSchedule: new(bool)})
			id1, id2 := fsHeartbeat(t, srv, "net1"), fsHeartbeat(t, srv, "net2")
			ctx := context.Background()
			db := srv.Server.DB()
			ids := make([]string, n)
			states := map[string]string{}
			_, err := db.Write(ctx, func(tx *store.Tx) error {
				for i := range ids {
					ids[i] = uuid.NewString()
					if err := tx.InsertRouter(&store.Router{ID: ids[i], ProjectID: "admin", Name: fmt.Sprint("r", i), AdminStateUp: true, Status: "ACTIVE", HA: true}); err != nil {
						return err
					}
					for j, a := range []string{id1, id2} {
						if err := tx.InsertBinding(store.Binding{RouterID: ids[i], AgentID: a, BindingIndex: j + 1, HAState: "standby"}); err != nil {
							return err
						}
					}
					states[ids[i]] = []string{"active", "standby"}[i%2]
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			fsReport(t, srv, agentapi.HAStateReport{Host: "net1", States: states, Full: true, Changed: ids, ReassertSeconds: 10})

			reportedAt := func() map[string]time.Time {
				out := map[string]time.Time{}
				err := db.Read(ctx, func(tx *store.Tx) error {
					bs, err := tx.ListBindings(store.Where{"agent_id": id1})
					for _, b := range bs {
						out[b.RouterID] = b.HAStateAt
					}
					return err
				})
				if err != nil {
					t.Fatal(err)
				}
				return out
			}
			before, err := db.Dump(ctx)
			if err != nil {
				t.Fatal(err)
			}
			atBefore, rev := reportedAt(), db.Revision()
			began := time.Now()
			fsReport(t, srv, agentapi.HAStateReport{Host: "net1", States: states, Full: true, ReassertSeconds: 10})
			t.Logf("%s: re-assertion of %d unchanged routers answered in %v", backend, n, time.Since(began))
			after, err := db.Dump(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if d := fsDiff(before, after); d != "" {
				t.Errorf("a re-assertion that changes nothing changed the database:\n%s", d)
			}
			if got := db.Revision(); got != rev {
				t.Errorf("revision %d → %d: the re-assertion woke long-polls", rev, got)
			}
			for id, at := range reportedAt() {
				if !at.After(atBefore[id]) {
					t.Errorf("router %s: reported at %v, not after %v", id, at, atBefore[id])
					break
				}
			}

			// One router fails over: only its binding changes.
			states[ids[0]] = "standby"
			fsReport(t, srv, agentapi.HAStateReport{Host: "net1", States: states, Full: true, Changed: []string{ids[0]}, ReassertSeconds: 10})
			after2, err := db.Dump(ctx)
			if err != nil {
				t.Fatal(err)
			}
			d := fsDiff(after, after2)
			if strings.Count(d, "\n") != 3 || strings.Count(d, ids[0]) != 3 || strings.Count(d, "ha_transitions: + ") != 1 {
				t.Errorf("diff after one router's failover:\n%s\nwant that router's binding and one transition alone", d)
			}
			if got := db.Revision(); got != rev {
				t.Errorf("revision %d → %d after an ha_state report", rev, got)
			}
		})
	}
}

// fsDiff lists the rows of two dumps that differ ("- row" / "+ row").
func fsDiff(a, b map[string][]string) string {
	var out strings.Builder
	for table := range a {
		in := map[string]int{}
		for _, r := range a[table] {
			in[r]++
		}
		for _, r := range b[table] {
			in[r]--
		}
		for r, c := range in {
			switch {
			case c > 0:
				fmt.Fprintf(&out, "%s: - %s\n", table, r)
			case c < 0:
				fmt.Fprintf(&out, "%s: + %s\n", table, r)
			}
		}
	}
	for table := range b {
		if _, ok := a[table]; !ok {
			fmt.Fprintf(&out, "%s: new table\n", table)
		}
	}
	return out.String()
}

// fsAgent runs the real agent loops for host against srv with the fake
// data plane, re-asserting every reassert.
func fsAgent(t *testing.T, srv *servertest.Instance, host string, reassert time.Duration) *agent.FakeDataplane {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	dp := agent.NewFakeDataplane()
	done := make(chan error, 1)
	cfg := agent.Config{
		Host: host, Servers: []string{srv.URL}, AgentToken: servertest.AgentTokenOf(host), LocalIP: "192.0.2." + fmt.Sprint(10+len(host)%200),
		ReportBatchDelay: 20 * time.Millisecond, PollWait: 10 * time.Second, ReassertInterval: reassert,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second,
	}
	go func() { done <- agent.Run(ctx, cfg, dp, servertest.Logger(t).With("agent", host)) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return dp
}

// TestAgentsReassertAfterSplitBrainHeals runs real agent loops: net2 takes
// the router over while net1 stays master (split brain), then steps down
// again at once — before net1's next re-assertion — and the API ends up
// showing net1 alone active, and keeps showing it, within a few
// re-assertion intervals.
func TestAgentsReassertAfterSplitBrainHeals(t *testing.T) {
	const reassert = 500 * time.Millisecond
	srv := servertest.Start(t, servertest.Options{})
	dp1 := fsAgent(t, srv, "net1", reassert)
	dp2 := fsAgent(t, srv, "net2", reassert)
	var created struct{ Router map[string]any }
	servertest.Eventually(t, 10*time.Second, func() error {
		return call(srv.URL, "POST", "/v2.0/routers", map[string]any{"router": map[string]any{"name": "r", "ha": true}}, &created)
	})
	id := created.Router["id"].(string)
	// The fake data plane makes binding index 1 the master.
	var master, backup string
	var bdp *agent.FakeDataplane
	servertest.Eventually(t, 15*time.Second, func() error {
		m := fsStates(t, srv, id)
		switch {
		case m["net1"] == "active" && m["net2"] == "standby":
			master, backup, bdp = "net1", "net2", dp2
		case m["net2"] == "active" && m["net1"] == "standby":
			master, backup, bdp = "net2", "net1", dp1
		default:
			return fmt.Errorf("states %v", m)
		}
		return nil
	})

	// Split brain: the backup becomes master too; both are shown active
	// once the master re-asserts.
	if err := bdp.SetState(id, "active"); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 15*time.Second, func() error {
		if m := fsStates(t, srv, id); m[master] != "active" || m[backup] != "active" {
			return fmt.Errorf("states %v, want both active", m)
		}
		return nil
	})
	if n, err := srv.Server.SplitBrainRouters(context.Background()); err != nil || n != 1 {
		t.Errorf("split-brain routers %d (%v), want 1", n, err)
	}

	// Heal: the backup steps down.
	if err := bdp.SetState(id, "standby"); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{master: "active", backup: "standby"}
	servertest.Eventually(t, 15*time.Second, func() error {
		if m := fsStates(t, srv, id); !maps.Equal(m, want) {
			return fmt.Errorf("states %v, want %v", m, want)
		}
		return nil
	})
	// ... and it stays so across re-assertions.
	for end := time.Now().Add(4 * reassert); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if m := fsStates(t, srv, id); !maps.Equal(m, want) {
			t.Fatalf("states %v after the heal, want %v", m, want)
		}
	}

	// The review's case: the backup takes over and steps down before the
	// master re-asserts; the master shows active again by itself.
	if err := bdp.SetState(id, "active"); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 15*time.Second, func() error {
		if m := fsStates(t, srv, id); m[backup] != "active" {
			return fmt.Errorf("states %v, want %s active", m, backup)
		}
		return nil
	})
	if err := bdp.SetState(id, "standby"); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 15*time.Second, func() error {
		if m := fsStates(t, srv, id); !maps.Equal(m, want) {
			return fmt.Errorf("states %v, want %v", m, want)
		}
		return nil
	})
}
