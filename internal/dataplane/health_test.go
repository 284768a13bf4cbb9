package dataplane

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// The checker's tests run in a synctest bubble: its clock is fake and
// moves only when every goroutine waits, so a minute of checks takes no
// time and each result is seen exactly when it happens.

const testInterval = time.Second

var (
	gwA = netip.MustParseAddr("203.0.113.1")
	gwB = netip.MustParseAddr("198.51.100.1")
)

// target is router id's target in the tests: its own namespace.
func target(id string, gw netip.Addr) GatewayTarget {
	return GatewayTarget{Namespace: "ns-" + id, Device: "qg-" + id, Gateway: gw}
}

// probeCall is one probe the fake answered.
type probeCall struct {
	at time.Time
	ns string
	gw netip.Addr
	ok bool
}

// change is one OnChange call, with the results of the router's probes up
// to then.
type change struct {
	healthy bool
	results []bool
}

// fakeGateways is the network the fake probes ask — a gateway answers if
// it is up, fails the probe if it has an error, and is silent (the probe
// waits its timeout) otherwise — and the recorder of OnChange.
type fakeGateways struct {
	mu      sync.Mutex
	up      map[netip.Addr]bool
	errs    map[netip.Addr]error
	calls   []probeCall
	open    map[string]int // "ns dev" → probes open
	opened  []string       // "ns dev", every Open
	openIDs []string       // the router id of every Open
	changes map[string][]change
}

func newFakeGateways(up ...netip.Addr) *fakeGateways {
	f := &fakeGateways{up: map[netip.Addr]bool{}, errs: map[netip.Addr]error{}, open: map[string]int{}, changes: map[string][]change{}}
	for _, a := range up {
		f.up[a] = true
	}
	return f
}

func (f *fakeGateways) set(gw netip.Addr, up bool) { f.mu.Lock(); f.up[gw] = up; f.mu.Unlock() }

func (f *fakeGateways) Open(routerID, ns, dev string) GatewayProbe {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.open[ns+" "+dev]++
	f.opened = append(f.opened, ns+" "+dev)
	f.openIDs = append(f.openIDs, routerID)
	return &fakeProbe{f: f, key: ns + " " + dev, ns: ns}
}

func (f *fakeGateways) onChange(id string, healthy bool) {
	r := f.results("ns-" + id)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.changes[id] = append(f.changes[id], change{healthy, r})
}

func (f *fakeGateways) changesOf(id string) []change {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.changes[id])
}

func (f *fakeGateways) callsIn(ns string) []probeCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.DeleteFunc(slices.Clone(f.calls), func(c probeCall) bool { return c.ns != ns })
}

// results lists the results of the probes made in ns, in order.
func (f *fakeGateways) results(ns string) []bool {
	var out []bool
	for _, c := range f.callsIn(ns) {
		out = append(out, c.ok)
	}
	return out
}

func (f *fakeGateways) openedList() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.opened)
}

func (f *fakeGateways) openCount(ns, dev string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.open[ns+" "+dev]
}

type fakeProbe struct {
	f       *fakeGateways
	key, ns string
	closed  bool
}

func (p *fakeProbe) Probe(ctx context.Context, gw netip.Addr, timeout time.Duration) (bool, error) {
	p.f.mu.Lock()
	up, err, closed := p.f.up[gw], p.f.errs[gw], p.closed
	p.f.mu.Unlock()
	if closed {
		return false, errors.New("probe used after Close")
	}
	ok := err == nil && up
	if err == nil && !up {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(timeout):
		}
	}
	p.f.mu.Lock()
	p.f.calls = append(p.f.calls, probeCall{at: time.Now(), ns: p.ns, gw: gw, ok: ok})
	p.f.mu.Unlock()
	return ok, err
}

func (p *fakeProbe) Close() error {
	p.f.mu.Lock()
	defer p.f.mu.Unlock()
	if !p.closed {
		p.closed = true
		p.f.open[p.key]--
	}
	return nil
}

// startChecker runs a HealthChecker with f's probes in the bubble; stop
// ends its Run (and so does the test's end).
func startChecker(t *testing.T, cfg HealthCheckConfig, f *fakeGateways) (_ *HealthChecker, stop func()) {
	t.Helper()
	cfg.Open, cfg.OnChange = f.Open, f.onChange
	if cfg.Interval == 0 {
		cfg.Interval = testInterval
	}
	c, err := NewHealthChecker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return c, stop
}

