package lab

import (
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// PingLog accumulates the output of iputils `ping -D -O -i <interval>`, line
// by line, as it arrives. It is safe for concurrent use (a reader goroutine
// feeds it while the scenario reads it).
//
// Lines it understands:
//
//	[1718000000.123456] 64 bytes from 172.24.4.1: icmp_seq=1 ttl=63 time=0.061 ms
//	[1718000000.133456] 64 bytes from 172.24.4.1: icmp_seq=1 ttl=63 time=0.07 ms (DUP!)
//	[1718000000.143456] no answer yet for icmp_seq=2
//	[1718000000.153456] From 10.10.30.5 icmp_seq=3 Destination Host Unreachable
//	1000 packets transmitted, 950 received, +3 errors, 5% packet loss, time 9990ms
//
// icmp_seq is 16 bits on the wire and wraps; the log unwraps it.
type PingLog struct {
	mu          sync.Mutex
	replies     map[int]time.Time // unwrapped seq → time of its first reply
	maxSeq      int               // highest seq seen in any line
	transmitted int               // from the statistics line, 0 until then
	lastRaw     int
	offset      int
	seenAny     bool
	// arrivalTimes: ignore -D stamps (the wall clock, which a clock jump
	// moves) and use the lines' arrival times.
	arrivalTimes bool
}

var (
	pingStamp   = regexp.MustCompile(`^\[(\d+(?:\.\d+)?)\]\s*`)
	pingSeq     = regexp.MustCompile(`icmp_seq=(\d+)`)
	pingTxStats = regexp.MustCompile(`^(\d+) packets transmitted, (\d+) (?:packets )?received`)
)

// NewPingLog returns an empty log.
func NewPingLog() *PingLog { return &PingLog{replies: map[int]time.Time{}} }

// Line feeds one line of ping's output; arrived is when it was read, used
// when the line carries no -D timestamp.
func (p *PingLog) Line(line string, arrived time.Time) {
	line = strings.TrimSpace(line)
	ts := arrived
	if m := pingStamp.FindStringSubmatch(line); m != nil {
		if t, ok := parseStamp(m[1]); ok && !p.arrivalTimes {
			ts = t
		}
		line = line[len(m[0]):]
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if m := pingTxStats.FindStringSubmatch(line); m != nil {
		p.transmitted, _ = strconv.Atoi(m[1])
		return
	}
	m := pingSeq.FindStringSubmatch(line)
	if m == nil {
		return
	}
	raw, err := strconv.Atoi(m[1])
	if err != nil {
		return
	}
	seq := p.unwrap(raw)
	if seq > p.maxSeq {
		p.maxSeq = seq
	}
	if strings.Contains(line, " bytes from ") {
		if _, dup := p.replies[seq]; !dup {
			p.replies[seq] = ts
		}
	}
}

// parseStamp parses ping -D's "seconds.microseconds" exactly.
func parseStamp(s string) (time.Time, bool) {
	secStr, frac, _ := strings.Cut(s, ".")
	sec, err := strconv.ParseInt(secStr, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	var nsec int64
	if frac != "" {
		if len(frac) > 9 {
			frac = frac[:9]
		}
		n, err := strconv.ParseInt(frac, 10, 64)
		if err != nil {
			return time.Time{}, false
		}
		for i := len(frac); i < 9; i++ {
			n *= 10
		}
		nsec = n
	}
	return time.Unix(sec, nsec), true
}

// unwrap turns a 16-bit icmp_seq into a monotonic sequence number.
func (p *PingLog) unwrap(raw int) int {
	if p.seenAny {
		switch {
		case raw < p.lastRaw-32768:
			p.offset += 65536
		case raw > p.lastRaw+32768 && p.offset >= 65536:
			// A late line from before the last wrap.
			return raw + p.offset - 65536
		}
	}
	p.seenAny = true
	p.lastRaw = raw
	return raw + p.offset
}

// Received is the number of distinct echoes answered so far.
func (p *PingLog) Received() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.replies)
}

// LastReply is the time of the latest reply (zero if none).
func (p *PingLog) LastReply() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	var last time.Time
	for _, t := range p.replies {
		if t.After(last) {
			last = t
		}
	}
	return last
}

// PingSummary is the outcome of a ping run.
type PingSummary struct {
	// Sent counts echo requests up to the last one answered; requests still
	// in flight when ping was stopped (sent in the last inflight window after
	// the last reply) are not counted, neither as sent nor as lost. If the
	// path never came back, every request counts.
	Sent     int `json:"sent"`
	Received int `json:"received"`
	Lost     int `json:"lost"`
	// LongestLossRun is the longest run of consecutive lost requests.
	LongestLossRun int `json:"longest_loss_run"`
	// LongestGap is the longest time between two consecutive replies (by
	// sequence number): the outage as the instance saw it.
	LongestGap time.Duration `json:"-"`
	// MeasuredInterval is the real time between two requests, from the
	// first and last replies' timestamps (ping's -i is a lower bound: on a
	// kernel with a coarse timer 10 ms may become 16 ms). 0 if unknown.
	MeasuredInterval time.Duration `json:"-"`
}

// Summary computes the outcome; interval is ping's -i and inflight how long
// a request may still be on its way when ping stops.
func (p *PingLog) Summary(interval, inflight time.Duration) PingSummary {
	p.mu.Lock()
	defer p.mu.Unlock()
	total := max(p.transmitted, p.maxSeq)
	var seqs []int
	for s := range p.replies {
		seqs = append(seqs, s)
	}
	sort.Ints(seqs)
	sent := total
	if n := len(seqs); n > 0 {
		last := seqs[n-1]
		if interval > 0 && time.Duration(total-last)*interval <= inflight {
			sent = last
		}
	}
	var s PingSummary
	s.Sent = sent
	prev := 0
	var prevTS time.Time
	for _, q := range seqs {
		if q < 1 {
			continue // iputils counts from 1; a 0 before any wrap is noise
		}
		if q > sent {
			break
		}
		s.Received++
		if run := q - prev - 1; run > s.LongestLossRun {
			s.LongestLossRun = run
		}
		ts := p.replies[q]
		if !prevTS.IsZero() {
			if gap := ts.Sub(prevTS); gap > s.LongestGap {
				s.LongestGap = gap
			}
		}
		prev, prevTS = q, ts
	}
	if n := len(seqs); n > 1 && seqs[n-1] > seqs[0] {
		first, last := p.replies[seqs[0]], p.replies[seqs[n-1]]
		s.MeasuredInterval = last.Sub(first) / time.Duration(seqs[n-1]-seqs[0])
	}
	if run := sent - prev; run > s.LongestLossRun {
		s.LongestLossRun = run
	}
	s.Lost = s.Sent - s.Received
	return s
}
