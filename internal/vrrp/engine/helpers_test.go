package engine

// Kernel-tier helpers: throwaway namespaces l3ha-test-<random> joined by
// veth pairs (this kernel has no dummy driver), engines, a sniffer with
// kernel timestamps, a raw sender for hostile input. Everything is undone
// in t.Cleanup: processes killed by pid, namespaces deleted by name.

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/l3ha/l3ha/internal/kerneltest"
	"github.com/l3ha/l3ha/internal/linux"
	"github.com/l3ha/l3ha/internal/vrrp"
)

// waitLong bounds every wait on a condition: generous, for a loaded
// two-core machine.
const waitLong = 30 * time.Second

var skip = kerneltest.Skip

func requireRoot(t *testing.T) { t.Helper(); kerneltest.Require(t, "ip") }

var randHex = kerneltest.RandHex

var run = kerneltest.Run

// newNS creates a namespace deleted when the test ends (kerneltest.Namespace).
var newNS = kerneltest.Namespace

// vethPair joins devA in nsA and devB in nsB, both up.
func vethPair(t *testing.T, nsA, devA, nsB, devB string, mtu int) {
	t.Helper()
	run(t, "ip", "-n", nsA, "link", "add", devA, "mtu", fmt.Sprint(mtu), "type", "veth", "peer", "name", devB, "mtu", fmt.Sprint(mtu), "netns", nsB)
	run(t, "ip", "-n", nsA, "link", "set", devA, "up")
	run(t, "ip", "-n", nsB, "link", "set", devB, "up")
}

// localDevice adds a veth device whose peer stays in ns (a qr-/qg- stand-in)
// and returns the peer's name.
func localDevice(t *testing.T, ns, dev string) string {
	t.Helper()
	peer := "p" + randHex(6)
	run(t, "ip", "-n", ns, "link", "add", dev, "type", "veth", "peer", "name", peer)
	run(t, "ip", "-n", ns, "link", "set", dev, "up")
	run(t, "ip", "-n", ns, "link", "set", peer, "up")
	return peer
}

func addAddr(t *testing.T, ns, dev string, p netip.Prefix) {
	t.Helper()
	if err := linux.AddAddress(ns, dev, p); err != nil {
		t.Fatal(err)
	}
}

func hasAddr(t *testing.T, ns, dev string, p netip.Prefix) bool {
	t.Helper()
	addrs, err := linux.Addresses(ns, dev)
	if err != nil {
		t.Fatal(err)
	}
	return slices.Contains(addrs, p)
}

func hasRoute(t *testing.T, ns string, proto int, dst netip.Prefix, gw netip.Addr) bool {
	t.Helper()
	rs, err := linux.Routes(ns, proto)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.Dst == dst && r.Gateway == gw {
			return true
		}
	}
	return false
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testLog writes slog output to t.Log until the test ends.
type testLog struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func newTestLogger(t *testing.T, name string) *slog.Logger {
	l := &testLog{t: t}
	t.Cleanup(func() {
		l.mu.Lock()
		l.done = true
		l.mu.Unlock()
	})
	level := slog.LevelInfo
	if os.Getenv("L3HA_TEST_VRRP_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: level})).With("node", name)
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// stateEvent is one report.
type stateEvent struct {
	at    time.Time
	id    string
	state vrrp.State
	cause vrrp.Cause
}

// recorder keeps what an engine reported.
type recorder struct {
	mu     sync.Mutex
	events []stateEvent
}

func (r *recorder) report(id string, st vrrp.State, cause vrrp.Cause) {
	r.mu.Lock()
	r.events = append(r.events, stateEvent{time.Now(), id, st, cause})
	r.mu.Unlock()
}

// causes returns the causes reported for id, in order.
func (r *recorder) causes(id string) []vrrp.Cause {
	return eventsOf(r, id, func(e stateEvent) vrrp.Cause { return e.cause })
}

// states returns the states reported for id, in order.
func (r *recorder) states(id string) []vrrp.State {
	return eventsOf(r, id, func(e stateEvent) vrrp.State { return e.state })
}

// eventsOf returns field of every report for id, in order.
func eventsOf[T any](r *recorder, id string, field func(stateEvent) T) []T {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []T
	for _, e := range r.events {
		if e.id == id {
			out = append(out, field(e))
		}
	}
	return out
}

func (r *recorder) last(id string) (stateEvent, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.events) - 1; i >= 0; i-- {
		if r.events[i].id == id {
			return r.events[i], true
		}
	}
	return stateEvent{}, false
}

func (r *recorder) is(id string, st vrrp.State) bool {
	e, ok := r.last(id)
	return ok && e.state == st
}

// testEngine is an engine with its recorder.
type testEngine struct {
	name string
	e    *Engine
	rec  *recorder
	stop context.CancelFunc
}

// startEngine runs an engine until the test ends (stopped for a restart,
// which sends and removes nothing) or until the test shuts it down.
func startEngine(t *testing.T, name string, o Options) *testEngine {
	t.Helper()
	if o.Logger == nil {
		o.Logger = newTestLogger(t, name)
	}
	e, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	te := &testEngine{name: name, e: e, rec: &recorder{}}
	ctx, cancel := context.WithCancel(context.Background())
	te.stop = cancel
	if err := e.Start(ctx, te.rec.report); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, cancel2 := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel2()
		if err := e.Shutdown(c, false); err != nil {
			t.Errorf("engine %s shutdown: %v", name, err)
		}
		cancel()
	})
	return te
}

