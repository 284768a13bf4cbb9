package linux

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// NATTable is the nftables table (family ip) that holds a router's NAT.
const NATTable = "l3ha-nat"

// Chains of NATTable.
const (
	ChainPrerouting  = "prerouting"
	ChainOutput      = "output"
	ChainPostrouting = "postrouting"
)

// FloatingIP maps a floating (external) address to a fixed (internal) one.
type FloatingIP struct {
	Floating netip.Addr
	Fixed    netip.Addr
}

// NAT is a router's address translation, as Neutron's L3 agent does it
// (identical on master and backups). IPv4 only.
type NAT struct {
	// GatewayDev is the router's qg- device; "" if the router has no
	// gateway (then there is nothing to translate).
	GatewayDev string
	// SNATAddress is the gateway port's address that internal traffic is
	// masqueraded to; zero for none.
	SNATAddress netip.Addr
	// EnableSNAT is the router's enable_snat.
	EnableSNAT bool
	// InternalPrefixes are the subnets of the router's internal interfaces.
	InternalPrefixes []netip.Prefix
	// FloatingIPs are the router's floating IP associations.
	FloatingIPs []FloatingIP
}

// The rules ApplyNAT installs (chain: rule, in order), where GW is
// GatewayDev:
//
//	prerouting  (nat, dstnat): per floating IP: ip daddr FIP dnat to FIXED
//	output      (nat, dstnat): the same, for the router's own traffic
//	postrouting (nat, srcnat):
//	  oifname != GW, not DNATed: accept        (internal <-> internal: no NAT)
//	  per floating IP: ip saddr FIXED snat to FIP
//	  if EnableSNAT and SNATAddress, per internal prefix P:
//	    oifname GW ip saddr P snat to SNATAddress
//	    ip saddr P, DNATed: snat to SNATAddress (hairpin: an internal host
//	      reaching another through its floating IP gets the reply back
//	      through the router)
//
// Every rule has a counter and carries a comment that states it; ApplyNAT
// compares comments to tell whether the table is already right.

type natRule struct {
	comment string
	exprs   []expr.Any
}

type natChain struct {
	name     string
	hook     *nftables.ChainHook
	priority *nftables.ChainPriority
	rules    []natRule
}

