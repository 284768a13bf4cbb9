package engine

// Unit tier: the adapter's pure parts (receive-side checks, ARP frame,
// queues, job merging, timer heap), no root needed.

import (
	"container/heap"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/vrrp"
)

var (
	testSrc = netip.MustParseAddr("169.254.192.9")
	testVIP = netip.MustParseAddr("169.254.0.7")
)

// ipDatagram wraps payload in an IPv4 header as a raw socket delivers it.
func ipDatagram(ttl uint8, src, dst netip.Addr, payload []byte) []byte {
	b := make([]byte, 20+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[8], b[9] = ttl, vrrp.IPProtocol
	s, d := src.As4(), dst.As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	copy(b[20:], payload)
	return b
}

func advert(t testing.TB, version int, vrid uint8, src netip.Addr) []byte {
	t.Helper()
	p := vrrp.Packet{Version: version, Type: vrrp.TypeAdvertisement, VRID: vrid, Priority: 100, Addresses: []netip.Addr{testVIP}}
	if version == 3 {
		p.MaxAdvertInterval = 100
	} else {
		p.AdvertInterval = 1
		p.AuthType, p.AuthData = vrrp.AuthPassword, vrrp.PasswordAuthData("secret")
	}
	b, err := vrrp.Marshal(p, src, vrrp.Group)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDecodeReceiveSideChecks: the receive goroutine drops, with the vrrp
// package's reasons, what RFC 5798 §7.1 / RFC 3768 §7.1 reject before the
// machine's state matters, and passes a good advert with its TTL and source.
func TestDecodeReceiveSideChecks(t *testing.T) {
	good := advert(t, 3, 7, testSrc)
	badSum := advert(t, 3, 7, testSrc)
	badSum[6] ^= 0xff
	bigIHL := ipDatagram(255, testSrc, vrrp.Group.Unmap(), good)
	bigIHL[0] = 0x4f // header says 60 bytes, the datagram has fewer after it
	cases := []struct {
		name string
		b    []byte
		n    int // 0: len(b)
		want vrrp.Reason
	}{
		{"good", ipDatagram(255, testSrc, vrrp.Group, good), 0, ""},
		{"ttl", ipDatagram(64, testSrc, vrrp.Group, good), 0, vrrp.ReasonBadTTL},
		{"checksum", ipDatagram(255, testSrc, vrrp.Group, badSum), 0, vrrp.ReasonBadChecksum},
		{"v3 checksum covers the source", ipDatagram(255, netip.MustParseAddr("169.254.192.10"), vrrp.Group, good), 0, vrrp.ReasonBadChecksum},
		{"other vrid", ipDatagram(255, testSrc, vrrp.Group, advert(t, 3, 8, testSrc)), 0, vrrp.ReasonVRIDMismatch},
		{"other version", ipDatagram(255, testSrc, vrrp.Group, advert(t, 2, 7, testSrc)), 0, vrrp.ReasonVersionMismatch},
		{"truncated", ipDatagram(255, testSrc, vrrp.Group, good[:10]), 0, vrrp.ReasonTruncated},
		{"trailing bytes", ipDatagram(255, testSrc, vrrp.Group, append(good[:len(good):len(good)], 0, 0, 0, 0)), 0, vrrp.ReasonLengthMismatch},
		{"oversized", make([]byte, rxBufSize), rxBufSize + 1, ReasonOversized},
		{"short ip header", []byte{0x45, 0, 0}, 0, ReasonBadIPHeader},
		{"ihl beyond data", bigIHL, 0, ReasonBadIPHeader},
		{"ipv6", append([]byte{0x60}, make([]byte, 60)...), 0, ReasonBadIPHeader},
	}
	for _, c := range cases {
		n := c.n
		if n == 0 {
			n = len(c.b)
		}
		p, reason := decode(c.b, n, 7, 3)
		if reason != c.want {
			t.Errorf("%s: reason %q, want %q", c.name, reason, c.want)
		}
		if c.want == "" && (p.src != testSrc || p.ttl != 255 || p.p.VRID != 7) {
			t.Errorf("%s: decoded %+v", c.name, p)
		}
	}
}

// TestARPAnnouncement: RFC 5227 §3 layout, sender = target protocol address.
func TestARPAnnouncement(t *testing.T) {
	mac := net.HardwareAddr{0xfa, 0x16, 0x3e, 1, 2, 3}
	b := arpAnnouncement(mac, netip.MustParseAddr("10.0.0.1"))
	want := []byte{0, 1, 8, 0, 6, 4, 0, 1, 0xfa, 0x16, 0x3e, 1, 2, 3, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 1}
	if string(b) != string(want) {
		t.Errorf("frame % x\nwant  % x", b, want)
	}
	if htons(0x0806) != 0x0608 {
		t.Error("htons")
	}
}

func TestRxQueueBoundedAndRoundRobinMarks(t *testing.T) {
	q := newRxQueue(nil, 3)
	full, signal := q.push(rxPacket{ttl: 1})
	if full || !signal {
		t.Fatalf("first push: full %v signal %v", full, signal)
	}
	for i := 2; i <= 3; i++ {
		if full, signal := q.push(rxPacket{ttl: uint8(i)}); full || signal {
			t.Fatalf("push %d: full %v signal %v (already queued)", i, full, signal)
		}
	}
	if full, _ := q.push(rxPacket{ttl: 4}); !full {
		t.Fatal("fourth push into a queue of 3 was not refused")
	}
	out, more := q.take(nil, 2)
	if len(out) != 2 || out[0].ttl != 1 || out[1].ttl != 2 || !more {
		t.Fatalf("take 2: %v more %v", out, more)
	}
	out, more = q.take(nil, 2)
	if len(out) != 1 || out[0].ttl != 3 || more {
		t.Fatalf("take rest: %v more %v", out, more)
	}
	if _, signal := q.push(rxPacket{}); !signal {
		t.Fatal("push into a drained queue must signal the loop again")
	}
	q.close()
	if full, signal := q.push(rxPacket{}); full || signal {
		t.Fatal("push into a closed queue")
	}
}

// TestMergeKeepsWhatMustNotBeLost: the newest job decides what is
// installed; a due report or GARP survives being replaced, unless the newer
// job removes the router or the addresses.
func TestMergeKeepsWhatMustNotBeLost(t *testing.T) {
	d1, d2 := make(chan error, 1), make(chan error, 1)
	master := &job{seq: 1, install: true, garp: true, report: true, state: vrrp.Master, cause: vrrp.CauseMasterDown, done: []chan error{d1},
		staleDevs: []string{"qr-old"}}
	converge := &job{seq: 2, install: true, state: vrrp.Master, cause: vrrp.CauseMasterDown, done: []chan error{d2}}
	m := merge(master, converge)
	if !m.install || !m.garp || !m.report || m.state != vrrp.Master || m.cause != vrrp.CauseMasterDown || len(m.done) != 2 || len(m.staleDevs) != 1 {
		t.Errorf("master+converge = %+v", m)
	}
	// The report owed is the newest state's, with its cause.
	backup := &job{seq: 3, install: false, report: true, state: vrrp.Backup, cause: vrrp.CauseHigherPriority}
	m = merge(m, backup)
	if m.install || m.garp || !m.report || m.state != vrrp.Backup || m.cause != vrrp.CauseHigherPriority {
		t.Errorf("…+backup = %+v", m)
	}
	removed := &job{seq: 4, install: false, suppress: true, state: vrrp.Initialize}
	if m = merge(m, removed); m.report {
		t.Errorf("a removal still reports: %+v", m)
	}
	// A retried old job never overrides a newer one.
	old := &job{seq: 1, install: true}
	if m := merge(backup, old); m.install {
		t.Errorf("an older job overrode a newer: %+v", m)
	}
}

func TestTimerHeapOrdersDeadlines(t *testing.T) {
	t0 := time.Now()
	var h timerHeap
	rs := make([]*router, 5)
	for i := range rs {
		rs[i] = &router{hidx: -1, at: t0.Add(time.Duration(5-i) * time.Second)}
		heap.Push(&h, rs[i])
	}
	rs[0].at = t0 // was last
	heap.Fix(&h, rs[0].hidx)
	heap.Remove(&h, rs[2].hidx)
	var got []*router
	for h.Len() > 0 {
		got = append(got, heap.Pop(&h).(*router))
	}
	want := []*router{rs[0], rs[4], rs[3], rs[1]}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("pop order wrong at %d", i)
		}
	}
	if rs[2].hidx != -1 || rs[0].hidx != -1 {
		t.Error("removed routers keep a heap index")
	}
}

