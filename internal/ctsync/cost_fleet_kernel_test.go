package ctsync

import (
	"bytes"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/l3ha/l3ha/internal/kerneltest"
	"github.com/l3ha/l3ha/internal/linux"
)

// BenchmarkSyncAt500Routers.

// fleetRouter is one HA router on two nodes: namespace, HA address and
// syncer per node (0: A, the master; 1: B).
type fleetRouter struct {
	id     string
	vrid   int
	haNetN int // which HA network (bridge)
	ns     [2]string
	ha     [2]netip.Addr
}

type fleet struct {
	prefix  string // of every namespace of the fleet
	sw      string
	routers []fleetRouter
}

// buildFleet creates n router pairs on HA networks of perNet routers each
// (bridges br0, br1, ... in one switch namespace), with a pool of workers.
// Every namespace is deleted when b ends, also when building fails.
func buildFleet(b *testing.B, n, perNet, workers int) *fleet {
	f := &fleet{prefix: "l3ha-cts-" + kerneltest.RandHex(3) + "-"}
	var mu sync.Mutex
	var created []string
	create := func(name string) error {
		mu.Lock()
		created = append(created, name)
		mu.Unlock()
		return linux.CreateNamespace(name)
	}
	b.Cleanup(func() {
		start := time.Now()
		mu.Lock()
		names := created
		mu.Unlock()
		// The switch first: deleting its ends of the veth pairs empties the
		// router namespaces.
		for _, name := range names {
			if err := linux.DeleteNamespace(name); err != nil {
				b.Errorf("deleting namespace %s: %v", name, err)
			}
		}
		left, err := linux.ListNamespaces(f.prefix)
		if err != nil || len(left) > 0 {
			b.Errorf("namespaces left behind: %v %v", left, err)
		}
		b.Logf("deleted %d namespaces in %s", len(names), time.Since(start).Round(time.Millisecond))
	})
	noV6 := map[string]string{"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"}
	start := time.Now()
	f.sw = f.prefix + "sw"
	if err := create(f.sw); err != nil {
		b.Fatal(err)
	}
	if err := linux.SetSysctls(f.sw, noV6); err != nil {
		b.Fatal(err)
	}
	nets := (n + perNet - 1) / perNet
	for k := range nets {
		if err := linux.EnsureBridge(f.sw, fmt.Sprintf("br%d", k), 0); err != nil {
			b.Fatal(err)
		}
	}
	f.routers = make([]fleetRouter, n)
	for i := range f.routers {
		r := &f.routers[i]
		r.id, r.vrid, r.haNetN = uuid.NewString(), i%perNet+1, i/perNet
		for side := range 2 {
			r.ns[side] = fmt.Sprintf("%s%c%d", f.prefix, "ab"[side], i)
			// 169.254.193.<vrid> on node A, 169.254.194.<vrid> on node B:
			// unique on each HA network.
			r.ha[side] = netip.AddrFrom4([4]byte{169, 254, byte(193 + side), byte(r.vrid)})
		}
	}
	type job struct{ i, side int }
	jobs := make(chan job)
	var failed atomic.Bool
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for j := range jobs {
				if failed.Load() {
					continue
				}
				r := &f.routers[j.i]
				ns := r.ns[j.side]
				err := create(ns)
				if err == nil {
					err = linux.SetSysctls(ns, noV6)
				}
				if err == nil {
					err = linux.EnsureVeth(f.sw, linux.Veth{NodeSide: fmt.Sprintf("%c%d", "ab"[j.side], j.i),
						Bridge: fmt.Sprintf("br%d", r.haNetN), NS: ns, NSSide: "ha0"})
				}
				if err == nil {
					err = linux.AddAddress(ns, "ha0", netip.PrefixFrom(r.ha[j.side], haNet.Bits()))
				}
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					failed.Store(true)
				}
			}
		})
	}
	for i := range n {
		for side := range 2 {
			jobs <- job{i, side}
		}
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	b.Logf("built %d router namespaces (+1 switch, %d HA networks) with %d workers in %s",
		2*n, nets, workers, time.Since(start).Round(time.Millisecond))
	return f
}

// mdbEntries counts the multicast groups the switch's bridges learnt.
func (f *fleet) mdbEntries() string {
	out, err := exec.Command("ip", "netns", "exec", f.sw, "bridge", "mdb", "show").Output()
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	return strconv.Itoa(bytes.Count(out, []byte(" grp ")))
}

