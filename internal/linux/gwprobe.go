package linux

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
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

// ProbeMAC is the source MAC of the gateway probes that node host sends for
// router routerID: 02 (a locally administered unicast address) followed by
// the first five bytes of SHA-256(host + "/" + routerID). It is stable
// across restarts of the agent, and its own per node and router (a host
// name has no "/", so no two pairs hash the same string).
//
// Why a MAC of its own: a Neutron router's qg- port has the same MAC on
// every node of the router, so a probe sent with it from a backup would
// teach the bridges, VTEPs and switches of the external network that the
// router's MAC is behind the backup's node, and the master's traffic would
// follow it there until the master's next frame taught them back (the way a
// backup's MLD report does, LP#1859832). With its own MAC a probe teaches
// them only where that MAC is, which nothing else uses: one MAC per node and
// router, so the bridges learn each on its own port, and none collides with
// a Neutron port's MAC (drawn from base_mac, fa:16:3e:… by default) or with
// another node's probe. The cost is one more MAC per router and node in the
// external network's forwarding tables, aged out when the checks stop.
func ProbeMAC(host, routerID string) net.HardwareAddr {
	sum := sha256.Sum256([]byte(host + "/" + routerID))
	mac := make(net.HardwareAddr, 6)
	mac[0] = 0x02
	copy(mac[1:], sum[:5])
	return mac
}

// GatewayProber checks that a router's upstream gateway answers ARP on the
// router's gateway device (qg-), for Neutron's ha_vrrp_health_check_interval.
// ARP rather than ICMP (Neutron's script pings): a backup's qg- device has no
// address, so it cannot ping, but it can send an ARP probe, which Linux and
// most gateways answer. Every node of a router thus knows whether it could
// serve the gateway before it becomes master.
//
// Every probe, a master's as a backup's, is an RFC 5227 ARP probe that
// leaves the qg- device with a MAC that is not the device's: the prober's
// probe MAC (ProbeMAC), as Ethernet source and as ARP sender hardware
// address, with sender protocol address 0.0.0.0. The bridges on the way
// learn the probe MAC, never the router's, and the gateway's neighbour
// cache learns nothing (a probe has no sender address to learn). The
// gateway answers to the probe MAC; the reply reaches the qg- device as a
// frame for another host, which the device's packet socket receives all the
// same — qg- devices (veth, tap, OVS internal port) have no MAC filter, so
// no promiscuous mode is needed — and the kernel's own ARP ignores.
// Nothing else on the external network must answer ARP for the probe MAC or
// use it; ProbeMAC sees to that.
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
	mac     net.HardwareAddr // the probe MAC
	sem     chan struct{}    // held by the probe in flight

	mu        sync.Mutex // guards what follows; never held while waiting for a reply
	closed    bool
	nl        *netlink.Handle // rtnetlink socket in ns
	conn      *packet.Conn    // ARP socket bound to dev
	connIndex int             // dev's ifindex when conn was opened
}

// NewGatewayProber returns a prober for device dev in namespace ns (NodeNS or
// a name under /run/netns) that probes from mac, normally ProbeMAC(host,
// routerID). mac must be a unicast Ethernet address other than the
// device's; probes fail otherwise. Nothing is opened until the first probe,
// so the device need not exist yet.
func NewGatewayProber(ns, dev string, mac net.HardwareAddr) *GatewayProber {
	return &GatewayProber{ns: ns, dev: dev, mac: slices.Clone(mac), sem: make(chan struct{}, 1)}
}

// ProbeGateway is a one-shot GatewayProber.Probe: it opens and closes its
// sockets. Use a GatewayProber for repeated checks.
func ProbeGateway(ctx context.Context, ns, dev string, mac net.HardwareAddr, gateway netip.Addr, timeout time.Duration) (bool, error) {
	p := NewGatewayProber(ns, dev, mac)
	defer p.Close()
	return p.Probe(ctx, gateway, timeout)
}

// Probe sends one ARP probe for gateway out of the device and waits up to
// timeout for the gateway to answer. It returns true if a reply from
// gateway to the probe MAC arrived, false with a nil error if none did in
// time, and false with an error if the probe could not be made (no such
// device or namespace, device down, bad probe MAC, socket failure) or ctx
// ended — the caller decides whether those count as an unhealthy gateway.
// Cancelling ctx ends the probe at once.
func (p *GatewayProber) Probe(ctx context.Context, gateway netip.Addr, timeout time.Duration) (bool, error) {
	gateway = gateway.Unmap()
	if !gateway.Is4() || gateway.IsUnspecified() {
		return false, fmt.Errorf("probe gateway %v on %s in %s: ARP needs a unicast IPv4 gateway", gateway, p.dev, nsLabel(p.ns))
	}
	if timeout <= 0 {
		return false, fmt.Errorf("probe gateway %s on %s in %s: timeout %v is not positive", gateway, p.dev, nsLabel(p.ns), timeout)
	}
	if len(p.mac) != 6 || p.mac[0]&1 != 0 || bytes.Equal(p.mac, make(net.HardwareAddr, 6)) {
		return false, fmt.Errorf("probe gateway %s on %s in %s: probe MAC %v is not a unicast Ethernet address", gateway, p.dev, nsLabel(p.ns), p.mac)
	}
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return false, fmt.Errorf("probe gateway %s on %s in %s: %w", gateway, p.dev, nsLabel(p.ns), ctx.Err())
	}
	defer func() { <-p.sem }()

	ok, err := p.probe(ctx, gateway, timeout)
	if err != nil {
		return false, fmt.Errorf("probe gateway %s on %s in %s from %s: %w", gateway, p.dev, nsLabel(p.ns), p.mac, err)
	}
	return ok, nil
}

