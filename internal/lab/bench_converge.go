package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// BenchConvergeOptions configure BenchConverge.
type BenchConvergeOptions struct {
	// Options are the lab's, as for BenchFailoverOptions.
	Options
	// Routers is N (default 1).
	Routers int
	// Timeout bounds the wait for convergence (default 120 s + 200 ms per
	// router).
	Timeout time.Duration
	// IdleWindow is how long CPU use is measured after convergence (default
	// 5 s).
	IdleWindow time.Duration
	Keep       bool
	// ProfileDir, if set, receives a CPU profile of the converging agent
	// from its start, for ProfileSeconds (default 15).
	ProfileDir     string
	ProfileSeconds int
}

// convergeAgentDownTime is the converge lab's agent_down_time: the agent is
// stopped while its routers are created and must stay eligible meanwhile.
const convergeAgentDownTime = 3600

func (o *BenchConvergeOptions) setDefaults() (time.Duration, error) {
	if o.AgentDownTime == 0 {
		o.AgentDownTime = convergeAgentDownTime
	}
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
	if o.Timeout == 0 {
		o.Timeout = 120*time.Second + time.Duration(o.Routers)*200*time.Millisecond
	}
	if o.IdleWindow == 0 {
		o.IdleWindow = 5 * time.Second
	}
	if o.ProfileSeconds == 0 {
		o.ProfileSeconds = 15
	}
	return adv, nil
}

// ProcUsage is the memory and CPU of one or more processes.
type ProcUsage struct {
	Processes int `json:"processes"`
	// RSSKB and HWMKB are VmRSS and VmHWM (peak), summed.
	RSSKB   int64 `json:"rss_kb"`
	HWMKB   int64 `json:"hwm_kb"`
	Threads int   `json:"threads"`
	// CPUS is utime+stime since the processes started, at convergence.
	CPUS float64 `json:"cpu_s"`
	// IdleCPUPct is the CPU they used after convergence, in % of one core,
	// over the idle window.
	IdleCPUPct float64 `json:"idle_cpu_pct"`
}

// BenchConvergeResult is the outcome of BenchConverge; --json prints it.
type BenchConvergeResult struct {
	Routers     int     `json:"routers"`
	Driver      string  `json:"driver"`
	AdvertInt   float64 `json:"advert_int"`
	VRRPVersion int     `json:"vrrp_version"`
	// RoutersPerNetwork is the server's l3_ha_routers_per_network.
	RoutersPerNetwork int    `json:"ha_routers_per_network"`
	Node              string `json:"node"`
	// CreateS is how long creating the routers through the API took (the
	// agent stopped).
	CreateS float64 `json:"create_s"`
	// Seconds from the agent's start until, for every router: its
	// namespace exists (NamespacesS); its VRRP state file exists, i.e. the
	// HA driver runs VRRP and reported a state (VRRPS); that file says
	// master (MasterS: includes VRRP's Master_Down_Interval, the node
	// being alone); the API shows the agent active (APIS). ConvergedS is
	// the largest. Null when not reached within the timeout.
	NamespacesS *float64 `json:"namespaces_s"`
	VRRPS       *float64 `json:"vrrp_s"`
	MasterS     *float64 `json:"master_s"`
	APIS        *float64 `json:"api_s"`
	ConvergedS  *float64 `json:"converged_s"`
	// Agent is the agent process; Keepalived the node's keepalived
	// processes (keepalived driver).
	Agent        ProcUsage  `json:"agent"`
	Keepalived   *ProcUsage `json:"keepalived,omitempty"`
	IdleWindowS  float64    `json:"idle_window_s"`
	ProfileFile  string     `json:"profile_file,omitempty"`
	Error        string     `json:"error,omitempty"`
	Notes        []string   `json:"notes,omitempty"`
	APIPollRound float64    `json:"api_poll_round_ms"`
}

// WriteJSON prints the result as one JSON object.
func (r *BenchConvergeResult) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable prints the result for people.
func (r *BenchConvergeResult) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "agent of %s starting with %d HA router(s), driver %s, advert %gs (VRRPv%d)\n\n",
		r.Node, r.Routers, r.Driver, r.AdvertInt, r.VRRPVersion)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("routers created (API)", fmt.Sprintf("%.1f s", r.CreateS))
	row("all namespaces", secs(r.NamespacesS))
	row("all running VRRP", secs(r.VRRPS))
	row("all master", secs(r.MasterS))
	row("API: all active", secs(r.APIS))
	row("converged", secs(r.ConvergedS))
	row("agent", usageText(r.Agent, r.IdleWindowS))
	if r.Keepalived != nil {
		row("keepalived", usageText(*r.Keepalived, r.IdleWindowS))
	}
	tw.Flush()
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

