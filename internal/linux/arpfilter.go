package linux

import (
	"bytes"
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// AnnouncementTable is the nftables table (family bridge, in the node
// namespace) that keeps from router ports the ARP they have no use for: the
// routers' gratuitous ARP, and ARP requests for addresses that are not the
// routers'.
//
// Why: hundreds of HA routers share the external network's bridge on a
// network node, each through its own tap port. When a node fails, the
// survivor's routers all become VRRP master at once and each announces its
// addresses with gratuitous ARP. The bridge floods every announcement to
// every other tap port: N routers make N² deliveries (250,000 at N = 500),
// which costs about a second of CPU and overflows the kernel's input backlog
// (failover of 500 routers: 1.8 s with them, 0.73 s without). The sibling
// routers have no use for these copies: a Neutron router port keeps its MAC
// on every node, so the announced IP→MAC mapping never changes. The
// announcements are for the switches beyond the uplink (MAC learning), which
// still get them; the node's own bridge learns the port from the frame as it
// enters.
//
// Right after, each new master sends its first packet out of its gateway
// and ARPs for the upstream's address: an ordinary broadcast request, which
// the bridge floods to every other router port too, N² deliveries again (the
// input backlog overflowed by 37,050 packets in one run, requests were lost
// and retried after a second: routers answered 3.9 s after the fault instead
// of 0.8 s). A router port needs only the requests for its router's
// addresses (routers answer for their own addresses only; no proxy ARP), so
// requests for any other address are dropped toward router ports. Which
// ports are routers' is a set of names, not "tap*": on a node that is also a
// compute node, instances' ports are tap… as well, and an instance must get
// every request (it may answer for any address its port allows).
//
// The table (family bridge: it sees every bridge of the namespace):
//
//	set announced: type ipv4_addr . ipv4_addr, size N (fixed), the element A . A for each router address A
//	set router_ports: type ifname, size N (fixed), the node-side tap of each HA router's qg- and qr- port
//	set equal_bytes: type nf_proto . nf_proto, constant, the 256 elements x . x
//	chain forward (filter, hook forward, priority filter = -200, policy accept):
//	  (1) ether type arp oifname "tap*" arp htype 1 arp ptype ip arp hlen 6 arp plen 4
//	        arp saddr ip . arp daddr ip @announced counter drop
//	  (2) ether type arp arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp operation request
//	        (each byte of arp saddr ip . the same byte of arp daddr ip @equal_bytes) counter accept
//	  (3) ether type arp arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp operation request
//	        oifname @router_ports arp daddr ip . arp daddr ip != @announced counter drop
//
// Rule 1 drops the routers' announcements toward every tap port. A
// gratuitous ARP has sender IP = target IP. nftables cannot compare two
// fields of a packet, hence the pairs A . A: an ordinary ARP request (sender
// ≠ target), or an announcement of an address not in the set (an instance's,
// the upstream gateway's), never matches. Requests and replies are both
// matched (either may announce).
//
// Rule 3 drops a request toward a router port unless its target is one of
// the node's HA router addresses (any router's, which is simpler than
// pairing ports with addresses, and lets a router answer for the address
// of another of its ports, as Linux does). The target is loaded twice to
// look it up in announced, so that no other copy of the addresses is kept.
//
// Rule 2 exempts the other gratuitous requests from rule 3: an instance's or
// the upstream's announcement (keepalived moving a VIP between instances,
// an upstream router's failover) must reach the router ports, where it
// updates the routers' neighbour entries for that address; without it a
// router would keep sending to the old MAC until its entry expires (tens of
// seconds). Sender = target is tested a byte at a time, each byte pair
// looked up in equal_bytes (nftables cannot compare two fields): the last
// byte first, which already tells most ordinary requests apart.
//
// Replies are never dropped by rule 3: they are unicast (to the port the
// requester is behind), or announcements. The bridge runs its forward hook
// once per output port, so the uplink (a physical interface or
// vxlan-<VNI>), instances' ports, the HA network's ports and legacy
// routers' ports get every request; so does the bridge itself (local
// delivery is not forwarding).
const AnnouncementTable = "l3ha-arp"

const (
	announcementChain = "forward"
	announcementSet   = "announced"
	routerPortsSet    = "router_ports"
	equalBytesSet     = "equal_bytes"
	// The comments identify the rules: change them whenever a rule
	// changes, so that SyncAnnouncementFilter replaces installed tables (a
	// table is intact only with exactly these rules, in this order).
	announcementComment = "drop announcements of @announced toward tap ports"
	garpComment         = "exempt gratuitous ARP requests (sender ip = target ip) from rule 3"
	requestComment      = "drop ARP requests toward @router_ports unless for @announced"
	equalBytesComment   = "x . x for every byte x: rule 2 tests arp saddr ip = arp daddr ip a byte at a time"
	// announcementPriority is the bridge family's "filter" priority
	// (NF_BR_PRI_FILTER_BRIDGED).
	announcementPriority = -200
	// maxElemsPerBatch bounds the set elements of one netlink batch (at
	// most 28 bytes each: a 16-byte interface name), well below the default
	// socket send buffer (208 KiB): a larger change is sent in several
	// batches. Each element is independent, so no packet sees anything but
	// the old or the new verdict for its address (or port).
	maxElemsPerBatch = 2048
)

var announcementComments = []string{announcementComment, garpComment, requestComment}

// ARP header offsets (network header) and the fixed part for Ethernet/IPv4:
// htype 1, ptype 0x0800, hlen 6, plen 4.
const (
	offARPOp       = 6
	offARPSenderIP = 14
	offARPTargetIP = 24
)

var (
	etherTypeARP = []byte{0x08, 0x06}
	arpEthIPv4   = []byte{0x00, 0x01, 0x08, 0x00, 0x06, 0x04}
	arpRequest   = []byte{0x00, 0x01}
)

var (
	announcementTableRef = &nftables.Table{Name: AnnouncementTable, Family: nftables.TableFamilyBridge}
	announcementKeyType  = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeIPAddr)
	// equalBytesKeyType: two one-byte fields, each padded to 4 bytes as
	// every field of a concatenation (the payload expression zeroes the
	// padding). nf_proto is merely a one-byte type that nft prints as a
	// number (but for 2 and 10: ipv4, ipv6).
	equalBytesKeyType = nftables.MustConcatSetType(nftables.TypeNFProto, nftables.TypeNFProto)
)

