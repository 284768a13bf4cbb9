package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// simMasterSlack is how far from the mean (routers/agents) the masters of
// one agent may be in a small simulation (see checkSimResult).
const simMasterSlack = 2

// checkSimResult checks what a small simulation must show whatever the
// machine's load: every router on its agents, a balanced schedule, latencies
// measured, a server that used memory.
func checkSimResult(t *testing.T, r *SimResult, agents, routers, perRouter int) {
	t.Helper()
	if r.Agents != agents || r.Routers != routers {
		t.Errorf("result for %d agents, %d routers; want %d, %d", r.Agents, r.Routers, agents, routers)
	}
	if r.CreateErrors != 0 || r.Unscheduled != 0 {
		t.Errorf("%d create errors, %d routers unscheduled", r.CreateErrors, r.Unscheduled)
	}
	if r.CreatePerS <= 0 || r.CreateP50MS <= 0 || r.CreateP99MS < r.CreateP50MS || r.TotalCreateS <= 0 {
		t.Errorf("create figures: %.1f/s, p50 %.2f ms, p99 %.2f ms, total %.2f s", r.CreatePerS, r.CreateP50MS, r.CreateP99MS, r.TotalCreateS)
	}
	// Least-routers scheduling with serialized creates keeps every agent
	// within one router of the others.
	want := routers * perRouter / agents
	if r.RoutersPerAgentMin < want-1 || r.RoutersPerAgentMax > want+1 || r.RoutersPerAgentMax-r.RoutersPerAgentMin > 1 {
		t.Errorf("routers per agent %d..%d, want about %d", r.RoutersPerAgentMin, r.RoutersPerAgentMax, want)
	}
	// Masters: a new router's binding index 1 (the fake data plane's
	// master) goes to the one of its chosen agents with the fewest masters
	// (ha.FewestMastersFirst). So the agent with the fewest masters overall
	// takes the master of every router it is chosen for, and one with the
	// most takes one only when all of the router's agents tie with it;
	// least-routers scheduling chooses every agent for about perRouter of
	// every `agents` routers, so the counts cannot drift apart. Replayed
	// over 20000 random tie-breaks, the scheduler's choices (ChooseAgents,
	// then FewestMastersFirst) keep 5 agents with 50 routers of 2 or 3
	// agents within 1 of the mean (other shapes, e.g. 7 agents and 2 per
	// router, within 2): hence ±simMasterSlack. Every master on one agent,
	// or masters following the least-loaded agents' random order, is far
	// outside it.
	mean := float64(routers) / float64(agents)
	if float64(r.MastersPerAgentMax) > mean+simMasterSlack || float64(r.MastersPerAgentMin) < mean-simMasterSlack {
		t.Errorf("masters per agent %d..%d: not spread around the mean of %.1f (want within ±%d)",
			r.MastersPerAgentMin, r.MastersPerAgentMax, mean, simMasterSlack)
	}
	if r.HAStatesChecked == 0 || r.HAStatesWrong != 0 {
		t.Errorf("ha_state: %d routers checked, %d wrong", r.HAStatesChecked, r.HAStatesWrong)
	}
	if r.ChangeSamples == 0 || r.ChangeP50MS <= 0 || r.ChangeP99MS < r.ChangeP50MS || r.ChangeFirstP50MS <= 0 {
		t.Errorf("change figures: %d samples, p50 %.2f ms, p99 %.2f ms", r.ChangeSamples, r.ChangeP50MS, r.ChangeP99MS)
	}
	if r.CreateToAgentsP50MS <= 0 || r.ConvergeS < 0 {
		t.Errorf("create to agents p50 %.2f ms, converge %.2f s", r.CreateToAgentsP50MS, r.ConvergeS)
	}
	if r.ServerRSSMiB <= 1 || r.ServerPeakRSSMiB < r.ServerRSSMiB || r.ServerIdleRSSMiB <= 1 {
		t.Errorf("server RSS %.1f MiB, peak %.1f, idle %.1f", r.ServerRSSMiB, r.ServerPeakRSSMiB, r.ServerIdleRSSMiB)
	}
	if r.AgentApplies < int64(agents) {
		t.Errorf("%d applies by %d agents", r.AgentApplies, agents)
	}
	var table bytes.Buffer
	if err := r.WriteTable(&table); err != nil || !strings.Contains(table.String(), "create throughput") {
		t.Errorf("table: %v\n%s", err, table.String())
	}
	var js bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(js.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"agents", "routers", "create_per_s", "create_p50_ms", "create_p99_ms", "total_create_s",
		"routers_per_agent_min", "routers_per_agent_max", "masters_per_agent_min", "masters_per_agent_max",
		"change_p50_ms", "change_p99_ms", "converge_s", "server_rss_mib", "server_peak_rss_mib"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON has no %q", k)
		}
	}
	t.Logf("%s", table.String())
}

