package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/l3ha/l3ha/internal/agent"
)

// agentSignals returns a context that ends on SIGTERM/SIGINT (a graceful
// stop: the masters resign so the backups take over at once) or SIGUSR2
// (exit for a restart or upgrade: VRRP keeps running and the next agent
// adopts it without a transition); forRestart tells which came. Both
// `l3ha agent` and `l3ha neutron-l3-agent` stop this way.
func agentSignals(parent context.Context, logger *slog.Logger, name string) (ctx context.Context, forRestart *atomic.Bool, stop func()) {
	if parent == nil {
		parent = context.Background()
	}
	ctx, cancel := context.WithCancel(parent)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGUSR2)
	forRestart = new(atomic.Bool)
	go func() {
		select {
		case sig := <-sigs:
			forRestart.Store(sig == syscall.SIGUSR2)
			logger.Info("stopping "+name, "signal", sig.String(), "resign_masters", sig != syscall.SIGUSR2)
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, forRestart, func() { signal.Stop(sigs); cancel() }
}

// stopDataplane stops dp, if it can be stopped, after the agent returned
// err: resigning its masters unless the agent exits for a restart.
func stopDataplane(dp agent.Dataplane, forRestart *atomic.Bool, logger *slog.Logger, err error) error {
	s, ok := dp.(interface {
		Stop(context.Context, bool) error
	})
	if !ok {
		return err
	}
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if serr := s.Stop(sctx, !forRestart.Load()); serr != nil {
		logger.Error("stopping the data plane", "err", serr)
		err = errors.Join(err, serr)
	}
	return err
}

// serveMetrics serves reg's metrics on addr until the returned close is
// called; flag names the option in errors.
func serveMetrics(addr, flag string, reg *prometheus.Registry) (func() error, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	ms := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = ms.Serve(ln) }()
	return ms.Close, nil
}
