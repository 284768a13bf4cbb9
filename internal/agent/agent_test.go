package agent

import (
	"context"
	"errors"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/l3ha/l3ha/internal/agentapi"
)

// testConfig is a Config for an agent of host net1 talking to fe.
func testConfig(fe http.Handler, serverURL string) Config {
	cfg := Config{
		Host:             "net1",
		Servers:          []string{serverURL},
		AgentToken:       testToken,
		LocalIP:          "192.0.2.11",
		Configurations:   map[string]any{"interface_driver": "fake"},
		ReportBatchDelay: 200 * time.Millisecond,
		PollWait:         30 * time.Second,
		MinBackoff:       time.Second,
		MaxBackoff:       8 * time.Second,
		// These tests count reports: no periodic re-assert (reassert_test.go).
		ReassertInterval: -1,
	}
	if fe != nil {
		cfg.HTTPClient = &http.Client{Transport: memTransport{fe}}
	}
	return cfg
}

// runAgent starts the agent and returns a function that stops it and waits
// for Run to return; the test's cleanup does the same if it was not called.
func runAgent(t *testing.T, cfg Config, dp Dataplane, log *logRecorder) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, dp, slog.New(log)) }()
	stop = sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v after cancel, want nil", err)
		}
	})
	t.Cleanup(stop)
	return stop
}

// twoRouters is a desired state with r1 (binding 1 → active) and r2
// (binding 2 → standby).
func twoRouters(etag string) agentapi.DesiredState {
	return agentapi.DesiredState{
		ETag: etag,
		Host: "net1",
		Routers: []agentapi.RouterSpec{
			{ID: "r1", HA: true, VRID: 1, BindingIndex: 1},
			{ID: "r2", HA: true, VRID: 2, BindingIndex: 2},
		},
	}
}

func TestRegistrationAndHeartbeatInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fe := newFakeEndpoint()
		fe.interval = 2
		log := newLogRecorder(t)
		stop := runAgent(t, testConfig(fe, "http://server"), NewFakeDataplane(), log)
		defer stop()

		start := time.Now()
		time.Sleep(9 * time.Second)
		synctest.Wait()
		hbs := fe.heartbeatsSeen()
		if len(hbs) != 5 {
			t.Fatalf("%d heartbeats in 9s at a 2s interval, want 5 (at 0,2,4,6,8s)", len(hbs))
		}
		for i, h := range hbs {
			if got, want := h.at.Sub(start), time.Duration(i)*2*time.Second; got != want {
				t.Errorf("heartbeat %d at %v, want %v", i, got, want)
			}
		}
		hb := hbs[0].hb
		if hb.Host != "net1" || hb.AgentType != agentapi.AgentTypeL3 || hb.Binary != agentapi.BinaryL3 || hb.Topic != agentapi.TopicL3 {
			t.Errorf("heartbeat %+v", hb)
		}
		if !hb.StartedAt.Equal(start) || !hbs[4].hb.StartedAt.Equal(start) {
			t.Errorf("started_at %v / %v, want %v in every heartbeat", hb.StartedAt, hbs[4].hb.StartedAt, start)
		}
		wantConf := map[string]any{"agent_mode": "legacy", "local_ip": "192.0.2.11", "interface_driver": "fake"}
		if !maps.Equal(hb.Configurations, wantConf) {
			t.Errorf("configurations %v, want %v", hb.Configurations, wantConf)
		}
		if n := len(log.records("registered with the server")); n != 1 {
			t.Errorf("%d registration log lines, want 1", n)
		}

		// The server changes its mind about the interval.
		fe.mu.Lock()
		fe.interval = 0.5
		fe.mu.Unlock()
		time.Sleep(time.Second) // the 10s heartbeat learns 0.5s
		synctest.Wait()
		n := len(fe.heartbeatsSeen())
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if got := len(fe.heartbeatsSeen()) - n; got != 4 {
			t.Errorf("%d heartbeats in 2s at a 0.5s interval, want 4", got)
		}
	})
}

