package lab

// The failover benchmark's watchers: address notifications of the taker's
// router namespaces (the vip view) and API polling (the api view).

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"sync"
	"time"

	mnl "github.com/mdlayher/netlink"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// vipRange holds the VRRP VIPs (169.254.0.<vrid>/24) of every router.
var vipRange = netip.MustParsePrefix("169.254.0.0/24")

// addrWatch follows, through address notifications, whether each router's
// namespace (on one node) holds its gateway address and a VIP.
type addrWatch struct {
	mu      sync.Mutex
	routers []*addrState
	conns   []*mnl.Conn
	wg      sync.WaitGroup
}

type addrState struct {
	gw      netip.Addr
	present map[netip.Addr]bool
	// events are the changes of holds(), in order.
	events []holdEvent
}

type holdEvent struct {
	at    time.Time
	holds bool
}

func (s *addrState) holds() bool {
	if !s.present[s.gw] {
		return false
	}
	for a := range s.present {
		if vipRange.Contains(a) {
			return true
		}
	}
	return false
}

func (s *addrState) set(a netip.Addr, on bool, at time.Time) {
	if a != s.gw && !vipRange.Contains(a) {
		return
	}
	before := s.holds()
	if on {
		s.present[a] = true
	} else {
		delete(s.present, a)
	}
	if after := s.holds(); after != before {
		s.events = append(s.events, holdEvent{at: at, holds: after})
	}
}

// watchAddrs subscribes to the IPv4 address notifications of each namespace
// (which must exist) and reads its addresses once.
func watchAddrs(namespaces []string, gateways []netip.Addr) (*addrWatch, error) {
	w := &addrWatch{}
	for i, ns := range namespaces {
		st := &addrState{gw: gateways[i], present: map[netip.Addr]bool{}}
		w.routers = append(w.routers, st)
		fd, err := openNS(ns)
		if err != nil {
			w.close()
			return nil, err
		}
		c, err := mnl.Dial(unix.NETLINK_ROUTE, &mnl.Config{NetNS: int(fd), Groups: unix.RTMGRP_IPV4_IFADDR})
		fd.Close()
		if err != nil {
			w.close()
			return nil, fmt.Errorf("address notifications of %s: %w", ns, err)
		}
		_ = c.SetReadBuffer(1 << 20)
		w.conns = append(w.conns, c)
		w.wg.Go(func() { w.receive(c, st) })
		err = withHandle(ns, func(h *netlink.Handle) error {
			addrs, err := retryDump(func() ([]netlink.Addr, error) { return h.AddrList(nil, netlink.FAMILY_V4) })
			if err != nil {
				return err
			}
			now := time.Now()
			w.mu.Lock()
			defer w.mu.Unlock()
			for _, a := range addrs {
				if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok {
					st.set(ip, true, now)
				}
			}
			return nil
		})
		if err != nil {
			w.close()
			return nil, err
		}
	}
	return w, nil
}

func (w *addrWatch) receive(c *mnl.Conn, st *addrState) {
	for {
		msgs, err := c.Receive()
		now := time.Now()
		if err != nil {
			if errors.Is(err, unix.ENOBUFS) {
				continue // overrun: later messages still tell the state
			}
			return // closed
		}
		w.mu.Lock()
		for _, m := range msgs {
			var on bool
			switch m.Header.Type {
			case unix.RTM_NEWADDR:
				on = true
			case unix.RTM_DELADDR:
			default:
				continue
			}
			if a, ok := parseIfAddr(m.Data); ok {
				st.set(a, on, now)
			}
		}
		w.mu.Unlock()
	}
}

