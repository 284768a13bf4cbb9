package lab

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/l3ha/l3ha/internal/linux"
)

// Faults `lab failover` can inject into the master.
const (
	// FaultHALink sets the master router's ha- device down (the blog's test).
	FaultHALink = "ha-link"
	// FaultNode cuts the master node off the fabric and the external network
	// (eth1 and ext0 down) and kills its agent with SIGKILL: a dead node.
	FaultNode = "node"
	// FaultAgentStop stops the master node's agent gracefully (SIGTERM).
	FaultAgentStop = "agent-stop"
	// FaultAgentRestart restarts the master node's agent: SIGUSR2 (exit for
	// a restart: VRRP keeps running), then the same command line again. It
	// must cause no transition and lose no ping.
	FaultAgentRestart = "agent-restart"
	// FaultSwitchover is no fault but an operator's switchover to the
	// other node (POST /v2.0/routers/{id}/switchover): it must lose at most
	// 2 pings, and the new master stays.
	FaultSwitchover = "switchover"
	// FaultClockJump sets the machine's wall clock (every node's) back by
	// ClockJump and, halfway through the watch, forward to the true time
	// again: both jumps must cause no transition, no lost ping and no
	// burst of work in the agents.
	FaultClockJump = "clock-jump"
)

// Faults lists the faults that move mastership.
var Faults = []string{FaultHALink, FaultNode, FaultAgentStop, FaultSwitchover}

// NoFailoverFaults lists the faults after which the master must stay.
var NoFailoverFaults = []string{FaultAgentRestart, FaultClockJump}

// AllFaults lists every valid --fault value.
func AllFaults() []string { return append(append([]string{}, Faults...), NoFailoverFaults...) }

// DefaultRestartWatch is how long `lab failover --fault agent-restart` watches
// for a transition after the restart when no --timeout is given.
const DefaultRestartWatch = 10 * time.Second

// FailoverOptions configure `lab failover`.
type FailoverOptions struct {
	// Options are those of the lab; they bring it up if it is not.
	Options
	// Fault is one of Faults (default ha-link).
	Fault string
	// Keep leaves a lab that Failover brought up running afterwards.
	Keep bool
	// Timeout bounds the wait for a new master after the fault (default
	// 30s). With FaultAgentRestart it is how long the run watches for a
	// transition after the fault (default DefaultRestartWatch).
	Timeout time.Duration
	// Settle is how long the instance keeps pinging after the new master
	// took over, so that late losses are counted (default 2s).
	Settle time.Duration
	// PingInterval is ping's -i (default 10ms).
	PingInterval time.Duration
	// Flows runs the connections of FlowKinds through the router across
	// the fault (see StartFlows) and reports which survived.
	Flows bool
	// TCPLoose, when not empty ("0" or "1"), is set as
	// net.netfilter.nf_conntrack_tcp_loose in the router's namespace on
	// every network node before the fault: 0 is a hardened host's strict
	// mode, where a node that lacks a connection's entry drops it.
	TCPLoose string
}

// flowSettle is the least settle time with Flows: TCP's retransmission
// backoff may resume a stream a second or more after the takeover.
const flowSettle = 5 * time.Second

func (o *FailoverOptions) setDefaults() error {
	if err := o.Options.setDefaults(); err != nil {
		return err
	}
	if o.Fault == "" {
		o.Fault = FaultHALink
	}
	ok := false
	for _, f := range AllFaults() {
		ok = ok || f == o.Fault
	}
	if !ok {
		return fmt.Errorf("--fault %q: want one of %s", o.Fault, strings.Join(AllFaults(), ", "))
	}
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Second
		if o.Fault == FaultAgentRestart || o.Fault == FaultClockJump {
			o.Timeout = DefaultRestartWatch
		}
	}
	if o.Settle == 0 {
		o.Settle = 2 * time.Second
	}
	if o.PingInterval == 0 {
		o.PingInterval = 10 * time.Millisecond
	}
	if o.Flows && o.Settle < flowSettle {
		o.Settle = flowSettle
	}
	switch o.TCPLoose {
	case "", "0", "1":
	default:
		return fmt.Errorf("--tcp-loose %q: want 0 or 1", o.TCPLoose)
	}
	if o.PingInterval < 2*time.Millisecond {
		return fmt.Errorf("ping interval %s: iputils' minimum is 2ms", o.PingInterval)
	}
	return nil
}

