package ctsync

import (
	"net/netip"
	"reflect"
	"testing"
)

func tcpFlow(sport uint16) Flow {
	return Flow{
		Proto:  ProtoTCP,
		Orig:   Tuple{Src: netip.MustParseAddr("10.10.30.5"), Dst: netip.MustParseAddr("172.24.4.1"), SrcPort: sport, DstPort: 80},
		Reply:  Tuple{Src: netip.MustParseAddr("172.24.4.1"), Dst: netip.MustParseAddr("172.24.4.10"), SrcPort: 80, DstPort: sport + 1},
		Status: StatusSeenReply | StatusAssured | StatusSrcNAT, Timeout: 431999, Mark: 7, TCPState: 3, TCPWScaleOrig: 7, TCPWScaleReply: 10,
	}
}

func TestWireRoundTripsEveryKindAndFamily(t *testing.T) {
	v6 := Flow{
		Proto:   ProtoUDP,
		Orig:    Tuple{Src: netip.MustParseAddr("2001:db8::5"), Dst: netip.MustParseAddr("2001:db8:1::1"), SrcPort: 5353, DstPort: 53},
		Reply:   Tuple{Src: netip.MustParseAddr("2001:db8:1::1"), Dst: netip.MustParseAddr("2001:db8::5"), SrcPort: 53, DstPort: 5353},
		Timeout: 30, Zone: 3,
	}
	icmp := Flow{
		Proto:  ProtoICMP,
		Orig:   Tuple{Src: netip.MustParseAddr("10.10.30.5"), Dst: netip.MustParseAddr("172.24.4.1"), SrcPort: 99, DstPort: 8 << 8},
		Reply:  Tuple{Src: netip.MustParseAddr("172.24.4.1"), Dst: netip.MustParseAddr("172.24.4.10"), SrcPort: 99},
		Status: StatusSrcNAT, Timeout: 29,
	}
	for _, m := range []Message{
		{Kind: KindResync, Router: [16]byte{1, 2, 3}},
		{Kind: KindFlows, Router: [16]byte{9}, Flows: []Flow{tcpFlow(1000), v6, icmp}},
		{Kind: KindDeletes, Flows: []Flow{tcpFlow(2000)}},
	} {
		t.Run(m.Kind.String(), func(t *testing.T) {
			d, err := Encode(m, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(d) != 1 {
				t.Fatalf("%d datagrams, want 1", len(d))
			}
			got, err := Decode(d[0])
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, m) {
				t.Fatalf("decoded %+v, want %+v", got, m)
			}
		})
	}
}

func TestWireSplitsATableIntoDatagramsOfAtMostMax(t *testing.T) {
	var flows []Flow
	for i := range 1000 {
		flows = append(flows, tcpFlow(uint16(1000+i)))
	}
	d, err := Encode(Message{Kind: KindFlows, Flows: flows}, MaxDatagram)
	if err != nil {
		t.Fatal(err)
	}
	var back []Flow
	for _, b := range d {
		if len(b) > MaxDatagram {
			t.Fatalf("datagram of %d bytes", len(b))
		}
		m, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		back = append(back, m.Flows...)
	}
	if !reflect.DeepEqual(back, flows) {
		t.Fatalf("%d flows back of %d", len(back), len(flows))
	}
	t.Logf("1000 IPv4 TCP flows in %d datagrams", len(d))
}

func TestWireRejectsWhatIsNotASyncDatagram(t *testing.T) {
	good, _ := Encode(Message{Kind: KindFlows, Flows: []Flow{tcpFlow(1)}}, 0)
	bad := func(mut func([]byte) []byte) []byte {
		b := append([]byte(nil), good[0]...)
		return mut(b)
	}
	for name, b := range map[string][]byte{
		"empty":          {},
		"other magic":    bad(func(b []byte) []byte { b[0] = 'X'; return b }),
		"version 2":      bad(func(b []byte) []byte { b[4] = 2; return b }),
		"unknown kind":   bad(func(b []byte) []byte { b[5] = 9; return b }),
		"count too high": bad(func(b []byte) []byte { b[23] = 2; return b }),
		"cut short":      bad(func(b []byte) []byte { return b[:len(b)-3] }),
		"trailing bytes": bad(func(b []byte) []byte { return append(b, 0) }),
		"family 5":       bad(func(b []byte) []byte { b[headerSize] = 5; return b }),
		"protocol 47":    bad(func(b []byte) []byte { b[headerSize+1] = 47; return b }),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Decode(b); err == nil {
				t.Fatal("decoded")
			}
		})
	}
}

func TestSynchronisedLeavesOutTheHANetworkAndMulticast(t *testing.T) {
	ha := netip.MustParsePrefix("169.254.192.0/18")
	vrrp := Flow{Proto: 112, Orig: Tuple{Src: netip.MustParseAddr("169.254.192.1"), Dst: netip.MustParseAddr("224.0.0.18")}}
	sync := Flow{Proto: ProtoUDP, Orig: Tuple{Src: netip.MustParseAddr("169.254.192.1"), Dst: GroupFor(7), SrcPort: Port, DstPort: Port}}
	onHA := tcpFlow(5)
	onHA.Orig.Src = netip.MustParseAddr("169.254.192.9")
	for _, tc := range []struct {
		name string
		f    Flow
		want bool
	}{
		{"tcp through SNAT", tcpFlow(5), true},
		{"vrrp", vrrp, false},
		{"the sync itself", sync, false},
		{"a flow on the HA network", onHA, false},
	} {
		if got := Synchronised(tc.f, ha); got != tc.want {
			t.Errorf("%s: Synchronised = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func FuzzDecode(f *testing.F) {
	d, _ := Encode(Message{Kind: KindFlows, Flows: []Flow{tcpFlow(1), tcpFlow(2)}}, 0)
	f.Add(d[0])
	r, _ := Encode(Message{Kind: KindResync}, 0)
	f.Add(r[0])
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			return
		}
		// What decodes encodes back to the same bytes.
		out, err := Encode(m, 65535)
		if err != nil {
			t.Fatalf("decoded message does not encode: %v", err)
		}
		if string(out[0]) != string(b) {
			t.Fatalf("re-encoded %x, was %x", out[0], b)
		}
	})
}
