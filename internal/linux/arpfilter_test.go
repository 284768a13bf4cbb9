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
	mnl "github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// announceLab is a network node's external bridge with three HA routers and
// the upstream, as the agent wires them:
//
//	router a 10.9.0.1 ─ tapa ┐
//	router b 10.9.0.2 ─ tapb ├ br0 ─ up0 ─ upstream 10.9.0.254
//	router c 10.9.0.3 ─ tapc ┘
//
// with the announcement filter installed for the routers' addresses.
type announceLab struct {
	node, upstream string
	a, b, c        string
	mac            map[string]net.HardwareAddr // namespace → its eth0's MAC
}

var labRouterAddrs = addrs("10.9.0.1", "10.9.0.2", "10.9.0.3")

func newAnnounceLab(t *testing.T) *announceLab {
	t.Helper()
	l := &announceLab{node: newNS(t), upstream: newNS(t), a: newNS(t), b: newNS(t), c: newNS(t), mac: map[string]net.HardwareAddr{}}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(EnsureBridge(l.node, "br0", 0))
	ports := []struct{ port, ns, mac, addr string }{
		{"tapa", l.a, "fa:16:3e:00:09:01", "10.9.0.1/24"},
		{"tapb", l.b, "fa:16:3e:00:09:02", "10.9.0.2/24"},
		{"tapc", l.c, "fa:16:3e:00:09:03", "10.9.0.3/24"},
		{"up0", l.upstream, "fa:16:3e:00:09:fe", "10.9.0.254/24"},
	}
	for _, p := range ports {
		mac, _ := net.ParseMAC(p.mac)
		l.mac[p.ns] = mac
		must(EnsureVeth(l.node, Veth{NodeSide: p.port, Bridge: "br0", NS: p.ns, NSSide: "eth0", MAC: mac}))
		must(SyncAddresses(p.ns, "eth0", prefixes(p.addr)))
	}
	must(SyncAnnouncementFilter(l.node, labRouterAddrs))
	l.waitForwarding(t)
	return l
}

