package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/l3ha/l3ha/internal/agent"
	"github.com/l3ha/l3ha/internal/agentapi"
	"github.com/l3ha/l3ha/internal/dataplane"
	"github.com/l3ha/l3ha/internal/keepalived"
	"github.com/l3ha/l3ha/internal/tlsconf"
)

// agentOptions are the flags of `l3ha agent`.
type agentOptions struct {
	host      string
	servers   []string
	serverCA  string
	token     string
	tokenFile string
	stateDir  string
	dataplane string
	agentMode string
	localIP   string
	mappings  string
	suffix    string
	haDriver  string
	advertInt float64
	vrrpVer   int
	// pace: VRRPv2 adverts this often between l3ha nodes (native driver;
	// `l3ha neutron-l3-agent`'s [l3ha] advert_int); not a flag.
	pace     time.Duration
	password string
	// healthCheck is Neutron's ha_vrrp_health_check_interval in seconds:
	// how often each HA router checks its gateway (0: never).
	healthCheck float64
	// healthFall is how many failed checks in a row make a router unhealthy.
	healthFall int
	// conntrackSync: --ha-conntrack-sync.
	conntrackSync bool
	metrics       string
	pprof         string
	// externalL2: the node's bridges belong to another L2 agent (Neutron's
	// linuxbridge agent under `l3ha neutron-l3-agent`); not a flag.
	externalL2 bool
}

// agentFlagNames are the flags that can also come from L3HA_<NAME> variables.
var agentFlagNames = []string{
	"host", "server", "server-ca", "agent-token", "agent-token-file", "state-dir", "dataplane", "agent-mode", "local-ip",
	"physical-interface-mappings", "netns-suffix", "ha-driver", "ha-vrrp-advert-int", "ha-vrrp-version", "ha-vrrp-auth-password", "ha-vrrp-health-check-interval", "ha-vrrp-health-check-fall", "ha-conntrack-sync", "metrics-bind", "pprof-bind",
}

