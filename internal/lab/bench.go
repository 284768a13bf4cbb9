package lab

// Benchmarks at scale (`l3ha lab bench failover|converge|compare`): N HA
// routers in a lab of their own, measured from outside the agents.
//
// # Failover (BenchFailover)
//
// The lab's server runs with min_l3_agents_per_router 1. With net1's agent
// administratively down, N HA routers are created, each with a gateway on
// the external network: every one is bound to net2 alone, as binding index
// 1, and becomes master there. Then net1 is set admin-up; the server's
// auto-scheduling binds every router to it as index 2, and StartDelay
// (dataplane) keeps those backups. So all N masters are on net2, which is
// the node that fails: the server runs on net1, so the API keeps seeing the
// agents after the fault.
//
// Before the fault the bench waits until net2 holds every router's gateway
// address and VRRP VIP, net1 has a state file ("backup") for every router
// and their start delay is over, and checks that no router of net1 holds
// its addresses. Then, at the fault (per router for ha-link, which takes
// the routers' ha- devices down one by one), it measures per router:
//
//   - vip: when net1's router namespace holds the gateway address and a VIP
//     (169.254.0.0/24) — from address notifications (one rtnetlink socket
//     per router namespace, subscribed to RTNLGRP_IPV4_IFADDR through the
//     runtime's poller, no thread per socket), timestamped on receipt by
//     this process;
//   - dataplane: when the router answers again — one prober in the upstream
//     host (a raw ICMP socket opened in its namespace) pings every gateway
//     address round-robin, each router every max(10 ms, N/probe-rate) (the
//     default 5000 probes/s gives 10 ms up to 50 routers, 20 ms at 100, 100
//     ms at 500). A router's time is the arrival of the first reply to a
//     probe sent after its last lost probe (0 if none was lost); lost_probes
//     counts the probes sent after the fault that got no reply within 0.5 s.
//     The upstream host has permanent neighbour entries for the gateways
//     (their MAC is the gateway port's, the same on both nodes), so that 500
//     ARP entries do not crowd the kernel's neighbour table, which all
//     namespaces share (gc_thresh3 1024);
//   - api: when GET /v2.0/routers/{id}/l3-agents shows net1 active (two
//     clients polling the routers not yet moved, each router at most every
//     50 ms; the round time is reported as the resolution).
//
// The run ends when every router moved in all three views (and answered
// three probes sent after its VIP moved), or at the timeout; then probes
// keep running for --settle so that late losses count.
//
// # Converge (BenchConverge)
//
// net1 admin-down, net2's agent stopped (SIGTERM) and N routers created —
// bound to net2 alone (agent_down_time is raised so that the stopped agent
// stays eligible). Then net2's agent starts, and the bench measures until
// every router's namespace exists, every router has a VRRP state file (the
// HA driver reported a state: VRRP runs), every router is master (state
// file), and the API shows net2 active for every router. After that it reads
// the agent's VmRSS/VmHWM and utime+stime, and those of the node's
// keepalived processes, and their CPU use over the next few seconds.
//
// # Files
//
// This file holds the benchmarks' constants and the failover benchmark's
// options, result and flow (BenchFailover, measureFailover); the rest is in
// bench_stats.go (percentiles, summaries), probe.go (the ICMP prober),
// bench_watch.go (the address and API watchers), bench_lab.go (the
// benchmarks' lab), bench_setup.go (the failover set-up), bench_machine.go
// (the machine), bench_compare.go (BenchCompare), bench_report.go (tables,
// JSON) and bench_converge.go (BenchConverge).

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// BenchLabName is the default name of the benchmarks' lab.
const BenchLabName = "bench"

// DefaultBenchRoutersPerNetwork is the benchmarks' l3_ha_routers_per_network:
// one HA network per router. Every VRRP advert reaches every ha- port of its
// HA network on every node; with Neutron's one network per project (254
// routers) 500 routers at 0.1 s adverts are 5000 adverts/s each delivered
// to ~500 ports, more than two cores can take.
const DefaultBenchRoutersPerNetwork = 1