func TestLongPollApplyAndReport(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fe := newFakeEndpoint()
		dp := NewFakeDataplane()
		stop := runAgent(t, testConfig(fe, "http://server"), dp, newLogRecorder(t))
		defer stop()

		synctest.Wait()
		polls := fe.pollsSeen()
		if len(polls) != 1 || polls[0].host != "net1" || polls[0].etag != "" || polls[0].wait != "30" {
			t.Fatalf("polls %+v, want one held poll of net1 with no etag, wait=30", polls)
		}

		fe.setState(twoRouters("e1"))
		synctest.Wait()
		if st, n := dp.LastApplied(); n != 1 || st.ETag != "e1" {
			t.Fatalf("applied %d times, last %q; want e1 once", n, st.ETag)
		}
		if got := fe.pollsSeen(); got[len(got)-1].etag != "e1" {
			t.Errorf("next poll carries etag %q, want e1", got[len(got)-1].etag)
		}
		time.Sleep(300 * time.Millisecond)
		synctest.Wait()
		want := map[string]string{"r1": agentapi.HAActive, "r2": agentapi.HAStandby}
		reps := fe.reportsAccepted()
		if len(reps) != 1 || !maps.Equal(reps[0].States, want) || reps[0].Host != "net1" {
			t.Fatalf("reports %+v, want one with %v", reps, want)
		}

		// r2 becomes the first binding, r1 goes away, r3 comes.
		fe.setState(agentapi.DesiredState{ETag: "e2", Host: "net1", Routers: []agentapi.RouterSpec{
			{ID: "r2", BindingIndex: 1}, {ID: "r3", BindingIndex: 3},
		}})
		time.Sleep(300 * time.Millisecond)
		synctest.Wait()
		reps = fe.reportsAccepted()
		want = map[string]string{"r2": agentapi.HAActive, "r3": agentapi.HAStandby}
		if len(reps) != 2 || !maps.Equal(reps[1].States, want) {
			t.Fatalf("reports %+v, want a second one with %v", reps, want)
		}
		if got := dp.States(); !maps.Equal(got, want) {
			t.Errorf("data plane runs %v, want %v", got, want)
		}

		// Nothing changes: polls are held and nothing is applied again
		// before the resync.
		time.Sleep(50 * time.Second)
		synctest.Wait()
		if _, n := dp.LastApplied(); n != 2 {
			t.Errorf("%d applies, want 2", n)
		}
		if len(fe.reportsAccepted()) != 2 {
			t.Errorf("reports without transitions: %+v", fe.reportsAccepted())
		}
		// Resync after DefaultResyncInterval.
		time.Sleep(DefaultResyncInterval)
		synctest.Wait()
		if _, n := dp.LastApplied(); n != 3 {
			t.Errorf("%d applies after a resync interval, want 3", n)
		}
	})
}

func TestBatchCoalescing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fe := newFakeEndpoint()
		dp := NewFakeDataplane()
		stop := runAgent(t, testConfig(fe, "http://server"), dp, newLogRecorder(t))
		defer stop()
		fe.setState(agentapi.DesiredState{ETag: "e1", Host: "net1", Routers: []agentapi.RouterSpec{
			{ID: "r1", BindingIndex: 1}, {ID: "r2", BindingIndex: 2}, {ID: "r3", BindingIndex: 2},
		}})
		synctest.Wait()
		// Three transitions, from one Apply: one report after the batch delay.
		if n := len(fe.reportAttempts()); n != 0 {
			t.Fatalf("%d reports before the batch delay", n)
		}
		time.Sleep(199 * time.Millisecond)
		synctest.Wait()
		if n := len(fe.reportAttempts()); n != 0 {
			t.Fatalf("%d reports before the batch delay", n)
		}
		time.Sleep(2 * time.Millisecond)
		synctest.Wait()
		reps := fe.reportAttempts()
		want := map[string]string{"r1": "active", "r2": "standby", "r3": "standby"}
		if len(reps) != 1 || !maps.Equal(reps[0].States, want) {
			t.Fatalf("reports %+v, want one with %v", reps, want)
		}

		// A flurry of failovers, 10ms apart: one report, latest state each.
		time.Sleep(time.Second)
		for _, tr := range []Transition{{"r1", "standby", ""}, {"r2", "active", ""}, {"r1", "active", ""}, {"r3", "active", ""}, {"r2", "standby", ""}} {
			if err := dp.SetState(tr.RouterID, tr.State); err != nil {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		reps = fe.reportAttempts()
		want = map[string]string{"r1": "active", "r2": "standby", "r3": "active"}
		if len(reps) != 2 || !maps.Equal(reps[1].States, want) {
			t.Fatalf("reports %+v, want a second, single one with %v", reps, want)
		}
	})
}

func TestRetryAfterServerErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fe := newFakeEndpoint()
		// Everything fails for a while.
		fe.failNext(agentapi.PathHeartbeat, 3)
		fe.failNext(agentapi.PathState, 2)
		fe.failNext(agentapi.PathHAStates, 1000)
		fe.setState(twoRouters("e1"))
		dp := NewFakeDataplane()
		log := newLogRecorder(t)
		stop := runAgent(t, testConfig(fe, "http://server"), dp, log)
		defer stop()

		time.Sleep(20 * time.Second) // backoff 1+2+4s (±20%) for heartbeats, then 1+2s for polls
		synctest.Wait()
		if n := len(fe.heartbeatsSeen()); n < 4 {
			t.Fatalf("%d heartbeats, want at least 4 (3 failed, then registered)", n)
		}
		if st, _ := dp.LastApplied(); st.ETag != "e1" {
			t.Fatalf("applied %q, want e1 after the long-poll recovered", st.ETag)
		}
		// r1 fails over while the reports are failing.
		if err := dp.SetState("r1", agentapi.HAStandby); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Second)
		fe.failNext(agentapi.PathHAStates, 0)
		time.Sleep(10 * time.Second) // report backoff is capped at 8s ±20%
		synctest.Wait()

		want := map[string]string{"r1": "standby", "r2": "standby"}
		if got := fe.serverView(); !maps.Equal(got, want) {
			t.Errorf("server knows %v, want %v", got, want)
		}
		// Never stale over fresh: once r1=standby was sent, r1=active never is.
		seenStandby := false
		for i, rep := range fe.reportAttempts() {
			switch rep.States["r1"] {
			case "standby":
				seenStandby = true
			case "active":
				if seenStandby {
					t.Errorf("attempt %d sends r1=active after r1=standby: %v", i, fe.reportAttempts())
				}
			}
		}
		if n := len(fe.reportAttempts()); n < 4 {
			t.Errorf("%d report attempts, want at least 4 (3 failed)", n)
		}
		// One warning per kind of failure, not one per attempt.
		warns := 0
		for _, r := range log.records("") {
			if r.level == slog.LevelWarn {
				warns++
			}
		}
		if warns != 3 {
			t.Errorf("%d warnings, want 3 (registration, long-poll, reports): %v", warns, log.records(""))
		}
		if n := len(log.records("reporting HA states works again")); n != 1 {
			t.Errorf("%d recovery lines for reports, want 1", n)
		}
	})
}

func TestNoStaleOverFresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fe := newFakeEndpoint()
		fe.setState(twoRouters("e1"))
		hold := make(chan struct{})
		fe.hold = hold
		fe.failNext(agentapi.PathHAStates, 1)
		dp := NewFakeDataplane()
		stop := runAgent(t, testConfig(fe, "http://server"), dp, newLogRecorder(t))
		defer stop()

		// The first report (r1=active) is in flight when r1 fails over.
		time.Sleep(time.Second)
		synctest.Wait()
		if n := len(fe.reportAttempts()); n != 1 {
			t.Fatalf("%d reports in flight, want 1", n)
		}
		if err := dp.SetState("r1", agentapi.HAStandby); err != nil {
			t.Fatal(err)
		}
		fe.mu.Lock()
		fe.hold = nil
		fe.mu.Unlock()
		close(hold) // ... and it fails
		time.Sleep(10 * time.Second)
		synctest.Wait()
		att := fe.reportAttempts()
		want := []map[string]string{
			{"r1": "active", "r2": "standby"},  // failed
			{"r1": "standby", "r2": "standby"}, // the retry, with r1's fresh state
		}
		if len(att) != len(want) {
			t.Fatalf("report attempts %v, want %v", att, want)
		}
		for i := range want {
			if !maps.Equal(att[i].States, want[i]) {
				t.Errorf("attempt %d = %v, want %v", i, att[i].States, want[i])
			}
		}
	})
}

