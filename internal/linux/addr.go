package linux

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Addresses returns the addresses of dev in ns (IPv4 and IPv6, link-local
// included), as address/prefix-length, sorted.
func Addresses(ns, dev string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	err := withHandle(ns, func(h *netlink.Handle) error {
		l, err := mustLink(h, dev)
		if err != nil {
			return err
		}
		out, err = addresses(h, l)
		return err
	})
	return out, err
}

func addresses(h *netlink.Handle, l netlink.Link) ([]netip.Prefix, error) {
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return h.AddrList(l, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", l.Attrs().Name, err)
	}
	out := make([]netip.Prefix, 0, len(addrs))
	for _, a := range addrs {
		if p, ok := toPrefix(a.IPNet); ok {
			out = append(out, p)
		}
	}
	sortPrefixes(out)
	return out, nil
}

func toPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	ones, bits := n.Mask.Size()
	if bits != a.BitLen() {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, ones), true
}

// newAddr is the netlink address for p. IPv6 addresses skip duplicate
// address detection (as keepalived adds them): an address that moves to a new
// VRRP master must be usable at once, not tentative, and not fail DAD
// against the old master that is just giving it up.
func newAddr(p netip.Prefix) *netlink.Addr {
	a := &netlink.Addr{IPNet: toIPNet(p)}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

func toIPNet(p netip.Prefix) *net.IPNet {
	a := p.Addr().Unmap()
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(p.Bits(), a.BitLen())}
}

func sortPrefixes(ps []netip.Prefix) {
	sort.Slice(ps, func(i, j int) bool {
		if c := ps[i].Addr().Compare(ps[j].Addr()); c != 0 {
			return c < 0
		}
		return ps[i].Bits() < ps[j].Bits()
	})
}

func normPrefix(p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() {
		return p, errors.New("invalid prefix")
	}
	return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()), nil
}

// linkLocal6 reports whether p is an IPv6 link-local address, which the
// kernel manages.
func linkLocal6(p netip.Prefix) bool { return p.Addr().Is6() && p.Addr().IsLinkLocalUnicast() }

// SyncAddresses makes dev in ns carry exactly want: missing addresses are
// added, extra ones removed, matching ones (same address and prefix length)
// left untouched. IPv6 link-local addresses are left alone unless listed.
func SyncAddresses(ns, dev string, want []netip.Prefix) error {
	return SyncAddressesOwned(ns, dev, want, nil)
}

// SyncAddressesOwned is SyncAddresses restricted to the addresses owned
// reports true for: others (e.g. VRRP virtual addresses on the same device)
// are neither removed nor counted. A nil owned owns every address except IPv6
// link-local ones. Addresses in want are added whatever owned says.
func SyncAddressesOwned(ns, dev string, want []netip.Prefix, owned func(netip.Prefix) bool) error {
	if owned == nil {
		owned = func(p netip.Prefix) bool { return !linkLocal6(p) }
	}
	wantSet := make(map[netip.Prefix]bool, len(want))
	for _, p := range want {
		np, err := normPrefix(p)
		if err != nil {
			return fmt.Errorf("address for %s: %w", dev, err)
		}
		wantSet[np] = true
	}
	return withHandle(ns, func(h *netlink.Handle) error {
		l, err := mustLink(h, dev)
		if err != nil {
			return err
		}
		// Deleting a primary IPv4 address also deletes its secondaries
		// unless promote_secondaries is set: after removals, look again and
		// put back whatever wanted went with them.
		for pass := 0; pass < 3; pass++ {
			have, err := addresses(h, l)
			if err != nil {
				return err
			}
			haveSet := make(map[netip.Prefix]bool, len(have))
			for _, p := range have {
				haveSet[p] = true
			}
			for _, p := range sortedPrefixes(wantSet) {
				if haveSet[p] {
					continue
				}
				if err := h.AddrAdd(l, newAddr(p)); err != nil && !errors.Is(err, unix.EEXIST) {
					return fmt.Errorf("add %s to %s: %w", p, dev, err)
				}
			}
			removed := false
			for _, p := range have {
				if wantSet[p] || !owned(p) {
					continue
				}
				if err := h.AddrDel(l, &netlink.Addr{IPNet: toIPNet(p)}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !isNotFound(err) {
					return fmt.Errorf("remove %s from %s: %w", p, dev, err)
				}
				removed = true
			}
			if !removed {
				return nil
			}
		}
		return nil
	})
}

func sortedPrefixes(m map[netip.Prefix]bool) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	sortPrefixes(out)
	return out
}

// AddAddress adds p to dev in ns unless it is there already.
func AddAddress(ns, dev string, p netip.Prefix) error {
	p, err := normPrefix(p)
	if err != nil {
		return fmt.Errorf("address for %s: %w", dev, err)
	}
	return withHandle(ns, func(h *netlink.Handle) error {
		l, err := mustLink(h, dev)
		if err != nil {
			return err
		}
		have, err := addresses(h, l)
		if err != nil {
			return err
		}
		for _, q := range have {
			if q == p {
				return nil
			}
		}
		if err := h.AddrAdd(l, newAddr(p)); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add %s to %s: %w", p, dev, err)
		}
		return nil
	})
}

// DelAddress removes p from dev in ns if it is there. A missing device is not
// an error.
func DelAddress(ns, dev string, p netip.Prefix) error {
	p, err := normPrefix(p)
	if err != nil {
		return fmt.Errorf("address for %s: %w", dev, err)
	}
	return withHandle(ns, func(h *netlink.Handle) error {
		l, ok, err := linkByName(h, dev)
		if err != nil || !ok {
			return err
		}
		have, err := addresses(h, l)
		if err != nil {
			return err
		}
		for _, q := range have {
			if q == p {
				if err := h.AddrDel(l, &netlink.Addr{IPNet: toIPNet(p)}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
					return fmt.Errorf("remove %s from %s: %w", p, dev, err)
				}
				return nil
			}
		}
		return nil
	})
}