func (te *testEngine) state(t *testing.T, id string) vrrp.State {
	t.Helper()
	st, ok := te.e.Status(id)
	if !ok {
		return vrrp.Initialize
	}
	return st.Machine.State
}

func (te *testEngine) drops(id string) map[vrrp.Reason]uint64 {
	st, _ := te.e.Status(id)
	return st.Drops
}

// haNode is one node's side of an HA router: a namespace with an ha- device
// (and a qr- stand-in) holding the node's HA address.
type haNode struct {
	ns     string
	router Router
	qrPeer string // the other end of the qr- stand-in, in ns
}

// testRouter describes router id on node ns with HA address ha.
func testRouter(id, ns, dev string, vrid uint8, ha netip.Prefix) Router {
	return Router{
		ID: id, Namespace: ns, VRID: vrid, Device: dev, Address: ha,
		VIP: netip.PrefixFrom(netip.AddrFrom4([4]byte{169, 254, 0, vrid}), 24),
	}
}

// pairNodes builds two namespaces whose ha- devices (names devA, devB) are
// joined by a veth pair, with HA addresses 169.254.192.<10+i>/18.
func pairNodes(t *testing.T, id string, vrid uint8, mtu int) (a, b haNode) {
	t.Helper()
	nsA, nsB := newNS(t), newNS(t)
	devA, devB := "ha-"+randHex(5)[:8]+"-a", "ha-"+randHex(5)[:8]+"-b"
	vethPair(t, nsA, devA, nsB, devB, mtu)
	haA, haB := netip.MustParsePrefix("169.254.192.10/18"), netip.MustParsePrefix("169.254.192.11/18")
	addAddr(t, nsA, devA, haA)
	addAddr(t, nsB, devB, haB)
	return haNode{ns: nsA, router: testRouter(id, nsA, devA, vrid, haA)}, haNode{ns: nsB, router: testRouter(id, nsB, devB, vrid, haB)}
}

// withRouterAddresses gives the node a qr- device and the router an
// excluded address on it and a default route through it.
func (n *haNode) withRouterAddresses(t *testing.T) {
	t.Helper()
	qr := "qr-" + randHex(4)[:8] + "-0"
	n.qrPeer = localDevice(t, n.ns, qr)
	n.router.Excluded = []Address{{Dev: qr, Prefix: netip.MustParsePrefix("10.99.0.1/24")}}
	n.router.Routes = []Route{{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("10.99.0.254"), Dev: qr}}
}

func (n *haNode) holdsVIP(t *testing.T) bool {
	return hasAddr(t, n.ns, n.router.Device, n.router.VIP)
}

// holdsAll reports whether the node holds every address and route of its
// router (have=true) or none of them (have=false).
func (n *haNode) holdsAll(t *testing.T, have bool) bool {
	if n.holdsVIP(t) != have {
		return false
	}
	for _, a := range n.router.Excluded {
		if hasAddr(t, n.ns, a.Dev, a.Prefix) != have {
			return false
		}
	}
	for _, r := range n.router.Routes {
		if hasRoute(t, n.ns, linux.RouteProtocolVRRP, r.Dst, r.Gateway) != have {
			return false
		}
	}
	return true
}

