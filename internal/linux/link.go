package linux

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DefaultVXLANPort is the IANA VXLAN port. (Linux's own default, used when
// no port is given at creation, is the pre-standard 8472.)
const DefaultVXLANPort = 4789

// Link describes a network device as read back from the kernel.
type Link struct {
	Name   string
	Index  int
	Type   string // "bridge", "vxlan", "veth", "dummy", "device", ...
	MAC    net.HardwareAddr
	MTU    int
	Up     bool   // administratively up (IFF_UP)
	Master string // name of the bridge it is enslaved to, "" if none
}

// Links returns the devices of ns whose names start with prefix, sorted by
// name.
func Links(ns, prefix string) ([]Link, error) {
	var out []Link
	err := withHandle(ns, func(h *netlink.Handle) error {
		links, err := retryDump(h.LinkList)
		if err != nil {
			return fmt.Errorf("list links: %w", err)
		}
		names := make(map[int]string, len(links))
		for _, l := range links {
			names[l.Attrs().Index] = l.Attrs().Name
		}
		for _, l := range links {
			a := l.Attrs()
			if !strings.HasPrefix(a.Name, prefix) {
				continue
			}
			out = append(out, Link{
				Name:   a.Name,
				Index:  a.Index,
				Type:   l.Type(),
				MAC:    a.HardwareAddr,
				MTU:    a.MTU,
				Up:     a.Flags&net.FlagUp != 0,
				Master: names[a.MasterIndex],
			})
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, err
}

// LinkExists reports whether ns has a device called name.
func LinkExists(ns, name string) (bool, error) {
	var found bool
	err := withHandle(ns, func(h *netlink.Handle) error {
		_, ok, err := linkByName(h, name)
		found = ok
		return err
	})
	return found, err
}

// linkByName returns the link, or ok=false if there is none by that name.
func linkByName(h *netlink.Handle, name string) (netlink.Link, bool, error) {
	l, err := h.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("link %s: %w", name, err)
	}
	return l, true, nil
}

func mustLink(h *netlink.Handle, name string) (netlink.Link, error) {
	l, ok, err := linkByName(h, name)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("link %s: %w", name, unix.ENODEV)
	}
	return l, nil
}

// DeleteLink deletes the device called name in ns; no such device is not an
// error. Deleting one end of a veth pair deletes both.
func DeleteLink(ns, name string) error {
	return withHandle(ns, func(h *netlink.Handle) error {
		l, ok, err := linkByName(h, name)
		if err != nil || !ok {
			return err
		}
		if err := h.LinkDel(l); err != nil && !isNotFound(err) {
			return fmt.Errorf("delete %s: %w", name, err)
		}
		return nil
	})
}

// setUp brings l up unless it already is.
func setUp(h *netlink.Handle, l netlink.Link) error {
	if l.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", l.Attrs().Name, err)
	}
	return nil
}

// setMTU sets l's MTU unless mtu is 0 or already right.
func setMTU(h *netlink.Handle, l netlink.Link, mtu int) error {
	if mtu <= 0 || l.Attrs().MTU == mtu {
		return nil
	}
	if err := h.LinkSetMTU(l, mtu); err != nil {
		return fmt.Errorf("set %s mtu %d: %w", l.Attrs().Name, mtu, err)
	}
	return nil
}

// setMaster enslaves l to the bridge called bridge unless it already is.
func setMaster(h *netlink.Handle, l netlink.Link, bridge string) error {
	if bridge == "" {
		return nil
	}
	br, err := mustLink(h, bridge)
	if err != nil {
		return err
	}
	if _, ok := br.(*netlink.Bridge); !ok {
		return fmt.Errorf("%s is a %s, not a bridge", bridge, br.Type())
	}
	if l.Attrs().MasterIndex == br.Attrs().Index {
		return nil
	}
	if err := h.LinkSetMasterByIndex(l, br.Attrs().Index); err != nil {
		return fmt.Errorf("enslave %s to %s: %w", l.Attrs().Name, bridge, err)
	}
	return nil
}

// setMAC sets l's hardware address unless mac is nil or already right. A
// device that refuses a change while up is taken down for it.
func setMAC(h *netlink.Handle, l netlink.Link, mac net.HardwareAddr) error {
	if len(mac) == 0 || bytes.Equal(l.Attrs().HardwareAddr, mac) {
		return nil
	}
	err := h.LinkSetHardwareAddr(l, mac)
	if errors.Is(err, unix.EBUSY) {
		if err = h.LinkSetDown(l); err == nil {
			if err = h.LinkSetHardwareAddr(l, mac); err == nil {
				err = h.LinkSetUp(l)
			}
		}
	}
	if err != nil {
		return fmt.Errorf("set %s address %s: %w", l.Attrs().Name, mac, err)
	}
	return nil
}

func newAttrs(name string, mtu int) netlink.LinkAttrs {
	a := netlink.NewLinkAttrs()
	a.Name = name
	if mtu > 0 {
		a.MTU = mtu
	}
	return a
}

// EnsureBridge makes ns have an up bridge called name with the given MTU (0:
// the kernel's choice). An existing bridge is adjusted in place; an existing
// device of another type is an error.
func EnsureBridge(ns, name string, mtu int) error {
	return withHandle(ns, func(h *netlink.Handle) error {
		l, ok, err := linkByName(h, name)
		if err != nil {
			return err
		}
		if ok {
			if _, isBr := l.(*netlink.Bridge); !isBr {
				return fmt.Errorf("%s exists and is a %s, not a bridge", name, l.Type())
			}
		} else {
			if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: newAttrs(name, mtu)}); err != nil {
				return fmt.Errorf("create bridge %s: %w", name, err)
			}
			if l, err = mustLink(h, name); err != nil {
				return err
			}
		}
		if err := setMTU(h, l, mtu); err != nil {
			return err
		}
		return setUp(h, l)
	})
}

