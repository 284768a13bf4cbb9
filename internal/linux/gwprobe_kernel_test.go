package linux_test

// Kernel tier for GatewayProber: a router namespace whose qg- device is one
// end of a veth pair, the other end in a namespace that plays the upstream
// gateway. Both are throwaway l3ha-test-<random> namespaces
// (kerneltest.Namespace), deleted when each test ends.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

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

func (l gwLab) prober(t *testing.T) *linux.GatewayProber {
	t.Helper()
	p := linux.NewGatewayProber(l.router, l.dev)
	t.Cleanup(func() { p.Close() })
	return p
}

// neighbours is the gateway's view of who asked it: `ip neigh` there.
func (l gwLab) neighbours(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("ip", "-n", l.gateway, "neigh", "show", "dev", l.gwDev).CombinedOutput()
	if err != nil {
		t.Fatalf("ip neigh: %v\n%s", err, out)
	}
	return string(out)
}

func mustAnswer(t *testing.T, p *linux.GatewayProber, gw netip.Addr) {
	t.Helper()
	ok, err := p.Probe(t.Context(), gw, answerTimeout)
	if err != nil || !ok {
		t.Fatalf("Probe(%s) = %v, %v; want a reply", gw, ok, err)
	}
}

func TestGWProbeHealthyWhenTheGatewayAnswers(t *testing.T) {
	cases := []struct {
		name string
		own  []netip.Prefix // on the probing device
		// sender is the address the gateway must have learnt from the
		// request; "" for an RFC 5227 probe, which teaches it nothing.
		sender string
	}{
		{"master with an address on the gateway's subnet asks from it", []netip.Prefix{ownAddr}, "192.0.2.10"},
		{"backup without an address sends an ARP probe", nil, ""},
		{"address on another subnet only is not used", []netip.Prefix{netip.MustParsePrefix("198.51.100.10/24")}, ""},
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
			neigh := l.neighbours(t)
			if c.sender != "" && !strings.Contains(neigh, c.sender+" ") {
				t.Errorf("gateway did not learn sender %s from the request; neighbours:\n%s", c.sender, neigh)
			}
			if c.sender == "" && strings.Contains(neigh, "lladdr") {
				t.Errorf("an ARP probe taught the gateway a neighbour:\n%s", neigh)
			}
		})
	}
}

func TestGWProbeOneShotAnswers(t *testing.T) {
	l := newGWLab(t)
	ok, err := linux.ProbeGateway(t.Context(), l.router, l.dev, gwIP, answerTimeout)
	if err != nil || !ok {
		t.Fatalf("ProbeGateway = %v, %v; want a reply", ok, err)
	}
}

// TestGWProbeUnhealthyWhileTheGatewayIsGone breaks the path in each way the
// gateway can be lost, checks that the same prober (sockets kept from the
// healthy probe before) sees it, then mends it and checks it recovers.
func TestGWProbeUnhealthyWhileTheGatewayIsGone(t *testing.T) {
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
		p := linux.NewGatewayProber(ns, "qg-many")
		t.Cleanup(func() { p.Close() })
		rs[i] = router{p, gw.Addr()}
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
	p := linux.NewGatewayProber(linux.NodeNS, "qg-none")
	defer p.Close()
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

func mustNil(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
