package lab

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Unit tests of the flows' checking side (flows_check.go): no sockets, no
// root.

var flowT0 = time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)

func flowAt(ms int) time.Time { return flowT0.Add(time.Duration(ms) * time.Millisecond) }

func TestFlowsRecordRoundTripsAndRejectsAStreamOutOfStep(t *testing.T) {
	b := make([]byte, recordSize)
	want := record{id: 7, seq: 1<<40 + 3, sent: flowAt(5).UnixNano()}
	want.put(b)
	got, err := parseRecord(b)
	if err != nil || got != want {
		t.Fatalf("parseRecord = %+v, %v; want %+v", got, err, want)
	}
	// The same bytes read 4 bytes late, as after a partial write.
	shifted := append(append([]byte{}, b[4:]...), b[:4]...)
	if _, err := parseRecord(shifted); err == nil {
		t.Error("a shifted record parsed")
	}
	if _, err := parseRecord(b[:10]); err == nil {
		t.Error("a short record parsed")
	}
}

func TestFlowsSeqTrackSequenceAndGaps(t *testing.T) {
	type msg struct {
		seq uint64
		ms  int
	}
	for _, tc := range []struct {
		name            string
		msgs            []msg
		lost, ooo       int
		longestMS, last int
	}{
		{name: "nothing arrived"},
		{name: "one message has no gap", msgs: []msg{{1, 10}}, last: 10},
		{name: "in order at a steady pace", msgs: []msg{{1, 0}, {2, 10}, {3, 20}, {4, 30}}, longestMS: 10, last: 30},
		{name: "an outage shows as the longest gap", msgs: []msg{{1, 0}, {2, 10}, {3, 1510}, {4, 1520}}, longestMS: 1500, last: 1520},
		{name: "a jump forward is out of order and loses the numbers skipped", msgs: []msg{{1, 0}, {2, 10}, {6, 20}, {7, 30}}, lost: 3, ooo: 1, longestMS: 10, last: 30},
		{name: "a stream re-made from 1 is out of order", msgs: []msg{{1, 0}, {2, 10}, {3, 20}, {1, 30}, {2, 40}}, ooo: 1, longestMS: 10, last: 40},
		{name: "a first number other than 1 is out of order", msgs: []msg{{5, 0}, {6, 10}}, lost: 4, ooo: 1, longestMS: 10, last: 10},
		{name: "a repeated number is out of order", msgs: []msg{{1, 0}, {2, 10}, {2, 20}, {3, 30}}, ooo: 1, longestMS: 10, last: 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s seqTrack
			for _, m := range tc.msgs {
				s.add(m.seq, flowAt(m.ms))
			}
			if s.n != len(tc.msgs) || s.lost != tc.lost || s.outOfOrder != tc.ooo || s.longest != time.Duration(tc.longestMS)*time.Millisecond {
				t.Errorf("messages %d lost %d out of order %d longest %v; want %d, %d, %d, %dms",
					s.n, s.lost, s.outOfOrder, s.longest, len(tc.msgs), tc.lost, tc.ooo, tc.longestMS)
			}
			if len(tc.msgs) > 0 && !s.last.Equal(flowAt(tc.last)) {
				t.Errorf("last arrival %v, want %v", s.last, flowAt(tc.last))
			}
		})
	}
}

func TestFlowsArrivalsRecentMeansAMessageInTheLastSecondBeforeStop(t *testing.T) {
	stop := flowAt(10_000)
	for _, tc := range []struct {
		name string
		last int // ms; -1: nothing arrived
		want bool
	}{
		{"nothing arrived", -1, false},
		{"just before Stop", 9_990, true},
		{"exactly one second before", 9_000, true},
		{"a little more than a second before", 8_999, false},
		{"while Stop ran", 10_500, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var a arrivals
			if tc.last >= 0 {
				a.add(flowAt(tc.last))
			}
			if got := a.recent(stop, recentFor(10*time.Millisecond)); got != tc.want {
				t.Errorf("recent = %v, want %v", got, tc.want)
			}
		})
	}
	if got := recentFor(time.Second); got != 3*time.Second {
		t.Errorf("recentFor(1s) = %v: a slow stream needs 3 of its intervals", got)
	}
}