// announcementSetRef names the set of addresses; size is its capacity
// (needed only to create it).
func announcementSetRef(size uint32) *nftables.Set {
	return &nftables.Set{
		Table:         announcementTableRef,
		Name:          announcementSet,
		KeyType:       announcementKeyType,
		Concatenation: true,
		Size:          size,
	}
}

// routerPortsSetRef names the set of router ports; size is its capacity
// (needed only to create it).
func routerPortsSetRef(size uint32) *nftables.Set {
	return &nftables.Set{
		Table:   announcementTableRef,
		Name:    routerPortsSet,
		KeyType: nftables.TypeIFName,
		// nft prints the names only with this: its ifname type is in
		// host byte order

		KeyByteOrder: binaryutil.NativeEndian,
		Size:         size,
	}
}

// equalBytesSetRef names the set of byte pairs x . x; it never changes.
func equalBytesSetRef() *nftables.Set {
	return &nftables.Set{
		Table:         announcementTableRef,
		Name:          equalBytesSet,
		KeyType:       equalBytesKeyType,
		Concatenation: true,
		Constant:      true,
		Size:          256,
		Comment:       equalBytesComment,
	}
}

// equalBytesKey is the element x . x of equal_bytes.
func equalBytesKey(x byte) []byte { return []byte{x, 0, 0, 0, x, 0, 0, 0} }

func equalBytesElements() []nftables.SetElement {
	out := make([]nftables.SetElement, 256)
	for i := range out {
		out[i] = nftables.SetElement{Key: equalBytesKey(byte(i))}
	}
	return out
}