// parseIfAddr reads the IPv4 address of an RTM_NEWADDR/RTM_DELADDR message:
// struct ifaddrmsg (8 bytes), then attributes (IFA_LOCAL, else
// IFA_ADDRESS).
func parseIfAddr(b []byte) (netip.Addr, bool) {
	if len(b) < unix.SizeofIfAddrmsg || b[0] != unix.AF_INET {
		return netip.Addr{}, false
	}
	ad, err := mnl.NewAttributeDecoder(b[unix.SizeofIfAddrmsg:])
	if err != nil {
		return netip.Addr{}, false
	}
	var local, address netip.Addr
	for ad.Next() {
		switch ad.Type() {
		case unix.IFA_LOCAL:
			local, _ = netip.AddrFromSlice(ad.Bytes())
		case unix.IFA_ADDRESS:
			address, _ = netip.AddrFromSlice(ad.Bytes())
		}
	}
	if local.Is4() {
		return local, true
	}
	return address, address.Is4()
}

func (w *addrWatch) holdsNow(i int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.routers[i].holds()
}

// firstHold is when router i's namespace came to hold its addresses at or
// after t0 (t0 itself if it held them then).
func (w *addrWatch) firstHold(i int, t0 time.Time) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	held := false
	for _, e := range w.routers[i].events {
		if !e.at.Before(t0) {
			if held {
				return t0, true
			}
			if e.holds {
				return e.at, true
			}
		}
		held = e.holds
	}
	if held {
		return t0, true
	}
	return time.Time{}, false
}

// flapped reports whether router i's namespace lost its addresses again
// after first holding them after t0.
func (w *addrWatch) flapped(i int, t0 time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	got := false
	for _, e := range w.routers[i].events {
		if e.at.Before(t0) {
			continue
		}
		if e.holds {
			got = true
		} else if got {
			return true
		}
	}
	return false
}

func (w *addrWatch) close() {
	for _, c := range w.conns {
		c.Close()
	}
	w.wg.Wait()
}

// apiWatch polls GET /v2.0/routers/{id}/l3-agents for the routers whose
// host is not yet shown active (and that are ready, when a ready function
// is given), with two clients, each router at most every apiPollPeriod.
type apiWatch struct {
	mu     sync.Mutex
	got    []time.Time
	rounds int
	total  time.Duration
	done   chan struct{}
}

const apiPollPeriod = 50 * time.Millisecond

func (b *benchLab) watchAPI(ctx context.Context, host string, ready func(i int) bool) *apiWatch {
	w := &apiWatch{got: make([]time.Time, len(b.routers)), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for ctx.Err() == nil {
			var pending []int
			left := 0
			w.mu.Lock()
			for i, t := range w.got {
				if t.IsZero() {
					left++
					if ready == nil || ready(i) {
						pending = append(pending, i)
					}
				}
			}
			w.mu.Unlock()
			if left == 0 {
				return
			}
			if len(pending) == 0 {
				select {
				case <-ctx.Done():
				case <-time.After(5 * time.Millisecond):
				}
				continue
			}
			began := time.Now()
			_ = parallelDo(ctx, len(pending), 2, func(k int) error {
				i := pending[k]
				actx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				agents, err := b.api.routerAgents(actx, b.routers[i].ID)
				if err != nil {
					return nil
				}
				for _, a := range agents {
					if a.Host == host && a.haState() == "active" {
						w.mu.Lock()
						w.got[i] = time.Now()
						w.mu.Unlock()
					}
				}
				return nil
			})
			d := time.Since(began)
			w.mu.Lock()
			w.rounds++
			w.total += d
			w.mu.Unlock()
			if d < apiPollPeriod {
				select {
				case <-ctx.Done():
				case <-time.After(apiPollPeriod - d):
				}
			}
		}
	}()
	return w
}

func (w *apiWatch) moved(i int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return !w.got[i].IsZero()
}

// at is how long after t0 router i was seen moved; -1 if it was not.
func (w *apiWatch) at(i int, t0 time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.got[i].IsZero() {
		return -1
	}
	return max(w.got[i].Sub(t0), 0)
}

func (w *apiWatch) wait() { <-w.done }

func (w *apiWatch) meanRoundMS() float64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.rounds == 0 {
		return 0
	}
	return math.Round(float64(w.total)/float64(w.rounds)/float64(time.Millisecond)*10) / 10
}