// Failover runs the blog's scenario on the lab (bringing it up first if it
// is not, and tearing it down afterwards unless Keep): a tenant network
// 10.10.30.0/24 behind an HA router with a gateway on the external network,
// an instance on compute1 with a floating IP pinging the upstream host every
// PingInterval, a fault injected into the router's master, and the result.
func Failover(ctx context.Context, o FailoverOptions) (res *Result, err error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	if err := requireRoot(); err != nil {
		return nil, err
	}
	st, err := LoadState(o.Dir)
	if err != nil {
		return nil, err
	}
	report, err := Status(ctx, o.Options)
	if err != nil {
		return nil, err
	}
	switch {
	case report.Up:
		if (o.HADriver != "" && o.HADriver != st.HADriver) || (o.AdvertInt != "" && o.AdvertInt != st.AdvertInt) || o.Dataplane != st.Dataplane || (o.Keystone && st.Keystone == nil) || (o.ConntrackSync != "" && o.ConntrackSync != st.ConntrackSync) {
			o.sayf("note: lab %q is up already and keeps its settings (dataplane %s, ha driver %q, advert interval %q, keystone %v, conntrack sync %q)", o.Name, st.Dataplane, st.HADriver, st.AdvertInt, st.Keystone != nil, st.ConntrackSync)
		}
	case len(report.Namespaces) == 0 && !anyRunning(st):
		o.sayf("lab %q is not up: bringing it up", o.Name)
		st, err = Up(ctx, o.Options)
		if err != nil {
			return nil, err
		}
		if !o.Keep {
			defer func() {
				o.sayf("tearing lab %q down", o.Name)
				derr := Down(DownOptions{Name: o.Name, Dir: o.Dir, KeepLogs: err != nil, Out: o.Out})
				if derr != nil {
					err = errors.Join(err, fmt.Errorf("lab down: %w", derr))
				}
			}()
		}
	default:
		return nil, fmt.Errorf("lab %q is only partly up: run `l3ha lab down --name %s` first", o.Name, o.Name)
	}
	if st.Dataplane != DataplaneLinux {
		return nil, fmt.Errorf("lab %q runs --dataplane %s: the failover scenario needs real routers (--dataplane linux)", o.Name, st.Dataplane)
	}
	s := &scenario{o: &o, st: st, api: apiFor(st)}
	defer s.api.close()
	res, err = s.run(ctx)
	if err != nil {
		err = fmt.Errorf("%w\n(logs: %s)", err, logPath(o.Dir, "*"))
		return res, err
	}
	if report.Up || o.Keep {
		// The lab stays: give the next run two healthy nodes again.
		o.sayf("restoring %s", res.MasterBefore)
		did, rerr := s.restore(ctx, res.MasterBefore)
		switch {
		case rerr != nil:
			res.Notes = append(res.Notes, fmt.Sprintf("could not restore %s after the fault (%v): run `l3ha lab down --name %s` and `l3ha lab up --name %s`", res.MasterBefore, rerr, o.Name, o.Name))
		case did != "":
			res.Notes = append(res.Notes, "restored after measuring: "+did)
		}
	}
	return res, nil
}

func anyRunning(st *State) bool {
	if st == nil {
		return false
	}
	for _, p := range st.Processes {
		if p.running() {
			return true
		}
	}
	return false
}

// scenario is one run of the failover scenario.
type scenario struct {
	o   *FailoverOptions
	st  *State
	api *apiClient
	// clock is the clock-jump fault's, to restore.
	clock *clockJump

	// legacy makes setup create a legacy router (ha false) instead of an
	// HA one.
	legacy bool

	runID      string
	pubID      string // the external network
	subnetID   string // the tenant subnet
	fipID      string
	routerID   string
	gatewayIP  string
	floatingIP string
	netID      string
	portID     string
	portMAC    string
	portIP     string
	mtu        int
}

func (s *scenario) lab() string { return s.o.Name }

func (s *scenario) run(ctx context.Context) (*Result, error) {
	if err := s.prepare(ctx); err != nil {
		return nil, err
	}
	return s.measure(ctx)
}

