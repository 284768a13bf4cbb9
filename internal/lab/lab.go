package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/l3ha/l3ha/internal/keystone/local"
)

// DefaultRunDir is the parent of the default lab directories.
const DefaultRunDir = "/run/l3ha-lab"

// DefaultAgentDownTime is the lab server's agent_down_time (seconds): short,
// so that a dead node shows in the API within seconds.
const DefaultAgentDownTime = 10

// Data planes an agent can run.
const (
	DataplaneLinux = "linux"
	DataplaneFake  = "fake"
)

// Options configure a lab.
type Options struct {
	// Name is the lab's name (default "lab"); its namespaces are
	// l3ha-<name>-*.
	Name string
	// Dir holds lab.json, the agent token, state directories and logs
	// (default /run/l3ha-lab/<name>).
	Dir string
	// Binary is the l3ha binary the daemons run (default: this executable).
	Binary string
	// Dataplane is passed to every agent as --dataplane (linux or fake).
	Dataplane string
	// HADriver is passed to the agents as --ha-driver: one driver for every
	// node ("native"), or one per node ("net1=keepalived,net2=native"; a
	// plain item in such a list is the driver of the nodes not named, and a
	// node without any keeps the agent's default). See ParseHADrivers.
	// AdvertInt is passed to every agent as --ha-vrrp-advert-int when not
	// empty; network nodes with different drivers need it, so that they all
	// speak one VRRP version and interval (1: VRRPv2 at 1 s; 0.1: VRRPv3).
	HADriver  string
	AdvertInt string
	// HealthCheckInterval, when not empty, is passed to the network nodes'
	// agents as --ha-vrrp-health-check-interval (seconds).
	HealthCheckInterval string
	// ConntrackSync, when not empty ("true" or "false"), is passed to the
	// network nodes' agents as --ha-conntrack-sync.
	ConntrackSync string
	// AgentDownTime is the server's agent_down_time in seconds (default 10).
	AgentDownTime int
	// MinAgentsPerRouter is the server's min_l3_agents_per_router (0: 2).
	// The benchmarks set 1, so that routers can be created while only one
	// network node is eligible (all their masters on that node).
	MinAgentsPerRouter int
	// HARoutersPerNetwork is the server's l3_ha_routers_per_network (0: the
	// server's default, 254).
	HARoutersPerNetwork int
	// Keystone runs a private Keystone in the lab: the server validates
	// tokens with it and the lab logs in as its admin (see keystone.go).
	Keystone bool
	// Out receives progress messages (nil: discarded).
	Out io.Writer
}

func (o *Options) setDefaults() error {
	if o.Name == "" {
		o.Name = "lab"
	}
	if err := ValidateName(o.Name); err != nil {
		return err
	}
	if o.Dir == "" {
		o.Dir = filepath.Join(DefaultRunDir, o.Name)
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return err
	}
	o.Dir = dir
	if o.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("finding the l3ha binary: %w", err)
		}
		o.Binary = exe
	}
	if o.Dataplane == "" {
		o.Dataplane = DataplaneLinux
	}
	if o.Dataplane != DataplaneLinux && o.Dataplane != DataplaneFake {
		return fmt.Errorf("--dataplane %q: want %s or %s", o.Dataplane, DataplaneLinux, DataplaneFake)
	}
	if err := checkHADrivers(o.HADriver, o.AdvertInt); err != nil {
		return err
	}
	switch o.ConntrackSync {
	case "", "true", "false":
	default:
		return fmt.Errorf("--ha-conntrack-sync %q: want true or false", o.ConntrackSync)
	}
	if o.AgentDownTime == 0 {
		o.AgentDownTime = DefaultAgentDownTime
	}
	if o.AgentDownTime < 2 {
		return fmt.Errorf("agent down time %d s: want at least 2", o.AgentDownTime)
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	return nil
}

func (o *Options) sayf(format string, args ...any) { fmt.Fprintf(o.Out, format+"\n", args...) }

func requireRoot() error {
	if os.Geteuid() != 0 {
		return errors.New("the lab creates network namespaces: run it as root")
	}
	return nil
}

