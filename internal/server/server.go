// Package server assembles `l3ha server`: it opens the store, serves the
// Neutron API and the agent endpoint on one listener, and runs the
// dead-agent monitor.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"

	"github.com/l3ha/l3ha/internal/api"
	"github.com/l3ha/l3ha/internal/config"
	"github.com/l3ha/l3ha/internal/ha"
	"github.com/l3ha/l3ha/internal/ipam"
	"github.com/l3ha/l3ha/internal/store"
)

// Options declares the server's options by their Neutron names.
var Options = []config.Option{
	{Name: "bind", Default: "127.0.0.1:9696", Usage: "address the API and agent endpoint listen on"},
	{Name: "state_dir", Default: "/var/lib/l3ha", Usage: "directory for the default SQLite database"},
	{Name: "database", Default: "", Usage: "sqlite:///abs/path.db or postgres://user@host/db?sslmode=disable (default: l3ha.db under state_dir)"},
	{Name: "auth_strategy", Default: "noauth", Usage: "noauth (identity from X-Project-Id/X-Roles headers) or token (X-Auth-Token looked up in token_file)"},
	{Name: "token_file", Default: "", Usage: "token mode: file of lines TOKEN PROJECT_ID ROLE[,ROLE]"},
	{Name: "noauth_project", Default: "admin", Usage: "noauth mode: project of requests that carry no identity headers (they act as admin)"},
	{Name: "agent_token", Default: "", Usage: "shared token agents must present"},
	{Name: "agent_token_file", Default: "", Usage: "file holding the agent token"},
	{Name: "l3_ha", Default: "false", Usage: "ha value of routers created without one"},
	{Name: "max_l3_agents_per_router", Default: "3", Usage: "agents an HA router is scheduled on (0 = every eligible agent)"},
	{Name: "min_l3_agents_per_router", Default: "2", Usage: "fewer eligible agents make HA router creation fail"},
	{Name: "l3_ha_net_cidr", Default: "169.254.192.0/18", Usage: "subnet of HA networks"},
	{Name: "l3_ha_network_type", Default: "", Usage: "network type of HA networks (vxlan when empty)"},
	{Name: "l3_ha_routers_per_network", Default: "254", Usage: "HA routers (VRIDs) per HA network, 1..254: a project gets another HA network when its last one has this many. Every VRRP advert reaches every ha- port of its HA network on every node, so fewer routers per network bound that flood (254: Neutron's one network per project)"},
	{Name: "l3_ha_network_physical_name", Default: "", Usage: "physical network of HA networks for flat type"},
	{Name: "vni_ranges", Default: "1:65535", Usage: "VXLAN ids for tenant and HA networks, MIN:MAX"},
	{Name: "agent_down_time", Default: "75", Usage: "seconds without heartbeat after which an agent is dead"},
	{Name: "router_auto_schedule", Default: "true", Usage: "give joining agents the routers that have too few agents"},
	{Name: "allow_automatic_l3agent_failover", Default: "false", Usage: "move legacy routers off agents dead for 2×agent_down_time"},
	{Name: "debug", Default: "false", Usage: "log every request"},
}

// Config is the resolved server configuration.
type Config struct {
	Bind              string
	Database          string
	Auth              api.Authenticator
	AgentToken        string
	DefaultHA         bool
	HA                ha.Config
	AutoSchedule      bool
	AutomaticFailover bool
	Debug             bool
}

// RegisterFlags declares the server options on flags.
func RegisterFlags(flags *pflag.FlagSet) *config.Set { return config.New(flags, Options) }

