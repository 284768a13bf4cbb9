package linux

import (
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
)

func fip(floating, fixed string) FloatingIP {
	return FloatingIP{netip.MustParseAddr(floating), netip.MustParseAddr(fixed)}
}

func planComments(t *testing.T, n NAT) map[string][]string {
	t.Helper()
	plan, err := natPlan(n)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, c := range plan {
		var rs []string
		for _, r := range c.rules {
			rs = append(rs, r.comment)
		}
		out[c.name] = rs
	}
	return out
}

func TestNATPlanFollowsNeutron(t *testing.T) {
	full := NAT{
		GatewayDev:       "qg-1",
		SNATAddress:      netip.MustParseAddr("203.0.113.2"),
		EnableSNAT:       true,
		InternalPrefixes: prefixes("10.0.1.0/24", "10.0.0.0/24", "10.0.0.5/24"),
		FloatingIPs:      []FloatingIP{fip("203.0.113.51", "10.0.1.21"), fip("203.0.113.50", "10.0.0.20")},
	}
	noSNAT := full
	noSNAT.EnableSNAT = false
	noAddr := full
	noAddr.SNATAddress = netip.Addr{}
	tests := []struct {
		name string
		nat  NAT
		want map[string][]string
	}{
		{
			name: "snat and floating IPs, in a canonical order",
			nat:  full,
			want: map[string][]string{
				ChainPrerouting: {"fip dnat 203.0.113.50 to 10.0.0.20", "fip dnat 203.0.113.51 to 10.0.1.21"},
				ChainOutput:     {"fip dnat 203.0.113.50 to 10.0.0.20", "fip dnat 203.0.113.51 to 10.0.1.21"},
				ChainPostrouting: {
					"no nat unless out qg-1 or dnat",
					"fip snat 10.0.0.20 to 203.0.113.50",
					"fip snat 10.0.1.21 to 203.0.113.51",
					"snat 10.0.0.0/24 out qg-1 to 203.0.113.2",
					"snat 10.0.1.0/24 out qg-1 to 203.0.113.2",
					"hairpin snat 10.0.0.0/24 to 203.0.113.2",
					"hairpin snat 10.0.1.0/24 to 203.0.113.2",
				},
			},
		},
		{
			name: "enable_snat false keeps floating IPs only",
			nat:  noSNAT,
			want: map[string][]string{
				ChainPrerouting: {"fip dnat 203.0.113.50 to 10.0.0.20", "fip dnat 203.0.113.51 to 10.0.1.21"},
				ChainOutput:     {"fip dnat 203.0.113.50 to 10.0.0.20", "fip dnat 203.0.113.51 to 10.0.1.21"},
				ChainPostrouting: {
					"no nat unless out qg-1 or dnat",
					"fip snat 10.0.0.20 to 203.0.113.50",
					"fip snat 10.0.1.21 to 203.0.113.51",
				},
			},
		},
		{
			name: "no SNAT address means no SNAT",
			nat:  noAddr,
			want: planComments(t, noSNAT),
		},
		{
			name: "no gateway: empty chains",
			nat:  NAT{EnableSNAT: true, InternalPrefixes: prefixes("10.0.0.0/24")},
			want: map[string][]string{ChainPrerouting: nil, ChainOutput: nil, ChainPostrouting: nil},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := planComments(t, tt.nat)
			for _, chain := range []string{ChainPrerouting, ChainOutput, ChainPostrouting} {
				if !slices.Equal(got[chain], tt.want[chain]) {
					t.Errorf("%s:\n got %q\nwant %q", chain, got[chain], tt.want[chain])
				}
			}
		})
	}

	bad := []struct {
		name string
		nat  NAT
	}{
		{"floating IPs without gateway", NAT{FloatingIPs: []FloatingIP{fip("203.0.113.50", "10.0.0.20")}}},
		{"IPv6 floating IP", NAT{GatewayDev: "qg-1", FloatingIPs: []FloatingIP{fip("2001:db8::50", "10.0.0.20")}}},
		{"IPv6 internal prefix", NAT{GatewayDev: "qg-1", EnableSNAT: true, SNATAddress: netip.MustParseAddr("203.0.113.2"), InternalPrefixes: prefixes("2001:db8::/64")}},
		{"floating IP twice", NAT{GatewayDev: "qg-1", FloatingIPs: []FloatingIP{fip("203.0.113.50", "10.0.0.20"), fip("203.0.113.50", "10.0.0.21")}}},
		{"fixed IP twice", NAT{GatewayDev: "qg-1", FloatingIPs: []FloatingIP{fip("203.0.113.50", "10.0.0.20"), fip("203.0.113.51", "10.0.0.20")}}},
		{"device name too long", NAT{GatewayDev: "qg-0123456789abcdef"}},
	}
	for _, b := range bad {
		if _, err := natPlan(b.nat); err == nil {
			t.Errorf("%s: natPlan succeeded", b.name)
		}
	}
}

