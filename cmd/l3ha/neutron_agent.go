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
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/l3ha/l3ha/internal/neutronagent"
)

// newNeutronAgentCommand returns `l3ha neutron-l3-agent`, a drop-in for
// neutron-l3-agent: same command line, same config files.
func newNeutronAgentCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "neutron-l3-agent",
		Short: "Serve a real neutron-server as its L3 agent (a drop-in for neutron-l3-agent)",
		Long: `Serve a real neutron-server as its L3 agent: the same command line and config
files as neutron-l3-agent (--config-file /etc/neutron/neutron.conf
--config-file /etc/neutron/l3_agent.ini [--config-dir DIR]), Neutron's option
names ([DEFAULT] transport_url, host, state_path, interface_driver, agent_mode,
ha_confs_path, ha_vrrp_*, [agent] report_interval) and l3ha's own in [l3ha]
(ha_driver, advert_int, vrrp_version, metrics_bind). It reports as an "L3
agent", runs the routers neutron-server schedules here with l3ha's data plane
and HA driver, and reports HA states back, so one HA router may run on a node
with neutron-l3-agent + keepalived and on a node with l3ha at once.`,
		Args: cobra.NoArgs,
	}
	set := neutronagent.RegisterFlags(cmd.Flags())
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		logger := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
		cfg, err := neutronagent.Load(set, logger)
		if err != nil {
			return err
		}
		cmd.SilenceUsage = true
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		dp, err := linuxDataplane(&agentOptions{
			stateDir: cfg.StatePath, haDriver: cfg.HADriver, advertInt: cfg.L3HAAdvertInt.Seconds(), vrrpVer: cfg.L3HAVersion,
			password: cfg.AuthPassword, externalL2: true,
		}, reg, logger)
		if err != nil {
			return err
		}
		parent := cmd.Context()
		if parent == nil {
			parent = context.Background()
		}
		ctx, cancel := context.WithCancel(parent)
		defer cancel()
		// As `l3ha agent`: SIGTERM/SIGINT resign the masters, SIGUSR2 exits
		// for a restart that keeps VRRP running.
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGUSR2)
		defer signal.Stop(sigs)
		var forRestart atomic.Bool
		go func() {
			select {
			case sig := <-sigs:
				forRestart.Store(sig == syscall.SIGUSR2)
				logger.Info("stopping l3ha neutron-l3-agent", "signal", sig.String(), "resign_masters", sig != syscall.SIGUSR2)
				cancel()
			case <-ctx.Done():
			}
		}()
		if cfg.MetricsBind != "" {
			ln, err := net.Listen("tcp", cfg.MetricsBind)
			if err != nil {
				return fmt.Errorf("[l3ha] metrics_bind: %w", err)
			}
			ms := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 10 * time.Second}
			go func() { _ = ms.Serve(ln) }()
			defer ms.Close()
		}
		logger.Info("starting l3ha neutron-l3-agent", "host", cfg.Host, "ha_driver", cfg.HADriver, "advert_int", cfg.L3HAAdvertInt, "vrrp_version", cfg.L3HAVersion, "state_path", cfg.StatePath)
		err = neutronagent.Run(ctx, cfg, dp, reg, logger)
		if s, ok := dp.(interface {
			Stop(context.Context, bool) error
		}); ok {
			sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer scancel()
			if serr := s.Stop(sctx, !forRestart.Load()); serr != nil {
				logger.Error("stopping the data plane", "err", serr)
				err = errors.Join(err, serr)
			}
		}
		return err
	}
	return cmd
}
