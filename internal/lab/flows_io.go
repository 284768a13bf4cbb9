package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"
)

// The socket work of the flows (see flows.go): dialling and accepting,
// the writers and the checking readers of each kind.

// dial connects to dst from the calling thread's namespace (call it inside
// inNamespace), bound to local if valid, with a timeout and no keepalives.
func (f *Flows) dial(ctx context.Context, local netip.Addr, dst netip.AddrPort) (net.Conn, error) {
	d := net.Dialer{Timeout: flowDialTimeout, Deadline: deadlineOf(ctx), KeepAlive: -1}
	if local.IsValid() {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(local, 0))
	}
	c, err := d.Dial("tcp4", dst.String())
	if err != nil {
		return nil, err
	}
	if !f.track(c) {
		return nil, net.ErrClosed
	}
	c.(*net.TCPConn).SetNoDelay(true)
	return c, nil
}

// acceptOne accepts the single connection of a stream and closes ln.
func (f *Flows) acceptOne(ctx context.Context, ln net.Listener) (net.Conn, error) {
	defer ln.Close()
	tl := ln.(*net.TCPListener)
	tl.SetDeadline(deadlineOf(ctx))
	c, err := tl.AcceptTCP()
	if err != nil {
		return nil, fmt.Errorf("accept on %s: %w", ln.Addr(), err)
	}
	if !f.track(c) {
		return nil, net.ErrClosed
	}
	c.SetNoDelay(true)
	return c, nil
}

// runStream starts a stream's writer on w and its checking reader on r.
func (f *Flows) runStream(s *flowSet, w net.Conn, wWhat string, r net.Conn, rWhat string) {
	f.wg.Go(func() {
		if err := f.writeEvery(w, 0, 0, f.o.Interval); err != nil {
			s.fail(0, s.kind+": "+wWhat, err)
		}
	})
	f.wg.Go(func() {
		err := f.readRecords(r, func(rec record, at time.Time) error {
			if rec.id != 0 {
				return fmt.Errorf("unexpected connection id %d", rec.id)
			}
			s.got(rec, at)
			return nil
		})
		if err != nil {
			s.fail(0, s.kind+": "+rWhat, err)
		}
	})
}

// writeEvery writes a sequenced record to c every interval, the first after
// phase, until the flows stop (nil) or a write fails (its error; a write
// deadline means the path stalled).
func (f *Flows) writeEvery(c net.Conn, id uint32, phase, interval time.Duration) error {
	select {
	case <-time.After(phase):
	case <-f.stopCh:
		return nil
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	buf := make([]byte, recordSize)
	for seq := uint64(1); ; seq++ {
		now := time.Now()
		record{id: id, seq: seq, sent: now.UnixNano()}.put(buf)
		c.SetWriteDeadline(now.Add(flowWriteTimeout))
		if _, err := c.Write(buf); err != nil {
			if f.stopping.Load() {
				return nil
			}
			return err // after a partial write the stream is out of step: stop
		}
		select {
		case <-t.C:
		case <-f.stopCh:
			return nil
		}
	}
}

// readRecords reads records from c and hands each to got with its arrival
// time, until the flows stop (nil), c fails or got returns an error. A read
// deadline just means nothing arrived yet: the partial record is kept.
func (f *Flows) readRecords(c net.Conn, got func(record, time.Time) error) error {
	buf := make([]byte, recordSize)
	have := 0
	for {
		if f.stopping.Load() {
			return nil
		}
		c.SetReadDeadline(time.Now().Add(flowReadPoll))
		n, err := c.Read(buf[have:])
		have += n
		if have == recordSize {
			at := time.Now()
			have = 0
			r, perr := parseRecord(buf)
			if perr == nil {
				perr = got(r, at)
			}
			if perr != nil {
				return perr
			}
		}
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			if f.stopping.Load() {
				return nil
			}
			return err
		}
	}
}

// acceptMany accepts the tcp-many connections and starts a checking reader
// on each; the reader learns its connection's id from the first record.
func (f *Flows) acceptMany(ln *net.TCPListener, deadline time.Time) {
	defer ln.Close()
	ln.SetDeadline(deadline)
	for range f.o.Many {
		c, err := ln.AcceptTCP()
		if err != nil {
			if !f.stopping.Load() {
				f.many.fail(-1, "tcp-many: accept", err)
			}
			return
		}
		if !f.track(c) {
			return
		}
		c.SetNoDelay(true)
		f.wg.Go(func() {
			id := -1
			err := f.readRecords(c, func(r record, at time.Time) error {
				if id < 0 {
					if err := f.many.attach(r.id); err != nil {
						return err
					}
					id = int(r.id)
				}
				if int(r.id) != id {
					return fmt.Errorf("connection %d sent id %d", id, r.id)
				}
				f.many.got(r, at)
				return nil
			})
			if err != nil {
				f.many.fail(id, fmt.Sprintf("tcp-many: connection %d: upstream read", id), err)
			}
		})
	}
}

