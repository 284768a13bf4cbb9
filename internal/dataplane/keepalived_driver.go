package dataplane

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/l3ha/l3ha/internal/agentapi"
	"github.com/l3ha/l3ha/internal/keepalived"
)

// KeepalivedDriver runs VRRP with one supervised keepalived per router, in
// Neutron's keepalived.conf shape (internal/keepalived).
type KeepalivedDriver struct {
	opts     keepalived.Options
	settings keepalived.Settings
	m        *keepalived.Manager

	mu        sync.Mutex
	adopting  bool            // within Start's Adopt
	firstSeen map[string]bool // routers whose first state was reported
}

// NewKeepalivedDriver returns the driver; settings carry the VRRP options
// (advert interval, version, password).
func NewKeepalivedDriver(opts keepalived.Options, settings keepalived.Settings) *KeepalivedDriver {
	return &KeepalivedDriver{opts: opts, settings: settings}
}

// Start implements HADriver: running keepalived processes are adopted, not
// restarted, so masters stay masters across agent restarts.
//
// keepalived tells a router's new state, not why it changed, so the
// reasons are what the driver itself knows: the first state of a router
// whose keepalived it adopted (reported before Adopt returns) is
// restart_adopted, the first state of one it started is startup, and every
// later transition has none ("").
func (d *KeepalivedDriver) Start(ctx context.Context, report func(routerID, state, reason string)) error {
	d.mu.Lock()
	d.firstSeen = map[string]bool{}
	d.adopting = true
	d.mu.Unlock()
	d.opts.OnTransition = func(id, state string) { report(id, state, d.reasonOf(id)) }
	m, err := keepalived.New(d.opts)
	if err != nil {
		return err
	}
	d.m = m
	_, err = m.Adopt(ctx)
	d.mu.Lock()
	d.adopting = false
	d.mu.Unlock()
	return err
}

// reasonOf is the reason of the state the router's watcher just reported
// (see Start).
func (d *KeepalivedDriver) reasonOf(routerID string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.firstSeen[routerID]:
		return ""
	case d.adopting:
		d.firstSeen[routerID] = true
		return agentapi.ReasonRestartAdopted
	}
	d.firstSeen[routerID] = true
	return agentapi.ReasonStartup
}

// Stop implements HADriver. Resigning stops each keepalived, which sends
// priority-0 adverts and drops the router's addresses; otherwise the
// processes are left running for the next agent to adopt. The keepalived
// processes are stopped all at once, not one after the other: each takes
// about a second to exit, and a router whose keepalived is stopped last
// would otherwise keep its master that long times the number of routers.
func (d *KeepalivedDriver) Stop(ctx context.Context, resign bool) error {
	if d.m == nil {
		return nil
	}
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	if resign {
		for _, id := range d.m.Routers() {
			wg.Go(func() {
				if err := d.m.Remove(ctx, id); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	}
	errs = append(errs, d.m.Close())
	return errors.Join(errs...)
}

// Ensure implements HADriver.
func (d *KeepalivedDriver) Ensure(ctx context.Context, r HARouter) error {
	return d.m.Ensure(ctx, r.RouterID, r.Namespace, d.config(r))
}

func (d *KeepalivedDriver) config(r HARouter) keepalived.Config {
	c := keepalived.Config{
		RouterID: r.RouterID, VRID: r.VRID, HAInterface: r.HADevice, Priority: d.settings.Priority,
		AdvertInt: d.settings.AdvertInt, Version: d.settings.Version,
		AuthType: d.settings.AuthType, AuthPassword: d.settings.AuthPassword,
		StartupDelay: StartDelay(r.BindingIndex, d.advert()),
	}
	for _, a := range r.Excluded {
		c.Excluded = append(c.Excluded, keepalived.Address{Prefix: a.Prefix, Dev: a.Dev})
	}
	for _, rt := range r.Routes {
		c.Routes = append(c.Routes, keepalived.Route{Destination: rt.Dst, Via: rt.Gateway, Dev: rt.Dev, Protocol: d.settings.RouteProtocol})
	}
	if sw := r.Switchover; sw != nil && sw.Here {
		// keepalived cannot be told to take over. What it allows: while
		// the switchover lasts, this node's instance outranks the others
		// and preempts, so it lets the master's adverts time out
		// (Master_Down_Interval, 3 adverts and the skew) and takes over;
		// the old master steps down when it hears the higher priority, so
		// nothing is lost, but it takes seconds. When the server ends the
		// switchover (this node reported master) the config goes back to
		// Neutron's and keepalived, reloaded, stays master.
		prio := c.Priority
		if prio == 0 {
			prio = 50
		}
		c.Priority, c.Preempt = min(prio+1, 254), true
	}
	return c
}

func (d *KeepalivedDriver) advert() time.Duration {
	if d.settings.AdvertInt > 0 {
		return d.settings.AdvertInt
	}
	return 2 * time.Second // Neutron's ha_vrrp_advert_int
}

// Remove implements HADriver.
func (d *KeepalivedDriver) Remove(ctx context.Context, routerID string) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	err := d.m.Remove(ctx, routerID)
	if err == nil {
		d.mu.Lock()
		delete(d.firstSeen, routerID) // started again: startup again
		d.mu.Unlock()
	}
	return err
}

// Running implements HADriver.
func (d *KeepalivedDriver) Running() []string {
	if d.m == nil {
		return nil
	}
	return d.m.Routers()
}
