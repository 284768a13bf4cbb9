package lab

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestPercentileNearestRank(t *testing.T) {
	ten := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, c := range []struct {
		vals []float64
		p    float64
		want float64
	}{
		{ten, 50, 5}, {ten, 95, 10}, {ten, 90, 9}, {ten, 10, 1}, {ten, 100, 10}, {ten, 1, 1},
		{[]float64{7}, 50, 7}, {[]float64{7}, 95, 7},
		{[]float64{1, 2}, 50, 1}, {[]float64{1, 2}, 51, 2},
		// 500 values 1..500: p50 is the 250th, p95 the 475th.
		{seq(500), 50, 250}, {seq(500), 95, 475},
	} {
		if got := percentile(c.vals, c.p); got != c.want {
			t.Errorf("percentile(%d values, %g) = %g, want %g", len(c.vals), c.p, got, c.want)
		}
	}
	if !math.IsNaN(percentile(nil, 50)) {
		t.Error("percentile of nothing: want NaN")
	}
}

func seq(n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = float64(i + 1)
	}
	return out
}

func ms(v ...int) []time.Duration {
	out := make([]time.Duration, len(v))
	for i, x := range v {
		out[i] = time.Duration(x) * time.Millisecond
	}
	return out
}

func TestAggregate(t *testing.T) {
	// Unordered input, millisecond rounding.
	st := aggregate([]time.Duration{400 * time.Millisecond, 380*time.Millisecond + 400*time.Microsecond, 700 * time.Millisecond, 390 * time.Millisecond})
	if st.Moved != 4 || *st.P50 != 0.39 || *st.P95 != 0.7 || *st.Max != 0.7 || st.AllMoved == nil || *st.AllMoved != 0.7 {
		t.Errorf("aggregate = %+v", st)
	}
	// A router that did not move: the others still have percentiles, but
	// there is no time until all moved.
	st = aggregate(ms(100, -1, 300))
	if st.Moved != 2 || st.AllMoved != nil || *st.Max != 0.3 || *st.P50 != 0.1 {
		t.Errorf("aggregate with one unmoved = %+v", st)
	}
	st = aggregate(ms(-1, -1))
	if st.Moved != 0 || st.P50 != nil || st.Max != nil || st.AllMoved != nil {
		t.Errorf("aggregate with none moved = %+v", st)
	}
	// Zero (no outage) is a time.
	st = aggregate(ms(0))
	if st.AllMoved == nil || *st.AllMoved != 0 {
		t.Errorf("aggregate(0) = %+v", st)
	}
	b, _ := json.Marshal(aggregate(ms(-1)))
	if string(b) != `{"p50_s":null,"p95_s":null,"max_s":null,"all_moved_s":null,"moved":0}` {
		t.Errorf("JSON of nothing moved: %s", b)
	}
}

func TestAnalyzeProbes(t *testing.T) {
	const t0 = 1000 * time.Millisecond
	cutoff := 5000 * time.Millisecond
	// Probes every 100 ms from 0.7 s; a reply 2 ms after each, except those
	// sent in [1.0 s, 1.4 s] (the outage).
	var sent, recv []time.Duration
	for at := 700 * time.Millisecond; at <= 2000*time.Millisecond; at += 100 * time.Millisecond {
		sent = append(sent, at)
		if at >= t0 && at <= 1400*time.Millisecond {
			recv = append(recv, 0)
		} else {
			recv = append(recv, at+2*time.Millisecond)
		}
	}
	out := analyzeProbes(sent, recv, t0, cutoff)
	if out.lost != 5 || out.sent != 11 || out.recovered != 502*time.Millisecond {
		t.Errorf("outage: %+v, want 5 lost of 11, recovered after 502ms", out)
	}
	// A lone late loss moves recovery to the reply after it: a probe lost
	// later is an outage too.
	recv2 := append([]time.Duration{}, recv...)
	recv2[len(recv2)-3] = 0 // the probe sent at 1.8 s
	out = analyzeProbes(sent, recv2, t0, cutoff)
	if out.lost != 6 || out.recovered != 902*time.Millisecond {
		t.Errorf("late loss: %+v, want 6 lost, recovered after 902ms", out)
	}
	// Probes too recent to judge are neither sent nor lost.
	out = analyzeProbes(sent, recv2, t0, 1850*time.Millisecond)
	if out.sent != 9 || out.lost != 6 {
		t.Errorf("cutoff: %+v, want 9 sent and 6 lost", out)
	}
	// No loss at all: recovered at once.
	ok := make([]time.Duration, len(sent))
	for i := range sent {
		ok[i] = sent[i] + time.Millisecond
	}
	if out := analyzeProbes(sent, ok, t0, cutoff); out.lost != 0 || out.recovered != 0 {
		t.Errorf("no loss: %+v", out)
	}
	// Never answered again.
	none := make([]time.Duration, len(sent))
	if out := analyzeProbes(sent, none, t0, cutoff); out.recovered != -1 || out.lost != 11 {
		t.Errorf("never answered: %+v", out)
	}
	// Replies out of order: the earliest reply after the last loss counts.
	s3 := ms(1000, 1100, 1200, 1300)
	r3 := []time.Duration{0, 1500 * time.Millisecond, 1400 * time.Millisecond, 1450 * time.Millisecond}
	if out := analyzeProbes(s3, r3, t0, cutoff); out.recovered != 400*time.Millisecond {
		t.Errorf("out of order: %+v, want recovered after 400ms", out)
	}
}

