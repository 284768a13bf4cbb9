// Package neutronlocal runs a private, real OpenStack Neutron for l3ha's
// tests: Debian's neutron-server 21 (Zed) with ML2/linuxbridge on
// 127.0.0.1, its own MariaDB, and "network nodes" made of network
// namespaces, each with a real neutron-linuxbridge-agent and optionally a
// real neutron-l3-agent (with keepalived and
// neutron-keepalived-state-change), so that HA routers are scheduled,
// elected, and fail over exactly as Neutron does it.
//
// # Server
//
// Start writes neutron.conf, ml2_conf.ini, api-paste.ini and an empty
// policy into Options.Dir (nothing under /etc/neutron is written or read:
// every program gets --config-file for these files only and --config-dir for
// an empty directory, which turns off oslo.config's default files and
// directories; HOME is the scratch directory), starts a MariaDB of its own
// (mariadbd as root on a unix socket in Dir, no TCP, no grant tables),
// creates Neutron's schema, and starts neutron-server (eventlet, one API and
// one RPC worker of each kind) in its own session and process group on a
// free port of 127.0.0.1. It returns once GET / answers. Stop ends
// everything it started; Restart restarts neutron-server on the same port
// (the agents reconnect by themselves).
//
// Configuration: auth_strategy noauth (every request is admin; a request
// without project headers is project "fake_project_id"; Options.AuthStrategy
// "headers" makes X-User-Id/X-Project-Id/X-Roles count as a validated
// token's), core_plugin ml2 (type drivers flat and vxlan, tenant networks
// vxlan 1-1000, flat physnets hanet, public and tenant, mechanism linuxbridge,
// port_security, firewall noop), service_plugins router, l3_ha True,
// max_l3_agents_per_router 2, l3_ha_network_type flat on physnet hanet (the
// kernel may have no 802.1q; consequence: the HA network of only one project
// fits, so keep every HA router in one project), agent_down_time 15 s (the
// agents report every 5 s). Options.ServerConfig adds or overrides options
// (a last --config-file). graceful_shutdown_timeout is 5 s: the RPC
// workers' consumers otherwise take 5-15 s to stop on a loaded machine.
//
// The schema: SQLite cannot be migrated (neutron-db-manage fails with
// "No support for ALTER of constraints in SQLite dialect"), so the
// database is MariaDB. `neutron-db-manage upgrade heads` takes 10-30 s, so
// the migrated, still empty data directory is kept in the user's cache
// directory (~/.cache/l3ha/neutron-mariadb-<hash>, one per installed
// Neutron and MariaDB) and later Starts copy it.
//
// # Network nodes
//
// AddNode creates network namespace l3ha-nn-<host> with one veth per physnet
// (named like the physnet: hanet, public, tenant) into the bridges
// br-<physnet> of namespace l3ha-nn-switch, and a veth "underlay" (address
// 198.18.0.N/16, the linuxbridge agent's VXLAN local_ip) into br-underlay.
// Namespace l3ha-nn-upstream is a host on br-public with address UpstreamIP
// (203.0.113.1/24): CreateExternalNetwork makes the matching external
// network. In the node's namespace it starts neutron-linuxbridge-agent
// (physical_interface_mappings hanet:hanet,public:public,tenant:tenant,
// VXLAN over multicast 224.0.0.1, UDP 4789) and, with NodeOptions.L3Agent,
// neutron-l3-agent (interface_driver linuxbridge, agent_mode legacy,
// root_helper empty, no metadata proxy, ha_confs_path and state_path under
// Dir/node-<host>, ha_vrrp_advert_int 2). The L3 agent runs with a private
// tmpfs on /run/netns (a mount namespace of its own), so that the agents of
// two nodes can both create qrouter-<id>, and so that it never sees, or
// cleans up, anybody else's namespaces; RouterCommand runs a command in one
// of its router namespaces. Node.StartL3Agent starts any L3 agent the same
// way (l3ha's own, with Node.ConfigFiles).
//
// Every agent's HOME is its node's directory, where its neutron.conf is:
// neutron-keepalived-state-change, which the L3 agent starts without
// --config-file, finds that one instead of /etc/neutron/neutron.conf.
// StartL3Agent (and AddNode) return once GET /v2.0/agents?host=<host> shows
// an alive agent of type "L3 agent" whose started_at is not older than the
// start (so another L3 agent must report state with start_flag, as Neutron's
// do).
//
// The agents reach RabbitMQ at 127.0.0.1 of their namespace, port as in
// Options.AMQPURL: a relay of this process (its listening socket made in the
// node's namespace, its connections made from the root namespace) forwards
// to Options.AMQPURL. RabbitMQ itself is the caller's (internal/rabbitlocal).
//
// AddInstance plugs a namespace l3ha-nn-vm-<name> into a tenant network as
// an instance would be: it creates the Neutron port, then for a flat network
// a veth into the switch's bridge of its physnet, for a VXLAN network a VXLAN
// device of the network's VNI over a veth into br-underlay, with the port's
// MAC and address and a default route via the subnet's gateway.
//
// # Faults
//
// Node.KillNode is a node's death: its links go down, its AMQP relay closes
// and every process of the node (agents, keepalived, state-change monitors)
// is SIGKILLed. Node.SetLinksUp(false) only cuts the node's links
// (processes keep running); Node.StopL3Agent stops the L3 agent gracefully
// and then its keepalived and neutron-keepalived-state-change daemons (which
// escape its process group; they are found by their pid files' and
// configuration's directory, ha_confs_path; SIGTERM, so that keepalived
// sends its priority-0 advert and the backup takes over within a second).
// Node.Revive starts a killed node again, like a rebooted one: its L3 agent
// reports standby at once but starts keepalived only once the linuxbridge
// agent has bound its HA port again (Neutron's LP#1597461 guard), seconds
// later; Node.KeepalivedPID tells when.
//
// # Cleanup
//
// The namespaces' names are fixed, so one Neutron runs on the machine at a
// time: Start waits (until its context ends) for an exclusive lock
// (/run/lock/l3ha-neutronlocal.lock) that the running one holds until Stop.
// The lock file names the scratch directory of its holder; a Start that
// finds the lock free but a previous holder recorded (a crashed run) kills
// the processes of that run (every process this package starts has the
// scratch directory in its command line) and deletes every l3ha-nn-*
// namespace. Cleanup(dir) does the same for a given directory. Every
// process is started with SIGTERM as its parent-death signal, so that most
// of a crashed run dies with it anyway.
package neutronlocal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Paths of the Debian packages neutron-server, neutron-l3-agent,
// neutron-linuxbridge-agent and keepalived.
const (
	neutronServer       = "/usr/bin/neutron-server"
	neutronDBManage     = "/usr/bin/neutron-db-manage"
	neutronL3Agent      = "/usr/bin/neutron-l3-agent"
	neutronLBAgent      = "/usr/bin/neutron-linuxbridge-agent"
	neutronStateChange  = "/usr/bin/neutron-keepalived-state-change"
	keepalivedBinary    = "/usr/sbin/keepalived"
	defaultStartTimeout = 5 * time.Minute
)