// natPlan turns n into the chains and rules of NATTable.
func natPlan(n NAT) ([]natChain, error) {
	if len(n.GatewayDev) > MaxDeviceName {
		return nil, fmt.Errorf("nat: gateway device name %q too long", n.GatewayDev)
	}
	if len(n.FloatingIPs) > 0 && n.GatewayDev == "" {
		return nil, errors.New("nat: floating IPs need a gateway device")
	}
	v4 := func(what string, a netip.Addr) (netip.Addr, error) {
		a = a.Unmap()
		if !a.Is4() {
			return a, fmt.Errorf("nat: %s %v is not an IPv4 address", what, a)
		}
		return a, nil
	}
	fips := make([]FloatingIP, 0, len(n.FloatingIPs))
	seenFloating, seenFixed := map[netip.Addr]bool{}, map[netip.Addr]bool{}
	for _, f := range n.FloatingIPs {
		fl, err := v4("floating IP", f.Floating)
		if err != nil {
			return nil, err
		}
		fx, err := v4("fixed IP", f.Fixed)
		if err != nil {
			return nil, err
		}
		if seenFloating[fl] {
			return nil, fmt.Errorf("nat: floating IP %s mapped twice", fl)
		}
		if seenFixed[fx] {
			return nil, fmt.Errorf("nat: fixed IP %s has two floating IPs", fx)
		}
		seenFloating[fl], seenFixed[fx] = true, true
		fips = append(fips, FloatingIP{fl, fx})
	}
	sort.Slice(fips, func(i, j int) bool { return fips[i].Floating.Less(fips[j].Floating) })

	var prefixes []netip.Prefix
	for _, p := range n.InternalPrefixes {
		a, err := v4("internal prefix", p.Addr())
		if err != nil {
			return nil, err
		}
		prefixes = append(prefixes, netip.PrefixFrom(a, p.Bits()).Masked())
	}
	sortPrefixes(prefixes)
	prefixes = slices.Compact(prefixes)

	snat := n.EnableSNAT && n.SNATAddress.IsValid() && n.GatewayDev != ""
	var snatAddr netip.Addr
	if snat {
		var err error
		if snatAddr, err = v4("SNAT address", n.SNATAddress); err != nil {
			return nil, err
		}
	}

	pre := natChain{name: ChainPrerouting, hook: nftables.ChainHookPrerouting, priority: nftables.ChainPriorityNATDest}
	out := natChain{name: ChainOutput, hook: nftables.ChainHookOutput, priority: nftables.ChainPriorityNATDest}
	post := natChain{name: ChainPostrouting, hook: nftables.ChainHookPostrouting, priority: nftables.ChainPriorityNATSource}
	for _, f := range fips {
		r := natRule{
			comment: fmt.Sprintf("fip dnat %s to %s", f.Floating, f.Fixed),
			exprs:   concat(matchAddr(offDaddr, netip.PrefixFrom(f.Floating, 32)), counter(), natTo(expr.NATTypeDestNAT, f.Fixed)),
		}
		pre.rules = append(pre.rules, r)
		out.rules = append(out.rules, r)
	}
	if n.GatewayDev != "" {
		post.rules = append(post.rules, natRule{
			comment: fmt.Sprintf("no nat unless out %s or dnat", n.GatewayDev),
			exprs:   concat(matchOif(n.GatewayDev, false), matchDNATed(false), counter(), accept()),
		})
	}
	for _, f := range fips {
		post.rules = append(post.rules, natRule{
			comment: fmt.Sprintf("fip snat %s to %s", f.Fixed, f.Floating),
			exprs:   concat(matchAddr(offSaddr, netip.PrefixFrom(f.Fixed, 32)), counter(), natTo(expr.NATTypeSourceNAT, f.Floating)),
		})
	}
	if snat {
		for _, p := range prefixes {
			post.rules = append(post.rules, natRule{
				comment: fmt.Sprintf("snat %s out %s to %s", p, n.GatewayDev, snatAddr),
				exprs:   concat(matchOif(n.GatewayDev, true), matchAddr(offSaddr, p), counter(), natTo(expr.NATTypeSourceNAT, snatAddr)),
			})
		}
		for _, p := range prefixes {
			post.rules = append(post.rules, natRule{
				comment: fmt.Sprintf("hairpin snat %s to %s", p, snatAddr),
				exprs:   concat(matchAddr(offSaddr, p), matchDNATed(true), counter(), natTo(expr.NATTypeSourceNAT, snatAddr)),
			})
		}
	}
	return []natChain{pre, out, post}, nil
}

// IPv4 header offsets.
const (
	offSaddr = 12
	offDaddr = 16
)

// ipsDstNAT is IPS_DST_NAT of enum ip_conntrack_status.
const ipsDstNAT = 1 << 5

func concat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func ifnameBytes(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func matchOif(dev string, equal bool) []expr.Any {
	op := expr.CmpOpEq
	if !equal {
		op = expr.CmpOpNeq
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: ifnameBytes(dev)},
	}
}

func matchAddr(offset uint32, p netip.Prefix) []expr.Any {
	if p.Bits() == 0 {
		return nil
	}
	e := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4}}
	if p.Bits() < 32 {
		e = append(e, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: net.CIDRMask(p.Bits(), 32), Xor: make([]byte, 4)})
	}
	return append(e, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()})
}

// matchDNATed matches packets whose connection was (dnated) or was not
// destination-NATed: ct status & dnat.
func matchDNATed(dnated bool) []expr.Any {
	op := expr.CmpOpEq
	if dnated {
		op = expr.CmpOpNeq
	}
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(ipsDstNAT), Xor: make([]byte, 4)},
		&expr.Cmp{Op: op, Register: 1, Data: make([]byte, 4)},
	}
}

func counter() []expr.Any { return []expr.Any{&expr.Counter{}} }

func accept() []expr.Any { return []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}} }

func natTo(t expr.NATType, a netip.Addr) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: a.AsSlice()},
		&expr.NAT{Type: t, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
	}
}

var natTableRef = &nftables.Table{Name: NATTable, Family: nftables.TableFamilyIPv4}

// natBatchHook, when set (by tests), is called with the replacement batch
// just before it is sent.
var natBatchHook func(c *nftables.Conn, t *nftables.Table)

func nftConn(ns string) (*nftables.Conn, func(), error) {
	nsh, err := openNS(ns)
	if err != nil {
		return nil, nil, err
	}
	c, err := nftables.New(nftables.WithNetNSFd(int(nsh)))
	if err != nil {
		nsh.Close()
		return nil, nil, fmt.Errorf("nftables in %s: %w", nsLabel(ns), err)
	}
	return c, func() { nsh.Close() }, nil
}

