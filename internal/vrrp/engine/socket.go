package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/l3ha/l3ha/internal/linux"
	"github.com/l3ha/l3ha/internal/vrrp"
)

// sockKey is what a router's socket is made for: a new key needs a new
// socket.
type sockKey struct {
	ns, dev string
	ifindex int
	src     netip.Addr
	vrid    uint8
}

// socket is a raw IPv4 protocol-112 socket on one ha- device. It is
// registered with Go's poller, so that reads block a goroutine, not a thread,
// and Close wakes the reader.
type socket struct {
	key  sockKey
	conn *net.IPConn
	rc   syscall.RawConn
	oob  []byte // IP_PKTINFO: source address and outgoing device
	dst  unix.SockaddrInet4

	once sync.Once
}

// rxBufSize is larger than the largest VRRP advert in the largest IPv4
// header (1036 + 60 bytes): a datagram that does not fit is oversized.
const rxBufSize = 2048

// ipTOSNetControl is IPTOS_PREC_INTERNETCONTROL, the TOS keepalived gives
// its adverts.
const ipTOSNetControl = 0xc0

// lookupDevice returns the index of dev in ns and whether it carries vip
// (whatever the prefix length).
func lookupDevice(ns, dev string, vip netip.Prefix) (ifindex int, vipPresent bool, err error) {
	err = linux.Do(ns, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return fmt.Errorf("device %s: %w", dev, err)
		}
		ifindex = ifi.Index
		addrs, err := ifi.Addrs()
		if err != nil {
			return fmt.Errorf("addresses of %s: %w", dev, err)
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == vip.Addr() {
					vipPresent = true
				}
			}
		}
		return nil
	})
	return ifindex, vipPresent, err
}

// openSocket opens the VRRP socket of k inside its namespace.
func openSocket(k sockKey, version int) (*socket, error) {
	s := &socket{key: k, dst: unix.SockaddrInet4{Addr: vrrp.Group.As4()}}
	s.oob = unix.PktInfo4(&unix.Inet4Pktinfo{Ifindex: int32(k.ifindex), Spec_dst: k.src.As4()})
	err := linux.Do(k.ns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, vrrp.IPProtocol)
		if err != nil {
			return os.NewSyscallError("socket", err)
		}
		f := os.NewFile(uintptr(fd), "vrrp-"+k.dev)
		defer f.Close() // FilePacketConn works on a duplicate
		if err := setupSocket(fd, k); err != nil {
			return err
		}
		pc, err := net.FilePacketConn(f)
		if err != nil {
			return err
		}
		conn, ok := pc.(*net.IPConn)
		if !ok {
			pc.Close()
			return fmt.Errorf("raw socket became a %T", pc)
		}
		rc, err := conn.SyscallConn()
		if err != nil {
			conn.Close()
			return err
		}
		s.conn, s.rc = conn, rc
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("VRRP socket on %s in %s: %w", k.dev, k.ns, err)
	}
	return s, nil
}

func setupSocket(fd int, k sockKey) error {
	// Bind to the device first: from then on only its packets arrive.
	if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, k.dev); err != nil {
		return os.NewSyscallError("setsockopt SO_BINDTODEVICE", err)
	}
	// Only this router's VRID, filtered in the kernel: every ha- device of
	// an HA network hears the adverts of every router of the project, so
	// without the filter each socket would wake its goroutine for all of
	// them, n² wake-ups per advert interval (100 routers at 0.1 s: 100,000
	// a second on each node, more than two cores can take, and the adverts
	// that matter get lost with the rest).
	filter := vridFilter(k.vrid)
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
		&unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}); err != nil {
		return os.NewSyscallError("setsockopt SO_ATTACH_FILTER", err)
	}
	// The device may have been replaced since it was looked up.
	ifi, err := net.InterfaceByName(k.dev)
	if err != nil {
		return err
	}
	if ifi.Index != k.ifindex {
		return fmt.Errorf("device %s changed (index %d, was %d)", k.dev, ifi.Index, k.ifindex)
	}
	group := vrrp.Group.As4()
	opts := []struct {
		name       string
		level, opt int
		v          int
	}{
		{"IP_MULTICAST_TTL", unix.IPPROTO_IP, unix.IP_MULTICAST_TTL, vrrp.TTL},
		{"IP_TTL", unix.IPPROTO_IP, unix.IP_TTL, vrrp.TTL},
		{"IP_MULTICAST_LOOP", unix.IPPROTO_IP, unix.IP_MULTICAST_LOOP, 0},
		// Only the group joined below, on this device; not every group
		// any socket of the namespace joined.
		{"IP_MULTICAST_ALL", unix.IPPROTO_IP, unix.IP_MULTICAST_ALL, 0},
		{"IP_TOS", unix.IPPROTO_IP, unix.IP_TOS, ipTOSNetControl},
		{"SO_RCVBUF", unix.SOL_SOCKET, unix.SO_RCVBUF, 256 << 10},
	}
	for _, o := range opts {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, o.v); err != nil {
			return os.NewSyscallError("setsockopt "+o.name, err)
		}
	}
	if err := unix.SetsockoptIPMreqn(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_IF,
		&unix.IPMreqn{Address: k.src.As4(), Ifindex: int32(k.ifindex)}); err != nil {
		return os.NewSyscallError("setsockopt IP_MULTICAST_IF", err)
	}
	if err := unix.SetsockoptIPMreqn(fd, unix.IPPROTO_IP, unix.IP_ADD_MEMBERSHIP,
		&unix.IPMreqn{Multiaddr: group, Ifindex: int32(k.ifindex)}); err != nil {
		return os.NewSyscallError("setsockopt IP_ADD_MEMBERSHIP", err)
	}
	return nil
}