func TestProbeInterval(t *testing.T) {
	for _, c := range []struct {
		n, rate int
		want    time.Duration
	}{
		{1, 5000, 10 * time.Millisecond}, {10, 5000, 10 * time.Millisecond}, {50, 5000, 10 * time.Millisecond},
		{100, 5000, 20 * time.Millisecond}, {500, 5000, 100 * time.Millisecond}, {500, 10000, 50 * time.Millisecond},
	} {
		if got := probeInterval(c.n, c.rate); got != c.want {
			t.Errorf("probeInterval(%d, %d) = %v, want %v", c.n, c.rate, got, c.want)
		}
	}
}

// ifaddrMsg builds an RTM_NEWADDR payload: ifaddrmsg and attributes.
func ifaddrMsg(family byte, attrs map[uint16][]byte) []byte {
	b := make([]byte, unix.SizeofIfAddrmsg)
	b[0] = family
	b[1] = 24
	for _, typ := range []uint16{unix.IFA_ADDRESS, unix.IFA_LOCAL} {
		v, ok := attrs[typ]
		if !ok {
			continue
		}
		a := make([]byte, 4, 8)
		binary.NativeEndian.PutUint16(a[0:], uint16(4+len(v)))
		binary.NativeEndian.PutUint16(a[2:], typ)
		a = append(a, v...)
		for len(a)%4 != 0 {
			a = append(a, 0)
		}
		b = append(b, a...)
	}
	return b
}

func TestParseIfAddr(t *testing.T) {
	local, peer := []byte{172, 24, 16, 10}, []byte{10, 0, 0, 9}
	if a, ok := parseIfAddr(ifaddrMsg(unix.AF_INET, map[uint16][]byte{unix.IFA_ADDRESS: peer, unix.IFA_LOCAL: local})); !ok || a != netip.MustParseAddr("172.24.16.10") {
		t.Errorf("IFA_LOCAL wins: %v %v", a, ok)
	}
	if a, ok := parseIfAddr(ifaddrMsg(unix.AF_INET, map[uint16][]byte{unix.IFA_ADDRESS: local})); !ok || a != netip.MustParseAddr("172.24.16.10") {
		t.Errorf("IFA_ADDRESS alone: %v %v", a, ok)
	}
	if _, ok := parseIfAddr(ifaddrMsg(unix.AF_INET6, map[uint16][]byte{unix.IFA_ADDRESS: make([]byte, 16)})); ok {
		t.Error("IPv6 accepted")
	}
	if _, ok := parseIfAddr([]byte{2, 24}); ok {
		t.Error("short message accepted")
	}
}

func TestAddrStateHolds(t *testing.T) {
	gw, vip, other := netip.MustParseAddr("172.24.16.10"), netip.MustParseAddr("169.254.0.7"), netip.MustParseAddr("169.254.192.3")
	base := time.Unix(1000, 0)
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	w := &addrWatch{routers: []*addrState{{gw: gw, present: map[netip.Addr]bool{}}}}
	st := w.routers[0]
	st.set(other, true, at(0)) // the ha- address: irrelevant
	st.set(gw, true, at(100))  // the gateway alone is not a master's set
	if st.holds() {
		t.Fatal("holds without a VIP")
	}
	t0 := at(200)
	if _, ok := w.firstHold(0, t0); ok {
		t.Fatal("moved before anything happened")
	}
	st.set(vip, true, at(580))
	if tv, ok := w.firstHold(0, t0); !ok || !tv.Equal(at(580)) {
		t.Errorf("firstHold = %v %v, want 580ms", tv, ok)
	}
	if w.flapped(0, t0) {
		t.Error("flapped without losing anything")
	}
	st.set(vip, false, at(900))
	st.set(vip, true, at(950))
	if !w.flapped(0, t0) {
		t.Error("lost and regained its VIP: want flapped")
	}
	if tv, _ := w.firstHold(0, t0); !tv.Equal(at(580)) {
		t.Errorf("firstHold after a flap = %v, want the first time (580ms)", tv)
	}
	// Held already at t0: t0 itself.
	if tv, ok := w.firstHold(0, at(600)); !ok || !tv.Equal(at(600)) {
		t.Errorf("held at t0: %v %v", tv, ok)
	}
}

