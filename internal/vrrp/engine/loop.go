package engine

import (
	"container/heap"
	"context"
	"fmt"
	"time"

	"github.com/l3ha/l3ha/internal/vrrp"
)

// router is the loop's state of one virtual router. Only the loop touches
// it; the receive goroutine of its socket sees only its rxQueue.
type router struct {
	spec Router
	m    *vrrp.Machine
	sock *socket
	rx   *rxQueue

	hidx int       // index in the timer heap, -1 if not in it
	at   time.Time // deadline the heap is ordered by

	// installed is whether the machine last asked for the addresses.
	installed bool
	adopted   bool
	// cause is why the router entered the state it is reported in (see
	// perform); heard whether its machine accepted an advert of a live
	// master since it last started.
	cause vrrp.Cause
	heard bool
	// handover is set while the router, a master resigning in a graceful
	// Shutdown, waits for a backup to take over (see startHandover).
	handover *handover
	// fault is set while the ha- device is down (see enterFault); sendFailed
	// when the last advert could not be sent; lateGrace while a backup
	// whose Master_Down_Timer fired late waits one more interval (see
	// fireDue).
	fault, sendFailed, lateGrace bool
	// unhealthy is the last SetHealthy, applied to every machine the
	// router gets.
	unhealthy bool
	// stale are addresses and devices of earlier specs still to clean up,
	// handed to the next job.
	staleAddrs []Address
	staleDevs  []string

	drops                      *dropCounts
	received, sent, sendErrors uint64
	// lastAdvert is the last advert sent.
	lastAdvert     vrrp.Packet
	lastSendErrLog time.Time
	lastDropLog    time.Time
}

// rxRound and rxBudget bound the loop's work on received packets: at most
// rxRound packets per router per round (so that a flooded router cannot
// starve another) and rxBudget per wake-up before timers are looked at again.
const (
	rxRound  = 4
	rxBudget = 256
)

// run is the event loop.
func (e *Engine) run(ctx context.Context) {
	defer close(e.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		e.fireDue(time.Now())
		if e.exiting() {
			return // the last handover of a graceful Shutdown ended
		}
		var tc <-chan time.Time
		if len(e.timers) > 0 {
			// Since Go 1.23 Reset discards a stale expiry: no drain needed.
			timer.Reset(time.Until(e.timers[0].at))
			tc = timer.C
		}
		select {
		case f := <-e.reqs:
			f()
			if e.exiting() {
				return
			}
		case <-e.rxWake:
			e.drainRx()
		case <-tc:
		case <-ctx.Done():
			resign := e.opts.ResignOnCancel
			e.log.Info("VRRP engine stopping", "resign", resign)
			waits := e.stop(resign, false)
			go func() {
				c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				_ = waitAll(c, waits)
				e.apply.stop(c)
				e.garp.stop()
			}()
			return
		}
	}
}

func (e *Engine) exiting() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.stopped
}

// fireDue ticks every machine whose deadline has come.
func (e *Engine) fireDue(now time.Time) {
	for len(e.timers) > 0 && !e.timers[0].at.After(now) {
		r := e.timers[0]
		if r.handover != nil {
			e.endHandover(r, now)
			continue
		}
		if r.fault {
			e.faultTick(r, now)
			continue
		}
		if r.m.State() == vrrp.Backup {
			// Master_Down_Timer ran out. Before the backup elects itself:
			if e.catchUp(r) && r.at.After(now) {
				continue // the master's adverts were there, unread
			}
			if late := now.Sub(r.at); !r.lateGrace && late > e.lateLimit() {
				e.log.Info("VRRP Master_Down_Timer fired late: this process was not running; one more advert interval for the master",
					"router_id", r.spec.ID, "late", late.Round(time.Millisecond))
				r.lateGrace = true
				e.setTimer(r, now.Add(r.m.Status().MasterAdverInterval))
				continue
			}
			if !e.linkUp(r) {
				// It ran out because the ha- device is down, not because
				// the master is: a master that can neither hear nor be
				// heard would split the brain.
				e.enterFault(r, now)
				continue
			}
		}
		r.lateGrace = false
		e.perform(r, r.m.Tick(now), now, performOpts{})
		if r.sendFailed && r.m.State() == vrrp.Master && !e.linkUp(r) {
			e.enterFault(r, now)
			continue
		}
		if r.hidx == 0 && !r.at.After(now) {
			// A machine that stays due would spin the loop; it never
			// should, but a loop that serves every router must not trust it.
			e.log.Error("VRRP machine did not advance its deadline; unscheduled", "router_id", r.spec.ID, "deadline", r.at)
			heap.Remove(&e.timers, 0)
		}
	}
}

