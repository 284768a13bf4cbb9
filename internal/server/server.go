// Package server assembles `l3ha server`: it opens the store, serves the
// Neutron API and the agent endpoint on one listener, and runs the
// dead-agent monitor.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"

	"github.com/l3ha/l3ha/internal/api"
	"github.com/l3ha/l3ha/internal/config"
	"github.com/l3ha/l3ha/internal/dashboard"
	"github.com/l3ha/l3ha/internal/ha"
	"github.com/l3ha/l3ha/internal/ipam"
	"github.com/l3ha/l3ha/internal/keystone"
	"github.com/l3ha/l3ha/internal/store"
)

// Options declares the server's options by their Neutron names.
var Options = []config.Option{
	{Name: "bind", Default: "127.0.0.1:9696", Usage: "address the API and agent endpoint listen on (bind_host/bind_port, Neutron's names, override its parts unless bind comes from a source of higher precedence)"},
	{Name: "bind_host", Default: "", Usage: "host part of bind (Neutron's [DEFAULT] bind_host)"},
	{Name: "bind_port", Default: "", Usage: "port part of bind (Neutron's [DEFAULT] bind_port)"},
	{Name: "state_dir", Default: "/var/lib/l3ha", Usage: "directory for the default SQLite database"},
	{Name: "database", Aliases: []string{"database.connection"}, Default: "", Usage: "sqlite:///abs/path.db or postgres://user@host/db?sslmode=disable (default: l3ha.db under state_dir); a config file may give it as Neutron's [database] connection"},
	{Name: "auth_strategy", Default: "noauth", Usage: "keystone (X-Auth-Token validated with Keystone, [keystone_authtoken]), noauth (identity from X-Project-Id/X-Roles headers) or token (X-Auth-Token looked up in token_file)"},
	{Name: "token_file", Default: "", Usage: "token mode: file of lines TOKEN PROJECT_ID ROLE[,ROLE]"},
	{Name: "noauth_project", Default: "admin", Usage: "noauth mode: project of requests that carry no identity headers (they act as admin)"},
	{Name: "agent_tokens_file", Default: "", Usage: "file of lines HOST TOKEN: the credential each agent host presents (several per host while rotating); read again when it changes, no restart"},
	{Name: "agent_token", Default: "", Usage: "removed: one token for every host let any agent speak for any other; use agent_tokens_file"},
	{Name: "agent_token_file", Default: "", Usage: "removed: use agent_tokens_file"},
	{Name: "tls_cert", Default: "", Usage: "PEM certificate (chain) the API and agent endpoint serve TLS with; read again when it changes"},
	{Name: "tls_key", Default: "", Usage: "PEM private key of tls_cert"},
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
	{Name: "ha_transitions_max_age", Default: "604800", Usage: "seconds (or a duration such as 168h) the HA transitions of GET /v2.0/routers/{id}/ha_transitions are kept"},
	{Name: "ha_transitions_per_router", Default: "1000", Usage: "HA transitions kept per router (older ones go, whichever of this and ha_transitions_max_age keeps fewer)"},
	{Name: "dashboard_bench_plot", Default: "", Usage: "SVG file the dashboard (/dashboard/) shows as the failover benchmark's plot, e.g. the bench/failover.svg that l3ha lab bench compare writes; read at each request (none when empty)"},
	{Name: "debug", Default: "false", Usage: "log every request"},
	// [keystone_authtoken], keystonemiddleware's names.
	{Section: ksSection, Name: "www_authenticate_uri", Usage: "Keystone URL clients are sent to in 401s (default: auth_url)"},
	{Section: ksSection, Name: "auth_url", Usage: "Keystone URL the service user logs in to and tokens are validated at"},
	{Section: ksSection, Name: "auth_type", Default: "password", Usage: "how the service user logs in: password"},
	{Section: ksSection, Name: "username", Usage: "service user"},
	{Section: ksSection, Name: "password", Usage: "service user's password"},
	{Section: ksSection, Name: "project_name", Usage: "service user's project"},
	{Section: ksSection, Name: "user_domain_name", Default: "Default", Usage: "service user's domain"},
	{Section: ksSection, Name: "project_domain_name", Default: "Default", Usage: "service project's domain"},
	{Section: ksSection, Name: "user_domain_id", Usage: "service user's domain by id (wins over user_domain_name)"},
	{Section: ksSection, Name: "project_domain_id", Usage: "service project's domain by id (wins over project_domain_name)"},
	{Section: ksSection, Name: "token_cache_time", Default: "300", Usage: "seconds a validated token is trusted without asking Keystone again (0 or -1: ask every time)"},
	{Section: ksSection, Name: "http_connect_timeout", Default: "10", Usage: "seconds a request to Keystone may take; slower is a 503"},
	{Section: ksSection, Name: "http_request_max_retries", Default: "3", Usage: "retries of a request to Keystone that could not connect"},
}

