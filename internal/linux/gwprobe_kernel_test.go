package linux_test

// Kernel tier for GatewayProber: a router namespace whose qg- device is one
// end of a veth pair, the other end in a namespace that plays the upstream
// gateway; and, for what the probes teach the network, a bridge joining the
// gateway to a master and a backup whose qg- devices share the router's MAC.
// All are throwaway l3ha-test-<random> namespaces (kerneltest.Namespace),
// deleted when each test ends.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"

	"github.com/l3ha/l3ha/internal/kerneltest"
	"github.com/l3ha/l3ha/internal/linux"
)

// answerTimeout bounds a probe that must succeed: it returns as soon as the
// reply arrives, so it is generous for a loaded two-core machine.
const answerTimeout = 15 * time.Second

// silenceTimeout is how long a probe that must fail waits: no reply can
// come, so it only has to be long enough to be a real wait.
const silenceTimeout = 300 * time.Millisecond

var (
	gwAddr  = netip.MustParsePrefix("192.0.2.1/24")
	gwIP    = gwAddr.Addr()
	ownAddr = netip.MustParsePrefix("192.0.2.10/24")
)

// gwLab is a router namespace with device dev joined to device gwDev in a
// gateway namespace holding gwAddr.
type gwLab struct {
	router, gateway string
	dev, gwDev      string
}

func newGWLab(t *testing.T) gwLab {
	t.Helper()
	kerneltest.Require(t, "ip")
	l := gwLab{router: kerneltest.Namespace(t), gateway: kerneltest.Namespace(t), dev: "qg-gwprobe", gwDev: "gw-gwprobe"}
	l.wire(t)
	if err := linux.AddAddress(l.gateway, l.gwDev, gwAddr); err != nil {
		t.Fatal(err)
	}
	return l
}

// wire (re)creates the veth pair, both ends up.
func (l gwLab) wire(t *testing.T) {
	t.Helper()
	if err := linux.EnsureVeth(l.gateway, linux.Veth{NodeSide: l.gwDev, NS: l.router, NSSide: l.dev}); err != nil {
		t.Fatal(err)
	}
}

// mac is the lab's probe MAC: its router namespace stands for the router.
func (l gwLab) mac() net.HardwareAddr { return linux.ProbeMAC("gwprobe-test-host", l.router) }

func (l gwLab) prober(t *testing.T) *linux.GatewayProber {
	t.Helper()
	return newProber(t, l.router, l.dev, l.mac())
}

func newProber(t *testing.T, ns, dev string, mac net.HardwareAddr) *linux.GatewayProber {
	t.Helper()
	p := linux.NewGatewayProber(ns, dev, mac)
	t.Cleanup(func() { p.Close() })
	return p
}

// neighbours is the gateway's view of who asked it: `ip neigh` there.
func (l gwLab) neighbours(t *testing.T) string {
	t.Helper()
	return neighbours(t, l.gateway, l.gwDev)
}

func neighbours(t *testing.T, ns, dev string) string {
	t.Helper()
	out, err := exec.Command("ip", "-n", ns, "neigh", "show", "dev", dev).CombinedOutput()
	if err != nil {
		t.Fatalf("ip neigh: %v\n%s", err, out)
	}
	return string(out)
}

// mustNotBePromiscuous fails t unless dev in ns is in no promiscuous mode,
// IFF_PROMISC or a socket's membership: the probe's reply must arrive
// without either.
func mustNotBePromiscuous(t *testing.T, ns, dev string) {
	t.Helper()
	out, err := exec.Command("ip", "-d", "-n", ns, "link", "show", "dev", dev).CombinedOutput()
	if err != nil {
		t.Fatalf("ip link: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "PROMISC") || !strings.Contains(string(out), " promiscuity 0 ") {
		t.Fatalf("%s in %s is promiscuous:\n%s", dev, ns, out)
	}
}

func mustAnswer(t *testing.T, p *linux.GatewayProber, gw netip.Addr) {
	t.Helper()
	ok, err := p.Probe(t.Context(), gw, answerTimeout)
	if err != nil || !ok {
		t.Fatalf("Probe(%s) = %v, %v; want a reply", gw, ok, err)
	}
}

func TestGWProbeHealthyWhenTheGatewayAnswers(t *testing.T) {
	kerneltest.Require(t, "ip")
	// Whatever the device's addresses, the probe is the same RFC 5227
	// probe from the probe MAC: the gateway learns nothing from it.
	cases := []struct {
		name string
		own  []netip.Prefix // on the probing device
	}{
		{"master with an address on the gateway's subnet", []netip.Prefix{ownAddr}},
		{"backup without an address", nil},
		{"address on another subnet only", []netip.Prefix{netip.MustParsePrefix("198.51.100.10/24")}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := newGWLab(t)
			for _, a := range c.own {
				if err := linux.AddAddress(l.router, l.dev, a); err != nil {
					t.Fatal(err)
				}
			}
			mustAnswer(t, l.prober(t), gwIP)
			if neigh := l.neighbours(t); strings.Contains(neigh, "lladdr") {
				t.Errorf("an ARP probe taught the gateway a neighbour:\n%s", neigh)
			}
			mustNotBePromiscuous(t, l.router, l.dev)
		})
	}
}