// advance lets d of fake time pass.
func advance(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

// waitResults advances time until ns has had n probes.
func waitResults(t *testing.T, f *fakeGateways, ns string, n int) {
	t.Helper()
	for range 1000 {
		if len(f.results(ns)) >= n {
			return
		}
		advance(testInterval / 10)
	}
	t.Fatalf("%s: %d probes after 100 intervals, want %d", ns, len(f.results(ns)), n)
}

// trailing counts the results at the end of rs equal to v.
func trailing(rs []bool, v bool) int {
	n := 0
	for i := len(rs) - 1; i >= 0 && rs[i] == v; i-- {
		n++
	}
	return n
}

func TestGatewayUnhealthyAfterFallFailures(t *testing.T) {
	// results: '+' a good check, '-' a failed one. states: the state after
	// each, 'H' healthy, 'U' unhealthy.
	// fall and rise 0 are the defaults, 3 and 2, as in the zero value.
	cases := []struct {
		name       string
		fall, rise int
		results    string
		states     string
	}{
		{"starts healthy and stays so", 0, 0, "+++", "HHH"},
		{"fewer than fall failures keep it healthy", 0, 0, "--", "HH"},
		{"fall consecutive failures make it unhealthy", 0, 0, "---", "HHU"},
		{"a success restarts the failure count", 0, 0, "--+--", "HHHHH"},
		{"rise consecutive successes make it healthy again", 0, 0, "---++", "HHUUH"},
		{"a failure restarts the success count", 0, 0, "---+-++", "HHUUUUH"},
		{"failures while unhealthy change nothing", 0, 0, "------", "HHUUUU"},
		{"fall 1 rise 1 follows every result", 1, 1, "-+-+", "UHUH"},
		{"fall 5 rise 3", 5, 3, "-----+++", "HHHHUUUH"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := NewGatewayHealth(c.fall, c.rise)
			if !h.Healthy() {
				t.Fatal("new tracker is unhealthy")
			}
			was := true
			var got strings.Builder
			for i, r := range c.results {
				changed := h.Observe(r == '+')
				if changed != (h.Healthy() != was) {
					t.Fatalf("result %d: Observe reported changed=%v, state went %v → %v", i, changed, was, h.Healthy())
				}
				was = h.Healthy()
				got.WriteString(map[bool]string{true: "H", false: "U"}[h.Healthy()])
			}
			if got.String() != c.states {
				t.Fatalf("states after %s = %s, want %s", c.results, got.String(), c.states)
			}
		})
	}
}

// TestHealthCheckerReportsAfterFallAndRise runs a router whose gateway goes
// silent and comes back: the checker must report unhealthy exactly after
// fall failed probes and healthy after rise good ones, once each.
func TestHealthCheckerReportsAfterFallAndRise(t *testing.T) {
	cases := []struct {
		name             string
		fall, rise       int
		wantFall, wantRi int
		timeout          time.Duration
	}{
		{"defaults", 0, 0, DefaultHealthFall, DefaultHealthRise, 0},
		{"fall 1 rise 1", 1, 1, 1, 1, 200 * time.Millisecond},
		{"fall 4 rise 3", 4, 3, 4, 3, 200 * time.Millisecond},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFakeGateways(gwA)
				chk, _ := startChecker(t, HealthCheckConfig{Fall: c.fall, Rise: c.rise, Timeout: c.timeout}, f)
				chk.Set(map[string]GatewayTarget{"r1": target("r1", gwA)})
				waitResults(t, f, "ns-r1", 5)
				if got := f.changesOf("r1"); len(got) != 0 {
					t.Fatalf("reported %v while the gateway answered", got)
				}

				f.set(gwA, false)
				advance(time.Duration(c.wantFall+3) * testInterval)
				got := f.changesOf("r1")
				if len(got) != 1 || got[0].healthy {
					t.Fatalf("reports after the gateway went silent = %+v, want one unhealthy", got)
				}
				if n := trailing(got[0].results, false); n != c.wantFall {
					t.Fatalf("unhealthy reported after %d failed probes, want %d", n, c.wantFall)
				}
				if chk.Healthy("r1") {
					t.Fatal("Healthy(r1) = true after the report")
				}

				f.set(gwA, true)
				advance(time.Duration(c.wantRi+3) * testInterval)
				got = f.changesOf("r1")
				if len(got) != 2 || !got[1].healthy {
					t.Fatalf("reports after the gateway came back = %+v, want unhealthy then healthy", got)
				}
				if n := trailing(got[1].results, true); n != c.wantRi {
					t.Fatalf("healthy reported after %d good probes, want %d", n, c.wantRi)
				}
			})
		})
	}
}

