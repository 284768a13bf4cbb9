package linux

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestSyncAddressesRemovesOnlyExtras(t *testing.T) {
	ns := newNS(t)
	const dev = "qr-addr"
	addDummy(t, ns, dev)
	// A link-local address the kernel would make itself (made by hand here,
	// to not depend on the IPv6 settings the namespace inherited).
	ll := netip.MustParsePrefix("fe80::1234/64")
	inNS(t, ns, func(h *netlink.Handle) error {
		return h.AddrAdd(link(t, ns, dev), &netlink.Addr{IPNet: toIPNet(ll), Flags: unix.IFA_F_NODAD})
	})

	steps := []struct {
		name      string
		before    []netip.Prefix // added behind SyncAddresses' back first
		want      []netip.Prefix
		wantAdded []netip.Prefix // address events the call must cause, exactly
		wantGone  []netip.Prefix
	}{
		{
			name:      "empty device gets all",
			want:      prefixes("10.0.0.1/24", "10.0.1.1/24", "2001:db8::1/64"),
			wantAdded: prefixes("10.0.0.1/24", "10.0.1.1/24", "2001:db8::1/64"),
		},
		{
			name: "same set again: no address event at all",
			want: prefixes("2001:db8::1/64", "10.0.1.1/24", "10.0.0.1/24"),
		},
		{
			name:     "extras removed, kept ones untouched",
			before:   prefixes("10.0.0.99/24", "192.168.5.5/32"),
			want:     prefixes("10.0.0.1/24", "2001:db8::1/64"),
			wantGone: prefixes("10.0.0.99/24", "10.0.1.1/24", "192.168.5.5/32"),
		},
		{
			name:      "new prefix length is a different address",
			want:      prefixes("10.0.0.1/25", "2001:db8::1/64"),
			wantAdded: prefixes("10.0.0.1/25"),
			wantGone:  prefixes("10.0.0.1/24"),
		},
		{
			name:     "empty set removes everything but link-local",
			want:     nil,
			wantGone: prefixes("10.0.0.1/25", "2001:db8::1/64"),
		},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			for _, p := range s.before {
				if err := AddAddress(ns, dev, p); err != nil {
					t.Fatal(err)
				}
			}
			evs := addrEventsDuring(t, ns, func() error { return SyncAddresses(ns, dev, s.want) }, s.wantAdded...)
			var added, gone []netip.Prefix
			for _, e := range evs {
				p, _ := toPrefix(&e.LinkAddress)
				if e.NewAddr {
					added = append(added, p)
				} else {
					gone = append(gone, p)
				}
			}
			sortPrefixes(added)
			sortPrefixes(gone)
			want := slices.Clone(s.want)
			sortPrefixes(want)
			sortPrefixes(s.wantAdded)
			sortPrefixes(s.wantGone)
			if !slices.Equal(added, s.wantAdded) || !slices.Equal(gone, s.wantGone) {
				t.Errorf("events: added %v removed %v; want added %v removed %v", added, gone, s.wantAdded, s.wantGone)
			}
			got, err := Addresses(ns, dev)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(got, ll) {
				t.Errorf("link-local %s removed: %v", ll, got)
			}
			if got := withoutLinkLocal(got); !slices.Equal(got, want) {
				t.Errorf("addresses = %v, want %v", got, want)
			}
		})
	}
}

func TestSyncAddressesOwnedLeavesOthersAddresses(t *testing.T) {
	ns := newNS(t)
	const dev = "ha-owned"
	addDummy(t, ns, dev)
	vip := netip.MustParsePrefix("169.254.0.5/24")
	haIP := netip.MustParsePrefix("169.254.192.3/18")
	if err := AddAddress(ns, dev, vip); err != nil { // as VRRP would
		t.Fatal(err)
	}
	notVIP := func(p netip.Prefix) bool { return p != vip && !linkLocal6(p) }
	for i := range 2 {
		if err := SyncAddressesOwned(ns, dev, []netip.Prefix{haIP}, notVIP); err != nil {
			t.Fatalf("call %d: %v", i+1, err)
		}
	}
	got, _ := Addresses(ns, dev)
	if got := withoutLinkLocal(got); !slices.Equal(got, []netip.Prefix{vip, haIP}) {
		t.Fatalf("addresses = %v, want the VIP kept and the HA address added", got)
	}
	// AddAddress and DelAddress are idempotent.
	for range 2 {
		if err := AddAddress(ns, dev, vip); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if err := DelAddress(ns, dev, vip); err != nil {
			t.Fatal(err)
		}
	}
	got, _ = Addresses(ns, dev)
	if got := withoutLinkLocal(got); !slices.Equal(got, []netip.Prefix{haIP}) {
		t.Fatalf("addresses = %v, want only the HA address", got)
	}
	if err := DelAddress(ns, "no-such-dev", vip); err != nil {
		t.Errorf("DelAddress on a missing device: %v", err)
	}
}

func TestSyncAddressesKeepsWantedSecondaryWhenPrimaryGoes(t *testing.T) {
	ns := newNS(t)
	const dev = "qg-secondary"
	addDummy(t, ns, dev)
	// Without promote_secondaries, deleting a primary address deletes the
	// secondaries of its subnet too.
	if err := SetSysctls(ns, map[string]string{
		"net.ipv4.conf.all.promote_secondaries":         "0",
		"net.ipv4.conf." + dev + ".promote_secondaries": "0",
	}); err != nil {
		t.Fatal(err)
	}
	if err := SyncAddresses(ns, dev, prefixes("10.1.0.1/24", "10.1.0.2/24")); err != nil {
		t.Fatal(err)
	}
	if err := SyncAddresses(ns, dev, prefixes("10.1.0.2/24")); err != nil {
		t.Fatal(err)
	}
	got, _ := Addresses(ns, dev)
	if got := withoutLinkLocal(got); !slices.Equal(got, prefixes("10.1.0.2/24")) {
		t.Fatalf("addresses = %v, want [10.1.0.2/24]", got)
	}
}

func TestAddressesOfMissingDeviceIsAnError(t *testing.T) {
	ns := newNS(t)
	if _, err := Addresses(ns, "nope"); err == nil {
		t.Error("Addresses: no error")
	}
	if err := SyncAddresses(ns, "nope", nil); err == nil {
		t.Error("SyncAddresses: no error")
	}
}
