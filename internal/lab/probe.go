package lab

// The failover benchmark's data-plane prober: one raw ICMP socket in the
// upstream host pinging every router's gateway address round-robin, and the
// judgement of each router's probes after the fault.

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"math"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// probeInterval is each router's probe interval at a total rate.
func probeInterval(routers, rate int) time.Duration {
	iv := time.Duration(float64(routers) / float64(rate) * float64(time.Second))
	return max(iv, minProbeInterval).Round(time.Millisecond)
}

// prober pings every router's gateway address from the upstream host,
// round-robin, through one raw ICMP socket opened in the upstream
// namespace, and records when each probe was sent and answered.
type prober struct {
	conn     *net.IPConn
	id       uint16
	targets  []netip.Addr
	interval time.Duration
	start    time.Time

	mu   sync.Mutex
	sent [][]time.Duration // per router, per sequence number: since start
	recv [][]time.Duration // likewise, when answered; 0: not (yet)

	stopc    chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// probeMagic starts the payload of the bench's probes.
var probeMagic = [4]byte{'L', '3', 'H', 'B'}

// probeDataLen is the length of a probe's echo data: magic, router,
// sequence, send time.
const probeDataLen = 4 + 4 + 4 + 8

// protocolICMP is IPv4's ICMP (IANA protocol 1), for icmp.ParseMessage.
const protocolICMP = 1

func startProber(ns string, targets []netip.Addr, interval time.Duration) (*prober, error) {
	var conn net.PacketConn
	err := inNamespace(ns, func() error {
		c, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
		conn = c
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("raw ICMP socket in %s: %w", ns, err)
	}
	ic := conn.(*net.IPConn)
	_ = ic.SetReadBuffer(4 << 20)
	_ = ic.SetWriteBuffer(4 << 20)
	idb := make([]byte, 2)
	_, _ = rand.Read(idb)
	p := &prober{
		conn: ic, id: binary.BigEndian.Uint16(idb), targets: targets, interval: interval, start: time.Now(),
		sent: make([][]time.Duration, len(targets)), recv: make([][]time.Duration, len(targets)),
		stopc: make(chan struct{}),
	}
	p.wg.Go(p.receiveLoop)
	p.wg.Go(p.sendLoop)
	return p, nil
}

func (p *prober) since() time.Duration { return time.Since(p.start) }

func (p *prober) sendLoop() {
	n := len(p.targets)
	spacing := p.interval / time.Duration(n)
	next := time.Now()
	pkt := newProbePacket(p.id)
	for k := 0; ; {
		select {
		case <-p.stopc:
			return
		default:
		}
		now := time.Now()
		if now.Sub(next) > p.interval {
			next = now // descheduled for a whole round: no burst to catch up
		}
		for !next.After(now) {
			p.send(k%n, pkt)
			k++
			next = next.Add(spacing)
		}
		time.Sleep(time.Until(next))
	}
}

func (p *prober) send(i int, pkt *probePacket) {
	p.mu.Lock()
	seq := len(p.sent[i])
	at := p.since()
	p.sent[i] = append(p.sent[i], at)
	p.recv[i] = append(p.recv[i], 0)
	p.mu.Unlock()
	b, err := pkt.marshal(i, seq, at)
	if err != nil {
		return // not an ICMP type icmp knows: cannot happen; the probe counts as lost
	}
	_, _ = p.conn.WriteTo(b, &net.IPAddr{IP: net.IP(p.targets[i].AsSlice())})
}

// probePacket builds the echo requests of one prober's sender: its message,
// echo body and data are reused from one probe to the next (Marshal makes
// the packet, with its checksum, anew).
type probePacket struct {
	msg  icmp.Message
	echo icmp.Echo
	data [probeDataLen]byte
}

func newProbePacket(id uint16) *probePacket {
	pkt := &probePacket{}
	pkt.echo = icmp.Echo{ID: int(id), Data: pkt.data[:]}
	pkt.msg = icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &pkt.echo}
	return pkt
}

// marshal returns the echo request of router i's probe seq, sent at (since
// the prober's start): the echo's sequence number is seq's low 16 bits,
// the data the magic, i, seq and at.
func (pkt *probePacket) marshal(i, seq int, at time.Duration) ([]byte, error) {
	pkt.echo.Seq = int(uint16(seq))
	d := pkt.data[:]
	copy(d[0:4], probeMagic[:])
	binary.BigEndian.PutUint32(d[4:], uint32(i))
	binary.BigEndian.PutUint32(d[8:], uint32(seq))
	binary.BigEndian.PutUint64(d[12:], uint64(at))
	return pkt.msg.Marshal(nil)
}

func (p *prober) receiveLoop() {
	buf := make([]byte, 2048)
	for {
		n, _, err := p.conn.ReadFrom(buf)
		at := p.since()
		if err != nil {
			select {
			case <-p.stopc:
				return
			default:
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return
		}
		i, seq, ok := parseProbeReply(buf[:n], p.id)
		if !ok || i >= len(p.targets) {
			continue
		}
		p.mu.Lock()
		if seq < len(p.recv[i]) && p.recv[i][seq] == 0 {
			p.recv[i][seq] = max(at, 1)
		}
		p.mu.Unlock()
	}
}

// parseProbeReply reads an ICMP echo reply to one of the bench's probes
// (the IPv4 header already stripped): router index and sequence number, from
// the data.
func parseProbeReply(b []byte, id uint16) (router, seq int, ok bool) {
	m, err := icmp.ParseMessage(protocolICMP, b)
	if err != nil || m.Type != ipv4.ICMPTypeEchoReply || m.Code != 0 {
		return 0, 0, false
	}
	e, isEcho := m.Body.(*icmp.Echo)
	if !isEcho || e.ID != int(id) || len(e.Data) < probeDataLen || [4]byte(e.Data[:4]) != probeMagic {
		return 0, 0, false
	}
	return int(binary.BigEndian.Uint32(e.Data[4:])), int(binary.BigEndian.Uint32(e.Data[8:])), true
}

func (p *prober) stop() {
	p.stopOnce.Do(func() {
		close(p.stopc)
		p.conn.Close()
		p.wg.Wait()
	})
}

// minAnswered is the fewest probes any router answered.
func (p *prober) minAnswered() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	least := math.MaxInt
	for i := range p.recv {
		c := 0
		for _, r := range p.recv[i] {
			if r > 0 {
				c++
			}
		}
		least = min(least, c)
	}
	return least
}

// routersAnswered is how many routers answered a probe.
func (p *prober) routersAnswered() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := 0
	for i := range p.recv {
		for _, r := range p.recv[i] {
			if r > 0 {
				c++
				break
			}
		}
	}
	return c
}

