package engine

// Kernel tier: hostile input on the wire. A raw sender on the peer end of a
// router's ha- device sends what RFC 5798 §7.1 / RFC 3768 §7.1 (and
// keepalived) reject; every packet is counted under its reason and none
// changes anything. A flood on one router's device delays no other router.

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/l3ha/l3ha/internal/vrrp"
)

// floodEnv makes the test binary a flooder (see TestMain): it sends VRRP
// junk out of a device of the namespace it runs in, as fast as it can.
const floodEnv = "L3HA_TEST_VRRP_FLOOD"

func TestMain(m *testing.M) {
	if spec := os.Getenv(floodEnv); spec != "" {
		os.Exit(flood(spec))
	}
	if spec := os.Getenv(agentEnv); spec != "" {
		os.Exit(agentMain(spec))
	}
	os.Exit(m.Run())
}

// flood runs "dev,vrid,seconds": it cycles through three packets that must
// be dropped at different depths of the receive path (an advert of the
// router's VRID that reaches its machine and fails the address check, a
// bad checksum, another VRID), all claiming priority 254, until the time is
// up, and prints how many it sent.
func flood(spec string) int {
	parts := strings.Split(spec, ",")
	if len(parts) != 3 {
		fmt.Fprintln(os.Stderr, "bad flood spec", spec)
		return 2
	}
	vrid, _ := strconv.Atoi(parts[1])
	secs, _ := strconv.ParseFloat(parts[2], 64)
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
	if err == nil {
		err = unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, parts[0])
	}
	if err == nil {
		err = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_LOOP, 0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	src := netip.MustParseAddr("169.254.192.200")
	vip := netip.PrefixFrom(netip.AddrFrom4([4]byte{169, 254, 0, byte(vrid)}), 24).Addr()
	mk := func(vrid uint8, addrs ...netip.Addr) []byte {
		p := vrrp.Packet{Version: 3, Type: vrrp.TypeAdvertisement, VRID: vrid, Priority: 254, MaxAdvertInterval: 10, Addresses: addrs}
		b, _ := vrrp.Marshal(p, src, vrrp.Group)
		return ipDatagram(255, src, vrrp.Group, b)
	}
	badSum := mk(uint8(vrid), vip)
	badSum[20+6] ^= 0xff
	pkts := [][]byte{
		mk(uint8(vrid), vip, netip.MustParseAddr("10.6.6.6")),
		badSum,
		mk(uint8(vrid)+1, vip),
	}
	sa := &unix.SockaddrInet4{Addr: vrrp.Group.As4()}
	end := time.Now().Add(time.Duration(secs * float64(time.Second)))
	sent, errs := 0, 0
	for i := 0; ; i++ {
		if i%1024 == 0 && time.Now().After(end) {
			break
		}
		if err := unix.Sendto(fd, pkts[i%len(pkts)], 0, sa); err != nil {
			errs++
			continue
		}
		sent++
	}
	fmt.Printf("sent %d errors %d\n", sent, errs)
	return 0
}

