// Package dataplane is the agent's Linux data plane: it converges a node onto
// its desired state — per network a bridge with a VXLAN device (head-end
// replication to the peers) or a mapped physical interface; per router a
// qrouter- namespace with qr-/qg-/ha- veths, NAT, and either direct
// addresses (legacy routers) or VRRP through an HA driver (HA routers) — and
// removes what is no longer wanted. Planning is pure (plan.go); the kernel
// work goes through internal/linux; VRRP through an HADriver.
//
// Order matters for HA (LP#1597461): a router's L2 and L3 are wired before
// its VRRP instance starts, so a rebooted node never wins an election it
// cannot serve.
package dataplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/l3ha/l3ha/internal/agent"
	"github.com/l3ha/l3ha/internal/agentapi"
	"github.com/l3ha/l3ha/internal/linux"
)

// HADriver runs VRRP for the node's HA routers.
type HADriver interface {
	// Start adopts the VRRP instances already running on the node and from
	// then on reports every router's state (agentapi.HAActive/HAStandby)
	// with the reason of the transition (agentapi.Reason*, "" if the
	// driver cannot tell).
	Start(ctx context.Context, report func(routerID, state, reason string)) error
	// Ensure runs (or updates) VRRP for r; its devices exist.
	Ensure(ctx context.Context, r HARouter) error
	// Remove stops VRRP for a router (a master resigns first).
	Remove(ctx context.Context, routerID string) error
	// Running lists the routers the driver runs VRRP for.
	Running() []string
	// Stop ends the driver when the agent exits. With resign (a graceful
	// stop) every master hands over at once (VRRP priority 0); without it
	// (a restart or upgrade) VRRP keeps running so the next agent adopts it
	// and no router changes master.
	Stop(ctx context.Context, resign bool) error
}

// Config configures the Linux data plane.
type Config struct {
	// Node is the namespace that plays the node (bridges, VXLAN, veth node
	// ends); linux.NodeNS, the agent's own namespace, by default. Tests run
	// several nodes in one process with it.
	Node string
	// Suffix is appended to router namespace names (the lab's --netns-suffix).
	Suffix string
	// LocalIP is the VXLAN underlay address of this node.
	LocalIP netip.Addr
	// Mappings maps physical networks to interfaces for flat networks.
	Mappings map[string]string
	// ExternalL2: another agent owns the node's bridges (see
	// PlanOptions.ExternalL2); the data plane never creates or removes one.
	ExternalL2 bool
	// Host is this node's host name (it makes each node's gateway probes
	// its own, see linux.ProbeMAC).
	Host string
	// HealthCheckInterval is how often each HA router's gateway is checked
	// (Neutron's ha_vrrp_health_check_interval); 0: never. It needs a
	// driver that takes health into VRRP (the native one).
	HealthCheckInterval time.Duration
	// HealthCheckFall is how many failed checks in a row make a router
	// unhealthy (0: DefaultHealthFall).
	HealthCheckFall int
	// ConntrackSync replicates every HA router's connection tracking state
	// from its master to its backups (package ctsync), so connections
	// survive a failover.
	ConntrackSync bool
	Logger        *slog.Logger
}

// Linux is the data plane. It implements agent.Dataplane.
type Linux struct {
	cfg    Config
	driver HADriver
	log    *slog.Logger
	report agent.ReportFunc // set by Start

	mu      sync.Mutex
	skipped map[string]string // router or network id → reason last logged
	// states is the last HA state the driver reported per router.
	states map[string]string
	// health checks the gateways; nil when HealthCheckInterval is 0.
	health *HealthChecker
	// conns syncs the HA routers' conntrack tables; nil when
	// ConntrackSync is off.
	conns *connSync
}

var _ agent.Dataplane = (*Linux)(nil)

// New returns the Linux data plane using driver for HA routers.
func New(cfg Config, driver HADriver) *Linux {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Linux{cfg: cfg, driver: driver, log: log, skipped: map[string]string{}, states: map[string]string{}}
	if cfg.ConntrackSync {
		l.conns = newConnSync(log)
	}
	return l
}

// Start implements agent.Dataplane: the HA driver adopts running VRRP
// instances (so a restarted agent disturbs no master) and reports states.
func (l *Linux) Start(ctx context.Context, report agent.ReportFunc) error {
	l.report = report
	if err := l.startHealthChecks(ctx); err != nil {
		return err
	}
	return l.driver.Start(ctx, func(routerID, state, reason string) {
		l.mu.Lock()
		l.states[routerID] = state
		l.mu.Unlock()
		if l.conns != nil {
			l.conns.setState(routerID, state)
		}
		report(agent.Transition{RouterID: routerID, State: state, Reason: reason})
	})
}

// Stop ends the data plane when the agent exits: see HADriver.Stop. The
// kernel objects stay: a restarted agent adopts them.
func (l *Linux) Stop(ctx context.Context, resign bool) error {
	err := l.driver.Stop(ctx, resign)
	if l.conns != nil {
		l.conns.close()
	}
	return err
}

