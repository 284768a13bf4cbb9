package keepalived

import (
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/l3ha/l3ha/internal/agentapi"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// watchSpec says what to watch for one router.
type watchSpec struct {
	RouterID  string
	Namespace string
	VIP       netip.Prefix
	// Delay is how long a new state must persist before it is reported (one
	// advert interval, LP#1837635).
	Delay time.Duration
	// Report receives agentapi.HAActive or agentapi.HAStandby. Calls are
	// sequential.
	Report func(state string)
	Log    *slog.Logger
}

// watchFunc starts watching; the returned stop waits until no more reports
// can be made.
type watchFunc func(watchSpec) (stop func(), err error)

// subscription is a stream of address changes with the addresses that
// existed when it began.
type subscription struct {
	updates  <-chan netlink.AddrUpdate
	existing []netlink.Addr
	cancel   func()
}

// netlinkWatch watches the VIP through an address subscription inside the
// router's namespace: one goroutine per namespace, no helper process.
func netlinkWatch(s watchSpec) (func(), error) {
	ns, err := netns.GetFromName(s.Namespace)
	if err != nil {
		return nil, fmt.Errorf("namespace %s: %w", s.Namespace, err)
	}
	sub := func() (*subscription, error) { return subscribeAddrs(ns, s.Log) }
	stop, err := startWatcher(s, sub)
	if err != nil {
		ns.Close()
		return nil, err
	}
	var once sync.Once
	return func() { once.Do(func() { stop(); ns.Close() }) }, nil
}

// subscribeAddrs subscribes to the IPv4 address changes of ns. The
// subscription lists existing addresses too (ListExisting), so that its
// stream alone converges on the kernel's state; the separate dump taken after
// subscribing gives the starting state at once.
func subscribeAddrs(ns netns.NsHandle, log *slog.Logger) (*subscription, error) {
	ch := make(chan netlink.AddrUpdate, 64)
	done := make(chan struct{})
	err := netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{
		Namespace:    &ns,
		ListExisting: true,
		ErrorCallback: func(err error) {
			select {
			case <-done: // closing
			default:
				log.Warn("address subscription", "err", err)
			}
		},
		ReceiveBufferSize: 1 << 20,
	})
	if err != nil {
		close(done)
		return nil, fmt.Errorf("subscribing to addresses: %w", err)
	}
	var once sync.Once
	cancel := func() {
		once.Do(func() {
			close(done)
			// The receiving goroutine may be blocked sending; it closes ch
			// once the socket is closed.
			for range ch {
			}
		})
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		cancel()
		return nil, err
	}
	defer h.Close()
	addrs, err := h.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("listing addresses: %w", err)
	}
	return &subscription{updates: ch, existing: addrs, cancel: cancel}, nil
}

// vipWatcher follows where the VIP is and reports debounced states.
type vipWatcher struct {
	spec      watchSpec
	subscribe func() (*subscription, error)
	stop      chan struct{}
	exited    chan struct{}
	retryMin  time.Duration
	retryMax  time.Duration
}

func stateOf(present bool) string {
	if present {
		return agentapi.HAActive
	}
	return agentapi.HAStandby
}

// startWatcher subscribes, reports the state found (at once: after an agent
// restart this is the adopted router's current state) and follows changes in
// a goroutine.
func startWatcher(s watchSpec, subscribe func() (*subscription, error)) (func(), error) {
	w := &vipWatcher{
		spec:      s,
		subscribe: subscribe,
		stop:      make(chan struct{}),
		exited:    make(chan struct{}),
		retryMin:  100 * time.Millisecond,
		retryMax:  5 * time.Second,
	}
	sub, err := subscribe()
	if err != nil {
		return nil, err
	}
	links := w.snapshot(sub.existing)
	present := len(links) > 0
	s.Log.Debug("VIP watcher started", "vip", s.VIP, "state", stateOf(present))
	s.Report(stateOf(present))
	go w.run(sub, links, present)
	var once sync.Once
	return func() {
		once.Do(func() { close(w.stop) })
		<-w.exited
	}, nil
}

func (w *vipWatcher) isVIP(ip netip.Addr, bits int) bool {
	return ip.Unmap() == w.spec.VIP.Addr() && bits == w.spec.VIP.Bits()
}

func (w *vipWatcher) snapshot(addrs []netlink.Addr) map[int]bool {
	links := map[int]bool{}
	for _, a := range addrs {
		if a.IPNet == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IP)
		bits, _ := a.Mask.Size()
		if ok && w.isVIP(ip, bits) {
			links[a.LinkIndex] = true
		}
	}
	return links
}

// run applies address changes to the set of links holding the VIP and
// reports a state once it has held for spec.Delay and differs from the last
// one reported.
func (w *vipWatcher) run(sub *subscription, links map[int]bool, reported bool) {
	defer close(w.exited)
	cur := reported
	var timer *time.Timer
	var timerC <-chan time.Time
	defer func() {
		if timer != nil {
			timer.Stop()
		}
		if sub != nil {
			sub.cancel()
		}
	}()
	changed := func() {
		now := len(links) > 0
		if now == cur {
			return
		}
		cur = now
		if timer == nil {
			timer = time.NewTimer(w.spec.Delay)
		} else {
			timer.Reset(w.spec.Delay)
		}
		timerC = timer.C
	}
	for {
		select {
		case <-w.stop:
			return
		case u, ok := <-sub.updates:
			if !ok {
				sub.cancel()
				sub = w.resubscribe()
				if sub == nil {
					return // stopped
				}
				links = w.snapshot(sub.existing)
				changed()
				continue
			}
			ip, ok := netip.AddrFromSlice(u.LinkAddress.IP)
			bits, _ := u.LinkAddress.Mask.Size()
			if !ok || !w.isVIP(ip, bits) {
				continue
			}
			if u.NewAddr {
				links[u.LinkIndex] = true
			} else {
				delete(links, u.LinkIndex)
			}
			changed()
		case <-timerC:
			timerC = nil
			if cur != reported {
				reported = cur
				w.spec.Log.Info("VRRP transition", "state", stateOf(cur))
				w.spec.Report(stateOf(cur))
			}
		}
	}
}

// resubscribe retries with backoff until it succeeds or the watcher stops.
func (w *vipWatcher) resubscribe() *subscription {
	wait := w.retryMin
	for {
		select {
		case <-w.stop:
			return nil
		case <-time.After(wait):
		}
		sub, err := w.subscribe()
		if err == nil {
			w.spec.Log.Info("address subscription restored")
			return sub
		}
		w.spec.Log.Warn("address subscription failed; retrying", "err", err, "in", wait)
		wait = min(wait*2, w.retryMax)
	}
}
