package ctsync

import (
	"fmt"
	"net/netip"
)

// Protocols the sync carries.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// Conntrack status bits (include/uapi/linux/netfilter/nf_conntrack_common.h)
// the sync reads.
const (
	StatusSeenReply = 1 << 1
	StatusAssured   = 1 << 2
	StatusSrcNAT    = 1 << 4
	StatusDstNAT    = 1 << 5
)

// Tuple is one direction of a flow. For ICMP, SrcPort carries the echo id
// and DstPort type<<8|code, as the kernel's tuple does.
type Tuple struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
}

// Flow is one conntrack entry as the sync carries it: what a backup needs
// to recreate it, nothing of its counters or timestamps.
type Flow struct {
	Proto uint8
	// Orig is the direction of the packet that opened the flow; Reply the
	// tuple the answers carry, after NAT: it differs from Orig reversed
	// exactly by the translation.
	Orig, Reply Tuple
	Status      uint32
	// Timeout is the seconds left before the entry expires.
	Timeout uint32
	Mark    uint32
	Zone    uint16
	// TCPState is the kernel's TCP conntrack state (TCP only).
	TCPState                      uint8
	TCPWScaleOrig, TCPWScaleReply uint8
}

// Key identifies a flow: its original tuple and zone.
type Key struct {
	Proto uint8
	Orig  Tuple
	Zone  uint16
}

// Key returns the flow's identity.
func (f Flow) Key() Key { return Key{Proto: f.Proto, Orig: f.Orig, Zone: f.Zone} }

// IsIPv6 reports whether the flow is IPv6.
func (f Flow) IsIPv6() bool { return f.Orig.Src.Is6() }

// Validate checks what the kernel would refuse, so that a bad record from
// the wire is dropped with a reason instead of an opaque netlink error.
func (f Flow) Validate() error {
	switch f.Proto {
	case ProtoTCP, ProtoUDP, ProtoICMP, ProtoICMPv6:
	default:
		return fmt.Errorf("protocol %d not synchronised", f.Proto)
	}
	for _, t := range []Tuple{f.Orig, f.Reply} {
		if !t.Src.IsValid() || !t.Dst.IsValid() {
			return fmt.Errorf("flow without addresses")
		}
		if t.Src.Is4() != f.Orig.Src.Is4() || t.Dst.Is4() != f.Orig.Src.Is4() {
			return fmt.Errorf("flow mixes IPv4 and IPv6 addresses")
		}
	}
	if (f.Proto == ProtoICMP && f.IsIPv6()) || (f.Proto == ProtoICMPv6 && !f.IsIPv6()) {
		return fmt.Errorf("ICMP protocol %d with the wrong address family", f.Proto)
	}
	return nil
}

func isICMP(proto uint8) bool { return proto == ProtoICMP || proto == ProtoICMPv6 }

// SNAT reports the source translation of the flow (the address and port —
// for ICMP the echo id — its packets leave with), if it has one.
func (f Flow) SNAT() (netip.Addr, uint16, bool) {
	if f.Status&StatusSrcNAT == 0 {
		return netip.Addr{}, 0, false
	}
	if isICMP(f.Proto) {
		return f.Reply.Dst, f.Reply.SrcPort, true
	}
	return f.Reply.Dst, f.Reply.DstPort, true
}

// DNAT reports the destination translation of the flow (where its packets
// are really sent), if it has one.
func (f Flow) DNAT() (netip.Addr, uint16, bool) {
	if f.Status&StatusDstNAT == 0 {
		return netip.Addr{}, 0, false
	}
	return f.Reply.Src, f.Reply.SrcPort, true
}

// Touches reports whether either direction of the flow has an address in p.
func (f Flow) Touches(p netip.Prefix) bool {
	return p.Contains(f.Orig.Src) || p.Contains(f.Orig.Dst) || p.Contains(f.Reply.Src) || p.Contains(f.Reply.Dst)
}

// Synchronised reports whether a flow is replicated: the transport
// protocols the failover of a router must keep, not multicast (VRRP, the
// sync itself) and nothing on the HA network (haNet).
func Synchronised(f Flow, haNet netip.Prefix) bool {
	switch f.Proto {
	case ProtoTCP, ProtoUDP, ProtoICMP, ProtoICMPv6:
	default:
		return false
	}
	if f.Orig.Dst.IsMulticast() || f.Reply.Dst.IsMulticast() {
		return false
	}
	return !haNet.IsValid() || !f.Touches(haNet)
}