// Paths inside the lab directory.
// tokensPath is the server's agent tokens file (a line HOST TOKEN per node).
func tokensPath(dir string) string { return filepath.Join(dir, "agent-tokens") }

// nodeTokenPath holds node's agent credential.
func nodeTokenPath(dir, node string) string { return filepath.Join(dir, "agent-token-"+node) }
func logPath(dir, proc string) string       { return filepath.Join(dir, "logs", proc+".log") }
func serverStateDir(dir string) string      { return filepath.Join(dir, "server") }
func nodeStateDir(dir, node string) string  { return filepath.Join(dir, "nodes", node) }

// serverURL is the URL of the lab's server (reachable inside the lab only).
func serverURL() string { return "https://" + ControllerIP + ":" + strconv.Itoa(ServerPort) }

// apiFor returns a client of the lab's server that connects from inside the
// controller's namespace.
func apiFor(st *State) *apiClient {
	c := newAPIClient(NodeNamespace(st.Name, controllerNode().Name), serverURL(), caPath(st.Dir))
	if st.Keystone != nil {
		c.token = keystoneLogin(st)
	}
	return c
}

// existingNamespaces returns the namespaces of lab that exist now (mounted
// or stale files).
func existingNamespaces(lab string) ([]string, error) {
	return listNamespaces(func(ns string) bool { return ownsNamespace(lab, ns) })
}

// Up builds the lab and starts its server and agents. It fails if any of
// the lab's namespaces exists already. On failure it removes what it made
// (logs are kept) and says where the logs are.
func Up(ctx context.Context, o Options) (*State, error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	if err := requireRoot(); err != nil {
		return nil, err
	}
	if nss, err := existingNamespaces(o.Name); err != nil {
		return nil, err
	} else if len(nss) > 0 {
		return nil, fmt.Errorf("lab %q exists already (%s): run `l3ha lab down --name %s` first", o.Name, strings.Join(nss, ", "), o.Name)
	}
	if st, _ := LoadState(o.Dir); st != nil {
		for _, p := range st.Processes {
			if p.running() {
				return nil, fmt.Errorf("lab %q still has processes running (%s pid %d): run `l3ha lab down --name %s` first", o.Name, p.Name, p.PID, o.Name)
			}
		}
	}
	// A Keystone whose record was lost still uses <dir>/keystone, which
	// cleanDir is about to remove.
	if pids := keystonePIDs(o.Dir); len(pids) > 0 {
		return nil, fmt.Errorf("lab %q still has keystone processes running (pids %v): run `l3ha lab down --name %s` first", o.Name, pids, o.Name)
	}
	if o.Keystone {
		// Before any namespace exists.
		if err := local.Available(); err != nil {
			return nil, fmt.Errorf("lab --keystone: %w", err)
		}
	}
	// A fresh lab: no database or agent state from an earlier one.
	if err := cleanDir(o.Dir, true); err != nil {
		return nil, err
	}
	st, err := up(ctx, &o)
	if err != nil {
		derr := Down(DownOptions{Name: o.Name, Dir: o.Dir, KeepLogs: true})
		msg := fmt.Sprintf("lab up: %v", err)
		if derr != nil {
			msg += fmt.Sprintf("\ncleaning up also failed: %v", derr)
		}
		return nil, fmt.Errorf("%s\n(logs: %s)", msg, filepath.Join(o.Dir, "logs"))
	}
	return st, nil
}