const ksSection = "keystone_authtoken"

func ks(name string) string { return ksSection + "." + name }

// Config is the resolved server configuration.
type Config struct {
	Bind             string
	Database         string
	Auth             api.Authenticator
	AgentCredentials AgentCredentials
	// TLSCert and TLSKey are PEM files; empty: plain HTTP.
	TLSCert, TLSKey   string
	DefaultHA         bool
	HA                ha.Config
	AutoSchedule      bool
	AutomaticFailover bool
	// Transitions bounds the HA transitions kept (zero fields:
	// DefaultTransitionRetention's).
	Transitions store.HATransitionRetention
	// DashboardBenchPlot is dashboard_bench_plot: the SVG file the
	// dashboard shows as the failover benchmark's plot ("" none).
	DashboardBenchPlot string
	Debug              bool
}

// DefaultTransitionRetention is ha_transitions_max_age and
// ha_transitions_per_router by default: a week, 1000 per router.
var DefaultTransitionRetention = store.HATransitionRetention{MaxAge: 7 * 24 * time.Hour, PerRouter: 1000}

// RegisterFlags declares the server options on flags.
func RegisterFlags(flags *pflag.FlagSet) *config.Set { return config.New(flags, Options) }

// Load resolves and validates the options; log receives what loading
// notices (options a config file sets that l3ha does not read) and, in
// keystone mode, the token validator's messages.
func Load(set *config.Set, log *slog.Logger) (*Config, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	v, err := set.Resolve()
	if err != nil {
		return nil, err
	}
	if u := v.Unknown(); len(u) > 0 {
		log.Info("config file options the l3ha server does not read (ignored, as oslo.config does)", "options", strings.Join(u, " "))
	}
	c := &Config{
		Bind: v.String("bind"), DefaultHA: v.Bool("l3_ha"),
		AutoSchedule: v.Bool("router_auto_schedule"), AutomaticFailover: v.Bool("allow_automatic_l3agent_failover"),
		Debug: v.Bool("debug"), DashboardBenchPlot: v.String("dashboard_bench_plot"),
	}
	lo, hi := v.Range("vni_ranges", 1, 16777215)
	c.HA = ha.Config{
		MaxAgents: v.Int("max_l3_agents_per_router", 0), MinAgents: v.Int("min_l3_agents_per_router", 0),
		NetCIDR: v.NetworkCIDR("l3_ha_net_cidr"), NetworkType: v.String("l3_ha_network_type"),
		PhysicalNetwork: v.String("l3_ha_network_physical_name"), VNIs: ipam.VNIRange{Min: lo, Max: hi},
		AgentDownTime: v.Seconds("agent_down_time"), RoutersPerNetwork: v.Int("l3_ha_routers_per_network", 1),
	}
	c.Transitions = store.HATransitionRetention{MaxAge: v.Seconds("ha_transitions_max_age"), PerRouter: v.Int("ha_transitions_per_router", 1)}
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
	// bind_host and bind_port set bind's parts, unless bind itself comes
	// from a source of higher precedence: --bind wins over a neutron.conf's
	// bind_host = 0.0.0.0.
	setHost := v.Set("bind_host") && v.Outranks("bind_host", "bind")
	setPort := v.Set("bind_port") && v.Outranks("bind_port", "bind")
	if setHost || setPort {
		host, port, err := net.SplitHostPort(c.Bind)
		if err != nil {
			return nil, fmt.Errorf("invalid configuration: bind %q: %w", c.Bind, err)
		}
		if setHost {
			host = v.String("bind_host")
		}
		if setPort {
			n, err := strconv.Atoi(strings.TrimSpace(v.String("bind_port")))
			if err != nil || n < 0 || n > 65535 {
				return nil, fmt.Errorf("invalid configuration: bind_port %q (want a port number)", v.String("bind_port"))
			}
			port = strconv.Itoa(n)
		}
		c.Bind = net.JoinHostPort(host, port)
	}
	c.Database, err = databaseURL(v.String("database"))
	if err != nil {
		return nil, err
	}
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
		if !v.Set("auth_strategy") && v.Set(ks("auth_url")) {
			// A neutron.conf relying on Neutron's default (keystone) must
			// not quietly make everyone admin.
			return nil, errors.New("invalid configuration: [keystone_authtoken] auth_url is set but auth_strategy is not: l3ha's default is noauth (every request may act as admin), Neutron's is keystone; set auth_strategy = keystone (or noauth)")
		}
		c.Auth = api.NoAuth{DefaultProject: v.String("noauth_project")}
		if host, _, err := net.SplitHostPort(c.Bind); err == nil {
			if a, err := netip.ParseAddr(host); err != nil || !a.IsLoopback() {
				log.Warn("noauth API listening beyond loopback: anyone who reaches it is admin", "bind", c.Bind)
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
	case "keystone":
		validator, err := keystoneValidator(v, log)
		if err != nil {
			return nil, err
		}
		c.Auth = api.KeystoneAuth{Validator: validator}
	default:
		return nil, fmt.Errorf("invalid configuration: auth_strategy %q (want keystone, noauth or token)", v.String("auth_strategy"))
	}
	for _, name := range []string{"agent_token", "agent_token_file"} {
		if v.Set(name) {
			return nil, fmt.Errorf("invalid configuration: %s was removed: one token for every host let any agent report for any other; give agent_tokens_file, a file of lines HOST TOKEN with a token per agent host", name)
		}
	}
	if f := v.String("agent_tokens_file"); f != "" {
		creds, err := LoadAgentTokensFile(f, log.With("component", "agent-auth"))
		if err != nil {
			return nil, fmt.Errorf("invalid configuration: %w", err)
		}
		c.AgentCredentials = creds
	} else {
		return nil, errors.New("invalid configuration: agent_tokens_file is required (lines HOST TOKEN, a token per agent host) so that only your agents can report state, each for its own host")
	}
	c.TLSCert, c.TLSKey = v.String("tls_cert"), v.String("tls_key")
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return nil, errors.New("invalid configuration: tls_cert and tls_key go together")
	}
	if c.TLSCert != "" {
		if _, err := newCertReloader(c.TLSCert, c.TLSKey, log); err != nil {
			return nil, fmt.Errorf("invalid configuration: %w", err)
		}
	} else if host, _, err := net.SplitHostPort(c.Bind); err == nil {
		if a, err := netip.ParseAddr(host); err != nil || !a.IsLoopback() {
			log.Warn("API and agent endpoint serve plain HTTP beyond loopback: tokens and passwords cross the network in clear; give tls_cert and tls_key unless a TLS proxy fronts the server", "bind", c.Bind)
		}
	}
	return c, nil
}

