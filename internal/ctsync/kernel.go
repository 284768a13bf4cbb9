package ctsync

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"golang.org/x/sys/unix"

	"github.com/l3ha/l3ha/internal/linux"
)

// Table is the conntrack table of one network namespace (a router's), read
// through ti-mo/conntrack and written with messages of our own: the library
// cannot create an entry with its NAT (CTA_NAT_SRC/CTA_NAT_DST), and the
// kernel sets a translation up only from those (the NAT status bits are not
// writable).
type Table struct {
	ns   string
	read *conntrack.Conn
	nf   *netfilter.Conn
}

// OpenTable opens namespace ns's conntrack table.
func OpenTable(ns string) (*Table, error) {
	t := &Table{ns: ns}
	err := linux.Do(ns, func() error {
		var err error
		if t.read, err = conntrack.Dial(nil); err != nil {
			return err
		}
		t.nf, err = netfilter.Dial(nil)
		return err
	})
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("opening the conntrack table of %s: %w", ns, err)
	}
	return t, nil
}

// Close releases the table's sockets.
func (t *Table) Close() error {
	var errs []error
	if t.read != nil {
		errs = append(errs, t.read.Close())
	}
	if t.nf != nil {
		errs = append(errs, t.nf.Close())
	}
	return errors.Join(errs...)
}

// Dump lists the table's flows (IPv4 and IPv6) that the sync can carry.
func (t *Table) Dump() ([]Flow, error) {
	flows, err := t.read.Dump(nil)
	if err != nil {
		return nil, fmt.Errorf("dumping the conntrack table of %s: %w", t.ns, err)
	}
	out := make([]Flow, 0, len(flows))
	for _, f := range flows {
		if ff, ok := fromKernel(f); ok {
			out = append(out, ff)
		}
	}
	return out, nil
}

// fromKernel converts a kernel flow; false for what the sync does not carry.
func fromKernel(k conntrack.Flow) (Flow, bool) {
	tuple := func(t conntrack.Tuple) Tuple {
		out := Tuple{Src: t.IP.SourceAddress.Unmap(), Dst: t.IP.DestinationAddress.Unmap()}
		switch t.Proto.Protocol {
		case ProtoICMP, ProtoICMPv6:
			out.SrcPort = t.Proto.ICMPID
			out.DstPort = uint16(t.Proto.ICMPType)<<8 | uint16(t.Proto.ICMPCode)
		default:
			out.SrcPort, out.DstPort = t.Proto.SourcePort, t.Proto.DestinationPort
		}
		return out
	}
	f := Flow{
		Proto:   k.TupleOrig.Proto.Protocol,
		Orig:    tuple(k.TupleOrig),
		Reply:   tuple(k.TupleReply),
		Status:  uint32(k.Status),
		Timeout: k.Timeout,
		Mark:    k.Mark,
		Zone:    k.Zone,
	}
	if tcp := k.ProtoInfo.TCP; tcp != nil {
		f.TCPState, f.TCPWScaleOrig, f.TCPWScaleReply = tcp.State, tcp.OriginalWindowScale, tcp.ReplyWindowScale
	}
	return f, f.Validate() == nil
}

// Netlink attribute types of ctnetlink
// (include/uapi/linux/netfilter/nfnetlink_conntrack.h).
const (
	ctaTupleOrig  = 1
	ctaTupleReply = 2
	ctaStatus     = 3
	ctaProtoinfo  = 4
	ctaNATSrc     = 6
	ctaTimeout    = 7
	ctaMark       = 8
	ctaNATDst     = 13
	ctaZone       = 18

	ctaTupleIP    = 1
	ctaTupleProto = 2
	ctaIPv4Src    = 1
	ctaIPv4Dst    = 2
	ctaIPv6Src    = 3
	ctaIPv6Dst    = 4

	ctaProtoNum      = 1
	ctaProtoSrcPort  = 2
	ctaProtoDstPort  = 3
	ctaProtoICMPID   = 4
	ctaProtoICMPType = 5
	ctaProtoICMPCode = 6
	ctaProtoICMP6ID  = 7
	ctaProtoICMP6Typ = 8
	ctaProtoICMP6Cod = 9

	ctaProtoinfoTCP    = 1
	ctaTCPState        = 1
	ctaTCPWScaleOrig   = 2
	ctaTCPWScaleReply  = 3
	ctaTCPFlagsOrig    = 4
	ctaTCPFlagsReply   = 5
	tcpFlagBeLiberal   = 0x08
	ctaNATV4Min        = 1
	ctaNATV4Max        = 2
	ctaNATProto        = 3
	ctaNATV6Min        = 4
	ctaNATV6Max        = 5
	ctaProtoNATPortMin = 1
	ctaProtoNATPortMax = 2
	msgCTNew           = 0
	msgCTDelete        = 2
	statusConfirmed    = 1 << 3
	statusWritable     = StatusSeenReply | StatusAssured
)

