package dataplane

import (
	"context"
	"errors"

	"github.com/l3ha/l3ha/internal/agent"
	"github.com/l3ha/l3ha/internal/agentapi"
	"github.com/l3ha/l3ha/internal/linux"
)

// healthSetter is a driver that takes gateway health into VRRP: an
// unhealthy master advertises a lower priority, so that a backup whose
// gateway answers takes the router over (the native driver).
type healthSetter interface {
	SetHealthy(ctx context.Context, routerID string, healthy bool) error
}

// startHealthChecks starts the gateway checks when they are configured:
// every HA router's gateway is probed from its qg- device on every node
// (backups too, so that a master only hands over to a node whose gateway
// answers); each change of health goes to the driver. A master that turns
// unhealthy is also reported (its state unchanged, reason health_check), so
// that the history says why when there is no healthier node to move to.
func (l *Linux) startHealthChecks(ctx context.Context) error {
	if l.cfg.HealthCheckInterval <= 0 {
		return nil
	}
	setter, ok := l.driver.(healthSetter)
	if !ok {
		return errors.New("gateway health checks need an HA driver that takes them into VRRP (the native one)")
	}
	hc, err := NewHealthChecker(HealthCheckConfig{
		Interval: l.cfg.HealthCheckInterval,
		Fall:     l.cfg.HealthCheckFall,
		Open: func(routerID, ns, dev string) GatewayProbe {
			return linux.NewGatewayProber(ns, dev, linux.ProbeMAC(l.cfg.Host, routerID))
		},
		OnChange: func(routerID string, healthy bool) {
			if err := setter.SetHealthy(context.WithoutCancel(ctx), routerID, healthy); err != nil {
				l.log.Warn("passing the gateway's health to VRRP", "router_id", routerID, "healthy", healthy, "err", err)
			}
			l.mu.Lock()
			state := l.states[routerID]
			l.mu.Unlock()
			if !healthy && state == agentapi.HAActive {
				l.report(agent.Transition{RouterID: routerID, State: state, Reason: agentapi.ReasonHealthCheck})
			}
		},
		Logger: l.log,
	})
	if err != nil {
		return err
	}
	l.health = hc
	go func() {
		if err := hc.Run(ctx); err != nil && ctx.Err() == nil {
			l.log.Error("gateway health checks stopped", "err", err)
		}
	}()
	l.log.Info("gateway health checks on", "interval", l.cfg.HealthCheckInterval)
	return nil
}
