package lab

// The benchmarks' lab: bringing it up and down (fast), its agents
// (admin state, stop, restart), profiles of an agent, and parallelDo.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// benchLab is a lab brought up by a benchmark, with its routers.
type benchLab struct {
	began   time.Time
	o       *Options
	st      *State
	api     *apiClient
	pubID   string
	subnet  string
	agents  map[string]apiAgent // by host
	routers []benchRouter
}

// benchRouter is one router of a benchmark.
type benchRouter struct {
	ID      string
	Gateway netip.Addr
	MAC     net.HardwareAddr // of its gateway port (the same on every node)
}

// upBenchLab brings the benchmark's lab up; a lab of that name must not
// exist.
func upBenchLab(ctx context.Context, o *Options) (*benchLab, error) {
	began := time.Now()
	st, err := Up(ctx, *o)
	if err != nil {
		return nil, err
	}
	b := &benchLab{began: began, o: o, st: st, api: apiFor(st)}
	if err := b.refreshAgents(ctx); err != nil {
		b.api.close()
		_ = b.down(true)
		return nil, err
	}
	return b, nil
}

// sayf reports progress, with the time since the lab began to come up.
func (b *benchLab) sayf(format string, args ...any) {
	b.o.sayf("[%6.1fs] "+format, append([]any{time.Since(b.began).Seconds()}, args...)...)
}

// finish ends a benchmark's use of its lab: down (keeping the logs if
// *err), or kept if keep; a failed teardown joins *err.
func (b *benchLab) finish(keep bool, err *error) {
	b.api.close()
	if keep {
		b.sayf("lab %q kept: `l3ha lab down --name %s` removes it", b.o.Name, b.o.Name)
		return
	}
	if derr := b.down(*err != nil); derr != nil {
		*err = errors.Join(*err, fmt.Errorf("lab down: %w", derr))
	}
}

// down removes the lab (keeping its logs when asked): fastTeardown, then
// Down for what is left.
func (b *benchLab) down(keepLogs bool) error {
	b.sayf("tearing lab %q down", b.o.Name)
	b.fastTeardown()
	err := Down(DownOptions{Name: b.o.Name, Dir: b.o.Dir, KeepLogs: keepLogs, Out: io.Discard})
	b.sayf("lab %q is down", b.o.Name)
	if keepLogs {
		b.sayf("logs kept in %s", filepath.Join(b.o.Dir, "logs"))
	}
	return err
}

