package ctsync

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// What processes use, from /proc.

// usage is a sample of CPU time: this process's, the machine's (busy time
// of every CPU, kernel included) and a set of other processes'.
type usage struct {
	at    time.Time
	self  time.Duration
	sys   time.Duration
	procs time.Duration
	ticks int64 // the processes' utime+stime in clock ticks, as a cross-check
}

func sample(pids []int) (usage, error) {
	u := usage{at: time.Now()}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return u, err
	}
	u.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	var err error
	if u.sys, err = machineBusy(); err != nil {
		return u, err
	}
	for _, pid := range pids {
		d, ticks, err := pidCPU(pid)
		if err != nil {
			return u, err
		}
		u.procs += d
		u.ticks += ticks
	}
	return u, nil
}

// sub is what was used from a to u.
func (u usage) sub(a usage) usage {
	return usage{at: u.at, self: u.self - a.self, sys: u.sys - a.sys, procs: u.procs - a.procs, ticks: u.ticks - a.ticks}
}

// pct is d as a percentage of one core over the window w.
func pct(d, w time.Duration) float64 { return 100 * d.Seconds() / w.Seconds() }

const clockTick = 10 * time.Millisecond // sysconf(_SC_CLK_TCK) is 100 on Linux

// machineBusy is the busy time of every CPU since boot (/proc/stat "cpu":
// user nice system idle iowait irq softirq steal ...).
func machineBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("unexpected /proc/stat: %q", line)
	}
	var busy int64
	for i, v := range f[1:9] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, err
		}
		busy += n
	}
	return time.Duration(busy) * clockTick, nil
}

// statFields are the fields of /proc/<pid>/stat after the command name,
// from the state (field 3) on.
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return nil, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	return f, nil
}

func pidState(pid int) (byte, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	return f[0][0], nil
}

// pidCPU is a single-threaded process's CPU time: the scheduler's exact
// figure (/proc/<pid>/schedstat, nanoseconds) if the kernel has it, else
// utime+stime; and utime+stime in clock ticks.
func pidCPU(pid int) (time.Duration, int64, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, 0, err
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	ticks := ut + st
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/schedstat", pid)); err == nil {
		if fs := strings.Fields(string(b)); len(fs) > 0 {
			if ns, err := strconv.ParseInt(fs[0], 10, 64); err == nil {
				return time.Duration(ns), ticks, nil
			}
		}
	}
	return time.Duration(ticks) * clockTick, ticks, nil
}

// kbField reads a "Name:   123 kB" line of a /proc file (status, meminfo,
// smaps_rollup).
func kbField(path, name string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, name+":"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("%s: no %s", path, name)
}

func selfRSSKB(tb testing.TB) int64 {
	tb.Helper()
	runtime.GC()
	kb, err := kbField("/proc/self/status", "VmRSS")
	if err != nil {
		tb.Fatal(err)
	}
	return kb
}

// memUsedKB is the machine's memory in use (MemTotal - MemAvailable): what
// a set of processes costs the kernel too (page tables, stacks, sockets),
// but it moves with everything else the machine runs.
func memUsedKB() int64 {
	total, _ := kbField("/proc/meminfo", "MemTotal")
	avail, _ := kbField("/proc/meminfo", "MemAvailable")
	return total - avail
}

// procsMemKB sums VmRSS and Pss (smaps_rollup: shared pages divided among
// their users) over pids.
func procsMemKB(pids []int) (rss, pss int64, err error) {
	for _, pid := range pids {
		r, err := kbField(fmt.Sprintf("/proc/%d/status", pid), "VmRSS")
		if err != nil {
			return 0, 0, err
		}
		p, err := kbField(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss")
		if err != nil {
			return 0, 0, err
		}
		rss += r
		pss += p
	}
	return rss, pss, nil
}
