package dashboard_test

// The dashboard in a real headless chromium (Debian's package), driven by
// dashtest: what an operator sees and clicks. Skipped where chromium is
// not installed, failed there under L3HA_TEST_REQUIRE_ALL=1.

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/dashboard/dashtest"
	"github.com/l3ha/l3ha/internal/kerneltest"
	"github.com/l3ha/l3ha/internal/store"
)

// screenshotDir is where the browser tests leave their screenshots: the
// directory L3HA_TEST_SCREENSHOTS names (kept), else t's temporary one.
func screenshotDir(t *testing.T) string {
	if d := os.Getenv("L3HA_TEST_SCREENSHOTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// openDashboard opens the server's dashboard in chromium with tok and
// checks, when the test ends, that the browser left no process and no
// profile behind.
func openDashboard(t *testing.T, ctx context.Context, chromium, base, tok string) *dashtest.Browser {
	t.Helper()
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	b, err := dashtest.Open(octx, base+"/dashboard/", dashtest.Options{Chromium: chromium, Token: tok, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(b.UserDataDir()); !os.IsNotExist(err) {
			t.Errorf("chromium's profile %s is still there (%v)", b.UserDataDir(), err)
		}
		if pids := processesUsing(b.UserDataDir()); len(pids) > 0 {
			t.Errorf("chromium processes %v outlived Close", pids)
		}
	})
	return b
}

// processesUsing lists the processes started with dir as their
// --user-data-dir.
func processesUsing(dir string) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && slices.Contains(strings.Split(string(cmdline), "\x00"), "--user-data-dir="+dir) {
			out = append(out, pid)
		}
	}
	return out
}