var counterRE = regexp.MustCompile(` counter packets \d+ bytes \d+`)

// nftTable lists NATTable of ns with the nft tool (an independent reader):
// its handle and its rule lines, counters stripped.
func nftTable(t *testing.T, ns string) (handle string, rules []string) {
	t.Helper()
	requireTool(t, "nft", "nftables")
	out := ipCmd(t, ns, "nft", "-a", "list", "table", "ip", NATTable)
	for _, l := range splitLines(out) {
		if strings.HasPrefix(l, "table ip "+NATTable) {
			handle = l[strings.Index(l, "# handle"):]
			continue
		}
		if strings.HasPrefix(l, "chain ") || strings.HasPrefix(l, "type ") || l == "}" || l == "" {
			continue
		}
		l = counterRE.ReplaceAllString(l, "")
		if i := strings.Index(l, " # handle"); i >= 0 {
			l = l[:i]
		}
		rules = append(rules, l)
	}
	return handle, rules
}

var testNAT = NAT{
	GatewayDev:       "qg-nat",
	SNATAddress:      netip.MustParseAddr("203.0.113.2"),
	EnableSNAT:       true,
	InternalPrefixes: prefixes("10.0.0.0/24"),
	FloatingIPs:      []FloatingIP{fip("203.0.113.50", "10.0.0.20")},
}