func TestFlowsUDPLossExcludesTheLast200msBeforeStop(t *testing.T) {
	// Datagrams every 10 ms from 0 to 990 ms; Stop at 1000 ms.
	stop := flowAt(1000)
	for _, tc := range []struct {
		name      string
		unechoed  func(seq uint64) bool
		lost      int
		longestMS int
	}{
		{name: "all echoed", unechoed: func(uint64) bool { return false }, longestMS: 10},
		{name: "an outage in the middle is lost",
			unechoed: func(s uint64) bool { return s >= 31 && s <= 50 }, lost: 20, longestMS: 210},
		{name: "the tail in flight at Stop is not lost",
			// seq 81..100 were sent at 800..990 ms, within 200 ms of Stop.
			unechoed: func(s uint64) bool { return s >= 81 }, lost: 0, longestMS: 10},
		{name: "one sent just before the tail began is lost",
			// seq 80 was sent at 790 ms: 210 ms before Stop.
			unechoed: func(s uint64) bool { return s >= 80 }, lost: 1, longestMS: 10},
		{name: "never answered at all",
			unechoed: func(uint64) bool { return true }, lost: 80},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var u udpTrack
			for seq := uint64(1); seq <= 100; seq++ {
				u.send(seq, flowAt(int(seq-1)*10))
			}
			for seq := uint64(1); seq <= 100; seq++ {
				if !tc.unechoed(seq) {
					u.echo(seq, flowAt(int(seq-1)*10+1))
				}
			}
			if got := u.lost(stop, udpTail); got != tc.lost {
				t.Errorf("lost = %d, want %d", got, tc.lost)
			}
			if u.longest != time.Duration(tc.longestMS)*time.Millisecond {
				t.Errorf("longest gap %v, want %dms", u.longest, tc.longestMS)
			}
		})
	}
}

func TestFlowsUDPEchoesDuplicatesReorderingAndStrangers(t *testing.T) {
	var u udpTrack
	for seq := uint64(1); seq <= 5; seq++ {
		u.send(seq, flowAt(int(seq)*10))
	}
	u.echo(1, flowAt(11))
	u.echo(3, flowAt(31))
	u.echo(2, flowAt(32)) // late: out of order
	u.echo(2, flowAt(33)) // duplicate: not a message, not a gap
	u.echo(9, flowAt(34)) // never sent
	u.echo(0, flowAt(35))
	if u.n != 3 || u.dups != 1 || u.outOfOrder != 1 {
		t.Errorf("echoes %d dups %d out of order %d; want 3, 1, 1", u.n, u.dups, u.outOfOrder)
	}
	if got := u.lost(flowAt(1000), udpTail); got != 2 {
		t.Errorf("lost = %d, want 2 (seq 4 and 5)", got)
	}
}

func TestFlowsUDPResult(t *testing.T) {
	stop := flowAt(5000)
	fresh := func() *udpTrack {
		var u udpTrack
		for seq := uint64(1); seq <= 10; seq++ {
			u.send(seq, flowAt(4800+int(seq)*10))
			u.echo(seq, flowAt(4801+int(seq)*10))
		}
		return &u
	}
	for _, tc := range []struct {
		name      string
		u         *udpTrack
		sources   []string
		survived  bool
		changed   bool
		detailHas string
	}{
		{name: "echoes until Stop from one source port", u: fresh(), sources: []string{"172.24.4.20:40000"}, survived: true},
		{name: "a new SNAT port does not survive", u: fresh(), sources: []string{"172.24.4.20:40000", "172.24.4.20:40001"},
			changed: true, detailHas: "2 source addresses"},
		{name: "no echo at the end does not survive", u: &udpTrack{}, sources: []string{"172.24.4.20:40000"}, detailHas: "no echo"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := udpResult(tc.u, tc.sources, "", stop, 10*time.Millisecond)
			if r.Kind != "udp" || r.Survived != tc.survived || r.SourcePortChanged != tc.changed || r.Reset {
				t.Errorf("%+v", r)
			}
			if !strings.Contains(r.Detail, tc.detailHas) {
				t.Errorf("detail %q lacks %q", r.Detail, tc.detailHas)
			}
		})
	}
}

// flowHealthy is a tcp-many connection that sent every 500 ms until last.
func flowHealthy(last int) connTrack {
	var c connTrack
	c.attached = true
	seq := uint64(1)
	for ms := last % 500; ms <= last; ms += 500 {
		c.add(seq, flowAt(ms))
		seq++
	}
	return c
}

