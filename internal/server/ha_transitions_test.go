package server_test

// Tests of the HA transition history (issue 11, item 2): GET
// /v2.0/routers/{id}/ha_transitions lists every change of a binding's
// ha_state that reports and the server's own decisions made, with its
// reason; re-assertions that change nothing add nothing.

import (
	"bufio"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/agentapi"
	"github.com/l3ha/l3ha/internal/servertest"
	"github.com/l3ha/l3ha/internal/store"
)

// histRow is one item of ha_transitions, its time left out (checked
// apart).
type histRow struct{ host, from, to, reason string }

func (r histRow) String() string { return fmt.Sprintf("%s %s→%s %q", r.host, r.from, r.to, r.reason) }

// history GETs the router's ha_transitions as the admin, with query (""
// or "?limit=N"), and checks each item's agent_id (agentIDs: host → id)
// and time format.
func history(t *testing.T, srv *servertest.Instance, routerID, query string, agentIDs map[string]string) []histRow {
	t.Helper()
	var out struct {
		HATransitions []map[string]any `json:"ha_transitions"`
	}
	if err := call(srv.URL, "GET", "/v2.0/routers/"+routerID+"/ha_transitions"+query, nil, &out); err != nil {
		t.Fatal(err)
	}
	if out.HATransitions == nil {
		t.Fatalf("no ha_transitions list in the answer")
	}
	var rows []histRow
	var last time.Time
	for _, item := range out.HATransitions {
		r := histRow{fmt.Sprint(item["host"]), fmt.Sprint(item["from"]), fmt.Sprint(item["to"]), fmt.Sprint(item["reason"])}
		if id, ok := agentIDs[r.host]; ok && item["agent_id"] != id {
			t.Errorf("%v: agent_id %v, want %s", r, item["agent_id"], id)
		}
		at, err := time.Parse("2006-01-02T15:04:05Z", fmt.Sprint(item["at"]))
		if err != nil {
			t.Errorf("%v: at %v is not the API's time format: %v", r, item["at"], err)
		}
		if at.Before(last) {
			t.Errorf("%v at %v comes after a row at %v: want the oldest first", r, at, last)
		}
		if d := time.Since(at); d < -time.Second || d > 10*time.Minute {
			t.Errorf("%v: at %v, not now", r, at)
		}
		last = at
		rows = append(rows, r)
	}
	return rows
}