// AgentDownTime is the server's agent_down_time: an agent whose last report
// is older is dead (the agents report every 5 s).
const AgentDownTime = 15 * time.Second

// Packages are the Debian packages this package needs.
var Packages = []string{
	"neutron-server", "neutron-l3-agent", "neutron-linuxbridge-agent", "python3-pymysql",
	"mariadb-server", "keepalived", "iptables", "conntrack", "iputils-arping", "iputils-ping", "iproute2",
}

// Options configure Start.
type Options struct {
	// Dir is the scratch directory: configuration, the MariaDB data
	// directory and socket, logs, and the nodes' state (Dir/node-<host>). It
	// is created if missing and must not already hold a database. Keep it
	// short: unix socket paths under it (Dir/node-<host>/keepalived-state-change)
	// must fit in 107 bytes.
	Dir string
	// Log receives progress and failures (default: discarded).
	Log *slog.Logger
	// AMQPURL is RabbitMQ's URL, amqp://user:pass@127.0.0.1:PORT/ (or
	// rabbit://...). Required.
	AMQPURL string
	// AuthStrategy is neutron-server's auth_strategy: "noauth" (default)
	// or "headers" (identity headers without a token, see the package doc).
	AuthStrategy string
	// ServerConfig is extra neutron-server configuration (oslo.config
	// text), read last.
	ServerConfig string
	// Debug sets debug = True for the server and the agents.
	Debug bool
	// NoSchemaCache migrates a fresh database instead of copying the
	// cached template, and does not write one.
	NoSchemaCache bool
	// HTTPClient talks to neutron-server. Default: a 60 s timeout.
	HTTPClient *http.Client
}