func TestFlowsTCPManyBrokenRule(t *testing.T) {
	stop := flowAt(20_000)
	stall := manyStallAfter(500 * time.Millisecond)
	if stall != 3*time.Second {
		t.Fatalf("manyStallAfter(500ms) = %v, want 3s (the floor)", stall)
	}
	if got := manyStallAfter(2 * time.Second); got != 6*time.Second {
		t.Fatalf("manyStallAfter(2s) = %v, want 3 intervals", got)
	}
	reset := flowHealthy(19_900)
	reset.reset, reset.failed = true, true
	ooo := flowHealthy(19_900)
	ooo.add(1, flowAt(19_950))
	writeStalled := flowHealthy(19_900)
	writeStalled.failed, writeStalled.stalled = true, true
	for _, tc := range []struct {
		name   string
		c      connTrack
		broken bool
	}{
		{"sending until Stop", flowHealthy(19_900), false},
		{"silent for exactly the limit", flowHealthy(17_000), false},
		{"silent for longer than the limit", flowHealthy(16_999), true},
		{"never delivered", connTrack{}, true},
		{"reset", reset, true},
		{"out of order", ooo, true},
		{"writer stalled", writeStalled, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := manyBroken(tc.c, stop, stall); got != tc.broken {
				t.Errorf("broken = %v, want %v", got, tc.broken)
			}
		})
	}
}

func TestFlowsTCPManyResultCountsBrokenConnections(t *testing.T) {
	stop := flowAt(20_000)
	stall := manyStallAfter(500 * time.Millisecond)
	conns := []connTrack{flowHealthy(19_900), flowHealthy(19_800), flowHealthy(19_700)}
	r := manyResult(conns, "", stop, stall)
	if !r.Survived || r.Broken != 0 || r.Reset || r.Detail != "" || r.LongestGapSeconds != 0.5 {
		t.Errorf("all healthy: %+v", r)
	}

	gap := flowHealthy(10_000)
	for seq, ms := gap.prev+1, 14_000; ms <= 19_900; seq, ms = seq+1, ms+500 {
		gap.add(seq, flowAt(ms)) // 4 s outage, then back
	}
	dead := flowHealthy(12_000)
	reset := flowHealthy(19_900)
	reset.reset, reset.failed = true, true
	conns = []connTrack{flowHealthy(19_900), gap, dead, reset}
	r = manyResult(conns, "tcp-many: connection 3: upstream read: connection reset by peer", stop, stall)
	if r.Survived || r.Broken != 2 || !r.Reset || r.LongestGapSeconds != 4 {
		t.Errorf("one recovered, one dead, one reset: %+v", r)
	}
	if !strings.Contains(r.Detail, "2 of 4 connections broken (1 reset, 0 out of order, 1 stalled or failed)") ||
		!strings.Contains(r.Detail, "connection reset by peer") {
		t.Errorf("detail %q", r.Detail)
	}
	if want := conns[0].n + gap.n + dead.n + reset.n; r.Messages != want {
		t.Errorf("messages %d, want %d", r.Messages, want)
	}
}

func TestFlowsStreamResult(t *testing.T) {
	stop := flowAt(10_000)
	alive := flowHealthy(9_900)
	reset := alive
	reset.reset, reset.failed = true, true
	ooo := alive
	ooo.add(1, flowAt(9_950))
	failed := alive
	failed.failed = true
	for _, tc := range []struct {
		name      string
		c         connTrack
		survived  bool
		detailHas string
	}{
		{"messages until Stop", alive, true, ""},
		{"silent in the last second", flowHealthy(8_500), false, "no message in the last 1s"},
		{"reset", reset, false, ""},
		{"out of order", ooo, false, ""},
		{"ended by another error", failed, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := streamResult("tcp-client", tc.c, "", stop, 10*time.Millisecond)
			if r.Survived != tc.survived || r.Reset != tc.c.reset || r.OutOfOrder != tc.c.outOfOrder || r.Kind != "tcp-client" {
				t.Errorf("%+v", r)
			}
			if !strings.Contains(r.Detail, tc.detailHas) {
				t.Errorf("detail %q lacks %q", r.Detail, tc.detailHas)
			}
		})
	}
}