// TestHealthCheckerReportsOnlyChanges runs routers whose gateways answer,
// stay silent, or cannot be probed (errors count as failures) for 30
// intervals: one report for each that is not healthy, none for the others.
func TestHealthCheckerReportsOnlyChanges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		erring := netip.MustParseAddr("192.0.2.1")
		f := newFakeGateways(gwA)
		f.errs[erring] = errors.New("device qg-erring is down")
		chk, _ := startChecker(t, HealthCheckConfig{}, f)
		chk.Set(map[string]GatewayTarget{"up": target("up", gwA), "silent": target("silent", gwB), "erring": target("erring", erring)})
		advance(30 * testInterval)
		for id, want := range map[string]int{"up": 0, "silent": 1, "erring": 1} {
			if got := f.changesOf(id); len(got) != want || (want == 1 && got[0].healthy) {
				t.Errorf("%s reported %+v, want %d unhealthy", id, got, want)
			}
			if n := len(f.results("ns-" + id)); n < 25 {
				t.Errorf("%s probed only %d times in 30 intervals", id, n)
			}
		}
	})
}

func TestHealthCheckerStopsCheckingARemovedRouter(t *testing.T) {
	cases := []struct {
		name    string
		gateway netip.Addr // of the router removed; gwA answers
		// wantReport: the removed router is reported healthy (it was
		// unhealthy: no longer checked, no longer penalised).
		wantReport bool
	}{
		{"healthy router removed silently", gwA, false},
		{"unhealthy router removed is reported healthy", gwB, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFakeGateways(gwA)
				chk, _ := startChecker(t, HealthCheckConfig{Timeout: 100 * time.Millisecond}, f)
				chk.Set(map[string]GatewayTarget{"keep": target("keep", gwA), "gone": target("gone", c.gateway)})
				advance(10 * testInterval)
				before := len(f.changesOf("gone"))

				chk.Set(map[string]GatewayTarget{"keep": target("keep", gwA)})
				synctest.Wait()
				n, kept := len(f.results("ns-gone")), len(f.results("ns-keep"))
				advance(10 * testInterval)
				if got := len(f.results("ns-gone")); got != n {
					t.Errorf("removed router probed %d more times", got-n)
				}
				if got := len(f.results("ns-keep")); got < kept+9 {
					t.Errorf("remaining router probed %d times in 10 intervals", got-kept)
				}
				if open := f.openCount("ns-gone", "qg-gone"); open != 0 {
					t.Errorf("removed router's probe still open (%d)", open)
				}
				after := f.changesOf("gone")[before:]
				if c.wantReport != (len(after) == 1 && after[0].healthy) || len(after) > 1 {
					t.Errorf("reports on removal = %+v, want healthy reported: %v", after, c.wantReport)
				}
				if !chk.Healthy("gone") {
					t.Error("a router not checked is unhealthy")
				}
			})
		})
	}
}

func TestHealthCheckerRechecksAChangedGatewayFromScratch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const fall = 3
		f := newFakeGateways()
		chk, _ := startChecker(t, HealthCheckConfig{Fall: fall, Timeout: 100 * time.Millisecond}, f)
		chk.Set(map[string]GatewayTarget{"r1": target("r1", gwA)}) // silent
		waitResults(t, f, "ns-r1", fall-1)
		if len(f.changesOf("r1")) != 0 {
			t.Fatal("reported before fall failures")
		}

		// One more failure would have tipped gwA over; gwB starts at zero.
		chk.Set(map[string]GatewayTarget{"r1": target("r1", gwB)}) // silent too
		synctest.Wait()
		waitResults(t, f, "ns-r1", fall-1+fall)
		got := f.changesOf("r1")
		if len(got) != 1 || got[0].healthy {
			t.Fatalf("reports = %+v, want one unhealthy", got)
		}
		var onB int
		for _, c := range f.callsIn("ns-r1") {
			if c.gw == gwB {
				onB++
			}
		}
		if onB != fall {
			t.Fatalf("unhealthy after %d probes of the new gateway, want %d (fresh counters)", onB, fall)
		}
		if opened := f.openedList(); len(opened) != 2 {
			t.Fatalf("probes opened: %v, want one per target", opened)
		}

		// Unhealthy on gwB, moved to an answering gateway: reported healthy
		// at once (a new target starts healthy), and nothing after.
		f.set(gwA, true)
		chk.Set(map[string]GatewayTarget{"r1": target("r1", gwA)})
		advance(10 * testInterval)
		got = f.changesOf("r1")
		if len(got) != 2 || !got[1].healthy {
			t.Fatalf("reports after moving to a good gateway = %+v, want unhealthy, healthy", got)
		}
		if n := trailing(got[1].results, true); n >= DefaultHealthRise {
			t.Fatalf("healthy reported after %d good probes of the new gateway, want at once", n)
		}
	})
}

func TestHealthCheckerIntervalZeroChecksNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeGateways()
		c, err := NewHealthChecker(HealthCheckConfig{Open: f.Open, OnChange: func(string, bool) { t.Error("OnChange called") }})
		if err != nil {
			t.Fatal(err)
		}
		if c.Enabled() {
			t.Fatal("Enabled with interval 0")
		}
		c.Set(map[string]GatewayTarget{"r1": target("r1", gwA)})
		if err := c.Run(t.Context()); err != nil {
			t.Fatal(err)
		}
		advance(10 * testInterval)
		if opened := f.openedList(); len(opened) != 0 {
			t.Fatalf("probes opened: %v", opened)
		}
	})
}

func TestHealthCheckerSkipsRoutersWithoutAnIPv4Gateway(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeGateways()
		chk, _ := startChecker(t, HealthCheckConfig{}, f)
		chk.Set(map[string]GatewayTarget{
			"none":   target("none", netip.Addr{}),
			"zero":   target("zero", netip.IPv4Unspecified()),
			"ipv6":   target("ipv6", netip.MustParseAddr("2001:db8::1")),
			"no-dev": {Namespace: "ns-no-dev", Gateway: gwA},
			"mapped": target("mapped", netip.AddrFrom16(gwA.As16())),
		})
		advance(5 * testInterval)
		if want, opened := []string{"ns-mapped qg-mapped"}, f.openedList(); !slices.Equal(opened, want) {
			t.Fatalf("probes opened: %v, want %v", opened, want)
		}
		if calls := f.callsIn("ns-mapped"); len(calls) == 0 || calls[0].gw != gwA {
			t.Fatalf("IPv4-mapped gateway probed as %v, want %v", calls, gwA)
		}
	})
}

// TestHealthCheckerOpensProbesWithTheRouterID: Open gets the router's id
// with its device, for the probe MAC of that router on this node.
func TestHealthCheckerOpensProbesWithTheRouterID(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeGateways(gwA)
		chk, _ := startChecker(t, HealthCheckConfig{}, f)
		chk.Set(map[string]GatewayTarget{"r1": target("r1", gwA), "r2": target("r2", gwB)})
		advance(2 * testInterval)
		f.mu.Lock()
		defer f.mu.Unlock()
		got := map[string]string{}
		for i, id := range f.openIDs {
			got[id] = f.opened[i]
		}
		want := map[string]string{"r1": "ns-r1 qg-r1", "r2": "ns-r2 qg-r2"}
		if len(f.openIDs) != 2 || !maps.Equal(got, want) {
			t.Fatalf("Open calls (router id → ns dev) = %v, want %v", got, want)
		}
	})
}

func TestHealthCheckerSpreadsProbesOverTheInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const routers = 20
		f := newFakeGateways(gwA)
		chk, _ := startChecker(t, HealthCheckConfig{}, f)
		start := time.Now()
		targets := map[string]GatewayTarget{}
		for i := range routers {
			id := fmt.Sprintf("router-%02d", i)
			targets[id] = target(id, gwA)
		}
		chk.Set(targets)
		advance(5*testInterval + testInterval/2)
		firsts := map[time.Duration]bool{}
		for id := range targets {
			calls := f.callsIn("ns-" + id)
			if len(calls) < 5 {
				t.Fatalf("%s probed %d times in 5.5 intervals", id, len(calls))
			}
			first := calls[0].at.Sub(start)
			if first < 0 || first >= testInterval {
				t.Errorf("%s first probed after %v, want within the first interval", id, first)
			}
			firsts[first] = true
			for i := 1; i < len(calls); i++ {
				if d := calls[i].at.Sub(calls[i-1].at); d != testInterval {
					t.Errorf("%s: probes %d and %d %v apart, want %v", id, i-1, i, d, testInterval)
				}
			}
		}
		if len(firsts) < routers*3/4 {
			t.Errorf("%d routers' first probes at only %d distinct times: not spread", routers, len(firsts))
		}
	})
}

