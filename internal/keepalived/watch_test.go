package keepalived

import (
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/vishvananda/netlink"
)

// fakeSubs hands out subscriptions whose streams the test drives.
type fakeSubs struct {
	mu       sync.Mutex
	chans    []chan netlink.AddrUpdate
	existing [][]netlink.Addr // per subscription; the last one repeats
	fail     int              // fail this many subscriptions after the first
	calls    int
}

func (f *fakeSubs) subscribe() (*subscription, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.calls > 1 && f.fail > 0 {
		f.fail--
		return nil, fmt.Errorf("fake subscribe failure")
	}
	ch := make(chan netlink.AddrUpdate)
	f.chans = append(f.chans, ch)
	ex := f.existing[min(len(f.chans)-1, len(f.existing)-1)]
	return &subscription{updates: ch, existing: ex, cancel: func() {}}, nil
}

func (f *fakeSubs) send(u netlink.AddrUpdate) {
	f.mu.Lock()
	ch := f.chans[len(f.chans)-1]
	f.mu.Unlock()
	ch <- u
}

func (f *fakeSubs) breakStream() {
	f.mu.Lock()
	close(f.chans[len(f.chans)-1])
	f.mu.Unlock()
}

func ipnet(s string) net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return *n
}

func addrUpd(cidr string, link int, add bool) netlink.AddrUpdate {
	return netlink.AddrUpdate{LinkAddress: ipnet(cidr), LinkIndex: link, NewAddr: add}
}

func existingAddr(cidr string, link int) netlink.Addr {
	n := ipnet(cidr)
	return netlink.Addr{IPNet: &n, LinkIndex: link}
}

type reports struct {
	mu  sync.Mutex
	got []string
	at  []time.Time
}

func (r *reports) add(s string) {
	r.mu.Lock()
	r.got = append(r.got, s)
	r.at = append(r.at, time.Now())
	r.mu.Unlock()
}

func (r *reports) list() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fmt.Sprint(r.got)
}

func testSpec(r *reports) watchSpec {
	return watchSpec{
		RouterID: "r1", Namespace: "ns1", VIP: VIP(9), Delay: 2 * time.Second,
		Report: r.add, Log: slog.New(slog.DiscardHandler),
	}
}

// TestWatcherDebounce: the state found at start is reported at once; a
// change is reported once it has held for one advert interval, and a flap
// shorter than that is not reported at all (LP#1837635).
func TestWatcherDebounce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var r reports
		f := &fakeSubs{existing: [][]netlink.Addr{{existingAddr("169.254.192.5/18", 2)}}}
		stop, err := startWatcher(testSpec(&r), f.subscribe)
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		if r.list() != "[standby]" {
			t.Fatalf("initial report = %s, want [standby] before startWatcher returns", r.list())
		}

		// Becomes master: reported after one advert interval, not before.
		t0 := time.Now()
		f.send(addrUpd("169.254.0.9/24", 2, true))
		time.Sleep(2*time.Second - time.Millisecond)
		synctest.Wait()
		if r.list() != "[standby]" {
			t.Fatalf("reported before the state held for one advert: %s", r.list())
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if r.list() != "[standby active]" || r.at[1].Sub(t0) != 2*time.Second {
			t.Fatalf("reports = %s at %v", r.list(), r.at)
		}

		// A flap (VIP gone for one second) is dropped.
		f.send(addrUpd("169.254.0.9/24", 2, false))
		time.Sleep(time.Second)
		f.send(addrUpd("169.254.0.9/24", 2, true))
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if r.list() != "[standby active]" {
			t.Fatalf("flap reported: %s", r.list())
		}

		// Other addresses, and the VIP's address with another length, are
		// not the VIP.
		f.send(addrUpd("169.254.0.9/24", 2, false))
		f.send(addrUpd("169.254.0.9/32", 3, true))
		f.send(addrUpd("169.254.0.10/24", 2, true))
		f.send(addrUpd("10.0.0.1/24", 4, true))
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if r.list() != "[standby active standby]" {
			t.Fatalf("reports = %s", r.list())
		}

		// Repeated announcements of a state already reported change nothing;
		// the VIP on two links stays active until it leaves both.
		f.send(addrUpd("169.254.0.9/24", 2, true))
		f.send(addrUpd("169.254.0.9/24", 5, true))
		f.send(addrUpd("169.254.0.9/24", 2, true))
		time.Sleep(3 * time.Second)
		f.send(addrUpd("169.254.0.9/24", 2, false))
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if r.list() != "[standby active standby active]" {
			t.Fatalf("reports = %s", r.list())
		}
		f.send(addrUpd("169.254.0.9/24", 5, false))
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if r.list() != "[standby active standby active standby]" {
			t.Fatalf("reports = %s", r.list())
		}
	})
}

// TestWatcherInitialActive: a watcher started where keepalived already holds
// the VIP (an adopted master) reports active at once.
func TestWatcherInitialActive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var r reports
		f := &fakeSubs{existing: [][]netlink.Addr{{existingAddr("169.254.192.5/18", 2), existingAddr("169.254.0.9/24", 2)}}}
		stop, err := startWatcher(testSpec(&r), f.subscribe)
		if err != nil {
			t.Fatal(err)
		}
		// The ListExisting dump repeats what the snapshot said: no change.
		f.send(addrUpd("169.254.0.9/24", 2, true))
		time.Sleep(10 * time.Second)
		synctest.Wait()
		stop()
		if r.list() != "[active]" {
			t.Fatalf("reports = %s, want [active]", r.list())
		}
	})
}

// TestWatcherResubscribes: when the address stream breaks (e.g. ENOBUFS) the
// watcher subscribes again with backoff and converges on the new snapshot.
func TestWatcherResubscribes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var r reports
		f := &fakeSubs{
			existing: [][]netlink.Addr{{existingAddr("169.254.0.9/24", 2)}, {}},
			fail:     3,
		}
		stop, err := startWatcher(testSpec(&r), f.subscribe)
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		f.breakStream()
		time.Sleep(5 * time.Second)
		synctest.Wait()
		f.mu.Lock()
		calls := f.calls
		f.mu.Unlock()
		if calls != 5 {
			t.Errorf("subscribe calls = %d, want 5 (1 + 3 failures + 1)", calls)
		}
		if r.list() != "[active standby]" {
			t.Fatalf("reports = %s", r.list())
		}
		f.send(addrUpd("169.254.0.9/24", 7, true))
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if r.list() != "[active standby active]" {
			t.Fatalf("reports = %s", r.list())
		}
	})
}

// TestWatcherStop: after stop returns nothing is reported, even a change
// whose debounce was running.
func TestWatcherStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var r reports
		f := &fakeSubs{existing: [][]netlink.Addr{{}}}
		stop, err := startWatcher(testSpec(&r), f.subscribe)
		if err != nil {
			t.Fatal(err)
		}
		f.send(addrUpd("169.254.0.9/24", 2, true))
		time.Sleep(time.Second)
		stop()
		stop() // idempotent
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if r.list() != "[standby]" {
			t.Fatalf("reports = %s", r.list())
		}
	})
}

func TestWatcherSubscribeError(t *testing.T) {
	_, err := startWatcher(testSpec(&reports{}), func() (*subscription, error) { return nil, fmt.Errorf("boom") })
	if err == nil {
		t.Fatal("no error")
	}
}