func TestProbeMACIsStableLocalUnicastAndPerNodeAndRouter(t *testing.T) {
	a := linux.ProbeMAC("node-1", "router-1")
	if !bytes.Equal(a, linux.ProbeMAC("node-1", "router-1")) {
		t.Fatal("ProbeMAC differs between two calls")
	}
	if len(a) != 6 || a[0] != 0x02 {
		t.Fatalf("ProbeMAC = %v, want 02:… (locally administered, unicast)", a)
	}
	seen := map[string]string{}
	// Host names have no "/", which keeps host + "/" + router unambiguous.
	for _, host := range []string{"node-1", "node-2", "node-3", "node-1.example.org", ""} {
		for _, router := range []string{"router-1", "router-2", "5d9a3b1c-8f0e-4c1a-9d2e-7b6f5a4c3d2e", ""} {
			m := linux.ProbeMAC(host, router)
			if m[0] != 0x02 {
				t.Errorf("ProbeMAC(%q, %q) = %v, want 02:…", host, router, m)
			}
			if strings.HasPrefix(m.String(), "fa:16:3e:") {
				t.Errorf("ProbeMAC(%q, %q) = %v: a Neutron port's range", host, router, m)
			}
			key := host + " " + router
			if other, ok := seen[m.String()]; ok {
				t.Errorf("ProbeMAC(%s) = ProbeMAC(%s) = %v", key, other, m)
			}
			seen[m.String()] = key
		}
	}
}

func TestGWProbeOneShotAnswers(t *testing.T) {
	l := newGWLab(t)
	ok, err := linux.ProbeGateway(t.Context(), l.router, l.dev, l.mac(), gwIP, answerTimeout)
	if err != nil || !ok {
		t.Fatalf("ProbeGateway = %v, %v; want a reply", ok, err)
	}
}

// TestGWProbeUnhealthyWhileTheGatewayIsGone breaks the path in each way the
// gateway can be lost, checks that the same prober (sockets kept from the
// healthy probe before) sees it, then mends it and checks it recovers.
func TestGWProbeUnhealthyWhileTheGatewayIsGone(t *testing.T) {
	kerneltest.Require(t, "ip")
	cases := []struct {
		name         string
		wantErr      bool // the probe cannot even be made
		break_, mend func(t *testing.T, l gwLab)
	}{
		{
			name:   "gateway address removed",
			break_: func(t *testing.T, l gwLab) { mustNil(t, linux.DelAddress(l.gateway, l.gwDev, gwAddr)) },
			mend:   func(t *testing.T, l gwLab) { mustNil(t, linux.AddAddress(l.gateway, l.gwDev, gwAddr)) },
		},
		{
			name:   "gateway's link down",
			break_: func(t *testing.T, l gwLab) { kerneltest.Run(t, "ip", "-n", l.gateway, "link", "set", l.gwDev, "down") },
			mend:   func(t *testing.T, l gwLab) { kerneltest.Run(t, "ip", "-n", l.gateway, "link", "set", l.gwDev, "up") },
		},
		{
			name:    "probing device down",
			wantErr: true,
			break_:  func(t *testing.T, l gwLab) { kerneltest.Run(t, "ip", "-n", l.router, "link", "set", l.dev, "down") },
			mend:    func(t *testing.T, l gwLab) { kerneltest.Run(t, "ip", "-n", l.router, "link", "set", l.dev, "up") },
		},
		{
			name:    "probing device deleted",
			wantErr: true,
			break_:  func(t *testing.T, l gwLab) { mustNil(t, linux.DeleteLink(l.router, l.dev)) },
			mend: func(t *testing.T, l gwLab) {
				l.wire(t)
				mustNil(t, linux.AddAddress(l.gateway, l.gwDev, gwAddr))
			},
		},
	}
	for _, c := range cases {
		for _, own := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/own address %v", c.name, own), func(t *testing.T) {
				l := newGWLab(t)
				if own {
					mustNil(t, linux.AddAddress(l.router, l.dev, ownAddr))
				}
				p := l.prober(t)
				mustAnswer(t, p, gwIP)

				c.break_(t, l)
				ok, err := p.Probe(t.Context(), gwIP, silenceTimeout)
				if ok || (err != nil) != c.wantErr {
					t.Fatalf("Probe with %s = %v, %v; want false, error %v", c.name, ok, err, c.wantErr)
				}

				c.mend(t, l)
				if own {
					// A re-created device has lost its address.
					mustNil(t, linux.AddAddress(l.router, l.dev, ownAddr))
				}
				mustAnswer(t, p, gwIP)
			})
		}
	}
}