// minAnnouncementSetSize is the least capacity of the sets announced and
// router_ports.
//
// The sets have a fixed capacity because a set with a size is a fixed-size
// hash table in the kernel, whereas one without is a resizable one: a
// resizable table grows (and shrinks) in the background after elements are
// added (or deleted), and a dump of its elements taken meanwhile misses some
// and repeats others, so that reading the set back right after a large
// change would be wrong. A capacity of 4096 costs 64 KiB of buckets (each).
const minAnnouncementSetSize = 4096

// announcementSetSize is the capacity of a set made for n elements: at least
// twice n, so that it need not be rebuilt as n grows a little.
func announcementSetSize(n int) uint32 {
	size := uint32(minAnnouncementSetSize)
	for int(size) < 2*n {
		size *= 2
	}
	return size
}

// arpEthIPv4Match: ether type arp, and an Ethernet/IPv4 ARP header, so that
// the address offsets are right.
func arpEthIPv4Match() []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 0, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: arpEthIPv4[:4]},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 4, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: arpEthIPv4[4:]},
	}
}

// etherTypeARPMatch: ether type arp (cheapest test first: most frames are
// not ARP).
func etherTypeARPMatch() []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: etherTypeARP},
	}
}

// arpRequestMatch: arp operation request.
func arpRequestMatch() []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offARPOp, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: arpRequest},
	}
}

// announcementRule is rule 1's expressions (see AnnouncementTable); set is
// the set of addresses (in the batch that creates both, its ID links them).
func announcementRule(set *nftables.Set) []expr.Any {
	return concat(
		etherTypeARPMatch(),
		[]expr.Any{
			// oifname "tap*": a prefix compare
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(PrefixTap)},
		},
		arpEthIPv4Match(),
		[]expr.Any{
			// arp saddr ip . arp daddr ip @announced: registers 1 and 9
			// (NFT_REG32_00, NFT_REG32_01) hold the 8-byte key.
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offARPSenderIP, Len: 4},
			&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseNetworkHeader, Offset: offARPTargetIP, Len: 4},
			&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
		},
		counter(),
		[]expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}},
	)
}

// garpRule is rule 2's expressions: a request whose sender and target
// addresses agree in every byte is accepted (this chain ends for it, so
// that rule 3 does not drop it).
func garpRule(equal *nftables.Set) []expr.Any {
	e := concat(etherTypeARPMatch(), arpEthIPv4Match(), arpRequestMatch())
	for _, i := range []uint32{3, 2, 1, 0} { // the last byte first: it differs most often
		// Registers 1 and 9 (NFT_REG32_00, NFT_REG32_01): one byte each,
		// zero-padded to 4 by the payload expression.
		e = append(e,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offARPSenderIP + i, Len: 1},
			&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseNetworkHeader, Offset: offARPTargetIP + i, Len: 1},
			&expr.Lookup{SourceRegister: 1, SetName: equal.Name, SetID: equal.ID},
		)
	}
	return concat(e, counter(), []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}})
}

// requestRule is rule 3's expressions: a request toward a router port for
// an address that is not a router's is dropped.
func requestRule(ports, set *nftables.Set) []expr.Any {
	return concat(
		etherTypeARPMatch(),
		arpEthIPv4Match(),
		arpRequestMatch(),
		[]expr.Any{
			// oifname @router_ports: the 16-byte name, NUL-padded
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Lookup{SourceRegister: 1, SetName: ports.Name, SetID: ports.ID},
			// arp daddr ip . arp daddr ip != @announced
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offARPTargetIP, Len: 4},
			&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseNetworkHeader, Offset: offARPTargetIP, Len: 4},
			&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID, Invert: true},
		},
		counter(),
		[]expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}},
	)
}

type announcementKey [8]byte

func keyOf(a netip.Addr) announcementKey {
	var k announcementKey
	b := a.As4()
	copy(k[:4], b[:])
	copy(k[4:], b[:])
	return k
}