func TestApplyNATInstallsRulesetAndReappliesNothing(t *testing.T) {
	ns := newNS(t)
	if err := ApplyNAT(ns, testNAT); err != nil {
		t.Fatal(err)
	}
	handle, rules := nftTable(t, ns)
	want := []string{
		`ip daddr 203.0.113.50 dnat to 10.0.0.20 comment "fip dnat 203.0.113.50 to 10.0.0.20"`,
		`ip daddr 203.0.113.50 dnat to 10.0.0.20 comment "fip dnat 203.0.113.50 to 10.0.0.20"`,
		`oifname != "qg-nat" ct status ! dnat accept comment "no nat unless out qg-nat or dnat"`,
		`ip saddr 10.0.0.20 snat to 203.0.113.50 comment "fip snat 10.0.0.20 to 203.0.113.50"`,
		`oifname "qg-nat" ip saddr 10.0.0.0/24 snat to 203.0.113.2 comment "snat 10.0.0.0/24 out qg-nat to 203.0.113.2"`,
		`ip saddr 10.0.0.0/24 ct status dnat snat to 203.0.113.2 comment "hairpin snat 10.0.0.0/24 to 203.0.113.2"`,
	}
	if !slices.Equal(rules, want) {
		t.Fatalf("nft list table:\n%s\nwant:\n%s", strings.Join(rules, "\n"), strings.Join(want, "\n"))
	}
	chains, err := NATRules(ns)
	if err != nil {
		t.Fatal(err)
	}
	if len(chains) != 3 || chains[0].Name != ChainOutput || chains[1].Name != ChainPostrouting || chains[2].Name != ChainPrerouting {
		t.Fatalf("NATRules = %+v", chains)
	}

	t.Run("same NAT again leaves the table alone", func(t *testing.T) {
		if err := ApplyNAT(ns, testNAT); err != nil {
			t.Fatal(err)
		}
		again, rules2 := nftTable(t, ns)
		mustEqual(t, "table handle", again, handle)
		if !slices.Equal(rules2, want) {
			t.Fatalf("rules changed: %q", rules2)
		}
	})
	t.Run("tampered table is replaced", func(t *testing.T) {
		ipCmd(t, ns, "nft", "flush", "chain", "ip", NATTable, ChainPostrouting)
		if err := ApplyNAT(ns, testNAT); err != nil {
			t.Fatal(err)
		}
		if _, rules := nftTable(t, ns); !slices.Equal(rules, want) {
			t.Fatalf("rules after repair: %q", rules)
		}
	})
	t.Run("other NAT replaces the whole table", func(t *testing.T) {
		n := testNAT
		n.EnableSNAT = false
		n.FloatingIPs = []FloatingIP{fip("203.0.113.60", "10.0.0.30")}
		if err := ApplyNAT(ns, n); err != nil {
			t.Fatal(err)
		}
		h2, rules := nftTable(t, ns)
		if h2 == handle {
			t.Error("table handle unchanged: not replaced")
		}
		want := []string{
			`ip daddr 203.0.113.60 dnat to 10.0.0.30 comment "fip dnat 203.0.113.60 to 10.0.0.30"`,
			`ip daddr 203.0.113.60 dnat to 10.0.0.30 comment "fip dnat 203.0.113.60 to 10.0.0.30"`,
			`oifname != "qg-nat" ct status ! dnat accept comment "no nat unless out qg-nat or dnat"`,
			`ip saddr 10.0.0.30 snat to 203.0.113.60 comment "fip snat 10.0.0.30 to 203.0.113.60"`,
		}
		if !slices.Equal(rules, want) {
			t.Fatalf("rules:\n%s", strings.Join(rules, "\n"))
		}
	})
	t.Run("RemoveNAT deletes the table, twice", func(t *testing.T) {
		for range 2 {
			if err := RemoveNAT(ns); err != nil {
				t.Fatal(err)
			}
		}
		chains, err := NATRules(ns)
		if err != nil || chains != nil {
			t.Fatalf("NATRules after RemoveNAT = %v, %v", chains, err)
		}
	})
}

func TestApplyNATIsAllOrNothing(t *testing.T) {
	ns := newNS(t)
	if err := ApplyNAT(ns, testNAT); err != nil {
		t.Fatal(err)
	}
	handle, before := nftTable(t, ns)

	// Make the replacement batch fail at its very end: a rule for a chain
	// that does not exist. The kernel must then keep the old table whole,
	// though the batch deleted it and built most of the new one first.
	natBatchHook = func(c *nftables.Conn, tbl *nftables.Table) {
		c.AddRule(&nftables.Rule{
			Table: tbl,
			Chain: &nftables.Chain{Name: "no-such-chain", Table: tbl},
			Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}},
		})
	}
	t.Cleanup(func() { natBatchHook = nil })
	n := testNAT
	n.FloatingIPs = []FloatingIP{fip("203.0.113.60", "10.0.0.30")}
	if err := ApplyNAT(ns, n); err == nil {
		t.Fatal("ApplyNAT with a broken batch succeeded")
	}
	after, rules := nftTable(t, ns)
	mustEqual(t, "table handle", after, handle)
	if !slices.Equal(rules, before) {
		t.Fatalf("rules after a failed replace:\n%s\nwant the old ones:\n%s", strings.Join(rules, "\n"), strings.Join(before, "\n"))
	}

	natBatchHook = nil
	if err := ApplyNAT(ns, n); err != nil {
		t.Fatal(err)
	}
	if _, rules := nftTable(t, ns); !slices.Contains(rules, `ip saddr 10.0.0.30 snat to 203.0.113.60 comment "fip snat 10.0.0.30 to 203.0.113.60"`) {
		t.Fatalf("new rules not applied: %q", rules)
	}
}