// Neutron is a running private Neutron.
type Neutron struct {
	// Dir is the scratch directory (absolute).
	Dir string

	log   *slog.Logger
	http  *http.Client
	paths paths
	conf  serverConfig
	// amqpTarget is host:port of RabbitMQ, as the relays dial it;
	// agentTransportURL is the agents' transport_url.
	amqpTarget        string
	agentTransportURL string
	lock              *os.File
	db                *proc

	mu        sync.Mutex
	server    *proc
	nodes     map[string]*Node
	instances map[string]*Instance
	nextNode  int
	nextInst  int
	stopped   bool

	stopOnce sync.Once
	stopErr  error
}

// Available reports whether everything Start and AddNode need is installed
// and the process is root.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("neutronlocal: needs root (network namespaces, agents running as root)")
	}
	var missing []string
	for _, p := range []string{neutronServer, neutronDBManage, neutronL3Agent, neutronLBAgent, neutronStateChange,
		keepalivedBinary, mariadbd, mariadbInstallDB, mariadbClient} {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p)
		}
	}
	for _, tool := range []string{"ip", "iptables-save", "conntrack", "arping", "ping"} {
		found := false
		for _, d := range filepath.SplitList(childPath) {
			if _, err := os.Stat(filepath.Join(d, tool)); err == nil {
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("neutronlocal: not installed: %s (Debian packages %s)", strings.Join(missing, ", "), strings.Join(Packages, " "))
	}
	return nil
}

// Start starts a private Neutron as the package doc describes and returns
// once neutron-server answers. On failure everything it started is stopped
// and the error carries the tail of the relevant log; o.Dir is left for
// inspection.
func Start(ctx context.Context, o Options) (*Neutron, error) {
	began := time.Now()
	if err := Available(); err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultStartTimeout)
		defer cancel()
	}
	if o.Dir == "" {
		return nil, errors.New("neutronlocal: Options.Dir is required")
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("neutronlocal: scratch directory: %w", err)
	}
	if err := checkPath(dir); err != nil {
		return nil, fmt.Errorf("neutronlocal: scratch directory: %w", err)
	}
	target, agentURL, err := parseAMQPURL(o.AMQPURL)
	if err != nil {
		return nil, err
	}
	auth := o.AuthStrategy
	if auth == "" {
		auth = "noauth"
	}
	if auth != "noauth" && auth != "headers" {
		return nil, fmt.Errorf("neutronlocal: AuthStrategy %q: want noauth or headers", auth)
	}
	n := &Neutron{
		Dir:               dir,
		log:               o.Log,
		http:              o.HTTPClient,
		paths:             newPaths(dir),
		amqpTarget:        target,
		agentTransportURL: agentURL,
		nodes:             make(map[string]*Node),
		instances:         make(map[string]*Instance),
	}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	if n.http == nil {
		n.http = &http.Client{Timeout: 60 * time.Second}
	}
	n.log = n.log.With("component", "neutronlocal", "dir", dir)
	if len(n.paths.socket) > maxSocketPath {
		return nil, fmt.Errorf("neutronlocal: scratch directory %s is too long: socket %s exceeds %d bytes", dir, n.paths.socket, maxSocketPath)
	}
	if _, err := os.Stat(n.paths.datadir); err == nil {
		return nil, fmt.Errorf("neutronlocal: %s already holds a database; use a fresh directory", dir)
	}
	if err := n.paths.mkdirs(); err != nil {
		return nil, fmt.Errorf("neutronlocal: creating %s: %w", dir, err)
	}
	n.conf = serverConfig{
		TransportURL:  strings.Replace(o.AMQPURL, "amqp://", "rabbit://", 1),
		AuthStrategy:  auth,
		Debug:         o.Debug,
		AgentDownTime: int(AgentDownTime / time.Second),
		State:         n.paths.state,
		PasteConf:     n.paths.pasteConf,
		Log:           n.paths.log,
		Socket:        n.paths.socket,
		Lock:          n.paths.lock,
		PolicyFile:    n.paths.policyFile,
		PolicyDir:     n.paths.policyDir,
	}

	if n.lock, err = acquireLock(ctx, dir, n.log); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			if err := n.teardown(); err != nil {
				n.log.Error("stopping after a failed start", "err", err)
			}
		}
	}()
	n.conf.Port, err = freePort()
	if err != nil {
		return nil, err
	}
	if err := n.writeServerFiles(o.ServerConfig); err != nil {
		return nil, fmt.Errorf("neutronlocal: writing configuration: %w", err)
	}
	if err := n.startDatabase(ctx, o.NoSchemaCache); err != nil {
		return nil, err
	}
	t := time.Now()
	if err := n.startServerRetrying(ctx, o.ServerConfig); err != nil {
		return nil, err
	}
	n.log.Debug("neutron-server ready", "elapsed", time.Since(t).Round(time.Millisecond))
	if err := makeSwitch(ctx); err != nil {
		return nil, fmt.Errorf("neutronlocal: switch namespace: %w", err)
	}
	ok = true
	n.log.Info("neutron started", "url", n.URL(), "pid", n.server.pid, "elapsed", time.Since(began).Round(time.Millisecond))
	return n, nil
}

