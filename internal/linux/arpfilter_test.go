package linux

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	mnl "github.com/mdlayher/netlink"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// announceLab is a network node's external bridge with three HA routers,
// an instance (the node is also a compute node) and the upstream, as the
// agent (and Nova) wire them:
//
//	router a 10.9.0.1  ─ tapa  ┐
//	router b 10.9.0.2  ─ tapb  │
//	router c 10.9.0.3  ─ tapc  ├ br0 ─ up0 ─ upstream 10.9.0.254
//	instance 10.9.0.50 ─ tapvm ┘
//
// with the announcement filter installed for the routers' addresses and
// ports (tapvm is a tap port, but not a router's).
type announceLab struct {
	node, upstream string
	a, b, c        string
	vm             string
	mac            map[string]net.HardwareAddr // namespace → its eth0's MAC
	names          map[string]string           // namespace → "router a", …
}

// label names namespace ns for messages.
func (l *announceLab) label(ns string) string {
	if n, ok := l.names[ns]; ok {
		return n
	}
	return ns
}

var (
	labRouterAddrs = addrs("10.9.0.1", "10.9.0.2", "10.9.0.3")
	labRouterPorts = []string{"tapa", "tapb", "tapc"}
)

func newAnnounceLab(t *testing.T) *announceLab {
	t.Helper()
	l := &announceLab{node: newNS(t), upstream: newNS(t), a: newNS(t), b: newNS(t), c: newNS(t), vm: newNS(t), mac: map[string]net.HardwareAddr{}}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	l.names = map[string]string{l.a: "router a", l.b: "router b", l.c: "router c", l.vm: "the instance", l.upstream: "the upstream"}
	must(EnsureBridge(l.node, "br0", 0))
	ports := []struct{ port, ns, mac, addr string }{
		{"tapa", l.a, "fa:16:3e:00:09:01", "10.9.0.1/24"},
		{"tapb", l.b, "fa:16:3e:00:09:02", "10.9.0.2/24"},
		{"tapc", l.c, "fa:16:3e:00:09:03", "10.9.0.3/24"},
		{"tapvm", l.vm, "fa:16:3e:00:09:50", "10.9.0.50/24"},
		{"up0", l.upstream, "fa:16:3e:00:09:fe", "10.9.0.254/24"},
	}
	for _, p := range ports {
		mac, _ := net.ParseMAC(p.mac)
		l.mac[p.ns] = mac
		must(EnsureVeth(l.node, Veth{NodeSide: p.port, Bridge: "br0", NS: p.ns, NSSide: "eth0", MAC: mac}))
		must(SyncAddresses(p.ns, "eth0", prefixes(p.addr)))
	}
	// Forwarding first, so that a rule that drops what it must not fails
	// the test that shows it, not the lab.
	l.waitForwarding(t)
	must(SyncAnnouncementFilter(l.node, labRouterAddrs, labRouterPorts))
	return l
}

// all is every namespace on the bridge but the node.
func (l *announceLab) all() []string { return []string{l.a, l.b, l.c, l.vm, l.upstream} }

// waitForwarding waits until the bridge forwards between all its ports (a
// port starts forwarding once the kernel has seen its carrier, which it
// reports asynchronously): until a broadcast from router a reaches all the
// others, and one from the upstream reaches a.
func (l *announceLab) waitForwarding(t *testing.T) {
	t.Helper()
	for i, from := range []string{l.a, l.upstream} {
		probe := l.announcement(from, 1, fmt.Sprintf("10.9.1.%d", i+1)) // not in the set
		pending := map[string]*arpSniffer{}
		for _, ns := range l.all() {
			if ns != from {
				pending[ns] = sniffARP(t, ns, "eth0")
			}
		}
		deadline := time.Now().Add(eventTimeout)
		for len(pending) > 0 {
			if time.Now().After(deadline) {
				var missing []string
				for ns := range pending {
					missing = append(missing, l.label(ns))
				}
				t.Fatalf("bridge does not forward %v to %v", probe, missing)
			}
			sendARP(t, from, "eth0", probe)
			for ns, s := range pending {
				if _, ok := s.waitFor(t, probe, 200*time.Millisecond); ok {
					delete(pending, ns)
				}
			}
		}
	}
}

// request is an ARP request (op 1) that the device eth0 of namespace from
// sends, from sender for target.
func (l *announceLab) request(from, sender, target string) arpPacket {
	return arpPacket{src: l.mac[from], op: 1, sender: netip.MustParseAddr(sender), target: netip.MustParseAddr(target)}
}

// arpCase is a frame sent from a namespace of the lab, the namespaces it
// must reach (the others must not get it), and the copies the two drop
// rules drop.
type arpCase struct {
	name          string
	from          string
	pkt           arpPacket
	reaches       []string // not empty: the first tells when the bridge is done
	announcements uint64   // copies dropped by rule 1
	requests      uint64   // copies dropped by rule 3
}