func TestParseBenchConfigs(t *testing.T) {
	cs, err := ParseBenchConfigs("native:0.1, keepalived:2,keepalived:2:254")
	if err != nil {
		t.Fatal(err)
	}
	want := []BenchConfig{{"native", "0.1", 0}, {"keepalived", "2", 0}, {"keepalived", "2", 254}}
	if len(cs) != len(want) {
		t.Fatalf("got %v", cs)
	}
	for i := range want {
		if cs[i] != want[i] {
			t.Errorf("config %d = %+v, want %+v", i, cs[i], want[i])
		}
	}
	o := cs[2].options(Options{HARoutersPerNetwork: 1})
	if o.HADriver != "keepalived" || o.AdvertInt != "2" || o.HARoutersPerNetwork != 254 {
		t.Errorf("options = %+v", o)
	}
	for _, bad := range []string{"vrrpd:1", "native", "native:0", "native:x", "native:1:0", "native:1:255", "native:1:2:3"} {
		if _, err := ParseBenchConfigs(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestParseStatCPU(t *testing.T) {
	// Fields 14 and 15 (utime, stime) are 250 and 150 ticks; the command
	// name holds a space and a parenthesis.
	stat := "4242 (l3ha (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 12 0 5000 0 0"
	cpu, err := parseStatCPU([]byte(stat))
	if err != nil || cpu != 4.0 {
		t.Errorf("parseStatCPU = %v, %v; want 4 s", cpu, err)
	}
	if _, err := parseStatCPU([]byte("1 (x) S 1 2")); err == nil {
		t.Error("short stat accepted")
	}
}

func TestBenchResultsTables(t *testing.T) {
	r := &BenchResults{Machine: Machine{CPUs: 2, Kernel: "6.1.0", Date: time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)}, Failover: sampleFailoverResults(),
		Converge: []BenchConvergeResult{{Routers: 500, Driver: "keepalived", AdvertInt: 2, NamespacesS: ptr(20), VRRPS: ptr(21), MasterS: ptr(28), APIS: ptr(29),
			ConvergedS: ptr(29), Agent: ProcUsage{Processes: 1, RSSKB: 60 << 10}, Keepalived: &ProcUsage{Processes: 1000, RSSKB: 6 << 20}}}}
	var buf bytes.Buffer
	if err := r.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| 500 | native | 0.1s (v0) | 1 | - / - / - |", "0.500 / 0.900 / 0.900", "error: boom", "| 500 | keepalived | 2s | 0 | 20.000 s |", "6144 MiB (1000 procs)"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("tables lack %q:\n%s", want, buf.String())
		}
	}
	// JSON round trip of the file.
	path := filepath.Join(t.TempDir(), "results.json")
	if err := writeJSONFile(path, r); err != nil {
		t.Fatal(err)
	}
	back, err := ReadBenchResults(path)
	if err != nil || len(back.Failover) != len(r.Failover) || *back.Converge[0].APIS != 29 {
		t.Errorf("round trip: %v %+v", err, back)
	}
}

func TestBenchFailoverResultJSON(t *testing.T) {
	r := BenchFailoverResult{Routers: 10, Driver: "native", Fault: FaultNode, AdvertInt: 0.1, LostProbes: 3,
		VIP: aggregate(ms(380, 390)), Dataplane: aggregate(ms(400, 410)), API: aggregate(ms(600, -1))}
	var buf bytes.Buffer
	if err := r.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"routers", "driver", "fault", "advert_int", "lost_probes"} {
		if _, ok := m[k]; !ok {
			t.Errorf("no %q in %s", k, buf.String())
		}
	}
	for _, view := range []string{"vip", "dataplane", "api"} {
		v, ok := m[view].(map[string]any)
		if !ok {
			t.Fatalf("no object %q in %s", view, buf.String())
		}
		for _, k := range []string{"p50_s", "p95_s", "max_s", "all_moved_s"} {
			if _, ok := v[k]; !ok {
				t.Errorf("%s has no %q", view, k)
			}
		}
	}
	if m["api"].(map[string]any)["all_moved_s"] != nil {
		t.Error("api all_moved_s should be null: one router did not move")
	}
}

