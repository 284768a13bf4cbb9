package linux

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// ErrProberClosed is returned (wrapped) by a GatewayProber used after Close.
var ErrProberClosed = errors.New("gateway prober closed")

// gwNetlinkTimeout bounds each netlink request of a prober: a probe must
// not hang on a wedged rtnetlink socket when the health checker calls it
// every second.
const gwNetlinkTimeout = 5 * time.Second

// GatewayProber checks that a router's upstream gateway answers ARP on the
// router's gateway device (qg-), for Neutron's ha_vrrp_health_check_interval.
// ARP rather than ICMP (Neutron's script pings): a backup's qg- device has no
// address, so it cannot ping, but it can send an ARP probe (RFC 5227, sender
// 0.0.0.0), which Linux and most gateways answer. Every node of a router thus
// knows whether it could serve the gateway before it becomes master.
//
// A prober is long-lived, one per (namespace, device): a check every second
// reuses its rtnetlink socket and its packet socket. It survives the device,
// or the whole namespace, being re-created: whatever fails is closed and
// reopened by the next probe. Close it when the router is no longer checked —
// its sockets hold the namespace, which the kernel frees only once they are
// closed.
//
// Probes of one prober run one at a time; probers are independent of each
// other, so many routers can be checked concurrently.
type GatewayProber struct {
	ns, dev string
	sem     chan struct{} // held by the probe in flight

	mu        sync.Mutex // guards what follows; never held while waiting for a reply
	closed    bool
	nl        *netlink.Handle // rtnetlink socket in ns
	conn      *packet.Conn    // ARP socket bound to dev
	connIndex int             // dev's ifindex when conn was opened
}

// NewGatewayProber returns a prober for device dev in namespace ns (NodeNS or
// a name under /run/netns). Nothing is opened until the first probe, so
// the device need not exist yet.
func NewGatewayProber(ns, dev string) *GatewayProber {
	return &GatewayProber{ns: ns, dev: dev, sem: make(chan struct{}, 1)}
}

// ProbeGateway is a one-shot GatewayProber.Probe: it opens and closes its
// sockets. Use a GatewayProber for repeated checks.
func ProbeGateway(ctx context.Context, ns, dev string, gateway netip.Addr, timeout time.Duration) (bool, error) {
	p := NewGatewayProber(ns, dev)
	defer p.Close()
	return p.Probe(ctx, gateway, timeout)
}

// probeTarget is what one probe sends from.
type probeTarget struct {
	conn *packet.Conn
	mac  net.HardwareAddr
	src  netip.Addr // dev's address on the gateway's subnet, or 0.0.0.0
}

// Probe sends one ARP request for gateway out of the device and waits up to
// timeout for the gateway to answer. It returns true if a reply from
// gateway arrived, false with a nil error if none did in time, and false
// with an error if the probe could not be made (no such device or namespace,
// device down, socket failure) or ctx ended — the caller decides whether
// those count as an unhealthy gateway.
//
// The sender address is the device's IPv4 address on gateway's subnet if it
// has one (a master), otherwise 0.0.0.0 (an RFC 5227 probe: a backup's
// qg- device has no address). Cancelling ctx ends the probe at once.
func (p *GatewayProber) Probe(ctx context.Context, gateway netip.Addr, timeout time.Duration) (bool, error) {
	gateway = gateway.Unmap()
	if !gateway.Is4() || gateway.IsUnspecified() {
		return false, fmt.Errorf("probe gateway %v on %s in %s: ARP needs a unicast IPv4 gateway", gateway, p.dev, nsLabel(p.ns))
	}
	if timeout <= 0 {
		return false, fmt.Errorf("probe gateway %s on %s in %s: timeout %v is not positive", gateway, p.dev, nsLabel(p.ns), timeout)
	}
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return false, fmt.Errorf("probe gateway %s on %s in %s: %w", gateway, p.dev, nsLabel(p.ns), ctx.Err())
	}
	defer func() { <-p.sem }()

	ok, err := p.probe(ctx, gateway, timeout)
	if err != nil {
		return false, fmt.Errorf("probe gateway %s on %s in %s: %w", gateway, p.dev, nsLabel(p.ns), err)
	}
	return ok, nil
}