// prepare creates the router and the instance through the API, plugs the
// instance in and waits until it reaches the upstream host.
func (s *scenario) prepare(ctx context.Context) error {
	o := s.o
	if err := s.setup(ctx); err != nil {
		return err
	}
	o.sayf("router %s: gateway %s, instance %s (floating IP %s)", s.routerID, s.gatewayIP, s.portIP, s.floatingIP)
	if err := s.plugInstance(ctx); err != nil {
		return err
	}
	vm := NodeNamespace(s.lab(), instanceNS)
	o.sayf("waiting until the instance reaches %s", UpstreamIP)
	return waitFor(ctx, 120*time.Second, "the instance to reach "+UpstreamIP+" through the router", func() (bool, error) {
		_, err := runIn(ctx, vm, "ping", "-n", "-c", "1", "-W", "1", UpstreamIP)
		return err == nil, nil
	})
}

// measure waits for one master (kernel and API), starts the instance's
// pings, injects s.o.Fault into the master and measures the outcome. It can
// run several times on one prepared scenario (a fault at a time).
func (s *scenario) measure(ctx context.Context) (*Result, error) {
	o := s.o
	vm := NodeNamespace(s.lab(), instanceNS)
	res := &Result{
		Lab: s.lab(), Fault: o.Fault, RouterID: s.routerID, GatewayIP: s.gatewayIP, FloatingIP: s.floatingIP,
		InstanceIP: s.portIP, PingTarget: UpstreamIP, PingIntervalMS: float64(o.PingInterval) / float64(time.Millisecond),
		Dataplane: s.st.Dataplane, HADriver: s.st.HADriver, AdvertInt: s.st.AdvertInt,
	}
	// The way in: upstream → floating IP (DNAT on the master).
	up := NodeNamespace(s.lab(), upstreamNS)
	res.FloatingIPReachable = waitFor(ctx, 20*time.Second, "the floating IP", func() (bool, error) {
		_, err := runIn(ctx, up, "ping", "-n", "-c", "1", "-W", "1", s.floatingIP)
		return err == nil, nil
	}) == nil

	watch, err := newGatewayWatch(s.lab(), s.routerID, s.gatewayIP)
	if err != nil {
		return nil, err
	}
	defer watch.close()
	var apiActive []string
	if err := waitFor(ctx, 60*time.Second, "one master (gateway "+s.gatewayIP+" on one node, one active agent in the API)", func() (bool, error) {
		holders := watch.holders()
		agents, err := s.api.routerAgents(ctx, s.routerID)
		if err != nil {
			return false, nil
		}
		apiActive = activeHosts(agents)
		res.AgentsBefore = agentStates(agents)
		return len(holders) == 1 && len(apiActive) == 1 && holders[0] == apiActive[0], nil
	}); err != nil {
		holders := watch.holders()
		return nil, fmt.Errorf("%w (kernel: gateway on %v; API: active on %v)", err, holders, apiActive)
	}
	res.MasterBefore = watch.holders()[0]
	res.APIMasterBefore = strings.Join(apiActive, ",")
	o.sayf("master: %s", res.MasterBefore)

	// ping -D stamps its lines with the wall clock, which a clock jump
	// moves: the lines' arrival (monotonic) times stand in.
	pinger, err := startPinger(vm, UpstreamIP, o.PingInterval, logPath(o.Dir, "ping-"+s.runID), o.Fault == FaultClockJump)
	if err != nil {
		return nil, err
	}
	defer pinger.stop()
	base := pinger.log.Received()
	if err := waitFor(ctx, 15*time.Second, "the instance's pings to flow", func() (bool, error) {
		if pinger.exited() {
			return false, fmt.Errorf("ping exited: %s", pinger.stderr())
		}
		return pinger.log.Received() >= base+int(time.Second/o.PingInterval), nil
	}); err != nil {
		return nil, err
	}

	if o.TCPLoose != "" {
		if err := s.setTCPLoose(o.TCPLoose); err != nil {
			return nil, err
		}
		res.TCPLoose = o.TCPLoose
	}
	var flows *Flows
	if o.Flows {
		o.sayf("starting the connections %s", strings.Join(FlowKinds, ", "))
		flows, err = StartFlows(ctx, FlowOptions{
			InstanceNS: vm, UpstreamNS: up, InstanceIP: s.portIP, UpstreamIP: UpstreamIP, FloatingIP: s.floatingIP,
		})
		if err != nil {
			return nil, fmt.Errorf("starting the connections: %w", err)
		}
		defer func() {
			if flows != nil {
				flows.Stop(context.Background())
			}
		}()
	}

	var cpuBefore map[string]float64
	if o.Fault == FaultClockJump {
		// The agents' work over a quiet window as long as the watch, to
		// compare the watch with.
		cpuBefore = s.agentsCPU()
		o.sayf("measuring the agents' CPU over %s before the fault", o.Timeout)
		select {
		case <-time.After(o.Timeout):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		res.AgentsCPUSecondsBefore = sumCPU(cpuBefore, s.agentsCPU())
		cpuBefore = s.agentsCPU()
	}
	o.sayf("injecting fault %s into %s", o.Fault, res.MasterBefore)
	detail, t0, err := s.inject(res.MasterBefore)
	if s.clock != nil {
		defer s.clock.restore()
	}
	if err != nil {
		return nil, err
	}
	res.FaultDetail = detail
	res.FaultAt = t0

	// The API's view, concurrently: when does another host show active?
	// When the cut node is the controller, the server is cut off from the
	// other agents and cannot learn it: that wait ends with the settle time.
	apiBlind := o.Fault == FaultNode && res.MasterBefore == controllerNode().Name
	restart := o.Fault == FaultAgentRestart || o.Fault == FaultClockJump
	var apiChanges atomic.Int64
	apiCtx, apiStop := context.WithCancel(ctx)
	defer apiStop()
	var apiWG sync.WaitGroup
	apiWG.Go(func() {
		deadline := t0.Add(o.Timeout)
		for time.Now().Before(deadline) && apiCtx.Err() == nil {
			actx, cancel := context.WithTimeout(apiCtx, 2*time.Second)
			agents, err := s.api.routerAgents(actx, s.routerID)
			cancel()
			if err == nil {
				if restart {
					if hs := activeHosts(agents); len(hs) != 1 || hs[0] != res.MasterBefore {
						apiChanges.Add(1)
					}
				}
				for _, h := range activeHosts(agents) {
					if h != res.MasterBefore {
						d := seconds(time.Since(t0))
						res.APIFailoverSeconds = &d
						res.APIMasterAfter = h
						return
					}
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	// The kernel's view: when does another node hold the gateway address?
	// Every change of the set of holders is counted until the end.
	lastHolders := res.MasterBefore
	observe := func() []string {
		h := watch.holders()
		if j := strings.Join(h, ","); j != lastHolders {
			res.KernelChanges++
			lastHolders = j
		}
		return h
	}
	deadline := t0.Add(o.Timeout)
	var tookOver time.Time
	for {
		now := time.Now()
		var newMaster string
		for _, h := range observe() {
			if h != res.MasterBefore {
				newMaster = h
			}
		}
		if newMaster != "" {
			d := seconds(now.Sub(t0))
			res.FailoverSeconds = &d
			res.MasterAfter = newMaster
			tookOver = now
			o.sayf("%s took over after %.3f s", newMaster, d)
			break
		}
		if now.After(deadline) || ctx.Err() != nil {
			if restart {
				o.sayf("no transition within %s of the restart", o.Timeout)
			} else {
				o.sayf("no other node took over within %s", o.Timeout)
			}
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	for settleEnd := time.Now().Add(o.Settle); time.Now().Before(settleEnd) && ctx.Err() == nil; {
		observe()
		time.Sleep(2 * time.Millisecond)
	}
	if apiBlind {
		apiStop()
	}
	apiWG.Wait()
	res.APIStateChanges = int(apiChanges.Load())
	if s.clock != nil {
		if err := s.clock.restore(); err != nil {
			return nil, fmt.Errorf("restoring the clock: %w", err)
		}
		res.AgentsCPUSecondsDuring = sumCPU(cpuBefore, s.agentsCPU())
	}
	if flows != nil {
		res.Flows = flows.Stop(ctx)
		flows = nil
	}
	pinger.stop()
	sum := pinger.log.Summary(o.PingInterval, inflightWindow(o.PingInterval))
	res.PingsSent, res.PingsLost, res.PingsReceived = sum.Sent, sum.Lost, sum.Received
	res.LongestGapSeconds = seconds(sum.LongestGap)
	res.PingIntervalMeasuredMS = float64(sum.MeasuredInterval.Round(10*time.Microsecond)) / float64(time.Millisecond)
	if tookOver.IsZero() {
		tookOver = t0
	}
	res.PingsResumed = pinger.log.LastReply().After(tookOver)
	if holders := watch.holders(); res.MasterAfter == "" {
		res.MasterAfter = strings.Join(holders, ",")
	}
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if h, err := s.api.routerHistory(actx, s.routerID, 6); err == nil {
		res.HistoryAfter = h
	}
	if agents, err := s.api.routerAgents(actx, s.routerID); err == nil {
		res.AgentsAfter = agentStates(agents)
		if res.APIMasterAfter == "" {
			res.APIMasterAfter = strings.Join(activeHosts(agents), ",")
		}
	} else {
		res.Notes = append(res.Notes, "API unreachable after the fault: "+err.Error())
	}
	if apiBlind {
		res.Notes = append(res.Notes, "the cut node is the controller: the server is cut off too, so the API cannot learn the new master")
	}
	if restart && (res.KernelChanges > 0 || res.APIFailoverSeconds != nil) {
		res.Notes = append(res.Notes, "the "+o.Fault+" caused a transition")
	}
	return res, nil
}

// agentsCPU is the CPU time each network node's agent has used so far.
func (s *scenario) agentsCPU() map[string]float64 {
	out := map[string]float64{}
	for _, n := range Nodes {
		if p, ok := s.st.process("agent-" + n.Name); ok && n.Network {
			if c, err := cpuSeconds(p.PID); err == nil {
				out[n.Name] = c
			}
		}
	}
	return out
}

// sumCPU is the CPU time the agents used between two agentsCPU readings
// (agents in both).
func sumCPU(before, after map[string]float64) float64 {
	var sum float64
	for n, a := range after {
		if b, ok := before[n]; ok {
			sum += a - b
		}
	}
	return sum
}

// setTCPLoose sets nf_conntrack_tcp_loose in the router's namespace on
// every network node that has it.
func (s *scenario) setTCPLoose(v string) error {
	for _, n := range Nodes {
		ns := RouterNamespace(s.lab(), s.routerID, n.Name)
		if !n.Network || !nsExists(ns) {
			continue
		}
		if err := linux.SetSysctls(ns, map[string]string{"net.netfilter.nf_conntrack_tcp_loose": v}); err != nil {
			return fmt.Errorf("nf_conntrack_tcp_loose in %s: %w", ns, err)
		}
	}
	return nil
}

// inflightWindow is how long a request may still be on its way when ping is
// stopped: such requests are neither sent nor lost.
func inflightWindow(interval time.Duration) time.Duration {
	return max(200*time.Millisecond, 5*interval)
}

func seconds(d time.Duration) float64 {
	return float64(d.Round(time.Millisecond)) / float64(time.Second)
}

func activeHosts(agents []apiAgent) []string {
	var out []string
	for _, a := range agents {
		if a.haState() == "active" {
			out = append(out, a.Host)
		}
	}
	sort.Strings(out)
	return out
}

func agentStates(agents []apiAgent) []AgentHAState {
	out := make([]AgentHAState, 0, len(agents))
	for _, a := range agents {
		out = append(out, AgentHAState{Host: a.Host, AgentID: a.ID, Alive: a.Alive, HAState: a.haState()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Host < out[j].Host })
	return out
}

// ensurePublicNetwork returns the lab's external network "public",
// creating it with its subnet (the lab's /24, the upstream host as gateway)
// the first time.
func ensurePublicNetwork(ctx context.Context, api *apiClient) (string, error) {
	pub, err := api.findByName(ctx, "networks", "public", url.Values{"router:external": {"true"}})
	if err != nil || pub != "" {
		return pub, err
	}
	var n, sub idOnly
	if err := api.create(ctx, "networks", "network", map[string]any{
		"name": "public", "router:external": true,
		"provider:network_type": "flat", "provider:physical_network": PhysicalNetwork,
	}, &n); err != nil {
		return "", err
	}
	if err := api.create(ctx, "subnets", "subnet", map[string]any{
		"name": "public-subnet", "network_id": n.ID, "ip_version": 4, "cidr": ExternalCIDR,
		"gateway_ip": UpstreamIP, "enable_dhcp": false,
		"allocation_pools": []map[string]string{{"start": ExternalPoolLo, "end": ExternalPoolHi}},
	}, &sub); err != nil {
		return "", err
	}
	return n.ID, nil
}

// setup creates, through the API, the external network (once per lab), a
// tenant network, the HA router with its gateway and interface, the
// instance's port bound to compute1, and its floating IP.
func (s *scenario) setup(ctx context.Context) error {
	s.runID = randomHex(3)
	api := s.api
	pub, err := ensurePublicNetwork(ctx, api)
	if err != nil {
		return err
	}
	var tnet struct {
		ID  string `json:"id"`
		MTU int    `json:"mtu"`
	}
	if err := api.create(ctx, "networks", "network", map[string]any{"name": "lab-net-" + s.runID}, &tnet); err != nil {
		return err
	}
	s.pubID, s.netID, s.mtu = pub, tnet.ID, tnet.MTU
	var tsub idOnly
	if err := api.create(ctx, "subnets", "subnet", map[string]any{
		"name": "lab-subnet-" + s.runID, "network_id": tnet.ID, "ip_version": 4, "cidr": TenantCIDR,
		"gateway_ip": TenantGateway, "enable_dhcp": false,
	}, &tsub); err != nil {
		return err
	}
	s.subnetID = tsub.ID
	var r apiRouter
	// A node the previous run cut and restored may be alive in the API a
	// moment before the scheduler counts it: wait for it, as an operator
	// would, rather than fail.
	var createErr error
	if err := waitFor(ctx, 30*time.Second, "enough network agents to schedule an HA router", func() (bool, error) {
		createErr = api.create(ctx, "routers", "router", map[string]any{
			"name": "lab-router-" + s.runID, "ha": !s.legacy,
			"external_gateway_info": map[string]any{"network_id": pub},
		}, &r)
		var ae *apiError
		if errors.As(createErr, &ae) && ae.Status == http.StatusConflict && strings.Contains(ae.Body, "HANotEnoughAvailableAgents") {
			return false, nil
		}
		return true, createErr
	}); err != nil {
		if errors.Is(err, ErrNotSettled) {
			return errors.Join(err, createErr)
		}
		return err
	}
	s.routerID, s.gatewayIP = r.ID, r.gatewayIP()
	if s.gatewayIP == "" {
		return fmt.Errorf("router %s has no external gateway address", r.ID)
	}
	if err := api.do(ctx, http.MethodPut, "/v2.0/routers/"+r.ID+"/add_router_interface", map[string]any{"subnet_id": tsub.ID}, nil); err != nil {
		return err
	}
	var port struct {
		ID       string `json:"id"`
		MAC      string `json:"mac_address"`
		FixedIPs []struct {
			IPAddress string `json:"ip_address"`
		} `json:"fixed_ips"`
	}
	if err := api.create(ctx, "ports", "port", map[string]any{
		"name": "vm1-" + s.runID, "network_id": tnet.ID, "device_owner": "compute:nova",
		"device_id": randomUUID(), "binding:host_id": "compute1",
	}, &port); err != nil {
		return err
	}
	if len(port.FixedIPs) == 0 {
		return fmt.Errorf("port %s has no address", port.ID)
	}
	s.portID, s.portMAC, s.portIP = port.ID, port.MAC, port.FixedIPs[0].IPAddress
	var fip struct {
		ID                string `json:"id"`
		FloatingIPAddress string `json:"floating_ip_address"`
	}
	if err := api.create(ctx, "floatingips", "floatingip", map[string]any{"floating_network_id": pub, "port_id": port.ID}, &fip); err != nil {
		return err
	}
	s.fipID, s.floatingIP = fip.ID, fip.FloatingIPAddress
	return nil
}

func randomUUID() string {
	h := randomHex(16)
	return h[:8] + "-" + h[8:12] + "-4" + h[13:16] + "-a" + h[17:20] + "-" + h[20:]
}

// plugInstance gives the instance its port: a veth whose node end
// tap<port[:11]> is enslaved to the tenant network's bridge on compute1 (once
// the compute agent has made it), and whose instance end eth0 has the port's
// MAC and address and a default route via the router.
func (s *scenario) plugInstance(ctx context.Context) error {
	cn := NodeNamespace(s.lab(), "compute1")
	vm := NodeNamespace(s.lab(), instanceNS)
	br, tap := BridgeName(s.netID), TapName(s.portID)
	// An earlier run's interface goes.
	_ = withHandle(vm, func(h *netlink.Handle) error {
		if l, err := h.LinkByName(devInstance); err == nil {
			return h.LinkDel(l)
		}
		return nil
	})
	s.o.sayf("waiting for bridge %s on compute1", br)
	if err := waitFor(ctx, 60*time.Second, "bridge "+br+" in "+cn, func() (bool, error) {
		err := withHandle(cn, func(h *netlink.Handle) error {
			_, err := h.LinkByName(br)
			return err
		})
		return err == nil, nil
	}); err != nil {
		return err
	}
	mac, err := net.ParseMAC(s.portMAC)
	if err != nil {
		return fmt.Errorf("port MAC %q: %w", s.portMAC, err)
	}
	mtu := s.mtu
	if mtu == 0 {
		mtu = 1450
	}
	peer, err := openNS(vm)
	if err != nil {
		return err
	}
	defer peer.Close()
	if err := withHandle(cn, func(h *netlink.Handle) error {
		v := &netlink.Veth{
			LinkAttrs: netlink.LinkAttrs{Name: tap, MTU: mtu}, PeerName: devInstance,
			PeerHardwareAddr: mac, PeerNamespace: netlink.NsFd(int(peer)),
		}
		if err := h.LinkAdd(v); err != nil {
			return fmt.Errorf("%s: add %s: %w", cn, tap, err)
		}
		l, err := h.LinkByName(tap)
		if err != nil {
			return err
		}
		b, err := h.LinkByName(br)
		if err != nil {
			return err
		}
		if err := h.LinkSetMaster(l, b); err != nil {
			return fmt.Errorf("%s: enslave %s to %s: %w", cn, tap, br, err)
		}
		return h.LinkSetUp(l)
	}); err != nil {
		return err
	}
	if err := upWithAddrs(vm, devInstance, []string{s.portIP}, 24); err != nil {
		return err
	}
	return withHandle(vm, func(h *netlink.Handle) error {
		l, err := h.LinkByName(devInstance)
		if err != nil {
			return err
		}
		gw := net.ParseIP(TenantGateway)
		return h.RouteReplace(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw})
	})
}

// inject applies the fault to the master node and returns what it did and
// when.
func (s *scenario) inject(master string) (string, time.Time, error) {
	switch s.o.Fault {
	case FaultHALink:
		rns := RouterNamespace(s.lab(), s.routerID, master)
		var detail string
		var t0 time.Time
		err := withHandle(rns, func(h *netlink.Handle) error {
			links, err := retryDump(h.LinkList)
			if err != nil {
				return err
			}
			for _, l := range links {
				if strings.HasPrefix(l.Attrs().Name, "ha-") {
					t0 = time.Now()
					detail = fmt.Sprintf("%s down in %s", l.Attrs().Name, rns)
					return h.LinkSetDown(l)
				}
			}
			return fmt.Errorf("no ha- device in %s", rns)
		})
		return detail, t0, err
	case FaultNode:
		ns := NodeNamespace(s.lab(), master)
		var t0 time.Time
		err := withHandle(ns, func(h *netlink.Handle) error {
			t0 = time.Now()
			for _, dev := range []string{devFabric, devExternal} {
				l, err := h.LinkByName(dev)
				if err != nil {
					return fmt.Errorf("%s: %s: %w", ns, dev, err)
				}
				if err := h.LinkSetDown(l); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return "", t0, err
		}
		p, ok := s.st.process("agent-" + master)
		if !ok {
			return "", t0, fmt.Errorf("no agent recorded for %s", master)
		}
		if err := p.signal(syscall.SIGKILL); err != nil {
			return "", t0, err
		}
		return fmt.Sprintf("%s: %s and %s down, agent pid %d killed", ns, devFabric, devExternal, p.PID), t0, nil
	case FaultAgentStop:
		p, ok := s.st.process("agent-" + master)
		if !ok {
			return "", time.Time{}, fmt.Errorf("no agent recorded for %s", master)
		}
		t0 := time.Now()
		if err := p.signal(syscall.SIGTERM); err != nil {
			return "", t0, err
		}
		return fmt.Sprintf("agent of %s (pid %d) sent SIGTERM", master, p.PID), t0, nil
	case FaultSwitchover:
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		agents, err := s.api.routerAgents(ctx, s.routerID)
		if err != nil {
			return "", time.Time{}, err
		}
		for _, a := range agents {
			if a.Host != master {
				t0 := time.Now()
				if err := s.api.switchover(ctx, s.routerID, a.ID); err != nil {
					return "", t0, fmt.Errorf("switchover to %s: %w", a.Host, err)
				}
				return fmt.Sprintf("switchover to %s (agent %s) requested through the API", a.Host, a.ID), t0, nil
			}
		}
		return "", time.Time{}, fmt.Errorf("router %s has no agent besides %s", s.routerID, master)
	case FaultClockJump:
		t0 := time.Now() // before the jump: FaultAt is the true time
		c, err := jumpClockBack(s.o.Dir, ClockJump)
		if err != nil {
			return "", t0, err
		}
		s.clock = c
		half := s.o.Timeout / 2
		time.AfterFunc(half, func() { _ = c.restore() })
		return fmt.Sprintf("wall clock set back %s, forward to the true time again after %s", ClockJump, half), t0, nil
	case FaultAgentRestart:
		p, ok := s.st.process("agent-" + master)
		if !ok {
			return "", time.Time{}, fmt.Errorf("no agent recorded for %s", master)
		}
		t0 := time.Now()
		if err := p.signal(syscall.SIGUSR2); err != nil {
			return "", t0, err
		}
		np, err := restartAgent(context.Background(), s.st, master)
		if err != nil {
			return "", t0, err
		}
		return fmt.Sprintf("agent of %s (pid %d) sent SIGUSR2 and started again (pid %d) after %.3f s", master, p.PID, np.PID, seconds(time.Since(t0))), t0, nil
	}
	return "", time.Time{}, fmt.Errorf("unknown fault %q", s.o.Fault)
}

// gatewayWatch tells which network nodes hold the router's gateway address
// in their router namespace (only a VRRP master does), through netlink
// sockets kept open in each of those namespaces.
type gatewayWatch struct {
	ip      net.IP
	handles map[string]*netlink.Handle // node → handle in its router namespace
}

func newGatewayWatch(lab, routerID, gatewayIP string) (*gatewayWatch, error) {
	w := &gatewayWatch{ip: net.ParseIP(gatewayIP), handles: map[string]*netlink.Handle{}}
	if w.ip == nil {
		return nil, fmt.Errorf("bad gateway address %q", gatewayIP)
	}
	for _, n := range Nodes {
		if !n.Network {
			continue
		}
		ns := RouterNamespace(lab, routerID, n.Name)
		if !nsExists(ns) {
			continue
		}
		h, err := handleIn(ns)
		if err != nil {
			w.close()
			return nil, err
		}
		w.handles[n.Name] = h
	}
	if len(w.handles) == 0 {
		return nil, fmt.Errorf("no namespace of router %s on any network node", routerID)
	}
	return w, nil
}

// holders returns the nodes whose router namespace has the gateway address.
func (w *gatewayWatch) holders() []string {
	var out []string
	for node, h := range w.handles {
		addrs, err := h.AddrList(nil, netlink.FAMILY_V4)
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			continue
		}
		for _, a := range addrs {
			if a.IP.Equal(w.ip) {
				out = append(out, node)
				break
			}
		}
	}
	sort.Strings(out)
	return out
}

func (w *gatewayWatch) close() {
	for _, h := range w.handles {
		h.Close()
	}
}

// runIn runs a short command in namespace ns and returns its output.
func runIn(ctx context.Context, ns string, argv ...string) ([]byte, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, argv[0], argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = childEnv()
	if err := startInNamespace(ns, cmd); err != nil {
		return nil, err
	}
	err := cmd.Wait()
	return out.Bytes(), err
}

// pinger is `ping -D -O -i <interval> <target>` running in a namespace,
// its output parsed as it arrives.
type pinger struct {
	cmd      *exec.Cmd
	log      *PingLog
	done     chan struct{} // closed when the output is read to the end
	errBuf   *syncBuffer
	stopOnce sync.Once
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func startPinger(ns, target string, interval time.Duration, rawLog string, arrivalTimes bool) (*pinger, error) {
	iv := strconv.FormatFloat(interval.Seconds(), 'f', -1, 64)
	cmd := exec.Command("ping", "-n", "-D", "-O", "-i", iv, target)
	cmd.Env = childEnv()
	p := &pinger{cmd: cmd, log: NewPingLog(), done: make(chan struct{}), errBuf: &syncBuffer{}}
	p.log.arrivalTimes = arrivalTimes
	cmd.Stderr = p.errBuf
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := startInNamespace(ns, cmd); err != nil {
		return nil, fmt.Errorf("starting ping: %w", err)
	}
	raw, _ := os.Create(rawLog) // ping's own output, for the curious; optional
	go func() {
		defer close(p.done)
		if raw != nil {
			defer raw.Close()
		}
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if raw != nil {
				fmt.Fprintln(raw, sc.Text())
			}
			p.log.Line(sc.Text(), time.Now())
		}
	}()
	return p, nil
}

func (p *pinger) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *pinger) stderr() string { return strings.TrimSpace(p.errBuf.String()) }

// stop interrupts ping (which then prints its statistics), reads the rest of
// its output and reaps it; a ping that does not end is killed.
func (p *pinger) stop() {
	p.stopOnce.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		_ = p.cmd.Wait()
	})
}
