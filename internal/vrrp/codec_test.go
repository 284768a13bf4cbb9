package vrrp

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

var (
	srcA = netip.MustParseAddr("192.168.1.10")
	vip1 = netip.MustParseAddr("192.168.1.1")
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Golden vectors, checksums computed by hand (see each case) rather than by
// the code under test.
var goldens = []struct {
	name     string
	pkt      Packet
	src, dst netip.Addr
	wire     string
}{
	{
		// RFC 5798 §5.2.8: checksum over the VRRP message and the IPv4
		// pseudo-header. Pseudo-header words: c0a8 010a e000 0012 0070 000c
		// (src, dst, zero+protocol 112, length 12); message words: 3133
		// 6401 0064 0000 c0a8 0101. Sum 0x2f981, folded 0xf983, complement
		// 0x067c.
		name: "RFC5798_5_V3",
		pkt: Packet{Version: 3, Type: 1, VRID: 51, Priority: 100, MaxAdvertInterval: 100,
			Addresses: []netip.Addr{vip1}},
		src: srcA, dst: Group,
		wire: "31336401" + "0064067c" + "c0a80101",
	},
	{
		// RFC 3768 §5.3.8: checksum over the VRRP message only, here with
		// keepalived's PASS authentication as Neutron configures it (VIP
		// 169.254.0.<vrid>, priority 50, advert_int 2). Words: 2101 3201
		// 0102 0000 a9fe 0001 7365 6372 6574 0000 ("secret" zero-padded).
		// Sum 0x23a4e, folded 0x3a50, complement 0xc5af.
		name: "RFC3768_5_V2Password",
		pkt: Packet{Version: 2, Type: 1, VRID: 1, Priority: 50, AdvertInterval: 2,
			AuthType: AuthPassword, AuthData: PasswordAuthData("secret"),
			Addresses: []netip.Addr{netip.MustParseAddr("169.254.0.1")}},
		src: netip.MustParseAddr("169.254.192.1"), dst: Group,
		// keepalived 2.2.7 sent exactly these bytes for that configuration.
		wire: "21013201" + "0102c5af" + "a9fe0001" + "7365637265740000",
	},
	// Captured from keepalived 2.2.7 (source 169.254.192.1, to 224.0.0.18,
	// TTL 255): the priority-0 advert it sends when stopped as master...
	{
		name: "Keepalived_V2PriorityZero",
		pkt: Packet{Version: 2, Type: 1, VRID: 1, Priority: 0, AdvertInterval: 2,
			AuthType: AuthPassword, AuthData: PasswordAuthData("secret"),
			Addresses: []netip.Addr{netip.MustParseAddr("169.254.0.1")}},
		src: netip.MustParseAddr("169.254.192.1"), dst: Group,
		wire: "21010001" + "0102f7af" + "a9fe0001" + "7365637265740000",
	},
	// ...and a VRRPv3 advert ("vrrp_version 3", advert_int 1, two VIPs).
	{
		name: "Keepalived_V3TwoAddresses",
		pkt: Packet{Version: 3, Type: 1, VRID: 51, Priority: 100, MaxAdvertInterval: 100,
			Addresses: []netip.Addr{netip.MustParseAddr("169.254.0.51"), netip.MustParseAddr("10.0.0.1")}},
		src: netip.MustParseAddr("169.254.192.1"), dst: Group,
		wire: "31336402" + "00646ba0" + "a9fe0033" + "0a000001",
	},
}

func TestGoldenVectors(t *testing.T) {
	for _, g := range goldens {
		t.Run(g.name, func(t *testing.T) {
			want := unhex(t, g.wire)
			got, err := Marshal(g.pkt, g.src, g.dst)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Marshal = %x, want %x", got, want)
			}
			p, err := Parse(want, g.src, g.dst)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(p, g.pkt) {
				t.Errorf("Parse = %+v, want %+v", p, g.pkt)
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	many := make([]netip.Addr, 255)
	for i := range many {
		many[i] = netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
	}
	for _, p := range []Packet{
		{Version: 3, Type: 1, VRID: 1, Priority: 255, MaxAdvertInterval: 1, Addresses: []netip.Addr{}},
		{Version: 3, Type: 1, VRID: 255, Priority: 0, MaxAdvertInterval: 4095, Addresses: many},
		{Version: 2, Type: 1, VRID: 7, Priority: 1, AdvertInterval: 255, Addresses: []netip.Addr{vip1}},
		{Version: 2, Type: 1, VRID: 7, Priority: 100, AdvertInterval: 1, AuthType: AuthPassword,
			AuthData: PasswordAuthData("12345678"), Addresses: many[:3]},
	} {
		b, err := Marshal(p, srcA, Group)
		if err != nil {
			t.Fatalf("Marshal(%+v): %v", p, err)
		}
		if len(b) != p.Len() {
			t.Errorf("len = %d, Len() = %d", len(b), p.Len())
		}
		got, err := Parse(b, srcA, Group)
		if err != nil {
			t.Fatalf("Parse(Marshal(%+v)): %v", p, err)
		}
		if !reflect.DeepEqual(got, p) {
			t.Errorf("round trip: got %+v, want %+v", got, p)
		}
	}
}

// RFC 5798 §7.1 / RFC 3768 §7.1: "MUST verify that the received packet
// contains the complete VRRP packet", the version, and the checksum; and
// §5.2.2: only type 1 exists.
func TestRFC5798_7_1_ParseRejects(t *testing.T) {
	v3 := unhex(t, goldens[0].wire)
	v2 := unhex(t, goldens[1].wire)
	with := func(b []byte, f func([]byte)) []byte {
		b = bytes.Clone(b)
		f(b)
		return b
	}
	cases := []struct {
		name     string
		b        []byte
		src, dst netip.Addr
		want     Reason
	}{
		{"empty", nil, srcA, Group, ReasonTruncated},
		{"short header", v3[:7], srcA, Group, ReasonTruncated},
		{"v3 missing address", v3[:8], srcA, Group, ReasonTruncated},
		{"v3 half an address", v3[:10], srcA, Group, ReasonTruncated},
		{"v2 missing auth data", v2[:12], srcA, Group, ReasonTruncated},
		{"v3 trailing byte", append(bytes.Clone(v3), 0), srcA, Group, ReasonLengthMismatch},
		{"v3 trailing address", append(bytes.Clone(v3), 1, 2, 3, 4), srcA, Group, ReasonLengthMismatch},
		{"v2 trailing garbage", append(bytes.Clone(v2), 0, 0), srcA, Group, ReasonLengthMismatch},
		{"v3 count too high", with(v3, func(b []byte) { b[3] = 2 }), srcA, Group, ReasonTruncated},
		{"v3 count too low", with(v3, func(b []byte) { b[3] = 0 }), srcA, Group, ReasonLengthMismatch},
		{"version 1", with(v3, func(b []byte) { b[0] = 0x11 }), srcA, Group, ReasonBadVersion},
		{"version 4", with(v3, func(b []byte) { b[0] = 0x41 }), srcA, Group, ReasonBadVersion},
		{"version 0", make([]byte, 20), srcA, Group, ReasonBadVersion},
		{"type 0", with(v3, func(b []byte) { b[0] = 0x30 }), srcA, Group, ReasonBadType},
		{"type 2", with(v2, func(b []byte) { b[0] = 0x22 }), srcA, Group, ReasonBadType},
		{"v3 flipped priority", with(v3, func(b []byte) { b[2] ^= 1 }), srcA, Group, ReasonBadChecksum},
		{"v3 flipped address", with(v3, func(b []byte) { b[11] ^= 0x80 }), srcA, Group, ReasonBadChecksum},
		{"v2 flipped password", with(v2, func(b []byte) { b[19] ^= 1 }), srcA, Group, ReasonBadChecksum},
		// v3's pseudo-header makes the checksum depend on the IP addresses.
		{"v3 other source", v3, netip.MustParseAddr("192.168.1.11"), Group, ReasonBadChecksum},
		{"v3 unicast destination", v3, srcA, netip.MustParseAddr("192.168.1.20"), ReasonBadChecksum},
		{"v3 no source", v3, netip.Addr{}, Group, ReasonBadFamily},
		{"v3 IPv6 destination", v3, srcA, netip.MustParseAddr("ff02::12"), ReasonBadFamily},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(c.b, c.src, c.dst)
			if got := ReasonOf(err); got != c.want {
				t.Fatalf("Parse: %v, want reason %q", err, c.want)
			}
			if !strings.Contains(err.Error(), string(c.want)) {
				t.Errorf("message %q does not name the reason", err)
			}
			if !errors.Is(err, &DropError{Reason: c.want}) {
				t.Errorf("errors.Is(%v, DropError{%q}) = false", err, c.want)
			}
		})
	}
}

// RFC 3768 §5.3.8: the v2 checksum does not cover the IP header, so the
// same bytes verify whatever the addresses.
func TestRFC3768_5_3_8_V2ChecksumIgnoresIPAddresses(t *testing.T) {
	b := unhex(t, goldens[1].wire)
	if _, err := Parse(b, netip.Addr{}, netip.Addr{}); err != nil {
		t.Fatal(err)
	}
}

// RFC 5798 §5.2.6: the reserved bits before Max Adver Int "MUST be set to
// zero on transmission and ignored on reception".
func TestRFC5798_5_2_6_ReservedBitsIgnored(t *testing.T) {
	g := goldens[0]
	b := unhex(t, g.wire)
	b[4] |= 0xf0
	binWrite16(b[6:], 0)
	binWrite16(b[6:], ^fold(sum(3, b, g.src, g.dst)))
	p, err := Parse(b, g.src, g.dst)
	if err != nil {
		t.Fatal(err)
	}
	if p.MaxAdvertInterval != 100 {
		t.Errorf("MaxAdvertInterval = %d, want 100", p.MaxAdvertInterval)
	}
	out, _ := Marshal(p, g.src, g.dst)
	if out[4]&0xf0 != 0 {
		t.Errorf("Marshal set reserved bits: %x", out)
	}
}

func binWrite16(b []byte, v uint16) { b[0], b[1] = byte(v>>8), byte(v) }

// In one's complement 0x0000 and 0xffff are both zero: a sender may put
// either in the checksum field when the rest sums to all ones.
func TestRFC1071_NegativeZeroChecksumAccepted(t *testing.T) {
	// v2, one address, no auth; choose the address so that the message
	// without checksum sums to 0xffff: 2101+0101+0001 = 0x2203, so the
	// address words must add 0xddfc.
	b := unhex(t, "21010101"+"00010000"+"ddfc0000"+"0000000000000000")
	if got := fold(sum(2, b, netip.Addr{}, netip.Addr{})); got != 0xffff {
		t.Fatalf("test vector sums to %#x", got)
	}
	for _, ck := range []uint16{0x0000, 0xffff} {
		binWrite16(b[6:], ck)
		if _, err := Parse(b, netip.Addr{}, netip.Addr{}); err != nil {
			t.Errorf("checksum %#04x: %v", ck, err)
		}
	}
}

func TestMarshalRejectsInvalidPackets(t *testing.T) {
	good := Packet{Version: 3, Type: 1, VRID: 1, Priority: 1, MaxAdvertInterval: 100}
	cases := map[string]func(*Packet){
		"version 4":           func(p *Packet) { p.Version = 4 },
		"type 0":              func(p *Packet) { p.Type = 0 },
		"IPv6 address":        func(p *Packet) { p.Addresses = []netip.Addr{netip.MustParseAddr("fe80::1")} },
		"4in6 address":        func(p *Packet) { p.Addresses = []netip.Addr{netip.MustParseAddr("::ffff:10.0.0.1")} },
		"256 addresses":       func(p *Packet) { p.Addresses = make([]netip.Addr, 256) },
		"v3 interval 4096":    func(p *Packet) { p.MaxAdvertInterval = 4096 },
		"v3 with auth":        func(p *Packet) { p.AuthType = AuthPassword },
		"v3 with v2 interval": func(p *Packet) { p.AdvertInterval = 1 },
		"v2 with v3 interval": func(p *Packet) { p.Version = 2 },
	}
	for name, mut := range cases {
		p := good
		mut(&p)
		if _, err := Marshal(p, srcA, Group); err == nil {
			t.Errorf("%s: Marshal succeeded", name)
		}
	}
	if _, err := Marshal(good, netip.Addr{}, Group); err == nil {
		t.Error("v3 without source: Marshal succeeded")
	}
	if _, err := Marshal(good, srcA, Group); err != nil {
		t.Errorf("good packet: %v", err)
	}
}

// RFC 2338 §5.3.7 / keepalived: the password is 8 bytes, zero-padded; a
// longer one is truncated.
func TestRFC2338_5_3_7_PasswordAuthData(t *testing.T) {
	for pw, want := range map[string][8]byte{
		"":           {},
		"secret":     {'s', 'e', 'c', 'r', 'e', 't', 0, 0},
		"12345678":   {'1', '2', '3', '4', '5', '6', '7', '8'},
		"123456789x": {'1', '2', '3', '4', '5', '6', '7', '8'},
	} {
		if got := PasswordAuthData(pw); got != want {
			t.Errorf("PasswordAuthData(%q) = %q, want %q", pw, got, want)
		}
	}
	p := Packet{AuthType: AuthPassword, AuthData: PasswordAuthData("123456789x")}
	if !p.PasswordMatches(PasswordAuthData("12345678")) {
		t.Error("truncated passwords do not match")
	}
	if p.PasswordMatches(PasswordAuthData("1234567")) {
		t.Error("a prefix matched: padding must count")
	}
	p.AuthType = AuthNone
	if p.PasswordMatches(PasswordAuthData("12345678")) {
		t.Error("matched without auth type 1")
	}
}

func TestPacketInterval(t *testing.T) {
	if got := (Packet{Version: 3, MaxAdvertInterval: 5}).Interval(); got != 50*time.Millisecond {
		t.Errorf("v3: %v", got)
	}
	if got := (Packet{Version: 2, AdvertInterval: 2}).Interval(); got != 2*time.Second {
		t.Errorf("v2: %v", got)
	}
}

// FuzzParse checks that Parse never panics and that whatever it accepts
// Marshal encodes back to the same bytes, except the bits Parse ignores
// (v3 reserved bits) and the checksum's choice between its two zeros.
func FuzzParse(f *testing.F) {
	for _, g := range goldens {
		f.Add(unhex(f, g.wire))
	}
	f.Add([]byte{})
	f.Add([]byte{0x31, 1, 100, 0, 0, 100, 0, 0})
	f.Add(unhex(f, "21010101"+"00010000"+"ddfc0000"+"0000000000000000"))
	f.Add(unhex(f, "31336401"+"f064067c"+"c0a80101"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b, srcA, Group)
		if ReasonOf(err) == ReasonBadChecksum {
			// Random bytes seldom carry a valid checksum: fix it, so that
			// the round trip below gets exercised, and check that nothing
			// but the checksum was wrong.
			b = bytes.Clone(b)
			binWrite16(b[6:], 0)
			binWrite16(b[6:], ^fold(sum(int(b[0]>>4), b, srcA, Group)))
			if p, err = Parse(b, srcA, Group); err != nil {
				t.Fatalf("Parse with fixed checksum: %v", err)
			}
		}
		if err != nil {
			if ReasonOf(err) == "" {
				t.Fatalf("error without a reason: %v", err)
			}
			return
		}
		out, err := Marshal(p, srcA, Group)
		if err != nil {
			t.Fatalf("Marshal(Parse(%x)) = %v", b, err)
		}
		want := bytes.Clone(b)
		if p.Version == 3 {
			want[4] &= 0x0f
		}
		copy(want[6:8], out[6:8])
		if !bytes.Equal(out, want) {
			t.Fatalf("Marshal(Parse(%x)) = %x", b, out)
		}
		again, err := Parse(out, srcA, Group)
		if err != nil || !reflect.DeepEqual(again, p) {
			t.Fatalf("Parse(Marshal(p)) = %+v, %v; want %+v", again, err, p)
		}
	})
}
