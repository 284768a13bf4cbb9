package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/l3ha/l3ha/internal/lab"
)

// labFlags are the flags shared by the lab subcommands.
type labFlags struct {
	name string
	dir  string
}

func (f *labFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.name, "name", "lab", "lab name: its namespaces are l3ha-<name>-*")
	fs.StringVar(&f.dir, "dir", "", "lab directory: lab.json, state, logs (default "+lab.DefaultRunDir+"/<name>)")
}

// labUpFlags are the flags that shape a new lab.
type labUpFlags struct {
	dataplane     string
	haDriver      string
	advertInt     string
	healthCheck   string
	conntrackSync string
	agentDownTime int
	keystone      bool
}

func (f *labUpFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.dataplane, "dataplane", lab.DataplaneLinux, "data plane of the agents: linux or fake (fake touches nothing; for testing the lab itself)")
	fs.StringVar(&f.haDriver, "ha-driver", "", "HA driver passed to the agents as --ha-driver: keepalived or native for every node, or per node as net1=keepalived,net2=native (mixed drivers need --ha-vrrp-advert-int; default: the agent's)")
	fs.StringVar(&f.advertInt, "ha-vrrp-advert-int", "", "VRRP advertisement interval passed to every agent as --ha-vrrp-advert-int (default: the agent's)")
	fs.StringVar(&f.healthCheck, "ha-vrrp-health-check-interval", "", "seconds between gateway health checks, passed to the network nodes' agents as --ha-vrrp-health-check-interval (default: the agent's, off)")
	fs.StringVar(&f.conntrackSync, "ha-conntrack-sync", "", "true or false: passed to the network nodes' agents as --ha-conntrack-sync (default: the agent's, on)")
	fs.IntVar(&f.agentDownTime, "agent-down-time", lab.DefaultAgentDownTime, "the lab server's agent_down_time in seconds")
	fs.BoolVar(&f.keystone, "keystone", false, "run a private Keystone (Debian's keystone) in the controller: the server validates tokens with it (auth_strategy keystone), the lab logs in as its admin, and <dir>/clouds.yaml holds the clouds l3ha-admin, l3ha-member, l3ha-reader for the openstack client run in the controller's namespace")
}

func (f *labFlags) options(up *labUpFlags, cmd *cobra.Command) lab.Options {
	o := lab.Options{Name: f.name, Dir: f.dir, Out: cmd.ErrOrStderr()}
	if up != nil {
		o.Dataplane, o.HADriver, o.AdvertInt, o.AgentDownTime, o.Keystone = up.dataplane, up.haDriver, up.advertInt, up.agentDownTime, up.keystone
		o.HealthCheckInterval, o.ConntrackSync = up.healthCheck, up.conntrackSync
	}
	return o
}

// wantJSON is --json, or the global -o json.
func wantJSON(cmd *cobra.Command, flag bool) bool {
	if flag {
		return true
	}
	if f := cmd.Flags().Lookup("output"); f != nil {
		return f.Value.String() == "json"
	}
	return false
}

// signalContext ends on SIGINT or SIGTERM, so that a scenario interrupted by
// the user still cleans up.
func signalContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	parent := cmd.Context()
	if parent == nil {
		parent = context.Background()
	}
	return signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
}

func newLabCommand() *cobra.Command {
	var common labFlags
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Build a whole l3ha cloud in network namespaces and run failure scenarios in it",
		Long: `Build a whole l3ha cloud on this machine out of network namespaces named
l3ha-<name>-*: a controller that is also network node net1, a second network
node net2, a compute node compute1 with an instance vm1, an external network
with an upstream gateway host, and a VXLAN fabric between the nodes. The lab
runs l3ha server (SQLite) and one l3ha agent per node, touches no real
interface and no address of the root namespace, and needs root.

  l3ha lab up                 build it and start server and agents
  l3ha lab status             namespaces, processes, agents and routers
  l3ha lab failover           the L3 HA blog's failover test, measured
  l3ha lab down               remove everything (idempotent, also after a crash)
  l3ha lab simulate           the control plane alone with many fake agents, measured
  l3ha lab bench              failover and convergence of N HA routers, measured`,
		Args: cobra.NoArgs,
	}
	common.register(cmd.PersistentFlags())
	cmd.AddCommand(newLabUpCommand(&common), newLabStatusCommand(&common), newLabDownCommand(&common), newLabFailoverCommand(&common), newLabSimulateCommand(), newLabBenchCommand(&common))
	return cmd
}

func newLabUpCommand(common *labFlags) *cobra.Command {
	var up labUpFlags
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Build the lab's namespaces and start its server and agents",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmd.SilenceUsage = true
			ctx, stop := signalContext(cmd)
			defer stop()
			st, err := lab.Up(ctx, common.options(&up, cmd))
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "lab %q is up (server %s inside %s; state in %s)\n",
				st.Name, st.ServerURL, lab.NodeNamespace(st.Name, "net1"), st.Dir)
			if st.Keystone != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "try: ip netns exec %s env OS_CLIENT_CONFIG_FILE=%s openstack --os-cloud l3ha-admin network agent list\n",
					lab.NodeNamespace(st.Name, "net1"), st.Keystone.CloudsYAML)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "try: ip netns exec %s %s agent list --url %s --ca-cert %s\n",
				lab.NodeNamespace(st.Name, "net1"), st.Binary, st.ServerURL, lab.CAPath(st.Dir))
			return nil
		},
	}
	up.register(cmd.Flags())
	return cmd
}