// fastTeardown ends the lab the quick way: every process of the lab is
// killed (SIGKILL: nothing graceful is measured any more) and its router and
// node namespaces are unmounted without first deleting their devices one by
// one, which Down does and which, with a few thousand devices (500 routers:
// two veths each, and an HA network bridge and VXLAN device per router and
// node), takes minutes of RCU grace periods. The kernel destroys unmounted
// namespaces and their devices in batches; fastTeardown waits until a
// device can be made and deleted quickly again in the lab's external
// switch namespace (which it keeps, for Down), so that the next run does
// not compete with that clean-up.
func (b *benchLab) fastTeardown() {
	for _, p := range b.st.Processes {
		_ = p.signal(syscall.SIGKILL)
	}
	nss, _ := existingNamespaces(b.o.Name)
	inodes := map[uint64]bool{}
	for _, ns := range nss {
		if ino := nsInode(ns); ino != 0 {
			inodes[ino] = true
		}
	}
	inLab := func(pid int) bool {
		ino, ok := netnsOfPID(pid)
		return ok && inodes[ino]
	}
	for range 3 {
		pids := pidsInNamespaces(inodes)
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			if inLab(pid) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			left := 0
			for _, pid := range pids {
				if alive(pid) && inLab(pid) {
					left++
				}
			}
			if left == 0 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, p := range b.st.Processes {
		for i := 0; i < 250 && p.running(); i++ {
			time.Sleep(20 * time.Millisecond)
		}
	}
	probeNS := NodeNamespace(b.o.Name, externalNS)
	for _, ns := range nss {
		if ns == probeNS {
			continue
		}
		_ = unix.Unmount(nsPath(ns), unix.MNT_DETACH)
		_ = os.Remove(nsPath(ns))
	}
	deadline := time.Now().Add(90 * time.Second)
	quick := 0
	for quick < 2 && time.Now().Before(deadline) {
		began := time.Now()
		err := withHandle(probeNS, func(h *netlink.Handle) error {
			d := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "benchprobe"}}
			if err := h.LinkAdd(d); err != nil {
				return err
			}
			return h.LinkDel(d)
		})
		if err != nil {
			break // no probe: leave it to Down
		}
		if time.Since(began) < 50*time.Millisecond {
			quick++
		} else {
			quick = 0
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (b *benchLab) refreshAgents(ctx context.Context) error {
	list, err := b.api.agents(ctx)
	if err != nil {
		return err
	}
	b.agents = map[string]apiAgent{}
	for _, a := range list {
		b.agents[a.Host] = a
	}
	for _, n := range Nodes {
		if n.Network {
			if _, ok := b.agents[n.Name]; !ok {
				return fmt.Errorf("no agent of %s in the API", n.Name)
			}
		}
	}
	return nil
}

// setAdmin sets host's agent admin_state_up (admin-up auto-schedules the
// routers that lack agents onto it).
func (b *benchLab) setAdmin(ctx context.Context, host string, up bool) error {
	a := b.agents[host]
	err := b.api.do(ctx, http.MethodPut, "/v2.0/agents/"+a.ID, map[string]any{"agent": map[string]any{"admin_state_up": up}}, nil)
	if err != nil {
		return fmt.Errorf("setting %s admin_state_up %v: %w", host, up, err)
	}
	return nil
}

// respawnAgent stops node's agent (SIGTERM) and starts it again with extra
// arguments; lab.json records the new process.
func (b *benchLab) respawnAgent(ctx context.Context, node string, extra ...string) error {
	p, err := b.stopAgent(ctx, node)
	if err != nil {
		return err
	}
	return b.startAgent(node, append(append([]string{}, p.Argv...), extra...))
}

// stopAgent stops node's agent (SIGTERM) and waits until it has exited; it
// returns the process as lab.json recorded it.
func (b *benchLab) stopAgent(ctx context.Context, node string) (Process, error) {
	p, ok := b.st.process("agent-" + node)
	if !ok {
		return p, fmt.Errorf("no agent of %s recorded", node)
	}
	if err := p.signal(syscall.SIGTERM); err != nil {
		return p, err
	}
	return p, waitFor(ctx, agentExitTimeout, "agent-"+node+" to exit", func() (bool, error) { return !p.running(), nil })
}

// startAgent starts node's agent with argv and records it.
func (b *benchLab) startAgent(node string, argv []string) error {
	p, _ := b.st.process("agent-" + node)
	np, _, err := startDaemon(p.Name, p.Node, p.Namespace, argv, p.Log)
	if err != nil {
		return err
	}
	b.st.setProcess(np)
	return b.st.Save()
}

// parallelDo runs fn(0..n-1) on workers goroutines; the first error stops
// the handing out of more work and is returned.
func parallelDo(ctx context.Context, n, workers int, fn func(i int) error) error {
	var (
		mu    sync.Mutex
		next  int
		first error
		wg    sync.WaitGroup
	)
	for range min(workers, n) {
		wg.Go(func() {
			for {
				mu.Lock()
				if first != nil || next >= n || ctx.Err() != nil {
					if first == nil && ctx.Err() != nil {
						first = ctx.Err()
					}
					mu.Unlock()
					return
				}
				i := next
				next++
				mu.Unlock()
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return first
}

// fetchProfile takes a CPU profile and, at the same time, an execution
// trace (path + ".trace": `go tool trace -pprof=syscall|sched|sync` shows
// where the agent waited) of node's agent (started with --pprof-bind) for
// the given seconds and writes them to path.
func (b *benchLab) fetchProfile(ctx context.Context, node string, secs int, path string) error {
	errc := make(chan error, 1)
	go func() { errc <- b.fetchPprof(ctx, node, "trace", secs, path+".trace") }()
	return errors.Join(b.fetchPprof(ctx, node, "profile", secs, path), <-errc)
}

// fetchPprof fetches /debug/pprof/<kind>?seconds=secs from node's agent
// into path.
func (b *benchLab) fetchPprof(ctx context.Context, node, kind string, secs int, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	c := &http.Client{Transport: &http.Transport{DialContext: nsDialer(NodeNamespace(b.o.Name, node))}, Timeout: time.Duration(secs+30) * time.Second}
	defer c.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/%s?seconds=%d", pprofPort, kind, secs), nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 500))
		return fmt.Errorf("%s of agent-%s: HTTP %d: %s", kind, node, resp.StatusCode, msg)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
