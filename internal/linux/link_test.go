package linux

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func isUp(l netlink.Link) bool { return l.Attrs().Flags&net.FlagUp != 0 }

func TestEnsureBridgeIsIdempotentAndAdjustsInPlace(t *testing.T) {
	node := newNS(t)
	if err := EnsureBridge(node, "brq-test", 1450); err != nil {
		t.Fatal(err)
	}
	br := link(t, node, "brq-test")
	mustEqual(t, "type", br.Type(), "bridge")
	mustEqual(t, "mtu", br.Attrs().MTU, 1450)
	mustEqual(t, "up", isUp(br), true)

	steps := []struct {
		name string
		mtu  int
		want int
	}{
		{"same call again", 1450, 1450},
		{"mtu 0 leaves the mtu alone", 0, 1450},
		{"new mtu", 1400, 1400},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if err := EnsureBridge(node, "brq-test", s.mtu); err != nil {
				t.Fatal(err)
			}
			again := link(t, node, "brq-test")
			mustEqual(t, "ifindex", again.Attrs().Index, br.Attrs().Index)
			mustEqual(t, "mtu", again.Attrs().MTU, s.want)
			mustEqual(t, "up", isUp(again), true)
		})
	}

	t.Run("down bridge is brought up", func(t *testing.T) {
		inNS(t, node, func(h *netlink.Handle) error { return h.LinkSetDown(br) })
		if err := EnsureBridge(node, "brq-test", 0); err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "up", isUp(link(t, node, "brq-test")), true)
	})
	t.Run("device of another type is an error, not replaced", func(t *testing.T) {
		addDummy(t, node, "brq-notbridge")
		idx := link(t, node, "brq-notbridge").Attrs().Index
		if err := EnsureBridge(node, "brq-notbridge", 0); err == nil {
			t.Fatal("EnsureBridge over a veth succeeded")
		}
		mustEqual(t, "ifindex of the veth", link(t, node, "brq-notbridge").Attrs().Index, idx)
	})
}

func TestEnsureVXLANCreatesHeadEndReplicationDevice(t *testing.T) {
	node := newNS(t)
	if err := EnsureBridge(node, "brq-vx", 0); err != nil {
		t.Fatal(err)
	}
	v := VXLAN{Name: "vxlan-100", VNI: 100, Local: netip.MustParseAddr("192.0.2.10"), MTU: 1450, Bridge: "brq-vx"}
	if err := EnsureVXLAN(node, v); err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, vni int) netlink.Link {
		t.Helper()
		l := link(t, node, "vxlan-100")
		vx, ok := l.(*netlink.Vxlan)
		if !ok {
			t.Fatalf("vxlan-100 is a %s", l.Type())
		}
		mustEqual(t, "vni", vx.VxlanId, vni)
		mustEqual(t, "dstport", vx.Port, DefaultVXLANPort)
		mustEqual(t, "learning", vx.Learning, false)
		mustEqual(t, "local", vx.SrcAddr.String(), "192.0.2.10")
		mustEqual(t, "mtu", vx.MTU, 1450)
		mustEqual(t, "master", vx.MasterIndex, link(t, node, "brq-vx").Attrs().Index)
		mustEqual(t, "up", isUp(vx), true)
		return l
	}
	first := check(t, 100)

	t.Run("second call changes nothing", func(t *testing.T) {
		if err := EnsureVXLAN(node, v); err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "ifindex", check(t, 100).Attrs().Index, first.Attrs().Index)
	})
	t.Run("detached from the bridge is re-attached in place", func(t *testing.T) {
		inNS(t, node, func(h *netlink.Handle) error { return h.LinkSetNoMaster(first) })
		if err := EnsureVXLAN(node, v); err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "ifindex", check(t, 100).Attrs().Index, first.Attrs().Index)
	})
	t.Run("another VNI recreates the device", func(t *testing.T) {
		v2 := v
		v2.VNI = 200
		if err := EnsureVXLAN(node, v2); err != nil {
			t.Fatal(err)
		}
		check(t, 200)
	})
	t.Run("missing bridge is an error", func(t *testing.T) {
		v3 := v
		v3.Name, v3.Bridge = "vxlan-300", "no-such-br"
		if err := EnsureVXLAN(node, v3); err == nil {
			t.Fatal("EnsureVXLAN with a missing bridge succeeded")
		}
	})
}

