package neutronlocal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/l3ha/l3ha/internal/linux"
)

// Names of the namespaces and physnets.
const (
	// NamespacePrefix starts the name of every network namespace this
	// package creates.
	NamespacePrefix = "l3ha-nn-"
	// SwitchNamespace holds one bridge per physnet (br-<physnet>) and the
	// VXLAN underlay bridge br-underlay; every node, instance and the
	// upstream host has a veth into them.
	SwitchNamespace = NamespacePrefix + "switch"
	// UpstreamNamespace is a host on the external network (physnet public)
	// with address UpstreamIP: ping it from an instance through a router.
	UpstreamNamespace = NamespacePrefix + "upstream"
	// instancePrefix follows NamespacePrefix in an instance's namespace.
	instancePrefix = "vm-"

	// PhysnetHA carries the HA networks (l3_ha_network_type flat,
	// l3_ha_network_physical_name hanet).
	PhysnetHA = "hanet"
	// PhysnetPublic is the flat physnet for an external network
	// (CreateExternalNetwork).
	PhysnetPublic = "public"
	// PhysnetTenant is a flat physnet for one admin-made tenant network;
	// VXLAN tenant networks (tenant_network_types vxlan, VNIs 1-1000) need
	// none.
	PhysnetTenant = "tenant"

	underlayDev = "underlay"
	vxlanPort   = "4789"
	vxlanGroup  = "224.0.0.1"
)

// Physnets are the flat physnets of every node (flat_networks); on a node
// each is a veth of the same name into the switch's bridge br-<physnet>.
var Physnets = []string{PhysnetHA, PhysnetPublic, PhysnetTenant}

// Addresses of the lab: the external network is TEST-NET-3, the VXLAN
// underlay is in the benchmarking range 198.18.0.0/15 (nodes 198.18.0.N,
// instances 198.18.1.N).
var (
	ExternalCIDR    = netip.MustParsePrefix("203.0.113.0/24")
	UpstreamIP      = netip.MustParseAddr("203.0.113.1")
	ExternalPoolMin = netip.MustParseAddr("203.0.113.100")
	ExternalPoolMax = netip.MustParseAddr("203.0.113.200")
	underlayBits    = 16
)

// nodeUnderlayIP is the local_ip of node number idx (1-254).
func nodeUnderlayIP(idx int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 0, byte(idx)}) }

// instanceUnderlayIP is the underlay address of instance number idx.
func instanceUnderlayIP(idx int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 18, 1, byte(idx)})
}

// ipCmd runs ip(8) with args.
func ipCmd(ctx context.Context, args ...string) error {
	return run(ctx, childEnv("/"), "", append([]string{"ip"}, args...)...)
}

// NetnsCommand is an exec.Cmd that runs name with args in network namespace
// ns (through `ip netns exec`).
func NetnsCommand(ctx context.Context, ns, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
	cmd.Env = childEnv("/")
	return cmd
}

// createNamespace creates ns (lo up); an existing one is an error.
func createNamespace(ns string) error {
	ok, err := linux.NamespaceExists(ns)
	if err != nil {
		return err
	}
	if ok {
		return fmt.Errorf("network namespace %s already exists", ns)
	}
	return linux.CreateNamespace(ns)
}

// vethToSwitch connects namespace ns (device dev) to the switch's bridge
// with a veth whose switch-side end is named swName.
func vethToSwitch(ctx context.Context, ns, dev, swName, bridge string) error {
	if err := ipCmd(ctx, "-n", SwitchNamespace, "link", "add", swName, "type", "veth", "peer", "name", dev, "netns", ns); err != nil {
		return err
	}
	if err := ipCmd(ctx, "-n", SwitchNamespace, "link", "set", swName, "master", bridge, "up"); err != nil {
		return err
	}
	return ipCmd(ctx, "-n", ns, "link", "set", dev, "up")
}

