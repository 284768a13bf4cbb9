package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/l3ha/l3ha/internal/linux"
)

// Gratuitous ARP is built by hand on an AF_PACKET SOCK_DGRAM socket: the
// kernel adds the Ethernet header (broadcast destination, the device's MAC
// as source), so the frame is the 28-byte ARP message alone, which is
// simpler than a dependency (github.com/mdlayher/arp and .../packet are not
// in go.mod) and needs no receive path: the socket is opened with protocol
// 0, so it receives nothing.

const arpLen = 28

// arpAnnouncement is a gratuitous ARP request for ip from mac, as keepalived
// and arping -U send it: sender and target protocol address are both ip
// (RFC 5944 §4.6, RFC 5227 §3), target hardware address zero.
func arpAnnouncement(mac net.HardwareAddr, ip netip.Addr) []byte {
	b := make([]byte, arpLen)
	binary.BigEndian.PutUint16(b[0:], 1)             // hardware type: Ethernet
	binary.BigEndian.PutUint16(b[2:], unix.ETH_P_IP) // protocol type: IPv4
	b[4], b[5] = 6, 4                                // hardware and protocol address lengths
	binary.BigEndian.PutUint16(b[6:], 1)             // operation: request
	copy(b[8:14], mac)                               // sender hardware address
	ip4 := ip.As4()                                  //
	copy(b[14:18], ip4[:])                           // sender protocol address
	copy(b[24:28], ip4[:])                           // target protocol address (target hardware stays zero)
	return b
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Closing an AF_PACKET socket waits for an RCU grace period
// (packet_release calls synchronize_net): 10-20 ms, longer on a busy host.
// Closed by the worker that sent the gratuitous ARP, it held up every
// router queued behind: with 500 routers taking over at once the last
// ones got their addresses seconds late. So the sockets are closed by
// closers of their own (garpSender.closeLater), off the path from master
// to addresses.
const closers = 4

// garpSender sends an engine's gratuitous ARP: it paces announcements on
// shared devices and closes its sockets off the workers' path.
type garpSender struct {
	pacer garpPacer

	mu      sync.Mutex
	toClose chan int // nil until the first close, and after stop
	stopped bool
	closers sync.WaitGroup
}

// closeLater hands fd to the closers (started on first use).
func (g *garpSender) closeLater(fd int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		unix.Close(fd)
		return
	}
	if g.toClose == nil {
		g.toClose = make(chan int, 4096)
		for range closers {
			g.closers.Go(func() {
				for fd := range g.toClose {
					unix.Close(fd)
				}
			})
		}
	}
	select {
	case g.toClose <- fd:
	default:
		unix.Close(fd) // a backlog of thousands: close here
	}
}

// stop ends the closers once they have closed what they were given.
func (g *garpSender) stop() {
	g.mu.Lock()
	if !g.stopped && g.toClose != nil {
		close(g.toClose)
	}
	g.stopped = true
	g.mu.Unlock()
	g.closers.Wait()
}

// garpSpacing is the least time between two gratuitous ARPs the engine
// sends on other devices than the routers' ha- devices (the gateway and
// interface devices, on networks that many routers of the node share). A
// broadcast on a bridge is queued once per port into the receiving CPU's
// input backlog (net.core.netdev_max_backlog, 1000 by default): on an
// external network with hundreds of router ports, a handful of
// announcements at once overflow it, and what is dropped with them
// includes other routers' VRRP adverts — whose backups then take over and
// announce in turn. Spaced, each announcement's copies are delivered
// before the next one's arrive.
const garpSpacing = 250 * time.Microsecond

// garpPacer spaces the announcements of every router of an engine
// (garpSpacing apart).
type garpPacer struct {
	mu   sync.Mutex
	next time.Time
}

// wait waits for the next announcement's turn.
func (p *garpPacer) wait() {
	p.mu.Lock()
	at := p.next
	if now := time.Now(); at.Before(now) {
		at = now
	}
	p.next = at.Add(garpSpacing)
	p.mu.Unlock()
	if d := time.Until(at); d > 0 {
		time.Sleep(d)
	}
}

// send announces each IPv4 address on its device, repeat times, from
// inside namespace ns; announcements on devices other than vrrpDev are
// paced.
func (g *garpSender) send(ns, vrrpDev string, addrs []Address, repeat int) error {
	return linux.Do(ns, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return os.NewSyscallError("socket AF_PACKET", err)
		}
		defer g.closeLater(fd)
		devs := map[string]*net.Interface{}
		var errs []error
		for _, a := range addrs {
			if !a.Prefix.Addr().Is4() {
				continue
			}
			ifi, ok := devs[a.Dev]
			if !ok {
				ifi, err = net.InterfaceByName(a.Dev)
				if err != nil {
					errs = append(errs, fmt.Errorf("gratuitous ARP on %s: %w", a.Dev, err))
				}
				devs[a.Dev] = ifi
			}
			if ifi == nil || len(ifi.HardwareAddr) != 6 || ifi.Flags&net.FlagUp == 0 {
				continue // gone, not Ethernet, or down: nobody to tell
			}
			sa := &unix.SockaddrLinklayer{
				Protocol: htons(unix.ETH_P_ARP),
				Ifindex:  ifi.Index,
				Halen:    6,
				Addr:     [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
			}
			frame := arpAnnouncement(ifi.HardwareAddr, a.Prefix.Addr())
			for range repeat {
				if a.Dev != vrrpDev {
					g.pacer.wait()
				}
				if err := unix.Sendto(fd, frame, 0, sa); err != nil {
					errs = append(errs, fmt.Errorf("gratuitous ARP for %s on %s: %w", a.Prefix.Addr(), a.Dev, err))
					break
				}
			}
		}
		return errors.Join(errs...)
	})
}
