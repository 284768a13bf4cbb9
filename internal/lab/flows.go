package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Flows are traffic flows between the instance's namespace and the upstream
// host's, run in this process, that tell after a router failover which kinds
// of connection survived it. Sockets are made inside their namespace
// (inNamespace) and used from ordinary goroutines afterwards: a socket stays
// in the namespace it was created in.
//
// The kinds, in FlowKinds order (ports are FlowOptions.Port + offset):
//
//	tcp-client  +0  the instance dials the upstream and writes every Interval; the upstream checks
//	tcp-push    +1  the instance dials; the upstream writes; the instance checks
//	tcp-many    +2  Many connections from the instance, each writing every ManyInterval; the upstream checks each
//	udp         +3  the instance sends a datagram every Interval from one socket; the upstream echoes it back
//	tcp-fip     +4  the upstream dials the floating IP; the instance writes; the upstream checks
//	tcp-idle    +5  one request/response at start, silence, one more at Stop
//
// Keepalives are off on every socket: they would make the idle connection
// talk, and the others carry data anyway.

// FlowKinds are the flows StartFlows runs, in the order of Stop's results.
var FlowKinds = []string{"tcp-client", "tcp-push", "tcp-many", "udp", "tcp-fip", "tcp-idle"}

// defaultManyInterval is how often each tcp-many connection speaks.
const defaultManyInterval = 500 * time.Millisecond

// FlowOptions say where the flows run.
type FlowOptions struct {
	InstanceNS, UpstreamNS string // namespace names
	// InstanceIP is the instance's private address; the instance's sockets
	// bind to it ("" lets the kernel choose).
	InstanceIP string
	// UpstreamIP is the upstream host's address: the server side of the
	// outbound flows listens on it.
	UpstreamIP string
	// FloatingIP is the instance's floating IP, dialled by the upstream.
	FloatingIP string
	// Interval is the message interval of the single streams (default 10ms).
	Interval time.Duration
	// Many is the number of tcp-many connections (default 1000).
	Many int
	// ManyInterval is how often each tcp-many connection sends (default 500ms).
	ManyInterval time.Duration
	// Port is the first of the six ports the servers use (default 47000).
	Port int
}

// FlowResult is what one kind of flow went through.
type FlowResult struct {
	Kind     string `json:"kind"`
	Survived bool   `json:"survived"`
	// Reset: a connection saw ECONNRESET, EPIPE or an EOF before Stop.
	Reset    bool `json:"reset"`
	Messages int  `json:"messages"` // received by the checking side
	// Lost: UDP, sequence numbers never echoed (those sent in the last
	// 200 ms before Stop excepted); TCP, numbers jumped over (must be 0).
	Lost       int `json:"lost"`
	OutOfOrder int `json:"out_of_order"`
	// LongestGapSeconds is the longest time between two consecutive
	// messages at the checking side (tcp-many: of any one connection).
	LongestGapSeconds float64 `json:"longest_gap_seconds"`
	// SourcePortChanged (udp): the upstream saw the flow from more than one
	// source address:port (the SNAT port changed).
	SourcePortChanged bool `json:"source_port_changed,omitempty"`
	// Broken (tcp-many): connections that reset, fell out of order, failed
	// or had been silent for more than max(3*ManyInterval, 3s) at Stop.
	Broken int    `json:"broken,omitempty"`
	Detail string `json:"detail,omitempty"` // the first error seen
}

const (
	flowStartTimeout = 30 * time.Second
	flowDialTimeout  = 10 * time.Second
	flowDialers      = 64 // concurrent tcp-many dials
	// flowWriteTimeout bounds each write: with the path down the send buffer
	// fills eventually, and a writer must not block forever.
	flowWriteTimeout = 30 * time.Second
	// flowReadPoll is the deadline of each read; a reader that hits it
	// just reads again (a silent path is not an error).
	flowReadPoll    = time.Second
	flowIdleTimeout = 5 * time.Second // tcp-idle's answer at Stop
	flowStopWait    = 3 * time.Second // for goroutines after every socket closed
)

// Port offsets of the kinds.
const (
	portClient = iota
	portPush
	portMany
	portUDP
	portFIP
	portIdle
)

// Flows are running flows; see StartFlows.
type Flows struct {
	o                 FlowOptions // with defaults
	vmIP, upIP, fipIP netip.Addr
	stopCh            chan struct{} // closed: writers stop
	stopping          atomic.Bool   // set before any socket is closed on purpose
	wg                sync.WaitGroup

	mu      sync.Mutex
	closers []io.Closer // every socket and listener
	closed  bool

	client, push, fip *flowSet
	many              *flowSet
	udp               udpFlow
	idle              idleFlow

	once    sync.Once // Stop
	results []FlowResult
}