// VXLAN describes a VXLAN device with head-end replication: no multicast
// group, no learning; flooding goes to the peers SyncFloodPeers installs.
type VXLAN struct {
	Name   string
	VNI    int
	Local  netip.Addr // underlay source address (the node's local_ip)
	Port   int        // UDP port; 0 means DefaultVXLANPort
	Dev    string     // underlay device; "" lets routing decide
	MTU    int        // 0: the kernel's choice
	Bridge string     // bridge to enslave it to; "" for none
}

// EnsureVXLAN makes ns have the VXLAN device v, up and enslaved to v.Bridge
// (which must exist). MTU and master are adjusted in place; if the VNI, local
// address, port, underlay device or learning setting differ, the device is
// deleted and created anew (the kernel cannot change them), which drops its
// FDB: call SyncFloodPeers after.
func EnsureVXLAN(ns string, v VXLAN) error {
	if v.VNI <= 0 || v.VNI >= 1<<24 {
		return fmt.Errorf("vxlan %s: VNI %d out of range", v.Name, v.VNI)
	}
	if v.Port == 0 {
		v.Port = DefaultVXLANPort
	}
	return withHandle(ns, func(h *netlink.Handle) error {
		devIndex := 0
		if v.Dev != "" {
			d, err := mustLink(h, v.Dev)
			if err != nil {
				return err
			}
			devIndex = d.Attrs().Index
		}
		l, ok, err := linkByName(h, v.Name)
		if err != nil {
			return err
		}
		if ok {
			if !vxlanMatches(l, v, devIndex) {
				if err := h.LinkDel(l); err != nil {
					return fmt.Errorf("replace vxlan %s: %w", v.Name, err)
				}
				ok = false
			}
		}
		if !ok {
			vx := &netlink.Vxlan{
				LinkAttrs:    newAttrs(v.Name, v.MTU),
				VxlanId:      v.VNI,
				VtepDevIndex: devIndex,
				Port:         v.Port,
				Learning:     false,
			}
			if v.Local.IsValid() {
				vx.SrcAddr = v.Local.AsSlice()
			}
			if err := h.LinkAdd(vx); err != nil {
				return fmt.Errorf("create vxlan %s: %w", v.Name, err)
			}
			if l, err = mustLink(h, v.Name); err != nil {
				return err
			}
		}
		if err := setMTU(h, l, v.MTU); err != nil {
			return err
		}
		if err := setMaster(h, l, v.Bridge); err != nil {
			return err
		}
		return setUp(h, l)
	})
}