// schedule puts r in the heap at its machine's next deadline. A router in
// fault keeps the engine's own timer (setTimer).
func (e *Engine) schedule(r *router) {
	if r.fault {
		return
	}
	at := r.m.NextDeadline()
	switch {
	case at.IsZero():
		if r.hidx >= 0 {
			heap.Remove(&e.timers, r.hidx)
		}
	case r.hidx >= 0:
		if !at.Equal(r.at) {
			r.at = at
			heap.Fix(&e.timers, r.hidx)
		}
	default:
		r.at = at
		heap.Push(&e.timers, r)
	}
}

// drainRx hands queued packets to their machines, round-robin.
func (e *Engine) drainRx() {
	e.readyMu.Lock()
	list := e.ready
	e.ready = nil
	e.readyMu.Unlock()
	budget := rxBudget
	var buf []rxPacket
	for len(list) > 0 && budget > 0 {
		var again []*rxQueue
		for _, q := range list {
			var more bool
			buf, more = q.take(buf[:0], rxRound)
			if more {
				again = append(again, q)
			}
			r := q.r
			if e.routers[r.spec.ID] != r || r.rx != q {
				continue // removed, or its socket replaced
			}
			for _, p := range buf {
				e.receive(r, p)
			}
			budget -= len(buf)
		}
		list = again
		e.fireDue(time.Now())
	}
	if len(list) > 0 {
		e.readyMu.Lock()
		e.ready = append(list, e.ready...)
		e.readyMu.Unlock()
		poke(e.rxWake)
	}
}

func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (e *Engine) receive(r *router, p rxPacket) {
	now := time.Now()
	if r.handover != nil {
		e.handoverReceive(r, p, now)
		return
	}
	wasMaster := r.m.State() == vrrp.Master
	acts, err := r.m.Receive(now, p.src, p.ttl, p.p)
	if err != nil {
		reason := vrrp.ReasonOf(err)
		r.drops.add(reason)
		if now.Sub(r.lastDropLog) > 10*time.Second {
			r.lastDropLog = now
			e.log.Debug("VRRP packet dropped", "router_id", r.spec.ID, "reason", reason, "err", err)
		}
		// A drop changes nothing in the machine; no reschedule needed.
		return
	}
	r.received++
	r.lateGrace = false
	if p.p.Priority != vrrp.PriorityResign {
		r.heard = true
	}
	e.metrics.received.Inc()
	if wasMaster && r.m.State() == vrrp.Master {
		// Another router advertised while we are master, and we stay
		// master: it resigned (priority 0), or it lost to us (a split brain
		// healing, a restart that took longer than Master_Down_Interval).
		// It held, or just gave up, the same addresses with the same MACs,
		// and the switches may now send their traffic to it: announce ours
		// again, as keepalived does ("we just refresh remote ARP cache").
		// The resigning master of a graceful handover sends its second
		// priority-0 advert for this once its addresses are gone.
		acts = append(acts, vrrp.SendGratuitousARP{})
	}
	c := e.perform(r, acts, now, performOpts{})
	if wasMaster && r.m.State() == vrrp.Backup && c != nil && r.lastAdvert.Priority > 0 {
		// We yielded to a better master (a split brain healing): once our
		// addresses are gone, say so with a priority-0 advert, which the
		// winner answers with an advert and gratuitous ARP (above). Without
		// it, a winner whose advert reached us first never hears from us,
		// and the traffic we drew to ourselves while we were master stays
		// with us, to be dropped, until the hosts' ARP entries expire.
		resign := r.lastAdvert
		resign.Priority = vrrp.PriorityResign
		sock, src := r.sock, r.spec.Address.Addr()
		go func() {
			select {
			case <-c:
			case <-time.After(10 * time.Second):
				return
			}
			if b, err := vrrp.Marshal(resign, src, vrrp.Group); err == nil && sock.send(b) == nil {
				e.metrics.sent.Inc()
			}
		}()
	}
}

