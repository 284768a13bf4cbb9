package main

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
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
			stateDir: cfg.StatePath, haDriver: cfg.HADriver, advertInt: cfg.L3HAAdvertInt.Seconds(), vrrpVer: cfg.L3HAVersion, pace: cfg.Pace,
			password: cfg.AuthPassword, externalL2: true, host: cfg.Host, healthCheck: cfg.HealthCheckInterval.Seconds(), healthFall: cfg.HealthCheckFall,
			conntrackSync: cfg.ConntrackSync,
		}, reg, logger)
		if err != nil {
			return err
		}
		ctx, forRestart, stopSignals := agentSignals(cmd.Context(), logger, "l3ha neutron-l3-agent")
		defer stopSignals()
		if cfg.MetricsBind != "" {
			closeMetrics, err := serveMetrics(cfg.MetricsBind, "[l3ha] metrics_bind", reg)
			if err != nil {
				return err
			}
			defer closeMetrics()
		}
		logger.Info("starting l3ha neutron-l3-agent", "host", cfg.Host, "ha_driver", cfg.HADriver, "advert_int", cfg.L3HAAdvertInt, "vrrp_version", cfg.L3HAVersion, "pace", cfg.Pace, "state_path", cfg.StatePath)
		err = neutronagent.Run(ctx, cfg, dp, reg, logger)
		return stopDataplane(dp, forRestart, logger, err)
	}
	return cmd
}