func up(ctx context.Context, o *Options) (*State, error) {
	if err := os.MkdirAll(filepath.Join(o.Dir, "logs"), 0o755); err != nil {
		return nil, err
	}
	if err := writeAgentTokens(o.Dir); err != nil {
		return nil, err
	}
	if err := writeLabTLS(o.Dir); err != nil {
		return nil, err
	}
	st := &State{
		Name: o.Name, Dir: o.Dir, Binary: o.Binary, CreatedAt: time.Now().UTC(),
		Dataplane: o.Dataplane, HADriver: o.HADriver, AdvertInt: o.AdvertInt, HealthCheckInterval: o.HealthCheckInterval, ConntrackSync: o.ConntrackSync,
		AgentDownTime: o.AgentDownTime, ServerURL: serverURL(), Processes: []Process{},
		MinAgentsPerRouter: o.MinAgentsPerRouter, HARoutersPerNetwork: o.HARoutersPerNetwork,
	}
	if drivers, _ := ParseHADrivers(o.HADriver); len(drivers) > 0 {
		st.HADrivers = drivers
	}
	if err := st.Save(); err != nil {
		return nil, err
	}
	caps, err := probeAgent(ctx, o.Binary)
	if err != nil {
		return nil, err
	}
	agentArgs := map[string][]string{}
	for _, n := range Nodes {
		a, err := agentArgv(st, n, caps)
		if err != nil {
			return nil, err
		}
		agentArgs[n.Name] = a
	}

	o.sayf("creating namespaces %s{%s}", nsPrefix(o.Name), strings.Join(labRoles(), ","))
	if err := buildTopology(o.Name); err != nil {
		return nil, err
	}

	if o.Keystone {
		if err := startKeystone(ctx, o, st); err != nil {
			return nil, err
		}
	}
	ctl := controllerNode()
	o.sayf("starting server on %s in %s", st.ServerURL, NodeNamespace(o.Name, ctl.Name))
	srv, _, err := startDaemon("server", ctl.Name, NodeNamespace(o.Name, ctl.Name), serverArgv(st), logPath(o.Dir, "server"))
	if err != nil {
		return nil, err
	}
	st.setProcess(srv)
	if err := st.Save(); err != nil {
		return nil, err
	}
	api := apiFor(st)
	defer api.close()
	if err := waitFor(ctx, 30*time.Second, "the server to answer", func() (bool, error) {
		if !srv.running() {
			return false, exited(srv)
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		return api.ping(pctx) == nil, nil
	}); err != nil {
		return nil, err
	}

	var agents []Process
	for _, n := range Nodes {
		name := "agent-" + n.Name
		o.sayf("starting %s (%s)", name, strings.Join(agentArgs[n.Name][1:], " "))
		p, _, err := startDaemon(name, n.Name, NodeNamespace(o.Name, n.Name), agentArgs[n.Name], logPath(o.Dir, name))
		if err != nil {
			return nil, err
		}
		st.setProcess(p)
		agents = append(agents, p)
		if err := st.Save(); err != nil {
			return nil, err
		}
	}
	var registered []apiAgent
	var lastErr error // the API's last refusal, for a timeout's message
	if err := waitFor(ctx, 30*time.Second, "every agent to register", func() (bool, error) {
		for _, p := range agents {
			if !p.running() {
				return false, exited(p)
			}
		}
		actx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		list, err := api.agents(actx)
		if lastErr = err; err != nil {
			return false, nil
		}
		alive := 0
		for _, n := range Nodes {
			for _, a := range list {
				if a.Host == n.Name && a.Alive {
					alive++
					break
				}
			}
		}
		registered = list
		return alive == len(Nodes), nil
	}); err != nil {
		if lastErr != nil {
			err = fmt.Errorf("%w (last API error: %v)", err, lastErr)
		}
		return nil, err
	}
	if !caps.dvr {
		// The agent cannot run in dvr mode yet: keep routers off the compute
		// node by disabling its (legacy) agent.
		for _, a := range registered {
			if n, ok := nodeByName(a.Host); ok && !n.Network {
				err := api.do(ctx, http.MethodPut, "/v2.0/agents/"+a.ID, map[string]any{"agent": map[string]any{"admin_state_up": false}}, nil)
				if err != nil {
					return nil, fmt.Errorf("disabling the compute node's agent: %w", err)
				}
				st.ComputeAgentDisabled = true
				o.sayf("note: the agent does not accept --agent-mode dvr; %s runs a legacy agent with admin_state_up=false", a.Host)
			}
		}
		if err := st.Save(); err != nil {
			return nil, err
		}
	}
	o.sayf("lab %q is up: %d agents registered (dir %s)", o.Name, len(Nodes), o.Dir)
	return st, nil
}

// exited describes a daemon that is gone, with the end of its log.
func exited(p Process) error {
	msg := fmt.Sprintf("%s (pid %d) exited", p.Name, p.PID)
	if t := tailFile(p.Log, 15); t != "" {
		msg += "; end of " + p.Log + ":\n" + t
	}
	return errors.New(msg)
}

// ErrNotSettled is what an error says it is (errors.Is) when the system
// under test did not get where the lab waited for it — in time (waitFor's
// timeout), or after retries — as opposed to an error of the lab itself.
var ErrNotSettled = errors.New("the system under test did not settle")

// notSettled is an ErrNotSettled with its own message.
type notSettled struct{ msg string }

func (e notSettled) Error() string        { return e.msg }
func (e notSettled) Is(target error) bool { return target == ErrNotSettled }

func notSettledf(format string, args ...any) error {
	return notSettled{msg: fmt.Sprintf(format, args...)}
}

// waitFor polls cond until it is true, it fails, ctx ends or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return notSettledf("timed out after %s waiting for %s", timeout, what)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// writeAgentTokens gives every node of the lab its own agent credential:
// the server's tokens file pairs each with its host, so one node's token
// cannot speak for another.
func writeAgentTokens(dir string) error {
	var all strings.Builder
	for _, n := range Nodes {
		tok := randomHex(16)
		fmt.Fprintf(&all, "%s %s\n", n.Name, tok)
		if err := os.WriteFile(nodeTokenPath(dir, n.Name), []byte(tok+"\n"), 0o600); err != nil {
			return err
		}
	}
	return os.WriteFile(tokensPath(dir), []byte(all.String()), 0o600)
}

// serverArgv is the server's command line.
func serverArgv(st *State) []string {
	argv := []string{
		st.Binary, "server",
		"--bind", ControllerIP + ":" + strconv.Itoa(ServerPort),
		"--state-dir", serverStateDir(st.Dir),
		"--agent-tokens-file", tokensPath(st.Dir),
		"--tls-cert", certPath(st.Dir), "--tls-key", keyPath(st.Dir),
		"--l3-ha", "true",
		"--agent-down-time", strconv.Itoa(st.AgentDownTime),
		"--min-l3-agents-per-router", strconv.Itoa(st.minAgents()),
		"--max-l3-agents-per-router", "2",
	}
	if st.HARoutersPerNetwork > 0 {
		argv = append(argv, "--l3-ha-routers-per-network", strconv.Itoa(st.HARoutersPerNetwork))
	}
	if st.Keystone != nil {
		// The service user's password stays in a 0600 file, off the
		// command line.
		return append(argv, "--config-file", serverConfPath(st.Dir))
	}
	return append(argv, "--auth-strategy", "noauth")
}

// minAgents is the server's min_l3_agents_per_router (default 2).
func (s *State) minAgents() int {
	if s.MinAgentsPerRouter > 0 {
		return s.MinAgentsPerRouter
	}
	return 2
}

// HA drivers an agent offers (--ha-driver).
var haDriverNames = []string{"keepalived", "native"}

// ParseHADrivers reads the lab's --ha-driver value: a plain driver
// ("native") is every node's; a list of NODE=DRIVER items gives nodes their
// own ("net1=keepalived,net2=native"), and a plain item in the list is the
// driver of the nodes it does not name ("native,net1=keepalived"). It
// returns the driver of each node that has one; "" gives an empty map (every
// agent keeps its default).
func ParseHADrivers(spec string) (map[string]string, error) {
	out := map[string]string{}
	if strings.TrimSpace(spec) == "" {
		return out, nil
	}
	def := ""
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		node, driver, named := strings.Cut(item, "=")
		if !named {
			node, driver = "", item
		}
		node, driver = strings.TrimSpace(node), strings.TrimSpace(driver)
		if !slices.Contains(haDriverNames, driver) {
			return nil, fmt.Errorf("--ha-driver %q: driver %q: want %s", spec, driver, strings.Join(haDriverNames, " or "))
		}
		switch {
		case !named && def != "":
			return nil, fmt.Errorf("--ha-driver %q: two drivers for every node (%s, %s)", spec, def, driver)
		case !named:
			def = driver
		case out[node] != "":
			return nil, fmt.Errorf("--ha-driver %q: node %s named twice", spec, node)
		default:
			if _, ok := nodeByName(node); !ok {
				return nil, fmt.Errorf("--ha-driver %q: no node %q (nodes: %s)", spec, node, strings.Join(nodeNames(), ", "))
			}
			out[node] = driver
		}
	}
	if def != "" {
		for _, n := range Nodes {
			if out[n.Name] == "" {
				out[n.Name] = def
			}
		}
	}
	return out, nil
}

