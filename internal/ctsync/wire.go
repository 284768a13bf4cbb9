package ctsync

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// The sync's datagrams:
//
//	header  "L3CT" | version 1 | kind 1 | router id 16 | count 2
//	record  family 1 (4|6) | proto 1 | orig | reply | status 4 | timeout 4 |
//	        mark 4 | zone 2 | tcp state 1 | tcp wscale orig 1 | reply 1
//	tuple   src 4|16 | dst 4|16 | src port 2 | dst port 2
//
// Big-endian. A resync request carries no record; a delete's records carry
// the whole flow too (only its key is used), which keeps one record format.

// Kind is what a datagram asks of its receiver.
type Kind uint8

const (
	// KindFlows: create or update these flows.
	KindFlows Kind = 1
	// KindDeletes: these flows ended.
	KindDeletes Kind = 2
	// KindResync: a backup asks the master for its whole table.
	KindResync Kind = 3
)

func (k Kind) String() string {
	switch k {
	case KindFlows:
		return "flows"
	case KindDeletes:
		return "deletes"
	case KindResync:
		return "resync"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

const (
	magic      = "L3CT"
	version    = 1
	headerSize = 4 + 1 + 1 + 16 + 2
	// MaxDatagram keeps a datagram inside the smallest HA network MTU
	// (VXLAN over a 1500-byte underlay leaves 1450) with room to spare.
	MaxDatagram = 1200
)

// Message is one datagram's content.
type Message struct {
	Kind Kind
	// Router is the router's id (a UUID, 16 bytes): the group is per VRID,
	// and a VRID is reused on another HA network, so the id is checked.
	Router [16]byte
	Flows  []Flow
}

func recordSize(f Flow) int {
	addr := 4
	if f.IsIPv6() {
		addr = 16
	}
	return 2 + 2*(2*addr+4) + 4 + 4 + 4 + 2 + 3
}

// Encode splits m into datagrams of at most max bytes (MaxDatagram if 0).
// A message without flows is one datagram (a resync request, or an empty
// table).
func Encode(m Message, max int) ([][]byte, error) {
	if max == 0 {
		max = MaxDatagram
	}
	var out [][]byte
	start := func() []byte {
		b := make([]byte, headerSize, max)
		copy(b, magic)
		b[4] = version
		b[5] = byte(m.Kind)
		copy(b[6:22], m.Router[:])
		return b
	}
	cur, n := start(), 0
	finish := func() {
		binary.BigEndian.PutUint16(cur[22:24], uint16(n))
		out = append(out, cur)
	}
	for _, f := range m.Flows {
		if err := f.Validate(); err != nil {
			return nil, err
		}
		if len(cur)+recordSize(f) > max {
			if n == 0 {
				return nil, fmt.Errorf("datagram size %d too small for one record", max)
			}
			finish()
			cur, n = start(), 0
		}
		cur = appendFlow(cur, f)
		n++
	}
	finish()
	return out, nil
}

func appendTuple(b []byte, t Tuple) []byte {
	b = append(b, t.Src.AsSlice()...)
	b = append(b, t.Dst.AsSlice()...)
	b = binary.BigEndian.AppendUint16(b, t.SrcPort)
	return binary.BigEndian.AppendUint16(b, t.DstPort)
}

func appendFlow(b []byte, f Flow) []byte {
	fam := byte(4)
	if f.IsIPv6() {
		fam = 6
	}
	b = append(b, fam, f.Proto)
	b = appendTuple(b, f.Orig)
	b = appendTuple(b, f.Reply)
	b = binary.BigEndian.AppendUint32(b, f.Status)
	b = binary.BigEndian.AppendUint32(b, f.Timeout)
	b = binary.BigEndian.AppendUint32(b, f.Mark)
	b = binary.BigEndian.AppendUint16(b, f.Zone)
	return append(b, f.TCPState, f.TCPWScaleOrig, f.TCPWScaleReply)
}

// ErrNotSync is returned for a datagram that is not the sync's.
var ErrNotSync = errors.New("not an l3ha conntrack sync datagram")

// Decode parses one datagram. It never panics on input; a record that
// does not parse makes the whole datagram an error.
func Decode(b []byte) (Message, error) {
	var m Message
	if len(b) < headerSize || string(b[:4]) != magic {
		return m, ErrNotSync
	}
	if b[4] != version {
		return m, fmt.Errorf("sync datagram version %d, want %d", b[4], version)
	}
	m.Kind = Kind(b[5])
	switch m.Kind {
	case KindFlows, KindDeletes, KindResync:
	default:
		return m, fmt.Errorf("sync datagram of unknown %s", m.Kind)
	}
	copy(m.Router[:], b[6:22])
	n := int(binary.BigEndian.Uint16(b[22:24]))
	r := reader{b: b[headerSize:]}
	for i := 0; i < n; i++ {
		f, err := r.flow()
		if err != nil {
			return Message{}, fmt.Errorf("record %d: %w", i, err)
		}
		m.Flows = append(m.Flows, f)
	}
	if len(r.b) != 0 {
		return Message{}, fmt.Errorf("%d bytes after the last record", len(r.b))
	}
	return m, nil
}

type reader struct{ b []byte }

var errShort = errors.New("record cut short")

func (r *reader) take(n int) ([]byte, error) {
	if len(r.b) < n {
		return nil, errShort
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v, nil
}

func (r *reader) tuple(addrLen int) (Tuple, error) {
	v, err := r.take(2*addrLen + 4)
	if err != nil {
		return Tuple{}, err
	}
	src, _ := netip.AddrFromSlice(v[:addrLen])
	dst, _ := netip.AddrFromSlice(v[addrLen : 2*addrLen])
	return Tuple{
		Src: src, Dst: dst,
		SrcPort: binary.BigEndian.Uint16(v[2*addrLen:]),
		DstPort: binary.BigEndian.Uint16(v[2*addrLen+2:]),
	}, nil
}

func (r *reader) flow() (Flow, error) {
	var f Flow
	h, err := r.take(2)
	if err != nil {
		return f, err
	}
	var addrLen int
	switch h[0] {
	case 4:
		addrLen = 4
	case 6:
		addrLen = 16
	default:
		return f, fmt.Errorf("address family %d", h[0])
	}
	f.Proto = h[1]
	if f.Orig, err = r.tuple(addrLen); err != nil {
		return f, err
	}
	if f.Reply, err = r.tuple(addrLen); err != nil {
		return f, err
	}
	v, err := r.take(4 + 4 + 4 + 2 + 3)
	if err != nil {
		return f, err
	}
	f.Status = binary.BigEndian.Uint32(v[0:])
	f.Timeout = binary.BigEndian.Uint32(v[4:])
	f.Mark = binary.BigEndian.Uint32(v[8:])
	f.Zone = binary.BigEndian.Uint16(v[12:])
	f.TCPState, f.TCPWScaleOrig, f.TCPWScaleReply = v[14], v[15], v[16]
	if err := f.Validate(); err != nil {
		return f, err
	}
	return f, nil
}