// ApplyNAT makes NATTable in ns implement n. If the table already holds
// exactly the rules n calls for, nothing is done. Otherwise the table is
// replaced in one nftables transaction (delete and re-create, in one netlink
// batch): the kernel switches from the old rules to the new ones at once,
// with no moment without rules, or, on error, keeps the old ones.
// Established connections keep their translation (conntrack).
func ApplyNAT(ns string, n NAT) error {
	plan, err := natPlan(n)
	if err != nil {
		return err
	}
	c, done, err := nftConn(ns)
	if err != nil {
		return err
	}
	defer done()
	cur, err := natState(c)
	if err == nil && natEqual(cur, plan) {
		return nil
	}
	t := natTableRef
	if err != nil || cur != nil {
		// Replace what is there. Only then: deleting a table makes the
		// kernel destroy it after an RCU grace period, which the close of
		// this netlink socket waits for (10-20 ms per router when an agent
		// wires hundreds of new ones).
		c.AddTable(t) // so that DelTable cannot fail on a missing table
		c.DelTable(t)
	}
	c.AddTable(t)
	for _, pc := range plan {
		ch := c.AddChain(&nftables.Chain{
			Name:     pc.name,
			Table:    t,
			Type:     nftables.ChainTypeNAT,
			Hooknum:  pc.hook,
			Priority: pc.priority,
		})
		for _, r := range pc.rules {
			c.AddRule(&nftables.Rule{
				Table:    t,
				Chain:    ch,
				Exprs:    r.exprs,
				UserData: userdata.AppendString(nil, userdata.TypeComment, r.comment),
			})
		}
	}
	if natBatchHook != nil {
		natBatchHook(c, t)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("apply nat in %s: %w", nsLabel(ns), err)
	}
	return nil
}

// RemoveNAT deletes NATTable from ns; no table is not an error.
func RemoveNAT(ns string) error {
	c, done, err := nftConn(ns)
	if err != nil {
		return err
	}
	defer done()
	c.AddTable(natTableRef)
	c.DelTable(natTableRef)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("remove nat in %s: %w", nsLabel(ns), err)
	}
	return nil
}

// NATChain is a chain of NATTable as read back: its hook and its rules'
// comments, in order.
type NATChain struct {
	Name     string
	Hook     uint32
	Priority int32
	Rules    []string
}

// NATRules reads NATTable of ns back; nil if there is no such table.
func NATRules(ns string) ([]NATChain, error) {
	c, done, err := nftConn(ns)
	if err != nil {
		return nil, err
	}
	defer done()
	return natState(c)
}

// natState reads NATTable back, chains sorted by name.
func natState(c *nftables.Conn) ([]NATChain, error) {
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, fmt.Errorf("list nftables tables: %w", err)
	}
	found := false
	for _, t := range tables {
		found = found || t.Name == NATTable
	}
	if !found {
		return nil, nil
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, fmt.Errorf("list nftables chains: %w", err)
	}
	out := []NATChain{}
	for _, ch := range chains {
		if ch.Table == nil || ch.Table.Name != NATTable {
			continue
		}
		nc := NATChain{Name: ch.Name}
		if ch.Hooknum != nil {
			nc.Hook = uint32(*ch.Hooknum)
		}
		if ch.Priority != nil {
			nc.Priority = int32(*ch.Priority)
		}
		if ch.Type != nftables.ChainTypeNAT {
			nc.Hook = ^uint32(0) // never equal to a plan's
		}
		rules, err := c.GetRules(natTableRef, ch)
		if err != nil {
			return nil, fmt.Errorf("list rules of %s: %w", ch.Name, err)
		}
		for _, r := range rules {
			s, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			nc.Rules = append(nc.Rules, s)
		}
		out = append(out, nc)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func natEqual(cur []NATChain, plan []natChain) bool {
	if cur == nil || len(cur) != len(plan) {
		return false
	}
	byName := map[string]NATChain{}
	for _, c := range cur {
		byName[c.Name] = c
	}
	for _, p := range plan {
		c, ok := byName[p.name]
		if !ok || c.Hook != uint32(*p.hook) || c.Priority != int32(*p.priority) || len(c.Rules) != len(p.rules) {
			return false
		}
		for i, r := range p.rules {
			if c.Rules[i] != r.comment {
				return false
			}
		}
	}
	return true
}
