package agent

import (
	"bytes"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/l3ha/l3ha/internal/agentapi"
)

// timedReport is an HA state report the server accepted, and when.
type timedReport struct {
	at  time.Time
	rep agentapi.HAStateReport
}

// reportClock wraps a fake endpoint and records when each HA state report
// it accepted arrived.
type reportClock struct {
	h  http.Handler
	mu sync.Mutex
	rs []timedReport
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (c *reportClock) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != agentapi.PathHAStates {
		c.h.ServeHTTP(w, r)
		return
	}
	at := time.Now()
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	sr := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	c.h.ServeHTTP(sr, r)
	var rep agentapi.HAStateReport
	if sr.status == http.StatusNoContent && json.Unmarshal(body, &rep) == nil {
		c.mu.Lock()
		c.rs = append(c.rs, timedReport{at, rep})
		c.mu.Unlock()
	}
}

func (c *reportClock) reports() []timedReport {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.rs)
}

func (c *reportClock) full() []timedReport {
	var out []timedReport
	for _, r := range c.reports() {
		if r.rep.Full {
			out = append(out, r)
		}
	}
	return out
}

// reassertConfig is testConfig re-asserting at the default interval
// (whatever testConfig says).
func reassertConfig(h http.Handler) Config {
	cfg := testConfig(h, "http://server")
	cfg.ReassertInterval = DefaultReassertInterval
	return cfg
}

func TestReassertIntervalDefault(t *testing.T) {
	c := Config{Host: "h", Servers: []string{"http://x"}}
	if err := c.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if c.ReassertInterval != DefaultReassertInterval || DefaultReassertInterval != 10*time.Second {
		t.Errorf("ReassertInterval %v by default, want 10s", c.ReassertInterval)
	}
}

// TestReassertEveryInterval: besides transitions, the agent re-asserts the
// current state of every router in one report every ReassertInterval
// (±10%), marked Full, with no transition in Changed when nothing changed,
// and saying its interval.
func TestReassertEveryInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fe := newFakeEndpoint()
		fe.setState(twoRouters("e1"))
		clock := &reportClock{h: fe}
		stop := runAgent(t, reassertConfig(clock), NewFakeDataplane(), newLogRecorder(t))
		defer stop()

		time.Sleep(time.Second)
		synctest.Wait()
		// The first report re-asserts everything (the agent just
		// registered), with the first states as transitions.
		reps := clock.reports()
		want := map[string]string{"r1": agentapi.HAActive, "r2": agentapi.HAStandby}
		if len(reps) != 1 || !reps[0].rep.Full || !maps.Equal(reps[0].rep.States, want) || !slices.Equal(reps[0].rep.Changed, []string{"r1", "r2"}) || reps[0].rep.ReassertSeconds != 10 {
			t.Fatalf("reports %+v, want one re-assertion of %v with both changed, saying reassert_seconds 10", reps, want)
		}
		time.Sleep(45 * time.Second)
		synctest.Wait()
		reps = clock.reports()
		if len(reps) < 5 || len(reps) > 6 {
			t.Fatalf("%d reports in 46s, want the first and 4 or 5 re-assertions at a 10s interval: %+v", len(reps), reps)
		}
		for i := 1; i < len(reps); i++ {
			r := reps[i]
			if gap := r.at.Sub(reps[i-1].at); gap < 9*time.Second || gap > 11*time.Second+DefaultReportBatchDelay {
				t.Errorf("report %d %v after the previous one, want 10s ±10%% (+ the batch delay)", i, gap)
			}
			if !r.rep.Full || !maps.Equal(r.rep.States, want) || len(r.rep.Changed) != 0 || r.rep.Host != "net1" || r.rep.ReassertSeconds != 10 {
				t.Errorf("report %d = %+v, want a re-assertion of every router's state %v, no transition", i, r.rep, want)
			}
		}
	})
}