// benchLabOptions are the options of a benchmark lab of one test: a unique
// name, a directory in the test's temporary directory.
func benchTestOptions(t *testing.T, driver, advert string) Options {
	return Options{Name: "bt" + randomHex(3), Dir: filepath.Join(t.TempDir(), "lab"), Binary: labBinary, Out: tWriter{t},
		HADriver: driver, AdvertInt: advert}
}

// checkBenchLabGone fails the test if anything of lab name is left.
func checkBenchLabGone(t *testing.T, name string) {
	t.Helper()
	if left := labLeftovers(name, nil); len(left) > 0 {
		t.Errorf("lab %s: left after the benchmark: %v", name, left)
	}
}

func checkStats(t *testing.T, view string, s BenchStats, n int) {
	t.Helper()
	if s.Moved != n || s.AllMoved == nil || s.P50 == nil || s.P95 == nil || s.Max == nil {
		t.Errorf("%s: %d of %d moved (%+v); want every router moved", view, s.Moved, n, s)
		return
	}
	if !(*s.P50 <= *s.P95 && *s.P95 <= *s.Max && *s.Max == *s.AllMoved && *s.P50 >= 0) {
		t.Errorf("%s: p50 %g, p95 %g, max %g, all moved %g: not ordered", view, *s.P50, *s.P95, *s.Max, *s.AllMoved)
	}
}

// TestBenchFailoverHarness runs `lab bench failover` (node fault) for 1 and
// 10 routers with both drivers at 0.1 s adverts (VRRPv3), and `lab bench
// converge` for 10 routers: it checks that the harness works — the
// result's structure, every router moved in every view, the lab gone
// afterwards — not the numbers.
func TestBenchFailoverHarness(t *testing.T) {
	needE2E(t)
	for _, driver := range []string{"native", "keepalived"} {
		for _, n := range []int{1, 10} {
			t.Run(fmt.Sprintf("failover-%s-%d", driver, n), func(t *testing.T) {
				o := benchTestOptions(t, driver, "0.1")
				res, err := BenchFailover(t.Context(), BenchFailoverOptions{Options: o, Routers: n, Settle: 500 * time.Millisecond})
				checkBenchLabGone(t, o.Name)
				if err != nil {
					t.Fatal(err)
				}
				var buf bytes.Buffer
				_ = res.WriteTable(&buf)
				t.Logf("\n%s", buf.String())
				if res.Routers != n || res.Driver != driver || res.Fault != FaultNode || res.AdvertInt != 0.1 || res.VRRPVersion != 3 {
					t.Errorf("result header: %+v", res)
				}
				if res.MasterBefore != benchMaster || res.MasterAfter != benchTaker {
					t.Errorf("masters %q → %q, want %s → %s", res.MasterBefore, res.MasterAfter, benchMaster, benchTaker)
				}
				checkStats(t, "vip", res.VIP, n)
				checkStats(t, "dataplane", res.Dataplane, n)
				checkStats(t, "api", res.API, n)
				if res.ProbesSent == 0 || res.LostProbes > res.ProbesSent {
					t.Errorf("probes: %d lost of %d sent", res.LostProbes, res.ProbesSent)
				}
				// Notes report what the machine did meanwhile (input
				// backlog drops anywhere on it, say): logged, not judged.
				if res.Flaps != 0 || res.Error != "" {
					t.Errorf("flaps %d, error %q, notes %q", res.Flaps, res.Error, res.Notes)
				} else if len(res.Notes) > 0 {
					t.Logf("notes: %q", res.Notes)
				}
			})
		}
	}
	t.Run("converge-native-10", func(t *testing.T) {
		o := benchTestOptions(t, "native", "0.1")
		res, err := BenchConverge(t.Context(), BenchConvergeOptions{Options: o, Routers: 10, IdleWindow: time.Second})
		checkBenchLabGone(t, o.Name)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		_ = res.WriteTable(&buf)
		t.Logf("\n%s", buf.String())
		for name, v := range map[string]*float64{"namespaces": res.NamespacesS, "vrrp": res.VRRPS, "master": res.MasterS, "api": res.APIS, "converged": res.ConvergedS} {
			if v == nil || *v < 0 {
				t.Errorf("%s: %v, want a time", name, v)
			}
		}
		if res.Agent.Processes != 1 || res.Agent.RSSKB <= 0 || res.Agent.CPUS <= 0 {
			t.Errorf("agent usage %+v", res.Agent)
		}
	})
}
