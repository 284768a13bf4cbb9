package lab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"
)

// The checking half of the flows (see flows.go): the wire record, the
// bookkeeping of what arrived, and the rules that turn it into a FlowResult.
// Nothing here touches a socket, so it is tested without root.

// Every TCP and UDP message is one fixed-size record, big endian:
//
//	magic u32 | connection id u32 | sequence number u64 | send time u64 (Unix ns)
//
// Fixed-size records keep framing trivial on a byte stream; the magic tells a
// stream that lost its framing from one that merely skipped numbers.
const (
	recordSize  = 24
	recordMagic = 0x4c33464c // "L3FL"
)

type record struct {
	id   uint32 // tcp-many: which connection; 0 elsewhere
	seq  uint64 // 1, 2, 3, ... per connection (UDP: per socket)
	sent int64  // Unix ns, for whoever reads a capture
}

func (r record) put(b []byte) {
	binary.BigEndian.PutUint32(b[0:], recordMagic)
	binary.BigEndian.PutUint32(b[4:], r.id)
	binary.BigEndian.PutUint64(b[8:], r.seq)
	binary.BigEndian.PutUint64(b[16:], uint64(r.sent))
}

func parseRecord(b []byte) (record, error) {
	if len(b) != recordSize {
		return record{}, fmt.Errorf("record of %d bytes, want %d", len(b), recordSize)
	}
	if m := binary.BigEndian.Uint32(b); m != recordMagic {
		return record{}, fmt.Errorf("bad record magic %#x (stream out of step)", m)
	}
	return record{
		id:   binary.BigEndian.Uint32(b[4:]),
		seq:  binary.BigEndian.Uint64(b[8:]),
		sent: int64(binary.BigEndian.Uint64(b[16:])),
	}, nil
}

// Judgement windows.
const (
	// recentWindow: a flow is alive at Stop if a message arrived this
	// shortly before Stop began (at least 3 intervals, for slow streams).
	recentWindow = time.Second
	// udpTail: datagrams sent this shortly before Stop may still be in
	// flight, so their missing echo is not loss (cf. ping's in-flight window).
	udpTail = 200 * time.Millisecond
	// manyMinStall is the least silence that makes a tcp-many connection
	// stalled (see manyStallAfter).
	manyMinStall = 3 * time.Second
)

func recentFor(interval time.Duration) time.Duration { return max(recentWindow, 3*interval) }

// manyStallAfter is how long a tcp-many connection may have been silent at
// Stop before it counts as broken: a few of its intervals, and never less
// than manyMinStall (scheduling noise with a thousand connections).
func manyStallAfter(interval time.Duration) time.Duration {
	return max(3*interval, manyMinStall)
}

// arrivals is the time of the last arrival and the longest gap between two
// consecutive ones.
type arrivals struct {
	n       int
	last    time.Time
	longest time.Duration
}

func (a *arrivals) add(at time.Time) {
	if a.n > 0 {
		if g := at.Sub(a.last); g > a.longest {
			a.longest = g
		}
	}
	a.n++
	a.last = at
}

// recent reports whether something arrived within window before stopAt (or
// after it: arrivals while Stop ran also show the flow alive).
func (a arrivals) recent(stopAt time.Time, window time.Duration) bool {
	return a.n > 0 && stopAt.Sub(a.last) <= window
}

// seqTrack checks one TCP stream: every number must be the previous one + 1
// (TCP keeps order, so anything else means the stream was re-made or
// corrupted); numbers jumped over count as lost.
type seqTrack struct {
	arrivals
	prev       uint64
	lost       int
	outOfOrder int
}

func (s *seqTrack) add(seq uint64, at time.Time) {
	if seq != s.prev+1 {
		s.outOfOrder++
		if seq > s.prev+1 {
			s.lost += int(min(seq-s.prev-1, 1<<31))
		}
	}
	s.prev = seq
	s.arrivals.add(at)
}

// connTrack is the checking side's view of one TCP connection.
type connTrack struct {
	seqTrack
	attached bool // tcp-many: a server-side reader has claimed this id
	reset    bool // ECONNRESET, EPIPE or EOF before Stop, on either side
	failed   bool // any error that ended the connection before Stop
	stalled  bool // a write did not complete within writeTimeout
}

// isReset reports whether err means the connection was torn down under us:
// reset, broken pipe, the peer closing (EOF) when nobody asked it to, or the
// local kernel aborting it (ECONNABORTED, e.g. `ss -K`).
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNABORTED) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// describe says what happened, for Detail.
func describe(what string, err error) string {
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return what + ": EOF before Stop (the peer closed the connection)"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return what + ": stalled (no progress within the deadline)"
	}
	return what + ": " + err.Error()
}