// TestKernelHostileInput (v2, PASS, 1s): a master receives, from a higher
// address and with priority 254 (so that any packet wrongly accepted would
// demote it), packets with a wrong TTL, a bad checksum, a wrong or missing
// password, another VRID, another or an unknown version, another type, a
// truncated or oversized message or datagram, another interval or address
// list. Each is counted under its reason; the master stays master. A valid
// advert from the same sender, last, does demote it: the drops were the
// defects', not the sender's.
func TestKernelHostileInput(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	const vrid = 9
	const pw = "l3hatest"
	opts := Options{Version: 2, AdvertInterval: time.Second, Password: pw, GARPDelay: -1}
	id := "router-" + randHex(4)
	node, peer := pairNodes(t, id, vrid, 9000)
	te := startEngine(t, "A", opts)
	// Adopted as master at once: its VIP is there.
	addAddr(t, node.ns, node.router.Device, node.router.VIP)
	if err := te.e.Ensure(ctx, node.router); err != nil {
		t.Fatal(err)
	}
	waitFor(t, waitLong, "master", func() bool { return te.rec.is(id, vrrp.Master) })

	src := netip.MustParseAddr("169.254.192.200")
	snd := newRawSender(t, peer.ns, peer.router.Device, src)
	vip := node.router.VIP.Addr()
	good := func() []byte { return packet(t, 2, vrid, 254, src, time.Second, pw, vip) }
	withSum := func(b []byte) []byte { b[6] ^= 0xff; return b }
	padded := func(n int) []byte { return append(good(), make([]byte, n-len(good()))...) }
	otherType := good()
	otherType[0] = 0x22
	unknownVersion := good()
	unknownVersion[0] = 0x51
	cases := []struct {
		name string
		ttl  uint8
		b    []byte
		want vrrp.Reason
	}{
		{"TTL 64", 64, good(), vrrp.ReasonBadTTL},
		{"TTL 254", 254, good(), vrrp.ReasonBadTTL},
		{"bad checksum", 255, withSum(good()), vrrp.ReasonBadChecksum},
		{"wrong password", 255, packet(t, 2, vrid, 254, src, time.Second, "guessed!", vip), vrrp.ReasonAuthMismatch},
		{"no authentication", 255, packet(t, 2, vrid, 254, src, time.Second, "", vip), vrrp.ReasonAuthTypeMismatch},
		// Another router's advert is dropped by the socket's filter in the
		// kernel (vridFilter): never seen, never counted.
		{"other VRID", 255, packet(t, 2, vrid+1, 254, src, time.Second, pw, vip), ""},
		{"VRRPv3", 255, packet(t, 3, vrid, 254, src, time.Second, "", vip), vrrp.ReasonVersionMismatch},
		{"unknown version", 255, unknownVersion, vrrp.ReasonBadVersion},
		{"unknown type", 255, otherType, vrrp.ReasonBadType},
		{"truncated", 255, good()[:6], vrrp.ReasonTruncated},
		{"truncated address list", 255, good()[:12], vrrp.ReasonTruncated},
		{"oversized message (1400 bytes)", 255, padded(1400), vrrp.ReasonLengthMismatch},
		{"oversized datagram (3000 bytes)", 255, padded(3000), ReasonOversized},
		{"other interval", 255, packet(t, 2, vrid, 254, src, 2*time.Second, pw, vip), vrrp.ReasonIntervalMismatch},
		{"other addresses", 255, packet(t, 2, vrid, 254, src, time.Second, pw, netip.MustParseAddr("10.6.6.6")), vrrp.ReasonAddressMismatch},
	}
	const each = 3
	want := map[vrrp.Reason]uint64{}
	for _, c := range cases {
		for range each {
			if err := snd.send(c.ttl, c.b); err != nil {
				t.Fatalf("%s: send: %v", c.name, err)
			}
		}
		if c.want == "" {
			continue // the checks below find it if it was counted
		}
		want[c.want] += each
		waitFor(t, waitLong, fmt.Sprintf("%s counted as %s", c.name, c.want), func() bool {
			return te.drops(id)[c.want] >= want[c.want]
		})
		if te.state(t, id) != vrrp.Master {
			t.Fatalf("%s changed the state", c.name)
		}
	}
	got := te.drops(id)
	for r, n := range want {
		if got[r] != n {
			t.Errorf("drops[%s] = %d, want %d", r, got[r], n)
		}
	}
	for r, n := range got {
		if _, ok := want[r]; !ok {
			t.Errorf("unexpected drops[%s] = %d", r, n)
		}
	}
	t.Logf("drops: %v", got)
	if st := te.rec.states(id); !slices.Equal(st, []vrrp.State{vrrp.Master}) {
		t.Errorf("reports %v, want [master]", st)
	}
	if st, _ := te.e.Status(id); st.Received != 0 {
		t.Errorf("%d hostile adverts accepted", st.Received)
	}

	// Control: the same sender, a valid advert: the master yields to it.
	if err := snd.send(255, good()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, waitLong, "the master yields to a valid higher-priority advert", func() bool {
		return te.rec.is(id, vrrp.Backup) && !node.holdsVIP(t)
	})
}

