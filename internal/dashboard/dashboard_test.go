package dashboard_test

// Tests of the dashboard's endpoints against a real server: what
// /dashboard/state.json says as agents report elections, failovers and a
// split brain, and who may read it.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/api"
	"github.com/l3ha/l3ha/internal/dashboard"
	"github.com/l3ha/l3ha/internal/keystone"
	"github.com/l3ha/l3ha/internal/servertest"
)

// bindingRow is a binding of the snapshot, its time left out.
type bindingRow struct{ host, state string }

func bindingsOf(r dashboard.Router) []bindingRow {
	var out []bindingRow
	for _, b := range r.Bindings {
		out = append(out, bindingRow{b.Host, b.HAState})
	}
	return out
}

// transitionRow is a transition of the snapshot, its time left out.
type transitionRow struct{ router, host, from, to, reason string }

func transitionRowOf(t dashboard.Transition) transitionRow {
	return transitionRow{t.RouterName, t.Host, t.From, t.To, t.Reason}
}

func routerNamed(t *testing.T, st dashboard.State, name string) dashboard.Router {
	t.Helper()
	for _, r := range st.Routers {
		if r.Name == name {
			return r
		}
	}
	t.Fatalf("no router %q in the snapshot: %+v", name, st.Routers)
	return dashboard.Router{}
}