// benchPlot is the repository's failover plot (bench/failover.svg), which
// the server is configured to show.
func benchPlot(t *testing.T) string {
	p, err := filepath.Abs(filepath.Join("..", "..", "bench", "failover.svg"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		// Not this test's subject: a stand-in keeps the check.
		p = filepath.Join(t.TempDir(), "failover.svg")
		if err := os.WriteFile(p, []byte(`<svg xmlns="http://www.w3.org/2000/svg" width="200" height="100"><rect width="200" height="100" fill="#2457c5"/></svg>`), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// TestBrowserFollowsAFailoverAndMovesTheMaster: behind static tokens, the
// page refuses a member's token and takes an admin's; it shows the HA
// router and its master, shows the new master within 2 s of the agents'
// failover report, shows the benchmark plot, and its switchover button
// makes the API request and shows the API's answer — an accepted move,
// which the agent then carries out, and a refusal with the API's message.
func TestBrowserFollowsAFailoverAndMovesTheMaster(t *testing.T) {
	chromium := dashtest.Require(t)
	srv := startServer(t, serverOptions{auth: tokenAuth(t), benchPlot: benchPlot(t)})
	agents := map[string]*fakeAgent{}
	for _, h := range []string{"net1", "net2", "net3"} {
		agents[h] = startAgent(t, srv.URL, h, time.Second)
	}
	const admin = "admin-token"
	router := createRouter(t, srv.URL, admin, "web", true)
	agents["net1"].transition(t, router, "active", "startup")
	agents["net2"].transition(t, router, "standby", "startup")
	agents["net3"].transition(t, router, "standby", "startup")

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	octx, ocancel := context.WithTimeout(ctx, 30*time.Second)
	_, err := dashtest.Open(octx, srv.URL+"/dashboard/", dashtest.Options{Chromium: chromium, Token: "member-token", Logf: t.Logf})
	ocancel()
	if err == nil || !strings.Contains(err.Error(), "not an admin") {
		t.Errorf("opening with a member's token: %v, want the page's refusal (not an admin's)", err)
	}

	b := openDashboard(t, ctx, chromium, srv.URL, admin)
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	r, err := b.WaitRouter(wctx, router, func(r dashtest.Router) bool { return r.Master == "net1" })
	wcancel()
	if err != nil {
		t.Fatal(err)
	}
	if r.Name != "web" || r.MasterText != "net1" || r.SplitBrain || !strings.Contains(r.LastTransition, "net1 standby → active") || !strings.Contains(r.LastTransition, "startup") {
		t.Errorf("router shown as %+v, want web, master net1, last transition net1 standby → active (startup)", r)
	}
	for _, want := range []dashtest.Binding{
		{AgentID: agents["net1"].id, Host: "net1", HAState: "active", Alive: true, Switchover: false},
		{AgentID: agents["net2"].id, Host: "net2", HAState: "standby", Alive: true, Switchover: true},
		{AgentID: agents["net3"].id, Host: "net3", HAState: "standby", Alive: true, Switchover: true},
	} {
		if got, ok := r.Binding(want.Host); !ok || got != want {
			t.Errorf("binding on %s shown as %+v, want %+v", want.Host, got, want)
		}
	}
	as, err := b.Agents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(as) != 3 {
		t.Errorf("agents shown: %+v, want net1..net3", as)
	}
	for _, a := range as {
		if !a.Alive || a.Routers != 1 || a.Masters != map[string]int{"net1": 1}[a.Host] {
			t.Errorf("agent shown as %+v", a)
		}
	}

	// The failover: net2's agent reports the takeover (the server then
	// demotes net1). The page polls every second.
	reported := time.Now()
	agents["net2"].transition(t, router, "active", "peer_lost")
	fctx, fcancel := context.WithTimeout(ctx, 2*time.Second)
	r, err = b.WaitRouter(fctx, router, func(r dashtest.Router) bool {
		n1, _ := r.Binding("net1")
		n2, _ := r.Binding("net2")
		return r.Master == "net2" && r.MasterText == "net2" && n2.HAState == "active" && n1.HAState == "standby"
	})
	fcancel()
	if err != nil {
		t.Fatalf("the page did not show the new master within 2 s of the report: %v", err)
	}
	t.Logf("the page showed the new master %v after the failover report", time.Since(reported).Round(time.Millisecond))
	timeline, err := b.Timeline(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(timeline) < 2 || timeline[1].Host != "net2" || timeline[1].To != "active" || timeline[1].Reason != "peer_lost" ||
		timeline[0].Host != "net1" || timeline[0].To != "standby" || !strings.Contains(timeline[1].Text, "web") {
		t.Errorf("timeline %+v, want net1's demotion and net2's takeover (peer_lost) first", timeline)
	}

	pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
	err = dashtest.WaitFor(pctx, func() (bool, error) { return b.BenchPlotShown(pctx) })
	pcancel()
	if err != nil {
		t.Errorf("the benchmark plot is not shown: %v", err)
	}
	shot := filepath.Join(screenshotDir(t), "dashboard-failover.png")
	if err := b.Screenshot(ctx, shot); err != nil {
		t.Fatal(err)
	}
	if png, err := os.ReadFile(shot); err != nil || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Errorf("screenshot %s is not a PNG (%v)", shot, err)
	}
	t.Logf("screenshot: %s", shot)

	t.Run("switchover button", func(t *testing.T) {
		res, err := b.Switchover(ctx, router, "net1")
		if err != nil {
			t.Fatal(err)
		}
		if !res.OK && (res.Status == http.StatusNotFound || res.Status == http.StatusMethodNotAllowed) && (res.Type == "HTTPNotFound" || res.Type == "HTTPMethodNotAllowed") {
			t.Skipf("POST /v2.0/routers/{router_id}/switchover is not served (%d %s): the page made the request and showed %q", res.Status, res.Type, res.Message)
		}
		if !res.OK || res.Status != http.StatusAccepted || !strings.Contains(res.Message, "accepted") {
			t.Fatalf("switchover to net1: the page shows %+v, want the API's 202", res)
		}
		// The request reached the server as the agents will see it.
		var sw *store.Switchover
		if err := srv.srv.DB().Read(ctx, func(tx *store.Tx) error {
			var err error
			sw, err = tx.GetSwitchover(router)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if sw == nil || sw.AgentID != agents["net1"].id {
			t.Fatalf("switchover request stored: %+v, want one to net1's agent %s", sw, agents["net1"].id)
		}
		// net1's agent carries it out; the page follows.
		agents["net1"].transition(t, router, "active", "switchover")
		wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
		r, err := b.WaitRouter(wctx, router, func(r dashtest.Router) bool {
			return r.Master == "net1" && strings.Contains(r.LastTransition, "switchover")
		})
		wcancel()
		if err != nil {
			t.Fatalf("the page did not show the switchover's outcome: %v", err)
		}
		if b1, _ := r.Binding("net1"); b1.Switchover {
			t.Errorf("the master net1 still has a switchover button: %+v", r)
		}

		// A refusal shows the API's own message: a router that is
		// administratively down has no master to move.
		mustAPI(t, srv.URL, admin, "PUT", "/v2.0/routers/"+router, map[string]any{"router": map[string]any{"admin_state_up": false}}, http.StatusOK, nil)
		wctx, wcancel = context.WithTimeout(ctx, 5*time.Second)
		_, err = b.WaitRouter(wctx, router, func(r dashtest.Router) bool { return r.AdminDown })
		wcancel()
		if err != nil {
			t.Fatal(err)
		}
		refused := do(t, "POST", srv.URL+"/v2.0/routers/"+router+"/switchover", token(admin), map[string]any{"agent_id": agents["net2"].id})
		typ, msg := neutronError(t, refused)
		res, err = b.Switchover(ctx, router, "net2")
		if err != nil {
			t.Fatal(err)
		}
		if res.OK || res.Status != refused.status || res.Type != typ || !strings.Contains(res.Message, msg) {
			t.Errorf("refused switchover: the page shows %+v, want %d %s with the API's message %q", res, refused.status, typ, msg)
		}
		if err := b.Screenshot(ctx, filepath.Join(screenshotDir(t), "dashboard-switchover-refused.png")); err != nil {
			t.Error(err)
		}
	})
}

// TestBrowserNeedsNoTokenUnderNoAuth: under auth_strategy=noauth the page
// shows data at once, and says when there are no HA routers.
func TestBrowserNeedsNoTokenUnderNoAuth(t *testing.T) {
	chromium := dashtest.Require(t)
	srv := startServer(t, serverOptions{})
	startAgent(t, srv.URL, "net1", time.Second)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	b := openDashboard(t, ctx, chromium, srv.URL, "")
	rs, err := b.Routers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	as, err := b.Agents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 0 || len(as) != 1 || as[0].Host != "net1" || !as[0].Alive {
		t.Errorf("routers %+v, agents %+v; want none and net1 alive", rs, as)
	}
	if msg, err := b.Error(ctx); err != nil || msg != "" {
		t.Errorf("error banner %q (%v)", msg, err)
	}
}

// TestBrowserReachesAServerOnlyANamespaceReaches: with Options.Netns the
// browser runs in that network namespace, as a lab test needs (the lab's
// server is reachable from its namespaces only).
func TestBrowserReachesAServerOnlyANamespaceReaches(t *testing.T) {
	chromium := dashtest.Require(t)
	kerneltest.Require(t, "ip")
	ns := kerneltest.Namespace(t)
	srv := startServer(t, serverOptions{netns: ns})
	if _, err := http.Get(srv.URL + "/dashboard/"); err == nil {
		t.Fatalf("%s answers outside namespace %s", srv.URL, ns)
	}
	startAgentVia(t, srv.URL, "net1", time.Second, clientIn(ns))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	octx, ocancel := context.WithTimeout(ctx, 30*time.Second)
	b, err := dashtest.Open(octx, srv.URL+"/dashboard/", dashtest.Options{Chromium: chromium, Netns: ns, Logf: t.Logf})
	ocancel()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
		if pids := processesUsing(b.UserDataDir()); len(pids) > 0 {
			t.Errorf("chromium processes %v outlived Close", pids)
		}
	}()
	as, err := b.Agents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(as) != 1 || as[0].Host != "net1" || !as[0].Alive {
		t.Errorf("agents shown: %+v, want net1 alive", as)
	}
}