// Apply implements agent.Dataplane.
func (l *Linux) Apply(ctx context.Context, st agentapi.DesiredState) error {
	p := MakePlan(st, PlanOptions{Suffix: l.cfg.Suffix, LocalIP: l.cfg.LocalIP, Mappings: l.cfg.Mappings, ExternalL2: l.cfg.ExternalL2})
	l.logSkipped(p)
	if l.health != nil {
		l.health.Set(GatewayTargets(p))
	}
	var errs []error
	wanted := map[string]bool{}
	for _, n := range p.Networks {
		if err := l.applyNetwork(n); err != nil {
			errs = append(errs, fmt.Errorf("network %s: %w", n.ID, err))
		}
	}
	// Before any router's VRRP starts: the node's router ports do not hear
	// each other's gratuitous ARP, nor ARP requests for addresses that are
	// not the routers' (see linux.SyncAnnouncementFilter).
	if err := linux.SyncAnnouncementFilter(l.cfg.Node, p.Announced(), p.RouterPorts()); err != nil {
		errs = append(errs, err)
	}
	for _, r := range p.Routers {
		wanted[r.Namespace] = true
		if err := l.applyRouter(ctx, r); err != nil {
			l.log.Error("router not converged", "router_id", r.ID, "err", err)
			errs = append(errs, fmt.Errorf("router %s: %w", r.ID, err))
		}
	}
	// A router skipped for bad data keeps what it already has: removing it
	// would turn a server-side mistake into an outage.
	for id := range p.Skipped {
		wanted[linux.RouterNamespace(id, l.cfg.Suffix)] = true
	}
	if err := l.removeStaleRouters(ctx, wanted, adminDownHA(st)); err != nil {
		errs = append(errs, err)
	}
	if !l.cfg.ExternalL2 {
		if err := l.removeStaleNetworks(p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (l *Linux) logSkipped(p Plan) {
	l.mu.Lock()
	defer l.mu.Unlock()
	seen := map[string]bool{}
	for id, err := range p.Skipped {
		seen[id] = true
		if l.skipped[id] != err.Error() {
			l.skipped[id] = err.Error()
			l.log.Error("skipping router: bad desired state from the server", "router_id", id, "err", err)
		}
	}
	for id, err := range p.SkippedNetworks {
		seen[id] = true
		if l.skipped[id] != err.Error() {
			l.skipped[id] = err.Error()
			l.log.Error("skipping network: cannot wire it on this node", "network_id", id, "err", err)
		}
	}
	for id := range l.skipped {
		if !seen[id] {
			delete(l.skipped, id)
		}
	}
}

func (l *Linux) applyNetwork(n NetworkPlan) error {
	if err := linux.EnsureBridge(l.cfg.Node, n.Bridge, n.MTU); err != nil {
		return err
	}
	if n.VXLAN != nil {
		if err := linux.EnsureVXLAN(l.cfg.Node, *n.VXLAN); err != nil {
			return err
		}
		return linux.SyncFloodPeers(l.cfg.Node, n.VXLAN.Name, n.Peers)
	}
	return linux.EnsurePhysicalInBridge(l.cfg.Node, n.Physical, n.Bridge)
}

// routerSysctls: forwarding on; non-local bind so services can bind VIPs
// before they arrive; IPv6 off so a backup never sends MLD/RS from its qg-
// and teaches switches the wrong port (LP#1859832).
var routerSysctls = map[string]string{
	"net.ipv4.ip_forward":                "1",
	"net.ipv4.ip_nonlocal_bind":          "1",
	"net.ipv6.conf.all.disable_ipv6":     "1",
	"net.ipv6.conf.default.disable_ipv6": "1",
	"net.ipv4.conf.all.arp_ignore":       "1",
}

func (l *Linux) applyRouter(ctx context.Context, r RouterPlan) error {
	if err := linux.CreateNamespace(r.Namespace); err != nil {
		return err
	}
	if err := linux.SetSysctls(r.Namespace, routerSysctls); err != nil {
		return err
	}
	wantDev := map[string]bool{}
	for _, pp := range r.Ports {
		wantDev[pp.Dev] = true
		if err := linux.EnsureVeth(l.cfg.Node, linux.Veth{NodeSide: pp.Tap, Bridge: pp.Bridge, NS: r.Namespace, NSSide: pp.Dev, MAC: pp.MAC, MTU: pp.MTU}); err != nil {
			return fmt.Errorf("port %s: %w", pp.PortID, err)
		}
	}
	if err := l.removeStaleDevices(r.Namespace, wantDev); err != nil {
		return err
	}
	if err := linux.ApplyNAT(r.Namespace, r.NAT); err != nil {
		return err
	}
	if r.HA == nil {
		return l.applyLegacyAddresses(r)
	}
	// The ha- device keeps this node's HA address; the VIP and the router's
	// addresses belong to VRRP and are never touched here.
	vip := r.HA.VIP
	if err := linux.SyncAddressesOwned(r.Namespace, r.HA.HADevice, []netip.Prefix{r.HA.HAAddress}, func(p netip.Prefix) bool { return p != vip }); err != nil {
		return err
	}
	if r.HAPending && !slices.Contains(l.driver.Running(), r.ID) {
		l.log.Info("router wired; VRRP waits for its HA port to be bound", "router_id", r.ID)
		return nil
	}
	if err := l.driver.Ensure(ctx, *r.HA); err != nil {
		return err
	}
	if l.conns != nil {
		l.mu.Lock()
		state := l.states[r.ID]
		l.mu.Unlock()
		if err := l.conns.ensure(*r.HA, state); err != nil {
			return fmt.Errorf("conntrack sync: %w", err)
		}
	}
	return nil
}

func (l *Linux) applyLegacyAddresses(r RouterPlan) error {
	byDev := map[string][]netip.Prefix{}
	for _, pp := range r.Ports {
		byDev[pp.Dev] = nil
	}
	for _, a := range r.Addrs {
		byDev[a.Dev] = append(byDev[a.Dev], a.Prefix)
	}
	for dev, want := range byDev {
		if err := linux.SyncAddresses(r.Namespace, dev, want); err != nil {
			return err
		}
	}
	routes := make([]linux.Route, 0, len(r.Routes))
	for _, rt := range r.Routes {
		routes = append(routes, linux.Route{Dst: rt.Dst, Gateway: rt.Gateway, Dev: rt.Dev})
	}
	return linux.SyncRoutes(r.Namespace, linux.RouteProtocol, routes)
}

func (l *Linux) removeStaleDevices(ns string, want map[string]bool) error {
	for _, prefix := range []string{linux.PrefixInternal, linux.PrefixGateway, linux.PrefixHA} {
		links, err := linux.Links(ns, prefix)
		if err != nil {
			return err
		}
		for _, k := range links {
			if !want[k.Name] {
				if err := linux.DeleteLink(ns, k.Name); err != nil {
					return err
				}
				l.log.Info("removed router device no longer wanted", "namespace", ns, "device", k.Name)
			}
		}
	}
	return nil
}

// adminDownHA is the set of HA routers of st that are administratively
// down: not run, though still bound to the node.
func adminDownHA(st agentapi.DesiredState) map[string]bool {
	out := map[string]bool{}
	for _, r := range st.Routers {
		if r.HA && !r.AdminStateUp {
			out[r.ID] = true
		}
	}
	return out
}

// removeStaleRouters removes the routers not wanted. A router the HA
// driver ran that goes because it is admin down (adminDown) is reported
// standby with reason admin_down: the driver reports nothing for a router
// it removes, and the router is still the node's.
func (l *Linux) removeStaleRouters(ctx context.Context, wanted, adminDown map[string]bool) error {
	var errs []error
	running := map[string]bool{}
	for _, id := range l.driver.Running() {
		running[id] = true
	}
	removed := func(id string) {
		if running[id] && adminDown[id] && l.report != nil {
			l.report(agent.Transition{RouterID: id, State: agentapi.HAStandby, Reason: agentapi.ReasonAdminDown})
		}
		if l.conns != nil {
			l.conns.remove(id)
		}
		delete(running, id)
	}
	nss, err := linux.ListNamespaces(linux.PrefixRouterNS)
	if err != nil {
		return err
	}
	for _, ns := range nss {
		id, ours := isRouterNamespace(ns, l.cfg.Suffix)
		if !ours || wanted[ns] {
			continue
		}
		// VRRP goes first (a master resigns), then the namespace.
		if err := l.driver.Remove(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("stopping VRRP of router %s: %w", id, err))
			continue
		}
		removed(id)
		if err := linux.DeleteNamespace(ns); err != nil {
			errs = append(errs, err)
			continue
		}
		l.log.Info("removed router", "router_id", id, "namespace", ns)
	}
	for id := range running {
		if !wanted[linux.RouterNamespace(id, l.cfg.Suffix)] {
			if err := l.driver.Remove(ctx, id); err != nil {
				errs = append(errs, err)
				continue
			}
			removed(id)
		}
	}
	return errors.Join(errs...)
}

func (l *Linux) removeStaleNetworks(p Plan) error {
	want := map[string]bool{}
	for _, n := range p.Networks {
		want[n.Bridge] = true
		if n.VXLAN != nil {
			want[n.VXLAN.Name] = true
		}
	}
	// Networks skipped for bad data keep their wiring (see Apply).
	for id := range p.SkippedNetworks {
		want[linux.BridgeName(id)] = true
	}
	var errs []error
	for _, prefix := range []string{linux.PrefixVXLAN, linux.PrefixBridge} {
		links, err := linux.Links(l.cfg.Node, prefix)
		if err != nil {
			return err
		}
		for _, k := range links {
			if want[k.Name] || (prefix == linux.PrefixVXLAN && len(p.SkippedNetworks) > 0) {
				continue
			}
			if err := linux.DeleteLink(l.cfg.Node, k.Name); err != nil {
				errs = append(errs, err)
				continue
			}
			l.log.Info("removed network device no longer wanted", "device", k.Name)
		}
	}
	return errors.Join(errs...)
}