// TestStateShowsWhereEachMasterIsAndHowItGotThere drives the agent endpoint
// through an election, a failover and a split brain, and checks after each
// step that the snapshot says what the API says — the same ha_state per
// binding as l3-agents, the same rows as ha_transitions — plus what the
// API has no cheap call for: each router's master and last transition, the
// newest transitions of all routers, and per agent its routers and masters.
func TestStateShowsWhereEachMasterIsAndHowItGotThere(t *testing.T) {
	for _, backend := range servertest.Backends(t) {
		t.Run(backend, func(t *testing.T) {
			srv := startServer(t, serverOptions{backend: backend})
			agents := map[string]*fakeAgent{}
			for _, h := range []string{"net1", "net2", "net3"} {
				agents[h] = startAgent(t, srv.URL, h, time.Second)
			}
			// Created out of order: the snapshot lists routers by name.
			beta := createRouter(t, srv.URL, "", "beta", true)
			alpha := createRouter(t, srv.URL, "", "alpha", true)
			legacy := createRouter(t, srv.URL, "", "gamma-legacy", false)

			st := state(t, srv.URL, "")
			if d := time.Since(time.Time(st.GeneratedAt)); d < -time.Second || d > time.Minute {
				t.Errorf("generated_at %v is not now", time.Time(st.GeneratedAt))
			}
			if st.AgentDownTimeSeconds != 75 || st.BenchPlot {
				t.Errorf("agent_down_time_seconds %v, bench_plot %v; want 75 and false", st.AgentDownTimeSeconds, st.BenchPlot)
			}
			if got := []string{st.Routers[0].Name, st.Routers[1].Name}; len(st.Routers) != 2 || !slices.Equal(got, []string{"alpha", "beta"}) {
				t.Fatalf("routers %+v, want alpha and beta (HA routers, by name)", st.Routers)
			}
			for _, r := range st.Routers {
				want := []bindingRow{{"net1", "standby"}, {"net2", "standby"}, {"net3", "standby"}}
				if !slices.Equal(bindingsOf(r), want) || r.Master != "" || r.SplitBrain || r.LastTransition != nil {
					t.Errorf("before any report, %s: %+v, want bindings %v, no master, no transition", r.Name, r, want)
				}
			}
			// Every binding counts for its agent, the legacy router's too.
			wantRouters := map[string]int{}
			for _, id := range []string{alpha, beta, legacy} {
				for h := range l3Agents(t, srv.URL, "", id) {
					wantRouters[h]++
				}
			}
			for _, a := range st.Agents {
				if a.ID != agents[a.Host].id || !a.Alive || !a.AdminStateUp || a.AgentType != "L3 agent" || a.Routers != wantRouters[a.Host] || a.Masters != 0 {
					t.Errorf("agent %+v, want id %s, alive, up, %d routers, no master", a, agents[a.Host].id, wantRouters[a.Host])
				}
			}

			var wantHistory []transitionRow
			for _, step := range []struct {
				name     string
				report   func()
				bindings []bindingRow
				master   string
				split    bool
				added    []transitionRow
			}{
				{
					name:     "election",
					report:   func() { agents["net1"].transition(t, alpha, "active", "startup") },
					bindings: []bindingRow{{"net1", "active"}, {"net2", "standby"}, {"net3", "standby"}}, master: "net1",
					added: []transitionRow{{"alpha", "net1", "standby", "active", "startup"}},
				},
				{
					name:     "failover: net2 takes over, net1 is demoted",
					report:   func() { agents["net2"].transition(t, alpha, "active", "peer_lost") },
					bindings: []bindingRow{{"net1", "standby"}, {"net2", "active"}, {"net3", "standby"}}, master: "net2",
					added: []transitionRow{{"alpha", "net2", "standby", "active", "peer_lost"}, {"alpha", "net1", "active", "standby", "peer_lost"}},
				},
				{
					name:     "split brain: net1 re-asserts active while net2's claim is fresh",
					report:   func() { agents["net1"].reassert(t, alpha, "active") },
					bindings: []bindingRow{{"net1", "active"}, {"net2", "active"}, {"net3", "standby"}}, split: true,
					added: []transitionRow{{"alpha", "net1", "standby", "active", "split_brain"}},
				},
				{
					name:     "split brain healed: net2 yields",
					report:   func() { agents["net2"].transition(t, alpha, "standby", "split_brain") },
					bindings: []bindingRow{{"net1", "active"}, {"net2", "standby"}, {"net3", "standby"}}, master: "net1",
					added: []transitionRow{{"alpha", "net2", "active", "standby", "split_brain"}},
				},
			} {
				step.report()
				wantHistory = append(wantHistory, step.added...)
				st := state(t, srv.URL, "")
				r := routerNamed(t, st, "alpha")
				if got := bindingsOf(r); !slices.Equal(got, step.bindings) || r.Master != step.master || r.SplitBrain != step.split {
					t.Fatalf("after %s: alpha shows bindings %v, master %q, split brain %v; want %v, %q, %v", step.name, got, r.Master, r.SplitBrain, step.bindings, step.master, step.split)
				}
				api := l3Agents(t, srv.URL, "", alpha)
				for _, b := range r.Bindings {
					if api[b.Host] != b.HAState {
						t.Errorf("after %s: %s shows %s, the API's l3-agents %s", step.name, b.Host, b.HAState, api[b.Host])
					}
					if b.AgentID != agents[b.Host].id || !b.Alive {
						t.Errorf("after %s: binding %+v, want agent %s alive", step.name, b, agents[b.Host].id)
					}
				}
				last := step.added[len(step.added)-1]
				if r.LastTransition == nil || transitionRowOf(*r.LastTransition) != last || r.LastTransition.RouterID != alpha {
					t.Errorf("after %s: last transition %+v, want %v", step.name, r.LastTransition, last)
				}
				var got []transitionRow
				for _, tr := range st.Transitions {
					got = append(got, transitionRowOf(tr))
				}
				if !slices.Equal(got, wantHistory) {
					t.Errorf("after %s: transitions\n%v\nwant\n%v", step.name, got, wantHistory)
				}
				masters := map[string]int{}
				for _, b := range step.bindings {
					if b.state == "active" {
						masters[b.host]++
					}
				}
				for _, a := range st.Agents {
					if a.Masters != masters[a.Host] {
						t.Errorf("after %s: %s has %d masters, want %d", step.name, a.Host, a.Masters, masters[a.Host])
					}
				}
				if b := routerNamed(t, st, "beta"); b.Master != "" || b.LastTransition != nil {
					t.Errorf("after %s: beta (no reports) shows %+v", step.name, b)
				}
			}
			// The times are the API's, with milliseconds.
			var hist struct {
				HATransitions []struct {
					At string `json:"at"`
				} `json:"ha_transitions"`
			}
			mustAPI(t, srv.URL, "", "GET", "/v2.0/routers/"+alpha+"/ha_transitions", nil, http.StatusOK, &hist)
			st = state(t, srv.URL, "")
			for i, h := range hist.HATransitions {
				if got := time.Time(st.Transitions[i].At).Format("2006-01-02T15:04:05Z"); got != h.At {
					t.Errorf("transition %d at %s, the API's at %s", i, got, h.At)
				}
			}
		})
	}
}