// The benchmarks' external subnet: a /22 on the external network "public"
// beside the lab's 172.24.4.0/24, so that up to ~1000 routers get gateway
// addresses. The upstream host gets BenchUpstreamIP, the subnet's gateway.
const (
	BenchExternalCIDR   = "172.24.16.0/22"
	BenchUpstreamIP     = "172.24.16.1"
	BenchExternalPrefix = 22
	BenchPoolLo         = "172.24.16.10"
	BenchPoolHi         = "172.24.19.250"
	// BenchMaxRouters is what the pool holds.
	BenchMaxRouters = 1000
)

// Prober defaults.
const (
	// DefaultBenchProbeRate is the prober's total rate (probes per second,
	// all routers together) that sets each router's interval.
	DefaultBenchProbeRate = 5000
	// minProbeInterval is the shortest interval per router.
	minProbeInterval = 10 * time.Millisecond
	// probeReplyTimeout: a probe without a reply after this long is lost.
	probeReplyTimeout = 500 * time.Millisecond
	// probesAfterMove is how many answered probes, sent after a router's
	// VIP moved, end its data-plane observation.
	probesAfterMove = 3
	// pprofPort is where agents started with --pprof-bind listen (inside
	// their node's namespace).
	pprofPort = 6060
)

// BenchFailoverOptions configure BenchFailover.
type BenchFailoverOptions struct {
	// Options are the lab's: Name (default "bench"), Dir, Binary, Out;
	// HADriver is the driver of every agent (default native) and AdvertInt
	// its advert interval in seconds (default: native 0.1, keepalived 2).
	Options
	// Routers is N (default 1).
	Routers int
	// Fault is node (default), ha-link or agent-stop.
	Fault string
	// ProbeRate is the prober's total rate (default 5000/s); each router is
	// probed every max(10 ms, Routers/ProbeRate).
	ProbeRate int
	// Timeout bounds the wait after the fault (default 30 s + 10 advert
	// intervals + 40 ms per router).
	Timeout time.Duration
	// Settle is how long probes keep running after all moved (default 1 s).
	Settle time.Duration
	// Keep leaves the lab up afterwards.
	Keep bool
	// ProfileDir, if set, receives a CPU profile of the agent that takes
	// over, taken from the fault on for ProfileSeconds (default 5).
	ProfileDir     string
	ProfileSeconds int
}

// benchDefaults fills the lab options the benchmarks share: their own lab
// name, a driver and its advert interval.
func benchDefaults(o *Options) (time.Duration, error) {
	if o.Name == "" {
		o.Name = BenchLabName
	}
	if o.HADriver == "" {
		o.HADriver = "native"
	}
	if o.HADriver != "native" && o.HADriver != "keepalived" {
		return 0, fmt.Errorf("--driver %q: want native or keepalived", o.HADriver)
	}
	if o.AdvertInt == "" {
		o.AdvertInt = "2"
		if o.HADriver == "native" {
			o.AdvertInt = "0.1"
		}
	}
	adv, err := strconv.ParseFloat(o.AdvertInt, 64)
	if err != nil || adv <= 0 {
		return 0, fmt.Errorf("--advert-int %q: want a positive number of seconds", o.AdvertInt)
	}
	if o.Dataplane == "" {
		o.Dataplane = DataplaneLinux
	}
	if o.Dataplane != DataplaneLinux {
		return 0, errors.New("the benchmarks need real routers (--dataplane linux)")
	}
	o.MinAgentsPerRouter = 1
	if o.HARoutersPerNetwork == 0 {
		o.HARoutersPerNetwork = DefaultBenchRoutersPerNetwork
	}
	if err := o.setDefaults(); err != nil {
		return 0, err
	}
	return time.Duration(adv * float64(time.Second)), nil
}

