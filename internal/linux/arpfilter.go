package linux

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
)

// AnnouncementTable is the nftables table (family bridge, in the node
// namespace) that keeps routers' gratuitous ARP from the other tap ports.
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
// The table (family bridge: it sees every bridge of the namespace) holds one
// rule:
//
//	set announced: type ipv4_addr . ipv4_addr, size N (fixed), the element A . A for each address A
//	chain forward (filter, hook forward, priority filter = -200, policy accept):
//	  ether type arp oifname "tap*" arp htype 1 arp ptype ip arp hlen 6 arp plen 4
//	    arp saddr ip . arp daddr ip @announced counter drop
//
// A gratuitous ARP has sender IP = target IP. nftables cannot compare two
// fields of a packet, hence the pairs A . A: an ordinary ARP request (sender
// ≠ target), or an announcement of an address not in the set (an instance's,
// the upstream gateway's), never matches. Requests and replies are both
// matched (either may announce). The bridge runs its forward hook once per
// output port, so the uplink (a physical interface or vxlan-<VNI>) always
// gets the announcement; so does the bridge itself (local delivery is not
// forwarding).
const AnnouncementTable = "l3ha-arp"

const (
	announcementChain = "forward"
	announcementSet   = "announced"
	// announcementComment identifies the rule: change it whenever the rule
	// changes, so that SyncAnnouncementFilter replaces installed tables.
	announcementComment = "drop announcements of @announced toward tap ports"
	// announcementPriority is the bridge family's "filter" priority
	// (NF_BR_PRI_FILTER_BRIDGED).
	announcementPriority = -200
	// maxElemsPerBatch bounds the set elements of one netlink batch (20
	// bytes each), well below the default socket send buffer (208 KiB): a
	// larger change is sent in several batches. Each element is
	// independent, so no packet sees anything but the old or the new
	// verdict for its address.
	maxElemsPerBatch = 2048
)

// ARP header offsets (network header) and the fixed part for Ethernet/IPv4:
// htype 1, ptype 0x0800, hlen 6, plen 4.
const (
	offARPSenderIP = 14
	offARPTargetIP = 24
)

var (
	etherTypeARP = []byte{0x08, 0x06}
	arpEthIPv4   = []byte{0x00, 0x01, 0x08, 0x00, 0x06, 0x04}
)

var (
	announcementTableRef = &nftables.Table{Name: AnnouncementTable, Family: nftables.TableFamilyBridge}
	announcementKeyType  = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeIPAddr)
)

// announcementSetRef names the set; size is its capacity (needed only to
// create it).
func announcementSetRef(size uint32) *nftables.Set {
	return &nftables.Set{
		Table:         announcementTableRef,
		Name:          announcementSet,
		KeyType:       announcementKeyType,
		Concatenation: true,
		Size:          size,
	}
}

// minAnnouncementSetSize is the least capacity of the set.
//
// The set has a fixed capacity because a set with a size is a fixed-size
// hash table in the kernel, whereas one without is a resizable one: a
// resizable table grows (and shrinks) in the background after elements are
// added (or deleted), and a dump of its elements taken meanwhile misses some
// and repeats others, so that reading the set back right after a large
// change would be wrong. A capacity of 4096 costs 64 KiB of buckets.
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

// announcementRule is the drop rule's expressions; set is the set it looks
// up (in the batch that creates both, its ID links them).
func announcementRule(set *nftables.Set) []expr.Any {
	return concat(
		[]expr.Any{
			// ether type arp (cheapest test first: most frames are not ARP)
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: etherTypeARP},
			// oifname "tap*": a prefix compare
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(PrefixTap)},
			// Ethernet/IPv4 ARP, so that the address offsets are right
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 0, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: arpEthIPv4[:4]},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 4, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: arpEthIPv4[4:]},
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

// SyncAnnouncementFilter makes namespace ns (the node namespace: NodeNS, or
// a name) drop gratuitous ARP for addrs on its way to tap ports, so that a
// mass failover does not flood every router's announcements to every other
// router (N² copies that nobody needs; see AnnouncementTable). The uplink
// still gets them. Only IPv4 addresses count; IPv6 ones are ignored, and with
// no IPv4 address the table is removed.
//
// It is meant to be called on every reconcile: when the table already holds
// exactly addrs nothing is written (the check reads the table back: a few
// dumps, about 10 ms for 5000 addresses). When only the addresses differ,
// the set's elements are changed in place (one batch adds the missing ones
// and deletes the extra ones; more than 2048 changes take several), and the
// rule never goes away. A missing table is created whole in one batch (with
// the first 2048 addresses; the rest follow at once). One that is not as
// this function builds it (a changed or deleted rule, say), or whose set is
// too small for addrs (its capacity is twice the addresses it was made for,
// at least 4096), is replaced the same way: the old table stays in force
// until the new one is committed.
func SyncAnnouncementFilter(ns string, addrs []netip.Addr) error {
	want := announcementKeys(addrs)
	if len(want) == 0 {
		return RemoveAnnouncementFilter(ns)
	}
	c, done, err := nftConn(ns)
	if err != nil {
		return err
	}
	defer done()
	cur, err := announcementState(c)
	if err != nil || cur == nil || !cur.intact || int(cur.size) < len(want) {
		// Create it, or replace what is there (or what could not be
		// read): the old table stays in force until the batch commits.
		replace := err != nil || cur != nil
		if berr := buildAnnouncementTable(c, ns, replace, sortedKeys(want)); berr != nil {
			if err != nil {
				return fmt.Errorf("%w (after reading it failed: %v)", berr, err)
			}
			return berr
		}
		return nil
	}
	var add, del []announcementKey
	for _, k := range sortedKeys(want) {
		if !cur.keys[k] {
			add = append(add, k)
		}
	}
	for _, k := range sortedKeys(cur.keys) {
		if !want[k] {
			del = append(del, k)
		}
	}
	set := announcementSetRef(0)
	for len(add)+len(del) > 0 {
		n := min(len(del), maxElemsPerBatch)
		d := del[:n]
		del = del[n:]
		n = min(len(add), maxElemsPerBatch-len(d))
		a := add[:n]
		add = add[n:]
		if len(d) > 0 {
			if err := c.SetDeleteElements(set, elements(d)); err != nil {
				return fmt.Errorf("announcement filter in %s: delete addresses: %w", nsLabel(ns), err)
			}
		}
		if len(a) > 0 {
			if err := c.SetAddElements(set, elements(a)); err != nil {
				return fmt.Errorf("announcement filter in %s: add addresses: %w", nsLabel(ns), err)
			}
		}
		if err := c.Flush(); err != nil {
			return fmt.Errorf("announcement filter in %s: update addresses: %w", nsLabel(ns), err)
		}
	}
	return nil
}