// TestStateNamesDeadAgentsAndHidesTheirClaims: an agent that stops
// heartbeating is shown dead within agent_down_time, and its binding is no
// longer shown active (as the API shows it): the router has no master.
func TestStateNamesDeadAgentsAndHidesTheirClaims(t *testing.T) {
	const down = 2 * time.Second
	srv := startServer(t, serverOptions{agentDownTime: down})
	net1 := startAgent(t, srv.URL, "net1", down/10)
	startAgent(t, srv.URL, "net2", down/10)
	id := createRouter(t, srv.URL, "", "r", true)
	net1.transition(t, id, "active", "startup")
	if r := routerNamed(t, state(t, srv.URL, ""), "r"); r.Master != "net1" {
		t.Fatalf("master %q, want net1", r.Master)
	}
	net1.stop()
	servertest.Eventually(t, 10*down, func() error {
		st := state(t, srv.URL, "")
		r := routerNamed(t, st, "r")
		b := r.Bindings[0]
		if b.Host != "net1" || b.Alive || b.HAState != "standby" || r.Master != "" {
			return fmt.Errorf("router %+v, want net1 dead and standby, no master", r)
		}
		for _, a := range st.Agents {
			if a.Alive != (a.Host == "net2") || a.Masters != 0 {
				return fmt.Errorf("agent %+v: want only net2 alive, no masters", a)
			}
		}
		return nil
	})
}

// neutronError decodes a NeutronError body.
func neutronError(t *testing.T, r response) (typ, msg string) {
	t.Helper()
	var e struct {
		NeutronError struct {
			Type    string `json:"type"`
			Message string `json:"message"`
			Detail  *string
		} `json:"NeutronError"`
	}
	if err := json.Unmarshal(r.body, &e); err != nil || e.NeutronError.Type == "" {
		t.Fatalf("not a NeutronError body: %v (%v)", r, err)
	}
	return e.NeutronError.Type, e.NeutronError.Message
}