// routerLab is a router namespace between two internal networks and an
// external one, each network a bridge in a node namespace, as the agent
// wires it:
//
//	client 10.0.0.10 ─ br-a ─ qr-a 10.0.0.1 ┐
//	inst   10.0.1.20 ─ br-b ─ qr-b 10.0.1.1 ├ router ─ qg 203.0.113.2 ─ br-x ─ upstream 203.0.113.1
//	                   (floating IP 203.0.113.50 → 10.0.1.20)
//
// The upstream has no route to 10.0.0.0/16: only NAT gets replies back.
type routerLab struct {
	node, router, client, inst, upstream string
	nat                                  NAT
}

func newRouterLab(t *testing.T) *routerLab {
	t.Helper()
	l := &routerLab{node: newNS(t), router: newNS(t), client: newNS(t), inst: newNS(t), upstream: newNS(t)}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, br := range []string{"br-a", "br-b", "br-x"} {
		must(EnsureBridge(l.node, br, 0))
	}
	ports := []struct {
		tap, br, ns, dev, mac string
		addrs                 []netip.Prefix
	}{
		{"tap-qra", "br-a", l.router, "qr-a", "fa:16:3e:00:00:01", prefixes("10.0.0.1/24")},
		{"tap-qrb", "br-b", l.router, "qr-b", "fa:16:3e:00:00:02", prefixes("10.0.1.1/24")},
		{"tap-qg", "br-x", l.router, "qg-lab", "fa:16:3e:00:00:03", prefixes("203.0.113.2/24", "203.0.113.50/32")},
		{"tap-cl", "br-a", l.client, "eth0", "fa:16:3e:00:00:10", prefixes("10.0.0.10/24")},
		{"tap-in", "br-b", l.inst, "eth0", "fa:16:3e:00:00:20", prefixes("10.0.1.20/24")},
		{"tap-up", "br-x", l.upstream, "eth0", "fa:16:3e:00:00:30", prefixes("203.0.113.1/24")},
	}
	for _, p := range ports {
		mac, _ := net.ParseMAC(p.mac)
		must(EnsureVeth(l.node, Veth{NodeSide: p.tap, Bridge: p.br, NS: p.ns, NSSide: p.dev, MAC: mac, MTU: 1450}))
		must(SyncAddresses(p.ns, p.dev, p.addrs))
	}
	must(SyncRoutes(l.client, RouteProtocol, []Route{rt("0.0.0.0/0", "10.0.0.1", "eth0")}))
	must(SyncRoutes(l.inst, RouteProtocol, []Route{rt("0.0.0.0/0", "10.0.1.1", "eth0")}))
	must(SetSysctls(l.router, map[string]string{"net.ipv4.ip_forward": "1", "net.ipv4.ip_nonlocal_bind": "1"}))
	l.nat = NAT{
		GatewayDev:       "qg-lab",
		SNATAddress:      netip.MustParseAddr("203.0.113.2"),
		EnableSNAT:       true,
		InternalPrefixes: prefixes("10.0.0.0/24", "10.0.1.0/24"),
		FloatingIPs:      []FloatingIP{fip("203.0.113.50", "10.0.1.20")},
	}
	must(ApplyNAT(l.router, l.nat))
	return l
}