type performOpts struct {
	always     bool // hand a job to the applier even if nothing changed
	noReport   bool // report no state (the router is being removed)
	reportDown bool // report a master that stops (resigns) as backup
	// cause, if set, replaces the machine's cause of a stop (CauseFault).
	cause vrrp.Cause
}

// perform carries out a machine's actions: adverts are sent at once, the
// data-plane work is handed to the applier as one job, and r is rescheduled.
func (e *Engine) perform(r *router, acts []vrrp.Action, now time.Time, o performOpts) chan error {
	need, garp, report := o.always, false, false
	state := r.m.State()
	for _, a := range acts {
		switch a := a.(type) {
		case vrrp.SendAdvert:
			e.send(r, a.Packet, now)
		case vrrp.InstallAddresses:
			r.installed, need = true, true
		case vrrp.RemoveAddresses:
			r.installed, need, garp = false, true, false
		case vrrp.SendGratuitousARP:
			garp, need = true, true
		case vrrp.SplitBrainWon:
			msg := "split brain: another node advertised as master; this node stays master, the loser steps down; announcing the addresses again"
			if a.LoserPriority == vrrp.PriorityResign {
				msg = "another node stepped down from master on hearing this one (a healed split brain, or a switchover); this node stays master; announcing the addresses again"
			}
			e.log.Warn(msg, "router_id", r.spec.ID, "vrid", r.spec.VRID, "loser", a.Loser.String(), "loser_priority", a.LoserPriority)
		case vrrp.StateChanged:
			cause := e.causeOf(r, a, o)
			e.log.Info("VRRP transition", "router_id", r.spec.ID,
				"from", a.From.String(), "to", a.To.String(), "cause", string(cause))
			e.metrics.transitions.WithLabelValues(a.To.String()).Inc()
			switch {
			case o.noReport:
			case a.To == vrrp.Master || a.To == vrrp.Backup:
				report, need, r.cause = true, true, cause
			case a.From == vrrp.Master && o.reportDown:
				report, need, state, r.cause = true, true, vrrp.Backup, cause
			}
		}
	}
	e.schedule(r)
	if !need {
		return nil
	}
	j := &job{
		spec:       r.spec,
		install:    r.installed,
		garp:       garp && r.installed,
		report:     report,
		suppress:   o.noReport,
		state:      state,
		cause:      r.cause,
		staleAddrs: r.staleAddrs,
		staleDevs:  r.staleDevs,
	}
	r.staleAddrs, r.staleDevs = nil, nil
	return e.apply.submit(r.spec.ID, j)
}

// causeOf is why a transition happened, as reported: the machine's cause,
// except that a backup electing itself without having heard a master
// since it started does so at startup, not because a master went down,
// and that o may name the cause of a stop.
func (e *Engine) causeOf(r *router, a vrrp.StateChanged, o performOpts) vrrp.Cause {
	if a.From == vrrp.Initialize {
		r.heard = false
	}
	switch {
	case a.To == vrrp.Master && a.Cause == vrrp.CauseMasterDown && !r.heard:
		return vrrp.CauseStartup
	case a.To == vrrp.Initialize && o.cause != "":
		return o.cause
	}
	return a.Cause
}