// newAgentCommand returns `l3ha agent`, which runs the node agent. Client
// subcommands (such as `l3ha agent list`) may be added to it.
func newAgentCommand() *cobra.Command {
	var o agentOptions
	host, _ := os.Hostname()
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the node agent: routers, networks and HA for this host",
		Long: `Run the l3ha node agent. It registers this host with the server, heartbeats,
long-polls the desired state of the routers and networks bound to the host,
converges the data plane onto it, and reports HA (VRRP) transitions.

Every flag can also be given as an environment variable L3HA_<FLAG>, upper
case with underscores (for example L3HA_AGENT_TOKEN); a flag wins over the
variable.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAgentCommand(cmd, &o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.host, "host", host, "name of this host as the server knows it")
	f.StringSliceVar(&o.servers, "server", []string{"http://127.0.0.1:9696"}, "URL of an l3ha server; repeat (or separate with commas) for several servers on one database: the agent moves to the next when one fails")
	f.StringVar(&o.serverCA, "server-ca", "", "PEM file of the CA(s) that signed the servers' certificates (https URLs); empty: the system's roots")
	f.StringVar(&o.token, "agent-token", "", "this host's agent token (the server's agent_tokens_file pairs it with --host)")
	f.StringVar(&o.tokenFile, "agent-token-file", "", "file holding this host's agent token")
	f.StringVar(&o.stateDir, "state-dir", "/var/lib/l3ha", "directory for the agent's state (ha_confs/<router_id>/state, ...)")
	f.StringVar(&o.dataplane, "dataplane", "linux", "data plane: linux (namespaces, bridges, VRRP) or fake (touches nothing; for tests and simulations)")
	f.StringVar(&o.agentMode, "agent-mode", agentapi.ModeLegacy, "agent mode: legacy or dvr_snat (routers are scheduled here), dvr (compute node: wires the networks of its instances only)")
	f.StringVar(&o.localIP, "local-ip", "", "this node's underlay address for VXLAN tunnels")
	f.StringVar(&o.mappings, "physical-interface-mappings", "", "flat networks: PHYSNET:IFACE[,PHYSNET:IFACE...]")
	f.StringVar(&o.suffix, "netns-suffix", "", "suffix of this agent's router namespaces (qrouter-<id><suffix>), so several agents can share one kernel")
	f.StringVar(&o.haDriver, "ha-driver", "native", "VRRP implementation for HA routers: native (one in-process VRRP engine for every router; interoperates with keepalived) or keepalived (one keepalived per router, as Neutron)")
	f.Float64Var(&o.advertInt, "ha-vrrp-advert-int", 0, "VRRP advertisement interval in seconds (VRRPv2: whole seconds; VRRPv3: down to 0.01); 0: the driver's default, native 0.2 (VRRPv3), keepalived 2 (VRRPv2, as Neutron)")
	f.IntVar(&o.vrrpVer, "ha-vrrp-version", 0, "VRRP version 2 or 3 (default: 3 when the advert interval is fractional, else 2 as Neutron)")
	f.StringVar(&o.password, "ha-vrrp-auth-password", "", "VRRPv2 simple password (PASS authentication); empty: none")
	f.Float64Var(&o.healthCheck, "ha-vrrp-health-check-interval", 0, "seconds between two checks of each HA router's upstream gateway (ARP from its qg- device, as Neutron's ha_vrrp_health_check_interval); a master whose gateway fails 3 checks in a row hands over to a backup whose gateway answers; 0: off (native driver only)")
	f.IntVar(&o.healthFall, "ha-vrrp-health-check-fall", dataplane.DefaultHealthFall, "failed gateway checks in a row that make a router unhealthy (2 good ones make it healthy again)")
	f.BoolVar(&o.conntrackSync, "ha-conntrack-sync", true, "replicate each HA router's connection tracking (NAT mappings included) from its master to its backups over the HA network (UDP 3781, multicast 239.255.76.<vrid>), so established connections survive a failover even with nf_conntrack_tcp_loose=0")
	f.StringVar(&o.metrics, "metrics-bind", "", "address to serve Prometheus metrics on (/metrics), e.g. 127.0.0.1:9697; empty: off")
	f.StringVar(&o.pprof, "pprof-bind", "", "address to serve Go profiles on (/debug/pprof/, for go tool pprof), e.g. 127.0.0.1:6060; empty: off")
	return cmd
}

// envName is the environment variable of a flag: L3HA_AGENT_TOKEN for
// agent-token.
func envName(flag string) string {
	return "L3HA_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

func runAgentCommand(cmd *cobra.Command, o *agentOptions) error {
	fromFlag := map[string]bool{}
	for _, name := range agentFlagNames {
		fromFlag[name] = cmd.Flags().Changed(name)
		if fromFlag[name] {
			continue
		}
		if v, ok := os.LookupEnv(envName(name)); ok {
			if err := cmd.Flags().Set(name, v); err != nil {
				return fmt.Errorf("%s: %w", envName(name), err)
			}
		}
	}
	token, err := agentToken(o, fromFlag)
	if err != nil {
		return err
	}
	if o.host == "" {
		return errors.New("no host name: give --host")
	}
	if len(o.servers) == 0 {
		return errors.New("no server: give --server URL")
	}
	for _, s := range o.servers {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("--server %q is not an http(s) URL", s)
		}
	}
	hc, err := agentHTTPClient(o.serverCA)
	if err != nil {
		return err
	}
	switch o.agentMode {
	case agentapi.ModeLegacy, agentapi.ModeDVRSNAT, agentapi.ModeDVR:
	default:
		return fmt.Errorf("--agent-mode %q: want %s, %s or %s", o.agentMode, agentapi.ModeLegacy, agentapi.ModeDVRSNAT, agentapi.ModeDVR)
	}
	if o.localIP != "" {
		if _, err := netip.ParseAddr(o.localIP); err != nil {
			return fmt.Errorf("--local-ip: %w", err)
		}
	}
	logger := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var dp agent.Dataplane
	switch o.dataplane {
	case "fake":
		dp = agent.NewFakeDataplane()
	case "linux":
		var err error
		if dp, err = linuxDataplane(o, reg, logger); err != nil {
			return err
		}
	default:
		return fmt.Errorf("--dataplane %q: want linux or fake", o.dataplane)
	}
	cmd.SilenceUsage = true // from here on, errors are not about usage

	ctx, stopForRestart, stopSignals := agentSignals(cmd.Context(), logger, "l3ha agent")
	defer stopSignals()
	if o.metrics != "" {
		closeMetrics, err := serveMetrics(o.metrics, "--metrics-bind", reg)
		if err != nil {
			return err
		}
		defer closeMetrics()
	}
	if o.pprof != "" {
		ln, err := net.Listen("tcp", o.pprof)
		if err != nil {
			return fmt.Errorf("--pprof-bind: %w", err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		ps := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = ps.Serve(ln) }()
		defer ps.Close()
	}
	logger.Info("starting l3ha agent", "host", o.host, "dataplane", o.dataplane, "state_dir", o.stateDir)
	err = agent.Run(ctx, agent.Config{
		Host:       o.host,
		Servers:    o.servers,
		HTTPClient: hc,
		AgentToken: token,
		StateDir:   o.stateDir,
		AgentMode:  o.agentMode,
		LocalIP:    o.localIP,
		Metrics:    reg,
	}, dp, logger)
	return stopDataplane(dp, stopForRestart, logger, err)
}

// agentToken picks the token from --agent-token or --agent-token-file (or
// their variables); a flag wins over a variable, and giving both at the same
// level is an error.
func agentToken(o *agentOptions, fromFlag map[string]bool) (string, error) {
	useToken, useFile := o.token != "", o.tokenFile != ""
	if useToken && useFile {
		switch {
		case fromFlag["agent-token"] && !fromFlag["agent-token-file"]:
			useFile = false
		case fromFlag["agent-token-file"] && !fromFlag["agent-token"]:
			useToken = false
		default:
			return "", errors.New("give the agent token once: --agent-token or --agent-token-file (or L3HA_AGENT_TOKEN or L3HA_AGENT_TOKEN_FILE), not both")
		}
	}
	switch {
	case useToken:
		return o.token, nil
	case useFile:
		b, err := os.ReadFile(o.tokenFile)
		if err != nil {
			return "", fmt.Errorf("reading the agent token: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("agent token file %s is empty", o.tokenFile)
		}
		return tok, nil
	}
	return "", errors.New("no agent token: give --agent-token, --agent-token-file, L3HA_AGENT_TOKEN or L3HA_AGENT_TOKEN_FILE")
}

// The drivers' advert intervals when none is given: Neutron's
// ha_vrrp_advert_int for keepalived.
const (
	nativeDefaultAdvert     = 200 * time.Millisecond
	keepalivedDefaultAdvert = 2 * time.Second
)

// linuxDataplane builds the Linux data plane and its HA driver from flags.
func linuxDataplane(o *agentOptions, reg prometheus.Registerer, logger *slog.Logger) (agent.Dataplane, error) {
	cfg := dataplane.Config{Suffix: o.suffix, Mappings: map[string]string{}, ExternalL2: o.externalL2, Logger: logger, Host: o.host, ConntrackSync: o.conntrackSync}
	if o.healthCheck < 0 {
		return nil, fmt.Errorf("--ha-vrrp-health-check-interval %v: must not be negative (0: off)", o.healthCheck)
	}
	if o.healthCheck > 0 && o.haDriver != "native" {
		return nil, fmt.Errorf("--ha-vrrp-health-check-interval %v: gateway health checks need --ha-driver native (keepalived's own check would take every router down when all gateways fail)", o.healthCheck)
	}
	cfg.HealthCheckInterval = time.Duration(o.healthCheck * float64(time.Second))
	if o.healthFall < 0 {
		return nil, fmt.Errorf("--ha-vrrp-health-check-fall %d: want 1 or more (0: the default, %d)", o.healthFall, dataplane.DefaultHealthFall)
	}
	cfg.HealthCheckFall = o.healthFall
	if o.localIP != "" {
		cfg.LocalIP = netip.MustParseAddr(o.localIP)
	}
	for _, m := range strings.Split(o.mappings, ",") {
		if m = strings.TrimSpace(m); m == "" {
			continue
		}
		physnet, iface, ok := strings.Cut(m, ":")
		if !ok || physnet == "" || iface == "" {
			return nil, fmt.Errorf("--physical-interface-mappings %q: want PHYSNET:IFACE", m)
		}
		cfg.Mappings[physnet] = iface
	}
	if o.advertInt < 0 {
		return nil, fmt.Errorf("--ha-vrrp-advert-int %v: must be positive (0: the driver's default)", o.advertInt)
	}
	advert := time.Duration(o.advertInt * float64(time.Second))
	if advert == 0 {
		advert = keepalivedDefaultAdvert
		if o.haDriver == "native" {
			// Sub-second failover (3 × 0.2 s + skew ≈ 0.76 s) with margin
			// enough not to flap when a loaded node delays an advert by
			// 100 ms.
			advert = nativeDefaultAdvert
		}
	}
	version := o.vrrpVer
	if version == 0 {
		version = 2
		if advert%time.Second != 0 {
			version = 3
		}
	}
	if version != 2 && version != 3 {
		return nil, fmt.Errorf("--ha-vrrp-version %d: want 2 or 3", version)
	}
	switch o.haDriver {
	case "keepalived":
		d := dataplane.NewKeepalivedDriver(
			keepalived.Options{StateDir: o.stateDir, Logger: logger},
			keepalived.Settings{AdvertInt: advert, Version: version, AuthPassword: o.password},
		)
		return dataplane.New(cfg, d), nil
	case "native":
		d, err := dataplane.NewNativeDriver(dataplane.NativeOptions{
			StateDir: o.stateDir, Version: version, AdvertInt: advert, Password: o.password, Pace: o.pace, Logger: logger,
			HealthPreempt: cfg.HealthCheckInterval > 0,
			Registerer:    reg,
		})
		if err != nil {
			return nil, err
		}
		return dataplane.New(cfg, d), nil
	default:
		return nil, fmt.Errorf("--ha-driver %q: want keepalived or native", o.haDriver)
	}
}

// agentHTTPClient is the agent endpoint's client: the system's roots, or
// only the CAs of caFile. No timeout: the long-poll's deadline comes from
// its context.
func agentHTTPClient(caFile string) (*http.Client, error) {
	tr, err := tlsconf.Transport(caFile)
	if err != nil {
		return nil, fmt.Errorf("--server-ca: %w", err)
	}
	return &http.Client{Transport: tr}, nil
}
