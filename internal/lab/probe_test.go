package lab

// Tests of the prober's packets (probe.go): echo requests built with
// golang.org/x/net/icmp, byte for byte those of the hand-built packets they
// replaced, and replies parsed with it.

import (
	"bytes"
	"encoding/hex"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

func TestProbePacket(t *testing.T) {
	// Golden packets, checksum included, from the hand-built prober (RFC
	// 1071 checksum) that probe.go had before it used x/net/icmp.
	for _, c := range []struct {
		id      uint16
		i, seq  int
		at      time.Duration
		goldHex string
	}{
		{0xbeef, 0, 70000, 1234 * time.Millisecond, "0800dfabbeef11704c334842000000000001117000000000498d5880"},
		{0x0102, 499, 3, 987654321 * time.Nanosecond, "0800bcff010200034c334842000001f300000003000000003ade68b1"},
	} {
		pkt := newProbePacket(c.id)
		b, err := pkt.marshal(c.i, c.seq, c.at)
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(b); got != c.goldHex {
			t.Errorf("probe %d of router %d: % x, want %s", c.seq, c.i, b, c.goldHex)
		}
	}

	pkt := newProbePacket(0xbeef)
	req, err := pkt.marshal(7, 70000, 1234*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if len(req) != 8+probeDataLen {
		t.Errorf("%d bytes, want %d", len(req), 8+probeDataLen)
	}
	// Round trip: the request parses back as the echo request it is.
	m, err := icmp.ParseMessage(protocolICMP, req)
	if err != nil {
		t.Fatal(err)
	}
	e, ok := m.Body.(*icmp.Echo)
	if m.Type != ipv4.ICMPTypeEcho || m.Code != 0 || !ok || e.ID != 0xbeef || e.Seq != 70000&0xffff || len(e.Data) != probeDataLen {
		t.Fatalf("parsed request: %+v, body %+v", m, m.Body)
	}
	// The packet is the caller's: the next probe from the same probePacket
	// leaves it alone.
	keep := bytes.Clone(req)
	if _, err := pkt.marshal(8, 70001, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(req, keep) {
		t.Errorf("the next probe changed the previous one: % x, was % x", req, keep)
	}

	// The echo reply: type 0, same id and data, as a router sends it.
	replyOf := func(typ icmp.Type, code, id int, data []byte) []byte {
		b, err := (&icmp.Message{Type: typ, Code: code, Body: &icmp.Echo{ID: id, Seq: e.Seq, Data: data}}).Marshal(nil)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	reply := replyOf(ipv4.ICMPTypeEchoReply, 0, 0xbeef, e.Data)
	if i, seq, ok := parseProbeReply(reply, 0xbeef); !ok || i != 7 || seq != 70000 {
		t.Errorf("parseProbeReply = %d, %d, %v; want 7, 70000, true", i, seq, ok)
	}
	noMagic := bytes.Clone(e.Data)
	noMagic[0] = 'X'
	unreachable, err := (&icmp.Message{Type: ipv4.ICMPTypeDestinationUnreachable, Code: 1, Body: &icmp.DstUnreach{Data: make([]byte, 28)}}).Marshal(nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string][]byte{
		"request":     req,
		"other id":    replyOf(ipv4.ICMPTypeEchoReply, 0, 0xbeef^1, e.Data),
		"other code":  replyOf(ipv4.ICMPTypeEchoReply, 1, 0xbeef, e.Data),
		"no magic":    replyOf(ipv4.ICMPTypeEchoReply, 0, 0xbeef, noMagic),
		"short data":  replyOf(ipv4.ICMPTypeEchoReply, 0, 0xbeef, e.Data[:probeDataLen-1]),
		"short":       reply[:20],
		"header only": reply[:4],
		"nothing":     nil,
		"unreachable": unreachable,
	} {
		if _, _, ok := parseProbeReply(bad, 0xbeef); ok {
			t.Errorf("%s accepted as a reply", name)
		}
	}
}

// TestProbePacketAllocations: a probe costs what icmp's Marshal costs, no
// more (the message, echo body and data are the probePacket's, reused).
func TestProbePacketAllocations(t *testing.T) {
	pkt := newProbePacket(0xbeef)
	seq := 0
	mine := testing.AllocsPerRun(1000, func() {
		seq++
		_, _ = pkt.marshal(seq%500, seq, time.Duration(seq))
	})
	m := &icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: 1, Data: make([]byte, probeDataLen)}}
	icmps := testing.AllocsPerRun(1000, func() { _, _ = m.Marshal(nil) })
	if mine > icmps {
		t.Errorf("%v allocations per probe, icmp's Marshal alone makes %v", mine, icmps)
	}
	t.Logf("%v allocations per probe", mine)
}
