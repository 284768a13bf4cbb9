package ctsync

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/l3ha/l3ha/internal/kerneltest"
)

// BenchmarkSyncUnderLoad.

// The load generator and its server run in processes of their own (this
// test binary again, in the client and server namespaces), so that this
// process's CPU time is the syncers' alone.
const (
	loadEnv     = "L3HA_CTSYNC_LOAD" // "client" or "server"
	loadAddrEnv = "L3HA_CTSYNC_LOAD_ADDR"
	loadRateEnv = "L3HA_CTSYNC_LOAD_RATE"
	loadDurEnv  = "L3HA_CTSYNC_LOAD_DURATION"
	loadPort    = 5003
	loadConc    = 64 // connections in flight at most
	loadMarker  = "CTSYNC-LOAD "
)

// loadResult is what the load generator reports.
type loadResult struct {
	OK, Failed int
	Elapsed    time.Duration // from the first connection to the last one's end
	CPU        time.Duration // the generator's own
	FirstErr   string
}

func (r loadResult) rate() float64 { return float64(r.OK) / r.Elapsed.Seconds() }

// TestCtsyncLoadProcess is the load generator or its server when the
// benchmark starts this binary as one (L3HA_CTSYNC_LOAD set); otherwise it
// does nothing.
func TestCtsyncLoadProcess(t *testing.T) {
	addr := os.Getenv(loadAddrEnv)
	switch os.Getenv(loadEnv) {
	case "":
		return
	case "server":
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Println(loadMarker + "ready")
		// Until the benchmark closes our stdin (or dies).
		go func() { io.Copy(io.Discard, os.Stdin); ln.Close() }()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				c.SetDeadline(time.Now().Add(5 * time.Second))
				io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	case "client":
		rate, _ := strconv.Atoi(os.Getenv(loadRateEnv))
		dur, _ := time.ParseDuration(os.Getenv(loadDurEnv))
		n := int(float64(rate) * dur.Seconds())
		var ok, failed atomic.Int64
		var firstErr atomic.Value
		sem := make(chan struct{}, loadConc)
		var wg sync.WaitGroup
		start := time.Now()
		for i := range n {
			if d := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))); d > 0 {
				time.Sleep(d)
			}
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				c, err := net.DialTimeout("tcp", addr, 3*time.Second)
				if err == nil {
					_, err = c.Write([]byte("l3ha ctsync\n"))
					c.Close()
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					return
				}
				ok.Add(1)
			})
		}
		wg.Wait()
		res := loadResult{OK: int(ok.Load()), Failed: int(failed.Load()), Elapsed: time.Since(start)}
		if e, _ := firstErr.Load().(string); e != "" {
			res.FirstErr = e
		}
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		res.CPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		out, _ := json.Marshal(res)
		fmt.Println(loadMarker + string(out))
	}
}

// loadProcess starts this binary as the load generator's role in ns.
func loadProcess(tb testing.TB, ns, role string, env ...string) (*exec.Cmd, io.WriteCloser, <-chan string) {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, exe, "-test.run=^TestCtsyncLoadProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), append([]string{loadEnv + "=" + role,
		loadAddrEnv + "=" + netip.AddrPortFrom(serverIP, loadPort).String()}, env...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	lines := make(chan string, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if s, ok := strings.CutPrefix(sc.Text(), loadMarker); ok {
				lines <- s
			}
		}
	}()
	var once sync.Once
	tb.Cleanup(func() {
		once.Do(func() {
			stdin.Close()
			done := make(chan struct{})
			go func() { cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				cmd.Process.Kill()
				<-done
			}
			if tb.Failed() && stderr.Len() > 0 {
				tb.Logf("%s load process: %s", role, stderr.String())
			}
		})
	})
	return cmd, stdin, lines
}

// loadRun is one run of the load through a pair.
type loadRun struct {
	load          loadResult
	window        time.Duration
	used          usage // over the window
	masterEntries int
}

const (
	loadRate     = 1000
	loadDuration = 10 * time.Second
	loadDrain    = time.Second // after the load, in the window: the sync catches up
)