func newLabStatusCommand(common *labFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the lab's namespaces, processes, agents and routers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmd.SilenceUsage = true
			r, err := lab.Status(cmd.Context(), common.options(nil, cmd))
			if err != nil {
				return err
			}
			if wantJSON(cmd, asJSON) {
				return r.WriteJSON(cmd.OutOrStdout())
			}
			return r.WriteTable(cmd.OutOrStdout())
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

func newLabDownCommand(common *labFlags) *cobra.Command {
	var keepLogs bool
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Stop the lab's processes and delete its namespaces and directory (idempotent)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmd.SilenceUsage = true
			o := common.options(nil, cmd)
			err := lab.Down(lab.DownOptions{Name: o.Name, Dir: o.Dir, KeepLogs: keepLogs, Out: cmd.ErrOrStderr()})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "lab %q is down\n", o.Name)
			return nil
		},
	}
	cmd.Flags().BoolVar(&keepLogs, "keep-logs", false, "keep <dir>/logs")
	return cmd
}

func newLabFailoverCommand(common *labFlags) *cobra.Command {
	var (
		up           labUpFlags
		asJSON, keep bool
		fault        string
		timeout      time.Duration
		settle       time.Duration
		interval     time.Duration
		flows        bool
		tcpLoose     string
	)
	cmd := &cobra.Command{
		Use:   "failover",
		Short: "Reproduce the L3 HA blog: ping from the instance, fail the master, measure",
		Long: `Create an HA router with a gateway on the external network and an interface
on tenant network 10.10.30.0/24, an instance on compute1 with a floating IP,
ping the upstream host 172.24.4.1 from the instance every 10 ms, inject a fault
into the router's master, and report the agents hosting the router with their
ha_state before and after, the failover time and the pings sent and lost.

Faults: ha-link (the master's ha- device down, as in the blog), node (the
master node cut from the fabric and the external network, its agent killed),
agent-stop (the master node's agent stopped with SIGTERM), agent-restart (the
master node's agent told to exit for a restart with SIGUSR2 and started again
with the same arguments: there must be no transition and no lost ping; the
run watches for a transition for --timeout, default 10s), switchover (an
operator's switchover to the other node through the API), clock-jump (the
machine's wall clock, every node's, set back 1 h and halfway through the
watch forward to the true time again: no transition, no lost ping; a watchdog
process restores the clock if the lab dies first).

--flows also runs TCP, UDP and idle connections across the fault and reports
which survived; --tcp-loose 0 makes the router namespaces' conntrack strict.

A lab that is not up is brought up first and torn down at the end (unless
--keep); an existing lab is used as it is and left running.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmd.SilenceUsage = true
			ctx, stop := signalContext(cmd)
			defer stop()
			o := lab.FailoverOptions{
				Options: common.options(&up, cmd), Fault: fault, Keep: keep,
				Timeout: timeout, Settle: settle, PingInterval: interval, Flows: flows, TCPLoose: tcpLoose,
			}
			res, err := lab.Failover(ctx, o)
			if res != nil {
				if wantJSON(cmd, asJSON) {
					if werr := res.WriteJSON(cmd.OutOrStdout()); werr != nil {
						return errors.Join(err, werr)
					}
				} else if werr := res.WriteTable(cmd.OutOrStdout()); werr != nil {
					return errors.Join(err, werr)
				}
			}
			return err
		},
	}
	f := cmd.Flags()
	up.register(f)
	f.BoolVar(&asJSON, "json", false, "print the result as one JSON object")
	f.BoolVar(&keep, "keep", false, "leave a lab that failover brought up running")
	f.StringVar(&fault, "fault", lab.FaultHALink, "failure to inject into the master: "+strings.Join(lab.AllFaults(), ", "))
	f.DurationVar(&timeout, "timeout", 0, "how long to wait for a new master after the fault (default 30s; agent-restart: how long to watch for a transition, default 10s)")
	f.DurationVar(&settle, "settle", 2*time.Second, "how long the instance keeps pinging after the failover")
	f.DurationVar(&interval, "ping-interval", 10*time.Millisecond, "interval of the instance's pings (ping -i)")
	f.BoolVar(&flows, "flows", false, "also run connections across the fault and report which survive: "+strings.Join(lab.FlowKinds, ", ")+" (settle at least 5s)")
	f.StringVar(&tcpLoose, "tcp-loose", "", "0 or 1: set nf_conntrack_tcp_loose in the router's namespaces before the fault (0: strict, as hardened hosts; default: the kernel's, 1)")
	return cmd
}

func newLabSimulateCommand() *cobra.Command {
	var (
		o      lab.SimulateOptions
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "simulate",
		Short: "Measure the control plane alone: l3ha server with many fake-dataplane agents",
		Long: `Start l3ha server as a child process (SQLite in a temporary directory unless
--database), run --agents agents with the fake data plane in this process
(hosts sim-0001…, each with its own connections), create --routers HA routers
through the API with --concurrency clients, spread over --projects projects,
and report: API create throughput and latency, how long until every agent
applied every router bound to it, routers and masters per agent, the time for
a change (a router rename) to reach all the router's agents, and the
server's RSS (/proc/<pid>/status VmRSS, VmHWM). Needs no root and touches
nothing outside its work directory.

  l3ha lab simulate --agents 200 --routers 20000`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmd.SilenceUsage = true
			ctx, stop := signalContext(cmd)
			defer stop()
			o.Out = cmd.ErrOrStderr()
			res, err := lab.Simulate(ctx, o)
			if res != nil {
				if wantJSON(cmd, asJSON) {
					if werr := res.WriteJSON(cmd.OutOrStdout()); werr != nil {
						return errors.Join(err, werr)
					}
				} else if werr := res.WriteTable(cmd.OutOrStdout()); werr != nil {
					return errors.Join(err, werr)
				}
			}
			return err
		},
	}
	o.RegisterFlags(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as one JSON object")
	return cmd
}
