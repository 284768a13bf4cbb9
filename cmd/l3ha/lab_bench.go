package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/l3ha/l3ha/internal/lab"
)

// labBenchFlags are the flags of `lab bench failover|converge`.
type labBenchFlags struct {
	driver    string
	advertInt string
	routers   int
	keep      bool
	asJSON    bool
	profile   string
	profSecs  int
	perNet    int
}

func (f *labBenchFlags) register(fs *pflag.FlagSet) {
	fs.IntVar(&f.routers, "routers", 1, "number of HA routers (N)")
	fs.StringVar(&f.driver, "driver", "native", "HA driver of every agent: native or keepalived")
	fs.StringVar(&f.advertInt, "advert-int", "", "VRRP advert interval in seconds (default: native 0.1 (VRRPv3), keepalived 2 (VRRPv2, Neutron's default)); fractional means VRRPv3")
	fs.BoolVar(&f.keep, "keep", false, "leave the benchmark's lab up afterwards")
	fs.BoolVar(&f.asJSON, "json", false, "print the result as one JSON object")
	fs.StringVar(&f.profile, "profile", "", "directory for a CPU profile (go tool pprof) of the agent that takes over / converges (started with --pprof-bind)")
	fs.IntVar(&f.profSecs, "profile-seconds", 0, "length of that profile (default failover 5, converge 15)")
	fs.IntVar(&f.perNet, "ha-routers-per-network", lab.DefaultBenchRoutersPerNetwork, "the server's l3_ha_routers_per_network: routers sharing one HA network, i.e. one VRRP flood domain (254: Neutron's one HA network per project)")
}

// benchLabOptions are the lab options of a benchmark: its own lab (default
// name "bench" unless --name is given).
func benchLabOptions(common *labFlags, cmd *cobra.Command, driver, advert string, perNet int) lab.Options {
	o := common.options(nil, cmd)
	if !cmd.Flags().Changed("name") {
		o.Name = lab.BenchLabName
	}
	o.HADriver, o.AdvertInt, o.HARoutersPerNetwork = driver, advert, perNet
	return o
}

func newLabBenchCommand(common *labFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Benchmarks at scale: failover and convergence of N HA routers, keepalived vs native",
		Long: `Benchmarks in a lab of their own (default name "bench"; brought up, and down
at the end unless --keep; needs root):

  l3ha lab bench failover --routers 500 --driver native --advert-int 0.1 --fault node
      N routers with all masters on net2; fail net2; per router: when net1
      holds the VIPs (kernel), when the router answers the upstream's probes
      again (data plane), when the API shows net1 active; p50/p95/max and the
      time until all N moved, lost probes.
  l3ha lab bench converge --routers 500 --driver keepalived
      an agent starting with N routers bound to it: time until every router
      is wired, runs VRRP, is master and shows active in the API; the agent's
      (and keepalived's) RSS and CPU.
  l3ha lab bench compare --out bench
      both for N in 1,10,100,500 and every driver configuration (what make
      bench runs): bench/results.json and bench/failover.svg.
  l3ha lab bench plot --in bench/results.json --out bench/failover.svg`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newLabBenchFailoverCommand(common), newLabBenchConvergeCommand(common),
		newLabBenchCompareCommand(common), newLabBenchPlotCommand())
	return cmd
}