// keystoneValidator builds the token validator from [keystone_authtoken].
func keystoneValidator(v *config.Values, log *slog.Logger) (*keystone.Validator, error) {
	if t := v.String(ks("auth_type")); t != "password" && t != "v3password" {
		return nil, fmt.Errorf("invalid configuration: [keystone_authtoken] auth_type %q (l3ha logs in with password)", t)
	}
	var missing []string
	for _, name := range []string{"auth_url", "username", "password", "project_name"} {
		if v.String(ks(name)) == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("invalid configuration: auth_strategy=keystone needs [keystone_authtoken] %s", strings.Join(missing, ", "))
	}
	// -1 is keystonemiddleware's "no caching", as 0 is l3ha's.
	cacheTime := time.Duration(v.Int(ks("token_cache_time"), -1)) * time.Second
	timeout := v.Seconds(ks("http_connect_timeout"))
	retries := v.Int(ks("http_request_max_retries"), 0)
	if err := v.Err(); err != nil {
		return nil, err
	}
	val, err := keystone.NewValidator(keystone.Config{
		AuthURL: v.String(ks("auth_url")), WWWAuthenticateURI: v.String(ks("www_authenticate_uri")),
		Username: v.String(ks("username")), Password: v.String(ks("password")), ProjectName: v.String(ks("project_name")),
		UserDomainName: v.String(ks("user_domain_name")), ProjectDomainName: v.String(ks("project_domain_name")),
		UserDomainID: v.String(ks("user_domain_id")), ProjectDomainID: v.String(ks("project_domain_id")),
		CacheTime: cacheTime, Timeout: timeout, MaxRetries: retries,
	}, log.With("component", "keystone"))
	if err != nil {
		return nil, fmt.Errorf("invalid configuration: %w", err)
	}
	return val, nil
}

