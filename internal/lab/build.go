package lab

import (
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/vishvananda/netlink"
)

// buildTopology creates the lab's namespaces and wires them:
//
//	l3ha-<lab>-fabric   bridge br0; port <node> per node  ── eth1 in each node (10.99.0.0/24)
//	l3ha-<lab>-ext      bridge br0; ports net1, net2      ── ext0 in each network node
//	                                port upstream         ── eth0 in l3ha-<lab>-upstream (172.24.4.1/24)
//	l3ha-<lab>-net1     eth1 10.99.0.1/24 (server) + 10.99.0.2/24 (VXLAN), ext0 (no address)
//	l3ha-<lab>-net2     eth1 10.99.0.3/24, ext0
//	l3ha-<lab>-compute1 eth1 10.99.0.4/24
//	l3ha-<lab>-vm1      the instance; its eth0 is made by `lab failover`
//
// Every device is created directly inside its namespace (veth peers are
// created with their peer namespace set): nothing ever appears in the root
// namespace.
func buildTopology(lab string) error {
	for _, role := range labRoles() {
		if err := createNamespace(NodeNamespace(lab, role)); err != nil {
			return err
		}
	}
	for _, role := range []string{fabricNS, externalNS, upstreamNS, instanceNS} {
		// Switches and hosts without agents need no IPv6 (no DAD, no MLD noise).
		disableIPv6(NodeNamespace(lab, role))
	}
	for _, role := range []string{fabricNS, externalNS} {
		if err := withHandle(NodeNamespace(lab, role), func(h *netlink.Handle) error {
			br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: devBridge}}
			if err := h.LinkAdd(br); err != nil {
				return fmt.Errorf("%s: add bridge %s: %w", NodeNamespace(lab, role), devBridge, err)
			}
			return h.LinkSetUp(br)
		}); err != nil {
			return err
		}
	}
	for _, n := range Nodes {
		nodeNS := NodeNamespace(lab, n.Name)
		if err := addPort(NodeNamespace(lab, fabricNS), n.Name, nodeNS, devFabric); err != nil {
			return err
		}
		addrs := []string{n.FabricIP}
		if n.Controller {
			addrs = []string{ControllerIP, n.FabricIP}
		}
		if err := upWithAddrs(nodeNS, devFabric, addrs, FabricPrefixLen); err != nil {
			return err
		}
		if n.Network {
			if err := addPort(NodeNamespace(lab, externalNS), n.Name, nodeNS, devExternal); err != nil {
				return err
			}
			if err := upWithAddrs(nodeNS, devExternal, nil, 0); err != nil {
				return err
			}
		}
	}
	upNS := NodeNamespace(lab, upstreamNS)
	if err := addPort(NodeNamespace(lab, externalNS), upstreamNS, upNS, devUplink); err != nil {
		return err
	}
	return upWithAddrs(upNS, devUplink, []string{UpstreamIP}, ExternalPrefix)
}

// addPort creates a veth pair: swName in switch namespace swNS, enslaved to
// its bridge and up, and peerName in peerNS (left down).
func addPort(swNS, swName, peerNS, peerName string) error {
	peer, err := openNS(peerNS)
	if err != nil {
		return err
	}
	defer peer.Close()
	return withHandle(swNS, func(h *netlink.Handle) error {
		br, err := h.LinkByName(devBridge)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", swNS, devBridge, err)
		}
		v := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: swName},
			PeerName:      peerName,
			PeerNamespace: netlink.NsFd(int(peer)),
		}
		if err := h.LinkAdd(v); err != nil {
			return fmt.Errorf("%s: add veth %s (peer %s in %s): %w", swNS, swName, peerName, peerNS, err)
		}
		l, err := h.LinkByName(swName)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", swNS, swName, err)
		}
		if err := h.LinkSetMaster(l, br); err != nil {
			return fmt.Errorf("%s: enslave %s: %w", swNS, swName, err)
		}
		return h.LinkSetUp(l)
	})
}

// upWithAddrs sets dev in ns up with the given IPv4 addresses.
func upWithAddrs(ns, dev string, addrs []string, prefix int) error {
	return withHandle(ns, func(h *netlink.Handle) error {
		l, err := h.LinkByName(dev)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", ns, dev, err)
		}
		for _, a := range addrs {
			ip := net.ParseIP(a).To4()
			if ip == nil {
				return fmt.Errorf("bad address %q", a)
			}
			addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: net.CIDRMask(prefix, 32)}}
			if err := h.AddrAdd(l, addr); err != nil {
				return fmt.Errorf("%s: %s: add %s/%d: %w", ns, dev, a, prefix, err)
			}
		}
		if err := h.LinkSetUp(l); err != nil {
			return fmt.Errorf("%s: %s up: %w", ns, dev, err)
		}
		return nil
	})
}

// disableIPv6 turns IPv6 off in namespace ns (best effort: a kernel without
// IPv6 has nothing to turn off).
func disableIPv6(ns string) {
	_ = inNamespace(ns, func() error {
		var errs []error
		for _, k := range []string{"all", "default"} {
			errs = append(errs, os.WriteFile("/proc/sys/net/ipv6/conf/"+k+"/disable_ipv6", []byte("1"), 0o644))
		}
		return errors.Join(errs...)
	})
}

// flushLinks deletes every device of ns except lo, so that the peers of its
// veths disappear at once (the kernel would otherwise remove them only when
// the namespace is finally freed).
func flushLinks(ns string) {
	_ = withHandle(ns, func(h *netlink.Handle) error {
		links, err := retryDump(h.LinkList)
		if err != nil {
			return err
		}
		for _, l := range links {
			if l.Attrs().Name == "lo" {
				continue
			}
			if err := h.LinkDel(l); err != nil && !isNotFound(err) {
				return err
			}
		}
		return nil
	})
}