// vridFilter is a classic BPF socket filter passing the VRRP messages of
// vrid. A raw IPv4 socket's filter sees the packet from its IP header on:
// X = 4*(ip[0]&0xf) is the header's length, the VRID the byte after the
// version and type; a packet too short to have one is dropped too (a load
// out of bounds ends the program with 0). Packets that arrived before the
// filter was attached still reach decode, which checks the VRID as well.
func vridFilter(vrid uint8) []unix.SockFilter {
	return []unix.SockFilter{
		{Code: unix.BPF_LDX | unix.BPF_B | unix.BPF_MSH, K: 0},                   // X = IP header length
		{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_IND, K: 1},                    // A = VRID
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: uint32(vrid), Jf: 1}, // ours?
		{Code: unix.BPF_RET | unix.BPF_K, K: 1 << 18},                            // pass it whole
		{Code: unix.BPF_RET | unix.BPF_K, K: 0},                                  // drop
	}
}

// send multicasts one VRRP message; the kernel builds the IP header (TTL
// 255, source from IP_PKTINFO). It never waits: a full send buffer is an
// error, not a stalled loop.
func (s *socket) send(b []byte) error {
	var serr error
	err := s.rc.Write(func(fd uintptr) bool {
		serr = unix.Sendmsg(int(fd), b, s.oob, &s.dst, unix.MSG_DONTWAIT)
		return true
	})
	if err != nil {
		return err
	}
	return serr
}

// linkUp reports whether the socket's device is up and running (IFF_UP and
// IFF_RUNNING, the flags keepalived's interface tracking reads), asking
// through the socket itself, which lives in the device's namespace. A device
// that is gone is down; another error is reported with up true (unknown:
// not a reason to give a router up).
func (s *socket) linkUp() (bool, error) {
	up, ierr := true, error(nil)
	err := s.rc.Control(func(fd uintptr) {
		ifr, err := unix.NewIfreq(s.key.dev)
		if err != nil {
			ierr = err
			return
		}
		if err := unix.IoctlIfreq(int(fd), unix.SIOCGIFFLAGS, ifr); err != nil {
			if errors.Is(err, unix.ENODEV) {
				up = false
				return
			}
			ierr = os.NewSyscallError("ioctl SIOCGIFFLAGS "+s.key.dev, err)
			return
		}
		f := ifr.Uint16()
		up = f&unix.IFF_UP != 0 && f&unix.IFF_RUNNING != 0
	})
	if err != nil {
		return true, err
	}
	return up, ierr
}

// recv reads one datagram, IP header included, into buf. The length
// returned is the datagram's, which may exceed len(buf) (MSG_TRUNC).
func (s *socket) recv(buf []byte) (int, error) {
	var n int
	var rerr error
	err := s.rc.Read(func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_TRUNC)
		return rerr != unix.EAGAIN
	})
	if err != nil {
		return 0, err
	}
	return n, rerr
}

// recvNow is recv without waiting: unix.EAGAIN when nothing is there. It
// goes around Go's poller (Control, not Read, whose read lock the receive
// goroutine holds while it waits), so it can run beside that goroutine; the
// kernel hands each datagram to one of them.
func (s *socket) recvNow(buf []byte) (int, error) {
	var n int
	var rerr error
	err := s.rc.Control(func(fd uintptr) {
		n, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_TRUNC|unix.MSG_DONTWAIT)
	})
	if err != nil {
		return 0, err
	}
	return n, rerr
}