func TestSyncFloodPeersConvergesFDBWithoutTouchingKeptPeers(t *testing.T) {
	node := newNS(t)
	if err := EnsureBridge(node, "brq-fdb", 0); err != nil {
		t.Fatal(err)
	}
	if err := EnsureVXLAN(node, VXLAN{Name: "vxlan-7", VNI: 7, Local: netip.MustParseAddr("192.0.2.1"), Bridge: "brq-fdb"}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name        string
		peers       []netip.Addr
		wantChanged []netip.Addr // peers whose FDB entry was added or deleted
	}{
		{"first peers are added", addrs("192.0.2.2", "192.0.2.3"), addrs("192.0.2.2", "192.0.2.3")},
		{"same peers: no FDB change at all", addrs("192.0.2.3", "192.0.2.2"), nil},
		{"one replaced: only it and the newcomer change", addrs("192.0.2.3", "192.0.2.4"), addrs("192.0.2.2", "192.0.2.4")},
		{"no peers: all removed", nil, addrs("192.0.2.3", "192.0.2.4")},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			changed := floodEventsDuring(t, node, "vxlan-7", func() error { return SyncFloodPeers(node, "vxlan-7", s.peers) })
			slices.SortFunc(changed, netip.Addr.Compare)
			changed = slices.Compact(changed)
			if !slices.Equal(changed, s.wantChanged) {
				t.Errorf("FDB entries changed for %v, want %v", changed, s.wantChanged)
			}
			got, err := FloodPeers(node, "vxlan-7")
			if err != nil {
				t.Fatal(err)
			}
			want := slices.Clone(s.peers)
			slices.SortFunc(want, netip.Addr.Compare)
			if !slices.Equal(got, want) {
				t.Errorf("flood peers = %v, want %v", got, want)
			}
		})
	}
	t.Run("kernel view matches bridge fdb show", func(t *testing.T) {
		if err := SyncFloodPeers(node, "vxlan-7", addrs("192.0.2.9")); err != nil {
			t.Fatal(err)
		}
		out := ipCmd(t, node, "bridge", "fdb", "show", "dev", "vxlan-7")
		if !containsLine(out, "00:00:00:00:00:00 dst 192.0.2.9 self permanent") {
			t.Errorf("bridge fdb show:\n%s\nwant an all-zero entry to 192.0.2.9", out)
		}
	})
	t.Run("not a vxlan device is an error", func(t *testing.T) {
		if err := SyncFloodPeers(node, "brq-fdb", addrs("192.0.2.2")); err == nil {
			t.Fatal("SyncFloodPeers on a bridge succeeded")
		}
	})
}

func containsLine(out, want string) bool {
	for _, l := range splitLines(out) {
		if l == want {
			return true
		}
	}
	return false
}

func splitLines(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '\n' {
			out = append(out, trimSpace(s[start:i]))
			start = i + 1
		}
	}
	return out
}

func trimSpace(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	return s
}

func TestEnsurePhysicalInBridgeEnslavesFlatInterface(t *testing.T) {
	node := newNS(t)
	if err := EnsureBridge(node, "brq-flat", 0); err != nil {
		t.Fatal(err)
	}
	addDummy(t, node, "eth-flat")
	inNS(t, node, func(h *netlink.Handle) error { return h.LinkSetDown(link(t, node, "eth-flat")) })
	for i := range 2 {
		if err := EnsurePhysicalInBridge(node, "eth-flat", "brq-flat"); err != nil {
			t.Fatalf("call %d: %v", i+1, err)
		}
		l := link(t, node, "eth-flat")
		mustEqual(t, "master", l.Attrs().MasterIndex, link(t, node, "brq-flat").Attrs().Index)
		mustEqual(t, "up", isUp(l), true)
	}
	ls, err := Links(node, "eth-flat")
	if err != nil || len(ls) != 2 || ls[0].Name != "eth-flat" || ls[0].Master != "brq-flat" || ls[1].Master != "" {
		t.Fatalf("Links = %+v, %v; want eth-flat with master brq-flat and its free peer", ls, err)
	}
	if err := EnsurePhysicalInBridge(node, "eth-missing", "brq-flat"); err == nil {
		t.Fatal("missing interface: no error")
	}
}

