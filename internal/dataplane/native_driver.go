package dataplane

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/l3ha/l3ha/internal/agentapi"
	"github.com/l3ha/l3ha/internal/vrrp"
	"github.com/l3ha/l3ha/internal/vrrp/engine"
)

// NativeOptions configures the native VRRP driver. The VRRP settings are
// the agent's --ha-vrrp-* options, as for the keepalived driver.
type NativeOptions struct {
	// StateDir is the agent's state directory: routers are remembered in
	// ha_confs/<router_id>/vrrp.json, beside the agent's state file, so
	// that a restarted agent adopts them before it hears from its server.
	StateDir string
	// Version is 2 or 3 (0: 2); AdvertInt the advert interval (v2 whole
	// seconds, v3 whole centiseconds; 0: 2s); Password the v2 PASS password
	// (empty: no authentication).
	Version   int
	AdvertInt time.Duration
	Password  string
	// Pace, with v2, is the advert interval between l3ha nodes
	// (vrrp.Config.Pace); 0: none.
	Pace time.Duration
	// Priority is 1..254, 0 meaning 50 as Neutron.
	Priority int
	// GARPDelay is garp_master_delay (0: 60s as Neutron; negative: none).
	GARPDelay time.Duration
	// HealthPreempt: backups take over from a master whose gateway health
	// check failed (engine.Options.HealthPreempt); set with health checks.
	HealthPreempt bool
	Logger        *slog.Logger
	// Registerer receives the engine's metrics; nil: none.
	Registerer prometheus.Registerer
}

// NativeDriver runs VRRP in the agent's own process (internal/vrrp/engine):
// one engine for all the routers of the node.
type NativeDriver struct {
	e   *engine.Engine
	log *slog.Logger

	mu sync.Mutex
	// switched is, per router, the last switchover request acted on, so
	// that each is acted on once however often the state is applied.
	switched map[string]string
}

var _ HADriver = (*NativeDriver)(nil)

