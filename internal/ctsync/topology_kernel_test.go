package ctsync

import (
	"net"
	"net/netip"
	"testing"

	"github.com/l3ha/l3ha/internal/kerneltest"
	"github.com/l3ha/l3ha/internal/linux"
)

// pair is two router namespaces with the same addresses and MACs between a
// client and a server, as a Neutron HA router's master and backup are: only
// the master's devices are up. sw holds the two switches (bridges), and the
// routers' ha0 devices share a third, the HA network.
type pair struct {
	client, server, sw string
	routers            [2]string
	haAddr             [2]netip.Prefix
}

var (
	clientIP   = netip.MustParseAddr("10.10.30.5")
	serverIP   = netip.MustParseAddr("172.24.4.1")
	snatIP     = netip.MustParseAddr("172.24.4.10")
	floatingIP = netip.MustParseAddr("172.24.4.20")
	internal   = netip.MustParsePrefix("10.10.30.0/24")
	haNet      = netip.MustParsePrefix("169.254.192.0/18")
)

func newPair(t testing.TB) *pair {
	t.Helper()
	kerneltest.Require(t)
	p := &pair{sw: kerneltest.Namespace(t), client: kerneltest.Namespace(t), server: kerneltest.Namespace(t)}
	p.routers = [2]string{kerneltest.Namespace(t), kerneltest.Namespace(t)}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, br := range []string{"brin", "brout", "brha"} {
		must(linux.EnsureBridge(p.sw, br, 0))
	}
	must(linux.EnsureVeth(p.sw, linux.Veth{NodeSide: "c0", Bridge: "brin", NS: p.client, NSSide: "eth0"}))
	must(linux.EnsureVeth(p.sw, linux.Veth{NodeSide: "s0", Bridge: "brout", NS: p.server, NSSide: "eth0"}))
	must(linux.AddAddress(p.client, "eth0", netip.PrefixFrom(clientIP, 24)))
	must(linux.AddAddress(p.server, "eth0", netip.PrefixFrom(serverIP, 24)))
	must(linux.SyncRoutes(p.client, linux.RouteProtocol, []linux.Route{{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("10.10.30.1")}}))
	qrMAC, _ := net.ParseMAC("fa:16:3e:00:00:01")
	qgMAC, _ := net.ParseMAC("fa:16:3e:00:00:02")
	for i, r := range p.routers {
		n := string(rune('1' + i))
		must(linux.SetSysctls(r, map[string]string{"net.ipv4.ip_forward": "1", "net.netfilter.nf_conntrack_tcp_loose": "0"}))
		must(linux.EnsureVeth(p.sw, linux.Veth{NodeSide: "qr" + n, Bridge: "brin", NS: r, NSSide: "qr0", MAC: qrMAC}))
		must(linux.EnsureVeth(p.sw, linux.Veth{NodeSide: "qg" + n, Bridge: "brout", NS: r, NSSide: "qg0", MAC: qgMAC}))
		must(linux.EnsureVeth(p.sw, linux.Veth{NodeSide: "ha" + n, Bridge: "brha", NS: r, NSSide: "ha0"}))
		p.haAddr[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{169, 254, 192, byte(1 + i)}), 18)
		must(linux.AddAddress(r, "ha0", p.haAddr[i]))
		must(linux.AddAddress(r, "qr0", netip.MustParsePrefix("10.10.30.1/24")))
		must(linux.AddAddress(r, "qg0", netip.PrefixFrom(snatIP, 24)))
		must(linux.AddAddress(r, "qg0", netip.PrefixFrom(floatingIP, 32)))
		must(linux.ApplyNAT(r, linux.NAT{GatewayDev: "qg0", SNATAddress: snatIP, EnableSNAT: true,
			InternalPrefixes: []netip.Prefix{internal}, FloatingIPs: []linux.FloatingIP{{Floating: floatingIP, Fixed: clientIP}}}))
	}
	p.activate(0)
	return p
}

// activate makes router i the one whose client- and server-side devices are
// up (its HA device stays up always), as a VRRP master's addresses are.
func (p *pair) activate(i int) {
	for j := range p.routers {
		for _, dev := range []string{"qr", "qg"} {
			setLinkUp(p.sw, dev+string(rune('1'+j)), j == i)
		}
	}
}