// probeFrame is the Ethernet frame of an ARP probe for gateway from mac:
// broadcast, sender mac and 0.0.0.0, target hardware address unknown
// (zeros, as the kernel sends).
func probeFrame(mac net.HardwareAddr, gateway netip.Addr) ([]byte, error) {
	// NewPacket needs a target hardware address of the right length.
	req, err := arp.NewPacket(arp.OperationRequest, mac, netip.IPv4Unspecified(), ethernet.Broadcast, gateway)
	if err != nil {
		return nil, fmt.Errorf("build ARP probe: %w", err)
	}
	req.TargetHardwareAddr = make(net.HardwareAddr, len(mac))
	payload, err := req.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("encode ARP probe: %w", err)
	}
	f := ethernet.Frame{Destination: ethernet.Broadcast, Source: mac, EtherType: ethernet.EtherTypeARP, Payload: payload}
	b, err := f.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("encode ARP probe frame: %w", err)
	}
	return b, nil
}

func (p *GatewayProber) probe(ctx context.Context, gateway netip.Addr, timeout time.Duration) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	frame, err := probeFrame(p.mac, gateway)
	if err != nil {
		return false, err
	}
	conn, err := p.prepare()
	if err != nil {
		return false, err
	}
	if err := drain(conn); err != nil {
		// A socket error pending since the last probe (the device went
		// down and up meanwhile) is news about the past: one new socket
		// tells about now.
		p.discard(conn)
		if conn, err = p.prepare(); err != nil {
			return false, err
		}
		if err := drain(conn); err != nil {
			p.discard(conn)
			return false, fmt.Errorf("drain ARP socket: %w", err)
		}
	}

	// Cancelling ctx moves the read deadline into the past, which wakes the
	// read below. stop waits for the function to have run, so that it
	// cannot move the deadline of the next probe.
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		conn.SetReadDeadline(time.Unix(1, 0))
	})
	defer func() {
		if !stop() {
			<-fired
		}
	}()
	if err := conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		p.discard(conn)
		return false, fmt.Errorf("set read deadline: %w", err)
	}
	if ctx.Err() != nil { // cancelled before the deadline was set: AfterFunc's was overwritten
		return false, ctx.Err()
	}
	// A raw socket sends the frame as it is: the address only names the
	// device, which bind did already.
	if _, err := conn.WriteTo(frame, &packet.Addr{HardwareAddr: ethernet.Broadcast}); err != nil {
		p.discard(conn)
		return false, fmt.Errorf("send ARP probe: %w", err)
	}

	buf := make([]byte, arpSnapLen)
	for {
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// No answer. Reopen the socket next time: a dead socket
				// (its device replaced under the same index, say) must not
				// make a healthy gateway look down for ever. It costs a
				// socket per probe only while the gateway is silent.
				p.discard(conn)
				return false, nil
			}
			p.discard(conn)
			return false, fmt.Errorf("read ARP reply: %w", err)
		}
		if isReplyFrom(buf[:n], p.mac, gateway) {
			return true, nil
		}
	}
}

// isReplyFrom reports whether frame is gateway's ARP reply to mac. The
// socket's filter has checked the rest; the gateway is checked here, so
// that one filter serves whatever gateway the prober is asked about.
func isReplyFrom(frame []byte, mac net.HardwareAddr, gateway netip.Addr) bool {
	var f ethernet.Frame
	if f.UnmarshalBinary(frame) != nil || f.EtherType != ethernet.EtherTypeARP {
		return false
	}
	var reply arp.Packet
	if reply.UnmarshalBinary(f.Payload) != nil {
		return false
	}
	return reply.Operation == arp.OperationReply && reply.SenderIP.Unmap() == gateway &&
		bytes.Equal(reply.TargetHardwareAddr, mac)
}