// Load resolves and validates the options.
func Load(set *config.Set) (*Config, error) {
	v, err := set.Resolve()
	if err != nil {
		return nil, err
	}
	c := &Config{
		Bind: v.String("bind"), DefaultHA: v.Bool("l3_ha"),
		AutoSchedule: v.Bool("router_auto_schedule"), AutomaticFailover: v.Bool("allow_automatic_l3agent_failover"),
		Debug: v.Bool("debug"),
	}
	lo, hi := v.Range("vni_ranges", 1, 16777215)
	c.HA = ha.Config{
		MaxAgents: v.Int("max_l3_agents_per_router", 0), MinAgents: v.Int("min_l3_agents_per_router", 0),
		NetCIDR: v.NetworkCIDR("l3_ha_net_cidr"), NetworkType: v.String("l3_ha_network_type"),
		PhysicalNetwork: v.String("l3_ha_network_physical_name"), VNIs: ipam.VNIRange{Min: lo, Max: hi},
		AgentDownTime: v.Seconds("agent_down_time"), RoutersPerNetwork: v.Int("l3_ha_routers_per_network", 1),
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	if c.HA.MaxAgents != 0 && c.HA.MinAgents > c.HA.MaxAgents {
		return nil, fmt.Errorf("invalid configuration: min_l3_agents_per_router (%d) is greater than max_l3_agents_per_router (%d)", c.HA.MinAgents, c.HA.MaxAgents)
	}
	if b := c.HA.NetCIDR.Bits(); b > 24 {
		return nil, fmt.Errorf("invalid configuration: l3_ha_net_cidr %s is too small for HA ports (want /24 or larger)", c.HA.NetCIDR)
	}
	if c.HA.RoutersPerNetwork > ha.MaxVRID {
		return nil, fmt.Errorf("invalid configuration: l3_ha_routers_per_network %d (want 1 to %d)", c.HA.RoutersPerNetwork, ha.MaxVRID)
	}
	if t := c.HA.NetworkType; t != "" && t != "vxlan" && t != "flat" {
		return nil, fmt.Errorf("invalid configuration: l3_ha_network_type %q (want vxlan or flat)", t)
	}
	c.Database = v.String("database")
	if c.Database == "" {
		dir, err := filepath.Abs(v.String("state_dir"))
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("creating state_dir: %w", err)
		}
		c.Database = "sqlite://" + filepath.Join(dir, "l3ha.db")
	}
	switch v.String("auth_strategy") {
	case "noauth":
		c.Auth = api.NoAuth{DefaultProject: v.String("noauth_project")}
		if host, _, err := net.SplitHostPort(c.Bind); err == nil {
			if a, err := netip.ParseAddr(host); err != nil || !a.IsLoopback() {
				slog.Warn("noauth API listening beyond loopback: anyone who reaches it is admin", "bind", c.Bind)
			}
		}
	case "token":
		if v.String("token_file") == "" {
			return nil, errors.New("invalid configuration: auth_strategy=token needs token_file")
		}
		t, err := api.LoadTokenFile(v.String("token_file"))
		if err != nil {
			return nil, err
		}
		c.Auth = t
	default:
		return nil, fmt.Errorf("invalid configuration: auth_strategy %q (want noauth or token)", v.String("auth_strategy"))
	}
	c.AgentToken = v.String("agent_token")
	if f := v.String("agent_token_file"); f != "" && c.AgentToken == "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("reading agent_token_file: %w", err)
		}
		c.AgentToken = strings.TrimSpace(string(b))
	}
	if c.AgentToken == "" {
		return nil, errors.New("invalid configuration: agent_token (or agent_token_file) is required so that only your agents can report state")
	}
	return c, nil
}

// Server is a running l3ha server.
type Server struct {
	cfg     *Config
	db      *store.DB
	ha      *ha.Manager
	api     *api.API
	log     *slog.Logger
	metrics *metrics
	handler http.Handler
	built   builtStates // last desired state built per host (agents.go)
}

// New opens the database and builds the server.
func New(ctx context.Context, cfg *Config, log *slog.Logger) (*Server, error) {
	db, err := store.Open(ctx, cfg.Database, log)
	if err != nil {
		return nil, err
	}
	m := ha.NewManager(cfg.HA, log)
	s := &Server{cfg: cfg, db: db, ha: m, log: log, metrics: newMetrics()}
	s.api = api.New(db, m, cfg.Auth, api.Options{DefaultHA: cfg.DefaultHA, VNIs: cfg.HA.VNIs}, log)
	mux := http.NewServeMux()
	mux.Handle("/agent/v1/", s.agentEndpoint())
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), s.metrics.haReports, s.metrics.heartbeats)
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("/", s.api.Handler())
	s.handler = mux
	return s, nil
}

// Handler is the server's HTTP handler (API, agent endpoint, /metrics).
func (s *Server) Handler() http.Handler { return s.handler }

// DB is the server's store.
func (s *Server) DB() *store.DB { return s.db }

// Close releases the database.
func (s *Server) Close() error { return s.db.Close() }

// Serve listens on cfg.Bind until ctx ends, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Bind)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", s.cfg.Bind, err)
	}
	return s.ServeListener(ctx, ln)
}

// ServeListener serves on ln until ctx ends.
func (s *Server) ServeListener(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	go s.monitorAgents(ctx)
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	s.log.Info("l3ha server listening", "addr", ln.Addr().String(), "database", redact(s.cfg.Database))
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := hs.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = hs.Close()
	}
	s.log.Info("l3ha server stopped")
	return err
}

// redact hides a PostgreSQL password in logs.
func redact(dsn string) string {
	if i := strings.Index(dsn, "://"); i >= 0 {
		if j := strings.Index(dsn[i+3:], "@"); j >= 0 {
			if k := strings.Index(dsn[i+3:i+3+j], ":"); k >= 0 {
				return dsn[:i+3+k+1] + "***" + dsn[i+3+j:]
			}
		}
	}
	return dsn
}