func (o *BenchFailoverOptions) setDefaults() (time.Duration, error) {
	adv, err := benchDefaults(&o.Options)
	if err != nil {
		return 0, err
	}
	if o.Routers == 0 {
		o.Routers = 1
	}
	if o.Routers < 1 || o.Routers > BenchMaxRouters {
		return 0, fmt.Errorf("--routers %d: want 1 to %d", o.Routers, BenchMaxRouters)
	}
	if o.Fault == "" {
		o.Fault = FaultNode
	}
	switch o.Fault {
	case FaultNode, FaultHALink, FaultAgentStop:
	default:
		return 0, fmt.Errorf("--fault %q: want %s, %s or %s", o.Fault, FaultNode, FaultHALink, FaultAgentStop)
	}
	if o.ProbeRate == 0 {
		o.ProbeRate = DefaultBenchProbeRate
	}
	if o.ProbeRate < 10 {
		return 0, fmt.Errorf("--probe-rate %d: want at least 10", o.ProbeRate)
	}
	if o.Timeout == 0 {
		o.Timeout = 30*time.Second + 10*adv + time.Duration(o.Routers)*40*time.Millisecond
	}
	if o.Settle == 0 {
		o.Settle = time.Second
	}
	if o.ProfileSeconds == 0 {
		o.ProfileSeconds = 5
	}
	return adv, nil
}

// BenchFailoverResult is the outcome of BenchFailover; --json prints it.
type BenchFailoverResult struct {
	Routers     int     `json:"routers"`
	Driver      string  `json:"driver"`
	Fault       string  `json:"fault"`
	AdvertInt   float64 `json:"advert_int"`
	VRRPVersion int     `json:"vrrp_version"`
	// RoutersPerNetwork is the server's l3_ha_routers_per_network.
	RoutersPerNetwork int `json:"ha_routers_per_network"`
	// VIP, Dataplane and API: seconds from the fault until each router
	// moved (see the package comment of bench.go).
	VIP       BenchStats `json:"vip"`
	Dataplane BenchStats `json:"dataplane"`
	API       BenchStats `json:"api"`
	// LostProbes are the probes sent after the fault that got no reply;
	// ProbesSent all probes sent after the fault (both up to 0.5 s before
	// the end).
	LostProbes      int     `json:"lost_probes"`
	ProbesSent      int     `json:"probes_sent"`
	ProbeIntervalMS float64 `json:"probe_interval_ms"`
	// APIPollRoundMS is the mean time to poll every router not yet moved
	// once: the resolution of the api times.
	APIPollRoundMS float64 `json:"api_poll_round_ms"`
	MasterBefore   string  `json:"master_before"`
	MasterAfter    string  `json:"master_after"`
	FaultDetail    string  `json:"fault_detail"`
	// FaultSpreadS is, for ha-link, how long injecting the fault into every
	// router took (each router's times run from its own fault).
	FaultSpreadS float64   `json:"fault_spread_s,omitempty"`
	SetupS       float64   `json:"setup_s"`
	FaultAt      time.Time `json:"fault_at"`
	// Flaps counts routers whose addresses on the new master came and went
	// again after the fault.
	Flaps int `json:"flaps"`
	// HeldBefore counts routers whose addresses the taker held already at
	// the fault (a takeover between the setup's check and the fault).
	HeldBefore int `json:"held_before_fault"`
	// BacklogDrops are the packets the kernel dropped because a CPU's
	// input backlog was full (/proc/net/softnet_stat, all namespaces and
	// CPUs: netdev_max_backlog) from the fault to the end, and during the
	// setup. Every broadcast on a bridge is one backlog entry per port, so
	// gratuitous ARP on an external network with hundreds of router ports
	// fills it, and a VRRP advert dropped there makes a backup take over.
	BacklogDrops      uint64   `json:"backlog_drops"`
	SetupBacklogDrops uint64   `json:"setup_backlog_drops"`
	ProfileFile       string   `json:"profile_file,omitempty"`
	Error             string   `json:"error,omitempty"`
	Notes             []string `json:"notes,omitempty"`
}

func vrrpVersionOf(advert time.Duration) int {
	if advert%time.Second != 0 {
		return 3
	}
	return 2
}

// The nodes of the failover benchmark: masters on benchMaster, which fails;
// benchTaker (the controller) takes over.
const (
	benchMaster = "net2"
	benchTaker  = "net1"
)