func TestServerDownThenBackReReports(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fe := newFakeEndpoint()
		fe.interval = 1
		fe.setState(twoRouters("e1"))
		dp := NewFakeDataplane()
		log := newLogRecorder(t)
		stop := runAgent(t, testConfig(fe, "http://server"), dp, log)
		defer stop()

		time.Sleep(5 * time.Second)
		synctest.Wait()
		if n := len(fe.reportsAccepted()); n != 1 {
			t.Fatalf("%d reports before the outage, want 1", n)
		}

		// The server goes down for two minutes, and comes back with a new
		// database (new agent id).
		fe.setDown(true)
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		if _, n := dp.LastApplied(); n < 1 {
			t.Fatal("the data plane lost its state")
		}
		fe.setAgentID("agent-2")
		fe.setDown(false)
		time.Sleep(3 * time.Second) // heartbeat backoff is capped at the 1s interval
		synctest.Wait()

		reps := fe.reportsAccepted()
		want := map[string]string{"r1": "active", "r2": "standby"}
		if len(reps) < 2 || !maps.Equal(reps[len(reps)-1].States, want) {
			t.Fatalf("reports %+v, want a re-report of %v after the outage", reps, want)
		}
		if n := len(log.records("lost contact with the server; the data plane keeps running")); n != 1 {
			t.Errorf("%d loss lines, want 1", n)
		}
		if n := len(log.records("server reachable again")); n != 1 {
			t.Errorf("%d recovery lines, want 1", n)
		}
		if n := len(log.records("heartbeat failed")); n < 10 {
			t.Errorf("%d failed heartbeats logged at debug, want many (retried at the interval)", n)
		}
		// A failover while the server is down reaches it once it is back.
		fe.setDown(true)
		time.Sleep(10 * time.Second)
		if err := dp.SetState("r2", agentapi.HAActive); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Second)
		fe.setDown(false)
		time.Sleep(10 * time.Second)
		synctest.Wait()
		want = map[string]string{"r1": "active", "r2": "active"}
		if got := fe.serverView(); !maps.Equal(got, want) {
			t.Errorf("server knows %v, want %v", got, want)
		}
	})
}

func TestServerRestartBetweenHeartbeats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fe := newFakeEndpoint()
		fe.interval = 20
		fe.setState(twoRouters("e1"))
		log := newLogRecorder(t)
		stop := runAgent(t, testConfig(fe, "http://server"), NewFakeDataplane(), log)
		defer stop()
		time.Sleep(time.Second)
		synctest.Wait()
		if n := len(fe.reportsAccepted()); n != 1 {
			t.Fatalf("%d reports, want 1", n)
		}
		// A restart too short for a heartbeat to notice; the held long-poll does.
		fe.setDown(true) // the held poll's connection drops
		synctest.Wait()
		fe.setDown(false)
		// The next poll is held for 30s; when it returns, the agent knows
		// the server is back. No heartbeat has failed.
		time.Sleep(35 * time.Second)
		synctest.Wait()
		if n := len(log.records("lost contact with the server; the data plane keeps running")); n != 0 {
			t.Errorf("heartbeats noticed the restart; the test wants only the long-poll to")
		}
		reps := fe.reportsAccepted()
		if len(reps) != 2 || !maps.Equal(reps[1].States, reps[0].States) {
			t.Fatalf("reports %+v, want the states re-reported", reps)
		}
	})
}

func TestApplyFailureRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fe := newFakeEndpoint()
		fe.setState(twoRouters("e1"))
		dp := NewFakeDataplane()
		dp.FailApply(errors.New("netlink: operation not permitted"))
		log := newLogRecorder(t)
		stop := runAgent(t, testConfig(fe, "http://server"), dp, log)
		defer stop()

		time.Sleep(5 * time.Second)
		synctest.Wait()
		fails := log.records("applying the desired state failed; will retry")
		if len(fails) < 2 {
			t.Fatalf("%d apply failures logged, want retries", len(fails))
		}
		if fails[0].level != slog.LevelError || fails[0].attrs["err"] == nil || fails[0].attrs["host"] != "net1" {
			t.Errorf("failure logged as %+v, want an error with err and host", fails[0])
		}
		if len(fe.reportAttempts()) != 0 {
			t.Errorf("reports before anything was applied: %v", fe.reportAttempts())
		}
		dp.FailApply(nil)
		time.Sleep(10 * time.Second) // backoff ≤ 8s ±20%
		synctest.Wait()
		if st, n := dp.LastApplied(); n != 1 || st.ETag != "e1" {
			t.Fatalf("applied %d times (%q), want e1 once", n, st.ETag)
		}
		if n := len(fe.reportsAccepted()); n != 1 {
			t.Errorf("%d reports, want 1", n)
		}
	})
}

func TestStateFiles(t *testing.T) {
	dir := t.TempDir()
	// A leftover of a router that is gone.
	if err := writeStateFile(dir, "old", agentapi.HAActive, "master"); err != nil {
		t.Fatal(err)
	}
	synctest.Test(t, func(t *testing.T) {
		fe := newFakeEndpoint()
		fe.setState(twoRouters("e1"))
		cfg := testConfig(fe, "http://server")
		cfg.StateDir = dir
		dp := NewFakeDataplane()
		stop := runAgent(t, cfg, dp, newLogRecorder(t))
		defer stop()
		time.Sleep(time.Second)
		synctest.Wait()
		wantFile(t, StateFile(dir, "r1"), "master\n")
		wantFile(t, StateFile(dir, "r2"), "backup\n")
		wantFile(t, StateFile(dir, "old"), "")

		dp.SetState("r2", agentapi.HAActive)
		fe.setState(agentapi.DesiredState{ETag: "e2", Host: "net1", Routers: []agentapi.RouterSpec{{ID: "r2", BindingIndex: 2}}})
		time.Sleep(time.Second)
		synctest.Wait()
		wantFile(t, StateFile(dir, "r1"), "")
		wantFile(t, StateFile(dir, "r2"), "master\n")
	})
}

// wantFile checks the content of path; "" means it must not exist.
func wantFile(t *testing.T, path, want string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if want == "" {
		if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s exists (%q, %v), want it removed", path, b, err)
		}
		return
	}
	if err != nil || string(b) != want {
		t.Errorf("%s = %q, %v; want %q", path, b, err, want)
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Servers: []string{"http://x"}},
		{Host: "h"},
		{Host: "h", Servers: []string{"http://x"}, AgentMode: "dvr_nope"},
	} {
		if err := Run(context.Background(), cfg, NewFakeDataplane(), nil); err == nil {
			t.Errorf("Run(%+v) = nil, want an error", cfg)
		}
	}
}

// The tests below use a real HTTP server; they wait on conditions with
// generous deadlines rather than on fake time.

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestOverHTTP(t *testing.T) {
	fe := newFakeEndpoint()
	fe.interval = 0.05
	srv := httptest.NewServer(fe)
	defer srv.Close()
	cfg := testConfig(nil, srv.URL)
	cfg.PollWait = 20 * time.Second // changes must arrive through the held poll, not its expiry
	cfg.ReportBatchDelay = 20 * time.Millisecond
	cfg.MinBackoff, cfg.MaxBackoff = 10*time.Millisecond, 50*time.Millisecond
	dp := NewFakeDataplane()
	stop := runAgent(t, cfg, dp, newLogRecorder(t))

	eventually(t, "registration and a few heartbeats", func() bool { return len(fe.heartbeatsSeen()) >= 3 })
	eventually(t, "a held long-poll", func() bool { return len(fe.pollsSeen()) >= 1 })
	fe.setState(twoRouters("e1"))
	want := map[string]string{"r1": "active", "r2": "standby"}
	eventually(t, "the report of e1", func() bool { return maps.Equal(fe.serverView(), want) })
	if st, _ := dp.LastApplied(); st.ETag != "e1" {
		t.Errorf("applied %q, want e1", st.ETag)
	}

	// 500s on reports, then a transition: retried until accepted.
	fe.failNext(agentapi.PathHAStates, 2)
	dp.SetState("r2", agentapi.HAActive)
	want = map[string]string{"r1": "active", "r2": "active"}
	eventually(t, "the retried report", func() bool { return maps.Equal(fe.serverView(), want) })

	stop()

	// A restarted agent (fresh data plane) reports everything again.
	n := len(fe.reportsAccepted())
	stop = runAgent(t, cfg, NewFakeDataplane(), newLogRecorder(t))
	defer stop()
	eventually(t, "the re-report after restart", func() bool { return len(fe.reportsAccepted()) > n })
	eventually(t, "the restarted agent's states", func() bool {
		reps := fe.reportsAccepted()
		return maps.Equal(reps[len(reps)-1].States, map[string]string{"r1": "active", "r2": "standby"})
	})
}

