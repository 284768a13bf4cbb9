package neutronlocal

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// NodeOptions configure AddNode.
type NodeOptions struct {
	// Host is the agents' host name; the node's namespace is
	// l3ha-nn-<Host>. Letters, digits, '-', '_', '.'; not "switch" or
	// "upstream", not starting with "vm-".
	Host string
	// L3Agent starts Neutron's neutron-l3-agent on the node.
	L3Agent bool
	// L3AgentConfig is appended to the node's l3_agent.ini (oslo.config
	// text; later sections and options win).
	L3AgentConfig string
	// LinuxBridgeAgentConfig is appended to linuxbridge_agent.ini.
	LinuxBridgeAgentConfig string
}

// Node is a network node: a namespace with a linuxbridge agent and
// optionally an L3 agent.
type Node struct {
	n       *Neutron
	opts    NodeOptions
	host    string
	ns      string
	idx     int
	dir     string
	localIP netip.Addr

	neutronConf, l3Conf, lbConf string

	mu    sync.Mutex
	relay *relay
	lb    *proc
	l3    *proc
	// mnt holds the mount namespace the node's L3 agents run in (a tmpfs
	// of their own on /run/netns): it outlives an L3 agent's restart, as a
	// real node's router namespaces do, and dies with the node.
	mnt     *proc
	removed bool
}

// AddNode creates network node o.Host and returns once its agents are alive
// in GET /v2.0/agents.
func (n *Neutron) AddNode(ctx context.Context, o NodeOptions) (*Node, error) {
	if err := validName("host", o.Host); err != nil {
		return nil, fmt.Errorf("neutronlocal: %w", err)
	}
	if o.Host == "switch" || o.Host == "upstream" || len(o.Host) >= len(instancePrefix) && o.Host[:len(instancePrefix)] == instancePrefix {
		return nil, fmt.Errorf("neutronlocal: host name %q is reserved", o.Host)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultStartTimeout)
		defer cancel()
	}
	n.mu.Lock()
	if n.stopped {
		n.mu.Unlock()
		return nil, errors.New("neutronlocal: AddNode after Stop")
	}
	if _, dup := n.nodes[o.Host]; dup {
		n.mu.Unlock()
		return nil, fmt.Errorf("neutronlocal: node %s exists", o.Host)
	}
	n.nextNode++
	idx := n.nextNode
	if idx > 254 {
		n.mu.Unlock()
		return nil, errors.New("neutronlocal: too many nodes")
	}
	nd := &Node{
		n:       n,
		opts:    o,
		host:    o.Host,
		ns:      NamespacePrefix + o.Host,
		idx:     idx,
		dir:     filepath.Join(n.Dir, "node-"+o.Host),
		localIP: nodeUnderlayIP(idx),
	}
	n.nodes[o.Host] = nd
	n.mu.Unlock()

	nd.neutronConf = filepath.Join(nd.dir, "neutron.conf")
	nd.l3Conf = filepath.Join(nd.dir, "l3_agent.ini")
	nd.lbConf = filepath.Join(nd.dir, "linuxbridge_agent.ini")
	began := time.Now()
	if err := nd.setup(ctx); err != nil {
		if rerr := nd.Remove(); rerr != nil {
			n.log.Error("removing a half-made node", "host", o.Host, "err", rerr)
		}
		return nil, err
	}
	n.log.Info("node added", "host", o.Host, "namespace", nd.ns, "l3_agent", o.L3Agent, "elapsed", time.Since(began).Round(time.Millisecond))
	return nd, nil
}

func (nd *Node) setup(ctx context.Context) error {
	if sock := filepath.Join(nd.dir, "keepalived-state-change"); len(sock) > maxSocketPath {
		return fmt.Errorf("neutronlocal: node %s: socket %s exceeds %d bytes: use a shorter Dir or host name", nd.host, sock, maxSocketPath)
	}
	for _, d := range []string{nd.dir, filepath.Join(nd.dir, "lock"), filepath.Join(nd.dir, "ha_confs"), filepath.Join(nd.dir, "log"), filepath.Join(nd.dir, "conf.d")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("neutronlocal: node %s: %w", nd.host, err)
		}
	}
	err := writeNodeFiles(nodeConfig{
		Host:         nd.host,
		Dir:          nd.dir,
		TransportURL: nd.n.agentTransportURL,
		Debug:        nd.n.conf.Debug,
		LocalIP:      nd.localIP,
		Mappings:     physnetMappings(),
		L3Extra:      nd.opts.L3AgentConfig,
		LBExtra:      nd.opts.LinuxBridgeAgentConfig,
	}, nd.neutronConf, nd.l3Conf, nd.lbConf)
	if err != nil {
		return fmt.Errorf("neutronlocal: node %s: writing configuration: %w", nd.host, err)
	}
	if err := createNamespace(nd.ns); err != nil {
		return fmt.Errorf("neutronlocal: node %s: %w", nd.host, err)
	}
	tag := "n" + strconv.Itoa(nd.idx) + "-"
	for _, p := range Physnets {
		if err := vethToSwitch(ctx, nd.ns, p, tag+p, "br-"+p); err != nil {
			return fmt.Errorf("neutronlocal: node %s: %w", nd.host, err)
		}
	}
	if err := vethToSwitch(ctx, nd.ns, underlayDev, tag+underlayDev, "br-"+underlayDev); err != nil {
		return fmt.Errorf("neutronlocal: node %s: %w", nd.host, err)
	}
	if err := ipCmd(ctx, "-n", nd.ns, "addr", "add", netip.PrefixFrom(nd.localIP, underlayBits).String(), "dev", underlayDev); err != nil {
		return fmt.Errorf("neutronlocal: node %s: %w", nd.host, err)
	}
	return nd.startAgents(ctx)
}