// NewNativeDriver returns the native driver; nothing runs before Start.
func NewNativeDriver(o NativeOptions) (*NativeDriver, error) {
	if o.Priority < 0 || o.Priority > 254 {
		return nil, fmt.Errorf("native VRRP: priority %d, want 1..254", o.Priority)
	}
	e, err := engine.New(engine.Options{
		Version:        o.Version,
		AdvertInterval: o.AdvertInt,
		Password:       o.Password,
		Pace:           o.Pace,
		Priority:       uint8(o.Priority),
		GARPDelay:      o.GARPDelay,
		HealthPreempt:  o.HealthPreempt,
		StateDir:       o.StateDir,
		Logger:         o.Logger,
		Registerer:     o.Registerer,
	})
	if err != nil {
		return nil, err
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &NativeDriver{e: e, log: log, switched: map[string]string{}}, nil
}

// Engine returns the driver's engine (status, drop counters).
func (d *NativeDriver) Engine() *engine.Engine { return d.e }

// Start implements HADriver: the routers an earlier agent ran are adopted at
// once (masters stay masters) and their states reported. The engine runs
// until Stop, not until ctx ends: the agent cancels ctx first and then says
// with Stop whether its masters resign.
func (d *NativeDriver) Start(ctx context.Context, report func(routerID, state, reason string)) error {
	return d.e.Start(context.WithoutCancel(ctx), func(id string, st vrrp.State, cause vrrp.Cause) {
		switch st {
		case vrrp.Master:
			report(id, agentapi.HAActive, nativeReason(cause))
		case vrrp.Backup:
			report(id, agentapi.HAStandby, nativeReason(cause))
		}
	})
}

// nativeReason is the reason (agentapi.Reason*) of a transition the native
// engine reports with cause:
//
//	cause            reason           because
//	startup          startup          the router started here (as backup,
//	                                  or electing itself with no master
//	                                  heard since it started)
//	address_owner    startup          priority 255 takes over at start
//	                                  (l3ha never configures it)
//	adopted          restart_adopted  a restarted agent's engine found the
//	                                  node master and kept it so
//	master_down      peer_lost        the master went silent (its node,
//	                                  link or agent died)
//	master_resigned  peer_resigned    the master sent priority 0 (its agent
//	                                  stopped gracefully, or its router went)
//	higher_priority  split_brain      a master heard another, better master:
//	                                  there were two, now one
//	preempt          ""               a backup that outranks a live master
//	                                  took over (l3ha runs nopreempt, as
//	                                  Neutron: it does not happen)
//	resign, shutdown ""               this node stopped the router: an agent
//	                                  stopping (whose report never leaves)
//	                                  or a router removed; one removed
//	                                  because it is admin down is reported
//	                                  by Linux.Apply with admin_down
//	switchover       switchover       an operator moved the master here
//	                                  (the old master's step-down is a
//	                                  higher_priority, which the server
//	                                  records as the switchover)
//	health_check     health_check     a master whose gateway check failed
//	                                  stepped down, or a healthy backup
//	                                  took over from it
//	fault            ""               the ha- device went down; none of the
//	                                  reasons says that
func nativeReason(c vrrp.Cause) string {
	switch c {
	case vrrp.CauseStartup, vrrp.CauseOwner:
		return agentapi.ReasonStartup
	case vrrp.CauseAdopted:
		return agentapi.ReasonRestartAdopted
	case vrrp.CauseMasterDown:
		return agentapi.ReasonPeerLost
	case vrrp.CauseMasterResigned:
		return agentapi.ReasonPeerResigned
	case vrrp.CauseHigherPriority:
		return agentapi.ReasonSplitBrain
	case vrrp.CauseSwitchover:
		return agentapi.ReasonSwitchover
	case vrrp.CauseHealthCheck:
		return agentapi.ReasonHealthCheck
	}
	return ""
}

// Ensure implements HADriver.
func (d *NativeDriver) Ensure(ctx context.Context, r HARouter) error {
	er, err := nativeRouter(r, d.e.Options().AdvertInterval)
	if err != nil {
		return err
	}
	if err := d.e.Ensure(ctx, er); err != nil {
		return err
	}
	return d.switchover(ctx, r)
}

// switchover acts once on each switchover request of r that targets this
// node: the engine takes the router over (engine.Switchover). The other
// nodes need do nothing: their master steps down when it hears the target.
func (d *NativeDriver) switchover(ctx context.Context, r HARouter) error {
	sw := r.Switchover
	if sw == nil || !sw.Here {
		return nil
	}
	d.mu.Lock()
	done := d.switched[r.RouterID] == sw.ID
	d.switched[r.RouterID] = sw.ID
	d.mu.Unlock()
	if done {
		return nil
	}
	if err := d.e.Switchover(ctx, r.RouterID); err != nil {
		// Not retried: the operator sees the router stay where it is and
		// the request expire; the log says why.
		d.log.Warn("switchover requested to this node, but it cannot take the router over", "router_id", r.RouterID, "err", err)
	}
	return nil
}

func nativeRouter(r HARouter, advert time.Duration) (engine.Router, error) {
	if r.VRID < 1 || r.VRID > 255 {
		return engine.Router{}, fmt.Errorf("native VRRP: router %s: VRID %d", r.RouterID, r.VRID)
	}
	er := engine.Router{
		ID: r.RouterID, Namespace: r.Namespace, VRID: uint8(r.VRID), Device: r.HADevice,
		Address: r.HAAddress, VIP: r.VIP, StartDelay: StartDelay(r.BindingIndex, advert),
	}
	for _, a := range r.Excluded {
		er.Excluded = append(er.Excluded, engine.Address{Dev: a.Dev, Prefix: a.Prefix})
	}
	for _, rt := range r.Routes {
		er.Routes = append(er.Routes, engine.Route{Dst: rt.Dst, Gateway: rt.Gateway, Dev: rt.Dev})
	}
	return er, nil
}

// SetHealthy implements healthSetter: the router's gateway check result
// goes to its VRRP priority (engine.SetHealthy).
func (d *NativeDriver) SetHealthy(ctx context.Context, routerID string, healthy bool) error {
	return d.e.SetHealthy(ctx, routerID, healthy)
}

// Remove implements HADriver: a master resigns and gives its addresses up.
func (d *NativeDriver) Remove(ctx context.Context, routerID string) error {
	d.mu.Lock()
	delete(d.switched, routerID)
	d.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	return d.e.Remove(ctx, routerID)
}

// Running implements HADriver.
func (d *NativeDriver) Running() []string { return d.e.Running() }

// Stop implements HADriver. With resign (a graceful stop) every master sends
// a priority-0 advert, so that a backup takes over after its Skew_Time,
// keeps forwarding until it has heard the new master (engine.Options
// HandoverGrace), and removes its addresses and routes before Stop returns. Without (a restart
// or upgrade) nothing is sent and nothing removed: the next agent adopts
// every master in its Start, before the backups' Master_Down_Interval runs
// out, so no router changes master.
func (d *NativeDriver) Stop(ctx context.Context, resign bool) error {
	return d.e.Shutdown(ctx, resign)
}