func newLabBenchFailoverCommand(common *labFlags) *cobra.Command {
	var (
		f         labBenchFlags
		fault     string
		probeRate int
		timeout   time.Duration
		settle    time.Duration
	)
	cmd := &cobra.Command{
		Use:   "failover",
		Short: "Fail the node holding N routers' masters and measure when each moved (kernel, data plane, API)",
		Long: `Bring a lab of its own up (server with min_l3_agents_per_router 1 and
--ha-routers-per-network, default 1), create N HA routers with gateways on
the external network (a /22 beside the lab's /24) while net1 is
administratively down, so that every router's binding index 1 — its
master — is on net2; then let net1 have them as backups. Inject the fault
into net2 and measure, per router, from the fault:

  vip        net1's router namespace holds the gateway address and the VIP
             (address notifications, timestamped by this process)
  dataplane  the router answers again: the upstream host probes every
             gateway address round-robin from one raw ICMP socket, each
             router every max(10ms, N/--probe-rate) — 10 ms up to 50
             routers, 100 ms at 500 with the default 5000 probes/s; the time
             is that of the first reply to a probe sent after the router's
             last lost probe
  api        GET /v2.0/routers/{id}/l3-agents shows net1 active

and print p50/p95/max, the time until all N moved, and the lost probes.
Faults: node (net2 cut from the fabric and the external network, its agent
killed), ha-link (every router's ha- device on net2 set down; times run
from each router's own fault), agent-stop (net2's agent stopped with
SIGTERM: its masters resign).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmd.SilenceUsage = true
			ctx, stop := signalContext(cmd)
			defer stop()
			res, err := lab.BenchFailover(ctx, lab.BenchFailoverOptions{
				Options: benchLabOptions(common, cmd, f.driver, f.advertInt, f.perNet),
				Routers: f.routers, Fault: fault, ProbeRate: probeRate, Timeout: timeout, Settle: settle,
				Keep: f.keep, ProfileDir: f.profile, ProfileSeconds: f.profSecs,
			})
			if res == nil {
				return err
			}
			return writeBenchResult(cmd, f.asJSON, res, &res.Error, err)
		},
	}
	fs := cmd.Flags()
	f.register(fs)
	fs.StringVar(&fault, "fault", lab.FaultNode, "fault injected into the node holding the masters: node, ha-link or agent-stop")
	fs.IntVar(&probeRate, "probe-rate", lab.DefaultBenchProbeRate, "probes per second, all routers together: each router is probed every max(10ms, routers/rate)")
	fs.DurationVar(&timeout, "timeout", 0, "how long to wait after the fault (default 30s + 10 adverts + 40ms per router)")
	fs.DurationVar(&settle, "settle", time.Second, "how long probes go on after every router moved")
	return cmd
}

func newLabBenchConvergeCommand(common *labFlags) *cobra.Command {
	var (
		f       labBenchFlags
		timeout time.Duration
		idle    time.Duration
	)
	cmd := &cobra.Command{
		Use:   "converge",
		Short: "Start an agent with N routers bound to it and measure its convergence, RSS and CPU",
		Long: `Bring a lab of its own up, stop net2's agent, create N HA routers (net1 is
administratively down, so all are bound to net2 alone), start net2's agent
and measure from its start until every router's namespace exists, every
router has a VRRP state file (the HA driver runs VRRP for it), every one is
master (alone, after Master_Down_Interval), and the API shows net2 active
for every one. Then read the agent's VmRSS, VmHWM and utime+stime (and the
same summed over the node's keepalived processes), and their CPU use over
--idle-window.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmd.SilenceUsage = true
			ctx, stop := signalContext(cmd)
			defer stop()
			res, err := lab.BenchConverge(ctx, lab.BenchConvergeOptions{
				Options: benchLabOptions(common, cmd, f.driver, f.advertInt, f.perNet),
				Routers: f.routers, Timeout: timeout, IdleWindow: idle,
				Keep: f.keep, ProfileDir: f.profile, ProfileSeconds: f.profSecs,
			})
			if res == nil {
				return err
			}
			return writeBenchResult(cmd, f.asJSON, res, &res.Error, err)
		},
	}
	fs := cmd.Flags()
	f.register(fs)
	fs.DurationVar(&timeout, "timeout", 0, "how long to wait for convergence (default 120s + 200ms per router)")
	fs.DurationVar(&idle, "idle-window", 5*time.Second, "how long CPU use is measured after convergence")
	return cmd
}