// streamResult judges tcp-client, tcp-push and tcp-fip: alive at Stop, never
// reset, never out of order.
func streamResult(kind string, c connTrack, detail string, stopAt time.Time, interval time.Duration) FlowResult {
	r := FlowResult{
		Kind:              kind,
		Reset:             c.reset,
		Messages:          c.n,
		Lost:              c.lost,
		OutOfOrder:        c.outOfOrder,
		LongestGapSeconds: c.longest.Seconds(),
		Detail:            detail,
	}
	recent := c.recent(stopAt, recentFor(interval))
	r.Survived = !c.reset && !c.failed && c.outOfOrder == 0 && recent
	if !recent && r.Detail == "" {
		r.Detail = fmt.Sprintf("no message in the last %v before Stop", recentFor(interval))
	}
	return r
}

// manyBroken applies the tcp-many rule to one connection: broken if it
// reset, failed, fell out of order or has been silent for more than
// stallAfter when Stop began.
func manyBroken(c connTrack, stopAt time.Time, stallAfter time.Duration) bool {
	return c.reset || c.failed || c.outOfOrder > 0 || c.n == 0 || stopAt.Sub(c.last) > stallAfter
}

// manyResult judges tcp-many: it survived if no connection broke.
func manyResult(conns []connTrack, detail string, stopAt time.Time, stallAfter time.Duration) FlowResult {
	r := FlowResult{Kind: "tcp-many"}
	var resets, stalls, disorder int
	for _, c := range conns {
		r.Messages += c.n
		r.Lost += c.lost
		r.OutOfOrder += c.outOfOrder
		r.LongestGapSeconds = max(r.LongestGapSeconds, c.longest.Seconds())
		r.Reset = r.Reset || c.reset
		if !manyBroken(c, stopAt, stallAfter) {
			continue
		}
		r.Broken++
		switch {
		case c.reset:
			resets++
		case c.outOfOrder > 0:
			disorder++
		default:
			stalls++
		}
	}
	r.Survived = r.Broken == 0
	r.Detail = detail
	if r.Broken > 0 {
		sum := fmt.Sprintf("%d of %d connections broken (%d reset, %d out of order, %d stalled or failed)",
			r.Broken, len(conns), resets, disorder, stalls)
		if detail != "" {
			sum += "; first error: " + detail
		}
		r.Detail = sum
	}
	return r
}

// udpTrack is the instance's view of the UDP flow: when each sequence number
// was sent, which were echoed, and when echoes arrived.
type udpTrack struct {
	arrivals
	sent       []time.Time // sent[i]: when seq i+1 was sent
	echoed     []bool
	maxEchoed  uint64
	dups       int
	outOfOrder int
}

func (u *udpTrack) send(seq uint64, at time.Time) {
	// Numbers are sent in order from one goroutine: seq == len(sent)+1.
	for uint64(len(u.sent)) < seq {
		u.sent = append(u.sent, at)
		u.echoed = append(u.echoed, false)
	}
}

func (u *udpTrack) echo(seq uint64, at time.Time) {
	if seq == 0 || seq > uint64(len(u.sent)) {
		return // never sent: not ours
	}
	if u.echoed[seq-1] {
		u.dups++
		return
	}
	u.echoed[seq-1] = true
	if seq < u.maxEchoed {
		u.outOfOrder++
	}
	u.maxEchoed = max(u.maxEchoed, seq)
	u.arrivals.add(at)
}

// lost counts the numbers sent before stopAt-tail that were never echoed;
// later ones may still be on their way.
func (u *udpTrack) lost(stopAt time.Time, tail time.Duration) int {
	cut := stopAt.Add(-tail)
	n := 0
	for i, at := range u.sent {
		if !u.echoed[i] && at.Before(cut) {
			n++
		}
	}
	return n
}

// udpResult judges the UDP flow: echoes still arrive at Stop and the
// upstream always saw the same source address and port.
func udpResult(u *udpTrack, sources []string, detail string, stopAt time.Time, interval time.Duration) FlowResult {
	r := FlowResult{
		Kind:              "udp",
		Messages:          u.n,
		Lost:              u.lost(stopAt, udpTail),
		OutOfOrder:        u.outOfOrder,
		LongestGapSeconds: u.longest.Seconds(),
		SourcePortChanged: len(sources) > 1,
		Detail:            detail,
	}
	recent := u.recent(stopAt, recentFor(interval))
	r.Survived = !r.SourcePortChanged && recent
	switch {
	case r.SourcePortChanged:
		r.Detail = joinDetail(fmt.Sprintf("the upstream saw %d source addresses: %v", len(sources), sources), detail)
	case !recent:
		r.Detail = joinDetail(fmt.Sprintf("no echo in the last %v before Stop", recentFor(interval)), detail)
	}
	return r
}

func joinDetail(a, b string) string {
	if b == "" {
		return a
	}
	return a + "; " + b
}
