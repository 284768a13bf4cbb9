package lab

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// feed gives every line of out to a new PingLog.
func feed(out string) *PingLog {
	p := NewPingLog()
	for _, l := range strings.Split(out, "\n") {
		p.Line(l, time.Unix(0, 0))
	}
	return p
}

// pingOutput fabricates `ping -D -O -i 0.01` output for seqs 1..n, where
// answered decides which get a reply; start is the first timestamp, every
// request 10 ms apart. stats adds the statistics line.
func pingOutput(n int, answered func(seq int) bool, stats bool) string {
	var b strings.Builder
	b.WriteString("PING 172.24.4.1 (172.24.4.1) 56(84) bytes of data.\n")
	recv := 0
	for seq := 1; seq <= n; seq++ {
		ts := 1718000000.0 + float64(seq)*0.01
		if answered(seq) {
			recv++
			fmt.Fprintf(&b, "[%.6f] 64 bytes from 172.24.4.1: icmp_seq=%d ttl=63 time=0.061 ms\n", ts, seq%65536)
		} else {
			fmt.Fprintf(&b, "[%.6f] no answer yet for icmp_seq=%d\n", ts+0.01, seq%65536)
		}
	}
	if stats {
		fmt.Fprintf(&b, "\n--- 172.24.4.1 ping statistics ---\n%d packets transmitted, %d received, %.0f%% packet loss, time 1000ms\n", n, recv, 100*float64(n-recv)/float64(n))
		b.WriteString("rtt min/avg/max/mdev = 0.051/0.061/0.090/0.010 ms\n")
	}
	return b.String()
}

func TestPingLogNoLoss(t *testing.T) {
	p := feed(pingOutput(500, func(int) bool { return true }, true))
	s := p.Summary(10*time.Millisecond, 200*time.Millisecond)
	if s.Sent != 500 || s.Received != 500 || s.Lost != 0 || s.LongestLossRun != 0 {
		t.Fatalf("summary = %+v, want 500 sent, 500 received, none lost", s)
	}
	if g := s.LongestGap; g < 9*time.Millisecond || g > 11*time.Millisecond {
		t.Errorf("longest gap = %s, want ~10ms", g)
	}
	if iv := s.MeasuredInterval; iv < 9*time.Millisecond || iv > 11*time.Millisecond {
		t.Errorf("measured interval = %s, want ~10ms", iv)
	}
}

func TestPingLogOutageInTheMiddle(t *testing.T) {
	// Requests 101..350 are lost (2.5 s at 10 ms), then the path is back.
	lost := func(seq int) bool { return seq > 100 && seq <= 350 }
	p := feed(pingOutput(1000, func(s int) bool { return !lost(s) }, true))
	s := p.Summary(10*time.Millisecond, 200*time.Millisecond)
	if s.Sent != 1000 || s.Lost != 250 || s.Received != 750 || s.LongestLossRun != 250 {
		t.Fatalf("summary = %+v, want 1000 sent, 250 lost in one run", s)
	}
	if g := s.LongestGap; g < 2500*time.Millisecond || g > 2520*time.Millisecond {
		t.Errorf("longest gap = %s, want ~2.51s", g)
	}
}

func TestPingLogInFlightAtStopIsNotLoss(t *testing.T) {
	// The last 3 requests had no reply yet when ping was interrupted: they
	// were in flight, not lost.
	p := feed(pingOutput(400, func(s int) bool { return s <= 397 }, true))
	s := p.Summary(10*time.Millisecond, 200*time.Millisecond)
	if s.Sent != 397 || s.Lost != 0 {
		t.Fatalf("summary = %+v, want 397 sent and none lost", s)
	}
}

func TestPingLogNeverRecovered(t *testing.T) {
	// The path died at 200 and never came back: all of 201..600 are lost.
	p := feed(pingOutput(600, func(s int) bool { return s <= 200 }, true))
	s := p.Summary(10*time.Millisecond, 200*time.Millisecond)
	if s.Sent != 600 || s.Lost != 400 || s.LongestLossRun != 400 {
		t.Fatalf("summary = %+v, want 600 sent, 400 lost", s)
	}
}

func TestPingLogNoReplyAtAll(t *testing.T) {
	p := feed(pingOutput(50, func(int) bool { return false }, true))
	s := p.Summary(10*time.Millisecond, 200*time.Millisecond)
	if s.Sent != 50 || s.Received != 0 || s.Lost != 50 {
		t.Fatalf("summary = %+v, want 50 sent, all lost", s)
	}
}