// listenUDP opens a UDP socket inside ns (it stays there).
func listenUDP(t *testing.T, ns string, port int) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := Do(ns, func() (err error) {
		c, err = net.ListenUDP("udp4", &net.UDPAddr{Port: port})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// exchange sends a datagram from from to dst until to receives it (the
// first ones may wait for ARP), then answers it and waits for the answer at
// from. It returns the source address to saw.
func exchange(t *testing.T, from *net.UDPConn, dst string, to *net.UDPConn, payload string) netip.Addr {
	t.Helper()
	d := netip.MustParseAddrPort(dst)
	buf := make([]byte, 256)
	deadline := time.Now().Add(eventTimeout)
	for time.Now().Before(deadline) {
		if _, err := from.WriteToUDPAddrPort([]byte(payload), d); err != nil {
			t.Fatalf("send to %s: %v", dst, err)
		}
		to.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
		n, src, err := to.ReadFromUDPAddrPort(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			t.Fatal(err)
		}
		if string(buf[:n]) != payload {
			continue
		}
		// Answer: the reply must find its way back through conntrack.
		if _, err := to.WriteToUDPAddrPort([]byte("re:"+payload), src); err != nil {
			t.Fatal(err)
		}
		for time.Now().Before(deadline) {
			from.SetReadDeadline(deadline)
			n, rsrc, err := from.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("%s: no reply from %s: %v", payload, dst, err)
			}
			if string(buf[:n]) == "re:"+payload {
				if rsrc != d {
					t.Errorf("%s: reply came from %s, want %s", payload, rsrc, d)
				}
				return src.Addr().Unmap()
			}
		}
	}
	t.Fatalf("%s: nothing reached %s", payload, dst)
	return netip.Addr{}
}

func TestNATTranslatesRealTraffic(t *testing.T) {
	l := newRouterLab(t)
	upSrv := listenUDP(t, l.upstream, 7001)
	instSrv := listenUDP(t, l.inst, 7002)
	clientSrv := listenUDP(t, l.client, 7003)
	client := listenUDP(t, l.client, 0)
	inst := listenUDP(t, l.inst, 0)
	upstream := listenUDP(t, l.upstream, 0)

	tests := []struct {
		name    string
		from    *net.UDPConn
		dst     string
		to      *net.UDPConn
		wantSrc string // the source address the receiver sees
	}{
		{"internal host without floating IP goes out as the gateway IP (SNAT)", client, "203.0.113.1:7001", upSrv, "203.0.113.2"},
		{"host with a floating IP goes out as its floating IP", inst, "203.0.113.1:7001", upSrv, "203.0.113.50"},
		{"upstream reaches the host through its floating IP (DNAT), unmasqueraded", upstream, "203.0.113.50:7002", instSrv, "203.0.113.1"},
		{"internal networks talk without NAT", inst, "10.0.0.10:7003", clientSrv, "10.0.1.20"},
		{"internal host reaching a floating IP is hairpinned", client, "203.0.113.50:7002", instSrv, "203.0.113.2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := exchange(t, tt.from, tt.dst, tt.to, tt.name)
			mustEqual(t, "source seen by the receiver", got.String(), tt.wantSrc)
		})
	}

	t.Run("ping through SNAT", func(t *testing.T) {
		requireTool(t, "ping", "iputils-ping")
		deadline := time.Now().Add(eventTimeout)
		for {
			out, err := exec.Command("ip", "netns", "exec", l.client, "ping", "-c1", "-W1", "203.0.113.1").CombinedOutput()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("ping: %v\n%s", err, out)
			}
		}
	})

	t.Run("reapplying the same NAT keeps rules and counters", func(t *testing.T) {
		before := natCounters(t, l.router)
		if before["fip dnat 203.0.113.50 to 10.0.1.20"] == 0 {
			t.Fatalf("DNAT rule never hit: %v", before)
		}
		if err := ApplyNAT(l.router, l.nat); err != nil {
			t.Fatal(err)
		}
		after := natCounters(t, l.router)
		for k, v := range before {
			if after[k] < v {
				t.Errorf("counter of %q went from %d to %d: table was replaced", k, v, after[k])
			}
		}
	})
}

// natCounters reads the packet counters of NATTable's prerouting rules by
// comment.
func natCounters(t *testing.T, ns string) map[string]uint64 {
	t.Helper()
	c, done, err := nftConn(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	rules, err := c.GetRules(natTableRef, &nftables.Chain{Name: ChainPrerouting, Table: natTableRef})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, r := range rules {
		comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
		for _, e := range r.Exprs {
			if ctr, ok := e.(*expr.Counter); ok {
				out[comment] = ctr.Packets
			}
		}
	}
	return out
}