func (p *GatewayProber) probe(ctx context.Context, gateway netip.Addr, timeout time.Duration) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	t, err := p.prepare(gateway)
	if err != nil {
		return false, err
	}
	if err := drain(t.conn); err != nil {
		// A socket error pending since the last probe (the device went
		// down and up meanwhile) is news about the past: one new socket
		// tells about now.
		p.discard(t.conn)
		if t, err = p.prepare(gateway); err != nil {
			return false, err
		}
		if err := drain(t.conn); err != nil {
			p.discard(t.conn)
			return false, fmt.Errorf("drain ARP socket: %w", err)
		}
	}
	req, err := arp.NewPacket(arp.OperationRequest, t.mac, t.src, ethernet.Broadcast, gateway)
	if err != nil {
		return false, fmt.Errorf("build ARP request: %w", err)
	}
	// The target hardware address of a request is unknown: zeros, as the
	// kernel sends (NewPacket needs a valid length, hence Broadcast above).
	req.TargetHardwareAddr = make(net.HardwareAddr, len(t.mac))
	b, err := req.MarshalBinary()
	if err != nil {
		return false, fmt.Errorf("encode ARP request: %w", err)
	}

	// Cancelling ctx moves the read deadline into the past, which wakes the
	// read below. stop waits for the function to have run, so that it
	// cannot move the deadline of the next probe.
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		t.conn.SetReadDeadline(time.Unix(1, 0))
	})
	defer func() {
		if !stop() {
			<-fired
		}
	}()
	if err := t.conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		p.discard(t.conn)
		return false, fmt.Errorf("set read deadline: %w", err)
	}
	if ctx.Err() != nil { // cancelled before the deadline was set: AfterFunc's was overwritten
		return false, ctx.Err()
	}
	if _, err := t.conn.WriteTo(b, &packet.Addr{HardwareAddr: ethernet.Broadcast}); err != nil {
		p.discard(t.conn)
		return false, fmt.Errorf("send ARP request from %s: %w", t.src, err)
	}

	buf := make([]byte, 128)
	for {
		n, _, err := t.conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// No answer. Reopen the socket next time: a dead socket
				// (its device replaced under the same index, say) must not
				// make a healthy gateway look down for ever. It costs a
				// socket per probe only while the gateway is silent.
				p.discard(t.conn)
				return false, nil
			}
			p.discard(t.conn)
			return false, fmt.Errorf("read ARP reply: %w", err)
		}
		var reply arp.Packet
		if reply.UnmarshalBinary(buf[:n]) != nil {
			continue // the filter let through something short; ignore it
		}
		if reply.Operation == arp.OperationReply && reply.SenderIP.Unmap() == gateway {
			return true, nil
		}
	}
}

// prepare returns the socket and addresses of the next probe, opening (or
// reopening) what is missing. The device is looked up every time: its
// address comes and goes with VRRP mastership, and a new ifindex means it
// was re-created and needs a new socket.
func (p *GatewayProber) prepare(gateway netip.Addr) (probeTarget, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return probeTarget{}, ErrProberClosed
	}
	if p.nl == nil {
		nsh, err := openNS(p.ns)
		if err != nil {
			return probeTarget{}, err
		}
		h, err := netlink.NewHandleAt(nsh, unix.NETLINK_ROUTE)
		nsh.Close()
		if err != nil {
			return probeTarget{}, fmt.Errorf("netlink handle in %s: %w", nsLabel(p.ns), err)
		}
		if err := h.SetSocketTimeout(gwNetlinkTimeout); err != nil {
			h.Close()
			return probeTarget{}, fmt.Errorf("netlink handle in %s: %w", nsLabel(p.ns), err)
		}
		p.nl = h
	}
	l, err := p.nl.LinkByName(p.dev)
	if err != nil {
		// Gone, or the namespace was re-created under the same name and
		// this handle still looks at the old one: start afresh next time.
		p.closeLocked()
		return probeTarget{}, fmt.Errorf("look up device: %w", err)
	}
	a := l.Attrs()
	if a.Flags&net.FlagUp == 0 {
		// The socket is dead until the device comes back up, and then
		// holds the error of its going down: a fresh one is simpler.
		if p.conn != nil {
			p.conn.Close()
			p.conn = nil
		}
		return probeTarget{}, fmt.Errorf("device is down: %w", unix.ENETDOWN)
	}
	if len(a.HardwareAddr) != 6 {
		return probeTarget{}, fmt.Errorf("device has no Ethernet address (%v)", a.HardwareAddr)
	}
	src := netip.IPv4Unspecified()
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return p.nl.AddrList(l, netlink.FAMILY_V4) })
	if err != nil {
		p.closeLocked()
		return probeTarget{}, fmt.Errorf("list addresses: %w", err)
	}
	for _, ad := range addrs {
		if pf, ok := toPrefix(ad.IPNet); ok && pf.Addr().Is4() && pf.Contains(gateway) && pf.Addr() != gateway {
			src = pf.Addr()
			break
		}
	}
	if p.conn != nil && p.connIndex != a.Index {
		p.conn.Close()
		p.conn = nil
	}
	if p.conn == nil {
		conn, err := openARPSocket(p.ns, &net.Interface{Index: a.Index, Name: a.Name, HardwareAddr: a.HardwareAddr})
		if err != nil {
			return probeTarget{}, err
		}
		p.conn, p.connIndex = conn, a.Index
	}
	return probeTarget{conn: p.conn, mac: a.HardwareAddr, src: src}, nil
}