func tupleAttr(typ uint16, proto uint8, t Tuple) netfilter.Attribute {
	ip := netfilter.Attribute{Type: ctaTupleIP, Nested: true}
	if t.Src.Is4() {
		ip.Children = []netfilter.Attribute{{Type: ctaIPv4Src, Data: t.Src.AsSlice()}, {Type: ctaIPv4Dst, Data: t.Dst.AsSlice()}}
	} else {
		ip.Children = []netfilter.Attribute{{Type: ctaIPv6Src, Data: t.Src.AsSlice()}, {Type: ctaIPv6Dst, Data: t.Dst.AsSlice()}}
	}
	pr := netfilter.Attribute{Type: ctaTupleProto, Nested: true, Children: []netfilter.Attribute{{Type: ctaProtoNum, Data: []byte{proto}}}}
	switch proto {
	case ProtoICMP:
		pr.Children = append(pr.Children,
			netfilter.Attribute{Type: ctaProtoICMPID, Data: netfilter.Uint16Bytes(t.SrcPort)},
			netfilter.Attribute{Type: ctaProtoICMPType, Data: []byte{byte(t.DstPort >> 8)}},
			netfilter.Attribute{Type: ctaProtoICMPCode, Data: []byte{byte(t.DstPort)}})
	case ProtoICMPv6:
		pr.Children = append(pr.Children,
			netfilter.Attribute{Type: ctaProtoICMP6ID, Data: netfilter.Uint16Bytes(t.SrcPort)},
			netfilter.Attribute{Type: ctaProtoICMP6Typ, Data: []byte{byte(t.DstPort >> 8)}},
			netfilter.Attribute{Type: ctaProtoICMP6Cod, Data: []byte{byte(t.DstPort)}})
	default:
		pr.Children = append(pr.Children,
			netfilter.Attribute{Type: ctaProtoSrcPort, Data: netfilter.Uint16Bytes(t.SrcPort)},
			netfilter.Attribute{Type: ctaProtoDstPort, Data: netfilter.Uint16Bytes(t.DstPort)})
	}
	return netfilter.Attribute{Type: typ, Nested: true, Children: []netfilter.Attribute{ip, pr}}
}

func natAttr(typ uint16, proto uint8, a netip.Addr, port uint16) netfilter.Attribute {
	min, max := uint16(ctaNATV4Min), uint16(ctaNATV4Max)
	if !a.Is4() {
		min, max = ctaNATV6Min, ctaNATV6Max
	}
	nat := netfilter.Attribute{Type: typ, Nested: true, Children: []netfilter.Attribute{
		{Type: min, Data: a.AsSlice()}, {Type: max, Data: a.AsSlice()},
	}}
	// The exact port (ICMP: echo id) the master chose; without it the
	// kernel could pick another and the flow would not match its packets.
	nat.Children = append(nat.Children, netfilter.Attribute{Type: ctaNATProto, Nested: true, Children: []netfilter.Attribute{
		{Type: ctaProtoNATPortMin, Data: netfilter.Uint16Bytes(port)},
		{Type: ctaProtoNATPortMax, Data: netfilter.Uint16Bytes(port)},
	}})
	return nat
}

func u32(typ uint16, v uint32) netfilter.Attribute {
	return netfilter.Attribute{Type: typ, Data: netfilter.Uint32Bytes(v)}
}

