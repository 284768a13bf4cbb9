package lab

// The failover benchmark's set-up: the external subnet, the routers, their
// masters on one node and backups on the other, the waits for them, and the
// ha-link fault.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/l3ha/l3ha/internal/dataplane"
)

// setupMastersOn creates n routers whose masters are all on master, with
// taker as their backup, and waits until taker's VRRP instances run and
// their start delay is over.
func (b *benchLab) setupMastersOn(ctx context.Context, master, taker string, n int, adv time.Duration) error {
	if err := b.ensureExternal(ctx); err != nil {
		return err
	}
	if err := b.setAdmin(ctx, taker, false); err != nil {
		return err
	}
	if err := b.createRouters(ctx, n); err != nil {
		return err
	}
	b.sayf("waiting until %s is master of all %d routers", master, n)
	if err := b.waitHolders(ctx, master, setupTimeout(n, adv)); err != nil {
		return err
	}
	// The taker's agent is stopped while it is given the routers, and
	// starts again only once the master's node floods the HA networks to
	// it: otherwise its backups could start before they hear the masters
	// (the master's agent adds the new VXLAN peer only when it next
	// applies its desired state, which takes long with many routers) and
	// take over.
	p, err := b.stopAgent(ctx, taker)
	if err != nil {
		return err
	}
	if err := b.setAdmin(ctx, taker, true); err != nil {
		return err
	}
	takerNode, _ := nodeByName(taker)
	b.sayf("waiting until %s floods the routers' HA networks to %s", master, taker)
	if err := b.waitFloodPeers(ctx, master, takerNode.FabricIP, setupTimeout(n, adv)); err != nil {
		return err
	}
	if err := b.startAgent(taker, p.Argv); err != nil {
		return err
	}
	b.sayf("waiting until %s runs VRRP (backup) for all %d routers", taker, n)
	if err := b.waitVRRP(ctx, taker, setupTimeout(n, adv)); err != nil {
		return err
	}
	// The backups' start delay (dataplane.StartDelay of binding index 2)
	// runs from their start; after it the group is as it will stay.
	delay := dataplane.StartDelay(2, adv) + 2*adv
	b.sayf("waiting %s for the backups' start delay", delay)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(delay):
	}
	// A backup that missed the masters' adverts for Master_Down_Interval
	// while its node was busy wiring routers took its router over; with the
	// higher ha- address it kept it. Such routers are sent home.
	for round := 0; ; round++ {
		var away []int
		for i := range b.routers {
			onMaster, _ := b.holds(i, master)
			onTaker, _ := b.holds(i, taker)
			if !onMaster || onTaker {
				away = append(away, i)
			}
		}
		if len(away) == 0 {
			return nil
		}
		if round == 3 {
			return notSettledf("%d router(s) not mastered by %s after 3 attempts to move them back (%s)", len(away), master, firstFew(b.ids(away)))
		}
		b.sayf("%d router(s) are not mastered by %s: moving them back", len(away), master)
		if err := b.rehome(ctx, away, master, taker, adv); err != nil {
			return err
		}
	}
}

func (b *benchLab) ids(idx []int) []string {
	out := make([]string, len(idx))
	for k, i := range idx {
		out[k] = b.routers[i].ID
	}
	return out
}

// rehome gives routers back to master: their ha- devices on taker go down
// until master holds their addresses, then up again.
func (b *benchLab) rehome(ctx context.Context, idx []int, master, taker string, adv time.Duration) error {
	set := func(up bool) error {
		for _, i := range idx {
			if err := b.setHALink(RouterNamespace(b.o.Name, b.routers[i].ID, taker), up); err != nil {
				return err
			}
		}
		return nil
	}
	if err := set(false); err != nil {
		return err
	}
	err := waitFor(ctx, 30*time.Second+20*adv, "the routers to move back to "+master, func() (bool, error) {
		for _, i := range idx {
			if ok, _ := b.holds(i, master); !ok {
				return false, nil
			}
		}
		return true, nil
	})
	if uerr := set(true); uerr != nil {
		return errors.Join(err, uerr)
	}
	if err != nil {
		return err
	}
	// Back up, the taker's instances start as backups again; give them
	// their start and a few adverts before the routers are looked at again.
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(dataplane.StartDelay(2, adv) + 5*adv):
	}
	return nil
}

// setHALink sets the ha- device of router namespace ns up or down.
func (b *benchLab) setHALink(ns string, up bool) error {
	return withHandle(ns, func(h *netlink.Handle) error {
		links, err := retryDump(h.LinkList)
		if err != nil {
			return err
		}
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, "ha-") {
				if up {
					return h.LinkSetUp(l)
				}
				return h.LinkSetDown(l)
			}
		}
		return fmt.Errorf("no ha- device in %s", ns)
	})
}