// discard closes conn if it is still the prober's socket, so that the next
// probe opens a new one.
func (p *GatewayProber) discard(conn *packet.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn == conn {
		p.conn.Close()
		p.conn = nil
	}
}

func (p *GatewayProber) closeLocked() {
	if p.conn != nil {
		p.conn.Close()
		p.conn = nil
	}
	if p.nl != nil {
		p.nl.Close()
		p.nl = nil
	}
}

// Close releases the prober's sockets and ends a probe in flight (it
// returns an error). Probes after Close fail with ErrProberClosed.
func (p *GatewayProber) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	p.closeLocked()
	return nil
}

// openARPSocket opens, inside ns, a datagram packet socket for ARP bound to
// ifi. Its filter is applied before bind, so it never queues anything but
// ARP replies addressed to the device's own MAC: on a busy external network
// the socket sits between probes without collecting everyone's ARP
// broadcasts (gratuitous ARP from every router failing over, say).
func openARPSocket(ns string, ifi *net.Interface) (*packet.Conn, error) {
	filter, err := arpReplyFilter()
	if err != nil {
		return nil, err
	}
	var conn *packet.Conn
	err = Do(ns, func() error {
		c, err := packet.Listen(ifi, packet.Datagram, unix.ETH_P_ARP, &packet.Config{Filter: filter})
		conn = c
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open ARP socket on %s: %w", ifi.Name, err)
	}
	return conn, nil
}

// arpReplyFilter accepts Ethernet/IPv4 ARP replies unicast to the socket's
// device. On a datagram packet socket offsets start at the ARP header. The
// gateway's address is checked in Go, so that one filter serves whatever
// gateway the prober is asked about.
func arpReplyFilter() ([]bpf.RawInstruction, error) {
	const (
		ethIPv4     = 0x0001_0800 // hardware type 1 (Ethernet), protocol 0x0800
		lenAndReply = 0x0604_0002 // address lengths 6 and 4, operation 2
	)
	prog, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadExtension{Num: bpf.ExtType},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.PACKET_HOST, SkipTrue: 5},
		bpf.LoadAbsolute{Off: 0, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: ethIPv4, SkipTrue: 3},
		bpf.LoadAbsolute{Off: 4, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: lenAndReply, SkipTrue: 1},
		bpf.RetConstant{Val: 128},
		bpf.RetConstant{Val: 0},
	})
	if err != nil {
		return nil, fmt.Errorf("assemble ARP filter: %w", err)
	}
	return prog, nil
}

// drain discards what the socket queued since the last probe (a late reply
// to it, a reply to the kernel's own ARP), so that only a reply to this
// probe can count. A pending socket error (the device went down meanwhile)
// is returned.
func drain(conn *packet.Conn) error {
	if err := conn.SetReadDeadline(time.Time{}); err != nil {
		return err
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var rerr error
	buf := make([]byte, 128)
	err = rc.Read(func(fd uintptr) bool {
		for {
			_, _, err := unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
			if err != nil {
				if !errors.Is(err, unix.EAGAIN) {
					rerr = err
				}
				return true
			}
		}
	})
	return errors.Join(err, rerr)
}
