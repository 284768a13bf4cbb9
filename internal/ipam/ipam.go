// Package ipam allocates what networks hand out: IPv4 addresses from a
// subnet's allocation pools, port MAC addresses, and VXLAN segment ids. The
// choice functions are pure; Allocate* wrap them around the store.
package ipam

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"

	"github.com/l3ha/l3ha/internal/store"
)

// ErrExhausted means no free value is left.
var ErrExhausted = errors.New("no free address")

// DefaultPools is every host address of prefix except the gateway, as Neutron
// computes it (network and broadcast addresses excluded).
func DefaultPools(prefix netip.Prefix, gateway *netip.Addr) []store.AllocationPool {
	first, last, ok := hostRange(prefix)
	if !ok {
		return nil
	}
	if gateway == nil || !prefix.Contains(*gateway) {
		return []store.AllocationPool{{Start: first.String(), End: last.String()}}
	}
	var pools []store.AllocationPool
	gw := *gateway
	if gw.Compare(first) > 0 {
		pools = append(pools, store.AllocationPool{Start: first.String(), End: gw.Prev().String()})
	}
	if gw.Compare(last) < 0 {
		pools = append(pools, store.AllocationPool{Start: gw.Next().String(), End: last.String()})
	}
	return pools
}

// hostRange is the first and last usable host address of an IPv4 prefix.
func hostRange(p netip.Prefix) (netip.Addr, netip.Addr, bool) {
	p = p.Masked()
	if !p.Addr().Is4() || p.Bits() > 30 {
		if p.Bits() >= 31 && p.Addr().Is4() {
			return p.Addr(), LastAddr(p), true
		}
		return netip.Addr{}, netip.Addr{}, false
	}
	return p.Addr().Next(), LastAddr(p).Prev(), true
}

// LastAddr is the highest address of prefix (the broadcast address in IPv4).
func LastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	hostBits := 32 - p.Bits()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= uint32((uint64(1) << hostBits) - 1)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// ValidatePools checks that pools are well formed, inside prefix, ordered
// start ≤ end, non-overlapping, and do not contain the gateway.
func ValidatePools(prefix netip.Prefix, gateway *netip.Addr, pools []store.AllocationPool) error {
	type rng struct{ s, e netip.Addr }
	var seen []rng
	first, last, ok := hostRange(prefix)
	if !ok {
		return fmt.Errorf("subnet %s has no usable addresses", prefix)
	}
	for _, p := range pools {
		s, err1 := netip.ParseAddr(p.Start)
		e, err2 := netip.ParseAddr(p.End)
		if err1 != nil || err2 != nil || !s.Is4() || !e.Is4() {
			return fmt.Errorf("the allocation pool %s-%s is not a valid IPv4 range", p.Start, p.End)
		}
		if s.Compare(e) > 0 {
			return fmt.Errorf("the allocation pool %s-%s has its start after its end", p.Start, p.End)
		}
		if s.Compare(first) < 0 || e.Compare(last) > 0 {
			return fmt.Errorf("the allocation pool %s-%s spans beyond the subnet cidr %s", p.Start, p.End, prefix)
		}
		if gateway != nil && s.Compare(*gateway) <= 0 && e.Compare(*gateway) >= 0 {
			return fmt.Errorf("gateway ip %s conflicts with allocation pool %s-%s", gateway, p.Start, p.End)
		}
		for _, o := range seen {
			if s.Compare(o.e) <= 0 && o.s.Compare(e) <= 0 {
				return fmt.Errorf("found overlapping allocation pools: %s-%s and %s-%s", o.s, o.e, s, e)
			}
		}
		seen = append(seen, rng{s, e})
	}
	return nil
}

// InPools reports whether a is inside one of pools.
func InPools(a netip.Addr, pools []store.AllocationPool) bool {
	for _, p := range pools {
		s, err1 := netip.ParseAddr(p.Start)
		e, err2 := netip.ParseAddr(p.End)
		if err1 == nil && err2 == nil && a.Compare(s) >= 0 && a.Compare(e) <= 0 {
			return true
		}
	}
	return false
}