func vxlanMatches(l netlink.Link, v VXLAN, devIndex int) bool {
	vx, ok := l.(*netlink.Vxlan)
	if !ok {
		return false
	}
	var local netip.Addr
	if a, ok := netip.AddrFromSlice(vx.SrcAddr); ok {
		local = a.Unmap()
	}
	noGroup := len(vx.Group) == 0 || vx.Group.IsUnspecified()
	return vx.VxlanId == v.VNI && local == v.Local.Unmap() && vx.Port == v.Port &&
		!vx.Learning && vx.VtepDevIndex == devIndex && noGroup
}

var zeroMAC = net.HardwareAddr{0, 0, 0, 0, 0, 0}

// FloodPeers returns the remote addresses of the all-zero-MAC FDB entries of
// the VXLAN device dev: the peers broadcast, unknown unicast and multicast
// frames are replicated to. Sorted.
func FloodPeers(ns, dev string) ([]netip.Addr, error) {
	var out []netip.Addr
	err := withHandle(ns, func(h *netlink.Handle) error {
		l, err := mustLink(h, dev)
		if err != nil {
			return err
		}
		out, err = floodPeers(h, l)
		return err
	})
	return out, err
}

func floodPeers(h *netlink.Handle, l netlink.Link) ([]netip.Addr, error) {
	neighs, err := retryDump(func() ([]netlink.Neigh, error) { return h.NeighList(l.Attrs().Index, unix.AF_BRIDGE) })
	if err != nil {
		return nil, fmt.Errorf("list fdb of %s: %w", l.Attrs().Name, err)
	}
	var out []netip.Addr
	for _, n := range neighs {
		if n.LinkIndex != l.Attrs().Index || !bytes.Equal(n.HardwareAddr, zeroMAC) || n.IP == nil {
			continue
		}
		if a, ok := netip.AddrFromSlice(n.IP); ok {
			out = append(out, a.Unmap())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out, nil
}

func floodEntry(index int, peer netip.Addr) *netlink.Neigh {
	return &netlink.Neigh{
		LinkIndex:    index,
		Family:       unix.AF_BRIDGE,
		State:        netlink.NUD_NOARP | netlink.NUD_PERMANENT,
		Flags:        netlink.NTF_SELF,
		HardwareAddr: zeroMAC,
		IP:           peer.AsSlice(),
	}
}

// SyncFloodPeers makes the all-zero-MAC FDB entries of the VXLAN device dev
// point at exactly peers (head-end replication, `bridge fdb append
// 00:00:00:00:00:00 dev DEV dst PEER`): missing ones are appended, extra ones
// deleted, the others left alone. Entries for other MACs are not touched.
func SyncFloodPeers(ns, dev string, peers []netip.Addr) error {
	want := make(map[netip.Addr]bool, len(peers))
	for _, p := range peers {
		if !p.IsValid() {
			return fmt.Errorf("flood peers of %s: invalid address", dev)
		}
		want[p.Unmap()] = true
	}
	return withHandle(ns, func(h *netlink.Handle) error {
		l, err := mustLink(h, dev)
		if err != nil {
			return err
		}
		if _, ok := l.(*netlink.Vxlan); !ok {
			return fmt.Errorf("%s is a %s, not a vxlan device", dev, l.Type())
		}
		have, err := floodPeers(h, l)
		if err != nil {
			return err
		}
		haveSet := make(map[netip.Addr]bool, len(have))
		for _, p := range have {
			haveSet[p] = true
			if !want[p] {
				if err := h.NeighDel(floodEntry(l.Attrs().Index, p)); err != nil && !isNotFound(err) {
					return fmt.Errorf("delete flood peer %s of %s: %w", p, dev, err)
				}
			}
		}
		for _, p := range sortedAddrs(want) {
			if haveSet[p] {
				continue
			}
			if err := h.NeighAppend(floodEntry(l.Attrs().Index, p)); err != nil && !errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("add flood peer %s to %s: %w", p, dev, err)
			}
		}
		return nil
	})
}

func sortedAddrs(m map[netip.Addr]bool) []netip.Addr {
	out := make([]netip.Addr, 0, len(m))
	for a := range m {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}

// EnsurePhysicalInBridge enslaves the existing device iface (a flat
// network's physical interface) to bridge and brings it up.
func EnsurePhysicalInBridge(ns, iface, bridge string) error {
	return withHandle(ns, func(h *netlink.Handle) error {
		l, err := mustLink(h, iface)
		if err != nil {
			return err
		}
		if err := setMaster(h, l, bridge); err != nil {
			return err
		}
		return setUp(h, l)
	})
}

// Veth describes a router port's veth pair: one end in the node namespace,
// enslaved to a bridge, the other in a router namespace under its qr-/qg-/ha-
// name.
type Veth struct {
	NodeSide string           // name of the node-side end, e.g. NodeSideName(portID)
	Bridge   string           // bridge the node side joins; "" for none
	NS       string           // namespace of the other end (must exist)
	NSSide   string           // its name there, e.g. DeviceName(PrefixInternal, portID)
	MAC      net.HardwareAddr // the port's MAC, set on NSSide; nil: the kernel's
	MTU      int              // both ends; 0: the kernel's choice
}

// EnsureVeth makes nodeNS and v.NS hold the veth pair v, both ends up. A pair
// that exists with both ends peered to each other is adjusted in place (MAC,
// MTU, master): its interface indexes do not change. A half-present pair, or
// a device by either name that is not the other's peer, is deleted and the
// pair created anew, the namespace end directly in v.NS under its final name.
//
// The namespace end comes up as soon as it is created: set
// net.ipv6.conf.default.disable_ipv6 in the router namespace beforehand if it
// must never send IPv6 (Neutron LP#1859832).
func EnsureVeth(nodeNS string, v Veth) error {
	if v.NodeSide == "" || v.NSSide == "" || v.NS == "" {
		return fmt.Errorf("veth %q/%q: node side, namespace side and namespace are required", v.NodeSide, v.NSSide)
	}
	peerNS, err := openNS(v.NS)
	if err != nil {
		return err
	}
	defer peerNS.Close()
	return withHandle(nodeNS, func(hn *netlink.Handle) error {
		return withHandle(v.NS, func(hr *netlink.Handle) error {
			node, nodeOK, err := linkByName(hn, v.NodeSide)
			if err != nil {
				return err
			}
			peer, peerOK, err := linkByName(hr, v.NSSide)
			if err != nil {
				return err
			}
			if !(nodeOK && peerOK && vethPeers(node, peer)) {
				if nodeOK {
					if err := hn.LinkDel(node); err != nil && !isNotFound(err) {
						return fmt.Errorf("delete stale %s: %w", v.NodeSide, err)
					}
				}
				if peerOK {
					// Gone already if it was node's peer.
					if err := hr.LinkDel(peer); err != nil && !isNotFound(err) {
						return fmt.Errorf("delete stale %s in %s: %w", v.NSSide, v.NS, err)
					}
				}
				veth := netlink.NewVeth(newAttrs(v.NodeSide, v.MTU))
				veth.PeerName = v.NSSide
				veth.PeerNamespace = netlink.NsFd(peerNS)
				veth.PeerHardwareAddr = v.MAC
				if err := hn.LinkAdd(veth); err != nil {
					return fmt.Errorf("create veth %s/%s: %w", v.NodeSide, v.NSSide, err)
				}
				if node, err = mustLink(hn, v.NodeSide); err != nil {
					return err
				}
				if peer, err = mustLink(hr, v.NSSide); err != nil {
					return err
				}
			}
			if err := setMAC(hr, peer, v.MAC); err != nil {
				return err
			}
			if err := setMTU(hr, peer, v.MTU); err != nil {
				return err
			}
			if err := setMTU(hn, node, v.MTU); err != nil {
				return err
			}
			if err := setMaster(hn, node, v.Bridge); err != nil {
				return err
			}
			if err := setUp(hn, node); err != nil {
				return err
			}
			return setUp(hr, peer)
		})
	})
}

// vethPeers reports whether a and b are the two ends of one veth pair (each
// one's link index is the other's ifindex).
func vethPeers(a, b netlink.Link) bool {
	_, aVeth := a.(*netlink.Veth)
	_, bVeth := b.(*netlink.Veth)
	return aVeth && bVeth && a.Attrs().ParentIndex == b.Attrs().Index && b.Attrs().ParentIndex == a.Attrs().Index
}