// check sends tt.pkt and checks where it goes; i makes the control frame
// unique.
func (l *announceLab) check(t *testing.T, i int, tt arpCase) {
	t.Helper()
	sniffers := map[string]*arpSniffer{}
	for _, ns := range l.all() {
		if ns != tt.from {
			sniffers[ns] = sniffARP(t, ns, "eth0")
		}
	}
	announcementsBefore, requestsBefore := ruleDrops(t, l.node)
	sendARP(t, tt.from, "eth0", tt.pkt)

	// The bridge hands a frame to all its ports in one go: once one of
	// them has it, every copy has been forwarded or dropped.
	first := tt.reaches[0]
	if _, ok := sniffers[first].waitFor(t, tt.pkt, eventTimeout); !ok {
		t.Fatalf("%s never got %v", l.label(first), tt.pkt)
	}
	announcementsAfter, requestsAfter := ruleDrops(t, l.node)
	if got := announcementsAfter - announcementsBefore; got != tt.announcements {
		t.Errorf("announcement copies dropped = %d, want %d", got, tt.announcements)
	}
	if got := requestsAfter - requestsBefore; got != tt.requests {
		t.Errorf("request copies dropped = %d, want %d", got, tt.requests)
	}

	// A namespace that must not get the frame must get a later one that no
	// rule drops (so that its sniffer is known to work), and not the first
	// one before it.
	control := l.announcement(tt.from, 1, fmt.Sprintf("10.9.2.%d", i+1))
	sent := false
	for _, ns := range l.all() {
		s := sniffers[ns]
		if s == nil || ns == first {
			continue
		}
		if slices.Contains(tt.reaches, ns) {
			if _, ok := s.waitFor(t, tt.pkt, eventTimeout); !ok {
				t.Errorf("%s never got %v", l.label(ns), tt.pkt)
			}
			continue
		}
		if !sent {
			sendARP(t, tt.from, "eth0", control)
			sent = true
		}
		seen, ok := s.waitFor(t, control, eventTimeout)
		if !ok {
			t.Fatalf("%s never got the control frame %v", l.label(ns), control)
		}
		if slices.ContainsFunc(seen, tt.pkt.equal) {
			t.Errorf("%s got %v", l.label(ns), tt.pkt)
		}
	}
}

// announcement is a gratuitous ARP (request, op 1, or reply, op 2) that the
// device eth0 of namespace from sends for addr.
func (l *announceLab) announcement(from string, op uint16, addr string) arpPacket {
	a := netip.MustParseAddr(addr)
	return arpPacket{src: l.mac[from], op: op, sender: a, target: a}
}

// arpPacket is the part of an Ethernet/IPv4 ARP frame the tests look at.
// Frames are broadcast; the sender hardware address is the Ethernet source.
type arpPacket struct {
	src            net.HardwareAddr
	op             uint16
	sender, target netip.Addr
}

func (p arpPacket) String() string {
	return fmt.Sprintf("arp op %d %s → %s from %s", p.op, p.sender, p.target, p.src)
}

func (p arpPacket) equal(q arpPacket) bool {
	return slices.Equal(p.src, q.src) && p.op == q.op && p.sender == q.sender && p.target == q.target
}

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

func (p arpPacket) frame() []byte {
	f := make([]byte, 42)
	copy(f[0:6], broadcastMAC)
	copy(f[6:12], p.src)
	binary.BigEndian.PutUint16(f[12:14], unix.ETH_P_ARP)
	copy(f[14:20], []byte{0x00, 0x01, 0x08, 0x00, 6, 4}) // Ethernet, IPv4
	binary.BigEndian.PutUint16(f[20:22], p.op)
	copy(f[22:28], p.src)
	s, d := p.sender.As4(), p.target.As4()
	copy(f[28:32], s[:])
	// target hardware address f[32:38]: zero
	copy(f[38:42], d[:])
	return f
}

func parseARP(f []byte) (arpPacket, bool) {
	if len(f) < 42 || binary.BigEndian.Uint16(f[12:14]) != unix.ETH_P_ARP ||
		string(f[14:20]) != "\x00\x01\x08\x00\x06\x04" {
		return arpPacket{}, false
	}
	return arpPacket{
		src:    net.HardwareAddr(slices.Clone(f[6:12])),
		op:     binary.BigEndian.Uint16(f[20:22]),
		sender: netip.AddrFrom4([4]byte(f[28:32])),
		target: netip.AddrFrom4([4]byte(f[38:42])),
	}, true
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// sendARP sends p's frame, once, out of dev in ns through an AF_PACKET
// socket.
func sendARP(t *testing.T, ns, dev string, p arpPacket) {
	t.Helper()
	idx := link(t, ns, dev).Attrs().Index
	err := Do(ns, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0) // 0: receives nothing
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: idx, Halen: 6}
		copy(to.Addr[:], broadcastMAC)
		return unix.Sendto(fd, p.frame(), 0, to)
	})
	if err != nil {
		t.Fatalf("send %v in %s: %v", p, ns, err)
	}
}

// arpSniffer receives the ARP frames that arrive on a device (not those it
// sends).
type arpSniffer struct {
	ns string
	fd int
}

