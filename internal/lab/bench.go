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

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	mnl "github.com/mdlayher/netlink"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/l3ha/l3ha/internal/dataplane"
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

// BenchStats summarises one view (vip, dataplane or api) of a run: the
// times, in seconds after the fault, at which each router moved.
type BenchStats struct {
	P50 *float64 `json:"p50_s"`
	P95 *float64 `json:"p95_s"`
	Max *float64 `json:"max_s"`
	// AllMoved is the time until all routers moved (the largest time);
	// null when some router did not move.
	AllMoved *float64 `json:"all_moved_s"`
	// Moved is how many routers moved (of the run's routers).
	Moved int `json:"moved"`
}

// percentile is the p-th percentile (0 < p ≤ 100) of sorted values by the
// nearest-rank method: the smallest value with at least p % of the values
// at or below it. NaN for no values.
func percentile(sorted []float64, p float64) float64 {
	n := len(sorted)
	if n == 0 {
		return math.NaN()
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

// aggregate summarises per-router times; a negative time means the router
// did not move.
func aggregate(times []time.Duration) BenchStats {
	var moved []float64
	for _, d := range times {
		if d >= 0 {
			moved = append(moved, d.Seconds())
		}
	}
	st := BenchStats{Moved: len(moved)}
	if len(moved) == 0 {
		return st
	}
	sort.Float64s(moved)
	f := func(v float64) *float64 {
		r := math.Round(v*1000) / 1000
		return &r
	}
	st.P50 = f(percentile(moved, 50))
	st.P95 = f(percentile(moved, 95))
	st.Max = f(moved[len(moved)-1])
	if len(moved) == len(times) {
		st.AllMoved = f(moved[len(moved)-1])
	}
	return st
}

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

// probeInterval is each router's probe interval at a total rate.
func probeInterval(routers, rate int) time.Duration {
	iv := time.Duration(float64(routers) / float64(rate) * float64(time.Second))
	return max(iv, minProbeInterval).Round(time.Millisecond)
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

// WriteJSON prints the result as one JSON object.
func (r *BenchFailoverResult) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable prints the result for people.
func (r *BenchFailoverResult) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "%d HA router(s), driver %s, advert %gs (VRRPv%d), fault %s: %s → %s\n\n",
		r.Routers, r.Driver, r.AdvertInt, r.VRRPVersion, r.Fault, orNone(r.MasterBefore), orNone(r.MasterAfter))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VIEW\tMOVED\tP50\tP95\tMAX\tALL MOVED")
	for _, v := range []struct {
		name string
		s    BenchStats
	}{{"vip (kernel)", r.VIP}, {"data plane", r.Dataplane}, {"api", r.API}} {
		fmt.Fprintf(tw, "%s\t%d/%d\t%s\t%s\t%s\t%s\n", v.name, v.s.Moved, r.Routers,
			secs(v.s.P50), secs(v.s.P95), secs(v.s.Max), secs(v.s.AllMoved))
	}
	tw.Flush()
	fmt.Fprintf(w, "\nprobes: %d sent after the fault, %d lost (each router every %g ms)\n", r.ProbesSent, r.LostProbes, r.ProbeIntervalMS)
	fmt.Fprintf(w, "kernel input backlog drops: %d during the setup, %d after the fault; routers that flapped: %d\n", r.SetupBacklogDrops, r.BacklogDrops, r.Flaps)
	fmt.Fprintf(w, "api poll round: %.0f ms; fault: %s\n", r.APIPollRoundMS, r.FaultDetail)
	if r.ProfileFile != "" {
		fmt.Fprintf(w, "profile: %s\n", r.ProfileFile)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	if r.Error != "" {
		fmt.Fprintf(w, "error: %s\n", r.Error)
	}
	return nil
}

func secs(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.3f s", *v)
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

// setupMastersOn creates n routers whose masters are all on master, with
// taker as their backup, and waits until taker's VRRP instances run and
// their start delay is over.
func (b *benchLab) setupMastersOn(ctx context.Context, master, taker string, n int, adv time.Duration) error {
	if err := b.ensureExternal(ctx); err != nil {
		return err
	}
	if err := b.setAdmin(ctx, taker, false); err != nil {
		return err
	}
	if err := b.createRouters(ctx, n); err != nil {
		return err
	}
	b.sayf("waiting until %s is master of all %d routers", master, n)
	if err := b.waitHolders(ctx, master, setupTimeout(n, adv)); err != nil {
		return err
	}
	// The taker's agent is stopped while it is given the routers, and
	// starts again only once the master's node floods the HA networks to
	// it: otherwise its backups could start before they hear the masters
	// (the master's agent adds the new VXLAN peer only when it next
	// applies its desired state, which takes long with many routers) and
	// take over.
	p, err := b.stopAgent(ctx, taker)
	if err != nil {
		return err
	}
	if err := b.setAdmin(ctx, taker, true); err != nil {
		return err
	}
	takerNode, _ := nodeByName(taker)
	b.sayf("waiting until %s floods the routers' HA networks to %s", master, taker)
	if err := b.waitFloodPeers(ctx, master, takerNode.FabricIP, setupTimeout(n, adv)); err != nil {
		return err
	}
	if err := b.startAgent(taker, p.Argv); err != nil {
		return err
	}
	b.sayf("waiting until %s runs VRRP (backup) for all %d routers", taker, n)
	if err := b.waitVRRP(ctx, taker, setupTimeout(n, adv)); err != nil {
		return err
	}
	// The backups' start delay (dataplane.StartDelay of binding index 2)
	// runs from their start; after it the group is as it will stay.
	delay := dataplane.StartDelay(2, adv) + 2*adv
	b.sayf("waiting %s for the backups' start delay", delay)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(delay):
	}
	// A backup that missed the masters' adverts for Master_Down_Interval
	// while its node was busy wiring routers took its router over; with the
	// higher ha- address it kept it. Such routers are sent home.
	for round := 0; ; round++ {
		var away []int
		for i := range b.routers {
			onMaster, _ := b.holds(i, master)
			onTaker, _ := b.holds(i, taker)
			if !onMaster || onTaker {
				away = append(away, i)
			}
		}
		if len(away) == 0 {
			return nil
		}
		if round == 3 {
			return notSettledf("%d router(s) not mastered by %s after 3 attempts to move them back (%s)", len(away), master, firstFew(b.ids(away)))
		}
		b.sayf("%d router(s) are not mastered by %s: moving them back", len(away), master)
		if err := b.rehome(ctx, away, master, taker, adv); err != nil {
			return err
		}
	}
}

func (b *benchLab) ids(idx []int) []string {
	out := make([]string, len(idx))
	for k, i := range idx {
		out[k] = b.routers[i].ID
	}
	return out
}

// rehome gives routers back to master: their ha- devices on taker go down
// until master holds their addresses, then up again.
func (b *benchLab) rehome(ctx context.Context, idx []int, master, taker string, adv time.Duration) error {
	set := func(up bool) error {
		for _, i := range idx {
			if err := b.setHALink(RouterNamespace(b.o.Name, b.routers[i].ID, taker), up); err != nil {
				return err
			}
		}
		return nil
	}
	if err := set(false); err != nil {
		return err
	}
	err := waitFor(ctx, 30*time.Second+20*adv, "the routers to move back to "+master, func() (bool, error) {
		for _, i := range idx {
			if ok, _ := b.holds(i, master); !ok {
				return false, nil
			}
		}
		return true, nil
	})
	if uerr := set(true); uerr != nil {
		return errors.Join(err, uerr)
	}
	if err != nil {
		return err
	}
	// Back up, the taker's instances start as backups again; give them
	// their start and a few adverts before the routers are looked at again.
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(dataplane.StartDelay(2, adv) + 5*adv):
	}
	return nil
}

// setHALink sets the ha- device of router namespace ns up or down.
func (b *benchLab) setHALink(ns string, up bool) error {
	return withHandle(ns, func(h *netlink.Handle) error {
		links, err := retryDump(h.LinkList)
		if err != nil {
			return err
		}
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, "ha-") {
				if up {
					return h.LinkSetUp(l)
				}
				return h.LinkSetDown(l)
			}
		}
		return fmt.Errorf("no ha- device in %s", ns)
	})
}