func TestOptionsDefaultsAndValidation(t *testing.T) {
	e, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	o := e.Options()
	if o.Version != 2 || o.AdvertInterval != 2*time.Second || o.Priority != 50 || o.GARPDelay != 60*time.Second || o.Preempt {
		t.Errorf("defaults: %+v", o)
	}
	for _, bad := range []Options{
		{Version: 3, AdvertInterval: 15 * time.Millisecond},
		{Version: 2, AdvertInterval: 1500 * time.Millisecond},
		{Version: 4},
		{Priority: 255},
	} {
		if _, err := New(bad); err == nil {
			t.Errorf("New(%+v) accepted", bad)
		}
	}
	// As the keepalived driver renders it: v3 has no authentication, a
	// password is ignored.
	if e3, err := New(Options{Version: 3, AdvertInterval: time.Second, Password: "x"}); err != nil {
		t.Error(err)
	} else if c := e3.opts.machineConfig(Router{VRID: 1}); c.Password != "" {
		t.Error("v3 machine with a password")
	}
	r := Router{ID: "r", Namespace: "ns", VRID: 1, Device: "ha-x", Address: netip.MustParsePrefix("169.254.192.1/18"), VIP: netip.MustParsePrefix("169.254.0.1/24")}
	if err := r.validate(); err != nil {
		t.Error(err)
	}
	for _, mut := range []func(*Router){
		func(r *Router) { r.ID = "../x" },
		func(r *Router) { r.VRID = 0 },
		func(r *Router) { r.VIP = r.Address },
		func(r *Router) { r.Address = netip.MustParsePrefix("fe80::1/64") },
		func(r *Router) {
			r.Excluded = []Address{{Dev: "ha-x", Prefix: netip.MustParsePrefix("169.254.192.1/18")}}
		},
		func(r *Router) { r.Routes = []Route{{Dst: netip.MustParsePrefix("0.0.0.0/0")}} },
	} {
		c := r.clone()
		mut(&c)
		if err := c.validate(); err == nil {
			t.Errorf("invalid router accepted: %+v", c)
		}
	}
	if _, err := e.Status("r"); err {
		t.Error("status of a stopped engine")
	}
	if err := e.Ensure(t.Context(), r); err != ErrNotRunning {
		t.Errorf("Ensure before Start: %v", err)
	}
}