// flowSet is the checking side of one TCP kind: one connTrack per connection
// (one for the single streams, Many for tcp-many).
type flowSet struct {
	kind   string
	mu     sync.Mutex
	conns  []connTrack
	detail string // the first error seen
}

func newFlowSet(kind string, n int) *flowSet {
	return &flowSet{kind: kind, conns: make([]connTrack, n)}
}

// attach lets a server-side reader claim connection id (from its first
// record), so that two sockets never feed one track.
func (s *flowSet) attach(id uint32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if int(id) >= len(s.conns) || s.conns[id].attached {
		return fmt.Errorf("unexpected connection id %d", id)
	}
	s.conns[id].attached = true
	return nil
}

func (s *flowSet) got(r record, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if int(r.id) < len(s.conns) {
		s.conns[r.id].add(r.seq, at)
	}
}

// fail records the error that ended connection id (-1: one not yet
// attached to an id).
func (s *flowSet) fail(id int, what string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id >= 0 && id < len(s.conns) {
		c := &s.conns[id]
		c.failed = true
		c.reset = c.reset || isReset(err)
		c.stalled = c.stalled || errors.Is(err, os.ErrDeadlineExceeded)
	}
	if s.detail == "" {
		s.detail = describe(what, err)
	}
}

// progress reports how many connections delivered at least need messages,
// and the first error if any connection failed already.
func (s *flowSet) progress(need int) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.conns {
		if c.failed {
			return n, errors.New(s.detail)
		}
		if c.n >= need {
			n++
		}
	}
	return n, nil
}

func (s *flowSet) snapshot() ([]connTrack, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]connTrack(nil), s.conns...), s.detail
}

// udpFlow is the UDP flow's state: the instance's track and the source
// addresses the upstream saw.
type udpFlow struct {
	vm, up  *net.UDPConn
	mu      sync.Mutex
	tr      udpTrack
	sources map[netip.AddrPort]bool
	detail  string
}

func (u *udpFlow) note(what string, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.detail == "" {
		u.detail = describe(what, err)
	}
}

// idleFlow is tcp-idle: vm is the instance's end, silent between the two
// exchanges.
type idleFlow struct {
	vm       net.Conn
	mu       sync.Mutex
	messages int
	reset    bool
	spoke    bool // the exchange at Stop worked
	detail   string
}

func (d *idleFlow) note(what string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.reset = d.reset || isReset(err)
	if d.detail == "" {
		d.detail = describe(what, err)
	}
}

// StartFlows starts every kind of flow and returns once each flows (the
// single streams and udp delivered 3 messages, every tcp-many connection
// one, tcp-idle its first exchange), within 30 s. On error everything it
// made is closed again.
func StartFlows(ctx context.Context, o FlowOptions) (*Flows, error) {
	f, err := newFlows(o)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, flowStartTimeout)
	defer cancel()
	if err := f.start(ctx); err != nil {
		f.shutdown()
		return nil, fmt.Errorf("start flows: %w", err)
	}
	return f, nil
}

func newFlows(o FlowOptions) (*Flows, error) {
	if o.InstanceNS == "" || o.UpstreamNS == "" {
		return nil, errors.New("flows: InstanceNS and UpstreamNS are required")
	}
	f := &Flows{stopCh: make(chan struct{})}
	var err error
	if f.upIP, err = netip.ParseAddr(o.UpstreamIP); err != nil || !f.upIP.Is4() {
		return nil, fmt.Errorf("flows: UpstreamIP %q: want an IPv4 address", o.UpstreamIP)
	}
	if f.fipIP, err = netip.ParseAddr(o.FloatingIP); err != nil || !f.fipIP.Is4() {
		return nil, fmt.Errorf("flows: FloatingIP %q: want an IPv4 address", o.FloatingIP)
	}
	if o.InstanceIP != "" {
		if f.vmIP, err = netip.ParseAddr(o.InstanceIP); err != nil || !f.vmIP.Is4() {
			return nil, fmt.Errorf("flows: InstanceIP %q: want an IPv4 address", o.InstanceIP)
		}
	}
	if o.Interval == 0 {
		o.Interval = 10 * time.Millisecond
	}
	if o.Many == 0 {
		o.Many = 1000
	}
	if o.ManyInterval == 0 {
		o.ManyInterval = defaultManyInterval
	}
	if o.Port == 0 {
		o.Port = 47000
	}
	if o.Interval < 0 || o.ManyInterval < 0 || o.Many < 0 {
		return nil, errors.New("flows: negative Interval, ManyInterval or Many")
	}
	if o.Port < 1 || o.Port+portIdle > 65535 {
		return nil, fmt.Errorf("flows: Port %d: the six ports from it must be valid", o.Port)
	}
	f.o = o
	f.client = newFlowSet("tcp-client", 1)
	f.push = newFlowSet("tcp-push", 1)
	f.fip = newFlowSet("tcp-fip", 1)
	f.many = newFlowSet("tcp-many", o.Many)
	f.udp.sources = map[netip.AddrPort]bool{}
	return f, nil
}