// setupTimeout bounds the waits of the setup.
func setupTimeout(n int, adv time.Duration) time.Duration {
	return 60*time.Second + 10*adv + time.Duration(n)*300*time.Millisecond
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

// benchLab is a lab brought up by a benchmark, with its routers.
type benchLab struct {
	began   time.Time
	o       *Options
	st      *State
	api     *apiClient
	pubID   string
	subnet  string
	agents  map[string]apiAgent // by host
	routers []benchRouter
}

// benchRouter is one router of a benchmark.
type benchRouter struct {
	ID      string
	Gateway netip.Addr
	MAC     net.HardwareAddr // of its gateway port (the same on every node)
}

// upBenchLab brings the benchmark's lab up; a lab of that name must not
// exist.
func upBenchLab(ctx context.Context, o *Options) (*benchLab, error) {
	began := time.Now()
	st, err := Up(ctx, *o)
	if err != nil {
		return nil, err
	}
	b := &benchLab{began: began, o: o, st: st, api: apiFor(st)}
	if err := b.refreshAgents(ctx); err != nil {
		b.api.close()
		_ = b.down(true)
		return nil, err
	}
	return b, nil
}

// sayf reports progress, with the time since the lab began to come up.
func (b *benchLab) sayf(format string, args ...any) {
	b.o.sayf("[%6.1fs] "+format, append([]any{time.Since(b.began).Seconds()}, args...)...)
}

// finish ends a benchmark's use of its lab: down (keeping the logs if
// *err), or kept if keep; a failed teardown joins *err.
func (b *benchLab) finish(keep bool, err *error) {
	b.api.close()
	if keep {
		b.sayf("lab %q kept: `l3ha lab down --name %s` removes it", b.o.Name, b.o.Name)
		return
	}
	if derr := b.down(*err != nil); derr != nil {
		*err = errors.Join(*err, fmt.Errorf("lab down: %w", derr))
	}
}

// down removes the lab (keeping its logs when asked): fastTeardown, then
// Down for what is left.
func (b *benchLab) down(keepLogs bool) error {
	b.sayf("tearing lab %q down", b.o.Name)
	b.fastTeardown()
	err := Down(DownOptions{Name: b.o.Name, Dir: b.o.Dir, KeepLogs: keepLogs, Out: io.Discard})
	b.sayf("lab %q is down", b.o.Name)
	if keepLogs {
		b.sayf("logs kept in %s", filepath.Join(b.o.Dir, "logs"))
	}
	return err
}

// fastTeardown ends the lab the quick way: every process of the lab is
// killed (SIGKILL: nothing graceful is measured any more) and its router and
// node namespaces are unmounted without first deleting their devices one by
// one, which Down does and which, with a few thousand devices (500 routers:
// two veths each, and an HA network bridge and VXLAN device per router and
// node), takes minutes of RCU grace periods. The kernel destroys unmounted
// namespaces and their devices in batches; fastTeardown waits until a
// device can be made and deleted quickly again in the lab's external
// switch namespace (which it keeps, for Down), so that the next run does
// not compete with that clean-up.
func (b *benchLab) fastTeardown() {
	for _, p := range b.st.Processes {
		_ = p.signal(syscall.SIGKILL)
	}
	nss, _ := existingNamespaces(b.o.Name)
	inodes := map[uint64]bool{}
	for _, ns := range nss {
		if ino := nsInode(ns); ino != 0 {
			inodes[ino] = true
		}
	}
	inLab := func(pid int) bool {
		ino, ok := netnsOfPID(pid)
		return ok && inodes[ino]
	}
	for range 3 {
		pids := pidsInNamespaces(inodes)
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			if inLab(pid) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			left := 0
			for _, pid := range pids {
				if alive(pid) && inLab(pid) {
					left++
				}
			}
			if left == 0 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, p := range b.st.Processes {
		for i := 0; i < 250 && p.running(); i++ {
			time.Sleep(20 * time.Millisecond)
		}
	}
	probeNS := NodeNamespace(b.o.Name, externalNS)
	for _, ns := range nss {
		if ns == probeNS {
			continue
		}
		_ = unix.Unmount(nsPath(ns), unix.MNT_DETACH)
		_ = os.Remove(nsPath(ns))
	}
	deadline := time.Now().Add(90 * time.Second)
	quick := 0
	for quick < 2 && time.Now().Before(deadline) {
		began := time.Now()
		err := withHandle(probeNS, func(h *netlink.Handle) error {
			d := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "benchprobe"}}
			if err := h.LinkAdd(d); err != nil {
				return err
			}
			return h.LinkDel(d)
		})
		if err != nil {
			break // no probe: leave it to Down
		}
		if time.Since(began) < 50*time.Millisecond {
			quick++
		} else {
			quick = 0
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (b *benchLab) refreshAgents(ctx context.Context) error {
	list, err := b.api.agents(ctx)
	if err != nil {
		return err
	}
	b.agents = map[string]apiAgent{}
	for _, a := range list {
		b.agents[a.Host] = a
	}
	for _, n := range Nodes {
		if n.Network {
			if _, ok := b.agents[n.Name]; !ok {
				return fmt.Errorf("no agent of %s in the API", n.Name)
			}
		}
	}
	return nil
}

// setAdmin sets host's agent admin_state_up (admin-up auto-schedules the
// routers that lack agents onto it).
func (b *benchLab) setAdmin(ctx context.Context, host string, up bool) error {
	a := b.agents[host]
	err := b.api.do(ctx, http.MethodPut, "/v2.0/agents/"+a.ID, map[string]any{"agent": map[string]any{"admin_state_up": up}}, nil)
	if err != nil {
		return fmt.Errorf("setting %s admin_state_up %v: %w", host, up, err)
	}
	return nil
}

// respawnAgent stops node's agent (SIGTERM) and starts it again with extra
// arguments; lab.json records the new process.
func (b *benchLab) respawnAgent(ctx context.Context, node string, extra ...string) error {
	p, err := b.stopAgent(ctx, node)
	if err != nil {
		return err
	}
	return b.startAgent(node, append(append([]string{}, p.Argv...), extra...))
}

// stopAgent stops node's agent (SIGTERM) and waits until it has exited; it
// returns the process as lab.json recorded it.
func (b *benchLab) stopAgent(ctx context.Context, node string) (Process, error) {
	p, ok := b.st.process("agent-" + node)
	if !ok {
		return p, fmt.Errorf("no agent of %s recorded", node)
	}
	if err := p.signal(syscall.SIGTERM); err != nil {
		return p, err
	}
	return p, waitFor(ctx, agentExitTimeout, "agent-"+node+" to exit", func() (bool, error) { return !p.running(), nil })
}

// startAgent starts node's agent with argv and records it.
func (b *benchLab) startAgent(node string, argv []string) error {
	p, _ := b.st.process("agent-" + node)
	np, _, err := startDaemon(p.Name, p.Node, p.Namespace, argv, p.Log)
	if err != nil {
		return err
	}
	b.st.setProcess(np)
	return b.st.Save()
}

// ensureExternal creates the external network "public" as the failover
// scenario does (unless it exists), the benchmark's /22 on it, and gives
// the upstream host that subnet's gateway address.
func (b *benchLab) ensureExternal(ctx context.Context) error {
	api := b.api
	pub, err := ensurePublicNetwork(ctx, api)
	if err != nil {
		return err
	}
	b.pubID = pub
	sub, err := api.findByName(ctx, "subnets", "bench-subnet", url.Values{"network_id": {pub}})
	if err != nil {
		return err
	}
	if sub == "" {
		var n idOnly
		if err := api.create(ctx, "subnets", "subnet", map[string]any{
			"name": "bench-subnet", "network_id": pub, "ip_version": 4, "cidr": BenchExternalCIDR,
			"gateway_ip": BenchUpstreamIP, "enable_dhcp": false,
			"allocation_pools": []map[string]string{{"start": BenchPoolLo, "end": BenchPoolHi}},
		}, &n); err != nil {
			return err
		}
		sub = n.ID
	}
	b.subnet = sub
	up := NodeNamespace(b.o.Name, upstreamNS)
	return withHandle(up, func(h *netlink.Handle) error {
		l, err := h.LinkByName(devUplink)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", up, devUplink, err)
		}
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(BenchUpstreamIP).To4(), Mask: net.CIDRMask(BenchExternalPrefix, 32)}}
		if err := h.AddrReplace(l, addr); err != nil {
			return fmt.Errorf("%s: add %s/%d: %w", up, BenchUpstreamIP, BenchExternalPrefix, err)
		}
		return nil
	})
}