func TestWrongTokenKeepsTrying(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fe := newFakeEndpoint()
		cfg := testConfig(fe, "http://server")
		cfg.AgentToken = "wrong"
		log := newLogRecorder(t)
		stop := runAgent(t, cfg, NewFakeDataplane(), log)
		defer stop()
		time.Sleep(time.Minute)
		synctest.Wait()
		if n := len(fe.heartbeatsSeen()); n != 0 {
			t.Errorf("%d heartbeats accepted with a wrong token", n)
		}
		recs := log.records("registering with the server failed; retrying")
		if len(recs) != 1 {
			t.Fatalf("%d registration warnings, want 1", len(recs))
		}
		if err, _ := recs[0].attrs["err"].(error); err == nil || !agentapi.IsStatus(err, http.StatusUnauthorized) {
			t.Errorf("warning err = %v, want a 401", recs[0].attrs["err"])
		}
	})
}

// reportOnceDataplane reports each router's state the first time it sees
// it and never again, like a real VRRP instance that does not notice the
// server re-binding its router.
type reportOnceDataplane struct {
	report ReportFunc
	seen   map[string]bool
}

func (d *reportOnceDataplane) Start(_ context.Context, report ReportFunc) error {
	d.report, d.seen = report, map[string]bool{}
	return nil
}

func (d *reportOnceDataplane) Apply(_ context.Context, st agentapi.DesiredState) error {
	for _, r := range st.Routers {
		if !d.seen[r.ID] {
			d.seen[r.ID] = true
			d.report(Transition{RouterID: r.ID, State: agentapi.HAActive})
		}
	}
	return nil
}

// TestRebindingResendsTheRouterState: a router removed from this host and
// bound again before the agent noticed gets a fresh binding on the server
// (shown standby) while the data plane still runs the master; the agent sends
// the state again so the API shows the master.
func TestRebindingResendsTheRouterState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fe := newFakeEndpoint()
		stop := runAgent(t, testConfig(fe, "http://server"), &reportOnceDataplane{}, newLogRecorder(t))
		defer stop()
		state := func(etag, haPort string) agentapi.DesiredState {
			return agentapi.DesiredState{ETag: etag, Host: "net1", Routers: []agentapi.RouterSpec{
				{ID: "r1", HA: true, VRID: 5, BindingIndex: 1, HAPort: &agentapi.PortSpec{ID: haPort}},
			}}
		}
		fe.setState(state("e1", "p1"))
		time.Sleep(300 * time.Millisecond)
		synctest.Wait()
		if n := len(fe.reportsAccepted()); n != 1 {
			t.Fatalf("%d reports after the first state, want 1", n)
		}
		fe.setState(state("e2", "p2")) // new binding: a new HA port
		time.Sleep(300 * time.Millisecond)
		synctest.Wait()
		reps := fe.reportsAccepted()
		if len(reps) != 2 || reps[1].States["r1"] != agentapi.HAActive {
			t.Fatalf("reports %+v, want r1 active sent again", reps)
		}
		fe.setState(state("e3", "p2")) // same binding: nothing to resend
		time.Sleep(300 * time.Millisecond)
		synctest.Wait()
		if n := len(fe.reportsAccepted()); n != 2 {
			t.Fatalf("%d reports, want no resend for an unchanged binding", n)
		}
	})
}

