package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/l3ha/l3ha/internal/vrrp"
)

// ErrNotBackup: a switchover's target must be a running backup.
var ErrNotBackup = errors.New("vrrp engine: router is not a backup here")

// Switchover makes this node the router's master for an operator's
// switchover (vrrp.Machine.TakeOver): a backup installs the router's
// addresses and announces them with gratuitous ARP, and only once they are
// in place sends its first advert, whose higher priority makes the old
// master step down. So the new master holds the addresses before the old
// one drops them. A router that already is master here is left alone (nil);
// one that is not running, faulty or stopping is ErrNotBackup.
func (e *Engine) Switchover(ctx context.Context, routerID string) error {
	e.opMu.Lock()
	defer e.opMu.Unlock()
	var installed chan error
	var target *router
	var stateErr error
	err := e.call(ctx, func() {
		r := e.routers[routerID]
		switch {
		case r == nil:
			stateErr = fmt.Errorf("%w: router %s is not running", ErrNotBackup, routerID)
		case r.m.State() == vrrp.Master:
		case r.fault || r.handover != nil || r.m.State() != vrrp.Backup:
			stateErr = fmt.Errorf("%w: router %s is %v (fault %v)", ErrNotBackup, routerID, r.m.State(), r.fault)
		default:
			now := time.Now()
			e.log.Info("switchover: taking the router over", "router_id", routerID, "vrid", r.spec.VRID)
			installed, target = e.perform(r, r.m.TakeOver(now), now, performOpts{}), r
		}
	})
	if err != nil || stateErr != nil || installed == nil {
		return errors.Join(err, stateErr)
	}
	select {
	case applyErr := <-installed:
		if applyErr != nil {
			// Advertise anyway: a master that does not advertise is a
			// split brain; the applier retries the addresses.
			e.log.Warn("switchover: installing the addresses failed; advertising anyway", "router_id", routerID, "err", applyErr)
		}
	case <-ctx.Done():
	}
	return e.call(context.WithoutCancel(ctx), func() {
		if e.routers[routerID] != target || target.m.State() != vrrp.Master {
			return // lost it meanwhile, or removed
		}
		e.perform(target, target.m.Announce(time.Now()), time.Now(), performOpts{})
	})
}

// SetHealthy passes the result of the router's health check to its
// machine (vrrp.Machine.SetHealthy): an unhealthy master advertises a lower
// priority, so that a healthy backup with Options.HealthPreempt takes over.
// It is kept across restarts of the router's machine; an unknown router is
// not an error (its check may outlive it briefly).
func (e *Engine) SetHealthy(ctx context.Context, routerID string, healthy bool) error {
	return e.call(ctx, func() {
		r := e.routers[routerID]
		if r == nil || r.unhealthy == !healthy {
			return
		}
		r.unhealthy = !healthy
		e.log.Info("health check changed the router's priority", "router_id", routerID, "vrid", r.spec.VRID,
			"healthy", healthy, "state", r.m.State().String())
		now := time.Now()
		e.perform(r, r.m.SetHealthy(now, healthy), now, performOpts{})
	})
}
