package linux

import (
	"net/netip"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func rt(dst, gw, dev string) Route {
	r := Route{Dst: netip.MustParsePrefix(dst), Dev: dev}
	if gw != "" {
		r.Gateway = netip.MustParseAddr(gw)
	}
	return r
}

// normRoutes normalises and sorts routes for comparison with Routes.
func normRoutes(t *testing.T, rs []Route) []string {
	t.Helper()
	var out []string
	for _, r := range rs {
		n, err := r.normalize()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, n.String())
	}
	sort.Strings(out)
	return out
}

func routeStrings(rs []Route) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.String())
	}
	sort.Strings(out)
	return out
}

func TestSyncRoutesOwnsOnlyItsProtocol(t *testing.T) {
	ns := newNS(t)
	const dev = "qg-route"
	addDummy(t, ns, dev)
	if err := SyncAddresses(ns, dev, prefixes("203.0.113.2/24", "2001:db8:1::2/64")); err != nil {
		t.Fatal(err)
	}
	// Somebody else's route (keepalived's virtual_routes use proto static).
	foreign := &netlink.Route{Dst: toIPNet(netip.MustParsePrefix("198.51.100.0/24")), Gw: netip.MustParseAddr("203.0.113.1").AsSlice(), Protocol: unix.RTPROT_STATIC}
	inNS(t, ns, func(h *netlink.Handle) error { return h.RouteAdd(foreign) })
	kernelRoutes := func() []string {
		var out []string
		inNS(t, ns, func(h *netlink.Handle) error {
			rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
			for _, r := range rs {
				if int(r.Protocol) != RouteProtocol {
					out = append(out, r.String())
				}
			}
			return err
		})
		sort.Strings(out)
		return out
	}
	othersBefore := kernelRoutes()

	steps := []struct {
		name        string
		want        []Route
		wantTouched []string // destinations whose routes the call changed, exactly
	}{
		{
			name: "routes are added",
			want: []Route{
				rt("0.0.0.0/0", "203.0.113.1", dev),
				rt("10.9.0.0/16", "203.0.113.254", ""),
				rt("192.0.2.128/25", "", dev),
				rt("2001:db8:99::/48", "2001:db8:1::1", dev),
			},
			wantTouched: []string{"0.0.0.0/0", "10.9.0.0/16", "192.0.2.128/25", "2001:db8:99::/48"},
		},
		{
			name: "same routes again: no route event at all",
			want: []Route{
				rt("2001:db8:99::/48", "2001:db8:1::1", dev),
				rt("192.0.2.128/25", "", dev),
				rt("10.9.0.0/16", "203.0.113.254", ""),
				rt("0.0.0.0/0", "203.0.113.1", dev),
			},
		},
		{
			name: "new next hop is replaced, dropped route deleted, others untouched",
			want: []Route{
				rt("0.0.0.0/0", "203.0.113.1", dev),
				rt("10.9.0.0/16", "203.0.113.253", dev),
				rt("2001:db8:99::/48", "2001:db8:1::1", dev),
			},
			wantTouched: []string{"10.9.0.0/16", "192.0.2.128/25"},
		},
		{
			name: "same destination in another table is another route",
			want: []Route{
				rt("0.0.0.0/0", "203.0.113.1", dev),
				rt("10.9.0.0/16", "203.0.113.253", dev),
				rt("2001:db8:99::/48", "2001:db8:1::1", dev),
				{Dst: netip.MustParsePrefix("0.0.0.0/0"), Gateway: netip.MustParseAddr("203.0.113.9"), Table: 100},
			},
			wantTouched: []string{"0.0.0.0/0"},
		},
		{
			name:        "empty set removes ours only",
			want:        nil,
			wantTouched: []string{"0.0.0.0/0", "10.9.0.0/16", "2001:db8:99::/48"},
		},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			evs := routeEventsDuring(t, ns, RouteProtocol, func() error { return SyncRoutes(ns, RouteProtocol, s.want) })
			var touched []string
			for _, e := range evs {
				if int(e.Protocol) != RouteProtocol {
					t.Errorf("a route of protocol %d changed: %v", e.Protocol, e.Route)
					continue
				}
				dst := "0.0.0.0/0"
				if e.Dst != nil {
					dst = e.Dst.String()
				}
				touched = append(touched, dst)
			}
			sort.Strings(touched)
			touched = slices.Compact(touched)
			if !slices.Equal(touched, s.wantTouched) {
				t.Errorf("routes changed for %v, want %v", touched, s.wantTouched)
			}
			got, err := Routes(ns, RouteProtocol)
			if err != nil {
				t.Fatal(err)
			}
			// A route given without a device reads back with the one the
			// kernel chose.
			for i := range got {
				for _, w := range s.want {
					n, _ := w.normalize()
					if w.Dev == "" && n.Dst == got[i].Dst && n.Table == got[i].Table {
						got[i].Dev = ""
					}
				}
			}
			if g, w := routeStrings(got), normRoutes(t, s.want); !slices.Equal(g, w) {
				t.Errorf("routes = %v, want %v", g, w)
			}
			if got := kernelRoutes(); !slices.Equal(got, othersBefore) {
				t.Errorf("other routes changed:\n got %v\nwant %v", got, othersBefore)
			}
		})
	}

	t.Run("another protocol's sync leaves these alone", func(t *testing.T) {
		mine := []Route{rt("10.8.0.0/16", "203.0.113.254", dev)}
		if err := SyncRoutes(ns, RouteProtocol, mine); err != nil {
			t.Fatal(err)
		}
		if err := SyncRoutes(ns, RouteProtocolVRRP, []Route{rt("0.0.0.0/0", "203.0.113.1", dev)}); err != nil {
			t.Fatal(err)
		}
		if err := SyncRoutes(ns, RouteProtocolVRRP, nil); err != nil {
			t.Fatal(err)
		}
		got, _ := Routes(ns, RouteProtocol)
		if g := routeStrings(got); !slices.Equal(g, normRoutes(t, mine)) {
			t.Errorf("routes = %v", g)
		}
		out := ipCmd(t, ns, "ip", "route", "show", "10.8.0.0/16")
		if !strings.Contains(out, "proto 76") {
			t.Errorf("ip route show: %q, want proto 76", out)
		}
	})
	t.Run("invalid input is rejected before any change", func(t *testing.T) {
		bad := [][]Route{
			{{Dst: netip.MustParsePrefix("10.7.0.0/16")}},                                // neither gateway nor device
			{rt("10.7.0.0/16", "2001:db8:1::1", dev)},                                    // mixed families
			{rt("10.7.0.0/16", "203.0.113.1", ""), rt("10.7.0.0/16", "203.0.113.2", "")}, // same key twice
		}
		for _, b := range bad {
			if err := SyncRoutes(ns, RouteProtocol, b); err == nil {
				t.Errorf("SyncRoutes(%v) succeeded", b)
			}
		}
		got, _ := Routes(ns, RouteProtocol)
		if len(got) != 1 {
			t.Errorf("routes changed by a rejected call: %v", got)
		}
	})
}