func (e *Engine) send(r *router, p vrrp.Packet, now time.Time) {
	b, err := vrrp.Marshal(p, r.spec.Address.Addr(), vrrp.Group)
	if err == nil {
		err = r.sock.send(b)
	}
	r.sendFailed = err != nil
	if err != nil {
		r.sendErrors++
		e.metrics.sendErrors.Inc()
		if now.Sub(r.lastSendErrLog) > 10*time.Second {
			r.lastSendErrLog = now
			e.log.Warn("sending VRRP advert", "router_id", r.spec.ID, "device", r.spec.Device, "err", err)
		}
		return
	}
	r.sent++
	e.metrics.sent.Inc()
	r.lastAdvert = p
}

// attach gives r a new socket (closing the old one) and starts its receive
// goroutine.
func (e *Engine) attach(r *router, s *socket) {
	if r.sock != nil {
		r.sock.close()
		r.rx.close()
	}
	r.sock = s
	r.rx = newRxQueue(r, e.opts.QueueLen)
	go e.receiveLoop(r.rx, s, r.drops, int(r.spec.VRID), e.opts.Version)
}

// ensure is Engine.Ensure's work in the loop. sock is nil when the router's
// current socket is still right.
func (e *Engine) ensure(spec Router, sock *socket, vipPresent bool) error {
	now := time.Now()
	cfg := e.opts.machineConfig(spec)
	r := e.routers[spec.ID]
	if r == nil {
		if sock == nil {
			return fmt.Errorf("vrrp engine: router %s: no socket", spec.ID)
		}
		m, err := vrrp.New(cfg)
		if err != nil {
			if sock != nil {
				sock.close()
			}
			return err
		}
		r = &router{spec: spec, m: m, hidx: -1, drops: e.metrics.newDropCounts()}
		e.routers[spec.ID] = r
		e.attach(r, sock)
		mode, start := vrrp.StartBackup, now.Add(spec.StartDelay)
		if vipPresent {
			// The node is master already (an agent restart): advertise at
			// once, touch nothing. The job below still converges the
			// excluded addresses and routes, in case they changed while no
			// engine ran; what is right stays untouched.
			mode, r.adopted, r.installed, start = vrrp.StartMaster, true, true, now
		}
		e.log.Info("VRRP router started", "router_id", spec.ID, "namespace", spec.Namespace,
			"device", spec.Device, "vrid", spec.VRID, "adopted", r.adopted, "start_delay", start.Sub(now))
		e.perform(r, m.Start(start, mode), now, performOpts{always: true})
		return nil
	}
	old := r.spec
	if sock != nil {
		e.attach(r, sock)
	}
	if old.VRID != spec.VRID || old.Address.Addr() != spec.Address.Addr() || old.VIP.Addr() != spec.VIP.Addr() {
		// What the group agrees on changed: the old instance stops (a
		// master resigns and gives its addresses up), a new one starts.
		m, err := vrrp.New(cfg)
		if err != nil {
			return err
		}
		e.perform(r, r.m.Shutdown(now), now, performOpts{noReport: true})
		r.m, r.installed, r.adopted = m, false, false
		m.SetHealthy(now, !r.unhealthy) // before Start: no actions
		if r.fault {
			// Started afresh; a device still down faults it again.
			r.fault = false
			if r.hidx >= 0 {
				heap.Remove(&e.timers, r.hidx)
			}
		}
		r.addStale(old, spec)
		r.spec = spec
		e.log.Info("VRRP router restarted for a new VRID, address or VIP", "router_id", spec.ID)
		e.perform(r, m.Start(now, vrrp.StartBackup), now, performOpts{always: true})
		return nil
	}
	r.addStale(old, spec)
	r.spec = spec
	// Converge again: new excluded addresses or routes, or drift repair.
	e.perform(r, nil, now, performOpts{always: true})
	return nil
}