// sniffARP starts receiving ARP frames arriving on dev in ns.
func sniffARP(t *testing.T, ns, dev string) *arpSniffer {
	t.Helper()
	idx := link(t, ns, dev).Attrs().Index
	s := &arpSniffer{ns: ns, fd: -1}
	err := Do(ns, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
		if err != nil {
			return err
		}
		s.fd = fd
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: idx}); err != nil {
			return err
		}
		// Reads return at least this often, so that waits keep their
		// deadlines.
		tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	})
	if s.fd >= 0 {
		t.Cleanup(func() { unix.Close(s.fd) })
	}
	if err != nil {
		t.Fatalf("sniff ARP on %s in %s: %v", dev, ns, err)
	}
	return s
}

// waitFor reads frames until want arrives (ok) or d has passed, and returns
// the ARP frames that arrived before it.
func (s *arpSniffer) waitFor(t *testing.T, want arpPacket, d time.Duration) (before []arpPacket, ok bool) {
	t.Helper()
	buf := make([]byte, 2048)
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		n, from, err := unix.Recvfrom(s.fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatalf("sniffer in %s: %v", s.ns, err)
		}
		if ll, isLL := from.(*unix.SockaddrLinklayer); isLL && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		p, isARP := parseARP(buf[:n])
		if !isARP {
			continue
		}
		if p.equal(want) {
			return before, true
		}
		before = append(before, p)
	}
	return before, false
}

// nftRule is a rule of AnnouncementTable as read back.
type nftRule struct{ handle, packets uint64 }