// createRouters creates n HA routers with gateways on the benchmark's
// subnet, four at a time, and reads their gateway ports' MACs.
func (b *benchLab) createRouters(ctx context.Context, n int) error {
	b.sayf("creating %d HA routers", n)
	began := time.Now()
	routers := make([]benchRouter, n)
	run := randomHex(3)
	err := parallelDo(ctx, n, 4, func(i int) error {
		var r apiRouter
		if err := b.api.create(ctx, "routers", "router", map[string]any{
			"name": fmt.Sprintf("bench-%s-%04d", run, i), "ha": true,
			"external_gateway_info": map[string]any{
				"network_id":         b.pubID,
				"external_fixed_ips": []map[string]any{{"subnet_id": b.subnet}},
			},
		}, &r); err != nil {
			return err
		}
		gw, err := netip.ParseAddr(r.gatewayIP())
		if err != nil {
			return fmt.Errorf("router %s: gateway address %q: %w", r.ID, r.gatewayIP(), err)
		}
		routers[i] = benchRouter{ID: r.ID, Gateway: gw}
		return nil
	})
	if err != nil {
		return fmt.Errorf("creating routers: %w", err)
	}
	var ports struct {
		Ports []struct {
			DeviceID string `json:"device_id"`
			MAC      string `json:"mac_address"`
		} `json:"ports"`
	}
	if err := b.api.do(ctx, http.MethodGet, "/v2.0/ports?device_owner=network:router_gateway", nil, &ports); err != nil {
		return err
	}
	macs := map[string]string{}
	for _, p := range ports.Ports {
		macs[p.DeviceID] = p.MAC
	}
	for i := range routers {
		mac, err := net.ParseMAC(macs[routers[i].ID])
		if err != nil {
			return fmt.Errorf("router %s: gateway port MAC %q: %w", routers[i].ID, macs[routers[i].ID], err)
		}
		routers[i].MAC = mac
	}
	b.routers = routers
	b.sayf("created %d routers in %.1f s", n, time.Since(began).Seconds())
	return nil
}