// startAgents starts the relay, the linuxbridge agent and (if configured)
// the L3 agent, and waits until they are alive.
func (nd *Node) startAgents(ctx context.Context) error {
	r, err := startRelay(nd.ns, nd.n.relayListenAddr(), nd.n.amqpTarget)
	if err != nil {
		return fmt.Errorf("neutronlocal: node %s: %w", nd.host, err)
	}
	nd.mu.Lock()
	nd.relay = r
	nd.mu.Unlock()

	since := time.Now()
	lb, err := startProc("neutron-linuxbridge-agent "+nd.host, []string{
		"ip", "netns", "exec", nd.ns, neutronLBAgent,
		"--config-file", nd.neutronConf, "--config-file", nd.lbConf,
		"--config-dir", filepath.Join(nd.dir, "conf.d"),
		"--log-file", filepath.Join(nd.dir, "log", "linuxbridge-agent.log"),
	}, childEnv(nd.dir), nd.dir, filepath.Join(nd.dir, "log", "linuxbridge-agent.out"), filepath.Join(nd.dir, "log", "linuxbridge-agent.log"))
	if err != nil {
		return fmt.Errorf("neutronlocal: node %s: %w", nd.host, err)
	}
	nd.mu.Lock()
	nd.lb = lb
	nd.mu.Unlock()
	if nd.opts.L3Agent {
		// Both start at once; their Python imports take seconds each.
		if err := nd.startL3(nil); err != nil {
			return err
		}
	}
	if err := nd.n.waitAgent(ctx, nd.host, AgentTypeLinuxBridge, since, lb); err != nil {
		return err
	}
	if nd.opts.L3Agent {
		nd.mu.Lock()
		l3 := nd.l3
		nd.mu.Unlock()
		return nd.n.waitAgent(ctx, nd.host, AgentTypeL3, since, l3)
	}
	return nil
}

// relayListenAddr is where the agents' transport_url points in a node's
// namespace: 127.0.0.1 and RabbitMQ's own port.
func (n *Neutron) relayListenAddr() string {
	_, port, _ := net.SplitHostPort(n.amqpTarget)
	return "127.0.0.1:" + port
}

// Host is the node's host name.
func (nd *Node) Host() string { return nd.host }

// Namespace is the node's network namespace, l3ha-nn-<host>.
func (nd *Node) Namespace() string { return nd.ns }

// Dir is the node's state directory (state_path), Dir/node-<host>.
func (nd *Node) Dir() string { return nd.dir }

// HAConfsPath is the L3 agent's ha_confs_path (keepalived.conf, pid files
// and the state file of each HA router).
func (nd *Node) HAConfsPath() string { return filepath.Join(nd.dir, "ha_confs") }

// UnderlayIP is the node's VXLAN local_ip.
func (nd *Node) UnderlayIP() netip.Addr { return nd.localIP }

// ConfigFiles are the configuration files of an L3 agent of this node, in
// --config-file order: neutron.conf (host, transport_url through the relay,
// state_path) and l3_agent.ini.
func (nd *Node) ConfigFiles() []string { return []string{nd.neutronConf, nd.l3Conf} }

// LinuxBridgeConfigFiles are the linuxbridge agent's configuration files.
func (nd *Node) LinuxBridgeConfigFiles() []string { return []string{nd.neutronConf, nd.lbConf} }

// L3AgentLogPath is neutron-l3-agent's log file (its --log-file; another
// L3 agent's output goes to L3AgentOutputPath).
func (nd *Node) L3AgentLogPath() string { return filepath.Join(nd.dir, "log", "l3-agent.log") }

