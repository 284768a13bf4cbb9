package linux

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Route protocols (the rtnetlink "proto" of a route) tell whose a route is:
// SyncRoutes only ever touches routes of the protocol it is given, so that
// kernel-made connected routes (proto kernel), keepalived's virtual_routes
// (proto static in Neutron's configuration) and anyone else's are left alone.
// The numbers are unassigned in iproute2's rt_protos.
const (
	// RouteProtocol marks the routes the reconciler manages (a router's
	// extra routes, an instance-side default route in tests, ...).
	RouteProtocol = 76
	// RouteProtocolVRRP marks routes a VRRP engine installs on mastership
	// (the default route through the gateway) so that SyncRoutes with
	// RouteProtocol never removes them.
	RouteProtocolVRRP = 77
)

// ip6DefaultMetric is the metric the kernel gives an IPv6 route added with
// none.
const ip6DefaultMetric = 1024

// Route is a unicast route.
type Route struct {
	Dst     netip.Prefix
	Gateway netip.Addr // zero: directly connected (scope link), Dev required
	Dev     string     // "": the kernel picks the device from Gateway
	Table   int        // 0: main
	Metric  int        // 0: none (IPv6: the kernel's 1024)
}

func (r Route) String() string {
	s := r.Dst.String()
	if r.Gateway.IsValid() {
		s += " via " + r.Gateway.String()
	}
	if r.Dev != "" {
		s += " dev " + r.Dev
	}
	if r.Table != 0 && r.Table != unix.RT_TABLE_MAIN {
		s += fmt.Sprintf(" table %d", r.Table)
	}
	if r.Metric != 0 {
		s += fmt.Sprintf(" metric %d", r.Metric)
	}
	return s
}

// routeKey is what identifies a route to the kernel (for our purposes).
type routeKey struct {
	dst    netip.Prefix
	table  int
	metric int
}

func (r Route) normalize() (Route, error) {
	if !r.Dst.IsValid() {
		return r, errors.New("route without destination")
	}
	r.Dst = netip.PrefixFrom(r.Dst.Addr().Unmap(), r.Dst.Bits()).Masked()
	if r.Gateway.IsValid() {
		r.Gateway = r.Gateway.Unmap()
		if r.Gateway.Is4() != r.Dst.Addr().Is4() {
			return r, fmt.Errorf("route %s: gateway of another address family", r)
		}
	} else if r.Dev == "" {
		return r, fmt.Errorf("route %s: needs a gateway or a device", r)
	}
	if r.Table == 0 {
		r.Table = unix.RT_TABLE_MAIN
	}
	if r.Metric == 0 && r.Dst.Addr().Is6() {
		r.Metric = ip6DefaultMetric
	}
	return r, nil
}

func (r Route) key() routeKey { return routeKey{r.Dst, r.Table, r.Metric} }

// Routes returns the routes of ns, all tables, whose protocol is proto.
func Routes(ns string, proto int) ([]Route, error) {
	var out []Route
	err := withHandle(ns, func(h *netlink.Handle) error {
		rs, err := routes(h, proto)
		if err != nil {
			return err
		}
		for _, r := range rs {
			out = append(out, r.Route)
		}
		return nil
	})
	return out, err
}

type kernelRoute struct {
	Route
	nl netlink.Route
}