// setupTimeout bounds the waits of the setup.
func setupTimeout(n int, adv time.Duration) time.Duration {
	return 60*time.Second + 10*adv + time.Duration(n)*300*time.Millisecond
}

// ensureExternal creates the external network "public" as the failover
// scenario does (unless it exists), the benchmark's /22 on it, and gives
// the upstream host that subnet's gateway address.
func (b *benchLab) ensureExternal(ctx context.Context) error {
	api := b.api
	pub, err := ensurePublicNetwork(ctx, api)
	if err != nil {
		return err
	}
	b.pubID = pub
	sub, err := api.findByName(ctx, "subnets", "bench-subnet", url.Values{"network_id": {pub}})
	if err != nil {
		return err
	}
	if sub == "" {
		var n idOnly
		if err := api.create(ctx, "subnets", "subnet", map[string]any{
			"name": "bench-subnet", "network_id": pub, "ip_version": 4, "cidr": BenchExternalCIDR,
			"gateway_ip": BenchUpstreamIP, "enable_dhcp": false,
			"allocation_pools": []map[string]string{{"start": BenchPoolLo, "end": BenchPoolHi}},
		}, &n); err != nil {
			return err
		}
		sub = n.ID
	}
	b.subnet = sub
	up := NodeNamespace(b.o.Name, upstreamNS)
	return withHandle(up, func(h *netlink.Handle) error {
		l, err := h.LinkByName(devUplink)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", up, devUplink, err)
		}
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(BenchUpstreamIP).To4(), Mask: net.CIDRMask(BenchExternalPrefix, 32)}}
		if err := h.AddrReplace(l, addr); err != nil {
			return fmt.Errorf("%s: add %s/%d: %w", up, BenchUpstreamIP, BenchExternalPrefix, err)
		}
		return nil
	})
}

// createRouters creates n HA routers with gateways on the benchmark's
// subnet, four at a time, and reads their gateway ports' MACs.
func (b *benchLab) createRouters(ctx context.Context, n int) error {
	b.sayf("creating %d HA routers", n)
	began := time.Now()
	routers := make([]benchRouter, n)
	run := randomHex(3)
	err := parallelDo(ctx, n, 4, func(i int) error {
		var r apiRouter
		if err := b.api.create(ctx, "routers", "router", map[string]any{
			"name": fmt.Sprintf("bench-%s-%04d", run, i), "ha": true,
			"external_gateway_info": map[string]any{
				"network_id":         b.pubID,
				"external_fixed_ips": []map[string]any{{"subnet_id": b.subnet}},
			},
		}, &r); err != nil {
			return err
		}
		gw, err := netip.ParseAddr(r.gatewayIP())
		if err != nil {
			return fmt.Errorf("router %s: gateway address %q: %w", r.ID, r.gatewayIP(), err)
		}
		routers[i] = benchRouter{ID: r.ID, Gateway: gw}
		return nil
	})
	if err != nil {
		return fmt.Errorf("creating routers: %w", err)
	}
	var ports struct {
		Ports []struct {
			DeviceID string `json:"device_id"`
			MAC      string `json:"mac_address"`
		} `json:"ports"`
	}
	if err := b.api.do(ctx, http.MethodGet, "/v2.0/ports?device_owner=network:router_gateway", nil, &ports); err != nil {
		return err
	}
	macs := map[string]string{}
	for _, p := range ports.Ports {
		macs[p.DeviceID] = p.MAC
	}
	for i := range routers {
		mac, err := net.ParseMAC(macs[routers[i].ID])
		if err != nil {
			return fmt.Errorf("router %s: gateway port MAC %q: %w", routers[i].ID, macs[routers[i].ID], err)
		}
		routers[i].MAC = mac
	}
	b.routers = routers
	b.sayf("created %d routers in %.1f s", n, time.Since(began).Seconds())
	return nil
}

func (b *benchLab) routerNamespaces(node string) []string {
	out := make([]string, len(b.routers))
	for i, r := range b.routers {
		out[i] = RouterNamespace(b.o.Name, r.ID, node)
	}
	return out
}

func (b *benchLab) gateways() []netip.Addr {
	out := make([]netip.Addr, len(b.routers))
	for i, r := range b.routers {
		out[i] = r.Gateway
	}
	return out
}