// announcementKeys is the set's elements for addrs: IPv4 ones (IPv4-mapped
// IPv6 included), each once; others are ignored.
func announcementKeys(addrs []netip.Addr) map[announcementKey]bool {
	keys := map[announcementKey]bool{}
	for _, a := range addrs {
		if a = a.Unmap(); a.Is4() {
			keys[keyOf(a)] = true
		}
	}
	return keys
}

// routerPortNames is the set of names ports, each once; an empty name or
// one that is not a valid interface name is an error.
func routerPortNames(ports []string) (map[string]bool, error) {
	names := map[string]bool{}
	for _, p := range ports {
		if p == "" || len(p) > MaxDeviceName || strings.ContainsAny(p, "\x00/") {
			return nil, fmt.Errorf("router port %q is not an interface name", p)
		}
		names[p] = true
	}
	return names, nil
}

func sortedSet[K cmp.Ordered](m map[K]bool) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func sortedKeys(m map[announcementKey]bool) []announcementKey {
	out := make([]announcementKey, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b announcementKey) int { return bytes.Compare(a[:], b[:]) })
	return out
}

func elements(keys []announcementKey) []nftables.SetElement {
	out := make([]nftables.SetElement, len(keys))
	for i, k := range keys {
		out[i] = nftables.SetElement{Key: slices.Clone(k[:])}
	}
	return out
}

func portElements(names []string) []nftables.SetElement {
	out := make([]nftables.SetElement, len(names))
	for i, n := range names {
		out[i] = nftables.SetElement{Key: ifnameBytes(n)}
	}
	return out
}

// elemChange is elements to add to, or delete from, one set.
type elemChange struct {
	set   *nftables.Set
	del   bool
	elems []nftables.SetElement
}

// writeChanges queues changes on c, in order, and commits them in batches of
// at most maxElemsPerBatch elements; the first batch also commits what c
// already holds (queued: how many set elements that adds; 0 only if c holds
// nothing). Nothing to commit writes nothing. what names the operation in
// errors.
func writeChanges(c *nftables.Conn, ns, what string, queued int, changes ...elemChange) error {
	n, pending := queued, queued > 0
	for _, ch := range changes {
		for elems := ch.elems; len(elems) > 0; {
			if n >= maxElemsPerBatch {
				if err := c.Flush(); err != nil {
					return fmt.Errorf("%s announcement filter in %s: %w", what, nsLabel(ns), err)
				}
				n = 0
			}
			k := min(len(elems), maxElemsPerBatch-n)
			var err error
			if ch.del {
				err = c.SetDeleteElements(ch.set, elems[:k])
			} else {
				err = c.SetAddElements(ch.set, elems[:k])
			}
			if err != nil {
				return fmt.Errorf("%s announcement filter in %s: set %s: %w", what, nsLabel(ns), ch.set.Name, err)
			}
			elems = elems[k:]
			n += k
			pending = true
		}
	}
	if !pending {
		return nil
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("%s announcement filter in %s: %w", what, nsLabel(ns), err)
	}
	return nil
}