// waitForwarding waits until the bridge forwards between all its ports (a
// port starts forwarding once the kernel has seen its carrier, which it
// reports asynchronously): until a broadcast from router a reaches b, c and
// the upstream, and one from the upstream reaches a.
func (l *announceLab) waitForwarding(t *testing.T) {
	t.Helper()
	for i, from := range []string{l.a, l.upstream} {
		probe := l.announcement(from, 1, fmt.Sprintf("10.9.1.%d", i+1)) // not in the set
		pending := map[string]*arpSniffer{}
		for _, ns := range []string{l.a, l.b, l.c, l.upstream} {
			if ns != from {
				pending[ns] = sniffARP(t, ns, "eth0")
			}
		}
		deadline := time.Now().Add(eventTimeout)
		for len(pending) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("bridge does not forward %v to %d ports", probe, len(pending))
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

// announcementRuleState returns the handle and packet counter of the drop
// rule of AnnouncementTable in ns.
func announcementRuleState(t *testing.T, ns string) (handle, packets uint64) {
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
	if len(rules) != 1 {
		t.Fatalf("%s has %d rules, want 1", AnnouncementTable, len(rules))
	}
	for _, e := range rules[0].Exprs {
		if ctr, ok := e.(*expr.Counter); ok {
			return rules[0].Handle, ctr.Packets
		}
	}
	t.Fatal("drop rule has no counter")
	return 0, 0
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
	tests := []struct {
		name    string
		from    string
		pkt     arpPacket
		reaches []string // routers (other than from) that get it
		dropped uint64   // copies the rule drops
	}{
		{
			name:    "router's announcement of its address reaches the uplink only",
			from:    l.a,
			pkt:     l.announcement(l.a, 1, "10.9.0.1"),
			dropped: 2,
		},
		{
			name:    "announcement sent as an ARP reply is dropped too",
			from:    l.b,
			pkt:     l.announcement(l.b, 2, "10.9.0.2"),
			dropped: 2,
		},
		{
			name:    "announcement of an address not in the set reaches everyone",
			from:    l.a,
			pkt:     l.announcement(l.a, 1, "10.9.0.77"),
			reaches: []string{l.b, l.c},
		},
		{
			name:    "ARP request between routers (sender ≠ target) reaches everyone",
			from:    l.a,
			pkt:     arpPacket{src: l.mac[l.a], op: 1, sender: netip.MustParseAddr("10.9.0.1"), target: netip.MustParseAddr("10.9.0.2")},
			reaches: []string{l.b, l.c},
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sniffers := map[string]*arpSniffer{}
			for _, ns := range []string{l.a, l.b, l.c, l.upstream} {
				if ns != tt.from {
					sniffers[ns] = sniffARP(t, ns, "eth0")
				}
			}
			_, before := announcementRuleState(t, l.node)
			sendARP(t, tt.from, "eth0", tt.pkt)

			// The bridge hands a frame to all its ports in one go: once the
			// upstream has it, every copy has been forwarded or dropped.
			if _, ok := sniffers[l.upstream].waitFor(t, tt.pkt, eventTimeout); !ok {
				t.Fatalf("upstream never got %v", tt.pkt)
			}
			if _, after := announcementRuleState(t, l.node); after-before != tt.dropped {
				t.Errorf("packets dropped = %d, want %d", after-before, tt.dropped)
			}

			// A router that must not get the frame must get a later one
			// that is not filtered (so that its sniffer is known to work),
			// and not the first one before it.
			control := l.announcement(tt.from, 1, fmt.Sprintf("10.9.2.%d", i+1))
			sent := false
			for _, ns := range []string{l.a, l.b, l.c} {
				s := sniffers[ns]
				if s == nil {
					continue
				}
				if slices.Contains(tt.reaches, ns) {
					if _, ok := s.waitFor(t, tt.pkt, eventTimeout); !ok {
						t.Errorf("router %s never got %v", ns, tt.pkt)
					}
					continue
				}
				if !sent {
					sendARP(t, tt.from, "eth0", control)
					sent = true
				}
				seen, ok := s.waitFor(t, control, eventTimeout)
				if !ok {
					t.Fatalf("router %s never got the control frame %v", ns, control)
				}
				if slices.ContainsFunc(seen, tt.pkt.equal) {
					t.Errorf("router %s got %v", ns, tt.pkt)
				}
			}
		})
	}
	if _, err := exec.LookPath("nft"); err == nil {
		t.Logf("nft list table bridge %s:\n%s", AnnouncementTable, ipCmd(t, l.node, "nft", "list", "table", "bridge", AnnouncementTable))
	}
}

func TestAnnouncementFilterKeepsOrdinaryARP(t *testing.T) {
	l := newAnnounceLab(t)
	_, before := announcementRuleState(t, l.node)

	// The routers have no neighbour entries yet: each exchange starts with
	// an ARP request (sender ≠ target, broadcast to all tap ports) and its
	// unicast reply toward tapa.
	fromA := listenUDP(t, l.a, 0)
	t.Run("router reaches a sibling router", func(t *testing.T) {
		got := exchange(t, fromA, "10.9.0.2:7101", listenUDP(t, l.b, 7101), "a to b")
		mustEqual(t, "source seen by b", got.String(), "10.9.0.1")
	})
	t.Run("router reaches the upstream", func(t *testing.T) {
		got := exchange(t, fromA, "10.9.0.254:7102", listenUDP(t, l.upstream, 7102), "a to upstream")
		mustEqual(t, "source seen by the upstream", got.String(), "10.9.0.1")
	})
	t.Run("upstream's announcement reaches every router", func(t *testing.T) {
		sniffers := map[string]*arpSniffer{}
		for _, ns := range []string{l.a, l.b, l.c} {
			sniffers[ns] = sniffARP(t, ns, "eth0")
		}
		garp := l.announcement(l.upstream, 1, "10.9.0.254")
		sendARP(t, l.upstream, "eth0", garp)
		for ns, s := range sniffers {
			if _, ok := s.waitFor(t, garp, eventTimeout); !ok {
				t.Errorf("router %s never got %v", ns, garp)
			}
		}
	})
	_, after := announcementRuleState(t, l.node)
	mustEqual(t, "packets dropped", after-before, 0)
}

func TestSyncAnnouncementFilterIsIdempotentAndUpdatesInPlace(t *testing.T) {
	ns := newNS(t)
	// Unsorted, a duplicate, IPv6 (ignored) and IPv4-mapped IPv6.
	if err := SyncAnnouncementFilter(ns, addrs("10.9.0.3", "10.9.0.1", "2001:db8::1", "10.9.0.1", "::ffff:10.9.0.2")); err != nil {
		t.Fatal(err)
	}
	mustAnnouncementAddrs(t, ns, labRouterAddrs...)
	table := announcementTableHandle(t, ns)
	rule, _ := announcementRuleState(t, ns)
	sameTableAndRule := func(t *testing.T) {
		t.Helper()
		mustEqual(t, "table handle", announcementTableHandle(t, ns), table)
		h, _ := announcementRuleState(t, ns)
		mustEqual(t, "rule handle", h, rule)
	}

	t.Run("same addresses again write nothing", func(t *testing.T) {
		gen := nftGeneration(t, ns)
		if err := SyncAnnouncementFilter(ns, addrs("10.9.0.2", "10.9.0.3", "10.9.0.1")); err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "nftables generation", nftGeneration(t, ns), gen)
		sameTableAndRule(t)
	})
	t.Run("other addresses change the set in place, in one transaction", func(t *testing.T) {
		gen := nftGeneration(t, ns)
		want := addrs("10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5")
		if err := SyncAnnouncementFilter(ns, want); err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "nftables generation", nftGeneration(t, ns), gen+1)
		mustAnnouncementAddrs(t, ns, want...)
		sameTableAndRule(t)
	})
	t.Run("nft reads the table back as the intended rule", func(t *testing.T) {
		requireTool(t, "nft", "nftables")
		out := ipCmd(t, ns, "nft", "list", "table", "bridge", AnnouncementTable)
		t.Logf("nft list table bridge %s:\n%s", AnnouncementTable, out)
		for _, want := range []string{
			"type ipv4_addr . ipv4_addr",
			"10.9.0.2 . 10.9.0.2",
			"type filter hook forward priority filter; policy accept;",
			`oifname "tap*" arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp saddr ip . arp daddr ip @announced counter packets 0 bytes 0 drop comment "` + announcementComment + `"`,
		} {
			if !strings.Contains(out, want) {
				t.Errorf("nft list table lacks %q", want)
			}
		}
	})
	t.Run("thousands of addresses: set rebuilt bigger once, then changed in place", func(t *testing.T) {
		many := addrRange("10.20.0.1", 5000)
		if err := SyncAnnouncementFilter(ns, many); err != nil {
			t.Fatal(err)
		}
		mustAnnouncementAddrs(t, ns, many...)
		grown := announcementTableHandle(t, ns)
		if grown == table {
			t.Error("table not rebuilt: 5000 addresses fit the set made for 3?")
		}
		gen := nftGeneration(t, ns)
		start := time.Now()
		if err := SyncAnnouncementFilter(ns, many); err != nil {
			t.Fatal(err)
		}
		t.Logf("sync of %d addresses, unchanged: %v", len(many), time.Since(start))
		mustEqual(t, "nftables generation", nftGeneration(t, ns), gen)
		if err := SyncAnnouncementFilter(ns, labRouterAddrs); err != nil {
			t.Fatal(err)
		}
		mustAnnouncementAddrs(t, ns, labRouterAddrs...)
		mustEqual(t, "table handle after shrinking the set", announcementTableHandle(t, ns), grown)
	})
	t.Run("a tampered table is rebuilt", func(t *testing.T) {
		requireTool(t, "nft", "nftables")
		ipCmd(t, ns, "nft", "flush", "chain", "bridge", AnnouncementTable, announcementChain)
		if err := SyncAnnouncementFilter(ns, labRouterAddrs); err != nil {
			t.Fatal(err)
		}
		announcementRuleState(t, ns) // one rule again
		mustAnnouncementAddrs(t, ns, labRouterAddrs...)
		gen := nftGeneration(t, ns)
		if err := SyncAnnouncementFilter(ns, labRouterAddrs); err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "nftables generation after repair and sync", nftGeneration(t, ns), gen)
	})
	t.Run("no IPv4 address removes the table", func(t *testing.T) {
		if err := SyncAnnouncementFilter(ns, addrs("2001:db8::1")); err != nil {
			t.Fatal(err)
		}
		mustAnnouncementAddrs(t, ns)
		c, done, err := nftConn(ns)
		if err != nil {
			t.Fatal(err)
		}
		defer done()
		if exists, err := announcementTableExists(c); err != nil || exists {
			t.Fatalf("table exists = %v, %v", exists, err)
		}
		gen := nftGeneration(t, ns)
		if err := SyncAnnouncementFilter(ns, nil); err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "nftables generation", nftGeneration(t, ns), gen)
	})
	t.Run("RemoveAnnouncementFilter twice", func(t *testing.T) {
		if err := SyncAnnouncementFilter(ns, labRouterAddrs); err != nil {
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
	})
}

// The kernel grows and shrinks a resizable hash set in the background after
// large changes, and a dump taken meanwhile misses elements: the set must be
// one that is never resized, so that what is read back right after a change
// is exact.
func TestAnnouncementFilterReadsLargeChangesBackExactly(t *testing.T) {
	ns := newNS(t)
	for round := range 10 {
		for _, want := range [][]netip.Addr{addrRange("10.20.0.1", 4000), addrRange("10.30.0.1", 4000), addrRange("10.30.0.1", 10)} {
			if err := SyncAnnouncementFilter(ns, want); err != nil {
				t.Fatal(err)
			}
			got, err := AnnouncementFilterAddrs(ns)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("round %d: read back %d addresses right after syncing %d", round, len(got), len(want))
			}
		}
	}
}

// addrRange returns n consecutive addresses from start.
func addrRange(start string, n int) []netip.Addr {
	out := make([]netip.Addr, 0, n)
	for a := netip.MustParseAddr(start); len(out) < n; a = a.Next() {
		out = append(out, a)
	}
	return out
}