// databaseURL accepts l3ha's database URLs and Neutron's SQLAlchemy ones
// ([database] connection): sqlite:////abs/path, postgresql+psycopg2://….
func databaseURL(u string) (string, error) {
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok {
		if u == "" {
			return "", nil
		}
		// Not echoed: a key=value DSN (host=… password=…) would show
		// its password.
		return "", errors.New("invalid configuration: database is not a URL (sqlite:///abs/path.db or postgres://…)")
	}
	base, _, _ := strings.Cut(scheme, "+")
	switch base {
	case "sqlite":
		return "sqlite://" + "/" + strings.TrimLeft(rest, "/"), nil
	case "postgres", "postgresql":
		return "postgres://" + rest, nil
	case "mysql", "mariadb":
		return "", fmt.Errorf("invalid configuration: database %q: l3ha stores its data in SQLite or PostgreSQL, not MySQL/MariaDB", redact(u))
	}
	return "", fmt.Errorf("invalid configuration: database %q: unknown scheme %q (want sqlite or postgres)", redact(u), scheme)
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
	built   builtStates   // last desired state built per host (agents.go)
	certs   *certReloader // nil: plain HTTP
	history *transitionLog
}

// New opens the database and builds the server.
func New(ctx context.Context, cfg *Config, log *slog.Logger) (*Server, error) {
	var certs *certReloader
	if cfg.TLSCert != "" {
		var err error
		if certs, err = newCertReloader(cfg.TLSCert, cfg.TLSKey, log.With("component", "tls")); err != nil {
			return nil, err
		}
	}
	db, err := store.Open(ctx, cfg.Database, log)
	if err != nil {
		return nil, err
	}
	m := ha.NewManager(cfg.HA, log)
	s := &Server{cfg: cfg, db: db, ha: m, log: log, metrics: newMetrics(), certs: certs, history: newTransitionLog(cfg.Transitions)}
	s.api = api.New(db, m, cfg.Auth, api.Options{DefaultHA: cfg.DefaultHA, VNIs: cfg.HA.VNIs}, log)
	mux := http.NewServeMux()
	mux.Handle("/agent/v1/", s.agentEndpoint())
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), s.metrics.haReports, s.metrics.heartbeats,
		s.metrics.transitions, s.SplitBrainCollector())
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	// The dashboard authenticates with the API's Authenticator, so that it
	// takes exactly the API's credentials.
	dash, err := dashboard.New(db, cfg.Auth, dashboard.Options{AgentDownTime: cfg.HA.AgentDownTime, Alive: m.Alive, BenchPlot: cfg.DashboardBenchPlot}, log.With("component", "dashboard"))
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("building the dashboard: %w", err)
	}
	mux.Handle(dashboard.Path, dash)
	mux.Handle(dashboard.Path+"/", dash)
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

// ServeListener serves on ln until ctx ends, with TLS when the server has a
// certificate.
func (s *Server) ServeListener(ctx context.Context, ln net.Listener) error {
	scheme := "http"
	if s.certs != nil {
		ln, scheme = tls.NewListener(ln, s.certs.tlsConfig()), "https"
	}
	hs := &http.Server{
		Handler: s.handler, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second,
		// TLS handshake failures and the like, in the server's log.
		ErrorLog: slog.NewLogLogger(s.log.With("component", "http").Handler(), slog.LevelWarn),
	}
	go s.monitorAgents(ctx)
	go s.pruneTransitions(ctx)
	go s.expireSwitchovers(ctx)
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	s.log.Info("l3ha server listening", "addr", ln.Addr().String(), "scheme", scheme, "database", redact(s.cfg.Database))
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

// redact hides a PostgreSQL password in logs. The user info is taken to
// end at the last '@', so that a password holding an unescaped '@' (which
// net/url and pgx accept) is hidden whole; an '@' further on hides more.
func redact(dsn string) string {
	if i := strings.Index(dsn, "://"); i >= 0 {
		if j := strings.LastIndex(dsn[i+3:], "@"); j >= 0 {
			if k := strings.Index(dsn[i+3:i+3+j], ":"); k >= 0 {
				return dsn[:i+3+k+1] + "***" + dsn[i+3+j:]
			}
		}
	}
	return dsn
}