// clearRouterState removes what a dead node left (as a reboot would).
func (n *haNode) clearRouterState(t *testing.T) {
	t.Helper()
	if err := linux.DelAddress(n.ns, n.router.Device, n.router.VIP); err != nil {
		t.Fatal(err)
	}
	for _, a := range n.router.Excluded {
		if err := linux.DelAddress(n.ns, a.Dev, a.Prefix); err != nil {
			t.Fatal(err)
		}
	}
	if err := linux.SyncRoutes(n.ns, linux.RouteProtocolVRRP, nil); err != nil {
		t.Fatal(err)
	}
}

// sniffed is one advert seen on the wire.
type sniffed struct {
	at       time.Time // kernel receive time
	src      netip.Addr
	vrid     uint8
	priority uint8
	adverInt uint8 // VRRPv2's Adver Int (seconds); v3: the interval's high bits
}

// sniffer records the VRRP adverts arriving on a device, with kernel
// timestamps, so that its own scheduling never distorts the gaps it
// measures.
type sniffer struct {
	fd   int
	mu   sync.Mutex
	seen []sniffed
	done chan struct{}
}

func startSniffer(t *testing.T, ns, dev string) *sniffer {
	t.Helper()
	s := &sniffer{done: make(chan struct{})}
	err := linux.Do(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, vrrp.IPProtocol)
		if err != nil {
			return err
		}
		s.fd = fd
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, dev); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20); err != nil {
			return err
		}
		tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		return unix.SetsockoptIPMreqn(fd, unix.IPPROTO_IP, unix.IP_ADD_MEMBERSHIP,
			&unix.IPMreqn{Multiaddr: vrrp.Group.As4(), Ifindex: int32(ifi.Index)})
	})
	if err != nil {
		if s.fd > 0 {
			unix.Close(s.fd)
		}
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	go s.run(stopped)
	t.Cleanup(func() {
		close(s.done)
		<-stopped
		unix.Close(s.fd)
	})
	return s
}

func (s *sniffer) run(stopped chan struct{}) {
	defer close(stopped)
	buf := make([]byte, 65536)
	oob := make([]byte, 256)
	for {
		select {
		case <-s.done:
			return
		default:
		}
		n, oobn, _, _, err := unix.Recvmsg(s.fd, buf, oob, 0)
		if err != nil {
			continue // timeout: look at done
		}
		at := time.Now()
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range msgs {
				if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= int(unsafe.Sizeof(unix.Timespec{})) {
					ts := *(*unix.Timespec)(unsafe.Pointer(&m.Data[0]))
					at = time.Unix(ts.Unix())
				}
			}
		}
		if n < 28 {
			continue
		}
		ihl := int(buf[0]&0x0f) * 4
		if n < ihl+8 {
			continue
		}
		s.mu.Lock()
		s.seen = append(s.seen, sniffed{at: at, src: netip.AddrFrom4([4]byte(buf[12:16])), vrid: buf[ihl+1], priority: buf[ihl+2], adverInt: buf[ihl+5]})
		s.mu.Unlock()
	}
}

// from returns the adverts seen from src.
func (s *sniffer) from(src netip.Addr) []sniffed {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []sniffed
	for _, p := range s.seen {
		if p.src == src {
			out = append(out, p)
		}
	}
	return out
}

// maxGap is the longest time between consecutive adverts from src within
// [from, to] (the window's edges count as adverts).
func (s *sniffer) maxGap(src netip.Addr, from, to time.Time) (time.Duration, int) {
	prev := from
	var gap time.Duration
	n := 0
	for _, p := range s.from(src) {
		if p.at.Before(from) || p.at.After(to) {
			continue
		}
		gap = max(gap, p.at.Sub(prev))
		prev = p.at
		n++
	}
	return max(gap, to.Sub(prev)), n
}

// rawSender sends hand-made IPv4 datagrams (IP_HDRINCL) out of a device.
type rawSender struct {
	fd  int
	sa  unix.SockaddrInet4
	src netip.Addr
}