// BenchmarkSyncAt500Routers: 500 HA routers at rest, 1000 Syncers against
// 1000 conntrackd. Per node means per 500 routers.
func BenchmarkSyncAt500Routers(b *testing.B) {
	kerneltest.Require(b, "conntrackd", "ip")
	const routers, perNet = 500, 250
	// A window of a whole RefreshInterval: every master refreshes its
	// backup once in it.
	idle := max(20*time.Second, DefaultRefreshInterval)
	const settle = 5 * time.Second
	f := buildFleet(b, routers, perNet, 8)

	// What the machine does without either: subtracted from the machine's
	// busy time below.
	base0, err := sample(nil)
	if err != nil {
		b.Fatal(err)
	}
	time.Sleep(idle)
	base1, _ := sample(nil)
	base := base1.sub(base0)
	window := base1.at.Sub(base0.at)
	baseSys := pct(base.sys, window)
	b.Logf("baseline over %s without any sync: machine busy %.2f%% of a core, this process %.3f%%",
		window.Round(time.Millisecond), baseSys, pct(base.self, window))

	var nativeRSSNode, nativeCPUNode float64 // for the ratios
	b.Run("native", func(b *testing.B) {
		b.ReportMetric(0, "ns/op")
		rss0 := selfRSSKB(b)
		used0 := memUsedKB()
		var ms0 runtime.MemStats
		runtime.ReadMemStats(&ms0)
		var syncers []*Syncer
		closeAll := func() {
			for _, s := range syncers {
				s.Close()
			}
		}
		b.Cleanup(closeAll)
		start := time.Now()
		for _, r := range f.routers {
			for side := range 2 {
				s, err := Start(Config{RouterID: r.id, Namespace: r.ns[side], HADevice: "ha0", VRID: r.vrid, HANet: haNet})
				if err != nil {
					b.Fatal(err)
				}
				syncers = append(syncers, s)
			}
		}
		for i := 0; i < len(syncers); i += 2 {
			syncers[i].SetMaster(true) // node A
		}
		b.Logf("started %d syncers in %s", len(syncers), time.Since(start).Round(time.Millisecond))
		time.Sleep(settle)
		rss1 := selfRSSKB(b)
		used1 := memUsedKB()
		var ms1 runtime.MemStats
		runtime.ReadMemStats(&ms1)
		u0, err := sample(nil)
		if err != nil {
			b.Fatal(err)
		}
		time.Sleep(idle)
		u1, _ := sample(nil)
		u := u1.sub(u0)
		w := u1.at.Sub(u0.at)
		var st Stats
		for _, s := range syncers {
			x := s.Stats()
			st.Datagrams += x.Datagrams
			st.TablesSent += x.TablesSent
			st.BadDatagrams += x.BadDatagrams
		}
		start = time.Now()
		closeAll()
		b.Logf("closed %d syncers in %s", len(syncers), time.Since(start).Round(time.Millisecond))

		rssKB := float64(rss1 - rss0)
		nativeRSSNode = rssKB / 1024 / 2
		nativeCPUNode = pct(u.self, w) / 2
		b.Logf("native: RSS %d -> %d KiB (+%.1f MiB); Go heap in use +%.1f MiB, stacks +%.1f MiB, goroutines %d; machine memory in use +%.1f MiB",
			rss0, rss1, rssKB/1024, float64(int64(ms1.HeapInuse)-int64(ms0.HeapInuse))/(1<<20),
			float64(int64(ms1.StackInuse)-int64(ms0.StackInuse))/(1<<20), runtime.NumGoroutine(), float64(used1-used0)/1024)
		b.Logf("native: over %s this process used %s CPU (%.3f%% of a core), the machine %.2f%% (baseline %.2f%%); datagrams sent %d, tables sent %d, bad datagrams %d",
			w.Round(time.Millisecond), u.self, pct(u.self, w), pct(u.sys, w), baseSys, st.Datagrams, st.TablesSent, st.BadDatagrams)
		b.Logf("native: multicast groups learnt by the bridges: %s", f.mdbEntries())
		b.ReportMetric(nativeCPUNode, "native-idle-cpu-%-node")
		b.ReportMetric(nativeRSSNode, "native-rss-MiB-node")
		b.ReportMetric(rssKB/float64(2*routers), "native-rss-KiB-router")
		b.ReportMetric((pct(u.sys, w)-baseSys)/2, "machine-idle-cpu-%-node")
		b.ReportMetric(float64(used1-used0)/1024/2, "machine-mem-MiB-node")
	})

	for _, m := range ctdModes {
		b.Run("conntrackd="+m.name, func(b *testing.B) {
			b.ReportMetric(0, "ns/op")
			dir := b.TempDir()
			var procs []*ctdProc
			b.Cleanup(func() { stopConntrackds(b, procs) })
			used0 := memUsedKB()
			start := time.Now()
			for i, r := range f.routers {
				for side := range 2 {
					p, err := newCtdPaths(filepath.Join(dir, fmt.Sprintf("%c%d", "ab"[side], i)))
					if err != nil {
						b.Fatal(err)
					}
					c, err := startConntrackd(r.ns[side], p, m.config(p, r.ha[side], r.vrid))
					if err != nil {
						b.Fatal(err)
					}
					procs = append(procs, c)
				}
			}
			spawned := time.Since(start)
			if err := waitConntrackds(procs, 2*time.Minute); err != nil {
				b.Fatal(err)
			}
			b.Logf("spawned %d conntrackd in %s, all listening after %s", len(procs),
				spawned.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
			time.Sleep(settle)
			pids := make([]int, len(procs))
			for i, c := range procs {
				pids[i] = c.pid()
			}
			rss, pss, err := procsMemKB(pids)
			if err != nil {
				b.Fatal(err)
			}
			used1 := memUsedKB()
			stats0, _ := procs[0].client("-s")
			u0, err := sample(pids)
			if err != nil {
				b.Fatal(err)
			}
			time.Sleep(idle)
			u1, err := sample(pids)
			if err != nil {
				b.Fatalf("a conntrackd exited during the window: %v", err)
			}
			stats1, _ := procs[0].client("-s")
			u := u1.sub(u0)
			w := u1.at.Sub(u0.at)
			mdb := f.mdbEntries()
			start = time.Now()
			stopConntrackds(b, procs)
			b.Logf("stopped %d conntrackd in %s", len(procs), time.Since(start).Round(time.Millisecond))

			cpuNode := pct(u.procs, w) / 2
			rssNode := float64(rss) / 1024 / 2
			b.Logf("conntrackd (%s): RSS %.1f MiB, PSS %.1f MiB over %d processes; machine memory in use +%.1f MiB",
				m.name, float64(rss)/1024, float64(pss)/1024, len(pids), float64(used1-used0)/1024)
			b.Logf("conntrackd (%s): over %s the daemons used %s CPU (%.3f%% of a core; %d clock ticks by utime+stime = %.3f%%), this process %.3f%%, the machine %.2f%% (baseline %.2f%%)",
				m.name, w.Round(time.Millisecond), u.procs, pct(u.procs, w), u.ticks, pct(time.Duration(u.ticks)*clockTick, w),
				pct(u.self, w), pct(u.sys, w), baseSys)
			b.Logf("conntrackd (%s): multicast groups learnt by the bridges: %s; router 0 on node A, `conntrackd -s` before the window:\n%s\nand after:\n%s",
				m.name, mdb, multicastStats(stats0), multicastStats(stats1))
			b.ReportMetric(cpuNode, "conntrackd-idle-cpu-%-node")
			b.ReportMetric(rssNode, "conntrackd-rss-MiB-node")
			b.ReportMetric(float64(rss)/float64(len(pids)), "conntrackd-rss-KiB-router")
			b.ReportMetric(float64(pss)/1024/2, "conntrackd-pss-MiB-node")
			b.ReportMetric((pct(u.sys, w)-baseSys)/2, "machine-idle-cpu-%-node")
			b.ReportMetric(float64(used1-used0)/1024/2, "machine-mem-MiB-node")
			if nativeRSSNode > 0 {
				b.ReportMetric(rssNode/nativeRSSNode, "rss-ratio")
				b.ReportMetric(float64(pss)/1024/2/nativeRSSNode, "pss-ratio")
			}
			if nativeCPUNode > 0 {
				b.ReportMetric(cpuNode/nativeCPUNode, "idle-cpu-ratio")
			}
		})
	}
}

// multicastStats is the "multicast traffic" block of `conntrackd -s`.
func multicastStats(s string) string {
	i := strings.Index(s, "multicast traffic")
	if i < 0 {
		return strings.TrimSpace(s)
	}
	rest := s[i:]
	if j := strings.Index(rest, "\n\n"); j >= 0 {
		rest = rest[:j]
	}
	return rest
}