// parseAMQPURL checks RabbitMQ's URL and returns host:port and the agents'
// transport_url (the same credentials and vhost at 127.0.0.1, the relay).
func parseAMQPURL(s string) (target, agentURL string, err error) {
	if s == "" {
		return "", "", errors.New("neutronlocal: Options.AMQPURL is required (a RabbitMQ from internal/rabbitlocal)")
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", "", fmt.Errorf("neutronlocal: AMQPURL: %w", err)
	}
	if u.Scheme != "amqp" && u.Scheme != "rabbit" {
		return "", "", fmt.Errorf("neutronlocal: AMQPURL %q: want amqp:// or rabbit://", s)
	}
	port := u.Port()
	if port == "" {
		port = "5672"
	}
	target = net.JoinHostPort(u.Hostname(), port)
	a := *u
	a.Scheme = "rabbit"
	a.Host = net.JoinHostPort("127.0.0.1", port)
	if a.Path == "" {
		a.Path = "/"
	}
	return target, a.String(), nil
}

// freePort is a TCP port of 127.0.0.1 that was free a moment ago
// (neutron-server binds by itself: startServerRetrying retries if another
// process takes it meanwhile).
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("neutronlocal: finding a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// startServerRetrying starts neutron-server, on another free port if the
// chosen one was taken meanwhile.
func (n *Neutron) startServerRetrying(ctx context.Context, extra string) error {
	for attempt := 1; ; attempt++ {
		err := n.startServer(ctx)
		if err == nil || attempt == 3 || ctx.Err() != nil || !errors.Is(err, errAddrInUse) {
			return err
		}
		n.log.Warn("port taken meanwhile; trying another", "port", n.conf.Port)
		if n.conf.Port, err = freePort(); err != nil {
			return err
		}
		if err := n.writeServerFiles(extra); err != nil {
			return fmt.Errorf("neutronlocal: writing configuration: %w", err)
		}
	}
}

var errAddrInUse = errors.New("address already in use")

// startServer starts neutron-server and waits until GET / answers.
func (n *Neutron) startServer(ctx context.Context) error {
	logPath := n.paths.logFile("neutron-server.log")
	argv := append([]string{neutronServer}, n.serverArgs()...)
	p, err := startProc("neutron-server", argv, childEnv(n.Dir), n.Dir, n.paths.logFile("neutron-server.out"), logPath)
	if err != nil {
		return fmt.Errorf("neutronlocal: %w", err)
	}
	n.mu.Lock()
	n.server = p
	n.mu.Unlock()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = n.getVersions(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			p.kill()
			return fmt.Errorf("neutronlocal: waiting for neutron-server at %s (last error: %v): %w%s", n.URL(), last, ctx.Err(), p.logTails())
		case <-p.done:
			err := fmt.Errorf("neutronlocal: neutron-server exited before %s answered (%v)%s", n.URL(), p.waitErr, p.logTails())
			if strings.Contains(p.logTails(), "Address already in use") {
				err = fmt.Errorf("%w: %w", errAddrInUse, err)
			}
			p.kill()
			return err
		case <-tick.C:
		}
	}
}

