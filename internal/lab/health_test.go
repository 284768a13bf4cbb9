package lab

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// healthInterval is the lab's gateway check interval in this test, and
// healthBudget how long a master whose gateway fails may keep the router:
// 3 failed checks (dataplane.DefaultHealthFall) each up to an interval
// apart plus a probe's timeout, the backup's Master_Down_Interval (0.76 s at
// the 0.2 s pace) and 2 s of margin for a loaded machine.
const (
	healthInterval = time.Second
	healthBudget   = 3*healthInterval + healthInterval + 760*time.Millisecond + 2*time.Second
)

// TestHealthCheckMovesTheRouterToAHealthyGateway (issue 11, item 3): with
// --ha-vrrp-health-check-interval 1, the master's external link is cut (its
// gateway stops answering, the HA network still works): within the checks'
// time the other node, whose gateway answers, is master in the kernel and
// the API, both transitions with reason health_check. Then the new master's
// external link is cut too: every gateway is down, and the router stays
// where it is (no ping-pong) for several check rounds, still active in the
// API, with an active → active health_check row in its history.
func TestHealthCheckMovesTheRouterToAHealthyGateway(t *testing.T) {
	needE2E(t)
	l := &accLab{t: t, name: "hc" + randomHex(3), dir: filepath.Join(t.TempDir(), "lab")}
	t.Cleanup(func() { l.down() })
	st, err := Up(t.Context(), Options{
		Name: l.name, Dir: l.dir, Binary: labBinary, Out: tWriter{t}, HADriver: "native",
		HealthCheckInterval: fmt.Sprint(healthInterval.Seconds()),
	})
	if err != nil {
		t.Fatal(err)
	}
	l.st, l.api = st, apiFor(st)
	ctx := t.Context()
	r, master := l.gatewayRouter(t, "health")
	other := otherNode(master)

	cut := func(node string) {
		t.Helper()
		ns := NodeNamespace(l.name, node)
		if err := setLink(ns, devExternal, false); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := setLink(ns, devExternal, true); err != nil {
				t.Error(err)
			}
		})
	}
	cut(master)
	cutAt := time.Now()
	var v haView
	if err := waitFor(ctx, healthBudget, other+" master (kernel and API) after "+master+"'s gateway failed", func() (bool, error) {
		v, err = l.view(ctx, r.ID)
		return err == nil && slices.Equal(v.VIPs, []string{other}) && slices.Equal(v.APIActive, []string{other}), nil
	}); err != nil {
		t.Fatalf("%v\n%s", err, v)
	}
	t.Logf("%s's gateway cut: %s took over %.2f s later (budget %v)", master, other, time.Since(cutAt).Seconds(), healthBudget)
	hist, err := l.api.routerHistory(ctx, r.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []Transition{{Host: other, From: "standby", To: "active", Reason: "health_check"}, {Host: master, From: "active", To: "standby", Reason: "health_check"}} {
		if !slices.ContainsFunc(hist, func(h Transition) bool {
			return h.Host == want.Host && h.From == want.From && h.To == want.To && h.Reason == want.Reason
		}) {
			t.Errorf("history %+v: no %s %s→%s %s", hist, want.Host, want.From, want.To, want.Reason)
		}
	}

	// Every gateway down: nobody is healthier, the router stays.
	cut(other)
	watchEnd := time.Now().Add(3 * healthBudget)
	for time.Now().Before(watchEnd) {
		v, err := l.view(ctx, r.ID)
		if err == nil && (!slices.Equal(v.VIPs, []string{other}) || !slices.Equal(v.APIActive, []string{other})) {
			t.Fatalf("with every gateway down the router moved: %s", v)
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
	hist, err = l.api.routerHistory(ctx, r.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(hist, func(h Transition) bool {
		return h.Host == other && h.From == "active" && h.To == "active" && h.Reason == "health_check"
	}) {
		t.Errorf("history %+v: no %s active→active health_check (the master stays, unhealthy)", hist, other)
	}
	t.Logf("every gateway down: %s stayed master for %v", other, 3*healthBudget)
}