// mutable are the attributes an update may change: status (the writable
// bits), timeout, mark and TCP state with window tracking relaxed — the
// backup never saw the windows, so strict tracking
// (nf_conntrack_tcp_loose=0) must not judge the first packets after a
// takeover by them.
func mutable(f Flow) []netfilter.Attribute {
	// CONFIRMED must be given: the kernel refuses (EBUSY) a status that
	// differs from the entry's in it, and every entry in the table has it.
	attrs := []netfilter.Attribute{u32(ctaTimeout, max(f.Timeout, 1)), u32(ctaStatus, f.Status&statusWritable|statusConfirmed)}
	if f.Mark != 0 {
		attrs = append(attrs, u32(ctaMark, f.Mark))
	}
	if f.Proto == ProtoTCP {
		liberal := []byte{tcpFlagBeLiberal, tcpFlagBeLiberal}
		attrs = append(attrs, netfilter.Attribute{Type: ctaProtoinfo, Nested: true, Children: []netfilter.Attribute{{
			Type: ctaProtoinfoTCP, Nested: true, Children: []netfilter.Attribute{
				{Type: ctaTCPState, Data: []byte{f.TCPState}},
				{Type: ctaTCPWScaleOrig, Data: []byte{f.TCPWScaleOrig}},
				{Type: ctaTCPWScaleReply, Data: []byte{f.TCPWScaleReply}},
				{Type: ctaTCPFlagsOrig, Data: liberal},
				{Type: ctaTCPFlagsReply, Data: liberal},
			},
		}}})
	}
	return attrs
}

func withoutStatus(attrs []netfilter.Attribute) []netfilter.Attribute {
	out := attrs[:0:0]
	for _, a := range attrs {
		if a.Type != ctaStatus {
			out = append(out, a)
		}
	}
	return out
}

func family(f Flow) netfilter.ProtoFamily {
	if f.IsIPv6() {
		return netfilter.ProtoIPv6
	}
	return netfilter.ProtoIPv4
}

func (t *Table) query(f Flow, msg uint8, flags netlink.HeaderFlags, attrs []netfilter.Attribute) error {
	req, err := netfilter.MarshalNetlink(netfilter.Header{
		SubsystemID: netfilter.NFSubsysCTNetlink,
		MessageType: netfilter.MessageType(msg),
		Family:      family(f),
		Flags:       netlink.Request | netlink.Acknowledge | flags,
	}, attrs)
	if err != nil {
		return err
	}
	_, err = t.nf.Query(req)
	return err
}

// Install creates f in the table, with its NAT, or updates it if the entry
// exists (then only its state and timeout change: the kernel keeps an
// entry's tuples and translation for life).
func (t *Table) Install(f Flow) error {
	if err := f.Validate(); err != nil {
		return err
	}
	// The reply tuple goes in untranslated: the kernel translates it by the
	// NAT attributes and marks the entry (IPS_SRC_NAT/IPS_DST_NAT) only if
	// that changes it.
	reply := f.Reply
	if _, _, ok := f.SNAT(); ok {
		reply.Dst = f.Orig.Src
		if isICMP(f.Proto) {
			reply.SrcPort = f.Orig.SrcPort
		} else {
			reply.DstPort = f.Orig.SrcPort
		}
	}
	if _, _, ok := f.DNAT(); ok {
		reply.Src = f.Orig.Dst
		if !isICMP(f.Proto) {
			reply.SrcPort = f.Orig.DstPort
		}
	}
	attrs := []netfilter.Attribute{tupleAttr(ctaTupleOrig, f.Proto, f.Orig), tupleAttr(ctaTupleReply, f.Proto, reply)}
	if a, p, ok := f.SNAT(); ok {
		attrs = append(attrs, natAttr(ctaNATSrc, f.Proto, a, p))
	}
	if a, p, ok := f.DNAT(); ok {
		attrs = append(attrs, natAttr(ctaNATDst, f.Proto, a, p))
	}
	if f.Zone != 0 {
		attrs = append(attrs, netfilter.Attribute{Type: ctaZone, Data: netfilter.Uint16Bytes(f.Zone)})
	}
	attrs = append(attrs, mutable(f)...)
	err := t.query(f, msgCTNew, netlink.Create|netlink.Excl, attrs)
	if errors.Is(err, unix.EEXIST) {
		upd := []netfilter.Attribute{tupleAttr(ctaTupleOrig, f.Proto, f.Orig)}
		if f.Zone != 0 {
			upd = append(upd, netfilter.Attribute{Type: ctaZone, Data: netfilter.Uint16Bytes(f.Zone)})
		}
		err = t.query(f, msgCTNew, 0, append(upd, mutable(f)...))
		if errors.Is(err, unix.EBUSY) {
			// The entry has SEEN_REPLY or ASSURED and f (an older view
			// of the flow) not: those bits can only be set. Keep them.
			err = t.query(f, msgCTNew, 0, append(upd, withoutStatus(mutable(f))...))
		}
	}
	if err != nil {
		return fmt.Errorf("installing %s in %s: %w", f, t.ns, err)
	}
	return nil
}