// addStale records what old had and spec has not.
func (r *router) addStale(old, spec Router) {
	if old.Device != spec.Device || old.VIP != spec.VIP {
		r.staleAddrs = append(r.staleAddrs, Address{Dev: old.Device, Prefix: old.VIP})
	}
	for _, a := range old.Excluded {
		if a.Dev == old.Device || a.Dev == spec.Device {
			if !spec.hasExcluded(a) {
				r.staleAddrs = append(r.staleAddrs, a)
			}
			continue
		}
		if !spec.hasExcludedDev(a.Dev) {
			r.staleDevs = append(r.staleDevs, a.Dev)
		}
	}
}

// remove stops r in the loop: a master resigns, everything it installed is
// removed (the returned channels say when), its socket closes.
func (e *Engine) remove(r *router, resign bool) []chan error {
	now := time.Now()
	var wait []chan error
	if c := e.perform(r, r.m.Shutdown(now), now, performOpts{always: true, noReport: !resign, reportDown: resign}); c != nil {
		wait = append(wait, c)
	}
	if r.hidx >= 0 {
		heap.Remove(&e.timers, r.hidx)
	}
	r.sock.close()
	r.rx.close()
	delete(e.routers, r.spec.ID)
	e.log.Info("VRRP router stopped", "router_id", r.spec.ID)
	return wait
}

// stop ends the loop: at once, or with handover once the last master has
// handed over. With resign every router goes as in remove, except that with
// handover a master first waits for a backup to take over (startHandover);
// without resign, sockets close and nothing else happens. Handovers still
// running when stop is called again end at once.
func (e *Engine) stop(resign, handover bool) []chan error {
	var wait []chan error
	now := time.Now()
	for _, r := range e.routers {
		switch {
		case r.handover != nil:
			e.endHandover(r, now) // its channel is the first stop's
		case resign && handover && r.installed && r.m.State() == vrrp.Master:
			wait = append(wait, e.startHandover(r, now))
		case resign:
			wait = append(wait, e.remove(r, true)...)
		default:
			if r.m.State() == vrrp.Master && r.lastAdvert.Priority > 0 {
				// Stopping for a restart: one advert more, so that the
				// backups count their Master_Down_Interval from now, not
				// from up to an interval ago, and (VRRPv3) with
				// RestartAdvertInterval, which they adopt: the next
				// engine, which adopts the master, has three of those to
				// start, not three adverts of 0.1 s. Its first advert sets
				// the interval back.
				// A paced v2 master breaks its pace instead (vrrp.Config.Pace):
				// its l3ha backups wait Neutron's Master_Down_Interval.
				p := r.lastAdvert
				switch {
				case e.opts.Version == 3:
					p.MaxAdvertInterval = uint16(e.opts.RestartAdvertInterval / (10 * time.Millisecond))
				case e.opts.Pace > 0:
					p.AdvertInterval = vrrp.PaceBreakInterval(e.opts.AdvertInterval)
				}
				e.send(r, p, now)
			}
			r.sock.close()
			r.rx.close()
			delete(e.routers, r.spec.ID)
		}
	}
	if e.handovers == 0 {
		e.timers = nil
		e.markStopped()
	}
	return wait
}

func (e *Engine) markStopped() {
	e.mu.Lock()
	e.stopped = true
	e.mu.Unlock()
}

// handover is a resigning master's wait for its successor. Removing the
// addresses together with the priority-0 advert (RFC 5798 §6.4.3) leaves
// nobody forwarding for Skew_Time plus the new master's own data-plane work:
// at 0.1 s adverts some 80-100 ms, five or six lost packets of a 16 ms ping.
// So the resigning master sends its priority-0 advert, keeps its addresses
// and routes and goes on forwarding, and gives them up only once it has
// heard the new master's advert and HandoverGrace has passed (the new
// master's addresses and gratuitous ARP are being installed meanwhile; both
// nodes carry the same MACs, so holding them on both for a moment is
// harmless), or when no backup took over within Master_Down_Interval (a
// backup that missed the priority-0 advert) plus HandoverGrace. When its
// addresses are gone it sends a second priority-0 advert: the new master
// answers it with an advert and a gratuitous ARP, which pulls back any
// traffic that the old master's last forwarded packets drew to it in the
// bridges' forwarding tables.
type handover struct {
	resign vrrp.Packet   // the priority-0 advert
	rest   []vrrp.Action // the machine's Shutdown actions still to perform
	start  time.Time
	heard  bool // the new master's advert arrived
	done   chan error
}