// runLoad runs the load from the client to the server through p's master
// and measures the CPU of this process, the machine and pids over it.
func runLoad(b *testing.B, p *pair, pids func() []int) loadRun {
	b.Helper()
	_, _, ready := loadProcess(b, p.server, "server")
	select {
	case s := <-ready:
		if s != "ready" {
			b.Fatalf("load server: %q", s)
		}
	case <-time.After(10 * time.Second):
		b.Fatal("the load server did not start")
	}
	var run loadRun
	u0, err := sample(pids())
	if err != nil {
		b.Fatal(err)
	}
	client, _, results := loadProcess(b, p.client, "client",
		fmt.Sprintf("%s=%d", loadRateEnv, loadRate), loadDurEnv+"="+loadDuration.String())
	res, ok := <-results
	if !ok {
		client.Wait()
		b.Fatal("the load generator reported nothing")
	}
	if err := json.Unmarshal([]byte(res), &run.load); err != nil {
		b.Fatal(err)
	}
	time.Sleep(loadDrain)
	u1, err := sample(pids())
	if err != nil {
		b.Fatal(err)
	}
	run.used = u1.sub(u0)
	run.window = u1.at.Sub(u0.at)
	if run.load.Failed > 0 {
		b.Logf("%d connections failed, the first: %s", run.load.Failed, run.load.FirstErr)
	}
	run.masterEntries = tableEntries(b, p.routers[0])
	b.Logf("load: %d connections in %s (%.0f/s), %d failed, generator CPU %s; master table %d flows; window %s: this process %s, machine %.1f%% of a core",
		run.load.OK, run.load.Elapsed.Round(time.Millisecond), run.load.rate(), run.load.Failed, run.load.CPU.Round(time.Millisecond),
		run.masterEntries, run.window.Round(time.Millisecond), run.used.self.Round(time.Millisecond), pct(run.used.sys, run.window))
	b.ReportMetric(run.load.rate(), "conn/s")
	b.ReportMetric(float64(run.masterEntries), "master-entries")
	b.ReportMetric(pct(run.used.sys, run.window), "machine-cpu-%")
	return run
}

// tableEntries counts the flows of ns's conntrack table that the sync
// carries (everything but the HA network's).
func tableEntries(tb testing.TB, ns string) int {
	tb.Helper()
	t, err := OpenTable(ns)
	if err != nil {
		tb.Fatal(err)
	}
	defer t.Close()
	flows, err := t.Dump()
	if err != nil {
		tb.Fatal(err)
	}
	n := 0
	for _, f := range flows {
		if Synchronised(f, haNet) {
			n++
		}
	}
	return n
}

