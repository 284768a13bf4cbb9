package neutronlocal

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ProbeInterval is how often a Prober pings.
const ProbeInterval = 50 * time.Millisecond

// Prober pings from an instance continuously and records when replies
// come (the kernel's receive time, ping -D, so that the pipe's buffering
// does not blur the gaps).
type Prober struct {
	cmd     *exec.Cmd
	mu      sync.Mutex
	replies []time.Time
	done    chan struct{}
}

// StartProber pings target from in every ProbeInterval until Stop.
func StartProber(ctx context.Context, in *Instance, target netip.Addr) (*Prober, error) {
	p := &Prober{done: make(chan struct{})}
	p.cmd = in.Command(ctx, "ping", "-n", "-D", "-i", fmt.Sprintf("%.3f", ProbeInterval.Seconds()), "-W", "1", target.String())
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting ping in %s: %w", in.Namespace(), err)
	}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			if !strings.HasPrefix(line, "[") || !strings.Contains(line, "bytes from") {
				continue
			}
			ts, _, _ := strings.Cut(line[1:], "]")
			f, err := strconv.ParseFloat(ts, 64)
			if err != nil {
				continue
			}
			p.mu.Lock()
			p.replies = append(p.replies, time.Unix(0, int64(f*1e9)))
			p.mu.Unlock()
		}
	}()
	return p, nil
}

// Stop ends the pings (idempotent).
func (p *Prober) Stop() {
	if p.cmd.Process != nil {
		_ = p.cmd.Process.Kill()
	}
	<-p.done
	_ = p.cmd.Wait()
}

// FirstReplyAfter is the first reply received after t.
func (p *Prober) FirstReplyAfter(t time.Time) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.replies {
		if r.After(t) {
			return r, true
		}
	}
	return time.Time{}, false
}

// LastReplyBefore is the last reply received before t.
func (p *Prober) LastReplyBefore(t time.Time) (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var last time.Time
	for _, r := range p.replies {
		if r.Before(t) {
			last = r
		}
	}
	return last, !last.IsZero()
}

// LongestGap is the longest time without a reply between from and to.
func (p *Prober) LongestGap(from, to time.Time) time.Duration {
	_, gap := p.LongestGapAt(from, to)
	return gap
}

// LongestGapAt is LongestGap with the time of the last reply before the
// gap (from, if the gap starts there).
func (p *Prober) LongestGapAt(from, to time.Time) (start time.Time, gap time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	prev := from
	start = from
	for _, r := range p.replies {
		if r.Before(from) || r.After(to) {
			continue
		}
		if d := r.Sub(prev); d > gap {
			start, gap = prev, d
		}
		prev = r
	}
	if d := to.Sub(prev); d > gap {
		start, gap = prev, d
	}
	return start, gap
}

// Lost is how many probes went unanswered between from and to.
func (p *Prober) Lost(from, to time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, r := range p.replies {
		if !r.Before(from) && !r.After(to) {
			n++
		}
	}
	return max(0, int(to.Sub(from)/ProbeInterval)-n)
}

// HAStates is the router's ha_state per host, as GET
// /v2.0/routers/{id}/l3-agents shows it.
func HAStates(ctx context.Context, n *Neutron, routerID string) (map[string]string, error) {
	agents, err := n.RouterL3Agents(ctx, routerID)
	if err != nil {
		return nil, err
	}
	m := make(map[string]string)
	for _, a := range agents {
		m[a.Host] = a.HAState
	}
	return m, nil
}

// ActiveHosts are the hosts whose state is active, sorted.
func ActiveHosts(states map[string]string) []string {
	var hosts []string
	for h, s := range states {
		if s == "active" {
			hosts = append(hosts, h)
		}
	}
	slices.Sort(hosts)
	return hosts
}

// WaitPing waits until a ping from in reaches the upstream host (30 s).
func WaitPing(ctx context.Context, in *Instance) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		out, err := in.Command(ctx, "ping", "-n", "-c", "1", "-W", "1", UpstreamIP.String()).CombinedOutput()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
	}
}