func TestGWProbeRecoversAfterTheDeviceIsRecreated(t *testing.T) {
	l := newGWLab(t)
	p := l.prober(t)
	mustAnswer(t, p, gwIP)
	for i := range 3 {
		mustNil(t, linux.DeleteLink(l.router, l.dev))
		if ok, err := p.Probe(t.Context(), gwIP, silenceTimeout); ok || err == nil {
			t.Fatalf("round %d: Probe without the device = %v, %v; want an error", i, ok, err)
		}
		l.wire(t)
		mustNil(t, linux.AddAddress(l.gateway, l.gwDev, gwAddr))
		mustAnswer(t, p, gwIP)
	}
}

func TestGWProbeRecoversAfterTheNamespaceIsRecreated(t *testing.T) {
	l := newGWLab(t)
	p := l.prober(t)
	mustAnswer(t, p, gwIP)
	mustNil(t, linux.DeleteNamespace(l.router))
	if ok, err := p.Probe(t.Context(), gwIP, silenceTimeout); ok || err == nil {
		t.Fatalf("Probe without the namespace = %v, %v; want an error", ok, err)
	}
	mustNil(t, linux.CreateNamespace(l.router)) // kerneltest.Namespace's cleanup deletes it
	l.wire(t)
	mustNil(t, linux.AddAddress(l.gateway, l.gwDev, gwAddr))
	mustAnswer(t, p, gwIP)
}

func TestGWProbeEndsAtOnceWhenCancelled(t *testing.T) {
	l := newGWLab(t)
	mustNil(t, linux.DelAddress(l.gateway, l.gwDev, gwAddr)) // nobody will answer
	const long = time.Minute
	const soon = 10 * time.Second // far below long, far above a prompt return

	cases := []struct {
		name  string
		start func(cancel context.CancelFunc, p *linux.GatewayProber)
		want  error // nil: any error
	}{
		{"context cancelled before the probe", func(cancel context.CancelFunc, _ *linux.GatewayProber) { cancel() }, context.Canceled},
		{"context cancelled during the probe", func(cancel context.CancelFunc, _ *linux.GatewayProber) {
			time.AfterFunc(50*time.Millisecond, cancel)
		}, context.Canceled},
		{"prober closed during the probe", func(_ context.CancelFunc, p *linux.GatewayProber) {
			time.AfterFunc(50*time.Millisecond, func() { p.Close() })
		}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := l.prober(t)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			c.start(cancel, p)
			began := time.Now()
			ok, err := p.Probe(ctx, gwIP, long)
			took := time.Since(began)
			if ok || err == nil || (c.want != nil && !errors.Is(err, c.want)) {
				t.Fatalf("Probe = %v, %v; want false, %v", ok, err, c.want)
			}
			if took > soon {
				t.Fatalf("Probe took %v to end", took)
			}
		})
	}

	t.Run("waiting for a busy prober is cancelled too", func(t *testing.T) {
		p := l.prober(t)
		busy, stopBusy := context.WithCancel(t.Context())
		defer stopBusy()
		done := make(chan struct{})
		go func() { defer close(done); p.Probe(busy, gwIP, long) }()
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		began := time.Now()
		if _, err := p.Probe(ctx, gwIP, long); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("second Probe: %v, want the context's deadline", err)
		}
		if took := time.Since(began); took > soon {
			t.Fatalf("second Probe took %v to end", took)
		}
		stopBusy()
		<-done
	})
}

