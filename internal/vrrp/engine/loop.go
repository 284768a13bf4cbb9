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
	// stale are addresses and devices of earlier specs still to clean up,
	// handed to the next job.
	staleAddrs []Address
	staleDevs  []string

	drops                      *dropCounts
	received, sent, sendErrors uint64
	lastSendErrLog             time.Time
	lastDropLog                time.Time
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
			waits := e.stop(resign)
			go func() {
				c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				_ = waitAll(c, waits)
				e.apply.stop(c)
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
		e.perform(r, r.m.Tick(now), now, performOpts{})
		if r.hidx == 0 && !r.at.After(now) {
			// A machine that stays due would spin the loop; it never
			// should, but a loop that serves every router must not trust it.
			e.log.Error("VRRP machine did not advance its deadline; unscheduled", "router_id", r.spec.ID, "deadline", r.at)
			heap.Remove(&e.timers, 0)
		}
	}
}

// schedule puts r in the heap at its machine's next deadline.
func (e *Engine) schedule(r *router) {
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
	e.metrics.received.Inc()
	e.perform(r, acts, now, performOpts{})
}

type performOpts struct {
	always     bool // hand a job to the applier even if nothing changed
	noReport   bool // report no state (the router is being removed)
	reportDown bool // report a master that stops (resigns) as backup
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
		case vrrp.StateChanged:
			e.log.Info("VRRP transition", "router_id", r.spec.ID,
				"from", a.From.String(), "to", a.To.String(), "cause", string(a.Cause))
			e.metrics.transitions.WithLabelValues(a.To.String()).Inc()
			switch {
			case o.noReport:
			case a.To == vrrp.Master || a.To == vrrp.Backup:
				report, need = true, true
			case a.From == vrrp.Master && o.reportDown:
				report, need, state = true, true, vrrp.Backup
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
		staleAddrs: r.staleAddrs,
		staleDevs:  r.staleDevs,
	}
	r.staleAddrs, r.staleDevs = nil, nil
	return e.apply.submit(r.spec.ID, j)
}

func (e *Engine) send(r *router, p vrrp.Packet, now time.Time) {
	b, err := vrrp.Marshal(p, r.spec.Address.Addr(), vrrp.Group)
	if err == nil {
		err = r.sock.send(b)
	}
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

// stop ends the loop after this request. With resign every router goes as
// in remove; without, sockets close and nothing else happens.
func (e *Engine) stop(resign bool) []chan error {
	var wait []chan error
	for _, r := range e.routers {
		if resign {
			wait = append(wait, e.remove(r, true)...)
			continue
		}
		r.sock.close()
		r.rx.close()
		delete(e.routers, r.spec.ID)
	}
	e.timers = nil
	e.mu.Lock()
	e.stopped = true
	e.mu.Unlock()
	return wait
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
