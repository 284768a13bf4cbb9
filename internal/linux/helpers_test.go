package linux

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Kernel-tier tests: they need root, and work only inside namespaces named
// l3ha-test-<random> that they create and always delete. Nothing touches the
// test process's own namespace.

const testNSPrefix = "l3ha-test-"

// eventTimeout bounds every wait on a kernel condition; generous, so that a
// loaded machine does not make the tests flaky.
const eventTimeout = 15 * time.Second

// skip skips the test, or fails it when L3HA_TEST_REQUIRE_ALL=1 (CI, where
// everything a test needs is installed and nothing may be skipped).
func skip(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("L3HA_TEST_REQUIRE_ALL") == "1" {
		t.Fatalf("%s (L3HA_TEST_REQUIRE_ALL=1)", why)
	}
	t.Skip(why)
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		skip(t, "kernel tier: needs root")
	}
}

// requireTool skips (see skip) unless the command name is installed.
func requireTool(t *testing.T, name, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		skip(t, name+" not installed (apt-get install "+pkg+")")
	}
}

// newNS creates a throwaway namespace, deleted when the test ends.
func newNS(t *testing.T) string {
	t.Helper()
	requireRoot(t)
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	name := testNSPrefix + hex.EncodeToString(b)
	if err := CreateNamespace(name); err != nil {
		t.Fatalf("CreateNamespace(%s): %v", name, err)
	}
	t.Cleanup(func() {
		if err := DeleteNamespace(name); err != nil {
			t.Errorf("DeleteNamespace(%s): %v", name, err)
		}
	})
	return name
}

// inNS runs fn with a netlink handle in ns, failing the test on error.
func inNS(t *testing.T, ns string, fn func(h *netlink.Handle) error) {
	t.Helper()
	if err := withHandle(ns, fn); err != nil {
		t.Fatal(err)
	}
}

// addDummy creates an up Ethernet device called name in ns, with carrier:
// one end of a veth pair whose other end (name truncated + "-p") is up in ns
// too. (The dummy driver is not in every kernel.)
func addDummy(t *testing.T, ns, name string) {
	t.Helper()
	inNS(t, ns, func(h *netlink.Handle) error {
		a := netlink.NewLinkAttrs()
		a.Name = name
		v := netlink.NewVeth(a)
		v.PeerName = truncate(name, 12) + "-p"
		if err := h.LinkAdd(v); err != nil {
			return err
		}
		for _, n := range []string{name, v.PeerName} {
			l, err := h.LinkByName(n)
			if err != nil {
				return err
			}
			if err := h.LinkSetUp(l); err != nil {
				return err
			}
		}
		return nil
	})
}

func link(t *testing.T, ns, name string) netlink.Link {
	t.Helper()
	var l netlink.Link
	inNS(t, ns, func(h *netlink.Handle) (err error) {
		l, err = h.LinkByName(name)
		return err
	})
	return l
}

func mustEqual[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Fatalf("%s = %v, want %v", what, got, want)
	}
}