func newLabBenchCompareCommand(common *labFlags) *cobra.Command {
	var (
		routers, configs, convConfigs string
		convRouters, probeRate        int
		fault, out, profile           string
		perNet                        int
	)
	cmd := &cobra.Command{
		Use:   "compare",
		Short: "Run the failover benchmark for every N and driver configuration, and the converge benchmark; write results.json and failover.svg",
		Long: `Run the failover benchmark for every N and driver configuration, then the
converge benchmark, each in a lab of its own, and write results.json (after
every case) and failover.svg (failover time against N, both axes log).

A case whose system does not get somewhere in time (all routers reporting a
VRRP state, say) is a result: it is recorded with its error in
results.json and the tables, and the run goes on and succeeds. Anything
else that fails (the lab itself) makes the run fail.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmd.SilenceUsage = true
			ctx, stop := signalContext(cmd)
			defer stop()
			var ns []int
			for _, s := range strings.Split(routers, ",") {
				n, err := strconv.Atoi(strings.TrimSpace(s))
				if err != nil || n < 1 {
					return fmt.Errorf("--routers %q: want a list of positive numbers", routers)
				}
				ns = append(ns, n)
			}
			cs, err := lab.ParseBenchConfigs(configs)
			if err != nil {
				return err
			}
			ccs, err := lab.ParseBenchConfigs(convConfigs)
			if err != nil {
				return err
			}
			o := benchLabOptions(common, cmd, "", "", perNet)
			res, err := lab.BenchCompare(ctx, lab.BenchCompareOptions{
				Options: o, Routers: ns, Configs: cs, Fault: fault, ProbeRate: probeRate,
				ConvergeRouters: convRouters, ConvergeConfigs: ccs, OutDir: out, ProfileDir: profile,
				Command: "l3ha lab bench compare " + strings.Join(os.Args[4:], " "),
			})
			if res != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "results: %s, plot: %s\n\n", filepath.Join(out, "results.json"), filepath.Join(out, "failover.svg"))
				err = errors.Join(err, res.WriteTable(cmd.OutOrStdout()))
			}
			return err
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&routers, "routers", "1,10,100,500", "numbers of routers of the failover runs")
	fs.StringVar(&configs, "configs", "native:0.1,keepalived:2,keepalived:1,keepalived:2:254", "driver configurations DRIVER:ADVERT_SECONDS[:HA_ROUTERS_PER_NETWORK] of the failover runs (keepalived:1 is VRRPv2 at its shortest interval; :254 is Neutron's one HA network per project)")
	fs.IntVar(&convRouters, "converge-routers", 500, "routers of the converge runs (0: none)")
	fs.StringVar(&convConfigs, "converge-configs", "native:0.1,keepalived:2", "driver configurations of the converge runs")
	fs.StringVar(&fault, "fault", lab.FaultNode, "fault of the failover runs: node, ha-link or agent-stop")
	fs.IntVar(&probeRate, "probe-rate", lab.DefaultBenchProbeRate, "prober's total rate (probes per second)")
	fs.StringVar(&out, "out", "bench", "directory for results.json and failover.svg")
	fs.StringVar(&profile, "profile", "", "directory for CPU profiles of the largest runs' agents")
	fs.IntVar(&perNet, "ha-routers-per-network", lab.DefaultBenchRoutersPerNetwork, "the server's l3_ha_routers_per_network (254: Neutron's one HA network per project)")
	return cmd
}

func newLabBenchPlotCommand() *cobra.Command {
	var in, out string
	cmd := &cobra.Command{
		Use:   "plot",
		Short: "Draw failover.svg (and print the tables) from a results.json",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmd.SilenceUsage = true
			res, err := lab.ReadBenchResults(in)
			if err != nil {
				return err
			}
			f, err := os.Create(out)
			if err != nil {
				return err
			}
			if err := errors.Join(lab.WriteFailoverSVG(f, res.Failover, res.Machine.Summary()), f.Close()); err != nil {
				return err
			}
			return res.WriteTable(cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&in, "in", "bench/results.json", "results file")
	cmd.Flags().StringVar(&out, "out", "bench/failover.svg", "SVG to write")
	return cmd
}

// benchResult is what `lab bench failover` and `converge` print.
type benchResult interface {
	WriteJSON(io.Writer) error
	WriteTable(io.Writer) error
}

// writeBenchResult records the benchmark's error err in the result (its
// field errField) and prints the result as JSON or a table; it returns err
// joined with any error printing it.
func writeBenchResult(cmd *cobra.Command, asJSON bool, res benchResult, errField *string, err error) error {
	if err != nil {
		*errField = err.Error()
	}
	var werr error
	if wantJSON(cmd, asJSON) {
		werr = res.WriteJSON(cmd.OutOrStdout())
	} else {
		werr = res.WriteTable(cmd.OutOrStdout())
	}
	return errors.Join(err, werr)
}
