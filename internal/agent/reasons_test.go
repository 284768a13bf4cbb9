package agent

import (
	"maps"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/l3ha/l3ha/internal/agentapi"
)

// TestReportsCarryTransitionReasons: the reason the data plane gives a
// transition reaches the server with it (agentapi.HAStateReport.Reasons),
// also when the report is retried after failures; a re-assertion without
// transitions carries none, and a transition without a reason has no
// entry.
func TestReportsCarryTransitionReasons(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fe := newFakeEndpoint()
		fe.setState(twoRouters("e1"))
		dp := NewFakeDataplane()
		cfg := testConfig(fe, "http://server")
		cfg.ReassertInterval = 30 * time.Second
		stop := runAgent(t, cfg, dp, newLogRecorder(t))
		defer stop()

		for _, step := range []struct {
			name string
			do   func() error
			wait time.Duration
			// want: states and reasons of the last accepted report; full
			// whether it is a re-assertion.
			wantStates, wantReasons map[string]string
			full                    bool
			// every attempt since the step began carries wantReasons
			// (a failed report is retried with its reasons).
			attemptsAgree bool
			// transitionOf, if set, names the one router whose transition
			// the step makes: the report that carried it is judged, not
			// the last one.
			transitionOf string
		}{
			{
				name: "first states", do: func() error { return nil }, wait: 2 * time.Second,
				wantStates:  map[string]string{"r1": agentapi.HAActive, "r2": agentapi.HAStandby},
				wantReasons: map[string]string{"r1": agentapi.ReasonStartup, "r2": agentapi.ReasonStartup},
				full:        true, // registration makes the first report a re-assertion, its transitions in Changed
			},
			{
				name: "failover while the server fails",
				do: func() error {
					fe.failNext(agentapi.PathHAStates, 2)
					if err := dp.SetStateWithReason("r1", agentapi.HAStandby, agentapi.ReasonSplitBrain); err != nil {
						return err
					}
					return dp.SetStateWithReason("r2", agentapi.HAActive, agentapi.ReasonPeerLost)
				},
				wait:        20 * time.Second, // two failures, backoff 1+2 s ±20%
				wantStates:  map[string]string{"r1": agentapi.HAStandby, "r2": agentapi.HAActive},
				wantReasons: map[string]string{"r1": agentapi.ReasonSplitBrain, "r2": agentapi.ReasonPeerLost}, attemptsAgree: true,
			},
			{
				name: "re-assertion without transitions", do: func() error { return nil }, wait: 40 * time.Second,
				wantStates: map[string]string{"r1": agentapi.HAStandby, "r2": agentapi.HAActive}, full: true,
			},
			{
				name: "transition without a reason", do: func() error { return dp.SetState("r1", agentapi.HAActive) }, wait: 2 * time.Second,
				wantStates: map[string]string{"r1": agentapi.HAActive}, transitionOf: "r1",
			},
		} {
			synctest.Wait()
			attempts := len(fe.reportAttempts())
			if err := step.do(); err != nil {
				t.Fatalf("%s: %v", step.name, err)
			}
			time.Sleep(step.wait)
			synctest.Wait()
			acc := fe.reportsAccepted()
			if len(acc) == 0 {
				t.Fatalf("%s: no report accepted", step.name)
			}
			last := acc[len(acc)-1]
			if step.transitionOf != "" {
				// A re-assertion (jittered, so it may fall due in this
				// step) carries the transition instead, in Changed, or
				// follows it: judge the report that carried it.
				id := step.transitionOf
				for i := len(acc) - 1; i >= 0; i-- {
					if r := acc[i]; r.States[id] == step.wantStates[id] && (!r.Full || slices.Contains(r.Changed, id)) {
						if _, ok := r.Reasons[id]; ok {
							t.Errorf("%s: report carries reason %q for %s, want none", step.name, r.Reasons[id], id)
						}
						break
					}
					if i == 0 {
						t.Errorf("%s: no report carried %s's transition to %s: %+v", step.name, id, step.wantStates[id], acc)
					}
				}
				continue
			}
			if !maps.Equal(last.States, step.wantStates) || !maps.Equal(last.Reasons, step.wantReasons) || last.Full != step.full {
				t.Errorf("%s: last report states %v reasons %v full %v, want %v %v %v",
					step.name, last.States, last.Reasons, last.Full, step.wantStates, step.wantReasons, step.full)
			}
			if step.attemptsAgree {
				tried := fe.reportAttempts()[attempts:]
				if len(tried) < 3 {
					t.Errorf("%s: %d attempts, want 3 (two failed)", step.name, len(tried))
				}
				for i, rep := range tried {
					if !maps.Equal(rep.Reasons, step.wantReasons) {
						t.Errorf("%s: attempt %d reasons %v, want %v", step.name, i, rep.Reasons, step.wantReasons)
					}
				}
			}
		}
	})
}