func TestHealthCheckerRunEndClosesEveryProbe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeGateways(gwA)
		chk, stop := startChecker(t, HealthCheckConfig{}, f)
		chk.Set(map[string]GatewayTarget{"a": target("a", gwA), "b": target("b", gwB)})
		advance(3 * testInterval)
		stop()
		for _, k := range []string{"a", "b"} {
			if n := f.openCount("ns-"+k, "qg-"+k); n != 0 {
				t.Errorf("router %s: %d probes open after Run returned", k, n)
			}
		}
		// Set after Run is harmless and starts nothing; Run runs once.
		chk.Set(map[string]GatewayTarget{"c": target("c", gwA)})
		advance(3 * testInterval)
		if slices.Contains(f.openedList(), "ns-c qg-c") {
			t.Error("Set after Run opened a probe")
		}
		if err := chk.Run(t.Context()); err == nil {
			t.Error("second Run accepted")
		}
	})
}

func TestHealthCheckerLogsChangesWithTheRouterFields(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var buf bytes.Buffer // written by Run's goroutines, read once Run has returned
		f := newFakeGateways()
		chk, stop := startChecker(t, HealthCheckConfig{Logger: slog.New(slog.NewJSONHandler(&buf, nil))}, f)
		chk.Set(map[string]GatewayTarget{"r1": target("r1", gwA)})
		advance(10 * testInterval)
		stop()
		var found bool
		for line := range strings.Lines(buf.String()) {
			var rec map[string]any
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatalf("log line %q: %v", line, err)
			}
			if rec["msg"] != "gateway unhealthy" {
				continue
			}
			found = true
			for k, want := range map[string]string{"router_id": "r1", "gateway": gwA.String(), "device": "qg-r1", "level": "WARN"} {
				if rec[k] != want {
					t.Errorf("%s = %v, want %s", k, rec[k], want)
				}
			}
		}
		if !found {
			t.Fatalf("no unhealthy line in the log:\n%s", buf.String())
		}
	})
}

func TestNewHealthCheckerRejectsBadConfig(t *testing.T) {
	open := func(string, string, string) GatewayProbe { return nil }
	for name, cfg := range map[string]HealthCheckConfig{
		"negative interval":       {Interval: -time.Second, Open: open},
		"negative fall":           {Interval: time.Second, Fall: -1, Open: open},
		"negative timeout":        {Interval: time.Second, Timeout: -1, Open: open},
		"enabled without a probe": {Interval: time.Second},
	} {
		if _, err := NewHealthChecker(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestGatewayTargetsAreTheHARoutersDefaultGateways(t *testing.T) {
	def := netip.MustParsePrefix("0.0.0.0/0")
	ha := &HARouter{}
	p := Plan{Routers: []RouterPlan{
		{ID: "ha-gw", Namespace: "qrouter-ha-gw", HA: ha, Routes: []DevRoute{
			{Dst: netip.MustParsePrefix("10.0.0.0/8"), Gateway: netip.MustParseAddr("10.1.1.1")},
			{Dst: def, Gateway: gwA, Dev: "qg-1"},
		}},
		{ID: "legacy", Namespace: "qrouter-legacy", Routes: []DevRoute{{Dst: def, Gateway: gwA, Dev: "qg-2"}}},
		{ID: "ha-no-gw", Namespace: "qrouter-ha-no-gw", HA: ha},
		{ID: "ha-extra-default", Namespace: "qrouter-x", HA: ha, Routes: []DevRoute{{Dst: def, Gateway: gwB}}},
	}}
	got := GatewayTargets(p)
	want := map[string]GatewayTarget{"ha-gw": {Namespace: "qrouter-ha-gw", Device: "qg-1", Gateway: gwA}}
	if len(got) != len(want) || got["ha-gw"] != want["ha-gw"] {
		t.Fatalf("GatewayTargets = %+v, want %+v", got, want)
	}
}