// L3AgentOutputPath is where the L3 agent's stdout and stderr go.
func (nd *Node) L3AgentOutputPath() string { return filepath.Join(nd.dir, "log", "l3-agent.out") }

// L3AgentPID is the running L3 agent's pid (its process group id), 0 if
// none runs.
func (nd *Node) L3AgentPID() int {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.l3 == nil || nd.l3.exited() {
		return 0
	}
	return nd.l3.pid
}

// mountHolderLocked starts, unless it runs, the process holding the node's
// L3 mount namespace: `ip netns exec` gives it a mount namespace of its
// own whose mounts do not propagate back (it makes / a recursive slave), a
// private tmpfs is mounted on /run/netns there, and it sleeps. L3 agents
// and RouterCommand enter it (l3Wrapper), so that two nodes' agents can
// both create qrouter-<id>, none of them sees anybody else's namespaces,
// and the router namespaces outlive an agent's restart.
func (nd *Node) mountHolderLocked() (int, error) {
	if nd.mnt != nil && !nd.mnt.exited() {
		return nd.mnt.pid, nil
	}
	p, err := startProc("netns holder "+nd.host, []string{"ip", "netns", "exec", nd.ns, "/bin/sh", "-c",
		// The comment names the node's directory, so that a crashed run's
		// holder is found (and ended) by it like every other process.
		`mount -t tmpfs -o mode=0755,size=1m l3ha-nn-netns /run/netns || exit 1; while :; do sleep 3600; done # ` + nd.dir},
		childEnv(nd.dir), nd.dir, filepath.Join(nd.dir, "log", "netns-holder.out"))
	if err != nil {
		return 0, err
	}
	// Ready once the tmpfs is mounted in its mount namespace.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", p.pid)); err == nil && strings.Contains(string(b), " /run/netns ") && strings.Contains(string(b), "l3ha-nn-netns") {
			break
		}
		if p.exited() || time.Now().After(deadline) {
			_ = p.kill()
			return 0, fmt.Errorf("node %s: the mount namespace holder did not mount /run/netns (see %s)", nd.host, filepath.Join(nd.dir, "log", "netns-holder.out"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	nd.mnt = p
	return p.pid, nil
}

// l3Wrapper runs the rest of its arguments in the node's network namespace
// and L3 mount namespace (mountHolderLocked).
func (nd *Node) l3Wrapper(holder int) []string {
	return []string{"nsenter", "--target", strconv.Itoa(holder), "--mount", "--net", "--"}
}

// StartL3Agent starts an L3 agent on the node, in its namespace with a
// private /run/netns, and waits until the server lists it alive. argv is
// the command; nil means Neutron's neutron-l3-agent. Either gets
// "--config-file F" for each of ConfigFiles appended (Neutron's also
// --config-dir for an empty directory and --log-file L3AgentLogPath). Its
// output goes to L3AgentOutputPath. StopL3Agent, KillNode, Remove and Stop
// stop it.
func (nd *Node) StartL3Agent(ctx context.Context, argv ...string) error {
	since := time.Now()
	if err := nd.startL3(argv); err != nil {
		return err
	}
	nd.mu.Lock()
	l3 := nd.l3
	nd.mu.Unlock()
	return nd.n.waitAgent(ctx, nd.host, AgentTypeL3, since, l3)
}

func (nd *Node) startL3(argv []string) error {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.removed {
		return fmt.Errorf("neutronlocal: node %s was removed", nd.host)
	}
	if nd.l3 != nil && !nd.l3.exited() {
		return fmt.Errorf("neutronlocal: node %s already runs an L3 agent (pid %d)", nd.host, nd.l3.pid)
	}
	holder, err := nd.mountHolderLocked()
	if err != nil {
		return fmt.Errorf("neutronlocal: %w", err)
	}
	args := append([]string(nil), argv...)
	logs := []string{}
	if len(args) == 0 {
		args = []string{neutronL3Agent}
	}
	for _, f := range nd.ConfigFiles() {
		args = append(args, "--config-file", f)
	}
	if len(argv) == 0 {
		args = append(args, "--config-dir", filepath.Join(nd.dir, "conf.d"), "--log-file", nd.L3AgentLogPath())
		logs = append(logs, nd.L3AgentLogPath())
	}
	p, err := startProc("l3-agent "+nd.host, append(nd.l3Wrapper(holder), args...), childEnv(nd.dir), nd.dir, nd.L3AgentOutputPath(), logs...)
	if err != nil {
		return fmt.Errorf("neutronlocal: node %s: %w", nd.host, err)
	}
	nd.l3 = p
	return nil
}

// RouterCommand is an exec.Cmd running name with args in router namespace
// qrouter-<routerID> of the node's L3 agents (entering their mount
// namespace, where that namespace is mounted; it outlives an agent).
func (nd *Node) RouterCommand(ctx context.Context, routerID, name string, args ...string) (*exec.Cmd, error) {
	nd.mu.Lock()
	pid := 0
	if nd.mnt != nil && !nd.mnt.exited() {
		pid = nd.mnt.pid
	}
	nd.mu.Unlock()
	if pid == 0 {
		return nil, fmt.Errorf("neutronlocal: node %s has run no L3 agent since it started", nd.host)
	}
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--target", strconv.Itoa(pid), "--mount", "--net",
		"ip", "netns", "exec", "qrouter-" + routerID, name}, args...)...)
	cmd.Env = childEnv("/")
	return cmd, nil
}