// startHandover makes a master resign but keep forwarding; the returned
// channel receives the outcome once its addresses are gone.
func (e *Engine) startHandover(r *router, now time.Time) chan error {
	h := &handover{start: now, done: make(chan error, 1)}
	for _, a := range r.m.Shutdown(now) {
		if sa, ok := a.(vrrp.SendAdvert); ok {
			e.send(r, sa.Packet, now)
			h.resign = sa.Packet
			continue
		}
		h.rest = append(h.rest, a)
	}
	r.handover = h
	e.handovers++
	e.setTimer(r, now.Add(e.handoverLimit()))
	e.log.Info("VRRP master resigning: forwarding until a backup takes over", "router_id", r.spec.ID)
	return h.done
}

// handoverLimit is how long a resigning master waits at most: a backup that
// missed the priority-0 advert takes over Master_Down_Interval after the
// last regular advert, which was less than an interval before.
func (e *Engine) handoverLimit() time.Duration {
	unit := e.opts.AdvertInterval
	if e.opts.Version == 2 {
		unit = time.Second
	}
	skew := time.Duration(256-int64(e.opts.Priority)) * unit / 256
	return 3*e.opts.AdvertInterval + skew + e.opts.HandoverGrace
}

// handoverReceive: the first advert of another router with a priority above
// 0 is the new master's; the addresses go HandoverGrace later.
func (e *Engine) handoverReceive(r *router, p rxPacket, now time.Time) {
	h := r.handover
	if h.heard || p.p.Priority == vrrp.PriorityResign || p.src == r.spec.Address.Addr() {
		return
	}
	h.heard = true
	e.log.Info("VRRP new master heard by the resigning master", "router_id", r.spec.ID, "master", p.src.String(),
		"after", now.Sub(h.start).Round(time.Millisecond))
	if at := now.Add(e.opts.HandoverGrace); at.Before(r.at) {
		e.setTimer(r, at)
	}
}

// endHandover removes a resigning master's addresses and then the router:
// the rest of remove's work, and the second priority-0 advert.
func (e *Engine) endHandover(r *router, now time.Time) {
	h := r.handover
	r.handover = nil
	e.handovers--
	if r.hidx >= 0 {
		heap.Remove(&e.timers, r.hidx)
	}
	if !h.heard {
		e.log.Warn("VRRP resigning master heard no new master; giving the addresses up", "router_id", r.spec.ID,
			"after", now.Sub(h.start).Round(time.Millisecond))
	}
	c := e.perform(r, h.rest, now, performOpts{always: true, reportDown: true})
	sock, src := r.sock, r.spec.Address.Addr()
	r.rx.close()
	delete(e.routers, r.spec.ID)
	e.log.Info("VRRP router stopped", "router_id", r.spec.ID)
	go func() {
		err := <-c
		if b, merr := vrrp.Marshal(h.resign, src, vrrp.Group); merr == nil && sock.send(b) == nil {
			e.metrics.sent.Inc()
		}
		sock.close()
		h.done <- err
	}()
	if e.handovers == 0 {
		e.timers = nil
		e.markStopped()
	}
}

// A loaded node can leave the engine's process without a CPU for longer than
// Master_Down_Interval (0.38 s at 0.1 s adverts): when it runs again, every
// backup's Master_Down_Timer has expired at once, while the adverts that
// should have reset them wait, unread, in the sockets. Electing itself then
// is a flap (and two masters until the tie-break). So a backup whose timer
// ran out first reads what has arrived for it (catchUp); and if the timer
// fired much later than due (lateLimit), which says this process was not
// running, not that the master is gone (a master stalled by the same load
// may not have sent yet either), it gives the master one more advert
// interval, once, before it takes over.

