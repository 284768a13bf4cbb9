package ctsync

// The cost of the sync against Debian's conntrackd run once per router, as
// OpenStack Neutron 2025.1 does (neutron/agent/linux/conntrackd.py: one
// `conntrackd -d -C <router>/conntrackd.conf` in each router namespace, FTFW
// over multicast on the router's ha- device). Two benchmarks, run with
//
//	go test ./internal/ctsync -run '^$' -bench BenchmarkSync -benchtime 1x -v -timeout 30m
//
//   - BenchmarkSyncAt500Routers: 500 HA routers at rest on two "nodes" (1000
//     router namespaces, 500 per node, their ha0 devices on two HA networks of
//     250 routers each, VRIDs 1..250): the memory and idle CPU per node of 1000
//     Syncers in this process, then of 1000 conntrackd processes, on the same
//     namespaces one after the other.
//   - BenchmarkSyncUnderLoad: one router pair (newPair) with 1000 new TCP
//     connections per second for 10 s through the master's SNAT: the CPU of the
//     sync (Syncers, then conntrackd) and how much of the master's table the
//     backup holds at the end.
//
// Numbers only (b.ReportMetric, b.Logf); nothing is asserted about speed.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// conntrackd, configured as Neutron does.

// ctdMode is one way to configure conntrackd.
//
// "neutron" is Neutron 2025.1's template (CONFIG_TEMPLATE in
// neutron/agent/linux/conntrackd.py) with its defaults
// (neutron/conf/agent/l3/ha.py): HashSize 32768, HashLimit 131072, UNIX
// Backlog 20, SocketBufferSize 262142, SocketBufferSizeMaxGrown 655355,
// Filter From Kernelspace accepting TCP SCTP DCCP UDP ICMP IPv6-ICMP and
// ignoring 127.0.0.1, ::1 and the router's own HA address, Mode FTFW with
// nothing set (so the external cache is on: a backup keeps the master's
// flows in user space until keepalived's primary-backup.sh commits them with
// `conntrackd -c`), Multicast to 225.0.0.50 — one address for every router —
// on port ("Group") 3780+VRID from the router's HA address on its ha- device,
// Snd/RcvSocketBuffer 24985600, Checksum on. The only differences: Syslog
// off instead of on (the daemon runs in the foreground, its console log goes
// to a file of ours) and the paths.
//
// "tuned" is what the sync itself does, for the fairest comparison:
// DisableExternalCache on (the backup installs the flows in its kernel table
// at once), a multicast address per VRID (225.0.0.<vrid>: a router's ha-
// device drops its neighbours' sync in the kernel, as GroupFor does) and the
// whole HA network ignored (as Config.HANet).
type ctdMode struct {
	name                 string
	disableExternalCache bool
	groupPerVRID         bool
}

var ctdModes = []ctdMode{
	{name: "neutron"},
	{name: "tuned", disableExternalCache: true, groupPerVRID: true},
}

// ctdPaths are one conntrackd's files, in a directory of its own.
type ctdPaths struct{ dir, conf, ctl, lock, out string }

func newCtdPaths(dir string) (ctdPaths, error) {
	p := ctdPaths{dir: dir, conf: filepath.Join(dir, "conntrackd.conf"), ctl: filepath.Join(dir, "conntrackd.ctl"),
		lock: filepath.Join(dir, "conntrackd.lock"), out: filepath.Join(dir, "conntrackd.out")}
	if len(p.ctl) > 107 { // UNIX_PATH_MAX in conntrackd's include/local.h
		return p, fmt.Errorf("conntrackd socket path %s is longer than 107 characters", p.ctl)
	}
	return p, os.MkdirAll(dir, 0o755)
}

func (m ctdMode) config(p ctdPaths, ha netip.Addr, vrid int) string {
	mcast := "225.0.0.50"
	if m.groupPerVRID {
		mcast = fmt.Sprintf("225.0.0.%d", vrid)
	}
	ignore := "IPv4_address " + ha.String()
	if m.groupPerVRID {
		ignore = "IPv4_address " + haNet.String()
	}
	ftfw := ""
	if m.disableExternalCache {
		ftfw = "\n        DisableExternalCache on\n    "
	}
	return fmt.Sprintf(`General {
    HashSize 32768
    HashLimit 131072
    Syslog off
    LockFile %s
    UNIX {
        Path %s
        Backlog 20
    }
    SocketBufferSize 262142
    SocketBufferSizeMaxGrown 655355
    Filter From Kernelspace {
        Protocol Accept {
            TCP
            SCTP
            DCCP
            UDP
            ICMP
            IPv6-ICMP
        }
        Address Ignore {
            IPv4_address 127.0.0.1
            IPv6_address ::1
            %s
        }
    }
}
Sync {
    Mode FTFW {%s}
    Multicast Default {
        IPv4_address %s
        IPv4_interface %s
        Group %d
        Interface ha0
        SndSocketBuffer 24985600
        RcvSocketBuffer 24985600
        Checksum on
    }
}
`, p.lock, p.ctl, ignore, ftfw, mcast, ha, 3780+vrid)
}