// announcementRules returns the rules of AnnouncementTable in ns by comment
// (and fails unless they are the three of announcementComments).
func announcementRules(t *testing.T, ns string) map[string]nftRule {
	t.Helper()
	c, done, err := nftConn(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	rules, err := c.GetRules(announcementTableRef, &nftables.Chain{Name: announcementChain, Table: announcementTableRef})
	if err != nil {
		t.Fatalf("rules of %s: %v", AnnouncementTable, err)
	}
	if len(rules) != len(announcementComments) {
		t.Fatalf("%s has %d rules, want %d", AnnouncementTable, len(rules), len(announcementComments))
	}
	out := map[string]nftRule{}
	for i, r := range rules {
		comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
		if comment != announcementComments[i] {
			t.Fatalf("rule %d of %s has comment %q, want %q", i+1, AnnouncementTable, comment, announcementComments[i])
		}
		found := false
		for _, e := range r.Exprs {
			if ctr, ok := e.(*expr.Counter); ok {
				out[comment] = nftRule{handle: r.Handle, packets: ctr.Packets}
				found = true
			}
		}
		if !found {
			t.Fatalf("rule %q has no counter", comment)
		}
	}
	return out
}

// ruleHandles returns the handles of the three rules of AnnouncementTable.
func ruleHandles(t *testing.T, ns string) [3]uint64 {
	t.Helper()
	rules := announcementRules(t, ns)
	var out [3]uint64
	for i, c := range announcementComments {
		out[i] = rules[c].handle
	}
	return out
}

// ruleDrops returns the packet counters of the two drop rules (1:
// announcements, 3: requests) of AnnouncementTable in ns.
func ruleDrops(t *testing.T, ns string) (announcements, requests uint64) {
	t.Helper()
	rules := announcementRules(t, ns)
	return rules[announcementComment].packets, rules[requestComment].packets
}

// nftGeneration returns the nftables ruleset generation of ns: every
// committed change (transaction) increments it, reads do not.
func nftGeneration(t *testing.T, ns string) uint32 {
	t.Helper()
	h := nsHandle(t, ns)
	conn, err := mnl.Dial(unix.NETLINK_NETFILTER, &mnl.Config{NetNS: int(h)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msgs, err := conn.Execute(mnl.Message{
		Header: mnl.Header{Type: mnl.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN), Flags: mnl.Request},
		Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	})
	if err != nil {
		t.Fatalf("nftables generation in %s: %v", ns, err)
	}
	if len(msgs) != 1 || len(msgs[0].Data) < 4 {
		t.Fatalf("nftables generation in %s: unexpected answer %v", ns, msgs)
	}
	ad, err := mnl.NewAttributeDecoder(msgs[0].Data[4:])
	if err != nil {
		t.Fatal(err)
	}
	ad.ByteOrder = binary.BigEndian
	for ad.Next() {
		if ad.Type() == unix.NFTA_GEN_ID {
			return ad.Uint32()
		}
	}
	t.Fatalf("nftables generation in %s: no NFTA_GEN_ID (%v)", ns, ad.Err())
	return 0
}

// nftaTableHandle is NFTA_TABLE_HANDLE (enum nft_table_attributes), which
// x/sys/unix lacks.
const nftaTableHandle = 4

// announcementTableHandle returns the handle of AnnouncementTable in ns: a
// table made anew (even under the same name) gets a new one, whereas rule
// handles count from 1 again in every new table.
func announcementTableHandle(t *testing.T, ns string) uint64 {
	t.Helper()
	h := nsHandle(t, ns)
	conn, err := mnl.Dial(unix.NETLINK_NETFILTER, &mnl.Config{NetNS: int(h)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	attrs, err := mnl.MarshalAttributes([]mnl.Attribute{{Type: unix.NFTA_TABLE_NAME, Data: []byte(AnnouncementTable + "\x00")}})
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := conn.Execute(mnl.Message{
		Header: mnl.Header{Type: mnl.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETTABLE), Flags: mnl.Request},
		Data:   append([]byte{unix.NFPROTO_BRIDGE, unix.NFNETLINK_V0, 0, 0}, attrs...),
	})
	if err != nil {
		t.Fatalf("table %s in %s: %v", AnnouncementTable, ns, err)
	}
	if len(msgs) != 1 || len(msgs[0].Data) < 4 {
		t.Fatalf("table %s in %s: unexpected answer %v", AnnouncementTable, ns, msgs)
	}
	ad, err := mnl.NewAttributeDecoder(msgs[0].Data[4:])
	if err != nil {
		t.Fatal(err)
	}
	ad.ByteOrder = binary.BigEndian
	for ad.Next() {
		if ad.Type() == nftaTableHandle {
			return ad.Uint64()
		}
	}
	t.Fatalf("table %s in %s: no handle (%v)", AnnouncementTable, ns, ad.Err())
	return 0
}

func mustAnnouncementAddrs(t *testing.T, ns string, want ...netip.Addr) {
	t.Helper()
	got, err := AnnouncementFilterAddrs(ns)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("AnnouncementFilterAddrs = %v, want %v", got, want)
	}
}

func TestAnnouncementFilterDropsSiblingAnnouncements(t *testing.T) {
	l := newAnnounceLab(t)
	tests := []arpCase{
		{
			name:          "router's announcement of its address reaches the uplink only",
			from:          l.a,
			pkt:           l.announcement(l.a, 1, "10.9.0.1"),
			reaches:       []string{l.upstream},
			announcements: 3, // b, c and the instance: every tap port
		},
		{
			name:          "announcement sent as an ARP reply is dropped too",
			from:          l.b,
			pkt:           l.announcement(l.b, 2, "10.9.0.2"),
			reaches:       []string{l.upstream},
			announcements: 3,
		},
		{
			name:    "announcement of an address not in the set reaches everyone",
			from:    l.a,
			pkt:     l.announcement(l.a, 1, "10.9.0.77"),
			reaches: []string{l.upstream, l.b, l.c, l.vm},
		},
		{
			name:    "ARP request between routers (sender ≠ target) reaches everyone",
			from:    l.a,
			pkt:     l.request(l.a, "10.9.0.1", "10.9.0.2"),
			reaches: []string{l.upstream, l.b, l.c, l.vm},
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { l.check(t, i, tt) })
	}
	if _, err := exec.LookPath("nft"); err == nil {
		t.Logf("nft list table bridge %s:\n%s", AnnouncementTable, ipCmd(t, l.node, "nft", "list", "table", "bridge", AnnouncementTable))
	}
}

// After a mass takeover every new master ARPs for the upstream at once: the
// router ports must not get each other's requests (N² copies), but every
// request a router, the instance or the upstream must answer still reaches
// it.
func TestAnnouncementFilterKeepsRequestsForOthersFromRouterPorts(t *testing.T) {
	l := newAnnounceLab(t)
	tests := []arpCase{
		{
			name:     "router's request for the upstream reaches the upstream and the instance, not the other routers",
			from:     l.a,
			pkt:      l.request(l.a, "10.9.0.1", "10.9.0.254"),
			reaches:  []string{l.upstream, l.vm},
			requests: 2,
		},
		{
			name:     "router's request for the instance reaches the instance and the upstream, not the other routers",
			from:     l.a,
			pkt:      l.request(l.a, "10.9.0.1", "10.9.0.50"),
			reaches:  []string{l.vm, l.upstream},
			requests: 2,
		},
		{
			name:    "upstream's request for a router's address reaches the routers and the instance",
			from:    l.upstream,
			pkt:     l.request(l.upstream, "10.9.0.254", "10.9.0.2"),
			reaches: []string{l.b, l.a, l.c, l.vm},
		},
		{
			name:     "upstream's request for the instance's address reaches the instance, not the routers",
			from:     l.upstream,
			pkt:      l.request(l.upstream, "10.9.0.254", "10.9.0.50"),
			reaches:  []string{l.vm},
			requests: 3,
		},
		{
			name:     "instance's request for the upstream reaches the upstream, not the routers",
			from:     l.vm,
			pkt:      l.request(l.vm, "10.9.0.50", "10.9.0.254"),
			reaches:  []string{l.upstream},
			requests: 3,
		},
		{
			name:    "instance's probe for a router's address (sender 0.0.0.0) reaches the routers, which defend it",
			from:    l.vm,
			pkt:     l.request(l.vm, "0.0.0.0", "10.9.0.3"),
			reaches: []string{l.c, l.a, l.b, l.upstream},
		},
		{
			// keepalived moving a VIP to this instance: the routers must
			// learn its new MAC.
			name:    "instance's announcement of a VIP (request, sender = target) reaches the routers",
			from:    l.vm,
			pkt:     l.announcement(l.vm, 1, "10.9.0.60"),
			reaches: []string{l.a, l.b, l.c, l.upstream},
		},
		{
			name:    "upstream's announcement reaches the routers",
			from:    l.upstream,
			pkt:     l.announcement(l.upstream, 1, "10.9.0.254"),
			reaches: []string{l.a, l.b, l.c, l.vm},
		},
		{
			name:     "request whose sender and target differ in the last byte only is dropped toward routers",
			from:     l.upstream,
			pkt:      l.request(l.upstream, "10.9.0.254", "10.9.0.250"),
			reaches:  []string{l.vm},
			requests: 3,
		},
		{
			name:     "request whose sender and target differ in the first byte only is dropped toward routers",
			from:     l.upstream,
			pkt:      l.request(l.upstream, "11.9.0.254", "10.9.0.254"),
			reaches:  []string{l.vm},
			requests: 3,
		},
		{
			name:    "broadcast ARP reply (not a request) reaches everyone",
			from:    l.upstream,
			pkt:     arpPacket{src: l.mac[l.upstream], op: 2, sender: netip.MustParseAddr("10.9.0.254"), target: netip.MustParseAddr("10.9.0.1")},
			reaches: []string{l.a, l.b, l.c, l.vm},
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { l.check(t, 100+i, tt) })
	}
}

func TestAnnouncementFilterKeepsOrdinaryARP(t *testing.T) {
	l := newAnnounceLab(t)
	announcementsBefore, _ := ruleDrops(t, l.node)
	// requestsDropped runs fn and checks that rule 3 dropped no fewer than least
	// request copies meanwhile.
	requestsDropped := func(t *testing.T, least uint64, fn func()) {
		t.Helper()
		_, before := ruleDrops(t, l.node)
		fn()
		if _, after := ruleDrops(t, l.node); after-before < least {
			t.Errorf("request copies dropped = %d, want at least %d", after-before, least)
		}
	}

	// Nobody has neighbour entries yet: each exchange starts with an ARP
	// request (sender ≠ target, broadcast to all ports) and its unicast
	// reply.
	fromA := listenUDP(t, l.a, 0)
	fromUp := listenUDP(t, l.upstream, 0)
	fromVM := listenUDP(t, l.vm, 0)
	t.Run("router reaches a sibling router", func(t *testing.T) {
		got := exchange(t, fromA, "10.9.0.2:7101", listenUDP(t, l.b, 7101), "a to b")
		mustEqual(t, "source seen by b", got.String(), "10.9.0.1")
	})
	t.Run("router reaches the upstream", func(t *testing.T) {
		requestsDropped(t, 2, func() { // a's request, not to b and c
			got := exchange(t, fromA, "10.9.0.254:7102", listenUDP(t, l.upstream, 7102), "a to upstream")
			mustEqual(t, "source seen by the upstream", got.String(), "10.9.0.1")
		})
	})
	t.Run("router reaches the instance", func(t *testing.T) {
		requestsDropped(t, 2, func() {
			got := exchange(t, fromA, "10.9.0.50:7103", listenUDP(t, l.vm, 7103), "a to instance")
			mustEqual(t, "source seen by the instance", got.String(), "10.9.0.1")
		})
	})
	t.Run("upstream reaches a router", func(t *testing.T) {
		got := exchange(t, fromUp, "10.9.0.2:7104", listenUDP(t, l.b, 7104), "upstream to b")
		mustEqual(t, "source seen by b", got.String(), "10.9.0.254")
	})
	t.Run("instance reaches the upstream and a router", func(t *testing.T) {
		requestsDropped(t, 3, func() { // the instance's request, not to a, b and c
			got := exchange(t, fromVM, "10.9.0.254:7105", listenUDP(t, l.upstream, 7105), "instance to upstream")
			mustEqual(t, "source seen by the upstream", got.String(), "10.9.0.50")
		})
		got := exchange(t, fromVM, "10.9.0.3:7106", listenUDP(t, l.c, 7106), "instance to c")
		mustEqual(t, "source seen by c", got.String(), "10.9.0.50")
	})
	t.Run("upstream's announcement reaches every router and the instance", func(t *testing.T) {
		sniffers := map[string]*arpSniffer{}
		for _, ns := range []string{l.a, l.b, l.c, l.vm} {
			sniffers[ns] = sniffARP(t, ns, "eth0")
		}
		garp := l.announcement(l.upstream, 1, "10.9.0.254")
		sendARP(t, l.upstream, "eth0", garp)
		for ns, s := range sniffers {
			if _, ok := s.waitFor(t, garp, eventTimeout); !ok {
				t.Errorf("%s never got %v", l.label(ns), garp)
			}
		}
	})
	t.Run("instance's announcement updates a router's neighbour entry", func(t *testing.T) {
		// keepalived in instances moves a VIP from one to another and
		// announces it: a router that knew the old MAC must learn the new
		// one (a request for an address that is not a router's, but
		// gratuitous).
		ipCmd(t, l.a, "ip", "neigh", "replace", "10.9.0.60", "lladdr", "fa:16:3e:00:09:61", "dev", "eth0", "nud", "stale")
		h := nsHandle(t, l.a)
		subErrs := newSubErrors()
		ch := make(chan netlink.NeighUpdate, 64)
		done := make(chan struct{})
		defer close(done)
		if err := netlink.NeighSubscribeWithOptions(ch, done, netlink.NeighSubscribeOptions{Namespace: &h, ErrorCallback: subErrs.record}); err != nil {
			t.Fatal(err)
		}
		garp := l.announcement(l.vm, 1, "10.9.0.60")
		sendARP(t, l.vm, "eth0", garp)
		timeout := time.After(eventTimeout)
		for {
			select {
			case u, ok := <-ch:
				if !ok {
					t.Fatal("neigh subscription closed")
				}
				if u.IP.Equal(net.ParseIP("10.9.0.60")) && slices.Equal(u.HardwareAddr, l.mac[l.vm]) {
					subErrs.check(t)
					return
				}
			case <-timeout:
				t.Fatalf("router a's neighbour entry for 10.9.0.60 is %v, want %v", neighMAC(t, l.a, "eth0", "10.9.0.60"), l.mac[l.vm])
			}
		}
	})
	announcementsAfter, _ := ruleDrops(t, l.node)
	mustEqual(t, "announcement copies dropped", announcementsAfter-announcementsBefore, 0)
}

// neighMAC returns the link-layer address of ns's neighbour entry for addr
// on dev (nil if none).
func neighMAC(t *testing.T, ns, dev, addr string) net.HardwareAddr {
	t.Helper()
	idx := link(t, ns, dev).Attrs().Index
	var mac net.HardwareAddr
	inNS(t, ns, func(h *netlink.Handle) error {
		neighs, err := h.NeighList(idx, unix.AF_INET)
		for _, n := range neighs {
			if n.IP.String() == addr {
				mac = n.HardwareAddr
			}
		}
		return err
	})
	return mac
}

func mustAnnouncementPorts(t *testing.T, ns string, want ...string) {
	t.Helper()
	got, err := AnnouncementFilterPorts(ns)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("AnnouncementFilterPorts = %v, want %v", got, want)
	}
}

func TestSyncAnnouncementFilterIsIdempotentAndUpdatesInPlace(t *testing.T) {
	ns := newNS(t)
	// Unsorted, a duplicate, IPv6 (ignored) and IPv4-mapped IPv6; ports
	// unsorted, a duplicate.
	if err := SyncAnnouncementFilter(ns, addrs("10.9.0.3", "10.9.0.1", "2001:db8::1", "10.9.0.1", "::ffff:10.9.0.2"), []string{"tapc", "tapa", "tapb", "tapa"}); err != nil {
		t.Fatal(err)
	}
	mustAnnouncementAddrs(t, ns, labRouterAddrs...)
	mustAnnouncementPorts(t, ns, labRouterPorts...)
	table := announcementTableHandle(t, ns)
	rules := ruleHandles(t, ns)
	sameTableAndRules := func(t *testing.T) {
		t.Helper()
		mustEqual(t, "table handle", announcementTableHandle(t, ns), table)
		mustEqual(t, "rule handles", ruleHandles(t, ns), rules)
	}

	t.Run("same addresses and ports again write nothing", func(t *testing.T) {
		gen := nftGeneration(t, ns)
		if err := SyncAnnouncementFilter(ns, addrs("10.9.0.2", "10.9.0.3", "10.9.0.1"), []string{"tapb", "tapc", "tapa"}); err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "nftables generation", nftGeneration(t, ns), gen)
		sameTableAndRules(t)
	})
	t.Run("other addresses change the set in place, in one transaction", func(t *testing.T) {
		gen := nftGeneration(t, ns)
		want := addrs("10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5")
		if err := SyncAnnouncementFilter(ns, want, labRouterPorts); err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "nftables generation", nftGeneration(t, ns), gen+1)
		mustAnnouncementAddrs(t, ns, want...)
		mustAnnouncementPorts(t, ns, labRouterPorts...)
		sameTableAndRules(t)
	})
	t.Run("other ports change router_ports in place, in one transaction", func(t *testing.T) {
		gen := nftGeneration(t, ns)
		want := []string{"tapb", "tapc", "tapd"}
		if err := SyncAnnouncementFilter(ns, addrs("10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5"), want); err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "nftables generation", nftGeneration(t, ns), gen+1)
		mustAnnouncementPorts(t, ns, want...)
		mustAnnouncementAddrs(t, ns, addrs("10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5")...)
		sameTableAndRules(t)
	})
	t.Run("addresses and ports together, in one transaction", func(t *testing.T) {
		gen := nftGeneration(t, ns)
		if err := SyncAnnouncementFilter(ns, labRouterAddrs, labRouterPorts); err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "nftables generation", nftGeneration(t, ns), gen+1)
		mustAnnouncementAddrs(t, ns, labRouterAddrs...)
		mustAnnouncementPorts(t, ns, labRouterPorts...)
		sameTableAndRules(t)
	})
	t.Run("no router ports empty the set, the rules stay", func(t *testing.T) {
		if err := SyncAnnouncementFilter(ns, labRouterAddrs, nil); err != nil {
			t.Fatal(err)
		}
		mustAnnouncementPorts(t, ns)
		sameTableAndRules(t)
		if err := SyncAnnouncementFilter(ns, labRouterAddrs, labRouterPorts); err != nil {
			t.Fatal(err)
		}
		mustAnnouncementPorts(t, ns, labRouterPorts...)
	})
	t.Run("a port that is not an interface name is an error, and nothing changes", func(t *testing.T) {
		gen := nftGeneration(t, ns)
		for _, bad := range []string{"", "tap0123456789abc", "tap\x00a", "tap/a"} {
			if err := SyncAnnouncementFilter(ns, addrs("10.9.0.7"), []string{"tapa", bad}); err == nil {
				t.Errorf("router port %q accepted", bad)
			}
		}
		mustEqual(t, "nftables generation", nftGeneration(t, ns), gen)
		mustAnnouncementAddrs(t, ns, labRouterAddrs...)
	})
	t.Run("nft reads the table back as the intended rules", func(t *testing.T) {
		requireTool(t, "nft", "nftables")
		out := ipCmd(t, ns, "nft", "list", "table", "bridge", AnnouncementTable)
		t.Logf("nft list table bridge %s:\n%s", AnnouncementTable, out)
		for _, want := range []string{
			"type ipv4_addr . ipv4_addr",
			"10.9.0.2 . 10.9.0.2",
			"type ifname",
			`elements = { "tapa",`,
			"type nf_proto . nf_proto",
			"flags constant",
			"17 . 17,", // one of the 256
			"type filter hook forward priority filter; policy accept;",
			`oifname "tap*" arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp saddr ip . arp daddr ip @announced counter packets 0 bytes 0 drop comment "` + announcementComment + `"`,
			`arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp operation request @nh,136,8 . @nh,216,8 @equal_bytes @nh,128,8 . @nh,208,8 @equal_bytes @nh,120,8 . @nh,200,8 @equal_bytes @nh,112,8 . @nh,192,8 @equal_bytes counter packets 0 bytes 0 accept comment "` + garpComment + `"`,
			`arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp operation request oifname @router_ports arp daddr ip . arp daddr ip != @announced counter packets 0 bytes 0 drop comment "` + requestComment + `"`,
		} {
			if !strings.Contains(out, want) {
				t.Errorf("nft list table lacks %q", want)
			}
		}
	})
	t.Run("thousands of addresses: set rebuilt bigger once, then changed in place", func(t *testing.T) {
		many := addrRange("10.20.0.1", 5000)
		if err := SyncAnnouncementFilter(ns, many, labRouterPorts); err != nil {
			t.Fatal(err)
		}
		mustAnnouncementAddrs(t, ns, many...)
		mustAnnouncementPorts(t, ns, labRouterPorts...)
		grown := announcementTableHandle(t, ns)
		if grown == table {
			t.Error("table not rebuilt: 5000 addresses fit the set made for 3?")
		}
		gen := nftGeneration(t, ns)
		start := time.Now()
		if err := SyncAnnouncementFilter(ns, many, labRouterPorts); err != nil {
			t.Fatal(err)
		}
		t.Logf("sync of %d addresses, unchanged: %v", len(many), time.Since(start))
		mustEqual(t, "nftables generation", nftGeneration(t, ns), gen)
		if err := SyncAnnouncementFilter(ns, labRouterAddrs, labRouterPorts); err != nil {
			t.Fatal(err)
		}
		mustAnnouncementAddrs(t, ns, labRouterAddrs...)
		mustEqual(t, "table handle after shrinking the set", announcementTableHandle(t, ns), grown)
	})
	t.Run("thousands of ports: set rebuilt bigger once, then changed in place", func(t *testing.T) {
		before := announcementTableHandle(t, ns)
		many := portRange("tap", 5000)
		if err := SyncAnnouncementFilter(ns, labRouterAddrs, many); err != nil {
			t.Fatal(err)
		}
		mustAnnouncementPorts(t, ns, many...)
		mustAnnouncementAddrs(t, ns, labRouterAddrs...)
		grown := announcementTableHandle(t, ns)
		if grown == before {
			t.Error("table not rebuilt: 5000 ports fit the set made for 3?")
		}
		gen := nftGeneration(t, ns)
		start := time.Now()
		if err := SyncAnnouncementFilter(ns, labRouterAddrs, many); err != nil {
			t.Fatal(err)
		}
		t.Logf("sync of %d ports, unchanged: %v", len(many), time.Since(start))
		mustEqual(t, "nftables generation", nftGeneration(t, ns), gen)
		// 4999 deletions: three batches of at most 2048.
		if err := SyncAnnouncementFilter(ns, labRouterAddrs, many[:1]); err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "nftables generation", nftGeneration(t, ns), gen+3)
		mustAnnouncementPorts(t, ns, many[:1]...)
		mustEqual(t, "table handle after shrinking the set", announcementTableHandle(t, ns), grown)
	})
	t.Run("a tampered table is rebuilt", func(t *testing.T) {
		requireTool(t, "nft", "nftables")
		ipCmd(t, ns, "nft", "flush", "chain", "bridge", AnnouncementTable, announcementChain)
		if err := SyncAnnouncementFilter(ns, labRouterAddrs, labRouterPorts); err != nil {
			t.Fatal(err)
		}
		ruleHandles(t, ns) // the three rules again
		mustAnnouncementAddrs(t, ns, labRouterAddrs...)
		mustAnnouncementPorts(t, ns, labRouterPorts...)
		gen := nftGeneration(t, ns)
		if err := SyncAnnouncementFilter(ns, labRouterAddrs, labRouterPorts); err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "nftables generation after repair and sync", nftGeneration(t, ns), gen)
	})
	t.Run("the table of the previous version (one rule, one set) is replaced", func(t *testing.T) {
		if err := RemoveAnnouncementFilter(ns); err != nil {
			t.Fatal(err)
		}
		// As the previous version built it: the set announced and rule 1.
		c, done, err := nftConn(ns)
		if err != nil {
			t.Fatal(err)
		}
		defer done()
		c.AddTable(announcementTableRef)
		set := announcementSetRef(announcementSetSize(len(labRouterAddrs)))
		keys := announcementKeys(labRouterAddrs)
		if err := c.AddSet(set, elements(sortedKeys(keys))); err != nil {
			t.Fatal(err)
		}
		policy := nftables.ChainPolicyAccept
		ch := c.AddChain(&nftables.Chain{
			Name: announcementChain, Table: announcementTableRef, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityRef(announcementPriority), Policy: &policy,
		})
		c.AddRule(&nftables.Rule{
			Table: announcementTableRef, Chain: ch, Exprs: announcementRule(set),
			UserData: userdata.AppendString(nil, userdata.TypeComment, announcementComment),
		})
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		old := announcementTableHandle(t, ns)
		mustAnnouncementAddrs(t, ns, labRouterAddrs...)
		mustAnnouncementPorts(t, ns)
		if err := SyncAnnouncementFilter(ns, labRouterAddrs, labRouterPorts); err != nil {
			t.Fatal(err)
		}
		if announcementTableHandle(t, ns) == old {
			t.Error("table of the previous version kept")
		}
		ruleHandles(t, ns) // the three rules
		mustAnnouncementPorts(t, ns, labRouterPorts...)
		gen := nftGeneration(t, ns)
		if err := SyncAnnouncementFilter(ns, labRouterAddrs, labRouterPorts); err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "nftables generation after replacing and sync", nftGeneration(t, ns), gen)
	})
	t.Run("no IPv4 address removes the table", func(t *testing.T) {
		if err := SyncAnnouncementFilter(ns, addrs("2001:db8::1"), labRouterPorts); err != nil {
			t.Fatal(err)
		}
		mustAnnouncementAddrs(t, ns)
		mustAnnouncementPorts(t, ns)
		c, done, err := nftConn(ns)
		if err != nil {
			t.Fatal(err)
		}
		defer done()
		if exists, err := announcementTableExists(c); err != nil || exists {
			t.Fatalf("table exists = %v, %v", exists, err)
		}
		gen := nftGeneration(t, ns)
		if err := SyncAnnouncementFilter(ns, nil, labRouterPorts); err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "nftables generation", nftGeneration(t, ns), gen)
	})
	t.Run("RemoveAnnouncementFilter twice", func(t *testing.T) {
		if err := SyncAnnouncementFilter(ns, labRouterAddrs, labRouterPorts); err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			gen := nftGeneration(t, ns)
			if err := RemoveAnnouncementFilter(ns); err != nil {
				t.Fatalf("RemoveAnnouncementFilter #%d: %v", i+1, err)
			}
			if i == 1 {
				mustEqual(t, "nftables generation", nftGeneration(t, ns), gen)
			}
		}
		mustAnnouncementAddrs(t, ns)
		mustAnnouncementPorts(t, ns)
	})
}