// track registers c to be closed by Stop; after shutdown began it closes c
// at once and reports false.
func (f *Flows) track(c io.Closer) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		c.Close()
		return false
	}
	f.closers = append(f.closers, c)
	return true
}

// shutdown stops the writers, closes every socket and waits (bounded) for
// the goroutines. Errors from here on are ours, not the network's.
func (f *Flows) shutdown() {
	f.stopping.Store(true)
	f.mu.Lock()
	if !f.closed {
		close(f.stopCh)
	}
	f.closed = true
	cs := f.closers
	f.closers = nil
	f.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
	done := make(chan struct{})
	go func() { f.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(flowStopWait):
	}
}

func (f *Flows) addr(ip netip.Addr, off int) netip.AddrPort {
	return netip.AddrPortFrom(ip, uint16(f.o.Port+off))
}

// start makes the sockets (listeners first, then dials, then accepts),
// starts every kind and waits until they flow. Whatever it made is in
// f.closers, for shutdown.
func (f *Flows) start(ctx context.Context) error {
	lc := net.ListenConfig{KeepAlive: -1}
	var lnClient, lnPush, lnMany, lnIdle, lnFIP net.Listener
	listen := func(ln *net.Listener, ap netip.AddrPort) error {
		l, err := lc.Listen(ctx, "tcp4", ap.String())
		if err != nil {
			return err
		}
		*ln = l
		f.track(l)
		return nil
	}
	udp := func(c **net.UDPConn, ap netip.AddrPort) error {
		u, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(ap))
		if err != nil {
			return err
		}
		*c = u
		f.track(u)
		return nil
	}
	if err := inNamespace(f.o.UpstreamNS, func() error {
		return errors.Join(
			listen(&lnClient, f.addr(f.upIP, portClient)),
			listen(&lnPush, f.addr(f.upIP, portPush)),
			listen(&lnMany, f.addr(f.upIP, portMany)),
			listen(&lnIdle, f.addr(f.upIP, portIdle)),
			udp(&f.udp.up, f.addr(f.upIP, portUDP)))
	}); err != nil {
		return fmt.Errorf("upstream %s: %w", f.o.UpstreamNS, err)
	}
	vmAny := netip.IPv4Unspecified()
	if err := inNamespace(f.o.InstanceNS, func() error {
		return errors.Join(
			listen(&lnFIP, f.addr(vmAny, portFIP)),
			udp(&f.udp.vm, netip.AddrPortFrom(orAny(f.vmIP), 0)))
	}); err != nil {
		return fmt.Errorf("instance %s: %w", f.o.InstanceNS, err)
	}
	f.wg.Go(func() { f.acceptMany(lnMany.(*net.TCPListener), deadlineOf(ctx)) })

	// Dial first and accept afterwards: a connection waits, established,
	// in the listener's backlog until accepted.
	var vmClient, vmPush, vmIdle, upFIP net.Conn
	if err := inNamespace(f.o.InstanceNS, func() error {
		var err error
		if vmClient, err = f.dial(ctx, f.vmIP, f.addr(f.upIP, portClient)); err != nil {
			return err
		}
		if vmPush, err = f.dial(ctx, f.vmIP, f.addr(f.upIP, portPush)); err != nil {
			return err
		}
		vmIdle, err = f.dial(ctx, f.vmIP, f.addr(f.upIP, portIdle))
		return err
	}); err != nil {
		return fmt.Errorf("instance %s: %w", f.o.InstanceNS, err)
	}
	if err := inNamespace(f.o.UpstreamNS, func() error {
		var err error
		upFIP, err = f.dial(ctx, netip.Addr{}, f.addr(f.fipIP, portFIP))
		return err
	}); err != nil {
		return fmt.Errorf("upstream %s: %w", f.o.UpstreamNS, err)
	}
	upClient, err := f.acceptOne(ctx, lnClient)
	if err != nil {
		return err
	}
	upPush, err := f.acceptOne(ctx, lnPush)
	if err != nil {
		return err
	}
	upIdle, err := f.acceptOne(ctx, lnIdle)
	if err != nil {
		return err
	}
	vmFIP, err := f.acceptOne(ctx, lnFIP)
	if err != nil {
		return err
	}
	f.runStream(f.client, vmClient, "instance write", upClient, "upstream read")
	f.runStream(f.push, upPush, "upstream write", vmPush, "instance read")
	f.runStream(f.fip, vmFIP, "instance write", upFIP, "upstream read")
	f.startIdle(vmIdle, upIdle)
	f.startUDP()
	if err := f.dialMany(ctx); err != nil {
		return err
	}
	return f.waitFlowing(ctx)
}