// metricValues scrapes the server's /metrics for name's samples, by their
// label set as written ({reason="peer_lost"}).
func metricValues(t *testing.T, srv *servertest.Instance, name string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || strings.HasPrefix(line, "#") || (rest != "" && rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		labels, value, _ := strings.Cut(rest, " ")
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		out[labels] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestHATransitionHistoryRecordsWhatReportsChange drives the agent endpoint
// through a router's life — election, failover, split brain and its heal,
// a stale claim, a resignation — as an agent that sends reasons and as one
// that predates them, and checks after each report the rows the history
// gained: the agent's reasons where it sent them, the server's own where
// it knows better (split brain, a lost claim), nothing for reports that
// change nothing. The metric counts every row by reason.
func TestHATransitionHistoryRecordsWhatReportsChange(t *testing.T) {
	type step struct {
		name   string
		stale  string // host whose report is made stale first
		report func(id string, reasons bool) agentapi.HAStateReport
		// added rows, each with its reason for an agent that sends
		// reasons and for one that sends none.
		added []histRow
		old   []string
	}
	say := func(rep agentapi.HAStateReport, id, reason string, reasons bool) agentapi.HAStateReport {
		if reasons {
			rep.Reasons = map[string]string{id: reason}
		}
		return rep
	}
	trans := func(host, state, reason string) func(string, bool) agentapi.HAStateReport {
		return func(id string, reasons bool) agentapi.HAStateReport {
			return say(transitionOf(host, id, state), id, reason, reasons)
		}
	}
	reassert := func(host, state string) func(string, bool) agentapi.HAStateReport {
		return func(id string, _ bool) agentapi.HAStateReport { return reassertOf(host, id, state) }
	}
	steps := []step{
		{name: "election", report: trans("net1", "active", "startup"),
			added: []histRow{{"net1", "standby", "active", "startup"}}, old: []string{""}},
		{name: "backup's first state changes nothing", report: trans("net2", "standby", "startup")},
		{name: "re-assertions change nothing", report: reassert("net1", "active")},
		{name: "failover", report: trans("net2", "active", "peer_lost"),
			added: []histRow{{"net2", "standby", "active", "peer_lost"}, {"net1", "active", "standby", "peer_lost"}}, old: []string{"", ""}},
		{name: "split brain detected", report: reassert("net1", "active"),
			added: []histRow{{"net1", "standby", "active", "split_brain"}}, old: []string{"split_brain"}},
		{name: "split brain goes on", report: reassert("net1", "active")},
		{name: "split brain healed", report: trans("net2", "standby", "split_brain"),
			added: []histRow{{"net2", "active", "standby", "split_brain"}}, old: []string{"split_brain"}},
		{name: "re-assertion supersedes a stale claim", stale: "net1", report: reassert("net2", "active"),
			added: []histRow{{"net2", "standby", "active", "peer_lost"}, {"net1", "active", "standby", "peer_lost"}}, old: []string{"peer_lost", "peer_lost"}},
		{name: "resignation", report: trans("net1", "active", "peer_resigned"),
			added: []histRow{{"net1", "standby", "active", "peer_resigned"}, {"net2", "active", "standby", "peer_resigned"}}, old: []string{"", ""}},
		{name: "unknown reason is recorded as none", report: trans("net2", "active", "solar_flare"),
			added: []histRow{{"net2", "standby", "active", ""}, {"net1", "active", "standby", ""}}, old: []string{"", ""}},
		{name: "standby re-assertion changes nothing", report: reassert("net1", "standby")},
	}
	for _, backend := range servertest.Backends(t) {
		for _, reasons := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/agent sends reasons %v", backend, reasons), func(t *testing.T) {
				srv, id := fsRouter(t, backend)
				ids := map[string]string{"net1": fsHeartbeat(t, srv, "net1"), "net2": fsHeartbeat(t, srv, "net2")}
				var want []histRow
				for _, s := range steps {
					if s.stale != "" {
						fsAge(t, srv, id, s.stale)
					}
					fsReport(t, srv, s.report(id, reasons))
					for i, r := range s.added {
						if !reasons {
							r.reason = s.old[i]
						}
						want = append(want, r)
					}
					if got := history(t, srv, id, "", ids); !slices.Equal(got, want) {
						t.Fatalf("after %q: history\n%v\nwant\n%v", s.name, got, want)
					}
				}
				if got := history(t, srv, id, "?limit=3", ids); !slices.Equal(got, want[len(want)-3:]) {
					t.Errorf("limit=3: %v, want the newest three %v", got, want[len(want)-3:])
				}
				counts := map[string]float64{}
				for _, r := range want {
					label := r.reason
					if label == "" {
						label = "unknown"
					}
					counts[`{reason="`+label+`"}`]++
				}
				got := metricValues(t, srv, "l3ha_server_ha_transitions_total")
				for _, r := range append(slices.Clone(agentapi.Reasons), "unknown") {
					k := `{reason="` + r + `"}`
					if v, ok := got[k]; !ok || v != counts[k] {
						t.Errorf("l3ha_server_ha_transitions_total%s = %v (present %v), want %v", k, v, ok, counts[k])
					}
				}
			})
		}
	}
}

// TestAgentReasonsReachTheHistory runs real agent loops (fake data plane):
// the reasons the data plane gives its transitions are the history's.
func TestAgentReasonsReachTheHistory(t *testing.T) {
	srv := servertest.Start(t, servertest.Options{})
	dps := map[string]interface {
		SetStateWithReason(routerID, state, reason string) error
	}{"net1": fsAgent(t, srv, "net1", time.Second), "net2": fsAgent(t, srv, "net2", time.Second)}
	var created struct{ Router map[string]any }
	servertest.Eventually(t, 10*time.Second, func() error {
		return call(srv.URL, "POST", "/v2.0/routers", map[string]any{"router": map[string]any{"name": "r", "ha": true}}, &created)
	})
	id := created.Router["id"].(string)
	var master, backup string
	servertest.Eventually(t, 15*time.Second, func() error {
		m := fsStates(t, srv, id)
		for _, c := range [][2]string{{"net1", "net2"}, {"net2", "net1"}} {
			if m[c[0]] == "active" && m[c[1]] == "standby" {
				master, backup = c[0], c[1]
				return nil
			}
		}
		return fmt.Errorf("states %v", m)
	})
	// The master resigns, the backup takes over.
	if err := dps[master].SetStateWithReason(id, "standby", ""); err != nil {
		t.Fatal(err)
	}
	if err := dps[backup].SetStateWithReason(id, "active", agentapi.ReasonPeerResigned); err != nil {
		t.Fatal(err)
	}
	want := []histRow{{master, "standby", "active", agentapi.ReasonStartup}, {backup, "standby", "active", agentapi.ReasonPeerResigned}}
	servertest.Eventually(t, 15*time.Second, func() error {
		got := slices.DeleteFunc(history(t, srv, id, "", nil), func(r histRow) bool { return r.to == "standby" })
		if !slices.Equal(got, want) {
			return fmt.Errorf("history's transitions to active %v, want %v", got, want)
		}
		return nil
	})
}