// TestDataIsForAdminsTheShellForAnyone runs the server with static tokens:
// state.json and bench.svg answer as the API does — 401 with the API's
// challenge without a valid token, 403 PolicyNotAuthorized for a member or
// a reader, 200 for an admin — while the page's own files, which hold no
// data, need no token.
func TestDataIsForAdminsTheShellForAnyone(t *testing.T) {
	srv := startServer(t, serverOptions{auth: tokenAuth(t)})
	startAgent(t, srv.URL, "net1", time.Second)
	startAgent(t, srv.URL, "net2", time.Second)
	const secret = "router-name-only-admins-see"
	createRouter(t, srv.URL, "admin-token", secret, true)
	apiDenied := do(t, "GET", srv.URL+"/v2.0/routers", nil, nil)
	if apiDenied.status != http.StatusUnauthorized {
		t.Fatalf("the API without a token: %v", apiDenied)
	}
	for _, path := range []string{"/dashboard/state.json", "/dashboard/bench.svg"} {
		rule := map[string]string{"/dashboard/state.json": "get_dashboard_state", "/dashboard/bench.svg": "get_dashboard_bench_plot"}[path]
		for _, tc := range []struct {
			who    string
			token  string
			status int
		}{
			{"nobody", "", http.StatusUnauthorized},
			{"a wrong token", "not-a-token", http.StatusUnauthorized},
			{"a member", "member-token", http.StatusForbidden},
			{"a reader", "reader-token", http.StatusForbidden},
			{"an admin", "admin-token", 0},
		} {
			r := do(t, "GET", srv.URL+path, token(tc.token), nil)
			switch tc.status {
			case http.StatusUnauthorized:
				if r.status != tc.status || r.header.Get("WWW-Authenticate") != apiDenied.header.Get("WWW-Authenticate") {
					t.Errorf("%s as %s: %v (WWW-Authenticate %q), want the API's 401 (%q)", path, tc.who, r, r.header.Get("WWW-Authenticate"), apiDenied.header.Get("WWW-Authenticate"))
				}
			case http.StatusForbidden:
				if r.status != tc.status {
					t.Errorf("%s as %s: %v, want 403", path, tc.who, r)
					continue
				}
				if typ, msg := neutronError(t, r); typ != "PolicyNotAuthorized" || msg != "rule:"+rule+" is disallowed by policy" {
					t.Errorf("%s as %s: %s %q", path, tc.who, typ, msg)
				}
			default:
				// bench.svg: none configured, a 404 — past authentication.
				want := map[string]int{"/dashboard/state.json": http.StatusOK, "/dashboard/bench.svg": http.StatusNotFound}[path]
				if r.status != want {
					t.Errorf("%s as %s: %v, want %d", path, tc.who, r, want)
				}
			}
			if tc.status != 0 && strings.Contains(string(r.body), secret) {
				t.Errorf("%s as %s shows the router: %s", path, tc.who, r.body)
			}
		}
	}
	if st := state(t, srv.URL, "admin-token"); len(st.Routers) != 1 || st.Routers[0].Name != secret {
		t.Errorf("admin's snapshot: %+v", st.Routers)
	}

	for _, tc := range []struct{ path, contentType, has string }{
		{"/dashboard/", "text/html; charset=utf-8", `<script src="app.js" defer></script>`},
		{"/dashboard/app.js", "text/javascript; charset=utf-8", "X-Auth-Token"},
		{"/dashboard/style.css", "text/css; charset=utf-8", "font-family"},
	} {
		r := do(t, "GET", srv.URL+tc.path, nil, nil)
		if r.status != http.StatusOK || r.header.Get("Content-Type") != tc.contentType || !strings.Contains(string(r.body), tc.has) {
			t.Errorf("%s without a token: %d %s, want 200 %s with %q", tc.path, r.status, r.header.Get("Content-Type"), tc.contentType, tc.has)
		}
		if strings.Contains(string(r.body), secret) {
			t.Errorf("%s holds data: %s", tc.path, r.body)
		}
		if etag := r.header.Get("ETag"); etag == "" {
			t.Errorf("%s has no ETag", tc.path)
		} else if again := do(t, "GET", srv.URL+tc.path, map[string]string{"If-None-Match": etag}, nil); again.status != http.StatusNotModified {
			t.Errorf("%s with If-None-Match: %d, want 304", tc.path, again.status)
		}
	}
	page := do(t, "GET", srv.URL+"/dashboard/", nil, nil)
	if csp := page.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("page's Content-Security-Policy %q: want its own scripts only", csp)
	}
	if r := do(t, "GET", srv.URL+"/dashboard", nil, nil); r.status != http.StatusMovedPermanently || r.header.Get("Location") != "/dashboard/" {
		t.Errorf("/dashboard: %d Location %q, want a redirect to /dashboard/", r.status, r.header.Get("Location"))
	}
	if r := do(t, "POST", srv.URL+"/dashboard/state.json", token("admin-token"), map[string]any{}); r.status != http.StatusMethodNotAllowed {
		t.Errorf("POST state.json: %v, want 405", r)
	}
	if r := do(t, "GET", srv.URL+"/dashboard/nothing-here", nil, nil); r.status != http.StatusNotFound {
		t.Errorf("an unknown file: %v, want 404", r)
	} else if typ, _ := neutronError(t, r); typ != "HTTPNotFound" {
		t.Errorf("an unknown file: type %s", typ)
	}
}