// holds reports whether router i's namespace on node holds its gateway
// address and a VIP (a master's addresses).
func (b *benchLab) holds(i int, node string) (bool, error) {
	ns := RouterNamespace(b.o.Name, b.routers[i].ID, node)
	if !nsExists(ns) {
		return false, nil
	}
	var gw, vip bool
	err := withHandle(ns, func(h *netlink.Handle) error {
		addrs, err := retryDump(func() ([]netlink.Addr, error) { return h.AddrList(nil, netlink.FAMILY_V4) })
		if err != nil {
			return err
		}
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP.To4())
			if !ok {
				continue
			}
			gw = gw || ip == b.routers[i].Gateway
			vip = vip || vipRange.Contains(ip)
		}
		return nil
	})
	return gw && vip, err
}

// waitHolders waits until node holds the addresses of every router.
func (b *benchLab) waitHolders(ctx context.Context, node string, timeout time.Duration) error {
	pending := make([]int, len(b.routers))
	for i := range pending {
		pending[i] = i
	}
	return waitFor(ctx, timeout, fmt.Sprintf("%s to hold the addresses of all %d routers", node, len(b.routers)), func() (bool, error) {
		var still []int
		for _, i := range pending {
			if ok, _ := b.holds(i, node); !ok {
				still = append(still, i)
			}
		}
		pending = still
		return len(pending) == 0, nil
	})
}

// stateFile is the HA state file of router id on node.
func (b *benchLab) stateFile(node, id string) string {
	return filepath.Join(nodeStateDir(b.st.Dir, node), "ha_confs", id, "state")
}

// readState returns the content of router id's state file on node ("" if
// none).
func (b *benchLab) readState(node, id string) string {
	s, _ := os.ReadFile(b.stateFile(node, id))
	return strings.TrimSpace(string(s))
}

// waitVRRP waits until node has a state file for every router: its HA
// driver runs VRRP for it.
func (b *benchLab) waitVRRP(ctx context.Context, node string, timeout time.Duration) error {
	return waitFor(ctx, timeout, fmt.Sprintf("%s to report a VRRP state for all %d routers", node, len(b.routers)), func() (bool, error) {
		for _, r := range b.routers {
			if b.readState(node, r.ID) == "" {
				return false, nil
			}
		}
		return true, nil
	})
}

// waitFloodPeers waits until node's agent floods every HA network (VXLAN
// device) of the routers to peer: one head-end replication entry
// (00:00:00:00:00:00 dst peer) on each of its VXLAN devices.
func (b *benchLab) waitFloodPeers(ctx context.Context, node, peer string, timeout time.Duration) error {
	ns := NodeNamespace(b.o.Name, node)
	ip := net.ParseIP(peer)
	perNet := max(b.st.HARoutersPerNetwork, 1)
	if b.st.HARoutersPerNetwork == 0 {
		perNet = 254
	}
	want := (len(b.routers) + perNet - 1) / perNet
	var have, devs int
	err := waitFor(ctx, timeout, fmt.Sprintf("%s to flood the HA networks to %s", node, peer), func() (bool, error) {
		have, devs = 0, 0
		err := withHandle(ns, func(h *netlink.Handle) error {
			links, err := retryDump(h.LinkList)
			if err != nil {
				return err
			}
			for _, l := range links {
				if l.Type() != "vxlan" {
					continue
				}
				devs++
				neighs, err := h.NeighList(l.Attrs().Index, unix.AF_BRIDGE)
				if err != nil {
					return err
				}
				for _, nb := range neighs {
					if nb.IP.Equal(ip) {
						have++
						break
					}
				}
			}
			return nil
		})
		if err != nil {
			return false, nil
		}
		return have == devs && have >= want, nil
	})
	if err != nil {
		return fmt.Errorf("%w (%d of %d VXLAN devices, %d expected)", err, have, devs, want)
	}
	return nil
}

// upstreamNeighbours gives the upstream host a permanent neighbour entry for
// every router's gateway address (its gateway port's MAC).
func (b *benchLab) upstreamNeighbours() error {
	up := NodeNamespace(b.o.Name, upstreamNS)
	return withHandle(up, func(h *netlink.Handle) error {
		l, err := h.LinkByName(devUplink)
		if err != nil {
			return err
		}
		for _, r := range b.routers {
			err := h.NeighSet(&netlink.Neigh{
				LinkIndex: l.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
				IP: net.IP(r.Gateway.AsSlice()), HardwareAddr: r.MAC,
			})
			if err != nil {
				return fmt.Errorf("%s: neighbour %s: %w", up, r.Gateway, err)
			}
		}
		return nil
	})
}

// haLinksDown sets the ha- device of every router down in its namespace on
// node, recording when each went; it returns the first time.
func (b *benchLab) haLinksDown(node string, t0s []time.Time) (time.Time, error) {
	for i, r := range b.routers {
		t0s[i] = time.Now()
		if err := b.setHALink(RouterNamespace(b.o.Name, r.ID, node), false); err != nil {
			return t0s[0], err
		}
	}
	return t0s[0], nil
}