// parallelDo runs fn(0..n-1) on workers goroutines; the first error stops
// the handing out of more work and is returned.
func parallelDo(ctx context.Context, n, workers int, fn func(i int) error) error {
	var (
		mu    sync.Mutex
		next  int
		first error
		wg    sync.WaitGroup
	)
	for range min(workers, n) {
		wg.Go(func() {
			for {
				mu.Lock()
				if first != nil || next >= n || ctx.Err() != nil {
					if first == nil && ctx.Err() != nil {
						first = ctx.Err()
					}
					mu.Unlock()
					return
				}
				i := next
				next++
				mu.Unlock()
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return first
}

func (b *benchLab) routerNamespaces(node string) []string {
	out := make([]string, len(b.routers))
	for i, r := range b.routers {
		out[i] = RouterNamespace(b.o.Name, r.ID, node)
	}
	return out
}

func (b *benchLab) gateways() []netip.Addr {
	out := make([]netip.Addr, len(b.routers))
	for i, r := range b.routers {
		out[i] = r.Gateway
	}
	return out
}

// vipRange holds the VRRP VIPs (169.254.0.<vrid>/24) of every router.
var vipRange = netip.MustParsePrefix("169.254.0.0/24")

// holds reports whether router i's namespace on node holds its gateway
// address and a VIP (a master's addresses).
func (b *benchLab) holds(i int, node string) (bool, error) {
	ns := RouterNamespace(b.o.Name, b.routers[i].ID, node)
	if !nsExists(ns) {
		return false, nil
	}
	var gw, vip bool
	err := withHandle(ns, func(h *netlink.Handle) error {
		addrs, err := retryDump(func() ([]netlink.Addr, error) { return h.AddrList(nil, netlink.FAMILY_V4) })
		if err != nil {
			return err
		}
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP.To4())
			if !ok {
				continue
			}
			gw = gw || ip == b.routers[i].Gateway
			vip = vip || vipRange.Contains(ip)
		}
		return nil
	})
	return gw && vip, err
}

// waitHolders waits until node holds the addresses of every router.
func (b *benchLab) waitHolders(ctx context.Context, node string, timeout time.Duration) error {
	pending := make([]int, len(b.routers))
	for i := range pending {
		pending[i] = i
	}
	return waitFor(ctx, timeout, fmt.Sprintf("%s to hold the addresses of all %d routers", node, len(b.routers)), func() (bool, error) {
		var still []int
		for _, i := range pending {
			if ok, _ := b.holds(i, node); !ok {
				still = append(still, i)
			}
		}
		pending = still
		return len(pending) == 0, nil
	})
}

// stateFile is the HA state file of router id on node.
func (b *benchLab) stateFile(node, id string) string {
	return filepath.Join(nodeStateDir(b.st.Dir, node), "ha_confs", id, "state")
}

// readState returns the content of router id's state file on node ("" if
// none).
func (b *benchLab) readState(node, id string) string {
	s, _ := os.ReadFile(b.stateFile(node, id))
	return strings.TrimSpace(string(s))
}

// waitVRRP waits until node has a state file for every router: its HA
// driver runs VRRP for it.
func (b *benchLab) waitVRRP(ctx context.Context, node string, timeout time.Duration) error {
	return waitFor(ctx, timeout, fmt.Sprintf("%s to report a VRRP state for all %d routers", node, len(b.routers)), func() (bool, error) {
		for _, r := range b.routers {
			if b.readState(node, r.ID) == "" {
				return false, nil
			}
		}
		return true, nil
	})
}

// waitFloodPeers waits until node's agent floods every HA network (VXLAN
// device) of the routers to peer: one head-end replication entry
// (00:00:00:00:00:00 dst peer) on each of its VXLAN devices.
func (b *benchLab) waitFloodPeers(ctx context.Context, node, peer string, timeout time.Duration) error {
	ns := NodeNamespace(b.o.Name, node)
	ip := net.ParseIP(peer)
	perNet := max(b.st.HARoutersPerNetwork, 1)
	if b.st.HARoutersPerNetwork == 0 {
		perNet = 254
	}
	want := (len(b.routers) + perNet - 1) / perNet
	var have, devs int
	err := waitFor(ctx, timeout, fmt.Sprintf("%s to flood the HA networks to %s", node, peer), func() (bool, error) {
		have, devs = 0, 0
		err := withHandle(ns, func(h *netlink.Handle) error {
			links, err := retryDump(h.LinkList)
			if err != nil {
				return err
			}
			for _, l := range links {
				if l.Type() != "vxlan" {
					continue
				}
				devs++
				neighs, err := h.NeighList(l.Attrs().Index, unix.AF_BRIDGE)
				if err != nil {
					return err
				}
				for _, nb := range neighs {
					if nb.IP.Equal(ip) {
						have++
						break
					}
				}
			}
			return nil
		})
		if err != nil {
			return false, nil
		}
		return have == devs && have >= want, nil
	})
	if err != nil {
		return fmt.Errorf("%w (%d of %d VXLAN devices, %d expected)", err, have, devs, want)
	}
	return nil
}

// upstreamNeighbours gives the upstream host a permanent neighbour entry for
// every router's gateway address (its gateway port's MAC).
func (b *benchLab) upstreamNeighbours() error {
	up := NodeNamespace(b.o.Name, upstreamNS)
	return withHandle(up, func(h *netlink.Handle) error {
		l, err := h.LinkByName(devUplink)
		if err != nil {
			return err
		}
		for _, r := range b.routers {
			err := h.NeighSet(&netlink.Neigh{
				LinkIndex: l.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
				IP: net.IP(r.Gateway.AsSlice()), HardwareAddr: r.MAC,
			})
			if err != nil {
				return fmt.Errorf("%s: neighbour %s: %w", up, r.Gateway, err)
			}
		}
		return nil
	})
}

// haLinksDown sets the ha- device of every router down in its namespace on
// node, recording when each went; it returns the first time.
func (b *benchLab) haLinksDown(node string, t0s []time.Time) (time.Time, error) {
	for i, r := range b.routers {
		t0s[i] = time.Now()
		if err := b.setHALink(RouterNamespace(b.o.Name, r.ID, node), false); err != nil {
			return t0s[0], err
		}
	}
	return t0s[0], nil
}

// fetchProfile takes a CPU profile and, at the same time, an execution
// trace (path + ".trace": `go tool trace -pprof=syscall|sched|sync` shows
// where the agent waited) of node's agent (started with --pprof-bind) for
// the given seconds and writes them to path.
func (b *benchLab) fetchProfile(ctx context.Context, node string, secs int, path string) error {
	errc := make(chan error, 1)
	go func() { errc <- b.fetchPprof(ctx, node, "trace", secs, path+".trace") }()
	return errors.Join(b.fetchPprof(ctx, node, "profile", secs, path), <-errc)
}

// fetchPprof fetches /debug/pprof/<kind>?seconds=secs from node's agent
// into path.
func (b *benchLab) fetchPprof(ctx context.Context, node, kind string, secs int, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	c := &http.Client{Transport: &http.Transport{DialContext: nsDialer(NodeNamespace(b.o.Name, node))}, Timeout: time.Duration(secs+30) * time.Second}
	defer c.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/%s?seconds=%d", pprofPort, kind, secs), nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 500))
		return fmt.Errorf("%s of agent-%s: HTTP %d: %s", kind, node, resp.StatusCode, msg)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// addrWatch follows, through address notifications, whether each router's
// namespace (on one node) holds its gateway address and a VIP.
type addrWatch struct {
	mu      sync.Mutex
	routers []*addrState
	conns   []*mnl.Conn
	wg      sync.WaitGroup
}

type addrState struct {
	gw      netip.Addr
	present map[netip.Addr]bool
	// events are the changes of holds(), in order.
	events []holdEvent
}

type holdEvent struct {
	at    time.Time
	holds bool
}

func (s *addrState) holds() bool {
	if !s.present[s.gw] {
		return false
	}
	for a := range s.present {
		if vipRange.Contains(a) {
			return true
		}
	}
	return false
}

func (s *addrState) set(a netip.Addr, on bool, at time.Time) {
	if a != s.gw && !vipRange.Contains(a) {
		return
	}
	before := s.holds()
	if on {
		s.present[a] = true
	} else {
		delete(s.present, a)
	}
	if after := s.holds(); after != before {
		s.events = append(s.events, holdEvent{at: at, holds: after})
	}
}

// watchAddrs subscribes to the IPv4 address notifications of each namespace
// (which must exist) and reads its addresses once.
func watchAddrs(namespaces []string, gateways []netip.Addr) (*addrWatch, error) {
	w := &addrWatch{}
	for i, ns := range namespaces {
		st := &addrState{gw: gateways[i], present: map[netip.Addr]bool{}}
		w.routers = append(w.routers, st)
		fd, err := openNS(ns)
		if err != nil {
			w.close()
			return nil, err
		}
		c, err := mnl.Dial(unix.NETLINK_ROUTE, &mnl.Config{NetNS: int(fd), Groups: unix.RTMGRP_IPV4_IFADDR})
		fd.Close()
		if err != nil {
			w.close()
			return nil, fmt.Errorf("address notifications of %s: %w", ns, err)
		}
		_ = c.SetReadBuffer(1 << 20)
		w.conns = append(w.conns, c)
		w.wg.Go(func() { w.receive(c, st) })
		err = withHandle(ns, func(h *netlink.Handle) error {
			addrs, err := retryDump(func() ([]netlink.Addr, error) { return h.AddrList(nil, netlink.FAMILY_V4) })
			if err != nil {
				return err
			}
			now := time.Now()
			w.mu.Lock()
			defer w.mu.Unlock()
			for _, a := range addrs {
				if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok {
					st.set(ip, true, now)
				}
			}
			return nil
		})
		if err != nil {
			w.close()
			return nil, err
		}
	}
	return w, nil
}

func (w *addrWatch) receive(c *mnl.Conn, st *addrState) {
	for {
		msgs, err := c.Receive()
		now := time.Now()
		if err != nil {
			if errors.Is(err, unix.ENOBUFS) {
				continue // overrun: later messages still tell the state
			}
			return // closed
		}
		w.mu.Lock()
		for _, m := range msgs {
			var on bool
			switch m.Header.Type {
			case unix.RTM_NEWADDR:
				on = true
			case unix.RTM_DELADDR:
			default:
				continue
			}
			if a, ok := parseIfAddr(m.Data); ok {
				st.set(a, on, now)
			}
		}
		w.mu.Unlock()
	}
}

// parseIfAddr reads the IPv4 address of an RTM_NEWADDR/RTM_DELADDR message:
// struct ifaddrmsg (8 bytes), then attributes (IFA_LOCAL, else
// IFA_ADDRESS).
func parseIfAddr(b []byte) (netip.Addr, bool) {
	if len(b) < unix.SizeofIfAddrmsg || b[0] != unix.AF_INET {
		return netip.Addr{}, false
	}
	ad, err := mnl.NewAttributeDecoder(b[unix.SizeofIfAddrmsg:])
	if err != nil {
		return netip.Addr{}, false
	}
	var local, address netip.Addr
	for ad.Next() {
		switch ad.Type() {
		case unix.IFA_LOCAL:
			local, _ = netip.AddrFromSlice(ad.Bytes())
		case unix.IFA_ADDRESS:
			address, _ = netip.AddrFromSlice(ad.Bytes())
		}
	}
	if local.Is4() {
		return local, true
	}
	return address, address.Is4()
}

func (w *addrWatch) holdsNow(i int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.routers[i].holds()
}

// firstHold is when router i's namespace came to hold its addresses at or
// after t0 (t0 itself if it held them then).
func (w *addrWatch) firstHold(i int, t0 time.Time) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	held := false
	for _, e := range w.routers[i].events {
		if !e.at.Before(t0) {
			if held {
				return t0, true
			}
			if e.holds {
				return e.at, true
			}
		}
		held = e.holds
	}
	if held {
		return t0, true
	}
	return time.Time{}, false
}

// flapped reports whether router i's namespace lost its addresses again
// after first holding them after t0.
func (w *addrWatch) flapped(i int, t0 time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	got := false
	for _, e := range w.routers[i].events {
		if e.at.Before(t0) {
			continue
		}
		if e.holds {
			got = true
		} else if got {
			return true
		}
	}
	return false
}

func (w *addrWatch) close() {
	for _, c := range w.conns {
		c.Close()
	}
	w.wg.Wait()
}

// prober pings every router's gateway address from the upstream host,
// round-robin, through one raw ICMP socket opened in the upstream
// namespace, and records when each probe was sent and answered.
type prober struct {
	conn     *net.IPConn
	id       uint16
	targets  []netip.Addr
	interval time.Duration
	start    time.Time

	mu   sync.Mutex
	sent [][]time.Duration // per router, per sequence number: since start
	recv [][]time.Duration // likewise, when answered; 0: not (yet)

	stopc    chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// probeMagic starts the payload of the bench's probes.
var probeMagic = [4]byte{'L', '3', 'H', 'B'}

const probeLen = 8 + 20 // ICMP header; magic, router, sequence, send time

func startProber(ns string, targets []netip.Addr, interval time.Duration) (*prober, error) {
	var conn net.PacketConn
	err := inNamespace(ns, func() error {
		c, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
		conn = c
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("raw ICMP socket in %s: %w", ns, err)
	}
	ic := conn.(*net.IPConn)
	_ = ic.SetReadBuffer(4 << 20)
	_ = ic.SetWriteBuffer(4 << 20)
	idb := make([]byte, 2)
	_, _ = rand.Read(idb)
	p := &prober{
		conn: ic, id: binary.BigEndian.Uint16(idb), targets: targets, interval: interval, start: time.Now(),
		sent: make([][]time.Duration, len(targets)), recv: make([][]time.Duration, len(targets)),
		stopc: make(chan struct{}),
	}
	p.wg.Go(p.receiveLoop)
	p.wg.Go(p.sendLoop)
	return p, nil
}

func (p *prober) since() time.Duration { return time.Since(p.start) }

func (p *prober) sendLoop() {
	n := len(p.targets)
	spacing := p.interval / time.Duration(n)
	next := time.Now()
	buf := make([]byte, probeLen)
	for k := 0; ; {
		select {
		case <-p.stopc:
			return
		default:
		}
		now := time.Now()
		if now.Sub(next) > p.interval {
			next = now // descheduled for a whole round: no burst to catch up
		}
		for !next.After(now) {
			p.send(k%n, buf)
			k++
			next = next.Add(spacing)
		}
		time.Sleep(time.Until(next))
	}
}

func (p *prober) send(i int, b []byte) {
	p.mu.Lock()
	seq := len(p.sent[i])
	at := p.since()
	p.sent[i] = append(p.sent[i], at)
	p.recv[i] = append(p.recv[i], 0)
	p.mu.Unlock()
	buildProbe(b, p.id, i, seq, at)
	_, _ = p.conn.WriteTo(b, &net.IPAddr{IP: net.IP(p.targets[i].AsSlice())})
}

// buildProbe writes into b (probeLen bytes) the echo request of router i's
// probe seq, sent at (since the prober's start).
func buildProbe(b []byte, id uint16, i, seq int, at time.Duration) {
	b[0], b[1] = 8, 0 // echo request
	b[2], b[3] = 0, 0
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], uint16(seq))
	copy(b[8:12], probeMagic[:])
	binary.BigEndian.PutUint32(b[12:], uint32(i))
	binary.BigEndian.PutUint32(b[16:], uint32(seq))
	binary.BigEndian.PutUint64(b[20:], uint64(at))
	binary.BigEndian.PutUint16(b[2:], icmpChecksum(b))
}

// icmpChecksum is the Internet checksum (RFC 1071) of b.
func icmpChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

func (p *prober) receiveLoop() {
	buf := make([]byte, 2048)
	for {
		n, _, err := p.conn.ReadFrom(buf)
		at := p.since()
		if err != nil {
			select {
			case <-p.stopc:
				return
			default:
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return
		}
		i, seq, ok := parseProbeReply(buf[:n], p.id)
		if !ok || i >= len(p.targets) {
			continue
		}
		p.mu.Lock()
		if seq < len(p.recv[i]) && p.recv[i][seq] == 0 {
			p.recv[i][seq] = max(at, 1)
		}
		p.mu.Unlock()
	}
}

// parseProbeReply reads an ICMP echo reply to one of the bench's probes
// (the IPv4 header already stripped): router index and sequence number.
func parseProbeReply(b []byte, id uint16) (router, seq int, ok bool) {
	if len(b) < probeLen || b[0] != 0 || b[1] != 0 || binary.BigEndian.Uint16(b[4:]) != id || [4]byte(b[8:12]) != probeMagic {
		return 0, 0, false
	}
	return int(binary.BigEndian.Uint32(b[12:])), int(binary.BigEndian.Uint32(b[16:])), true
}

func (p *prober) stop() {
	p.stopOnce.Do(func() {
		close(p.stopc)
		p.conn.Close()
		p.wg.Wait()
	})
}

// minAnswered is the fewest probes any router answered.
func (p *prober) minAnswered() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	least := math.MaxInt
	for i := range p.recv {
		c := 0
		for _, r := range p.recv[i] {
			if r > 0 {
				c++
			}
		}
		least = min(least, c)
	}
	return least
}

// routersAnswered is how many routers answered a probe.
func (p *prober) routersAnswered() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := 0
	for i := range p.recv {
		for _, r := range p.recv[i] {
			if r > 0 {
				c++
				break
			}
		}
	}
	return c
}

// answeredSince counts router i's answered probes sent at or after t.
func (p *prober) answeredSince(i int, t time.Time) int {
	from := t.Sub(p.start)
	p.mu.Lock()
	defer p.mu.Unlock()
	c := 0
	for j := len(p.sent[i]) - 1; j >= 0 && p.sent[i][j] >= from; j-- {
		if p.recv[i][j] > 0 {
			c++
		}
	}
	return c
}

// probeOutcome is one router's probes after the fault.
type probeOutcome struct {
	// recovered: from the fault to the first reply to a probe sent after
	// the last lost one; 0 when none was lost; -1 when no such reply came.
	recovered time.Duration
	sent      int
	lost      int
}

func (p *prober) outcome(i int, t0, cutoff time.Time) probeOutcome {
	p.mu.Lock()
	defer p.mu.Unlock()
	return analyzeProbes(p.sent[i], p.recv[i], t0.Sub(p.start), cutoff.Sub(p.start))
}

// analyzeProbes judges one router's probes: sent[j] and recv[j] are the
// send and reply times of probe j (recv 0: none), t0 the fault; probes sent
// after cutoff are too recent to be judged lost.
func analyzeProbes(sent, recv []time.Duration, t0, cutoff time.Duration) probeOutcome {
	out := probeOutcome{}
	lastLost := -1
	for j := range sent {
		if sent[j] < t0 || sent[j] > cutoff {
			continue
		}
		out.sent++
		if recv[j] == 0 {
			out.lost++
			lastLost = j
		}
	}
	if out.lost == 0 {
		if out.sent == 0 {
			out.recovered = -1
		}
		return out
	}
	first := time.Duration(-1)
	for j := lastLost + 1; j < len(sent); j++ {
		if recv[j] > 0 && (first < 0 || recv[j] < first) {
			first = recv[j]
		}
	}
	if first < 0 {
		out.recovered = -1
	} else {
		out.recovered = first - t0
	}
	return out
}

// apiWatch polls GET /v2.0/routers/{id}/l3-agents for the routers whose
// host is not yet shown active (and that are ready, when a ready function
// is given), with two clients, each router at most every apiPollPeriod.
type apiWatch struct {
	mu     sync.Mutex
	got    []time.Time
	rounds int
	total  time.Duration
	done   chan struct{}
}

const apiPollPeriod = 50 * time.Millisecond

func (b *benchLab) watchAPI(ctx context.Context, host string, ready func(i int) bool) *apiWatch {
	w := &apiWatch{got: make([]time.Time, len(b.routers)), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for ctx.Err() == nil {
			var pending []int
			left := 0
			w.mu.Lock()
			for i, t := range w.got {
				if t.IsZero() {
					left++
					if ready == nil || ready(i) {
						pending = append(pending, i)
					}
				}
			}
			w.mu.Unlock()
			if left == 0 {
				return
			}
			if len(pending) == 0 {
				select {
				case <-ctx.Done():
				case <-time.After(5 * time.Millisecond):
				}
				continue
			}
			began := time.Now()
			_ = parallelDo(ctx, len(pending), 2, func(k int) error {
				i := pending[k]
				actx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				agents, err := b.api.routerAgents(actx, b.routers[i].ID)
				if err != nil {
					return nil
				}
				for _, a := range agents {
					if a.Host == host && a.haState() == "active" {
						w.mu.Lock()
						w.got[i] = time.Now()
						w.mu.Unlock()
					}
				}
				return nil
			})
			d := time.Since(began)
			w.mu.Lock()
			w.rounds++
			w.total += d
			w.mu.Unlock()
			if d < apiPollPeriod {
				select {
				case <-ctx.Done():
				case <-time.After(apiPollPeriod - d):
				}
			}
		}
	}()
	return w
}

func (w *apiWatch) moved(i int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return !w.got[i].IsZero()
}

// at is how long after t0 router i was seen moved; -1 if it was not.
func (w *apiWatch) at(i int, t0 time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.got[i].IsZero() {
		return -1
	}
	return max(w.got[i].Sub(t0), 0)
}

func (w *apiWatch) wait() { <-w.done }

func (w *apiWatch) meanRoundMS() float64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.rounds == 0 {
		return 0
	}
	return math.Round(float64(w.total)/float64(w.rounds)/float64(time.Millisecond)*10) / 10
}