// TestNoAuthMemberIsDenied: under noauth the identity headers count: a
// request that says it is a member is no admin.
func TestNoAuthMemberIsDenied(t *testing.T) {
	srv := startServer(t, serverOptions{})
	r := do(t, "GET", srv.URL+"/dashboard/state.json", map[string]string{"X-Project-Id": "demo", "X-Roles": "member"}, nil)
	if r.status != http.StatusForbidden {
		t.Fatalf("noauth member: %v, want 403", r)
	}
	if r := do(t, "GET", srv.URL+"/dashboard/state.json", map[string]string{"X-Project-Id": "demo", "X-Roles": "admin"}, nil); r.status != http.StatusOK {
		t.Errorf("noauth admin: %v, want 200", r)
	}
}

// fakeKeystone validates the tokens "admin" and "member"; "down" finds
// Keystone unreachable.
type fakeKeystone struct{}

func (fakeKeystone) Validate(_ context.Context, tok string) (keystone.Token, error) {
	switch tok {
	case "admin":
		return keystone.Token{ProjectID: "admin", Roles: []string{"admin"}}, nil
	case "member":
		return keystone.Token{ProjectID: "demo", Roles: []string{"member"}}, nil
	case "down":
		return keystone.Token{}, &keystone.UnavailableError{Err: errors.New("connection refused")}
	}
	return keystone.Token{}, keystone.ErrInvalidToken
}

func (fakeKeystone) WWWAuthenticate() string {
	return `Keystone uri="https://keystone.example.test:5000"`
}

// TestKeystoneAnswersAsTheAPI: behind Keystone, an invalid token is a 401
// that sends the client to Keystone, Keystone down a 503 (never data), a
// member's token a 403.
func TestKeystoneAnswersAsTheAPI(t *testing.T) {
	srv := startServer(t, serverOptions{auth: api.KeystoneAuth{Validator: fakeKeystone{}}})
	for _, tc := range []struct {
		token  string
		status int
		typ    string
	}{
		{"", http.StatusUnauthorized, ""},
		{"expired", http.StatusUnauthorized, ""},
		{"down", http.StatusServiceUnavailable, "HTTPServiceUnavailable"},
		{"member", http.StatusForbidden, "PolicyNotAuthorized"},
		{"admin", http.StatusOK, ""},
	} {
		r := do(t, "GET", srv.URL+"/dashboard/state.json", token(tc.token), nil)
		if r.status != tc.status {
			t.Errorf("token %q: %v, want %d", tc.token, r, tc.status)
			continue
		}
		switch {
		case tc.status == http.StatusUnauthorized:
			if c, want := r.header.Get("WWW-Authenticate"), (fakeKeystone{}).WWWAuthenticate(); c != want {
				t.Errorf("token %q: WWW-Authenticate %q", tc.token, c)
			}
		case tc.typ != "":
			if typ, _ := neutronError(t, r); typ != tc.typ {
				t.Errorf("token %q: %s, want %s", tc.token, typ, tc.typ)
			}
		}
	}
}

// TestBenchPlotIsServedOnceMade: with dashboard_bench_plot the snapshot
// says a plot exists; bench.svg is a 404 until the benchmark writes the
// file, then the file, as an SVG that may not run scripts on its own.
func TestBenchPlotIsServedOnceMade(t *testing.T) {
	plot := filepath.Join(t.TempDir(), "bench", "failover.svg")
	srv := startServer(t, serverOptions{benchPlot: plot})
	if !state(t, srv.URL, "").BenchPlot {
		t.Errorf("bench_plot false with dashboard_bench_plot set")
	}
	if r := do(t, "GET", srv.URL+"/dashboard/bench.svg", nil, nil); r.status != http.StatusNotFound {
		t.Errorf("before the benchmark ran: %v, want 404", r)
	}
	svg := `<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>`
	if err := os.MkdirAll(filepath.Dir(plot), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(plot, []byte(svg), 0o644); err != nil {
		t.Fatal(err)
	}
	r := do(t, "GET", srv.URL+"/dashboard/bench.svg", nil, nil)
	if r.status != http.StatusOK || string(r.body) != svg || r.header.Get("Content-Type") != "image/svg+xml" {
		t.Errorf("after: %d %s %q", r.status, r.header.Get("Content-Type"), r.body)
	}
	if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "sandbox") {
		t.Errorf("bench.svg's Content-Security-Policy %q: want sandbox", csp)
	}
}