// TestTransitionsAreCounted: every HA state change of a router is counted
// by the state entered, on the registry the agent was given.
func TestTransitionsAreCounted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fe := newFakeEndpoint()
		reg := prometheus.NewRegistry()
		cfg := testConfig(fe, "http://server")
		cfg.Metrics = reg
		dp := NewFakeDataplane()
		stop := runAgent(t, cfg, dp, newLogRecorder(t))
		defer stop()
		fe.setState(twoRouters("e1")) // r1 active, r2 standby
		synctest.Wait()
		if err := dp.SetState("r2", agentapi.HAActive); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP l3ha_agent_ha_transitions_total HA state changes of this node's routers, by the state entered (active/standby).
# TYPE l3ha_agent_ha_transitions_total counter
l3ha_agent_ha_transitions_total{state="active"} 2
l3ha_agent_ha_transitions_total{state="standby"} 1
`), "l3ha_agent_ha_transitions_total"); err != nil {
			t.Fatal(err)
		}
	})
}

// A transition the agent could not report while its server was down
// reaches the server within TransitionRetry (1 s, ±20%) of its return, not
// after a backoff grown to MaxBackoff: until it does, the API shows a
// master that is gone (issue 13: "the API shows the truth within 2 s").
func TestTransitionReachesAReturningServerWithinASecond(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fe := newFakeEndpoint()
		fe.interval = 25 // agent_down_time 75 s: the heartbeat would notice late
		fe.setState(twoRouters("e1"))
		dp := NewFakeDataplane()
		stop := runAgent(t, testConfig(fe, "http://server"), dp, newLogRecorder(t))
		defer stop()
		time.Sleep(5 * time.Second)
		synctest.Wait()

		fe.setDown(true)
		if err := dp.SetState("r2", agentapi.HAActive); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Minute) // the report's retries back off meanwhile
		fe.setDown(false)
		time.Sleep(1300 * time.Millisecond)
		synctest.Wait()
		want := map[string]string{"r1": "active", "r2": "active"}
		if got := fe.serverView(); !maps.Equal(got, want) {
			t.Errorf("1.3 s after the server came back it knows %v, want %v", got, want)
		}
	})
}

// An agent that cannot write its state directory (here ha_confs is a file;
// on a node, a full or read-only disk) keeps running its routers and
// reporting their states, logs the error once, says so in its heartbeats'
// configurations (state_dir_error), and once the directory is writable
// again writes the state files as they must be and drops the error (issue
// 13's fault table).
func TestStateDirNotWritableIsReportedAndRecovers(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "ha_confs")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	synctest.Test(t, func(t *testing.T) {
		fe := newFakeEndpoint()
		fe.interval = 1
		fe.setState(twoRouters("e1"))
		cfg := testConfig(fe, "http://server")
		cfg.StateDir = dir
		dp := NewFakeDataplane()
		log := newLogRecorder(t)
		stop := runAgent(t, cfg, dp, log)
		defer stop()
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if got := fe.serverView(); !maps.Equal(got, map[string]string{"r1": "active", "r2": "standby"}) {
			t.Errorf("server knows %v: the agent must keep reporting", got)
		}
		hbs := fe.heartbeatsSeen()
		if msg, _ := hbs[len(hbs)-1].hb.Configurations[ConfigStateDirError].(string); !strings.Contains(msg, "ha_confs") {
			t.Errorf("last heartbeat's %s = %q, want the write error", ConfigStateDirError, msg)
		}
		if n := len(log.records("writing HA state files failed; retrying")); n != 1 {
			t.Errorf("%d warnings about the state files, want 1", n)
		}

		if err := os.Remove(blocker); err != nil {
			t.Fatal(err)
		}
		time.Sleep(stateFileRetry + 2*time.Second)
		synctest.Wait()
		wantFile(t, StateFile(dir, "r1"), "master\n")
		wantFile(t, StateFile(dir, "r2"), "backup\n")
		hbs = fe.heartbeatsSeen()
		if msg, ok := hbs[len(hbs)-1].hb.Configurations[ConfigStateDirError]; ok {
			t.Errorf("last heartbeat still says %s = %v after the directory recovered", ConfigStateDirError, msg)
		}
	})
}
