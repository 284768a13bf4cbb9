package ctsync

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/l3ha/l3ha/internal/linux"
)

func startSyncers(t *testing.T, p *pair) [2]*Syncer {
	t.Helper()
	id := uuid.NewString()
	var out [2]*Syncer
	for i, r := range p.routers {
		s, err := Start(Config{RouterID: id, Namespace: r, HADevice: "ha0", VRID: 7, HANet: haNet, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		out[i] = s
	}
	out[0].SetMaster(true)
	return out
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSyncCarriesAStrictTCPStreamAcrossATakeover: the master's syncer sends
// a new connection to the backup over the HA network — and on no other
// device; after the takeover the stream goes on in strict mode
// (nf_conntrack_tcp_loose=0).
func TestSyncCarriesAStrictTCPStreamAcrossATakeover(t *testing.T) {
	p := newPair(t)
	onHA := countSync(t, p.routers[0], "ha0")
	elsewhere := map[string]*syncCounter{}
	for _, dev := range []string{"qr0", "qg0"} {
		elsewhere[dev] = countSync(t, p.routers[0], dev)
	}
	syncers := startSyncers(t, p)
	s := startStream(t, p, 5001)
	if err := s.flowsWithin(20, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the backup to install the stream", func() bool { return syncers[1].Stats().Installed > 0 })
	p.activate(1)
	syncers[0].SetMaster(false)
	syncers[1].SetMaster(true)
	s.drain()
	if err := s.flowsWithin(50, 8*time.Second); err != nil {
		t.Fatalf("after the takeover: %v", err)
	}
	// And back: the new master's table (learnt from the old) goes to the
	// old master, now backup.
	waitFor(t, 5*time.Second, "the new master to send its table", func() bool { return syncers[0].Stats().Installed > 0 })
	p.activate(0)
	syncers[1].SetMaster(false)
	syncers[0].SetMaster(true)
	s.drain()
	if err := s.flowsWithin(50, 8*time.Second); err != nil {
		t.Fatalf("after the second takeover: %v", err)
	}
	if onHA.n.Load() == 0 {
		t.Fatal("no sync datagram seen on ha0: the counter cannot see them")
	}
	for dev, c := range elsewhere {
		if n := c.n.Load(); n != 0 {
			t.Errorf("%d sync datagrams on %s: the sync must stay on the HA network", n, dev)
		}
	}
	for i, sy := range syncers {
		if st := sy.Stats(); st.InstallErrors != 0 {
			t.Errorf("router %d: %d install errors", i, st.InstallErrors)
		}
	}
	t.Logf("sync datagrams on ha0: %d; master stats %+v, backup %+v", onHA.n.Load(), syncers[0].Stats(), syncers[1].Stats())
}

// TestSyncKeepsSNATPortsThatCollideOnTheNewMaster: two instances use the
// same source port to one server, so the master gives the second another
// SNAT port. Without the sync, the new master hands out ports in arrival
// order and the server sees a flow's port change; with it, neither changes.
func TestSyncKeepsSNATPortsThatCollideOnTheNewMaster(t *testing.T) {
	for _, synced := range []bool{true, false} {
		t.Run(fmt.Sprintf("synced=%v", synced), func(t *testing.T) {
			p := newPair(t)
			var syncers [2]*Syncer
			if synced {
				syncers = startSyncers(t, p)
			}
			a, b := netip.MustParseAddr("10.10.30.6"), netip.MustParseAddr("10.10.30.7")
			for _, ip := range []netip.Addr{a, b} {
				if err := linux.AddAddress(p.client, "eth0", netip.PrefixFrom(ip, 24)); err != nil {
					t.Fatal(err)
				}
			}
			var srv *net.UDPConn
			if err := linux.Do(p.server, func() (err error) {
				srv, err = net.ListenUDP("udp4", &net.UDPAddr{IP: serverIP.AsSlice(), Port: 5002})
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			var socks [2]*net.UDPConn
			for i, ip := range []netip.Addr{a, b} {
				if err := linux.Do(p.client, func() (err error) {
					socks[i], err = net.DialUDP("udp4", &net.UDPAddr{IP: ip.AsSlice(), Port: 40000}, &net.UDPAddr{IP: serverIP.AsSlice(), Port: 5002})
					return err
				}); err != nil {
					t.Fatal(err)
				}
				defer socks[i].Close()
			}
			// seen sends one datagram from sock i and returns the source
			// port the server saw.
			seen := func(i int) int {
				t.Helper()
				buf := make([]byte, 16)
				for range 50 {
					socks[i].Write([]byte{byte(i)})
					srv.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
					n, from, err := srv.ReadFromUDP(buf)
					if err == nil && n == 1 && int(buf[0]) == i {
						return from.Port
					}
				}
				t.Fatalf("no datagram from instance %d reached the server", i)
				return 0
			}
			before := [2]int{seen(0), seen(1)}
			if before[0] == before[1] {
				t.Fatalf("both flows leave with port %d", before[0])
			}
			if synced {
				waitFor(t, 5*time.Second, "the backup to install both flows", func() bool { return syncers[1].Stats().Installed >= 2 })
			}
			p.activate(1)
			if synced {
				syncers[0].SetMaster(false)
				syncers[1].SetMaster(true)
			}
			// The flow that did not get its own port speaks first.
			second := 1
			if before[0] != 40000 {
				second = 0
			}
			after := [2]int{}
			after[second] = seen(second)
			after[1-second] = seen(1 - second)
			if synced && after != before {
				t.Fatalf("SNAT ports changed across the takeover: %v, then %v", before, after)
			}
			if !synced && after == before {
				t.Fatalf("SNAT ports %v survived without the sync: the test cannot tell", before)
			}
		})
	}
}