// TestGWProbeManyRoutersConcurrently probes several routers at once, and one
// prober from several goroutines: each answer must be its own router's.
func TestGWProbeManyRoutersConcurrently(t *testing.T) {
	kerneltest.Require(t, "ip")
	const routers, rounds = 6, 5
	gateway := kerneltest.Namespace(t)
	// One namespace plays every router's gateway: it must answer only for
	// the address of the device asked on, or "nobody answers" below would
	// be answered (Linux's default is to answer for any of its addresses).
	mustNil(t, linux.SetSysctls(gateway, map[string]string{"net.ipv4.conf.all.arp_ignore": "1"}))
	type router struct {
		p  *linux.GatewayProber
		gw netip.Addr
	}
	rs := make([]router, routers)
	for i := range rs {
		ns := kerneltest.Namespace(t)
		gwDev := fmt.Sprintf("gw-many%d", i)
		mustNil(t, linux.EnsureVeth(gateway, linux.Veth{NodeSide: gwDev, NS: ns, NSSide: "qg-many"}))
		gw := netip.MustParsePrefix(fmt.Sprintf("198.18.%d.1/24", i))
		mustNil(t, linux.AddAddress(gateway, gwDev, gw))
		if i%2 == 0 {
			mustNil(t, linux.AddAddress(ns, "qg-many", netip.MustParsePrefix(fmt.Sprintf("198.18.%d.10/24", i))))
		}
		rs[i] = router{newProber(t, ns, "qg-many", linux.ProbeMAC("gwprobe-test-host", fmt.Sprint("router-", i))), gw.Addr()}
	}
	// Router 0's gateway asked through router 1's device: nobody answers.
	wrong := rs[1]
	wrong.gw = rs[0].gw

	var wg sync.WaitGroup
	errs := make(chan error, routers*rounds*2+rounds)
	for i, r := range append(rs, rs...) { // two goroutines per prober
		wg.Go(func() {
			for range rounds {
				if ok, err := r.p.Probe(t.Context(), r.gw, answerTimeout); !ok || err != nil {
					errs <- fmt.Errorf("goroutine %d: Probe(%s) = %v, %v", i, r.gw, ok, err)
				}
			}
		})
	}
	wg.Go(func() {
		for range rounds {
			if ok, err := wrong.p.Probe(t.Context(), wrong.gw, silenceTimeout); ok || err != nil {
				errs <- fmt.Errorf("another router's gateway: Probe(%s) = %v, %v; want false, nil", wrong.gw, ok, err)
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestGWProbeRejectsWhatARPCannotAsk(t *testing.T) {
	p := linux.NewGatewayProber(linux.NodeNS, "qg-none", linux.ProbeMAC("host", "router"))
	defer p.Close()
	for _, c := range []struct {
		name string
		mac  net.HardwareAddr
	}{
		{"no probe MAC", nil},
		{"multicast probe MAC", net.HardwareAddr{0x03, 0, 0, 0, 0, 1}},
		{"broadcast probe MAC", ethernet.Broadcast},
		{"zero probe MAC", make(net.HardwareAddr, 6)},
		{"not an Ethernet probe MAC", net.HardwareAddr{0x02, 0, 0, 0, 0, 0, 0, 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := linux.NewGatewayProber(linux.NodeNS, "qg-none", c.mac)
			defer p.Close()
			if ok, err := p.Probe(t.Context(), gwIP, time.Second); ok || err == nil || !strings.Contains(err.Error(), "probe MAC") {
				t.Fatalf("Probe = %v, %v; want an error about the probe MAC", ok, err)
			}
		})
	}
	for _, c := range []struct {
		name    string
		gw      netip.Addr
		timeout time.Duration
	}{
		{"IPv6 gateway", netip.MustParseAddr("2001:db8::1"), time.Second},
		{"no gateway", netip.Addr{}, time.Second},
		{"unspecified gateway", netip.IPv4Unspecified(), time.Second},
		{"no timeout", gwIP, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			if ok, err := p.Probe(t.Context(), c.gw, c.timeout); ok || err == nil {
				t.Fatalf("Probe = %v, %v; want an error", ok, err)
			}
		})
	}
	t.Run("after Close", func(t *testing.T) {
		p.Close()
		if _, err := p.Probe(t.Context(), gwIP, time.Second); !errors.Is(err, linux.ErrProberClosed) {
			t.Fatalf("Probe after Close: %v, want ErrProberClosed", err)
		}
	})
}

// TestGWProbeRefusesTheDevicesOwnMAC: probing from the device's MAC is
// what probe MACs exist to avoid.
func TestGWProbeRefusesTheDevicesOwnMAC(t *testing.T) {
	l := newGWLab(t)
	ifi := linkMAC(t, l.router, l.dev)
	ok, err := newProber(t, l.router, l.dev, ifi).Probe(t.Context(), gwIP, answerTimeout)
	if ok || err == nil || !strings.Contains(err.Error(), "device's own") {
		t.Fatalf("Probe from the device's own MAC = %v, %v; want an error", ok, err)
	}
}

// linkMAC is dev's MAC in ns.
func linkMAC(t *testing.T, ns, dev string) net.HardwareAddr {
	t.Helper()
	var mac net.HardwareAddr
	mustNil(t, linux.Do(ns, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err == nil {
			mac = ifi.HardwareAddr
		}
		return err
	}))
	return mac
}

// routerMAC is the MAC of the router's qg- port, the same on every node as
// Neutron gives it.
var routerMAC = net.HardwareAddr{0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56}

// bridgeLab is an external network: a bridge in namespace sw whose ports
// lead to the gateway (gwAddr) and to a master and a backup of one router,
// whose qg- devices both have routerMAC; the master holds ownAddr.
type bridgeLab struct {
	sw, gateway, master, backup string
}

const (
	labBridge  = "br-gwprobe"
	labGWDev   = "gw-br"
	labQG      = "qg-br"
	portGW     = "p-gw"
	portMaster = "p-master"
	portBackup = "p-backup"
	labRouter  = "router-bridge-lab"
)

func newBridgeLab(t *testing.T) bridgeLab {
	t.Helper()
	kerneltest.Require(t, "ip", "bridge", "ping")
	l := bridgeLab{sw: kerneltest.Namespace(t), gateway: kerneltest.Namespace(t), master: kerneltest.Namespace(t), backup: kerneltest.Namespace(t)}
	// No IPv6: a backup's MLD report or DAD would move the router's MAC by
	// itself (LP#1859832; router namespaces have IPv6 off), and nothing
	// else must send from it than what the test sends.
	for _, ns := range []string{l.sw, l.gateway, l.master, l.backup} {
		mustNil(t, linux.SetSysctls(ns, map[string]string{"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"}))
	}
	mustNil(t, linux.EnsureBridge(l.sw, labBridge, 0))
	mustNil(t, linux.EnsureVeth(l.sw, linux.Veth{NodeSide: portGW, Bridge: labBridge, NS: l.gateway, NSSide: labGWDev}))
	mustNil(t, linux.EnsureVeth(l.sw, linux.Veth{NodeSide: portMaster, Bridge: labBridge, NS: l.master, NSSide: labQG, MAC: routerMAC}))
	mustNil(t, linux.EnsureVeth(l.sw, linux.Veth{NodeSide: portBackup, Bridge: labBridge, NS: l.backup, NSSide: labQG, MAC: routerMAC}))
	mustNil(t, linux.AddAddress(l.gateway, labGWDev, gwAddr))
	mustNil(t, linux.AddAddress(l.master, labQG, ownAddr))
	return l
}

// fdb is where the bridge has learnt each MAC: MAC → ports.
func (l bridgeLab) fdb(t *testing.T) map[string][]string {
	t.Helper()
	out, err := exec.Command("bridge", "-n", l.sw, "-j", "fdb", "show", "br", labBridge).Output()
	if err != nil {
		t.Fatalf("bridge fdb: %v", err)
	}
	var entries []struct {
		MAC    string   `json:"mac"`
		Port   string   `json:"ifname"`
		Master string   `json:"master"`
		State  string   `json:"state"`
		Flags  []string `json:"flags"`
	}
	if err := json.Unmarshal(out, &entries); err != nil {
		t.Fatalf("bridge fdb: %v\n%s", err, out)
	}
	m := map[string][]string{}
	for _, e := range entries {
		if e.Master == labBridge && e.State != "permanent" {
			m[e.MAC] = append(m[e.MAC], e.Port)
		}
	}
	return m
}

func (l bridgeLab) mustLearn(t *testing.T, mac net.HardwareAddr, port string) {
	t.Helper()
	if got := l.fdb(t)[mac.String()]; len(got) != 1 || got[0] != port {
		t.Fatalf("bridge has %s on %v, want on %s; fdb: %v", mac, got, port, l.fdb(t))
	}
}

// TestGWProbeTeachesTheNetworkOnlyItsProbeMAC probes from the backup and
// from the master of a router whose qg- devices share its MAC: both are
// healthy, the bridge still has the router's MAC on the master's port and
// each probe MAC on its own node's, and the gateway has learnt no probe MAC.
func TestGWProbeTeachesTheNetworkOnlyItsProbeMAC(t *testing.T) {
	l := newBridgeLab(t)
	// The master talks to the gateway: the bridge learns the router's MAC
	// on the master's port, the gateway the router's address.
	kerneltest.Run(t, "ip", "netns", "exec", l.master, "ping", "-c", "1", "-w", "15", gwIP.String())
	l.mustLearn(t, routerMAC, portMaster)
	ownIP := ownAddr.Addr().String()
	if neigh := neighbours(t, l.gateway, labGWDev); !strings.Contains(neigh, ownIP+" lladdr "+routerMAC.String()) {
		t.Fatalf("gateway did not learn the router from the ping:\n%s", neigh)
	}

	masterMAC, backupMAC := linux.ProbeMAC("node-master", labRouter), linux.ProbeMAC("node-backup", labRouter)
	backup := newProber(t, l.backup, labQG, backupMAC)
	master := newProber(t, l.master, labQG, masterMAC)
	for range 3 {
		mustAnswer(t, backup, gwIP)
		mustAnswer(t, master, gwIP)
	}
	// Each reply came back through the bridge after its request had been
	// through it: whatever the requests taught the bridge and the gateway
	// is there to see now.
	l.mustLearn(t, routerMAC, portMaster)
	l.mustLearn(t, backupMAC, portBackup)
	l.mustLearn(t, masterMAC, portMaster)
	neigh := neighbours(t, l.gateway, labGWDev)
	for _, mac := range []net.HardwareAddr{masterMAC, backupMAC} {
		if strings.Contains(neigh, mac.String()) {
			t.Errorf("gateway learnt probe MAC %s:\n%s", mac, neigh)
		}
	}
	if !strings.Contains(neigh, ownIP+" lladdr "+routerMAC.String()) {
		t.Errorf("gateway no longer has the router's address on its MAC:\n%s", neigh)
	}
	for _, ns := range []string{l.master, l.backup} {
		mustNotBePromiscuous(t, ns, labQG)
	}

	// Control: one frame from the backup with the router's MAC, as a probe
	// from the device's MAC would be, does move it — so the checks above
	// could have seen it.
	sendFrom(t, l.backup, labQG, routerMAC)
	deadline := time.Now().Add(answerTimeout)
	for got := l.fdb(t)[routerMAC.String()]; len(got) != 1 || got[0] != portBackup; got = l.fdb(t)[routerMAC.String()] {
		if time.Now().After(deadline) {
			t.Fatalf("control: a frame from the backup with the router's MAC left it on %v", got)
		}
		time.Sleep(10 * time.Millisecond) // polling the kernel's learning, bounded by deadline
	}
}

// sendFrom sends one broadcast ARP-typed frame with source src out of dev
// in ns (its content is nothing the gateway answers).
func sendFrom(t *testing.T, ns, dev string, src net.HardwareAddr) {
	t.Helper()
	mustNil(t, linux.Do(ns, func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		c, err := packet.Listen(ifi, packet.Raw, unix.ETH_P_ARP, nil)
		if err != nil {
			return err
		}
		defer c.Close()
		f := ethernet.Frame{Destination: ethernet.Broadcast, Source: src, EtherType: ethernet.EtherTypeARP, Payload: make([]byte, 28)}
		b, err := f.MarshalBinary()
		if err != nil {
			return err
		}
		_, err = c.WriteTo(b, &packet.Addr{HardwareAddr: ethernet.Broadcast})
		return err
	}))
}

func mustNil(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