// backlogDrops sums the second column of /proc/net/softnet_stat: packets
// dropped because a CPU's input backlog was full.
func backlogDrops() uint64 {
	b, err := os.ReadFile("/proc/net/softnet_stat")
	if err != nil {
		return 0
	}
	var sum uint64
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		if v, err := strconv.ParseUint(f[1], 16, 64); err == nil {
			sum += v
		}
	}
	return sum
}

// Machine describes where a benchmark ran.
type Machine struct {
	CPUs              int       `json:"nproc"`
	CPUModel          string    `json:"cpu_model,omitempty"`
	MemoryMiB         int64     `json:"memory_mib,omitempty"`
	Kernel            string    `json:"kernel"`
	GoVersion         string    `json:"go_version"`
	Date              time.Time `json:"date"`
	LoadAvg           string    `json:"loadavg_at_start,omitempty"`
	KeepalivedVersion string    `json:"keepalived_version,omitempty"`
}

// ThisMachine describes this machine now.
func ThisMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), Date: time.Now().UTC().Truncate(time.Second)}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if kb, err := procKBOf("/proc/meminfo", "MemTotal"); err == nil {
		m.MemoryMiB = kb / 1024
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	return m
}

// procKBOf reads "Key: N kB" from a /proc file.
func procKBOf(path, key string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && k == key {
			f := strings.Fields(v)
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("%s: no %s", path, key)
}

// BenchConfig is one HA driver configuration of a comparison.
type BenchConfig struct {
	Driver    string `json:"driver"`
	AdvertInt string `json:"advert_int"`
	// RoutersPerNetwork overrides the comparison's
	// l3_ha_routers_per_network when not 0.
	RoutersPerNetwork int `json:"ha_routers_per_network,omitempty"`
}

// ParseBenchConfigs reads "native:0.1,keepalived:2,keepalived:2:254":
// DRIVER:ADVERT_SECONDS[:HA_ROUTERS_PER_NETWORK].
func ParseBenchConfigs(s string) ([]BenchConfig, error) {
	var out []BenchConfig
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		f := strings.Split(item, ":")
		if len(f) < 2 || len(f) > 3 || (f[0] != "native" && f[0] != "keepalived") {
			return nil, fmt.Errorf("driver configuration %q: want native|keepalived:ADVERT_SECONDS[:HA_ROUTERS_PER_NETWORK]", item)
		}
		if v, err := strconv.ParseFloat(f[1], 64); err != nil || v <= 0 {
			return nil, fmt.Errorf("driver configuration %q: advert interval %q is not a positive number", item, f[1])
		}
		c := BenchConfig{Driver: f[0], AdvertInt: f[1]}
		if len(f) == 3 {
			n, err := strconv.Atoi(f[2])
			if err != nil || n < 1 || n > 254 {
				return nil, fmt.Errorf("driver configuration %q: routers per HA network %q: want 1 to 254", item, f[2])
			}
			c.RoutersPerNetwork = n
		}
		out = append(out, c)
	}
	return out, nil
}