func (n *Neutron) getVersions(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.URL()+"/", nil)
	if err != nil {
		return err
	}
	resp, err := n.http.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /: %s", resp.Status)
	}
	return nil
}

// URL is neutron-server's endpoint, http://127.0.0.1:PORT (the API is at
// URL()+"/v2.0").
func (n *Neutron) URL() string { return "http://127.0.0.1:" + strconv.Itoa(n.conf.Port) }

// ConfigPath is neutron-server's neutron.conf.
func (n *Neutron) ConfigPath() string { return n.paths.neutronConf }

// ConfigFiles are every --config-file of neutron-server, in order
// (neutron.conf, ml2_conf.ini, server-extra.conf).
func (n *Neutron) ConfigFiles() []string {
	return []string{n.paths.neutronConf, n.paths.ml2Conf, n.paths.extraConf}
}

// LogPath is neutron-server's log file.
func (n *Neutron) LogPath() string { return n.paths.logFile("neutron-server.log") }

// ServerPID is neutron-server's pid (also its process group id).
func (n *Neutron) ServerPID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.server.pid
}

// Restart stops neutron-server (SIGTERM, its workers with it) and starts it
// again on the same port, returning once it answers. Agents and the
// database keep running.
func (n *Neutron) Restart(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultStartTimeout)
		defer cancel()
	}
	n.mu.Lock()
	old, stopped := n.server, n.stopped
	n.mu.Unlock()
	if stopped {
		return errors.New("neutronlocal: Restart after Stop")
	}
	t := time.Now()
	if err := old.stop(termGrace); err != nil {
		return fmt.Errorf("neutronlocal: stopping neutron-server: %w", err)
	}
	took := time.Since(t)
	if err := n.startServer(ctx); err != nil {
		return err
	}
	n.log.Info("neutron-server restarted", "pid", n.ServerPID(), "stop", took.Round(time.Millisecond), "elapsed", time.Since(t).Round(time.Millisecond))
	return nil
}

// Stop removes every instance and node (their processes and namespaces),
// stops neutron-server and MariaDB, kills whatever of this run is left,
// deletes the switch and upstream namespaces and releases the machine-wide
// lock. It is idempotent; later calls return the first call's result.
func (n *Neutron) Stop() error {
	n.stopOnce.Do(func() {
		n.stopErr = n.teardown()
		if n.stopErr != nil {
			n.log.Error("stopping neutron", "err", n.stopErr)
		} else {
			n.log.Info("neutron stopped")
		}
	})
	return n.stopErr
}

func (n *Neutron) teardown() error {
	n.mu.Lock()
	n.stopped = true
	nodes := make([]*Node, 0, len(n.nodes))
	for _, nd := range n.nodes {
		nodes = append(nodes, nd)
	}
	insts := make([]*Instance, 0, len(n.instances))
	for _, in := range n.instances {
		insts = append(insts, in)
	}
	server := n.server
	n.mu.Unlock()

	var errs []error
	for _, in := range insts {
		errs = append(errs, in.remove(false))
	}
	for _, nd := range nodes {
		errs = append(errs, nd.remove())
	}
	if server != nil {
		errs = append(errs, server.stop(termGrace))
	}
	if n.db != nil {
		errs = append(errs, n.db.stop(termGrace))
	}
	if n.lock != nil {
		errs = append(errs, killStrays(n.Dir, 0))
		errs = append(errs, deleteAllNamespaces())
		errs = append(errs, releaseLock(n.lock))
		n.lock = nil
	}
	return errors.Join(errs...)
}