// The kernel grows and shrinks a resizable hash set in the background after
// large changes, and a dump taken meanwhile misses elements: the set must be
// one that is never resized, so that what is read back right after a change
// is exact.
func TestAnnouncementFilterReadsLargeChangesBackExactly(t *testing.T) {
	ns := newNS(t)
	for round := range 10 {
		for i, want := range [][]netip.Addr{addrRange("10.20.0.1", 4000), addrRange("10.30.0.1", 4000), addrRange("10.30.0.1", 10)} {
			wantPorts := [][]string{portRange("tapx", 4000), portRange("tapy", 4000), portRange("tapy", 10)}[i]
			if err := SyncAnnouncementFilter(ns, want, wantPorts); err != nil {
				t.Fatal(err)
			}
			got, err := AnnouncementFilterAddrs(ns)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("round %d: read back %d addresses right after syncing %d", round, len(got), len(want))
			}
			gotPorts, err := AnnouncementFilterPorts(ns)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(gotPorts, wantPorts) {
				t.Fatalf("round %d: read back %d ports right after syncing %d", round, len(gotPorts), len(wantPorts))
			}
		}
	}
}

// portRange returns n interface names: prefix and a 5-digit number, sorted.
func portRange(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%05d", prefix, i)
	}
	return out
}

// addrRange returns n consecutive addresses from start.
func addrRange(start string, n int) []netip.Addr {
	out := make([]netip.Addr, 0, n)
	for a := netip.MustParseAddr(start); len(out) < n; a = a.Next() {
		out = append(out, a)
	}
	return out
}