// SyncAnnouncementFilter makes namespace ns (the node namespace: NodeNS, or
// a name) keep from its router ports the ARP they have no use for (see
// AnnouncementTable): gratuitous ARP for addrs on its way to tap ports, so
// that a mass failover does not flood every router's announcements to every
// other router (N² copies that nobody needs; the uplink still gets them),
// and ARP requests on their way to routerPorts (the node-side names of the
// HA routers' qg- and qr- ports) unless they ask for one of addrs or are
// gratuitous. Only IPv4 addresses count; IPv6 ones are ignored, and with no
// IPv4 address the table is removed. A router port name that is not a valid
// interface name is an error, and nothing is changed.
//
// It is meant to be called on every reconcile: when the table already holds
// exactly addrs and routerPorts nothing is written (the check reads the
// table back: a few dumps, about 10 ms for 5000 addresses). When only the
// addresses or ports differ, the sets' elements are changed in place (one
// batch deletes the extra ones and adds the missing ones; more than 2048
// changes take several, ports removed first and ports added last, so that
// no batch has a router port whose addresses are not in the set yet), and
// the rules never go away. A missing table is created whole in one batch
// (with the first addresses, then ports, up to 2048 set elements in all;
// the rest follow at once). One that
// is not as this function builds it (a changed or deleted rule, or the
// layout of an older version, say), or whose sets are too small for addrs
// or routerPorts (their capacity is twice the elements they were made for,
// at least 4096), is replaced the same way: the old table stays in force
// until the new one is committed.
func SyncAnnouncementFilter(ns string, addrs []netip.Addr, routerPorts []string) error {
	want := announcementKeys(addrs)
	if len(want) == 0 {
		return RemoveAnnouncementFilter(ns)
	}
	ports, err := routerPortNames(routerPorts)
	if err != nil {
		return fmt.Errorf("announcement filter in %s: %w", nsLabel(ns), err)
	}
	c, done, err := nftConn(ns)
	if err != nil {
		return err
	}
	defer done()
	cur, err := announcementState(c)
	if err != nil || cur == nil || !cur.intact || int(cur.size) < len(want) || int(cur.portSize) < len(ports) {
		// Create it, or replace what is there (or what could not be
		// read): the old table stays in force until the batch commits.
		replace := err != nil || cur != nil
		if berr := buildAnnouncementTable(c, ns, replace, sortedKeys(want), sortedSet(ports)); berr != nil {
			if err != nil {
				return fmt.Errorf("%w (after reading it failed: %v)", berr, err)
			}
			return berr
		}
		return nil
	}
	var addKeys, delKeys []announcementKey
	for _, k := range sortedKeys(want) {
		if !cur.keys[k] {
			addKeys = append(addKeys, k)
		}
	}
	for _, k := range sortedKeys(cur.keys) {
		if !want[k] {
			delKeys = append(delKeys, k)
		}
	}
	var addPorts, delPorts []string
	for _, p := range sortedSet(ports) {
		if !cur.ports[p] {
			addPorts = append(addPorts, p)
		}
	}
	for _, p := range sortedSet(cur.ports) {
		if !ports[p] {
			delPorts = append(delPorts, p)
		}
	}
	// Deletions before additions in each set: a fixed-size set counts the
	// elements a batch deletes as free for the elements it adds.
	return writeChanges(c, ns, "update", 0,
		elemChange{set: routerPortsSetRef(0), del: true, elems: portElements(delPorts)},
		elemChange{set: announcementSetRef(0), del: true, elems: elements(delKeys)},
		elemChange{set: announcementSetRef(0), elems: elements(addKeys)},
		elemChange{set: routerPortsSetRef(0), elems: portElements(addPorts)},
	)
}

// buildAnnouncementTable creates AnnouncementTable with keys and ports,
// replacing the existing one if replace. The first batch holds the whole
// table and up to maxElemsPerBatch elements; further batches add the rest
// (the ports after all the addresses).
func buildAnnouncementTable(c *nftables.Conn, ns string, replace bool, keys []announcementKey, ports []string) error {
	t := announcementTableRef
	if replace {
		// Only then: deleting a table makes the close of this netlink
		// socket wait for an RCU grace period.
		c.AddTable(t) // so that DelTable cannot fail on a missing table
		c.DelTable(t)
	}
	c.AddTable(t)
	set := announcementSetRef(announcementSetSize(len(keys)))
	if err := c.AddSet(set, nil); err != nil {
		return fmt.Errorf("announcement filter in %s: set %s: %w", nsLabel(ns), set.Name, err)
	}
	portSet := routerPortsSetRef(announcementSetSize(len(ports)))
	if err := c.AddSet(portSet, nil); err != nil {
		return fmt.Errorf("announcement filter in %s: set %s: %w", nsLabel(ns), portSet.Name, err)
	}
	equal := equalBytesSetRef()
	equalElems := equalBytesElements() // a constant set gets its elements when made
	if err := c.AddSet(equal, equalElems); err != nil {
		return fmt.Errorf("announcement filter in %s: set %s: %w", nsLabel(ns), equal.Name, err)
	}
	policy := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{
		Name:     announcementChain,
		Table:    t,
		Type:     nftables.ChainTypeFilter,
		Hooknum:  nftables.ChainHookForward,
		Priority: nftables.ChainPriorityRef(announcementPriority),
		Policy:   &policy,
	})
	for i, exprs := range [][]expr.Any{announcementRule(set), garpRule(equal), requestRule(portSet, set)} {
		c.AddRule(&nftables.Rule{
			Table:    t,
			Chain:    ch,
			Exprs:    exprs,
			UserData: userdata.AppendString(nil, userdata.TypeComment, announcementComments[i]),
		})
	}
	return writeChanges(c, ns, "create", len(equalElems),
		elemChange{set: set, elems: elements(keys)},
		elemChange{set: portSet, elems: portElements(ports)},
	)
}