// catchUp hands r's machine what has arrived for it that the loop has not
// seen: its queue, and what still waits in its socket. It reports whether
// there was anything.
func (e *Engine) catchUp(r *router) bool {
	got := false
	var pkts []rxPacket
	for {
		var more bool
		pkts, more = r.rx.take(pkts[:0], rxBudget)
		for _, p := range pkts {
			e.receive(r, p)
			got = true
		}
		if !more {
			break
		}
	}
	buf := make([]byte, rxBufSize)
	for range rxBudget {
		n, err := r.sock.recvNow(buf)
		if err != nil {
			break
		}
		p, reason := decode(buf, n, int(r.spec.VRID), e.opts.Version)
		if reason != "" {
			r.drops.add(reason)
			continue
		}
		e.receive(r, p)
		got = true
	}
	return got
}

// lateLimit is how late a Master_Down_Timer may fire before the loop takes
// it for a stall of its own.
func (e *Engine) lateLimit() time.Duration { return max(e.opts.sendInterval()/2, 50*time.Millisecond) }

// A router whose ha- device is down is in fault, as keepalived's FAULT
// state: it cannot hear its peers nor be heard, so as a master it would keep
// the addresses a backup elsewhere takes over (two masters, and the wrong
// one, the higher ha- address, keeping the router when the device comes
// back), and as a backup it would elect itself. So a master whose advert
// cannot be sent, or a backup whose Master_Down_Timer runs out, first looks
// at its ha- device; if it is down the router stops (a master gives up its
// addresses and is reported standby) and looks again every advert interval
// (at most every second); once the device is up it starts as a backup.
// Detection takes at most one advert interval on a master; keepalived,
// which follows link events, is immediate.

// linkUp tells whether r's ha- device is up and running.
func (e *Engine) linkUp(r *router) bool {
	up, err := r.sock.linkUp()
	if err != nil {
		e.log.Warn("reading the ha- device's state", "router_id", r.spec.ID, "device", r.spec.Device, "err", err)
	}
	return up
}

// enterFault stops r's machine until its ha- device is up again.
func (e *Engine) enterFault(r *router, now time.Time) {
	e.log.Warn("VRRP fault: ha- device down; no VRRP and no addresses until it is up", "router_id", r.spec.ID,
		"device", r.spec.Device, "state", r.m.State().String())
	acts := r.m.Shutdown(now)
	r.fault = true
	e.perform(r, acts, now, performOpts{always: true, reportDown: true, cause: CauseFault})
	e.setTimer(r, now.Add(e.faultPoll()))
}

// faultTick looks at a faulted router's ha- device again.
func (e *Engine) faultTick(r *router, now time.Time) {
	if !e.linkUp(r) {
		e.setTimer(r, now.Add(e.faultPoll()))
		return
	}
	e.log.Info("VRRP fault over: ha- device up; starting as backup", "router_id", r.spec.ID, "device", r.spec.Device)
	r.fault = false
	if r.hidx >= 0 {
		heap.Remove(&e.timers, r.hidx)
	}
	e.perform(r, r.m.Start(now, vrrp.StartBackup), now, performOpts{always: true})
}

func (e *Engine) faultPoll() time.Duration { return min(e.opts.sendInterval(), time.Second) }

// setTimer puts r in the timer heap at a time of the engine's own (not its
// machine's deadline).
func (e *Engine) setTimer(r *router, at time.Time) {
	r.at = at
	if r.hidx >= 0 {
		heap.Fix(&e.timers, r.hidx)
	} else {
		heap.Push(&e.timers, r)
	}
}

// timerHeap orders routers by deadline.
type timerHeap []*router

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].hidx, h[j].hidx = i, j
}
func (h *timerHeap) Push(x any) {
	r := x.(*router)
	r.hidx = len(*h)
	*h = append(*h, r)
}
func (h *timerHeap) Pop() any {
	old := *h
	r := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	r.hidx = -1
	return r
}
