package ctsync

import (
	"errors"
	"net"
	"sync"
	"testing"
	"time"
)

// fakeTable is a conntrack table in memory.
type fakeTable struct {
	mu      sync.Mutex
	flows   map[Key]Flow
	dumps   int
	inserts int
}

func newFakeTable(fs ...Flow) *fakeTable {
	t := &fakeTable{flows: map[Key]Flow{}}
	for _, f := range fs {
		t.flows[f.Key()] = f
	}
	return t
}

func (t *fakeTable) Dump() ([]Flow, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.dumps++
	var out []Flow
	for _, f := range t.flows {
		out = append(out, f)
	}
	return out, nil
}
func (t *fakeTable) Install(f Flow) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.inserts++
	t.flows[f.Key()] = f
	return nil
}
func (t *fakeTable) Delete(f Flow) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.flows, f.Key())
	return nil
}
func (t *fakeTable) Close() error { return nil }
func (t *fakeTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.flows)
}

// fakeLink records what is sent and delivers what a test injects.
type fakeLink struct {
	mu     sync.Mutex
	sent   []Message
	in     chan []byte
	closed chan struct{}
	once   sync.Once
}

func newFakeLink() *fakeLink {
	return &fakeLink{in: make(chan []byte, 16), closed: make(chan struct{})}
}

func (l *fakeLink) Send(b []byte) error {
	m, err := Decode(b)
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.sent = append(l.sent, m)
	l.mu.Unlock()
	return nil
}
func (l *fakeLink) Receive(buf []byte) (int, error) {
	select {
	case b := <-l.in:
		return copy(buf, b), nil
	case <-l.closed:
		return 0, net.ErrClosed
	}
}
func (l *fakeLink) Close() error { l.once.Do(func() { close(l.closed) }); return nil }
func (l *fakeLink) kinds() map[Kind]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[Kind]int{}
	for _, m := range l.sent {
		out[m.Kind] += len(m.Flows)
		if m.Kind == KindResync {
			out[m.Kind]++
		}
	}
	return out
}

// fakeChanges is a conntrack event subscription fed by the test.
type fakeChanges struct {
	c    chan change
	errs chan error
}

func (f *fakeChanges) Changes() <-chan change { return f.c }
func (f *fakeChanges) Errors() <-chan error   { return f.errs }
func (f *fakeChanges) Close() error           { return nil }

var testRouter = [16]byte{0xab}