// buildAnnouncementTable creates AnnouncementTable with keys, replacing the
// existing one if replace. The first batch holds the whole table and up to
// maxElemsPerBatch elements; further batches add the rest.
func buildAnnouncementTable(c *nftables.Conn, ns string, replace bool, keys []announcementKey) error {
	t := announcementTableRef
	if replace {
		// Only then: deleting a table makes the close of this netlink
		// socket wait for an RCU grace period.
		c.AddTable(t) // so that DelTable cannot fail on a missing table
		c.DelTable(t)
	}
	c.AddTable(t)
	first := keys[:min(len(keys), maxElemsPerBatch)]
	rest := keys[len(first):]
	set := announcementSetRef(announcementSetSize(len(keys)))
	if err := c.AddSet(set, elements(first)); err != nil {
		return fmt.Errorf("announcement filter in %s: set: %w", nsLabel(ns), err)
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
	c.AddRule(&nftables.Rule{
		Table:    t,
		Chain:    ch,
		Exprs:    announcementRule(set),
		UserData: userdata.AppendString(nil, userdata.TypeComment, announcementComment),
	})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("create announcement filter in %s: %w", nsLabel(ns), err)
	}
	for len(rest) > 0 {
		n := min(len(rest), maxElemsPerBatch)
		if err := c.SetAddElements(announcementSetRef(0), elements(rest[:n])); err != nil {
			return fmt.Errorf("announcement filter in %s: add addresses: %w", nsLabel(ns), err)
		}
		if err := c.Flush(); err != nil {
			return fmt.Errorf("announcement filter in %s: add addresses: %w", nsLabel(ns), err)
		}
		rest = rest[n:]
	}
	return nil
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
// toward tap ports now, sorted; nil if there is no AnnouncementTable.
func AnnouncementFilterAddrs(ns string) ([]netip.Addr, error) {
	c, done, err := nftConn(ns)
	if err != nil {
		return nil, err
	}
	defer done()
	cur, err := announcementState(c)
	if err != nil {
		return nil, fmt.Errorf("announcement filter in %s: %w", nsLabel(ns), err)
	}
	if cur == nil || !cur.hasSet {
		return nil, nil
	}
	var out []netip.Addr
	for _, k := range sortedKeys(cur.keys) {
		if [4]byte(k[:4]) == [4]byte(k[4:]) {
			out = append(out, netip.AddrFrom4([4]byte(k[:4])))
		}
	}
	return out, nil
}

// announcementFilter is AnnouncementTable as read back (nil: no table).
type announcementFilter struct {
	hasSet bool   // the table has a set of the right type
	size   uint32 // the set's capacity
	intact bool   // and it is as buildAnnouncementTable makes it
	keys   map[announcementKey]bool
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

// announcementState reads AnnouncementTable back; nil if there is none.
func announcementState(c *nftables.Conn) (*announcementFilter, error) {
	exists, err := announcementTableExists(c)
	if err != nil || !exists {
		return nil, err
	}
	st := &announcementFilter{keys: map[announcementKey]bool{}}
	t := announcementTableRef
	sets, err := c.GetSets(t)
	if err != nil {
		return nil, fmt.Errorf("list sets of %s: %w", AnnouncementTable, err)
	}
	for _, s := range sets {
		if s.Name == announcementSet && s.Concatenation && !s.Interval && !s.IsMap &&
			s.KeyType.Name == announcementKeyType.Name && s.KeyType.Bytes == announcementKeyType.Bytes {
			st.hasSet, st.size = true, s.Size
		}
	}
	if !st.hasSet {
		return st, nil
	}
	elems, err := c.GetSetElements(announcementSetRef(0))
	if err != nil {
		return nil, fmt.Errorf("list elements of %s: %w", announcementSet, err)
	}
	for _, e := range elems {
		if len(e.Key) != len(announcementKey{}) {
			return st, nil // not ours: replace the table
		}
		st.keys[announcementKey(e.Key)] = true
	}
	if len(sets) != 1 {
		return st, nil
	}

	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyBridge)
	if err != nil {
		return nil, fmt.Errorf("list nftables chains: %w", err)
	}
	var ours []*nftables.Chain
	for _, ch := range chains {
		if ch.Table != nil && ch.Table.Name == AnnouncementTable {
			ours = append(ours, ch)
		}
	}
	if len(ours) != 1 {
		return st, nil
	}
	ch := ours[0]
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
	if len(rules) != 1 {
		return st, nil
	}
	comment, _ := userdata.GetString(rules[0].UserData, userdata.TypeComment)
	st.intact = comment == announcementComment
	return st, nil
}