func newRawSender(t *testing.T, ns, dev string, src netip.Addr) *rawSender {
	t.Helper()
	s := &rawSender{src: src, sa: unix.SockaddrInet4{Addr: vrrp.Group.As4()}}
	err := linux.Do(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		if err != nil {
			return err
		}
		s.fd = fd
		if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, dev); err != nil {
			return err
		}
		return unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_LOOP, 0)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(s.fd) })
	return s
}

// send sends payload as IP protocol 112 with the given TTL; the kernel fills
// in the header checksum and total length.
func (s *rawSender) send(ttl uint8, payload []byte) error {
	return unix.Sendto(s.fd, ipDatagram(ttl, s.src, vrrp.Group, payload), 0, &s.sa)
}

// packet builds an advert for the test's groups.
func packet(t testing.TB, version int, vrid, priority uint8, src netip.Addr, interval time.Duration, password string, addrs ...netip.Addr) []byte {
	t.Helper()
	p := vrrp.Packet{Version: version, Type: vrrp.TypeAdvertisement, VRID: vrid, Priority: priority, Addresses: addrs}
	if version == 3 {
		p.MaxAdvertInterval = uint16(interval / (10 * time.Millisecond))
	} else {
		p.AdvertInterval = uint8(interval / time.Second)
		if password != "" {
			p.AuthType, p.AuthData = vrrp.AuthPassword, vrrp.PasswordAuthData(password)
		}
	}
	b, err := vrrp.Marshal(p, src, vrrp.Group)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// addrEvent is an address added to or removed from a namespace.
type addrEvent struct {
	at     time.Time
	prefix netip.Prefix
	added  bool
}

// addrWatcher records every IPv4 address change in a namespace: a flap
// (removed and added back) cannot hide from it.
type addrWatcher struct {
	mu     sync.Mutex
	events []addrEvent
}

func watchAddrs(t *testing.T, ns string) *addrWatcher {
	t.Helper()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	w := &addrWatcher{}
	ch := make(chan netlink.AddrUpdate, 256)
	done := make(chan struct{})
	if err := netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{Namespace: &h, ReceiveBufferSize: 1 << 20}); err != nil {
		h.Close()
		t.Fatal(err)
	}
	go func() {
		for u := range ch {
			a, ok := netip.AddrFromSlice(u.LinkAddress.IP)
			if !ok {
				continue
			}
			ones, _ := u.LinkAddress.Mask.Size()
			w.mu.Lock()
			w.events = append(w.events, addrEvent{time.Now(), netip.PrefixFrom(a.Unmap(), ones), u.NewAddr})
			w.mu.Unlock()
		}
	}()
	// The subscription's reader ends at the next message after done (the
	// namespace's deletion makes some); it is not waited for.
	t.Cleanup(func() {
		close(done)
		h.Close()
	})
	return w
}

// changes returns the events for p after since.
func (w *addrWatcher) changes(p netip.Prefix, since time.Time) []addrEvent {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []addrEvent
	for _, e := range w.events {
		if e.prefix == p && !e.at.Before(since) {
			out = append(out, e)
		}
	}
	return out
}

// arpSniffer counts the gratuitous ARPs (requests whose sender and target
// protocol addresses are the same) arriving on a device.
type arpSniffer struct {
	fd   int
	mu   sync.Mutex
	garp map[netip.Addr]int
	done chan struct{}
}

func startARPSniffer(t *testing.T, ns, dev string) *arpSniffer {
	t.Helper()
	s := &arpSniffer{garp: map[netip.Addr]int{}, done: make(chan struct{})}
	err := linux.Do(ns, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
		if err != nil {
			return err
		}
		s.fd = fd
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: ifi.Index})
	})
	if err != nil {
		if s.fd > 0 {
			unix.Close(s.fd)
		}
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		buf := make([]byte, 1500)
		for {
			select {
			case <-s.done:
				return
			default:
			}
			n, _, err := unix.Recvfrom(s.fd, buf, 0)
			if err != nil || n < arpLen {
				continue
			}
			spa, tpa := netip.AddrFrom4([4]byte(buf[14:18])), netip.AddrFrom4([4]byte(buf[24:28]))
			if buf[7] == 1 && spa == tpa {
				s.mu.Lock()
				s.garp[spa]++
				s.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		close(s.done)
		<-stopped
		unix.Close(s.fd)
	})
	return s
}

func (s *arpSniffer) count(a netip.Addr) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.garp[a]
}