func TestFlowsErrorsResetOrStall(t *testing.T) {
	for _, tc := range []struct {
		err       error
		reset     bool
		detailHas string
	}{
		{fmt.Errorf("read: %w", syscall.ECONNRESET), true, "connection reset"},
		{&os.SyscallError{Syscall: "write", Err: syscall.EPIPE}, true, "broken pipe"},
		{fmt.Errorf("read: %w", syscall.ECONNABORTED), true, "connection abort"},
		{io.EOF, true, "EOF before Stop"},
		{io.ErrUnexpectedEOF, true, "EOF before Stop"},
		{fmt.Errorf("write: %w", os.ErrDeadlineExceeded), false, "stalled"},
		{syscall.ETIMEDOUT, false, "timed out"},
		{errors.New("bad record magic"), false, "bad record magic"},
	} {
		if got := isReset(tc.err); got != tc.reset {
			t.Errorf("isReset(%v) = %v, want %v", tc.err, got, tc.reset)
		}
		if d := describe("x", tc.err); !strings.Contains(d, tc.detailHas) {
			t.Errorf("describe(%v) = %q, lacks %q", tc.err, d, tc.detailHas)
		}
	}
}

func TestFlowsSetAttachesEachIDOnce(t *testing.T) {
	s := newFlowSet("tcp-many", 2)
	if err := s.attach(1); err != nil {
		t.Fatal(err)
	}
	if err := s.attach(1); err == nil {
		t.Error("id 1 attached twice")
	}
	if err := s.attach(2); err == nil {
		t.Error("id beyond Many attached")
	}
	s.got(record{id: 1, seq: 1}, flowAt(0))
	s.fail(1, "tcp-many: connection 1: upstream read", syscall.ECONNRESET)
	s.fail(0, "later", io.EOF)
	conns, detail := s.snapshot()
	if !conns[1].reset || conns[1].n != 1 || !conns[0].reset || !strings.Contains(detail, "connection 1") {
		t.Errorf("conns %+v detail %q: the first error should be kept", conns, detail)
	}
	if _, err := s.progress(1); err == nil {
		t.Error("progress with a failed connection reported no error")
	}
}

func TestFlowsOptionsDefaultsAndValidation(t *testing.T) {
	base := FlowOptions{InstanceNS: "vm", UpstreamNS: "up", UpstreamIP: "172.24.4.1", FloatingIP: "172.24.4.20"}
	f, err := newFlows(base)
	if err != nil {
		t.Fatal(err)
	}
	if f.o.Interval != 10*time.Millisecond || f.o.Many != 1000 || f.o.ManyInterval != 500*time.Millisecond || f.o.Port != 47000 {
		t.Errorf("defaults: %+v", f.o)
	}
	if len(f.many.conns) != 1000 {
		t.Errorf("tcp-many tracks %d connections", len(f.many.conns))
	}
	for name, mod := range map[string]func(*FlowOptions){
		"no instance namespace":  func(o *FlowOptions) { o.InstanceNS = "" },
		"no upstream address":    func(o *FlowOptions) { o.UpstreamIP = "" },
		"IPv6 floating IP":       func(o *FlowOptions) { o.FloatingIP = "2001:db8::1" },
		"bad instance address":   func(o *FlowOptions) { o.InstanceIP = "10.10.30" },
		"ports beyond 65535":     func(o *FlowOptions) { o.Port = 65531 },
		"negative many":          func(o *FlowOptions) { o.Many = -1 },
		"negative interval":      func(o *FlowOptions) { o.Interval = -time.Second },
		"negative many interval": func(o *FlowOptions) { o.ManyInterval = -time.Second },
	} {
		o := base
		mod(&o)
		if _, err := newFlows(o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestFlowsStartFailsCleanlyWithoutItsNamespaces(t *testing.T) {
	_, err := StartFlows(t.Context(), FlowOptions{
		InstanceNS: "l3ha-flt-missing-vm", UpstreamNS: "l3ha-flt-missing-up",
		UpstreamIP: "172.24.4.1", FloatingIP: "172.24.4.20",
	})
	if err == nil || !strings.Contains(err.Error(), "l3ha-flt-missing-up") {
		t.Errorf("StartFlows in missing namespaces: %v", err)
	}
}