func usageText(u ProcUsage, window float64) string {
	return fmt.Sprintf("%d process(es), RSS %.1f MiB (peak %.1f MiB), %d threads, CPU %.2f s until converged, %.1f%% of a core over %gs after",
		u.Processes, float64(u.RSSKB)/1024, float64(u.HWMKB)/1024, u.Threads, u.CPUS, u.IdleCPUPct, window)
}

// benchConvergeNode is the node whose agent converges.
const benchConvergeNode = "net2"

// BenchConverge brings a lab of its own up, creates N HA routers bound to
// net2 alone while net2's agent is stopped, starts the agent and measures
// how long it takes to converge and what it costs (see bench.go).
func BenchConverge(ctx context.Context, o BenchConvergeOptions) (res *BenchConvergeResult, err error) {
	adv, err := o.setDefaults()
	if err != nil {
		return nil, err
	}
	if err := requireRoot(); err != nil {
		return nil, err
	}
	node, other := benchConvergeNode, benchTaker
	res = &BenchConvergeResult{
		Routers: o.Routers, Driver: o.HADriver, AdvertInt: adv.Seconds(), VRRPVersion: vrrpVersionOf(adv),
		Node: node, IdleWindowS: o.IdleWindow.Seconds(), RoutersPerNetwork: o.HARoutersPerNetwork,
	}
	b, err := upBenchLab(ctx, &o.Options)
	if err != nil {
		return res, err
	}
	defer b.finish(o.Keep, &err)
	if err := b.ensureExternal(ctx); err != nil {
		return res, err
	}
	if err := b.setAdmin(ctx, other, false); err != nil {
		return res, err
	}
	b.sayf("stopping agent-%s", node)
	p, err := b.stopAgent(ctx, node)
	if err != nil {
		return res, err
	}
	began := time.Now()
	if err := b.createRouters(ctx, o.Routers); err != nil {
		return res, err
	}
	res.CreateS = seconds(time.Since(began))

	argv := append([]string{}, p.Argv...)
	if o.ProfileDir != "" {
		argv = append(argv, "--pprof-bind", "127.0.0.1:"+strconv.Itoa(pprofPort))
	}
	b.sayf("starting agent-%s with %d routers bound to it", node, o.Routers)
	t0 := time.Now()
	if err := b.startAgent(node, argv); err != nil {
		return res, err
	}
	agentP, _ := b.st.process("agent-" + node)
	var profErr chan error
	if o.ProfileDir != "" {
		res.ProfileFile = filepath.Join(o.ProfileDir, fmt.Sprintf("converge-%s-%gs-%d.pprof", res.Driver, res.AdvertInt, o.Routers))
		profErr = make(chan error, 1)
		go func() {
			// The agent listens a few milliseconds after its start.
			var err error
			for range 50 {
				if err = b.fetchProfile(ctx, node, o.ProfileSeconds, res.ProfileFile); err == nil {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			profErr <- err
		}()
	}
	apiCtx, apiStop := context.WithCancel(ctx)
	defer apiStop()
	apiW := b.watchAPI(apiCtx, node, nil)

	nsNames := b.routerNamespaces(node)
	var nsAt, vrrpAt, masterAt, apiAt time.Time
	vrrpOK := make([]bool, len(b.routers))
	masterOK := make([]bool, len(b.routers))
	deadline := t0.Add(o.Timeout)
	for {
		now := time.Now()
		if nsAt.IsZero() {
			all := true
			for _, ns := range nsNames {
				if !nsExists(ns) {
					all = false
					break
				}
			}
			if all {
				nsAt = now
			}
		}
		if masterAt.IsZero() {
			allV, allM := true, true
			for i, r := range b.routers {
				if masterOK[i] {
					continue
				}
				switch b.readState(node, r.ID) {
				case "master":
					vrrpOK[i], masterOK[i] = true, true
				case "backup":
					vrrpOK[i] = true
					allM = false
				default:
					allV, allM = false, false
				}
				if !vrrpOK[i] {
					allV = false
				}
			}
			if allV && vrrpAt.IsZero() {
				vrrpAt = now
			}
			if allM {
				masterAt = now
			}
		}
		if apiAt.IsZero() {
			all := true
			for i := range b.routers {
				if !apiW.moved(i) {
					all = false
					break
				}
			}
			if all {
				apiAt = now
			}
		}
		if !nsAt.IsZero() && !vrrpAt.IsZero() && !masterAt.IsZero() && !apiAt.IsZero() {
			break
		}
		if now.After(deadline) {
			res.Notes = append(res.Notes, fmt.Sprintf("not converged within %s", o.Timeout))
			break
		}
		if err := ctx.Err(); err != nil {
			return res, err
		}
		time.Sleep(100 * time.Millisecond)
	}
	apiStop()
	apiW.wait()
	res.APIPollRound = apiW.meanRoundMS()
	since := func(t time.Time) *float64 {
		if t.IsZero() {
			return nil
		}
		v := seconds(t.Sub(t0))
		return &v
	}
	res.NamespacesS, res.VRRPS, res.MasterS, res.APIS = since(nsAt), since(vrrpAt), since(masterAt), since(apiAt)
	if res.NamespacesS != nil && res.VRRPS != nil && res.MasterS != nil && res.APIS != nil {
		v := math.Max(math.Max(*res.NamespacesS, *res.VRRPS), math.Max(*res.MasterS, *res.APIS))
		res.ConvergedS = &v
	}
	if !agentP.running() {
		return res, exited(agentP)
	}
	b.sayf("converged after %s; measuring CPU for %s", secs(res.ConvergedS), o.IdleWindow)
	kaPIDs := func() []int { return keepalivedIn(nsNames) }
	agent1 := procUsage([]int{agentP.PID})
	ka1 := procUsage(kaPIDs())
	select {
	case <-ctx.Done():
		return res, ctx.Err()
	case <-time.After(o.IdleWindow):
	}
	agent2 := procUsage([]int{agentP.PID})
	res.Agent = agent2
	res.Agent.CPUS = agent1.CPUS
	res.Agent.IdleCPUPct = idlePct(agent1.CPUS, agent2.CPUS, o.IdleWindow)
	if ka1.Processes > 0 || o.HADriver == "keepalived" {
		ka2 := procUsage(kaPIDs())
		ka2.IdleCPUPct = idlePct(ka1.CPUS, ka2.CPUS, o.IdleWindow)
		ka2.CPUS = ka1.CPUS
		res.Keepalived = &ka2
	}
	if profErr != nil {
		if err := <-profErr; err != nil {
			res.Notes = append(res.Notes, "profile: "+err.Error())
			res.ProfileFile = ""
		}
	}
	return res, nil
}

func idlePct(cpu1, cpu2 float64, window time.Duration) float64 {
	return math.Round((cpu2-cpu1)/window.Seconds()*1000) / 10
}

// keepalivedIn returns the keepalived processes running in the given
// namespaces.
func keepalivedIn(namespaces []string) []int {
	inodes := map[uint64]bool{}
	for _, ns := range namespaces {
		if ino := nsInode(ns); ino != 0 {
			inodes[ino] = true
		}
	}
	var out []int
	for _, pid := range pidsInNamespaces(inodes) {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil && strings.TrimSpace(string(b)) == "keepalived" {
			out = append(out, pid)
		}
	}
	return out
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat
// (100 on every Linux architecture Go supports).
const clockTicks = 100

// procUsage sums the memory and CPU of pids (those that are gone are left
// out).
func procUsage(pids []int) ProcUsage {
	var u ProcUsage
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		cpu, err := parseStatCPU(b)
		if err != nil {
			continue
		}
		u.Processes++
		u.CPUS += cpu
		status := fmt.Sprintf("/proc/%d/status", pid)
		if v, err := procKBOf(status, "VmRSS"); err == nil {
			u.RSSKB += v
		}
		if v, err := procKBOf(status, "VmHWM"); err == nil {
			u.HWMKB += v
		}
		if v, err := procKBOf(status, "Threads"); err == nil {
			u.Threads += int(v)
		}
	}
	u.CPUS = math.Round(u.CPUS*100) / 100
	return u
}

// parseStatCPU reads utime+stime (fields 14 and 15, clock ticks) of
// /proc/<pid>/stat, in seconds.
func parseStatCPU(b []byte) (float64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3; fields 14 and 15 are f[11] and f[12].
	if len(f) < 13 {
		return 0, errors.New("malformed stat")
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("malformed stat: %w", err)
	}
	return float64(ut+st) / clockTicks, nil
}

// keepalivedVersion is the first line of `keepalived --version`.
func keepalivedVersion() string {
	out, _ := exec.Command("keepalived", "--version").CombinedOutput()
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}