// makeSwitch creates SwitchNamespace with its bridges and UpstreamNamespace.
func makeSwitch(ctx context.Context) error {
	if err := createNamespace(SwitchNamespace); err != nil {
		return err
	}
	for _, br := range append(append([]string(nil), Physnets...), underlayDev) {
		// No IGMP snooping: the VXLAN underlay's multicast (224.0.0.1)
		// floods to every port.
		if err := ipCmd(ctx, "-n", SwitchNamespace, "link", "add", "br-"+br, "type", "bridge", "mcast_snooping", "0"); err != nil {
			return err
		}
		if err := ipCmd(ctx, "-n", SwitchNamespace, "link", "set", "br-"+br, "up"); err != nil {
			return err
		}
	}
	if err := createNamespace(UpstreamNamespace); err != nil {
		return err
	}
	if err := vethToSwitch(ctx, UpstreamNamespace, "eth0", "up-"+PhysnetPublic, "br-"+PhysnetPublic); err != nil {
		return err
	}
	up := netip.PrefixFrom(UpstreamIP, ExternalCIDR.Bits())
	return ipCmd(ctx, "-n", UpstreamNamespace, "addr", "add", up.String(), "dev", "eth0")
}

// relay is a TCP proxy whose listening socket is in a network namespace and
// whose outgoing connections are made from this process's namespace: the
// agents of a node reach RabbitMQ on 127.0.0.1 of the root namespace through
// it, and nothing but loopback carries their traffic.
type relay struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// startRelay listens on addr in namespace ns and forwards to target.
func startRelay(ns, addr, target string) (*relay, error) {
	var ln net.Listener
	err := linux.Do(ns, func() error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("AMQP relay in %s: %w", ns, err)
	}
	r := &relay{ln: ln, target: target, conns: make(map[net.Conn]struct{})}
	r.wg.Add(1)
	go r.serve()
	return r, nil
}

func (r *relay) serve() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // EMFILE and the like
			continue
		}
		if !r.track(c) {
			c.Close()
			return
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer r.untrack(c)
			up, err := net.DialTimeout("tcp", r.target, 10*time.Second)
			if err != nil {
				return // the agent retries
			}
			if !r.track(up) {
				up.Close()
				return
			}
			defer r.untrack(up)
			done := make(chan struct{}, 2)
			pipe := func(dst, src net.Conn) {
				io.Copy(dst, src)
				if tc, ok := dst.(*net.TCPConn); ok {
					tc.CloseWrite()
				}
				done <- struct{}{}
			}
			go pipe(up, c)
			go pipe(c, up)
			<-done
			<-done
		}()
	}
}

func (r *relay) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.conns[c] = struct{}{}
	return true
}

func (r *relay) untrack(c net.Conn) {
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
	c.Close()
}

// close stops listening, drops every connection and waits for the
// goroutines.
func (r *relay) close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	r.ln.Close()
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// netnsInode is the inode of the named namespace (what /proc/PID/ns/net
// links to).
func netnsInode(ns string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(linux.NetnsDir+"/"+ns, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// processesInNetns lists the processes whose network namespace is ns.
func processesInNetns(ns string) []int {
	ino, err := netnsInode(ns)
	if err != nil {
		return nil
	}
	want := fmt.Sprintf("net:[%d]", ino)
	var pids []int
	self := os.Getpid()
	for _, p := range processes() {
		if p.pid == self {
			continue
		}
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", p.pid)); err == nil && l == want {
			pids = append(pids, p.pid)
		}
	}
	return pids
}

// deleteNamespace kills what runs in ns and deletes it.
func deleteNamespace(ns string) error {
	ok, err := linux.NamespaceExists(ns)
	if err != nil || !ok {
		return err
	}
	if err := killPIDs(processesInNetns(ns), syscall.SIGKILL, 0); err != nil {
		return fmt.Errorf("namespace %s: %w", ns, err)
	}
	return linux.DeleteNamespace(ns)
}

// deleteAllNamespaces deletes every namespace named NamespacePrefix*.
func deleteAllNamespaces() error {
	names, err := linux.ListNamespaces(NamespacePrefix)
	if err != nil {
		return err
	}
	var errs []error
	for _, ns := range names {
		errs = append(errs, deleteNamespace(ns))
	}
	return errors.Join(errs...)
}

// validName checks a host or instance name: it becomes part of a namespace
// name, a directory name and the agents' host option.
func validName(kind, name string) error {
	if name == "" || len(name) > 32 {
		return fmt.Errorf("%s name %q: want 1-32 characters", kind, name)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("%s name %q: only letters, digits, '-', '_' and '.'", kind, name)
		}
	}
	if strings.HasPrefix(name, ".") {
		return fmt.Errorf("%s name %q: starts with '.'", kind, name)
	}
	return nil
}