func orAny(a netip.Addr) netip.Addr {
	if a.IsValid() {
		return a
	}
	return netip.IPv4Unspecified()
}

func deadlineOf(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

// waitFlowing waits until every kind flows (see StartFlows) or one of them
// failed already.
func (f *Flows) waitFlowing(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		var pending []string
		for _, s := range []*flowSet{f.client, f.push, f.many, f.fip} {
			need, want := 3, 1
			if s == f.many {
				need, want = 1, f.o.Many
			}
			n, err := s.progress(need)
			if err != nil {
				return fmt.Errorf("%s failed while starting: %v", s.kind, err)
			}
			if n < want {
				pending = append(pending, fmt.Sprintf("%s: %d of %d connections delivered %d messages", s.kind, n, want, need))
			}
		}
		f.udp.mu.Lock()
		if f.udp.tr.n < 3 {
			pending = append(pending, fmt.Sprintf("udp: %d echoes (%s)", f.udp.tr.n, orNone(f.udp.detail)))
		}
		f.udp.mu.Unlock()
		f.idle.mu.Lock()
		if f.idle.messages < 1 {
			pending = append(pending, "tcp-idle: "+orNone(f.idle.detail))
		}
		f.idle.mu.Unlock()
		if len(pending) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not flowing: %s", strings.Join(pending, "; "))
		case <-t.C:
		}
	}
}

// Idle does nothing: tcp-idle is silent by itself between StartFlows and
// Stop. It marks the phase in a caller's code.
func (f *Flows) Idle() {}

// Stop makes tcp-idle speak (before anything else closes, so that it meets
// the path as the other flows left it), stops every flow, closes every
// socket and listener, and returns one result per kind in FlowKinds order.
// It takes at most about 10 s however broken the path is. Calling it again
// returns the same results.
func (f *Flows) Stop(ctx context.Context) []FlowResult {
	f.once.Do(func() {
		stopAt := time.Now()
		f.speakIdle(ctx)
		f.shutdown()
		f.results = f.judge(stopAt)
	})
	return f.results
}

// speakIdle is tcp-idle's exchange at Stop: the answer must come within
// flowIdleTimeout (or by ctx's end).
func (f *Flows) speakIdle(ctx context.Context) {
	d := &f.idle
	deadline := time.Now().Add(flowIdleTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	unwatch := context.AfterFunc(ctx, func() { d.vm.SetDeadline(time.Now()) })
	defer unwatch()
	if err := exchange(d.vm, 2, deadline); err != nil {
		d.note("tcp-idle: exchange at Stop", err)
		return
	}
	d.mu.Lock()
	d.messages++
	d.spoke = true
	d.mu.Unlock()
}

// judge turns what the checking sides saw into results.
func (f *Flows) judge(stopAt time.Time) []FlowResult {
	stream := func(s *flowSet) FlowResult {
		conns, detail := s.snapshot()
		return streamResult(s.kind, conns[0], detail, stopAt, f.o.Interval)
	}
	conns, detail := f.many.snapshot()
	many := manyResult(conns, detail, stopAt, manyStallAfter(f.o.ManyInterval))

	f.udp.mu.Lock()
	var sources []string
	for ap := range f.udp.sources {
		sources = append(sources, ap.String())
	}
	sort.Strings(sources)
	udp := udpResult(&f.udp.tr, sources, f.udp.detail, stopAt, f.o.Interval)
	f.udp.mu.Unlock()

	d := &f.idle
	d.mu.Lock()
	idle := FlowResult{Kind: "tcp-idle", Survived: d.spoke && !d.reset, Reset: d.reset, Messages: d.messages, Detail: d.detail}
	d.mu.Unlock()

	byKind := map[string]FlowResult{
		"tcp-client": stream(f.client), "tcp-push": stream(f.push), "tcp-many": many,
		"udp": udp, "tcp-fip": stream(f.fip), "tcp-idle": idle,
	}
	out := make([]FlowResult, 0, len(FlowKinds))
	for _, k := range FlowKinds {
		out = append(out, byKind[k])
	}
	return out
}