// BenchFailover brings a lab of its own up, makes N HA routers with their
// masters on net2, fails net2 and measures (see the comment of bench.go).
// The lab is torn down at the end unless Keep.
func BenchFailover(ctx context.Context, o BenchFailoverOptions) (res *BenchFailoverResult, err error) {
	adv, err := o.setDefaults()
	if err != nil {
		return nil, err
	}
	if err := requireRoot(); err != nil {
		return nil, err
	}
	res = &BenchFailoverResult{
		Routers: o.Routers, Driver: o.HADriver, Fault: o.Fault, AdvertInt: adv.Seconds(), VRRPVersion: vrrpVersionOf(adv),
		RoutersPerNetwork: o.HARoutersPerNetwork,
		ProbeIntervalMS:   float64(probeInterval(o.Routers, o.ProbeRate)) / float64(time.Millisecond),
		MasterBefore:      benchMaster,
	}
	began := time.Now()
	drops0 := backlogDrops()
	b, err := upBenchLab(ctx, &o.Options)
	if err != nil {
		return res, err
	}
	defer b.finish(o.Keep, &err)
	if o.ProfileDir != "" {
		if err := b.respawnAgent(ctx, benchTaker, "--pprof-bind", "127.0.0.1:"+strconv.Itoa(pprofPort)); err != nil {
			return res, err
		}
	}
	if err := b.setupMastersOn(ctx, benchMaster, benchTaker, o.Routers, adv); err != nil {
		return res, err
	}
	res.SetupS = seconds(time.Since(began))
	res.SetupBacklogDrops = backlogDrops() - drops0
	err = b.measureFailover(ctx, &o, adv, res)
	return res, err
}