func nodeNames() []string {
	var out []string
	for _, n := range Nodes {
		out = append(out, n.Name)
	}
	return out
}

// checkHADrivers validates the lab's --ha-driver value. Network nodes with
// different drivers (or some with the agent's default) share VRRP groups,
// so they must agree on the version and interval, which differ between the
// drivers' defaults (keepalived 2 s VRRPv2, native 0.2 s VRRPv3): such a
// lab needs an explicit advert interval.
func checkHADrivers(spec, advertInt string) error {
	drivers, err := ParseHADrivers(spec)
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, n := range Nodes {
		if n.Network {
			seen[drivers[n.Name]] = true
		}
	}
	if len(seen) > 1 && advertInt == "" {
		return fmt.Errorf("--ha-driver %q: network nodes with different HA drivers need --ha-vrrp-advert-int, so that they speak one VRRP version and interval (1: VRRPv2 at 1 s, keepalived's and Neutron's kind; 0.1: VRRPv3)", spec)
	}
	return nil
}

// agentCaps is what the agent binary accepts, from `l3ha agent --help`.
type agentCaps struct {
	flags map[string]bool // long flag names without "--"
	dvr   bool            // --agent-mode accepts dvr
}

var (
	helpFlag = regexp.MustCompile(`--([a-z0-9][a-z0-9-]*)`)
	dvrWord  = regexp.MustCompile(`\bdvr\b($|[^_])`)
)