// ctdProc is one conntrackd running in the foreground in a router namespace.
type ctdProc struct {
	ns   string
	p    ctdPaths
	cmd  *exec.Cmd
	done chan struct{} // closed once reaped
}

func (c *ctdProc) pid() int { return c.cmd.Process.Pid }

// output is what the daemon printed (its console log).
func (c *ctdProc) output() string {
	b, _ := os.ReadFile(c.p.out)
	return strings.TrimSpace(string(b))
}

// startConntrackd starts `conntrackd -C conf` in namespace ns through
// `ip netns exec`, which execs it: the PID is the daemon's.
func startConntrackd(ns string, p ctdPaths, config string) (*ctdProc, error) {
	if err := os.WriteFile(p.conf, []byte(config), 0o644); err != nil {
		return nil, err
	}
	out, err := os.Create(p.out)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	cmd := exec.Command("ip", "netns", "exec", ns, "conntrackd", "-C", p.conf)
	cmd.Stdout, cmd.Stderr = out, out
	// Killed with the benchmark if it dies without its cleanups.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting conntrackd in %s: %w", ns, err)
	}
	return &ctdProc{ns: ns, p: p, cmd: cmd}, nil
}

// client runs a conntrackd client command (-s, -c, ...) against the daemon,
// from inside its namespace.
func (c *ctdProc) client(args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", c.ns, "conntrackd", "-C", c.p.conf}, args...)...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = io.Discard // "deprecated unix backlog configuration"
	err := cmd.Run()
	return out.String(), err
}

// waitConntrackds waits until every daemon listens on its unix socket; an
// error names those that exited or never got there, with their output.
func waitConntrackds(procs []*ctdProc, d time.Duration) error {
	deadline := time.Now().Add(d)
	pending := append([]*ctdProc(nil), procs...)
	for len(pending) > 0 {
		var still, dead []*ctdProc
		for _, c := range pending {
			if st, err := os.Stat(c.p.ctl); err == nil && st.Mode()&os.ModeSocket != 0 {
				continue
			}
			if s, err := pidState(c.pid()); err != nil || s == 'Z' || s == 'X' {
				dead = append(dead, c)
				continue
			}
			still = append(still, c)
		}
		if len(dead) > 0 || (len(still) > 0 && time.Now().After(deadline)) {
			var b strings.Builder
			if len(dead) > 0 {
				fmt.Fprintf(&b, "%d conntrackd exited before listening", len(dead))
			}
			if len(still) > 0 && time.Now().After(deadline) {
				fmt.Fprintf(&b, "; %d not listening after %s", len(still), d)
			}
			for i, c := range append(dead, still...) {
				if i == 5 {
					fmt.Fprintf(&b, "\n(and %d more)", len(dead)+len(still)-5)
					break
				}
				fmt.Fprintf(&b, "\n%s (pid %d): %s", c.ns, c.pid(), c.output())
			}
			return errors.New(b.String())
		}
		pending = still
		if len(pending) > 0 {
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// stopConntrackds sends SIGTERM to every daemon, SIGKILL to those still
// running 5 s later, and reaps them all. Safe to call twice.
func stopConntrackds(tb testing.TB, procs []*ctdProc) {
	var live []*ctdProc
	for _, c := range procs {
		if c.done != nil {
			continue
		}
		c.done = make(chan struct{})
		c.cmd.Process.Signal(syscall.SIGTERM)
		live = append(live, c)
	}
	for _, c := range live {
		go func() { c.cmd.Wait(); close(c.done) }()
	}
	deadline := time.Now().Add(5 * time.Second)
	killed := 0
	for _, c := range live {
		select {
		case <-c.done:
		case <-time.After(time.Until(deadline)):
			c.cmd.Process.Kill()
			killed++
			<-c.done
		}
	}
	if killed > 0 {
		tb.Logf("%d conntrackd did not stop within 5 s of SIGTERM: killed", killed)
	}
}

// ctdCaches parses `conntrackd -s`: the internal and external caches'
// "current active connections".
func ctdCaches(stats string) (internal, external int) {
	cache := ""
	for _, line := range strings.Split(stats, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "cache internal"):
			cache = "internal"
		case strings.HasPrefix(line, "cache external"):
			cache = "external"
		case strings.HasPrefix(line, "current active connections:"):
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "current active connections:")))
			if cache == "internal" {
				internal = n
			} else if cache == "external" {
				external = n
			}
			cache = ""
		}
	}
	return internal, external
}