// startFlooder runs the flooder (the test binary, see TestMain) in ns on
// dev for d. It is killed by pid when the test ends if still running.
func startFlooder(t *testing.T, ns, dev string, vrid uint8, d time.Duration) (wait func() string) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%d,%f", floodEnv, dev, vrid, d.Seconds()))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			_ = cmd.Process.Kill() // by pid
			<-done
		}
	})
	return func() string {
		select {
		case <-done:
		case <-time.After(d + waitLong):
			t.Fatal("flooder did not finish")
		}
		return strings.TrimSpace(out.String())
	}
}

// TestKernelFloodKeepsOtherRoutersOnTime (v3 at 0.1s): one engine serves
// routers A and B (two namespaces). Another process floods A's ha- device
// as fast as it can with junk that is dropped at every depth of the receive
// path, some of it only by A's state machine in the loop. Meanwhile B keeps
// advertising on time (every gap below twice the interval, timed on the
// wire by a sniffer with kernel timestamps), and so does A; nobody changes
// state; the flood is counted.
func TestKernelFloodKeepsOtherRoutersOnTime(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	const interval = 100 * time.Millisecond
	opts := Options{Version: 3, AdvertInterval: interval, GARPDelay: -1}
	a, aPeer := pairNodes(t, "router-a-"+randHex(3), 11, 1500)
	b, bPeer := pairNodes(t, "router-b-"+randHex(3), 12, 1500)
	te := startEngine(t, "E", opts)
	for _, n := range []haNode{a, b} {
		addAddr(t, n.ns, n.router.Device, n.router.VIP) // adopted as masters at once
		if err := te.e.Ensure(ctx, n.router); err != nil {
			t.Fatal(err)
		}
	}
	sa := startSniffer(t, aPeer.ns, aPeer.router.Device)
	sb := startSniffer(t, bPeer.ns, bPeer.router.Device)
	waitFor(t, waitLong, "both masters", func() bool {
		return te.rec.is(a.router.ID, vrrp.Master) && te.rec.is(b.router.ID, vrrp.Master)
	})

	const floodFor = 3 * time.Second
	wait := startFlooder(t, aPeer.ns, aPeer.router.Device, a.router.VRID, floodFor)
	// The flood is on once A counts its packets (those of another VRID the
	// socket's filter drops in the kernel, uncounted).
	waitFor(t, waitLong, "the flood reaching A", func() bool { return te.drops(a.router.ID)[vrrp.ReasonBadChecksum] > 0 })
	from := time.Now()
	out := wait()
	to := time.Now()
	if !strings.HasPrefix(out, "sent ") {
		t.Fatalf("flooder: %q", out)
	}
	gapB, nB := sb.maxGap(b.router.Address.Addr(), from, to)
	gapA, nA := sa.maxGap(a.router.Address.Addr(), from, to)
	drops := te.drops(a.router.ID)
	var total uint64
	for _, n := range drops {
		total += n
	}
	span := to.Sub(from)
	t.Logf("flood over %v: flooder %s; A dropped %d (%.0f/s): %v", span.Round(time.Millisecond), out, total, float64(total)/span.Seconds(), drops)
	t.Logf("B: %d adverts, longest gap %v; A: %d adverts, longest gap %v (interval %v)", nB, gapB.Round(time.Millisecond), nA, gapA.Round(time.Millisecond), interval)
	if gapB >= 2*interval {
		t.Errorf("B's adverts were %v apart during the flood on A, want < %v", gapB, 2*interval)
	}
	if gapA >= 2*interval {
		t.Errorf("A's adverts were %v apart during the flood, want < %v", gapA, 2*interval)
	}
	for _, n := range []haNode{a, b} {
		if st := te.rec.states(n.router.ID); !slices.Equal(st, []vrrp.State{vrrp.Master}) {
			t.Errorf("%s reported %v during the flood", n.router.ID, st)
		}
	}
	if drops[vrrp.ReasonAddressMismatch] == 0 || drops[vrrp.ReasonBadChecksum] == 0 {
		t.Errorf("flood not seen at every depth: %v", drops)
	}
	if d := te.drops(b.router.ID); len(d) != 0 {
		t.Errorf("B dropped %v", d)
	}
}
