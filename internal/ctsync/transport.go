package ctsync

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/l3ha/l3ha/internal/linux"
)

// Port is the sync's UDP port on the HA network (conntrackd's is 3780).
const Port = 3781

// GroupFor is the multicast group of the router with VRRP id vrid on its HA
// network (239.255.76.<vrid>, organisation-local scope): one group per
// router, so a router's ha- device drops its neighbours' sync in the
// kernel, as it does their VRRP adverts.
func GroupFor(vrid int) netip.Addr {
	return netip.AddrFrom4([4]byte{239, 255, 76, byte(vrid)})
}

// transport is the sync's socket: UDP on the router's ha- device, in the
// router namespace, to and from GroupFor(vrid). Multicast keeps the
// sender free of a peer list (VRRP has none either) and reaches every
// backup of a router with three or more nodes at once.
type transport struct {
	conn  net.PacketConn
	group *net.UDPAddr
}

func openTransport(ns, dev string, vrid int) (*transport, error) {
	group := &net.UDPAddr{IP: GroupFor(vrid).AsSlice(), Port: Port}
	t := &transport{group: group}
	err := linux.Do(ns, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				// Bound to the device: nothing but the HA network reaches it.
				serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, dev)
			})
			if err != nil {
				return err
			}
			return serr
		}}
		// Bound to the port on any address: a socket bound to the group
		// would send with the group as source. The namespace joins only
		// this router's group, so only its datagrams arrive.
		conn, err := lc.ListenPacket(context.Background(), "udp4", fmt.Sprintf("0.0.0.0:%d", Port))
		if err != nil {
			return err
		}
		pc := ipv4.NewPacketConn(conn)
		for _, step := range []func() error{
			func() error { return pc.JoinGroup(ifi, &net.UDPAddr{IP: group.IP}) },
			func() error { return pc.SetMulticastInterface(ifi) },
			func() error { return pc.SetMulticastLoopback(false) },
			func() error { return pc.SetMulticastTTL(1) },
		} {
			if err := step(); err != nil {
				conn.Close()
				return err
			}
		}
		t.conn = conn
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("opening the conntrack sync socket on %s in %s: %w", dev, ns, err)
	}
	return t, nil
}

func (t *transport) Send(b []byte) error {
	_, err := t.conn.WriteTo(b, t.group)
	return err
}

// Receive reads one datagram into buf.
func (t *transport) Receive(buf []byte) (int, error) {
	n, _, err := t.conn.ReadFrom(buf)
	return n, err
}

func (t *transport) Close() error { return t.conn.Close() }