// RemoveAnnouncementFilter deletes AnnouncementTable from ns; no table is
// not an error (and nothing is written).
func RemoveAnnouncementFilter(ns string) error {
	c, done, err := nftConn(ns)
	if err != nil {
		return err
	}
	defer done()
	exists, err := announcementTableExists(c)
	if err != nil {
		return fmt.Errorf("remove announcement filter in %s: %w", nsLabel(ns), err)
	}
	if !exists {
		return nil
	}
	c.AddTable(announcementTableRef) // in case it vanished meanwhile
	c.DelTable(announcementTableRef)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("remove announcement filter in %s: %w", nsLabel(ns), err)
	}
	return nil
}

// AnnouncementFilterAddrs returns the addresses whose announcements ns drops
// toward tap ports now (and for which it lets requests reach router ports),
// sorted; nil if there is no AnnouncementTable.
func AnnouncementFilterAddrs(ns string) ([]netip.Addr, error) {
	cur, err := readAnnouncementFilter(ns)
	if err != nil || cur == nil || !cur.hasSet {
		return nil, err
	}
	var out []netip.Addr
	for _, k := range sortedKeys(cur.keys) {
		if [4]byte(k[:4]) == [4]byte(k[4:]) {
			out = append(out, netip.AddrFrom4([4]byte(k[:4])))
		}
	}
	return out, nil
}

// AnnouncementFilterPorts returns the router ports toward which ns drops ARP
// requests for other addresses now, sorted; nil if there is no
// AnnouncementTable.
func AnnouncementFilterPorts(ns string) ([]string, error) {
	cur, err := readAnnouncementFilter(ns)
	if err != nil || cur == nil || !cur.hasPorts {
		return nil, err
	}
	return sortedSet(cur.ports), nil
}

func readAnnouncementFilter(ns string) (*announcementFilter, error) {
	c, done, err := nftConn(ns)
	if err != nil {
		return nil, err
	}
	defer done()
	cur, err := announcementState(c)
	if err != nil {
		return nil, fmt.Errorf("announcement filter in %s: %w", nsLabel(ns), err)
	}
	return cur, nil
}

// announcementFilter is AnnouncementTable as read back (nil: no table).
type announcementFilter struct {
	hasSet   bool   // the table has a set announced of the right type
	size     uint32 // its capacity
	hasPorts bool   // the table has a set router_ports of the right type
	portSize uint32 // its capacity
	intact   bool   // and it is as buildAnnouncementTable makes it
	keys     map[announcementKey]bool
	ports    map[string]bool
}

func announcementTableExists(c *nftables.Conn) (bool, error) {
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyBridge)
	if err != nil {
		return false, fmt.Errorf("list nftables tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == AnnouncementTable {
			return true, nil
		}
	}
	return false, nil
}