// prepare returns the socket of the next probe, opening (or reopening) it
// if missing. The device is looked up every time: a new ifindex means it
// was re-created and needs a new socket.
func (p *GatewayProber) prepare() (*packet.Conn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrProberClosed
	}
	l, err := p.lookupLocked()
	if err != nil {
		return nil, err
	}
	a := l.Attrs()
	if a.Flags&net.FlagUp == 0 {
		// The socket is dead until the device comes back up, and then
		// holds the error of its going down: a fresh one is simpler.
		if p.conn != nil {
			p.conn.Close()
			p.conn = nil
		}
		return nil, fmt.Errorf("device is down: %w", unix.ENETDOWN)
	}
	if len(a.HardwareAddr) != 6 {
		return nil, fmt.Errorf("device has no Ethernet address (%v)", a.HardwareAddr)
	}
	if bytes.Equal(a.HardwareAddr, p.mac) {
		// The very thing probe MACs exist to avoid (see ProbeMAC).
		return nil, fmt.Errorf("probe MAC %s is the device's own", p.mac)
	}
	if p.conn != nil && p.connIndex != a.Index {
		p.conn.Close()
		p.conn = nil
	}
	if p.conn == nil {
		conn, err := openARPSocket(p.ns, &net.Interface{Index: a.Index, Name: a.Name, HardwareAddr: a.HardwareAddr}, p.mac)
		if err != nil {
			return nil, err
		}
		p.conn, p.connIndex = conn, a.Index
	}
	return p.conn, nil
}

// lookupLocked finds the device through the prober's rtnetlink socket,
// opening it if needed. A lookup that fails through a socket opened
// earlier is retried once through a new one: the namespace may have been
// re-created under the same name, and the old socket still looks at the
// old one.
func (p *GatewayProber) lookupLocked() (netlink.Link, error) {
	for {
		fresh := p.nl == nil
		if fresh {
			nsh, err := openNS(p.ns)
			if err != nil {
				return nil, err
			}
			h, err := netlink.NewHandleAt(nsh, unix.NETLINK_ROUTE)
			nsh.Close()
			if err != nil {
				return nil, fmt.Errorf("netlink handle in %s: %w", nsLabel(p.ns), err)
			}
			if err := h.SetSocketTimeout(gwNetlinkTimeout); err != nil {
				h.Close()
				return nil, fmt.Errorf("netlink handle in %s: %w", nsLabel(p.ns), err)
			}
			p.nl = h
		}
		l, err := p.nl.LinkByName(p.dev)
		if err == nil {
			return l, nil
		}
		p.closeLocked() // the packet socket is bound to what is gone too
		if fresh {
			return nil, fmt.Errorf("look up device: %w", err)
		}
	}
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

// arpSnapLen is what the socket keeps of a frame: an Ethernet header and
// an Ethernet/IPv4 ARP packet (42 bytes) with room to spare.
const arpSnapLen = 128

// openARPSocket opens, inside ns, a raw packet socket for ARP bound to ifi:
// raw, so that the probe's Ethernet source is the probe MAC rather than the
// device's (which a datagram socket would put there). Its filter is applied
// before bind, so it never queues anything but ARP replies to mac: on a busy
// external network the socket sits between probes without collecting
// everyone's ARP broadcasts (gratuitous ARP from every router failing over,
// say).
//
// No membership is added: the reply is for another MAC than the device's,
// but packet sockets receive frames for other hosts that reach the device
// (PACKET_OTHERHOST), and veth, tap and OVS internal devices pass them all
// up without promiscuous mode.
func openARPSocket(ns string, ifi *net.Interface, mac net.HardwareAddr) (*packet.Conn, error) {
	filter, err := arpReplyFilter(mac)
	if err != nil {
		return nil, err
	}
	var conn *packet.Conn
	err = Do(ns, func() error {
		c, err := packet.Listen(ifi, packet.Raw, unix.ETH_P_ARP, &packet.Config{Filter: filter})
		conn = c
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open ARP socket on %s: %w", ifi.Name, err)
	}
	return conn, nil
}

// arpReplyFilter accepts Ethernet frames holding an Ethernet/IPv4 ARP reply
// whose target hardware address is mac, whatever their Ethernet
// destination (a gateway may broadcast its reply) and packet type (a reply
// to the probe MAC is for another host than the device). On a raw packet
// socket offsets start at the Ethernet header, VLAN tags already removed.
func arpReplyFilter(mac net.HardwareAddr) ([]bpf.RawInstruction, error) {
	if len(mac) != 6 {
		return nil, fmt.Errorf("ARP filter: probe MAC %v is not an Ethernet address", mac)
	}
	const (
		ethIPv4     = 0x0001_0800 // hardware type 1 (Ethernet), protocol 0x0800
		lenAndReply = 0x0604_0002 // address lengths 6 and 4, operation 2
		arpHdr      = 14          // the ARP packet's offset in the frame
		tha         = arpHdr + 18 // its target hardware address
	)
	macHi := binary.BigEndian.Uint32(mac[:4])
	macLo := uint32(binary.BigEndian.Uint16(mac[4:]))
	prog, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 12, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.ETH_P_ARP, SkipTrue: 9},
		bpf.LoadAbsolute{Off: arpHdr, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: ethIPv4, SkipTrue: 7},
		bpf.LoadAbsolute{Off: arpHdr + 4, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: lenAndReply, SkipTrue: 5},
		bpf.LoadAbsolute{Off: tha, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: macHi, SkipTrue: 3},
		bpf.LoadAbsolute{Off: tha + 4, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: macLo, SkipTrue: 1},
		bpf.RetConstant{Val: arpSnapLen},
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
	buf := make([]byte, arpSnapLen)
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