// dialMany opens the tcp-many connections, flowDialers at a time: each
// dialer enters the instance's namespace once and dials its share there.
// Writers' phases are spread evenly over ManyInterval.
func (f *Flows) dialMany(ctx context.Context) error {
	ids := make(chan int, f.o.Many)
	for i := range f.o.Many {
		ids <- i
	}
	close(ids)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, flowDialers)
	var wg sync.WaitGroup
	for range min(flowDialers, f.o.Many) {
		wg.Go(func() {
			errs <- inNamespace(f.o.InstanceNS, func() error {
				for id := range ids {
					if ctx.Err() != nil {
						return nil
					}
					c, err := f.dial(ctx, f.vmIP, f.addr(f.upIP, portMany))
					if err != nil {
						cancel()
						return fmt.Errorf("tcp-many: connection %d: %w", id, err)
					}
					phase := f.o.ManyInterval * time.Duration(id) / time.Duration(f.o.Many)
					f.wg.Go(func() {
						if err := f.writeEvery(c, uint32(id), phase, f.o.ManyInterval); err != nil {
							f.many.fail(id, fmt.Sprintf("tcp-many: connection %d: instance write", id), err)
						}
					})
				}
				return nil
			})
		})
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

// startUDP runs the UDP flow: the upstream echoes every datagram to where
// it came from and notes that address; the instance sends from its one
// socket and counts the echoes.
func (f *Flows) startUDP() {
	u := &f.udp
	upAddr := f.addr(f.upIP, portUDP)
	f.wg.Go(func() { // upstream echo
		buf := make([]byte, 1500)
		for !f.stopping.Load() {
			u.up.SetReadDeadline(time.Now().Add(flowReadPoll))
			n, from, err := u.up.ReadFromUDPAddrPort(buf)
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					continue
				}
				if !f.stopping.Load() {
					u.note("udp: upstream read", err)
				}
				return
			}
			u.mu.Lock()
			u.sources[from] = true
			u.mu.Unlock()
			u.up.SetWriteDeadline(time.Now().Add(flowWriteTimeout))
			if _, err := u.up.WriteToUDPAddrPort(buf[:n], from); err != nil && !f.stopping.Load() {
				u.note("udp: upstream echo", err) // a lost echo, not the end
			}
		}
	})
	f.wg.Go(func() { // instance receiver
		buf := make([]byte, 1500)
		for !f.stopping.Load() {
			u.vm.SetReadDeadline(time.Now().Add(flowReadPoll))
			n, from, err := u.vm.ReadFromUDPAddrPort(buf)
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					continue
				}
				if !f.stopping.Load() {
					u.note("udp: instance read", err)
				}
				return
			}
			r, err := parseRecord(buf[:n])
			if err != nil || from.Addr().Unmap() != upAddr.Addr() || from.Port() != upAddr.Port() {
				continue // not an echo of ours
			}
			u.mu.Lock()
			u.tr.echo(r.seq, time.Now())
			u.mu.Unlock()
		}
	})
	f.wg.Go(func() { // instance sender
		t := time.NewTicker(f.o.Interval)
		defer t.Stop()
		buf := make([]byte, recordSize)
		dst := net.UDPAddrFromAddrPort(upAddr)
		for seq := uint64(1); ; seq++ {
			now := time.Now()
			record{seq: seq, sent: now.UnixNano()}.put(buf)
			// Noted as sent before it leaves, so that no echo precedes it.
			u.mu.Lock()
			u.tr.send(seq, now)
			u.mu.Unlock()
			u.vm.SetWriteDeadline(now.Add(flowWriteTimeout))
			if _, err := u.vm.WriteToUDP(buf, dst); err != nil && !f.stopping.Load() {
				// The socket stays: the datagram is lost, the flow goes on.
				u.note("udp: instance send", err)
			}
			select {
			case <-t.C:
			case <-f.stopCh:
				return
			}
		}
	})
}

// startIdle makes tcp-idle's first exchange (synchronously: StartFlows
// waits for it anyway) and runs the upstream's echo.
func (f *Flows) startIdle(vm, up net.Conn) {
	d := &f.idle
	d.vm = vm
	f.wg.Go(func() {
		buf := make([]byte, recordSize)
		err := f.readRecords(up, func(r record, _ time.Time) error {
			r.put(buf)
			up.SetWriteDeadline(time.Now().Add(flowWriteTimeout))
			_, err := up.Write(buf)
			return err
		})
		if err != nil {
			d.note("tcp-idle: upstream", err)
		}
	})
	if err := exchange(vm, 1, time.Now().Add(flowIdleTimeout)); err != nil {
		d.note("tcp-idle: first exchange", err)
		return
	}
	d.mu.Lock()
	d.messages++
	d.mu.Unlock()
}

// exchange writes record seq on c and reads the echo, all before deadline.
func exchange(c net.Conn, seq uint64, deadline time.Time) error {
	buf := make([]byte, recordSize)
	record{seq: seq, sent: time.Now().UnixNano()}.put(buf)
	c.SetDeadline(deadline)
	if _, err := c.Write(buf); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	r, err := parseRecord(buf)
	if err == nil && r.seq != seq {
		err = fmt.Errorf("echo of %d, want %d", r.seq, seq)
	}
	return err
}