// options returns base with c's driver settings.
func (c BenchConfig) options(base Options) Options {
	base.HADriver, base.AdvertInt = c.Driver, c.AdvertInt
	if c.RoutersPerNetwork > 0 {
		base.HARoutersPerNetwork = c.RoutersPerNetwork
	}
	return base
}

// String is "native 0.1s" (and the routers per HA network when set).
func (c BenchConfig) String() string {
	s := c.Driver + " " + c.AdvertInt + "s"
	if c.RoutersPerNetwork > 0 {
		s += fmt.Sprintf(" (%d routers per HA network)", c.RoutersPerNetwork)
	}
	return s
}

// BenchCompareOptions configure BenchCompare.
type BenchCompareOptions struct {
	// Options are the lab's (Name, Dir, Binary, Out); each run brings the
	// lab up and down again.
	Options
	Routers []int
	Configs []BenchConfig
	// Fault of the failover runs (default node).
	Fault     string
	ProbeRate int
	// ConvergeRouters (0: none) is N of the converge runs, one per
	// ConvergeConfigs.
	ConvergeRouters int
	ConvergeConfigs []BenchConfig
	// OutDir receives results.json (rewritten after every run) and
	// failover.svg.
	OutDir string
	// ProfileDir, if set, receives CPU profiles of the largest runs.
	ProfileDir string
	// Command is recorded in results.json.
	Command string
}

