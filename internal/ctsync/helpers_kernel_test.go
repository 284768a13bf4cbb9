package ctsync

import (
	"encoding/binary"
	"net"
	"sync/atomic"
	"testing"

	"github.com/mdlayher/packet"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/l3ha/l3ha/internal/linux"
)

// setLinkUp sets dev in namespace ns up or down.
func setLinkUp(ns, dev string, up bool) error {
	h, err := netns.GetFromName(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		return err
	}
	defer nh.Close()
	l, err := nh.LinkByName(dev)
	if err != nil {
		return err
	}
	if up {
		return nh.LinkSetUp(l)
	}
	return nh.LinkSetDown(l)
}

// syncCounter counts the sync's datagrams (UDP to Port) seen on a device.
type syncCounter struct {
	conn *packet.Conn
	n    atomic.Int64
}

func countSync(t *testing.T, ns, dev string) *syncCounter {
	t.Helper()
	c := &syncCounter{}
	if err := linux.Do(ns, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		c.conn, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_IP, nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.conn.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, _, err := c.conn.ReadFrom(buf)
			if err != nil {
				return
			}
			b := buf[:n]
			if len(b) < 14+20 {
				continue
			}
			ip := b[14:]
			ihl := int(ip[0]&0x0f) * 4
			if ip[9] != unix.IPPROTO_UDP || len(ip) < ihl+4 {
				continue
			}
			if int(binary.BigEndian.Uint16(ip[ihl+2:])) == Port {
				c.n.Add(1)
			}
		}
	}()
	return c
}