func TestEnsureVethPutsPortInRouterNamespace(t *testing.T) {
	node, router := newNS(t), newNS(t)
	if err := EnsureBridge(node, "brq-net", 1450); err != nil {
		t.Fatal(err)
	}
	const port = "6f1c2a9e-47d1-4b7f-9a52-3d5e0c8b1f20"
	mac, _ := net.ParseMAC("fa:16:3e:11:22:33")
	v := Veth{
		NodeSide: NodeSideName(port),
		Bridge:   "brq-net",
		NS:       router,
		NSSide:   DeviceName(PrefixInternal, port),
		MAC:      mac,
		MTU:      1450,
	}
	if err := EnsureVeth(node, v); err != nil {
		t.Fatal(err)
	}
	type ends struct{ node, ns int }
	check := func(t *testing.T, wantMAC net.HardwareAddr) ends {
		t.Helper()
		n := link(t, node, "tap6f1c2a9e-47")
		r := link(t, router, "qr-6f1c2a9e-47")
		mustEqual(t, "node side type", n.Type(), "veth")
		mustEqual(t, "router side type", r.Type(), "veth")
		mustEqual(t, "router side MAC", r.Attrs().HardwareAddr.String(), wantMAC.String())
		mustEqual(t, "router side mtu", r.Attrs().MTU, 1450)
		mustEqual(t, "node side mtu", n.Attrs().MTU, 1450)
		mustEqual(t, "node side master", n.Attrs().MasterIndex, link(t, node, "brq-net").Attrs().Index)
		mustEqual(t, "node side up", isUp(n), true)
		mustEqual(t, "router side up", isUp(r), true)
		if !vethPeers(n, r) {
			t.Fatalf("tap/qr are not each other's peers: %d->%d, %d->%d",
				n.Attrs().Index, n.Attrs().ParentIndex, r.Attrs().Index, r.Attrs().ParentIndex)
		}
		if ok, _ := LinkExists(node, "qr-6f1c2a9e-47"); ok {
			t.Fatal("qr- device left in the node namespace")
		}
		if ok, _ := LinkExists(router, "tap6f1c2a9e-47"); ok {
			t.Fatal("tap device in the router namespace")
		}
		return ends{n.Attrs().Index, r.Attrs().Index}
	}
	first := check(t, mac)

	t.Run("second call changes nothing", func(t *testing.T) {
		evs := addrEventsDuring(t, router, func() error { return EnsureVeth(node, v) })
		mustEqual(t, "ifindexes", check(t, mac), first)
		if len(evs) != 0 {
			t.Errorf("address events in the router namespace: %v", evs)
		}
	})
	t.Run("new MAC is set in place", func(t *testing.T) {
		mac2, _ := net.ParseMAC("fa:16:3e:44:55:66")
		v2 := v
		v2.MAC = mac2
		if err := EnsureVeth(node, v2); err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "ifindexes", check(t, mac2), first)
		if err := EnsureVeth(node, v); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("node side off the bridge and down is repaired in place", func(t *testing.T) {
		inNS(t, node, func(h *netlink.Handle) error {
			n := link(t, node, "tap6f1c2a9e-47")
			return errors.Join(h.LinkSetNoMaster(n), h.LinkSetDown(n))
		})
		if err := EnsureVeth(node, v); err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "ifindexes", check(t, mac), first)
	})
	t.Run("half-present pair is recreated", func(t *testing.T) {
		// A stray device under the router-side name, and no node side.
		if err := DeleteLink(node, v.NodeSide); err != nil {
			t.Fatal(err)
		}
		if ok, _ := LinkExists(router, v.NSSide); ok {
			t.Fatal("deleting one end of a veth left the other")
		}
		addDummy(t, router, v.NSSide)
		if err := EnsureVeth(node, v); err != nil {
			t.Fatal(err)
		}
		check(t, mac)
	})
	t.Run("missing router namespace is an error", func(t *testing.T) {
		v4 := v
		v4.NodeSide, v4.NS = "tap-orphan", testNSPrefix+"missing"
		if err := EnsureVeth(node, v4); !errors.Is(err, ErrNamespaceNotFound) {
			t.Fatalf("err = %v, want ErrNamespaceNotFound", err)
		}
	})
	t.Run("deleting the router namespace removes the node side at once", func(t *testing.T) {
		if err := DeleteNamespace(router); err != nil {
			t.Fatal(err)
		}
		if ok, err := LinkExists(node, v.NodeSide); err != nil || ok {
			t.Fatalf("node side still present after DeleteNamespace: %v, %v", ok, err)
		}
	})
}

func TestDeleteLinkIsIdempotent(t *testing.T) {
	ns := newNS(t)
	addDummy(t, ns, "del-me")
	for i := range 2 {
		if err := DeleteLink(ns, "del-me"); err != nil {
			t.Fatalf("call %d: %v", i+1, err)
		}
	}
	if ok, _ := LinkExists(ns, "del-me"); ok {
		t.Fatal("still there")
	}
	var lnf netlink.LinkNotFoundError
	inNS(t, ns, func(h *netlink.Handle) error {
		_, err := h.LinkByName("del-me")
		if !errors.As(err, &lnf) && !errors.Is(err, unix.ENODEV) {
			t.Errorf("LinkByName after delete: %v", err)
		}
		return nil
	})
}