// BenchResults is bench/results.json.
type BenchResults struct {
	Machine   Machine               `json:"machine"`
	Command   string                `json:"command,omitempty"`
	ProbeRate int                   `json:"probe_rate"`
	Failover  []BenchFailoverResult `json:"failover"`
	Converge  []BenchConvergeResult `json:"converge"`
	DurationS float64               `json:"duration_s"`
}

// BenchCompare runs BenchFailover for every configuration and number of
// routers (smallest first) and BenchConverge for the converge
// configurations, writing OutDir/results.json after every run and
// OutDir/failover.svg at the end. A failed run is recorded with its error
// and the comparison goes on; the errors are returned joined.
func BenchCompare(ctx context.Context, o BenchCompareOptions) (*BenchResults, error) {
	if o.OutDir == "" {
		o.OutDir = "bench"
	}
	if o.ProbeRate == 0 {
		o.ProbeRate = DefaultBenchProbeRate
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return nil, err
	}
	began := time.Now()
	res := &BenchResults{Machine: ThisMachine(), Command: o.Command, ProbeRate: o.ProbeRate,
		Failover: []BenchFailoverResult{}, Converge: []BenchConvergeResult{}}
	res.Machine.KeepalivedVersion = keepalivedVersion()
	routers := append([]int{}, o.Routers...)
	sort.Ints(routers)
	largest := 0
	if len(routers) > 0 {
		largest = routers[len(routers)-1]
	}
	var errs []error
	save := func() {
		res.DurationS = seconds(time.Since(began))
		if err := writeJSONFile(filepath.Join(o.OutDir, "results.json"), res); err != nil {
			errs = append(errs, err)
		}
	}
	for _, n := range routers {
		for _, c := range o.Configs {
			if ctx.Err() != nil {
				break
			}
			fo := BenchFailoverOptions{Options: c.options(o.Options), Routers: n, Fault: o.Fault, ProbeRate: o.ProbeRate}
			if o.ProfileDir != "" && n == largest {
				fo.ProfileDir = o.ProfileDir
			}
			o.sayf("== failover: %d routers, %s", n, c)
			r, err := BenchFailover(ctx, fo)
			if r == nil {
				r = &BenchFailoverResult{Routers: n, Driver: c.Driver, Fault: fo.Fault}
			}
			if err != nil {
				r.Error = err.Error()
				errs = append(errs, caseError(o.sayf, fmt.Errorf("failover %d routers %s: %w", n, c, err)))
			}
			res.Failover = append(res.Failover, *r)
			save()
		}
	}
	if o.ConvergeRouters > 0 {
		for _, c := range o.ConvergeConfigs {
			if ctx.Err() != nil {
				break
			}
			co := BenchConvergeOptions{Options: c.options(o.Options), Routers: o.ConvergeRouters, ProfileDir: o.ProfileDir}
			o.sayf("== converge: %d routers, %s", o.ConvergeRouters, c)
			r, err := BenchConverge(ctx, co)
			if r == nil {
				r = &BenchConvergeResult{Routers: o.ConvergeRouters, Driver: c.Driver}
			}
			if err != nil {
				r.Error = err.Error()
				errs = append(errs, caseError(o.sayf, fmt.Errorf("converge %d routers %s: %w", o.ConvergeRouters, c, err)))
			}
			res.Converge = append(res.Converge, *r)
			save()
		}
	}
	save()
	if len(res.Failover) > 0 {
		f, err := os.Create(filepath.Join(o.OutDir, "failover.svg"))
		if err == nil {
			err = errors.Join(WriteFailoverSVG(f, res.Failover, res.Machine.Summary()), f.Close())
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := ctx.Err(); err != nil {
		errs = append(errs, err)
	}
	return res, errors.Join(errs...)
}

// caseError is what a failed case of the comparison makes the whole run
// return: nothing when the system under test did not settle (Neutron's
// layout with hundreds of keepalived processes on one HA network did not,
// at 500 routers) — that is a result, recorded in results.json and the tables — and
// err for anything else (the lab itself failing).
func caseError(sayf func(string, ...any), err error) error {
	if errors.Is(err, ErrNotSettled) {
		sayf("%v: recorded as this case's result", err)
		return nil
	}
	return err
}

// Summary is one line about the machine, for the plot.
func (m Machine) Summary() string {
	s := fmt.Sprintf("%d CPUs", m.CPUs)
	if m.CPUModel != "" {
		s += " (" + m.CPUModel + ")"
	}
	s += fmt.Sprintf(", Linux %s, %s", m.Kernel, m.Date.Format("2006-01-02"))
	if m.KeepalivedVersion != "" {
		s += ", " + m.KeepalivedVersion
	}
	return s
}

// writeJSONFile writes v to path atomically.
func writeJSONFile(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ReadBenchResults reads a results.json.
func ReadBenchResults(path string) (*BenchResults, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r BenchResults
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}

// WriteTable prints the comparison as Markdown tables.
func (r *BenchResults) WriteTable(w io.Writer) error {
	m := r.Machine
	fmt.Fprintf(w, "Machine: %s; %d MiB; %s; load average at start %s; %.0f s in all.\n\n",
		m.Summary(), m.MemoryMiB, m.GoVersion, m.LoadAvg, r.DurationS)
	if len(r.Failover) > 0 {
		fmt.Fprintln(w, "Failover (seconds after the fault; p50 / max / all moved):")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| routers | driver | advert | routers per HA net | vip (kernel) | data plane | api | lost probes | probe interval |")
		fmt.Fprintln(w, "|---:|---|---:|---:|---|---|---|---:|---:|")
		for _, f := range r.Failover {
			if f.Error != "" {
				fmt.Fprintf(w, "| %d | %s | %gs | %d | error: %s |  |  |  |  |\n", f.Routers, f.Driver, f.AdvertInt, f.RoutersPerNetwork, strings.ReplaceAll(f.Error, "\n", " "))
				continue
			}
			fmt.Fprintf(w, "| %d | %s | %gs (v%d) | %d | %s | %s | %s | %d of %d | %g ms |\n", f.Routers, f.Driver, f.AdvertInt, f.VRRPVersion, f.RoutersPerNetwork,
				triple(f.VIP), triple(f.Dataplane), triple(f.API), f.LostProbes, f.ProbesSent, f.ProbeIntervalMS)
		}
		fmt.Fprintln(w)
	}
	if len(r.Converge) > 0 {
		fmt.Fprintln(w, "Converge (seconds after the agent's start until all routers …; memory and CPU after):")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| routers | driver | advert | routers per HA net | namespaces | VRRP running | master | API active | agent RSS (peak) | agent CPU to converge / after | keepalived RSS | keepalived CPU to converge / after |")
		fmt.Fprintln(w, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
		for _, c := range r.Converge {
			if c.Error != "" {
				fmt.Fprintf(w, "| %d | %s | %gs | %d | error: %s |  |  |  |  |  |  |  |\n", c.Routers, c.Driver, c.AdvertInt, c.RoutersPerNetwork, strings.ReplaceAll(c.Error, "\n", " "))
				continue
			}
			ka, kacpu := "-", "-"
			if c.Keepalived != nil {
				ka = fmt.Sprintf("%.0f MiB (%d procs)", float64(c.Keepalived.RSSKB)/1024, c.Keepalived.Processes)
				kacpu = fmt.Sprintf("%.1f s / %.1f%%", c.Keepalived.CPUS, c.Keepalived.IdleCPUPct)
			}
			fmt.Fprintf(w, "| %d | %s | %gs | %d | %s | %s | %s | %s | %.0f MiB (%.0f) | %.1f s / %.1f%% | %s | %s |\n", c.Routers, c.Driver, c.AdvertInt, c.RoutersPerNetwork,
				secs(c.NamespacesS), secs(c.VRRPS), secs(c.MasterS), secs(c.APIS),
				float64(c.Agent.RSSKB)/1024, float64(c.Agent.HWMKB)/1024, c.Agent.CPUS, c.Agent.IdleCPUPct, ka, kacpu)
		}
		fmt.Fprintln(w)
	}
	return nil
}

func triple(s BenchStats) string {
	short := func(v *float64) string {
		if v == nil {
			return "-"
		}
		return strconv.FormatFloat(*v, 'f', 3, 64)
	}
	return fmt.Sprintf("%s / %s / %s", short(s.P50), short(s.Max), short(s.AllMoved))
}