// TestReassertCarriesPendingTransitions: a transition that the server has
// not accepted yet when a re-assertion is due goes in it, listed in
// Changed, so that the server still treats it as a transition.
func TestReassertCarriesPendingTransitions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fe := newFakeEndpoint()
		fe.setState(twoRouters("e1"))
		clock := &reportClock{h: fe}
		dp := NewFakeDataplane()
		stop := runAgent(t, reassertConfig(clock), dp, newLogRecorder(t))
		defer stop()
		time.Sleep(time.Second)
		synctest.Wait()

		// Reports fail for longer than a re-assertion interval; r1 fails
		// over meanwhile.
		fe.failNext(agentapi.PathHAStates, 1000)
		if err := dp.SetState("r1", agentapi.HAStandby); err != nil {
			t.Fatal(err)
		}
		time.Sleep(15 * time.Second)
		synctest.Wait()
		fe.failNext(agentapi.PathHAStates, 0)
		time.Sleep(10 * time.Second) // backoff ≤ 8s ±20%
		synctest.Wait()
		reps := clock.reports()
		if len(reps) < 2 {
			t.Fatalf("reports %+v, want the failed ones resent", reps)
		}
		got := reps[1].rep
		want := map[string]string{"r1": agentapi.HAStandby, "r2": agentapi.HAStandby}
		if !got.Full || !maps.Equal(got.States, want) || !slices.Equal(got.Changed, []string{"r1"}) {
			t.Errorf("first report after the failures = %+v, want a re-assertion of %v with r1 changed", got, want)
		}
		// The next re-assertion comes an interval after that one, not at
		// once: failures did not pile re-assertions up.
		for _, r := range reps[2:] {
			if gap := r.at.Sub(reps[1].at); gap < 9*time.Second {
				t.Errorf("report %+v %v after the resent one", r.rep, gap)
			}
			if len(r.rep.Changed) != 0 {
				t.Errorf("later report %+v repeats a transition", r.rep)
			}
		}
	})
}

// TestReassertAfterReconnect: when the server is reachable again the agent
// re-asserts every router at once (not only at the next interval), as a
// re-assertion: the server may have superseded its states meanwhile.
func TestReassertAfterReconnect(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fe := newFakeEndpoint()
		fe.interval = 1
		fe.setState(twoRouters("e1"))
		clock := &reportClock{h: fe}
		cfg := testConfig(clock, "http://server")
		cfg.ReassertInterval = time.Minute
		stop := runAgent(t, cfg, NewFakeDataplane(), newLogRecorder(t))
		defer stop()
		time.Sleep(time.Second)
		synctest.Wait()
		n := len(clock.reports())

		fe.setDown(true)
		time.Sleep(5 * time.Second)
		synctest.Wait()
		fe.setDown(false)
		back := time.Now()
		time.Sleep(3 * time.Second)
		synctest.Wait()
		reps := clock.reports()[n:]
		if len(reps) != 1 || !reps[0].rep.Full || len(reps[0].rep.Changed) != 0 || reps[0].at.Sub(back) > 2*time.Second {
			t.Fatalf("reports after the outage %+v, want one re-assertion at once", reps)
		}
		if reps[0].rep.ReassertSeconds != 60 {
			t.Errorf("reassert_seconds %v, want 60", reps[0].rep.ReassertSeconds)
		}
	})
}

// TestReassertDisabled: a negative interval turns re-assertions off; the
// agent then reports transitions only (and its states when it registers
// or reconnects).
func TestReassertDisabled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fe := newFakeEndpoint()
		fe.setState(twoRouters("e1"))
		clock := &reportClock{h: fe}
		cfg := testConfig(clock, "http://server")
		cfg.ReassertInterval = -1
		stop := runAgent(t, cfg, NewFakeDataplane(), newLogRecorder(t))
		defer stop()
		time.Sleep(time.Minute)
		synctest.Wait()
		reps := clock.reports()
		if len(reps) != 1 || reps[0].rep.ReassertSeconds != 0 {
			t.Fatalf("reports %+v in a minute, want the one of the registration, saying no interval", reps)
		}
	})
}

// TestReassertForgetsRemovedRouters: a router the desired state no longer
// has is not re-asserted.
func TestReassertForgetsRemovedRouters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fe := newFakeEndpoint()
		fe.setState(twoRouters("e1"))
		clock := &reportClock{h: fe}
		stop := runAgent(t, reassertConfig(clock), NewFakeDataplane(), newLogRecorder(t))
		defer stop()
		time.Sleep(time.Second)
		synctest.Wait()
		fe.setState(agentapi.DesiredState{ETag: "e2", Host: "net1", Routers: []agentapi.RouterSpec{{ID: "r2", HA: true, VRID: 2, BindingIndex: 2}}})
		time.Sleep(12 * time.Second)
		synctest.Wait()
		full := clock.full()
		if len(full) == 0 {
			t.Fatal("no re-assertion in 13s")
		}
		if last := full[len(full)-1].rep; !maps.Equal(last.States, map[string]string{"r2": agentapi.HAStandby}) {
			t.Errorf("re-assertion %+v, want r2 alone", last)
		}
	})
}