// KeepalivedPID is the pid of the running keepalived (its parent process)
// of router routerID on this node, 0 if none runs. It is read from the pid
// file the L3 agent has keepalived write (HAConfsPath()/<id>.pid.keepalived).
func (nd *Node) KeepalivedPID(routerID string) int {
	b, err := os.ReadFile(filepath.Join(nd.HAConfsPath(), routerID+".pid.keepalived"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	if p, ok := readProc(pid); !ok || !strings.Contains(p.cmdline, nd.HAConfsPath()+"/") {
		return 0 // gone, or the pid reused by another process
	}
	return pid
}

// StopL3Agent stops the node's L3 agent (SIGTERM, SIGKILL after 15 s) and
// then the keepalived and neutron-keepalived-state-change daemons it left
// (found through their command lines, which name HAConfsPath: their pid
// files and configuration are there). Its router namespaces stay, as on a
// real node, until the node dies. Without an L3 agent it does nothing.
func (nd *Node) StopL3Agent() error {
	nd.mu.Lock()
	l3 := nd.l3
	nd.mu.Unlock()
	var errs []error
	if l3 != nil {
		errs = append(errs, l3.stop(termGrace))
	}
	errs = append(errs, killStrays(nd.HAConfsPath(), 5*time.Second))
	return errors.Join(errs...)
}

// SetLinksUp sets the node's physnet and underlay links up or down (down:
// the node is cut from every network, its processes keep running).
func (nd *Node) SetLinksUp(up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	for _, dev := range append(append([]string(nil), Physnets...), underlayDev) {
		errs = append(errs, ipCmd(ctx, "-n", nd.ns, "link", "set", dev, state))
	}
	return errors.Join(errs...)
}

// KillNode is the node's death: its links go down, its AMQP relay closes,
// and every process of the node is SIGKILLed at once (agents, keepalived,
// state-change monitors). The namespace stays; Revive starts it again,
// Remove deletes it.
func (nd *Node) KillNode() error {
	errs := []error{nd.SetLinksUp(false)}
	errs = append(errs, nd.killProcesses())
	return errors.Join(errs...)
}

func (nd *Node) killProcesses() error {
	nd.mu.Lock()
	r, lb, l3, mnt := nd.relay, nd.lb, nd.l3, nd.mnt
	nd.relay, nd.mnt = nil, nil
	nd.mu.Unlock()
	if r != nil {
		r.close()
	}
	// Everything at once: the daemons first would let the agents notice.
	var pids []int
	for _, p := range []*proc{l3, lb, mnt} {
		if p != nil && !p.exited() {
			pids = append(pids, groupMembers(p.pid)...)
		}
	}
	pids = append(pids, strays(nd.dir)...)
	errs := []error{killPIDs(pids, syscall.SIGKILL, 0)}
	for _, p := range []*proc{l3, lb, mnt} {
		if p != nil {
			errs = append(errs, p.kill())
		}
	}
	errs = append(errs, killStrays(nd.dir, 0))
	return errors.Join(errs...)
}

// Revive brings a killed (or cut) node back: links up, a new relay, the
// linuxbridge agent and, if NodeOptions.L3Agent, neutron-l3-agent, like a
// rebooted node. It returns once the agents are alive.
func (nd *Node) Revive(ctx context.Context) error {
	if err := nd.killProcesses(); err != nil {
		return err
	}
	if err := nd.SetLinksUp(true); err != nil {
		return err
	}
	return nd.startAgents(ctx)
}

// Remove kills the node's processes and deletes its namespace (the
// switch-side ends of its veths go with it). The agents stay registered in
// Neutron (dead after AgentDownTime). Idempotent.
func (nd *Node) Remove() error {
	err := nd.remove()
	nd.n.mu.Lock()
	if nd.n.nodes[nd.host] == nd {
		delete(nd.n.nodes, nd.host)
	}
	nd.n.mu.Unlock()
	return err
}

func (nd *Node) remove() error {
	nd.mu.Lock()
	nd.removed = true
	nd.mu.Unlock()
	return errors.Join(nd.killProcesses(), deleteNamespace(nd.ns))
}
