package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"

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
// closers of their own, off the path from master to addresses.
var (
	closerOnce sync.Once
	toClose    chan int
)

const closers = 4

func closeLater(fd int) {
	closerOnce.Do(func() {
		toClose = make(chan int, 4096)
		for range closers {
			go func() {
				for fd := range toClose {
					unix.Close(fd)
				}
			}()
		}
	})
	select {
	case toClose <- fd:
	default:
		unix.Close(fd) // a backlog of thousands: close here
	}
}

// sendGARP announces each IPv4 address on its device, repeat times, from
// inside namespace ns.
func sendGARP(ns string, addrs []Address, repeat int) error {
	return linux.Do(ns, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return os.NewSyscallError("socket AF_PACKET", err)
		}
		defer closeLater(fd)
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
				if err := unix.Sendto(fd, frame, 0, sa); err != nil {
					errs = append(errs, fmt.Errorf("gratuitous ARP for %s on %s: %w", a.Prefix.Addr(), a.Dev, err))
					break
				}
			}
		}
		return errors.Join(errs...)
	})
}