func routes(h *netlink.Handle, proto int) ([]kernelRoute, error) {
	filter := &netlink.Route{Protocol: netlink.RouteProtocol(proto), Table: unix.RT_TABLE_UNSPEC}
	rs, err := retryDump(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	names := map[int]string{}
	var out []kernelRoute
	for _, nr := range rs {
		if nr.Type != unix.RTN_UNICAST || len(nr.MultiPath) > 0 {
			continue
		}
		var r Route
		if p, ok := toPrefix(nr.Dst); ok {
			r.Dst = p
		} else if nr.Dst == nil && nr.Family == unix.AF_INET {
			r.Dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		} else if nr.Dst == nil && nr.Family == unix.AF_INET6 {
			r.Dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		} else {
			continue
		}
		if a, ok := netip.AddrFromSlice(nr.Gw); ok {
			r.Gateway = a.Unmap()
		}
		if nr.LinkIndex > 0 {
			name, ok := names[nr.LinkIndex]
			if !ok {
				if l, err := h.LinkByIndex(nr.LinkIndex); err == nil {
					name = l.Attrs().Name
				}
				names[nr.LinkIndex] = name
			}
			r.Dev = name
		}
		r.Table = nr.Table
		r.Metric = nr.Priority
		out = append(out, kernelRoute{Route: r, nl: nr})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out, nil
}

// SyncRoutes makes the routes of protocol proto in ns (all tables) exactly
// want. A route whose destination, table and metric match a wanted one and
// whose gateway and device are right is left untouched; one that differs in
// gateway or device is replaced in a single operation (no moment without a
// route); routes not wanted are deleted; missing ones added. Routes of other
// protocols are never touched; a wanted route that collides with one of them
// is an error. proto 0 means RouteProtocol.
func SyncRoutes(ns string, proto int, want []Route) error {
	if proto == 0 {
		proto = RouteProtocol
	}
	wantByKey := make(map[routeKey]Route, len(want))
	for _, r := range want {
		nr, err := r.normalize()
		if err != nil {
			return err
		}
		if prev, dup := wantByKey[nr.key()]; dup {
			return fmt.Errorf("routes %s and %s have the same destination, table and metric", prev, nr)
		}
		wantByKey[nr.key()] = nr
	}
	return withHandle(ns, func(h *netlink.Handle) error {
		have, err := routes(h, proto)
		if err != nil {
			return err
		}
		haveByKey := make(map[routeKey]kernelRoute, len(have))
		for _, kr := range have {
			k := kr.key()
			if _, dup := haveByKey[k]; dup || !wantByKey[k].Dst.IsValid() {
				// Not wanted (or a duplicate, e.g. IPv6 with the same
				// key on two devices): delete.
				if err := h.RouteDel(&kr.nl); err != nil && !errors.Is(err, unix.ESRCH) {
					return fmt.Errorf("delete route %s: %w", kr.Route, err)
				}
				continue
			}
			haveByKey[k] = kr
		}
		keys := make([]routeKey, 0, len(wantByKey))
		for k := range wantByKey {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { return wantByKey[keys[i]].String() < wantByKey[keys[j]].String() })
		for _, k := range keys {
			w := wantByKey[k]
			cur, exists := haveByKey[k]
			if exists && routeEqual(cur.Route, w) {
				continue
			}
			nr, err := toNetlinkRoute(h, w, proto)
			if err != nil {
				return err
			}
			if exists {
				err = h.RouteReplace(nr)
			} else {
				err = h.RouteAdd(nr)
			}
			if err != nil {
				return fmt.Errorf("route %s: %w", w, err)
			}
		}
		return nil
	})
}

func routeEqual(have, want Route) bool {
	if have.Gateway != want.Gateway {
		return false
	}
	return want.Dev == "" || have.Dev == want.Dev
}

func toNetlinkRoute(h *netlink.Handle, r Route, proto int) (*netlink.Route, error) {
	nr := &netlink.Route{
		Dst:      toIPNet(r.Dst),
		Protocol: netlink.RouteProtocol(proto),
		Table:    r.Table,
		Priority: r.Metric,
		Scope:    netlink.SCOPE_UNIVERSE,
	}
	if r.Gateway.IsValid() {
		nr.Gw = r.Gateway.AsSlice()
	} else {
		nr.Scope = netlink.SCOPE_LINK
	}
	if r.Dev != "" {
		l, err := mustLink(h, r.Dev)
		if err != nil {
			return nil, fmt.Errorf("route %s: %w", r, err)
		}
		nr.LinkIndex = l.Attrs().Index
	}
	if r.Dst.Addr().Is6() {
		nr.Family = unix.AF_INET6
	} else {
		nr.Family = unix.AF_INET
	}
	return nr, nil
}