func sameKeyType(s *nftables.Set, t nftables.SetDatatype, concatenation bool) bool {
	return s.Concatenation == concatenation && !s.Interval && !s.IsMap &&
		s.KeyType.Name == t.Name && s.KeyType.Bytes == t.Bytes
}

// announcementState reads AnnouncementTable back; nil if there is none.
func announcementState(c *nftables.Conn) (*announcementFilter, error) {
	exists, err := announcementTableExists(c)
	if err != nil || !exists {
		return nil, err
	}
	st := &announcementFilter{keys: map[announcementKey]bool{}, ports: map[string]bool{}}
	t := announcementTableRef
	sets, err := c.GetSets(t)
	if err != nil {
		return nil, fmt.Errorf("list sets of %s: %w", AnnouncementTable, err)
	}
	hasEqual := false
	for _, s := range sets {
		switch {
		case s.Name == announcementSet && sameKeyType(s, announcementKeyType, true):
			st.hasSet, st.size = true, s.Size
		case s.Name == routerPortsSet && sameKeyType(s, nftables.TypeIFName, false):
			st.hasPorts, st.portSize = true, s.Size
		case s.Name == equalBytesSet && sameKeyType(s, equalBytesKeyType, true) && s.Constant:
			hasEqual = true
		}
	}
	ours := true // every element read is of the right length
	if st.hasSet {
		elems, err := c.GetSetElements(announcementSetRef(0))
		if err != nil {
			return nil, fmt.Errorf("list elements of %s: %w", announcementSet, err)
		}
		for _, e := range elems {
			if len(e.Key) != len(announcementKey{}) {
				ours = false
				continue
			}
			st.keys[announcementKey(e.Key)] = true
		}
	}
	if st.hasPorts {
		elems, err := c.GetSetElements(routerPortsSetRef(0))
		if err != nil {
			return nil, fmt.Errorf("list elements of %s: %w", routerPortsSet, err)
		}
		for _, e := range elems {
			name, _, _ := bytes.Cut(e.Key, []byte{0})
			if len(e.Key) != unix.IFNAMSIZ || len(name) == 0 || len(name) > MaxDeviceName {
				ours = false
				continue
			}
			st.ports[string(name)] = true
		}
	}
	if !ours || !st.hasSet || !st.hasPorts || !hasEqual || len(sets) != 3 {
		return st, nil
	}
	elems, err := c.GetSetElements(equalBytesSetRef())
	if err != nil {
		return nil, fmt.Errorf("list elements of %s: %w", equalBytesSet, err)
	}
	seen := map[byte]bool{}
	for _, e := range elems {
		if len(e.Key) != 8 || !bytes.Equal(e.Key, equalBytesKey(e.Key[0])) {
			return st, nil
		}
		seen[e.Key[0]] = true
	}
	if len(seen) != 256 {
		return st, nil
	}

	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyBridge)
	if err != nil {
		return nil, fmt.Errorf("list nftables chains: %w", err)
	}
	var chs []*nftables.Chain
	for _, ch := range chains {
		if ch.Table != nil && ch.Table.Name == AnnouncementTable {
			chs = append(chs, ch)
		}
	}
	if len(chs) != 1 {
		return st, nil
	}
	ch := chs[0]
	if ch.Name != announcementChain || ch.Type != nftables.ChainTypeFilter ||
		ch.Hooknum == nil || *ch.Hooknum != *nftables.ChainHookForward ||
		ch.Priority == nil || *ch.Priority != announcementPriority ||
		ch.Policy == nil || *ch.Policy != nftables.ChainPolicyAccept {
		return st, nil
	}
	rules, err := c.GetRules(t, ch)
	if err != nil {
		return nil, fmt.Errorf("list rules of %s: %w", ch.Name, err)
	}
	if len(rules) != len(announcementComments) {
		return st, nil
	}
	for i, r := range rules {
		if comment, _ := userdata.GetString(r.UserData, userdata.TypeComment); comment != announcementComments[i] {
			return st, nil
		}
	}
	st.intact = true
	return st, nil
}