// TestHATransitionsAPI: who may read a router's history and what a bad
// request gets, as Neutron answers: admin only (a tenant's own router is a
// 403, as for l3-agents), another project's router or none a 404 as for
// any router, a legacy router an empty list, a malformed limit a 400 that
// changes nothing; and the history goes with its router.
func TestHATransitionsAPI(t *testing.T) {
	srv, id := fsRouter(t, "sqlite")
	fsReport(t, srv, transitionOf("net1", id, "active"))
	c := &haCloud{t: t, srv: srv}
	admin := c.admin()
	own := admin.mustDo("POST", "/v2.0/routers", haBody("router", haObj{"name": "demo-ha", "ha": true, "project_id": "demo"}), http.StatusCreated).obj("router").str("id")
	fsReport(t, srv, transitionOf("net2", own, "active"))
	legacy := admin.mustDo("POST", "/v2.0/routers", haBody("router", haObj{"name": "legacy", "ha": false}), http.StatusCreated).obj("router").str("id")
	reader := &haAPI{t: t, base: srv.URL, headers: map[string]string{"X-Project-Id": "demo", "X-Roles": "reader"}}
	unknown := "0b5c7c4e-9d1a-4a4e-8c43-000000000000"
	path := func(router string) string { return "/v2.0/routers/" + router + "/ha_transitions" }
	notFound := func(router string) string { return "Router " + router + " could not be found" }
	const denied = "rule:get_ha_transitions is disallowed by policy"

	before, err := srv.Server.DB().Dump(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name         string
		who          *haAPI
		method, path string
		status       int
		typ, msg     string
		items        int // for 200
	}{
		{name: "admin reads an HA router's history", who: admin, method: "GET", path: path(id), status: 200, items: 1},
		{name: "limit 0 is no limit", who: admin, method: "GET", path: path(id) + "?limit=0", status: 200, items: 1},
		{name: "admin reads a legacy router's: empty", who: admin, method: "GET", path: path(legacy), status: 200, items: 0},
		{name: "unknown router", who: admin, method: "GET", path: path(unknown), status: 404, typ: "RouterNotFound", msg: notFound(unknown)},
		{name: "not a uuid", who: admin, method: "GET", path: path("not-a-uuid"), status: 404, typ: "RouterNotFound", msg: notFound("not-a-uuid")},
		{name: "malformed limit", who: admin, method: "GET", path: path(id) + "?limit=abc", status: 400, typ: "HTTPBadRequest", msg: "Limit must be an integer 0 or greater and not 'abc'"},
		{name: "negative limit", who: admin, method: "GET", path: path(id) + "?limit=-1", status: 400, typ: "HTTPBadRequest", msg: "Limit must be an integer 0 or greater and not '-1'"},
		{name: "tenant on another project's router", who: c.tenant("demo"), method: "GET", path: path(id), status: 404, typ: "RouterNotFound", msg: notFound(id)},
		{name: "tenant on an unknown router", who: c.tenant("demo"), method: "GET", path: path(unknown), status: 404, typ: "RouterNotFound", msg: notFound(unknown)},
		{name: "tenant on its own router", who: c.tenant("demo"), method: "GET", path: path(own), status: 403, typ: "PolicyNotAuthorized", msg: denied},
		{name: "tenant's own l3-agents, alike", who: c.tenant("demo"), method: "GET", path: "/v2.0/routers/" + own + "/l3-agents", status: 403, typ: "PolicyNotAuthorized"},
		{name: "reader on its own router", who: reader, method: "GET", path: path(own), status: 403, typ: "PolicyNotAuthorized", msg: denied},
		{name: "PUT", who: admin, method: "PUT", path: path(id), status: 405, typ: "HTTPMethodNotAllowed"},
		{name: "POST", who: admin, method: "POST", path: path(id), status: 405, typ: "HTTPMethodNotAllowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.who.on(t).do(tc.method, tc.path, nil)
			if tc.status != 200 {
				r.wantError(t, tc.status, tc.typ, tc.msg)
				return
			}
			if r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.raw)
			}
			if items, ok := r.body["ha_transitions"].([]any); !ok || len(items) != tc.items {
				t.Errorf("ha_transitions %s, want a list of %d", r.raw, tc.items)
			}
		})
	}
	after, err := srv.Server.DB().Dump(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if d := fsDiff(before, after); d != "" {
		t.Errorf("reading histories changed the database:\n%s", d)
	}

	// The history goes with its router.
	admin.mustDo("DELETE", "/v2.0/routers/"+own, nil, http.StatusNoContent)
	admin.do("GET", path(own), nil).wantError(t, 404, "RouterNotFound", notFound(own))
	d, err := srv.Server.DB().Dump(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range d["ha_transitions"] {
		if strings.Contains(row, own) {
			t.Errorf("deleted router's transition left: %s", row)
		}
	}
}

// TestHATransitionRetention: the server keeps ha_transitions_per_router
// transitions per router (the newest) and none older than
// ha_transitions_max_age; by default 1000 and a week.
func TestHATransitionRetention(t *testing.T) {
	for _, backend := range servertest.Backends(t) {
		for _, tc := range []struct {
			name      string
			retention store.HATransitionRetention
			reports   int
			keep      int
		}{
			{name: "defaults keep the newest 1000", reports: 1003, keep: 1000},
			{name: "per router", retention: store.HATransitionRetention{PerRouter: 5}, reports: 8, keep: 5},
			{name: "max age", retention: store.HATransitionRetention{MaxAge: 200 * time.Millisecond}, reports: 3, keep: 0},
		} {
			t.Run(backend+"/"+tc.name, func(t *testing.T) {
				srv, id := fsRouterOf(t, servertest.Options{Backend: backend, Transitions: tc.retention})
				var want []histRow
				for i := range tc.reports {
					st, from := "active", "standby"
					if i%2 == 1 {
						st, from = "standby", "active"
					}
					fsReport(t, srv, transitionOf("net1", id, st))
					want = append(want, histRow{"net1", from, st, ""})
				}
				want = want[len(want)-tc.keep:]
				// The server prunes on its own too (a router over a quarter
				// of its bound wakes it): whatever it did, a run now leaves
				// exactly what the retention keeps.
				servertest.Eventually(t, 10*time.Second, func() error {
					if _, err := srv.Server.PruneTransitions(t.Context()); err != nil {
						return err
					}
					if got := history(t, srv, id, "", nil); !slices.Equal(got, want) {
						return fmt.Errorf("history after pruning: %d rows, want %d", len(got), len(want))
					}
					return nil
				})
			})
		}
	}
}

// TestHATransitionRetentionOptions: ha_transitions_max_age and
// ha_transitions_per_router, from a config file or flags, with their
// defaults; nonsense is refused at start.
func TestHATransitionRetentionOptions(t *testing.T) {
	for _, tc := range []struct {
		name, conf string
		args       []string
		want       store.HATransitionRetention
		err        string
	}{
		{name: "defaults", want: store.HATransitionRetention{MaxAge: 7 * 24 * time.Hour, PerRouter: 1000}},
		{name: "config file", conf: "ha_transitions_max_age = 3600\nha_transitions_per_router = 50\n",
			want: store.HATransitionRetention{MaxAge: time.Hour, PerRouter: 50}},
		{name: "a duration, and a flag over the file", conf: "ha_transitions_max_age = 168h\nha_transitions_per_router = 50\n",
			args: []string{"--ha-transitions-per-router", "7"}, want: store.HATransitionRetention{MaxAge: 168 * time.Hour, PerRouter: 7}},
		{name: "none per router", conf: "ha_transitions_per_router = 0\n", err: "ha_transitions_per_router"},
		{name: "max age not a time", conf: "ha_transitions_max_age = soon\n", err: "ha_transitions_max_age"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conf := "[DEFAULT]\nagent_tokens_file = @TOKENS@\n" + tc.conf + "[database]\nconnection = sqlite:///" + t.TempDir() + "/l3ha.db\n"
			cfg, err := loadServerConfig(t, conf, tc.args...)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one mentioning %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Transitions != tc.want {
				t.Errorf("retention %+v, want %+v", cfg.Transitions, tc.want)
			}
		})
	}
}