func (s *socket) close() {
	if s == nil {
		return
	}
	s.once.Do(func() { s.conn.Close() })
}

// rxPacket is a received advert that passed the receive-side checks.
type rxPacket struct {
	src netip.Addr
	ttl uint8
	p   vrrp.Packet
}

// decode checks what a receive goroutine can check alone: the IP header,
// the VRRP message (vrrp.Parse), TTL, version and VRID. A non-empty reason
// means the packet is dropped.
func decode(buf []byte, n, vrid, version int) (rxPacket, vrrp.Reason) {
	if n > len(buf) {
		return rxPacket{}, ReasonOversized
	}
	b := buf[:n]
	if len(b) < 20 || b[0]>>4 != 4 {
		return rxPacket{}, ReasonBadIPHeader
	}
	ihl := int(b[0]&0x0f) * 4
	tot := int(binary.BigEndian.Uint16(b[2:4]))
	if ihl < 20 || ihl > len(b) || tot < ihl || tot > len(b) || b[9] != vrrp.IPProtocol {
		return rxPacket{}, ReasonBadIPHeader
	}
	src := netip.AddrFrom4([4]byte(b[12:16]))
	dst := netip.AddrFrom4([4]byte(b[16:20]))
	ttl := b[8]
	p, err := vrrp.Parse(b[ihl:tot], src, dst)
	if err != nil {
		return rxPacket{}, vrrp.ReasonOf(err)
	}
	// The same checks, in the same order, as vrrp.Machine.Receive, for
	// what never depends on the machine's state: done here, a flood of
	// strangers' packets never reaches the loop.
	switch {
	case ttl != vrrp.TTL:
		return rxPacket{}, vrrp.ReasonBadTTL
	case p.Version != version:
		return rxPacket{}, vrrp.ReasonVersionMismatch
	case int(p.VRID) != vrid:
		return rxPacket{}, vrrp.ReasonVRIDMismatch
	}
	return rxPacket{src: src, ttl: ttl, p: p}, ""
}

// rxQueue carries a router's packets from its receive goroutine to the
// loop. It is bounded: a flood fills it and the excess is dropped, at no
// cost to other routers.
type rxQueue struct {
	r   *router // set at creation, never changed; only the loop uses it
	max int

	mu     sync.Mutex
	pkts   []rxPacket
	queued bool // in Engine.ready, or being drained
	closed bool
}

func newRxQueue(r *router, max int) *rxQueue { return &rxQueue{r: r, max: max} }

// push queues p; full reports a drop, signal that the loop must be told.
func (q *rxQueue) push(p rxPacket) (full, signal bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false, false
	}
	if len(q.pkts) >= q.max {
		return true, false
	}
	q.pkts = append(q.pkts, p)
	signal = !q.queued
	q.queued = true
	return false, signal
}

// take moves up to n packets to out; more says whether some remain (the
// queue then stays marked as queued).
func (q *rxQueue) take(out []rxPacket, n int) ([]rxPacket, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	k := min(n, len(q.pkts))
	out = append(out, q.pkts[:k]...)
	rest := copy(q.pkts, q.pkts[k:])
	clear(q.pkts[rest:])
	q.pkts = q.pkts[:rest]
	more := rest > 0
	if !more {
		q.queued = false
	}
	return out, more
}

func (q *rxQueue) close() {
	if q == nil {
		return
	}
	q.mu.Lock()
	q.closed = true
	q.pkts = nil
	q.mu.Unlock()
}

// receiveLoop reads s until it is closed, checks what it reads and queues
// the adverts for the loop.
func (e *Engine) receiveLoop(q *rxQueue, s *socket, drops *dropCounts, vrid, version int) {
	buf := make([]byte, rxBufSize)
	var lastErrLog time.Time
	for {
		n, err := s.recv(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) {
				return
			}
			if time.Since(lastErrLog) > 10*time.Second {
				lastErrLog = time.Now()
				e.log.Warn("reading VRRP socket", "device", s.key.dev, "namespace", s.key.ns, "err", err)
			}
			// Do not spin on a persistent error.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		p, reason := decode(buf, n, vrid, version)
		if reason != "" {
			drops.add(reason)
			continue
		}
		full, signal := q.push(p)
		if full {
			drops.add(ReasonQueueFull)
			continue
		}
		if signal {
			e.readyMu.Lock()
			e.ready = append(e.ready, q)
			e.readyMu.Unlock()
			poke(e.rxWake)
		}
	}
}