// measureFailover: watchers, prober, fault, measurement.
func (b *benchLab) measureFailover(ctx context.Context, o *BenchFailoverOptions, adv time.Duration, res *BenchFailoverResult) error {
	n := len(b.routers)
	watch, err := watchAddrs(b.routerNamespaces(benchTaker), b.gateways())
	if err != nil {
		return err
	}
	defer watch.close()
	// Masters all on net2, none on net1.
	var notMaster, onTaker []string
	for i := range b.routers {
		if ok, err := b.holds(i, benchMaster); err != nil || !ok {
			notMaster = append(notMaster, b.routers[i].ID)
		}
		if watch.holdsNow(i) {
			onTaker = append(onTaker, b.routers[i].ID)
		}
	}
	if len(notMaster) > 0 || len(onTaker) > 0 {
		return fmt.Errorf("before the fault: %d router(s) without their addresses on %s (%s), %d with them on %s (%s)",
			len(notMaster), benchMaster, firstFew(notMaster), len(onTaker), benchTaker, firstFew(onTaker))
	}
	if err := b.upstreamNeighbours(); err != nil {
		return err
	}
	pr, err := startProber(NodeNamespace(b.o.Name, upstreamNS), b.gateways(), probeInterval(n, o.ProbeRate))
	if err != nil {
		return err
	}
	defer pr.stop()
	if err := waitFor(ctx, 30*time.Second, "every router to answer probes", func() (bool, error) {
		return pr.minAnswered() >= probesAfterMove, nil
	}); err != nil {
		return fmt.Errorf("%w (%d of %d routers answered)", err, pr.routersAnswered(), n)
	}

	var profErr chan error
	if o.ProfileDir != "" {
		res.ProfileFile = filepath.Join(o.ProfileDir, fmt.Sprintf("failover-%s-%gs-%d.pprof", res.Driver, res.AdvertInt, n))
		profErr = make(chan error, 1)
		go func() {
			profErr <- b.fetchProfile(ctx, benchTaker, o.ProfileSeconds, res.ProfileFile)
		}()
		time.Sleep(100 * time.Millisecond) // the profile runs from (about) the fault
	}

	for i := range n {
		if watch.holdsNow(i) {
			res.HeldBefore++
		}
	}
	if res.HeldBefore > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d router(s) had their addresses on %s already when the fault came (a backup took over while the probes started: VRRP adverts lost or late); their vip time is 0", res.HeldBefore, benchTaker))
	}
	b.sayf("injecting fault %s into %s (%d routers)", o.Fault, benchMaster, n)
	t0s := make([]time.Time, n)
	var t0 time.Time
	if o.Fault == FaultHALink {
		t0, err = b.haLinksDown(benchMaster, t0s)
		if err != nil {
			return err
		}
		res.FaultDetail = fmt.Sprintf("the ha- device of each of the %d routers set down in its namespace on %s", n, benchMaster)
		res.FaultSpreadS = seconds(t0s[n-1].Sub(t0s[0]))
	} else {
		s := &scenario{o: &FailoverOptions{Options: *b.o, Fault: o.Fault}, st: b.st}
		res.FaultDetail, t0, err = s.inject(benchMaster)
		if err != nil {
			return err
		}
		for i := range t0s {
			t0s[i] = t0
		}
	}
	res.FaultAt = t0
	drops0 := backlogDrops()

	apiCtx, apiStop := context.WithCancel(ctx)
	defer apiStop()
	// The API is asked about a router only once the kernel shows it moved:
	// before, it cannot show it, and polling it would only take CPU from
	// the failover being measured (the server runs on the taker).
	apiW := b.watchAPI(apiCtx, benchTaker, func(i int) bool {
		_, ok := watch.firstHold(i, t0s[i])
		return ok
	})

	deadline := t0.Add(o.Timeout)
	vip := make([]time.Duration, n)
	for {
		done := 0
		for i := range n {
			tv, ok := watch.firstHold(i, t0s[i])
			if !ok {
				continue
			}
			if !apiW.moved(i) {
				continue
			}
			if pr.answeredSince(i, tv) < probesAfterMove {
				continue
			}
			done++
		}
		if done == n {
			break
		}
		if time.Now().After(deadline) {
			res.Notes = append(res.Notes, fmt.Sprintf("timed out after %s with %d of %d routers moved in every view", o.Timeout, done, n))
			break
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.sayf("all views settled after %.3f s; settling %s", seconds(time.Since(t0)), o.Settle)
	select {
	case <-ctx.Done():
	case <-time.After(o.Settle):
	}
	apiStop()
	apiW.wait()
	pr.stop()
	end := time.Now()
	res.BacklogDrops = backlogDrops() - drops0
	if res.BacklogDrops > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("the kernel dropped %d packets at full input backlogs (netdev_max_backlog) after the fault", res.BacklogDrops))
	}

	dp := make([]time.Duration, n)
	api := make([]time.Duration, n)
	for i := range n {
		vip[i] = -1
		if tv, ok := watch.firstHold(i, t0s[i]); ok {
			vip[i] = tv.Sub(t0s[i])
		}
		if watch.flapped(i, t0s[i]) {
			res.Flaps++
		}
		out := pr.outcome(i, t0s[i], end.Add(-probeReplyTimeout))
		dp[i] = out.recovered
		res.LostProbes += out.lost
		res.ProbesSent += out.sent
		api[i] = apiW.at(i, t0s[i])
	}
	res.VIP, res.Dataplane, res.API = aggregate(vip), aggregate(dp), aggregate(api)
	res.APIPollRoundMS = apiW.meanRoundMS()
	moved := 0
	for i := range n {
		if vip[i] >= 0 {
			moved++
		}
	}
	switch moved {
	case n:
		res.MasterAfter = benchTaker
	case 0:
		res.MasterAfter = ""
	default:
		res.MasterAfter = fmt.Sprintf("%s (%d of %d)", benchTaker, moved, n)
	}
	if res.Flaps > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d router(s) lost their addresses on %s again after taking over", res.Flaps, benchTaker))
	}
	if profErr != nil {
		if err := <-profErr; err != nil {
			res.Notes = append(res.Notes, "profile: "+err.Error())
			res.ProfileFile = ""
		}
	}
	return nil
}

func firstFew(ids []string) string {
	if len(ids) > 3 {
		return strings.Join(ids[:3], ", ") + ", …"
	}
	return strings.Join(ids, ", ")
}