// TestSimulateInProcess runs a small simulation with the server in this
// process: the whole path (agents, creates, convergence, balance, changes)
// without a binary.
func TestSimulateInProcess(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out bytes.Buffer
	r, err := Simulate(ctx, SimulateOptions{
		Agents: 5, Routers: 50, Concurrency: 4, Changes: 10, Projects: 2, MaxAgentsPerRouter: 3, InProcess: true,
		Dir: t.TempDir(), Timeout: 60 * time.Second, Out: &out,
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	checkSimResult(t, r, 5, 50, 3)
	if r.ServerMode != "in-process" || len(r.Notes) == 0 {
		t.Errorf("server mode %q, notes %q", r.ServerMode, r.Notes)
	}
}

// TestSimulateChild runs it as `l3ha lab simulate` does: the server a child
// process of the l3ha binary, its RSS read from /proc.
func TestSimulateChild(t *testing.T) {
	bin := labBinary
	if bin == "" {
		bin = os.Getenv("L3HA_LAB_TEST_BINARY")
	}
	if bin == "" {
		if buildErr != nil {
			t.Fatal(buildErr)
		}
		t.Skip("no l3ha binary (TestMain builds one as root without -short, or set L3HA_LAB_TEST_BINARY)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out bytes.Buffer
	r, err := Simulate(ctx, SimulateOptions{
		Agents: 5, Routers: 50, Concurrency: 4, Changes: 10, MaxAgentsPerRouter: 2, Binary: bin,
		Dir: t.TempDir(), Timeout: 60 * time.Second, Out: &out,
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	checkSimResult(t, r, 5, 50, 2)
	if r.ServerMode != "child" || r.ServerCPUS <= 0 || r.DatabaseMiB <= 0 {
		t.Errorf("server mode %q, CPU %.2f s, database %.2f MiB", r.ServerMode, r.ServerCPUS, r.DatabaseMiB)
	}
}

func TestSimHelpers(t *testing.T) {
	status := []byte("Name:\tl3ha\nVmHWM:\t  20480 kB\nVmRSS:\t   10240 kB\n")
	if got := simStatusKB(status, "VmRSS:"); got != 10240 {
		t.Errorf("VmRSS %v", got)
	}
	if got := simStatusKB(status, "VmHWM:"); got != 20480 {
		t.Errorf("VmHWM %v", got)
	}
	stat := []byte("123 (l3ha server) S 1 123 123 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 10 0 100 0 0")
	if got := simStatCPU(stat); got != 3 {
		t.Errorf("cpu %v, want 3", got)
	}
	lo, hi, sd := simSpread([]int{2, 4, 4, 4, 5, 5, 7, 9})
	if lo != 2 || hi != 9 || sd != 2 {
		t.Errorf("spread %d %d %v", lo, hi, sd)
	}
	d := []time.Duration{5, 1, 4, 2, 3}
	if simPercentile(d, 50) != 3 || simPercentile(d, 99) != 5 || simPercentile(nil, 50) != 0 {
		t.Errorf("percentiles %v %v", simPercentile(d, 50), simPercentile(d, 99))
	}
}