// Delete removes f's entry; an entry already gone is no error.
func (t *Table) Delete(f Flow) error {
	if err := f.Validate(); err != nil {
		return err
	}
	attrs := []netfilter.Attribute{tupleAttr(ctaTupleOrig, f.Proto, f.Orig)}
	if f.Zone != 0 {
		attrs = append(attrs, netfilter.Attribute{Type: ctaZone, Data: netfilter.Uint16Bytes(f.Zone)})
	}
	err := t.query(f, msgCTDelete, 0, attrs)
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("deleting %s in %s: %w", f, t.ns, err)
	}
	return nil
}

// String names a flow in logs: proto orig → reply.
func (f Flow) String() string {
	return fmt.Sprintf("%d %s:%d>%s:%d (reply %s:%d>%s:%d)", f.Proto,
		f.Orig.Src, f.Orig.SrcPort, f.Orig.Dst, f.Orig.DstPort,
		f.Reply.Src, f.Reply.SrcPort, f.Reply.Dst, f.Reply.DstPort)
}

// change is one conntrack event as the sync sees it.
type change struct {
	flow  Flow
	ended bool // DESTROY: the flow is gone
}

// eventStream is a subscription to a namespace's conntrack events.
type eventStream struct {
	conn *conntrack.Conn
	C    chan change
	// Errs reports a failed subscription; an overrun (ENOBUFS: events
	// were lost) among them, after which the table must be sent whole.
	Errs chan error
	done chan struct{}
}

// listenEvents subscribes to ns's conntrack NEW, UPDATE and DESTROY events.
func listenEvents(ns string) (*eventStream, error) {
	var conn *conntrack.Conn
	if err := linux.Do(ns, func() (err error) {
		conn, err = conntrack.Dial(nil)
		return err
	}); err != nil {
		return nil, fmt.Errorf("subscribing to conntrack events in %s: %w", ns, err)
	}
	// A burst of new connections must not overrun the socket before the
	// loop drains it; the kernel allocates only what is queued.
	_ = conn.SetReadBuffer(4 << 20)
	raw := make(chan conntrack.Event, 1024)
	errs, err := conn.Listen(raw, 1, netfilter.GroupsCT)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("subscribing to conntrack events in %s: %w", ns, err)
	}
	s := &eventStream{conn: conn, C: make(chan change, 1024), Errs: make(chan error, 1), done: make(chan struct{})}
	go func() {
		for {
			select {
			case ev, ok := <-raw:
				if !ok {
					return
				}
				if ev.Flow == nil {
					continue
				}
				f, ok := fromKernel(*ev.Flow)
				if !ok {
					continue
				}
				select {
				case s.C <- change{flow: f, ended: ev.Type == conntrack.EventDestroy}:
				case <-s.done:
					return
				}
			case <-s.done:
				return
			case err, ok := <-errs:
				if !ok {
					return
				}
				select {
				case s.Errs <- err:
				default:
				}
				return
			}
		}
	}()
	return s, nil
}

func (s *eventStream) Close() error {
	close(s.done)
	return s.conn.Close()
}