// PickAddress chooses a free address from pools. Sequential picks the lowest
// free one (predictable tenant addresses); otherwise it starts at a random
// point, as Neutron does for HA subnets, so that concurrent allocators rarely
// collide.
func PickAddress(pools []store.AllocationPool, used map[string]bool, sequential bool, rnd *rand.Rand) (netip.Addr, error) {
	var total uint64
	type rng struct{ s, e uint32 }
	var rs []rng
	for _, p := range pools {
		s, err1 := netip.ParseAddr(p.Start)
		e, err2 := netip.ParseAddr(p.End)
		if err1 != nil || err2 != nil {
			continue
		}
		r := rng{u32(s), u32(e)}
		rs = append(rs, r)
		total += uint64(r.e-r.s) + 1
	}
	if total == 0 {
		return netip.Addr{}, ErrExhausted
	}
	var start uint64
	if !sequential && rnd != nil {
		start = rnd.Uint64N(total)
	}
	for i := uint64(0); i < total; i++ {
		k := (start + i) % total
		for _, r := range rs {
			size := uint64(r.e-r.s) + 1
			if k < size {
				a := fromU32(r.s + uint32(k))
				if !used[a.String()] {
					return a, nil
				}
				break
			}
			k -= size
		}
	}
	return netip.Addr{}, ErrExhausted
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func fromU32(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// RandomMAC returns a MAC in OpenStack's fa:16:3e OUI.
func RandomMAC(rnd *rand.Rand) string {
	v := rnd.Uint32()
	return fmt.Sprintf("fa:16:3e:%02x:%02x:%02x", byte(v>>16), byte(v>>8), byte(v))
}

// AllocateMAC returns a random MAC (RandomMAC) that no port of network uses.
// 24 random bits are few: the hundreds of ports of one network (an HA
// network holds up to 254 routers times their agents) would collide by the
// birthday paradox every few thousand ports and fail the insert on the
// (network, mac) unique constraint.
func AllocateMAC(tx *store.Tx, networkID string, rnd *rand.Rand) (string, error) {
	for range 16 {
		mac := RandomMAC(rnd)
		ps, err := tx.ListPorts(store.Where{"network_id": networkID, "mac_address": mac})
		if err != nil {
			return "", fmt.Errorf("checking MAC %s: %w", mac, err)
		}
		if len(ps) == 0 {
			return mac, nil
		}
	}
	return "", fmt.Errorf("no free MAC address on network %s: %w", networkID, ErrExhausted)
}

// VNIRange is the inclusive range tenant and HA VXLAN networks draw from.
type VNIRange struct{ Min, Max int }

// AllocateVNI picks a free VXLAN segment id in r, randomly so that the ids
// of deleted networks are not immediately reused.
func AllocateVNI(tx *store.Tx, r VNIRange, rnd *rand.Rand) (int, error) {
	span := r.Max - r.Min + 1
	if span <= 0 {
		return 0, fmt.Errorf("empty VNI range %d:%d", r.Min, r.Max)
	}
	for range 64 {
		v := r.Min + rnd.IntN(span)
		used, err := tx.SegmentInUse("vxlan", v)
		if err != nil {
			return 0, fmt.Errorf("checking VNI %d: %w", v, err)
		}
		if !used {
			return v, nil
		}
	}
	return 0, fmt.Errorf("no free VXLAN segment in %d:%d: %w", r.Min, r.Max, ErrExhausted)
}

// AllocateFixedIP allocates one address from subnet for a new port,
// honouring a requested address when given. It returns the address and, if
// the request was taken, the holder's port id.
func AllocateFixedIP(tx *store.Tx, subnet *store.Subnet, requested string, sequential bool, rnd *rand.Rand) (addr string, heldBy string, err error) {
	if requested != "" {
		holder, err := tx.IPAllocated(subnet.ID, requested)
		if err != nil {
			return "", "", err
		}
		return requested, holder, nil
	}
	if !sequential && rnd != nil {
		// A sparse subnet (an HA subnet: hundreds of ports in 16k addresses)
		// nearly always has a random address free: probe a few by index
		// before reading every allocation of the subnet.
		for range 4 {
			a, err := PickAddress(subnet.AllocationPools, nil, false, rnd)
			if err != nil {
				break
			}
			holder, err := tx.IPAllocated(subnet.ID, a.String())
			if err != nil {
				return "", "", err
			}
			if holder == "" {
				return a.String(), "", nil
			}
		}
	}
	used, err := tx.UsedIPs(subnet.ID)
	if err != nil {
		return "", "", fmt.Errorf("reading allocations of subnet %s: %w", subnet.ID, err)
	}
	a, err := PickAddress(subnet.AllocationPools, used, sequential, rnd)
	if err != nil {
		return "", "", fmt.Errorf("subnet %s: %w", subnet.ID, err)
	}
	return a.String(), "", nil
}