// parseAgentHelp reads the flags (and whether agent mode dvr is offered)
// from the text of `l3ha agent --help`.
func parseAgentHelp(help string) agentCaps {
	c := agentCaps{flags: map[string]bool{}}
	for _, line := range strings.Split(help, "\n") {
		t := strings.TrimSpace(line)
		if !strings.HasPrefix(t, "-") {
			continue // flag lines only
		}
		for _, m := range helpFlag.FindAllStringSubmatch(t, -1) {
			c.flags[m[1]] = true
			if m[1] == "agent-mode" {
				if _, usage, ok := strings.Cut(t, "--agent-mode"); ok && dvrWord.MatchString(usage) {
					c.dvr = true
				}
			}
			break // the first --name of a line is its flag
		}
	}
	return c
}

// probeAgent runs `<binary> agent --help` and parses it.
func probeAgent(ctx context.Context, binary string) (agentCaps, error) {
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, binary, "agent", "--help")
	cmd.Env = childEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return agentCaps{}, fmt.Errorf("%s agent --help: %w\n%s", binary, err, out)
	}
	return parseAgentHelp(string(out)), nil
}

// agentArgv is the command line of node n's agent. Flags that the agent does
// not know yet are left out when the lab can do without them (the fake data
// plane needs none of them); the Linux data plane cannot, so a missing one is
// an error that names it.
func agentArgv(st *State, n Node, caps agentCaps) ([]string, error) {
	argv := []string{st.Binary, "agent",
		"--host", n.Name,
		"--server", st.ServerURL,
		"--server-ca", caPath(st.Dir),
		"--agent-token-file", nodeTokenPath(st.Dir, n.Name),
		"--state-dir", nodeStateDir(st.Dir, n.Name),
		"--local-ip", n.FabricIP,
		"--dataplane", st.Dataplane,
	}
	mode := "legacy"
	if !n.Network && caps.dvr {
		mode = "dvr"
	}
	argv = append(argv, "--agent-mode", mode)
	var missing []string
	opt := func(flag, value string, required bool) {
		if caps.flags[flag] {
			argv = append(argv, "--"+flag, value)
		} else if required {
			missing = append(missing, "--"+flag)
		}
	}
	linux := st.Dataplane == DataplaneLinux
	opt("netns-suffix", NetnsSuffix(st.Name, n.Name), linux)
	if n.Network {
		opt("physical-interface-mappings", PhysicalNetwork+":"+devExternal, linux)
	}
	if d := st.haDriverOf(n.Name); d != "" {
		opt("ha-driver", d, true)
	}
	if st.AdvertInt != "" {
		opt("ha-vrrp-advert-int", st.AdvertInt, true)
	}
	if st.HealthCheckInterval != "" && n.Network {
		opt("ha-vrrp-health-check-interval", st.HealthCheckInterval, true)
	}
	if st.ConntrackSync != "" && n.Network {
		// A boolean flag takes its value only as --flag=value.
		if caps.flags["ha-conntrack-sync"] {
			argv = append(argv, "--ha-conntrack-sync="+st.ConntrackSync)
		} else {
			missing = append(missing, "--ha-conntrack-sync")
		}
	}
	for _, f := range []string{"host", "server", "server-ca", "agent-token-file", "state-dir", "local-ip", "dataplane", "agent-mode"} {
		if !caps.flags[f] {
			missing = append(missing, "--"+f)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return nil, fmt.Errorf("`%s agent` does not accept %s, which the lab needs (with --dataplane %s)", st.Binary, strings.Join(missing, ", "), st.Dataplane)
	}
	return argv, nil
}

// labEntries are the names a lab creates in its directory; nothing else
// there is ever removed (the directory may be one the user named).
var labEntries = func() []string {
	e := []string{stateFile, "agent-tokens", "tls", "server", "nodes", "logs", "keystone", "server.conf", "clouds.yaml"}
	for _, n := range Nodes {
		e = append(e, filepath.Base(nodeTokenPath("", n.Name)))
	}
	return e
}()

// cleanDir removes what the lab made in dir (with keepLogs, not the logs),
// and dir itself if that leaves it empty.
func cleanDir(dir string, keepLogs bool) error {
	var errs []error
	for _, e := range labEntries {
		if keepLogs && e == "logs" {
			continue
		}
		errs = append(errs, os.RemoveAll(filepath.Join(dir, e)))
	}
	// Temporary state files of an interrupted Save.
	if tmps, err := filepath.Glob(filepath.Join(dir, stateFile+".*")); err == nil {
		for _, f := range tmps {
			errs = append(errs, os.Remove(f))
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// DownOptions select the lab to remove.
type DownOptions struct {
	Name string
	Dir  string
	// KeepLogs leaves <dir>/logs in place.
	KeepLogs bool
	Out      io.Writer
}

// Down removes the lab: it stops the processes recorded in lab.json
// (checking each one's identity first), then every other process that lives
// in one of the lab's namespaces, deletes the lab's namespaces (its own and
// the router namespaces its agents made) and its directory. It works without
// lab.json (namespace names derive from the lab name) and on a lab that does
// not exist: it is idempotent.
func Down(o DownOptions) error {
	opts := Options{Name: o.Name, Dir: o.Dir, Binary: "-", Out: o.Out}
	if err := opts.setDefaults(); err != nil {
		return err
	}
	if err := requireRoot(); err != nil {
		return err
	}
	var errs []error
	st, err := LoadState(opts.Dir)
	if err != nil {
		opts.sayf("ignoring unreadable state file: %v", err)
	}
	// Agents first (a graceful agent may still talk to the server), then
	// the server, and Keystone last, after the sweeps below (a server whose
	// record was lost among them): the requests a server finishes while it
	// stops still have their tokens validated.
	var keystones []Process
	if st != nil {
		var agents, servers []Process
		for _, p := range st.Processes {
			switch p.Name {
			case "server":
				servers = append(servers, p)
			case "keystone":
				keystones = append(keystones, p)
			default:
				agents = append(agents, p)
			}
		}
		for _, group := range [][]Process{agents, servers} {
			if left := stopProcesses(group); len(left) > 0 {
				errs = append(errs, fmt.Errorf("processes %v did not stop", left))
			}
		}
	}
	// Whatever still runs in the lab's namespaces: pingers, keepalived,
	// daemons whose record was lost.
	for range 3 {
		nss, err := existingNamespaces(opts.Name)
		if err != nil {
			errs = append(errs, err)
			break
		}
		inodes := map[uint64]bool{}
		for _, ns := range nss {
			if ino := nsInode(ns); ino != 0 {
				inodes[ino] = true
			}
		}
		pids := pidsInNamespaces(inodes)
		if len(pids) == 0 {
			break
		}
		opts.sayf("stopping %d process(es) in the lab's namespaces: %v", len(pids), pids)
		stopPIDs(pids, func(pid int) bool {
			ino, ok := netnsOfPID(pid)
			return ok && inodes[ino]
		}, 5*time.Second)
	}
	// Daemons of this lab whose record was lost and whose namespace was
	// deleted behind the lab's back: their command line names one of the
	// lab's token files, which no other process does.
	tokenFlags := [][2]string{{"--agent-tokens-file", tokensPath(opts.Dir)}}
	for _, n := range Nodes {
		tokenFlags = append(tokenFlags, [2]string{"--agent-token-file", nodeTokenPath(opts.Dir, n.Name)})
	}
	for _, tf := range tokenFlags {
		if pids := pidsWithArgs(tf[0], tf[1]); len(pids) > 0 {
			opts.sayf("stopping %d process(es) of the lab outside its namespaces: %v", len(pids), pids)
			stopPIDs(pids, func(pid int) bool {
				return len(pidsWithArgs(tf[0], tf[1], pid)) == 1
			}, 5*time.Second)
		}
	}
	if left := stopProcesses(keystones); len(left) > 0 {
		errs = append(errs, fmt.Errorf("processes %v did not stop", left))
	}
	// Keystone's uWSGI runs in the root namespace (only its socket is in
	// the controller's), so the sweeps above do not see it: what is left
	// of it (workers of the master stopped above, or a master whose record
	// was lost: `lab up` died while Keystone started) is found by its
	// --chdir <dir>/keystone. A uWSGI left running would also keep the
	// controller's namespace alive, unnamed, after it was deleted.
	if left := stopKeystoneStrays(opts); len(left) > 0 {
		errs = append(errs, fmt.Errorf("keystone processes %v did not stop", left))
	}
	nss, err := existingNamespaces(opts.Name)
	if err != nil {
		errs = append(errs, err)
	}
	// Router namespaces first, then the nodes, then the switches.
	sort.SliceStable(nss, func(i, j int) bool { return nsOrder(opts.Name, nss[i]) < nsOrder(opts.Name, nss[j]) })
	for _, ns := range nss {
		flushLinks(ns)
		if err := deleteNamespace(ns); err != nil {
			errs = append(errs, err)
		}
	}
	if len(nss) > 0 {
		opts.sayf("deleted namespaces %s", strings.Join(nss, " "))
	}
	if left, err := existingNamespaces(opts.Name); err == nil && len(left) > 0 {
		errs = append(errs, fmt.Errorf("namespaces left: %s", strings.Join(left, " ")))
	}
	if o.KeepLogs {
		keepKeystoneLogs(opts.Dir)
	}
	if err := cleanDir(opts.Dir, o.KeepLogs); err != nil {
		errs = append(errs, err)
	}
	if !o.KeepLogs {
		// Remove the parent too when it is the default one and now empty.
		if filepath.Dir(opts.Dir) == DefaultRunDir {
			_ = os.Remove(DefaultRunDir)
		}
	}
	return errors.Join(errs...)
}

// nsOrder sorts namespaces for deletion: agents' namespaces, instance,
// nodes, then the switches.
func nsOrder(lab, ns string) int {
	switch ns {
	case NodeNamespace(lab, instanceNS), NodeNamespace(lab, upstreamNS):
		return 1
	case NodeNamespace(lab, fabricNS), NodeNamespace(lab, externalNS):
		return 3
	}
	if strings.HasPrefix(ns, nsPrefix(lab)) {
		return 2
	}
	return 0
}

// stopProcesses stops the recorded processes that are still the lab's and
// returns the names of those that survived.
func stopProcesses(ps []Process) []string {
	byPID := map[int]Process{}
	var pids []int
	for _, p := range ps {
		if p.running() {
			byPID[p.PID] = p
			pids = append(pids, p.PID)
		}
	}
	left := stopPIDs(pids, func(pid int) bool { return byPID[pid].running() }, 5*time.Second)
	var names []string
	for _, pid := range left {
		names = append(names, fmt.Sprintf("%s (pid %d)", byPID[pid].Name, pid))
	}
	return names
}