func TestPingLogWithoutStatistics(t *testing.T) {
	// ping killed before it printed its statistics: the highest seq counts.
	lost := func(seq int) bool { return seq >= 10 && seq < 20 }
	p := feed(pingOutput(100, func(s int) bool { return !lost(s) }, false))
	s := p.Summary(10*time.Millisecond, 200*time.Millisecond)
	if s.Sent != 100 || s.Lost != 10 {
		t.Fatalf("summary = %+v, want 100 sent, 10 lost", s)
	}
}

func TestPingLogDuplicatesAndErrors(t *testing.T) {
	out := `PING 172.24.4.1 (172.24.4.1) 56(84) bytes of data.
[1718000000.010000] 64 bytes from 172.24.4.1: icmp_seq=1 ttl=63 time=0.061 ms
[1718000000.010100] 64 bytes from 172.24.4.1: icmp_seq=1 ttl=63 time=0.071 ms (DUP!)
[1718000000.030000] no answer yet for icmp_seq=2
[1718000000.031000] From 10.10.30.2 icmp_seq=2 Destination Host Unreachable
[1718000000.040000] 64 bytes from 172.24.4.1: icmp_seq=3 ttl=63 time=0.061 ms
[1718000000.050000] 64 bytes from 172.24.4.1: icmp_seq=4 ttl=63 time=0.061 ms

--- 172.24.4.1 ping statistics ---
4 packets transmitted, 3 received, +1 duplicates, +1 errors, 25% packet loss, time 40ms
`
	p := feed(out)
	if p.Received() != 3 {
		t.Fatalf("received = %d, want 3 (duplicate counted once, error not a reply)", p.Received())
	}
	s := p.Summary(10*time.Millisecond, 0)
	if s.Sent != 4 || s.Lost != 1 || s.LongestLossRun != 1 {
		t.Fatalf("summary = %+v, want 4 sent, 1 lost", s)
	}
	if s.LongestGap != 30*time.Millisecond {
		t.Errorf("longest gap = %s, want 30ms (seq 1 → seq 3)", s.LongestGap)
	}
}

func TestPingLogSequenceWrap(t *testing.T) {
	// icmp_seq is 16 bits: 65535 is followed by 0.
	var b strings.Builder
	for seq := 65530; seq <= 65545; seq++ {
		if seq == 65537 { // lost, right after the wrap
			fmt.Fprintf(&b, "no answer yet for icmp_seq=%d\n", seq%65536)
			continue
		}
		fmt.Fprintf(&b, "64 bytes from 172.24.4.1: icmp_seq=%d ttl=63 time=0.1 ms\n", seq%65536)
	}
	p := feed(b.String())
	if p.Received() != 15 {
		t.Fatalf("received = %d, want 15", p.Received())
	}
	s := p.Summary(10*time.Millisecond, 0)
	if s.Sent != 65545 || s.Lost != 65545-15 {
		// Requests before 65530 are not in this excerpt: they count as lost.
		t.Fatalf("summary = %+v", s)
	}
	if s.LongestLossRun != 65529 {
		t.Errorf("longest loss run = %d, want 65529 (the unseen head)", s.LongestLossRun)
	}
}

func TestPingLogLastReply(t *testing.T) {
	p := feed(pingOutput(10, func(s int) bool { return s != 10 }, false))
	want := time.Unix(1718000000, 0).Add(90 * time.Millisecond)
	if d := p.LastReply().Sub(want); d < -time.Millisecond || d > time.Millisecond {
		t.Errorf("last reply = %s, want %s", p.LastReply(), want)
	}
}

func FuzzPingLogLine(f *testing.F) {
	f.Add("[1718000000.010000] 64 bytes from 172.24.4.1: icmp_seq=1 ttl=63 time=0.061 ms")
	f.Add("4 packets transmitted, 3 received, +1 errors, 25% packet loss, time 40ms")
	f.Add("[1.5] no answer yet for icmp_seq=65535")
	f.Fuzz(func(t *testing.T, line string) {
		p := NewPingLog()
		p.Line(line, time.Unix(0, 0))
		p.Line(line, time.Unix(1, 0))
		s := p.Summary(10*time.Millisecond, 200*time.Millisecond)
		if s.Lost < 0 || s.Received > s.Sent {
			t.Fatalf("inconsistent summary %+v for %q", s, line)
		}
	})
}