func nsHandle(t *testing.T, ns string) netns.NsHandle {
	t.Helper()
	h, err := openNS(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// ipCmd runs `ip netns exec ns args...` — an independent view of the
// namespace, not through this package. Skips the test if ip is missing.
func ipCmd(t *testing.T, ns string, args ...string) string {
	t.Helper()
	requireTool(t, "ip", "iproute2")
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns exec %s %s: %v\n%s", ns, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// addrEventsDuring runs action and returns the address changes it caused
// in ns (IPv6 link-local ones excluded: the kernel makes those on its own
// schedule). It knows the action's events are all in when a sentinel address
// it adds afterwards shows up: the kernel reports changes in order.
//
// The kernel announces a new IPv6 address from a work queue, after the call
// that added it returned: the events for the addresses in settle, which the
// action is expected to add, are waited for too, so that they cannot spill
// into a later watch.
func addrEventsDuring(t *testing.T, ns string, action func() error, settle ...netip.Prefix) []netlink.AddrUpdate {
	t.Helper()
	h := nsHandle(t, ns)
	subErrs := newSubErrors()
	ch := make(chan netlink.AddrUpdate, 1024)
	done := make(chan struct{})
	defer close(done)
	if err := netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{
		Namespace:     &h,
		ErrorCallback: subErrs.record,
	}); err != nil {
		t.Fatal(err)
	}
	if err := action(); err != nil {
		t.Fatal(err)
	}
	sentinel := netip.MustParsePrefix("192.0.2.254/32")
	if err := AddAddress(ns, "lo", sentinel); err != nil {
		t.Fatal(err)
	}
	defer DelAddress(ns, "lo", sentinel)
	var evs []netlink.AddrUpdate
	pending := map[netip.Prefix]bool{sentinel: true}
	for _, p := range settle {
		pending[p] = true
	}
	timeout := time.After(eventTimeout)
	for {
		select {
		case u, ok := <-ch:
			if !ok {
				t.Fatal("address subscription closed")
			}
			p, _ := toPrefix(&u.LinkAddress)
			if u.NewAddr {
				delete(pending, p)
			}
			if p != sentinel && !linkLocal6(p) {
				evs = append(evs, u)
			}
			if len(pending) == 0 {
				subErrs.check(t)
				return evs
			}
		case <-timeout:
			t.Fatalf("address events not seen: %v", pending)
		}
	}
}

// routeEventsDuring is addrEventsDuring for routes of protocol proto (IPv4
// routes of any protocol too).
func routeEventsDuring(t *testing.T, ns string, proto int, action func() error) []netlink.RouteUpdate {
	t.Helper()
	h := nsHandle(t, ns)
	subErrs := newSubErrors()
	ch := make(chan netlink.RouteUpdate, 1024)
	done := make(chan struct{})
	defer close(done)
	if err := netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{
		Namespace:     &h,
		ErrorCallback: subErrs.record,
	}); err != nil {
		t.Fatal(err)
	}
	if err := action(); err != nil {
		t.Fatal(err)
	}
	sentinel := &netlink.Route{Dst: toIPNet(netip.MustParsePrefix("198.51.100.254/32")), Type: unix.RTN_BLACKHOLE}
	inNS(t, ns, func(h *netlink.Handle) error { return h.RouteAdd(sentinel) })
	defer withHandle(ns, func(h *netlink.Handle) error { return h.RouteDel(sentinel) })
	var evs []netlink.RouteUpdate
	timeout := time.After(eventTimeout)
	for {
		select {
		case u, ok := <-ch:
			if !ok {
				t.Fatal("route subscription closed")
			}
			if u.Route.Type == unix.RTN_BLACKHOLE && u.Dst != nil && u.Dst.String() == "198.51.100.254/32" {
				subErrs.check(t)
				return evs
			}
			if u.Family == unix.AF_INET || int(u.Protocol) == proto {
				evs = append(evs, u)
			}
		case <-timeout:
			t.Fatal("sentinel route event not seen")
		}
	}
}

var sentinelMAC = net.HardwareAddr{0x02, 0, 0, 0, 0xfe, 0xfe}

// floodEventsDuring is addrEventsDuring for the flood (all-zero MAC) FDB
// entries of the VXLAN device dev: it returns the peers whose entries
// changed.
func floodEventsDuring(t *testing.T, ns, dev string, action func() error) []netip.Addr {
	t.Helper()
	h := nsHandle(t, ns)
	subErrs := newSubErrors()
	ch := make(chan netlink.NeighUpdate, 1024)
	done := make(chan struct{})
	defer close(done)
	if err := netlink.NeighSubscribeWithOptions(ch, done, netlink.NeighSubscribeOptions{
		Namespace:     &h,
		ErrorCallback: subErrs.record,
	}); err != nil {
		t.Fatal(err)
	}
	if err := action(); err != nil {
		t.Fatal(err)
	}
	idx := link(t, ns, dev).Attrs().Index
	sentinel := &netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT | netlink.NUD_NOARP,
		Flags: netlink.NTF_SELF, HardwareAddr: sentinelMAC, IP: net.ParseIP("192.0.2.254").To4()}
	inNS(t, ns, func(h *netlink.Handle) error { return h.NeighAppend(sentinel) })
	defer withHandle(ns, func(h *netlink.Handle) error { return h.NeighDel(sentinel) })
	var peers []netip.Addr
	timeout := time.After(eventTimeout)
	for {
		select {
		case u, ok := <-ch:
			if !ok {
				t.Fatal("neigh subscription closed")
			}
			if bytes.Equal(u.HardwareAddr, sentinelMAC) {
				subErrs.check(t)
				return peers
			}
			if u.Family == unix.AF_BRIDGE && bytes.Equal(u.HardwareAddr, zeroMAC) {
				a, _ := netip.AddrFromSlice(u.IP)
				peers = append(peers, a.Unmap())
			}
		case <-timeout:
			t.Fatal("sentinel fdb event not seen")
		}
	}
}

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

func withoutLinkLocal(ps []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if !linkLocal6(p) {
			out = append(out, p)
		}
	}
	return out
}

// subErrors collects a subscription's errors. The subscription's goroutine
// also reports the closing of its socket, possibly after the test has ended,
// so errors are kept, not logged, and checked while the test runs.
type subErrors chan error

func newSubErrors() subErrors { return make(subErrors, 16) }

func (s subErrors) record(err error) {
	select {
	case s <- err:
	default:
	}
}

func (s subErrors) check(t *testing.T) {
	t.Helper()
	select {
	case err := <-s:
		t.Fatalf("netlink subscription failed while watching: %v", err)
	default:
	}
}