// answeredSince counts router i's answered probes sent at or after t.
func (p *prober) answeredSince(i int, t time.Time) int {
	from := t.Sub(p.start)
	p.mu.Lock()
	defer p.mu.Unlock()
	c := 0
	for j := len(p.sent[i]) - 1; j >= 0 && p.sent[i][j] >= from; j-- {
		if p.recv[i][j] > 0 {
			c++
		}
	}
	return c
}

// probeOutcome is one router's probes after the fault.
type probeOutcome struct {
	// recovered: from the fault to the first reply to a probe sent after
	// the last lost one; 0 when none was lost; -1 when no such reply came.
	recovered time.Duration
	sent      int
	lost      int
}

func (p *prober) outcome(i int, t0, cutoff time.Time) probeOutcome {
	p.mu.Lock()
	defer p.mu.Unlock()
	return analyzeProbes(p.sent[i], p.recv[i], t0.Sub(p.start), cutoff.Sub(p.start))
}

// analyzeProbes judges one router's probes: sent[j] and recv[j] are the
// send and reply times of probe j (recv 0: none), t0 the fault; probes sent
// after cutoff are too recent to be judged lost.
func analyzeProbes(sent, recv []time.Duration, t0, cutoff time.Duration) probeOutcome {
	out := probeOutcome{}
	lastLost := -1
	for j := range sent {
		if sent[j] < t0 || sent[j] > cutoff {
			continue
		}
		out.sent++
		if recv[j] == 0 {
			out.lost++
			lastLost = j
		}
	}
	if out.lost == 0 {
		if out.sent == 0 {
			out.recovered = -1
		}
		return out
	}
	first := time.Duration(-1)
	for j := lastLost + 1; j < len(sent); j++ {
		if recv[j] > 0 && (first < 0 || recv[j] < first) {
			first = recv[j]
		}
	}
	if first < 0 {
		out.recovered = -1
	} else {
		out.recovered = first - t0
	}
	return out
}
