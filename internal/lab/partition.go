package lab

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/l3ha/l3ha/internal/linux"
)

// partitionTable is the nftables table (family inet, in a node's namespace)
// with which the lab partitions an overlay network between two nodes.
const partitionTable = "l3ha_partition"

// partitionVXLAN cuts, in node's namespace, the VXLAN traffic between node
// and peer, both ways, of VNI vni only (0: of every VNI): VXLAN packets to
// and from peer's underlay address are dropped before the VXLAN device sees
// them. The overlay network (an HA network: VRRP) is partitioned between the
// two nodes while everything else keeps flowing — the agents' connections to
// the server included, and the network to any third node. healVXLAN undoes
// it; deleting the lab does too.
func partitionVXLAN(ctx context.Context, lab, node, peer string, vni int) error {
	p, ok := nodeByName(peer)
	if !ok {
		return fmt.Errorf("partition: no node %q", peer)
	}
	match := fmt.Sprintf("udp dport %d", linux.DefaultVXLANPort)
	if vni > 0 {
		// The VNI: bits 32–55 of the VXLAN header, which follows the 8
		// bytes of the UDP header.
		match += fmt.Sprintf(" @th,96,24 %d", vni)
	}
	script := strings.Join([]string{
		"table inet " + partitionTable + " {",
		"  chain in { type filter hook input priority raw; policy accept; ip saddr " + p.FabricIP + " " + match + " counter drop; }",
		"  chain out { type filter hook output priority raw; policy accept; ip daddr " + p.FabricIP + " " + match + " counter drop; }",
		"}",
	}, "\n") + "\n"
	f, err := os.CreateTemp("", "l3ha-partition-*.nft")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, werr := f.WriteString(script)
	if err := f.Close(); err != nil || werr != nil {
		return fmt.Errorf("partition: writing the nft script: %v %v", werr, err)
	}
	ns := NodeNamespace(lab, node)
	if out, err := runIn(ctx, ns, "nft", "-f", f.Name()); err != nil {
		return fmt.Errorf("partition: nft in %s: %w: %s", ns, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// healVXLAN removes what partitionVXLAN did in node's namespace (nothing if
// it did nothing).
func healVXLAN(ctx context.Context, lab, node string) error {
	ns := NodeNamespace(lab, node)
	out, err := runIn(ctx, ns, "nft", "list", "tables")
	if err != nil {
		return fmt.Errorf("heal: nft in %s: %w: %s", ns, err, strings.TrimSpace(string(out)))
	}
	if !strings.Contains(string(out), "inet "+partitionTable) {
		return nil
	}
	if out, err := runIn(ctx, ns, "nft", "delete", "table", "inet", partitionTable); err != nil {
		return fmt.Errorf("heal: nft in %s: %w: %s", ns, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// networkVNI returns the VNI of the VXLAN device that wires network netID
// on node (the one enslaved to the network's bridge in the node's
// namespace).
func networkVNI(lab, node, netID string) (int, error) {
	ns := NodeNamespace(lab, node)
	vni := 0
	err := withHandle(ns, func(h *netlink.Handle) error {
		br, err := h.LinkByName(BridgeName(netID))
		if err != nil {
			return fmt.Errorf("%s: bridge of network %s: %w", ns, netID, err)
		}
		links, err := retryDump(h.LinkList)
		if err != nil {
			return err
		}
		for _, l := range links {
			if vx, ok := l.(*netlink.Vxlan); ok && l.Attrs().MasterIndex == br.Attrs().Index {
				vni = vx.VxlanId
				return nil
			}
		}
		return fmt.Errorf("%s: no VXLAN device on bridge %s", ns, br.Attrs().Name)
	})
	return vni, err
}