// waitEntries waits up to d for ns's table to hold want flows, and returns
// how many it holds.
func waitEntries(tb testing.TB, ns string, want int, d time.Duration) int {
	deadline := time.Now().Add(d)
	for {
		n := tableEntries(tb, ns)
		if n >= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// BenchmarkSyncUnderLoad: 1000 new connections per second for 10 s through
// an HA router's master, without sync, with the Syncers and with conntrackd,
// each on a fresh pair.
func BenchmarkSyncUnderLoad(b *testing.B) {
	kerneltest.Require(b, "conntrackd", "ip")
	const vrid = 7
	noPIDs := func() []int { return nil }
	var none *loadRun
	var nativeCPU float64
	b.Run("none", func(b *testing.B) {
		b.ReportMetric(0, "ns/op")
		p := newPair(b)
		run := runLoad(b, p, noPIDs)
		none = &run
		b.ReportMetric(pct(run.used.self, run.window), "process-cpu-%")
	})
	b.Run("native", func(b *testing.B) {
		b.ReportMetric(0, "ns/op")
		p := newPair(b)
		id := uuid.NewString()
		var syncers [2]*Syncer
		for i, r := range p.routers {
			s, err := Start(Config{RouterID: id, Namespace: r, HADevice: "ha0", VRID: vrid, HANet: haNet})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			syncers[i] = s
		}
		syncers[0].SetMaster(true)
		time.Sleep(time.Second)
		run := runLoad(b, p, noPIDs)
		backup := waitEntries(b, p.routers[1], run.masterEntries, 5*time.Second)
		ms, bs := syncers[0].Stats(), syncers[1].Stats()
		raw := pct(run.used.self, run.window)
		nativeCPU = raw
		if none != nil {
			nativeCPU = raw - pct(none.used.self, none.window)
		}
		b.Logf("native: this process %.2f%% of a core under load (without syncers %.2f%%); master sent %d flows, %d deletes in %d datagrams (%d tables); backup installed %d, %d install errors, %d bad datagrams; backup table %d flows of the master's %d",
			raw, raw-nativeCPU, ms.FlowsSent, ms.DeletesSent, ms.Datagrams, ms.TablesSent, bs.Installed, bs.InstallErrors, bs.BadDatagrams, backup, run.masterEntries)
		b.ReportMetric(nativeCPU, "native-load-cpu-%")
		b.ReportMetric(float64(ms.FlowsSent), "master-flows-sent")
		b.ReportMetric(float64(ms.Datagrams), "master-datagrams")
		b.ReportMetric(float64(bs.Installed), "backup-installed")
		b.ReportMetric(float64(backup), "backup-entries")
		if none != nil {
			b.ReportMetric(pct(run.used.sys, run.window)-pct(none.used.sys, none.window), "machine-cpu-over-none-%")
		}
	})
	for _, m := range ctdModes {
		b.Run("conntrackd="+m.name, func(b *testing.B) {
			b.ReportMetric(0, "ns/op")
			p := newPair(b)
			dir := b.TempDir()
			var procs []*ctdProc
			b.Cleanup(func() { stopConntrackds(b, procs) })
			for i, r := range p.routers {
				paths, err := newCtdPaths(filepath.Join(dir, fmt.Sprintf("r%d", i)))
				if err != nil {
					b.Fatal(err)
				}
				c, err := startConntrackd(r, paths, m.config(paths, p.haAddr[i].Addr(), vrid))
				if err != nil {
					b.Fatal(err)
				}
				procs = append(procs, c)
			}
			if err := waitConntrackds(procs, 30*time.Second); err != nil {
				b.Fatal(err)
			}
			time.Sleep(time.Second)
			pids := []int{procs[0].pid(), procs[1].pid()}
			run := runLoad(b, p, func() []int { return pids })
			// Without the external cache the backup installs the flows in
			// its kernel table; with it they wait in the cache.
			backup := tableEntries(b, p.routers[1])
			if m.disableExternalCache {
				backup = waitEntries(b, p.routers[1], run.masterEntries, 5*time.Second)
			}
			ms, _ := procs[0].client("-s")
			bs, _ := procs[1].client("-s")
			mInt, _ := ctdCaches(ms)
			bInt, bExt := ctdCaches(bs)
			rss, pss, _ := procsMemKB(pids)
			cpu := pct(run.used.procs, run.window)
			b.Logf("conntrackd (%s): the two daemons %.2f%% of a core under load (%d clock ticks); master's internal cache %d flows; backup's internal cache %d, external cache %d, kernel table %d of the master's %d; RSS of the two %d KiB, PSS %d KiB",
				m.name, cpu, run.used.ticks, mInt, bInt, bExt, backup, run.masterEntries, rss, pss)
			b.Logf("conntrackd (%s): master `conntrackd -s`:\n%s\nbackup:\n%s", m.name, strings.TrimSpace(ms), strings.TrimSpace(bs))
			b.ReportMetric(cpu, "conntrackd-load-cpu-%")
			b.ReportMetric(float64(backup), "backup-entries")
			b.ReportMetric(float64(bExt), "backup-external-cache")
			if nativeCPU > 0 {
				b.ReportMetric(cpu/nativeCPU, "load-cpu-ratio")
			}
			if none != nil {
				b.ReportMetric(pct(run.used.sys, run.window)-pct(none.used.sys, none.window), "machine-cpu-over-none-%")
			}
			if !m.disableExternalCache {
				// What a takeover does first (keepalived's primary-backup.sh):
				// commit the external cache to the kernel.
				start := time.Now()
				out, err := procs[1].client("-c")
				took := time.Since(start)
				if err != nil {
					b.Logf("conntrackd -c: %v: %s", err, out)
				}
				after := tableEntries(b, p.routers[1])
				b.Logf("conntrackd (%s): committing the backup's external cache took %s; backup kernel table then %d flows",
					m.name, took.Round(time.Millisecond), after)
				b.ReportMetric(float64(took.Milliseconds()), "commit-ms")
				b.ReportMetric(float64(after), "backup-entries-after-commit")
			}
			stopConntrackds(b, procs)
		})
	}
}
