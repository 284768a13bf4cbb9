package linux

import (
	"os"
	"strings"
	"testing"
)

func TestSetSysctlsChangesOnlyTheTargetNamespace(t *testing.T) {
	a, b := newNS(t), newNS(t)
	const key = "net.ipv4.ip_nonlocal_bind"
	readOwn := func() string {
		v, err := os.ReadFile("/proc/sys/net/ipv4/ip_nonlocal_bind")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(v))
	}
	ownBefore := readOwn()
	bBefore := ipCmd(t, b, "cat", "/proc/sys/net/ipv4/ip_nonlocal_bind")
	want := "1"
	if bBefore == "1" {
		want = "0"
	}

	addDummy(t, a, "qg-sysctl")
	addDummy(t, a, "d0.100") // a dot in the name needs the slash form
	kv := map[string]string{
		key:                                      want,
		"net.ipv4.ip_forward":                    "1",
		"net.ipv6.conf.qg-sysctl.disable_ipv6":   "1",
		"net/ipv6/conf/d0.100/disable_ipv6":      "1",
		"net.ipv4.ip_local_port_range":           "20000\t30000",
		"net.ipv4.conf.qg-sysctl.rp_filter":      "0",
		"net.ipv4.conf.qg-sysctl.proxy_arp":      "0",
		"net.ipv6.conf.qg-sysctl.accept_ra":      "0",
		"net.ipv6.conf.qg-sysctl.forwarding":     "0",
		"net.ipv4.conf.qg-sysctl.arp_ignore":     "1",
		"net.ipv4.conf.qg-sysctl.arp_announce":   "2",
		"net.ipv4.conf.qg-sysctl.send_redirects": "0",
	}
	for i := range 2 { // the second round finds everything right already
		if err := SetSysctls(a, kv); err != nil {
			t.Fatalf("SetSysctls round %d: %v", i+1, err)
		}
	}

	// Read back through an independent path: `ip netns exec`.
	mustEqual(t, key+" in the target (ip netns exec)", ipCmd(t, a, "cat", "/proc/sys/net/ipv4/ip_nonlocal_bind"), want)
	mustEqual(t, "ip_forward in the target", ipCmd(t, a, "cat", "/proc/sys/net/ipv4/ip_forward"), "1")
	mustEqual(t, "disable_ipv6 on qg-sysctl", ipCmd(t, a, "cat", "/proc/sys/net/ipv6/conf/qg-sysctl/disable_ipv6"), "1")
	mustEqual(t, "disable_ipv6 on d0.100", ipCmd(t, a, "cat", "/proc/sys/net/ipv6/conf/d0.100/disable_ipv6"), "1")
	mustEqual(t, "ip_local_port_range", strings.Join(strings.Fields(ipCmd(t, a, "cat", "/proc/sys/net/ipv4/ip_local_port_range")), " "), "20000 30000")
	if got, err := Sysctl(a, key); err != nil || got != want {
		t.Fatalf("Sysctl(%s) = %q, %v; want %q", key, got, err, want)
	}

	mustEqual(t, key+" in another namespace", ipCmd(t, b, "cat", "/proc/sys/net/ipv4/ip_nonlocal_bind"), bBefore)
	mustEqual(t, key+" in the test's own namespace", readOwn(), ownBefore)
	assertThreadsInNodeNS(t)

	if err := SetSysctls(a, map[string]string{"net.ipv6.conf.no-such-dev.disable_ipv6": "1"}); err == nil {
		t.Error("setting a sysctl of a missing device succeeded")
	}
}