func startFake(t *testing.T, tbl *fakeTable) (*Syncer, *fakeLink, chan *fakeChanges) {
	t.Helper()
	l := newFakeLink()
	subs := make(chan *fakeChanges, 4)
	s := start(Config{RouterID: "r", VRID: 1, HANet: haNet, FlushInterval: time.Millisecond, RefreshInterval: time.Hour}, testRouter, tbl, l,
		func() (changes, error) {
			c := &fakeChanges{c: make(chan change, 16), errs: make(chan error, 1)}
			subs <- c
			return c, nil
		})
	t.Cleanup(func() { s.Close() })
	return s, l, subs
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func datagram(t *testing.T, k Kind, router [16]byte, fs ...Flow) []byte {
	t.Helper()
	d, err := Encode(Message{Kind: k, Router: router, Flows: fs}, 0)
	if err != nil {
		t.Fatal(err)
	}
	return d[0]
}

func TestSyncerBackupInstallsAndDeletesTheMastersFlows(t *testing.T) {
	tbl := newFakeTable()
	s, l, _ := startFake(t, tbl)
	eventually(t, "the starting backup's resync request", func() bool { return l.kinds()[KindResync] == 1 })
	l.in <- datagram(t, KindFlows, testRouter, tcpFlow(1), tcpFlow(2))
	eventually(t, "two installs", func() bool { return tbl.len() == 2 })
	l.in <- datagram(t, KindDeletes, testRouter, tcpFlow(1))
	eventually(t, "one delete", func() bool { return tbl.len() == 1 })
	l.in <- datagram(t, KindFlows, [16]byte{0xcd}, tcpFlow(3)) // another router's
	l.in <- []byte("garbage")
	l.in <- datagram(t, KindFlows, testRouter, tcpFlow(4))
	eventually(t, "the next good datagram", func() bool { return tbl.len() == 2 })
	if st := s.Stats(); st.Installed != 3 || st.Deleted != 1 || st.BadDatagrams != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSyncerMasterSendsItsTableEventsAndAnswersResync(t *testing.T) {
	tbl := newFakeTable(tcpFlow(1), tcpFlow(2))
	s, l, subs := startFake(t, tbl)
	s.SetMaster(true)
	sub := <-subs
	eventually(t, "the table sent on becoming master", func() bool { return l.kinds()[KindFlows] == 2 })
	sub.c <- change{flow: tcpFlow(3)}
	sub.c <- change{flow: tcpFlow(2), ended: true}
	eventually(t, "the events sent", func() bool { k := l.kinds(); return k[KindFlows] == 3 && k[KindDeletes] == 1 })
	// A flow on the HA network is not sent.
	onHA := tcpFlow(9)
	onHA.Orig.Src = haNet.Addr()
	sub.c <- change{flow: onHA}
	// A backup asks: the whole table again.
	l.in <- datagram(t, KindResync, testRouter)
	eventually(t, "the table sent again", func() bool { return l.kinds()[KindFlows] == 5 })
	// The master ignores another node's flows (split brain: its own rule).
	l.in <- datagram(t, KindFlows, testRouter, tcpFlow(7))
	l.in <- datagram(t, KindResync, testRouter)
	eventually(t, "the third table", func() bool { return l.kinds()[KindFlows] == 7 })
	if tbl.inserts != 0 {
		t.Fatalf("the master installed %d flows", tbl.inserts)
	}
}

func TestSyncerLostEventsSendTheWholeTable(t *testing.T) {
	tbl := newFakeTable(tcpFlow(1))
	s, l, subs := startFake(t, tbl)
	s.SetMaster(true)
	sub := <-subs
	eventually(t, "the first table", func() bool { return l.kinds()[KindFlows] == 1 })
	sub.errs <- errors.New("netlink receive: no buffer space available")
	<-subs // subscribed again
	eventually(t, "the table after the overrun", func() bool { return l.kinds()[KindFlows] == 2 })
}

func TestSyncerBecomingBackupStopsSendingAndAsksForTheTable(t *testing.T) {
	tbl := newFakeTable(tcpFlow(1))
	s, l, subs := startFake(t, tbl)
	s.SetMaster(true)
	sub := <-subs
	eventually(t, "the table", func() bool { return l.kinds()[KindFlows] == 1 })
	s.SetMaster(false)
	eventually(t, "a resync request", func() bool { return l.kinds()[KindResync] == 2 })
	select {
	case sub.c <- change{flow: tcpFlow(5)}:
	default:
	}
	l.in <- datagram(t, KindFlows, testRouter, tcpFlow(6))
	eventually(t, "the install as backup", func() bool { return tbl.len() == 2 })
	if k := l.kinds(); k[KindFlows] != 1 {
		t.Fatalf("a backup sent flows: %v", k)
	}
}

func TestSyncerIdleMasterWithAnEmptyTableSkipsTheRefreshDump(t *testing.T) {
	tbl := newFakeTable()
	l := newFakeLink()
	subs := make(chan *fakeChanges, 4)
	s := start(Config{RouterID: "r", VRID: 1, HANet: haNet, FlushInterval: time.Millisecond, RefreshInterval: 5 * time.Millisecond}, testRouter, tbl, l,
		func() (changes, error) {
			c := &fakeChanges{c: make(chan change, 16), errs: make(chan error, 1)}
			subs <- c
			return c, nil
		})
	defer s.Close()
	s.SetMaster(true)
	sub := <-subs
	dumps := func() int { tbl.mu.Lock(); defer tbl.mu.Unlock(); return tbl.dumps }
	eventually(t, "the table dumped on becoming master", func() bool { return dumps() == 1 })
	time.Sleep(50 * time.Millisecond) // ten refresh intervals, nothing happening
	if n := dumps(); n != 1 {
		t.Fatalf("%d dumps of an empty, quiet table", n)
	}
	// A new connection: the next refresh dumps again (and keeps dumping
	// while the table is not empty).
	tbl.Install(tcpFlow(1))
	sub.c <- change{flow: tcpFlow(1)}
	eventually(t, "refreshes of a table with a flow", func() bool { return dumps() >= 3 })
}

func TestSyncerRefreshRenewsOnlyFlowsThatCouldExpireButSometimesAll(t *testing.T) {
	tcp := tcpFlow(1) // established: 5 days
	udp := tcpFlow(2)
	udp.Proto, udp.TCPState, udp.Timeout = ProtoUDP, 0, 120
	tbl := newFakeTable(tcp, udp)
	l := newFakeLink()
	s := start(Config{RouterID: "r", VRID: 1, HANet: haNet, FlushInterval: time.Millisecond, RefreshInterval: 20 * time.Millisecond}, testRouter, tbl, l,
		func() (changes, error) { return &fakeChanges{c: make(chan change), errs: make(chan error)}, nil })
	defer s.Close()
	s.SetMaster(true)
	// On becoming master both go; then refreshes: the UDP flow each time,
	// the TCP flow only with every tenth (full) one.
	eventually(t, "ten refreshes", func() bool { return s.Stats().TablesSent >= 11 })
	s.Close()
	var tcpSent, udpSent int
	l.mu.Lock()
	for _, m := range l.sent {
		for _, f := range m.Flows {
			if f.Proto == ProtoTCP {
				tcpSent++
			} else {
				udpSent++
			}
		}
	}
	l.mu.Unlock()
	tables := int(s.Stats().TablesSent)
	if udpSent != tables {
		t.Errorf("the UDP flow went out %d times in %d tables, want every time", udpSent, tables)
	}
	if want := 1 + (tables-1)/fullRefreshEvery; tcpSent != want {
		t.Errorf("the TCP flow went out %d times in %d tables, want %d (on becoming master, then every %dth refresh)", tcpSent, tables, want, fullRefreshEvery)
	}
}
