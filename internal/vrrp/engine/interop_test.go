package engine

// Kernel tier: the native engine and Debian's keepalived (2.2.7) in one VRRP
// group, keepalived configured exactly as the keepalived driver renders it
// (internal/keepalived.Render: Neutron's shape, nopreempt, priority 50).

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/keepalived"
	"github.com/l3ha/l3ha/internal/vrrp"
)

// keepalivedProc is one keepalived run in a namespace, stopped by pid.
type keepalivedProc struct {
	cmd      *exec.Cmd
	vrrpPid  string
	waitDone chan struct{}
	out      *lockedBuffer
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	t   *testing.T
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func requireKeepalived(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("keepalived"); err != nil {
		skip(t, "keepalived not installed (apt-get install keepalived)")
	}
}

// startKeepalived runs keepalived with cfg in ns until stopped or the test
// ends.
func startKeepalived(t *testing.T, ns string, cfg keepalived.Config) *keepalivedProc {
	t.Helper()
	dir := t.TempDir()
	conf, err := keepalived.Render(cfg)
	if err != nil {
		t.Fatal(err)
	}
	confPath := filepath.Join(dir, "keepalived.conf")
	if err := os.WriteFile(confPath, conf, 0o644); err != nil {
		t.Fatal(err)
	}
	k := &keepalivedProc{vrrpPid: filepath.Join(dir, "vrrp.pid"), waitDone: make(chan struct{}), out: &lockedBuffer{t: t}}
	k.cmd = exec.Command("ip", "netns", "exec", ns, "keepalived", "--dont-fork", "--log-console", "--log-detail",
		"--no-syslog", "--vrrp", "-f", confPath, "-p", filepath.Join(dir, "keepalived.pid"), "-r", k.vrrpPid)
	k.cmd.Stdout, k.cmd.Stderr = k.out, k.out
	k.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := k.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = k.cmd.Wait(); close(k.waitDone) }()
	t.Cleanup(func() {
		k.stop(t)
		if t.Failed() || os.Getenv("L3HA_TEST_VRRP_DEBUG") != "" {
			t.Logf("keepalived output:\n%s", k.out.String())
		}
	})
	return k
}

// terminate sends SIGTERM: keepalived resigns with priority 0, removes its
// addresses and exits.
func (k *keepalivedProc) terminate() {
	if k.running() {
		_ = syscall.Kill(k.cmd.Process.Pid, syscall.SIGTERM)
	}
}

// stop sends SIGTERM (keepalived then resigns with priority 0 and removes
// its addresses) and waits; SIGKILL by pid if it lingers, for the VRRP
// child too.
func (k *keepalivedProc) stop(t *testing.T) {
	t.Helper()
	select {
	case <-k.waitDone:
	default:
		_ = syscall.Kill(k.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-k.waitDone:
		case <-time.After(15 * time.Second):
			t.Errorf("keepalived %d ignored SIGTERM", k.cmd.Process.Pid)
			_ = syscall.Kill(k.cmd.Process.Pid, syscall.SIGKILL)
			<-k.waitDone
		}
	}
	if b, err := os.ReadFile(k.vrrpPid); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
			if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && bytes.Contains(cmdline, []byte(k.vrrpPid)) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

func (k *keepalivedProc) running() bool {
	select {
	case <-k.waitDone:
		return false
	default:
		return true
	}
}

// keepalivedComplaints are keepalived's log lines about packets it refused.
var keepalivedComplaints = regexp.MustCompile(`(?i)(invalid|bogus|mismatch|bad |checksum|wrong|ttl|authentication|received lower prio)`)

// TestKernelKeepalivedInterop: a native engine and keepalived, as the
// keepalived driver configures it, share one group: they elect exactly one
// master and fail over both ways (one way by the master's death, timed by
// Master_Down_Interval; the other by a graceful priority-0 resignation).
// Neither side drops the other's packets.
func TestKernelKeepalivedInterop(t *testing.T) {
	requireRoot(t)
	requireKeepalived(t)
	t.Run("v2 PASS 1s", func(t *testing.T) {
		testInterop(t, Options{Version: 2, AdvertInterval: time.Second, Password: "l3ha-pw1"}, true)
	})
	t.Run("v2 PASS 1s, l3ha paced at 0.2s", func(t *testing.T) {
		// keepalived accepts the paced adverts (they say 1 s), and the
		// paced engine waits keepalived's 1 s adverts out.
		testInterop(t, Options{Version: 2, AdvertInterval: time.Second, Password: "l3ha-pw1", Pace: 200 * time.Millisecond}, false)
	})
	t.Run("v3 0.1s", func(t *testing.T) {
		testInterop(t, Options{Version: 3, AdvertInterval: 100 * time.Millisecond}, false)
	})
}

func testInterop(t *testing.T, opts Options, keepalivedFirst bool) {
	ctx := context.Background()
	const vrid = 77
	id := "router-" + randHex(4)
	nn, nk := pairNodes(t, id, vrid, 1500)
	nat := &side{haNode: nn}
	nat.withRouterAddresses(t)
	nat.snf = startSniffer(t, nat.ns, nat.router.Device)
	kn := nk // keepalived's node: the same router, rendered
	kn.withRouterAddresses(t)
	ksnf := startSniffer(t, kn.ns, kn.router.Device)
	kcfg := keepalived.Config{
		RouterID: id, VRID: vrid, HAInterface: kn.router.Device,
		AdvertInt: opts.AdvertInterval, Version: opts.Version, AuthPassword: opts.Password,
	}
	for _, a := range kn.router.Excluded {
		kcfg.Excluded = append(kcfg.Excluded, keepalived.Address{Prefix: a.Prefix, Dev: a.Dev})
	}
	for _, r := range kn.router.Routes {
		kcfg.Routes = append(kcfg.Routes, keepalived.Route{Destination: r.Dst, Via: r.Gateway, Dev: r.Dev})
	}
	if kcfg.VIP() != nat.router.VIP {
		t.Fatalf("keepalived VIP %v, native %v", kcfg.VIP(), nat.router.VIP)
	}
	kHolds := func() bool { return kn.holdsVIP(t) }
	nMaster := func() bool {
		return nat.te.state(t, id) == vrrp.Master && nat.te.rec.is(id, vrrp.Master) && nat.holdsAll(t, true)
	}
	nBackup := func() bool { return nat.te.state(t, id) == vrrp.Backup && nat.holdsAll(t, false) }
	md := 3*opts.AdvertInterval + time.Duration(256-DefaultPriority)*opts.AdvertInterval/256
	if opts.Version == 2 {
		md = 3*opts.AdvertInterval + time.Duration(256-DefaultPriority)*time.Second/256
	}
	window := max(md+2*opts.AdvertInterval, 1500*time.Millisecond)

	// stableOne checks for window that exactly one side is master, the same
	// one throughout.
	stableOne := func(wantNative bool) {
		t.Helper()
		end := time.Now().Add(window)
		for time.Now().Before(end) {
			n, k := nat.te.state(t, id) == vrrp.Master, kHolds()
			if n == k || n != wantNative {
				t.Fatalf("not exactly one master: native master %v, keepalived holds VIP %v", n, k)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	var k *keepalivedProc
	startNative := func(name string) {
		nat.te = startEngine(t, name, opts)
		if err := nat.te.e.Ensure(ctx, nat.router); err != nil {
			t.Fatal(err)
		}
	}

	// 1. Election, one side started first (as real agents never start in
	// the same millisecond): it becomes master, the other stays backup.
	if keepalivedFirst {
		k = startKeepalived(t, kn.ns, kcfg)
		waitFor(t, waitLong, "keepalived master", kHolds)
		startNative("native")
		waitFor(t, waitLong, "native backup", func() bool { return nat.te.rec.is(id, vrrp.Backup) })
	} else {
		startNative("native")
		waitFor(t, waitLong, "native master", nMaster)
		k = startKeepalived(t, kn.ns, kcfg)
		waitFor(t, waitLong, "keepalived started", func() bool { return strings.Contains(k.out.String(), "Entering BACKUP STATE") })
	}
	stableOne(!keepalivedFirst)
	t.Logf("elected: %s", map[bool]string{true: "keepalived", false: "native"}[keepalivedFirst])

	timed := func(what string, t0 time.Time, cond func() bool) time.Duration {
		t.Helper()
		waitFor(t, waitLong, what, cond)
		d := time.Since(t0)
		t.Logf("%s after %v (Master_Down_Interval %v)", what, d.Round(time.Millisecond), md)
		return d
	}
	keepalivedToNative := func() {
		// keepalived stops gracefully (SIGTERM: priority 0, VIP removed):
		// the native backup takes over after Skew_Time.
		t0 := time.Now()
		k.terminate()
		d := timed("native takes over from a resigning keepalived", t0, nMaster)
		k.stop(t)
		if kHolds() {
			t.Error("stopped keepalived left its VIP")
		}
		// On the wire: keepalived's priority-0 advert to native's first.
		var resign time.Time
		for _, p := range nat.snf.from(kn.router.Address.Addr()) {
			if p.priority == 0 && p.at.After(t0.Add(-time.Second)) {
				resign = p.at
				break
			}
		}
		if resign.IsZero() {
			t.Error("no priority-0 advert from keepalived")
			return
		}
		for _, p := range ksnf.from(nat.router.Address.Addr()) {
			if p.at.After(resign) {
				wire := p.at.Sub(resign)
				t.Logf("keepalived's priority 0 → native's first advert: %v (Skew_Time %v)", wire.Round(time.Millisecond), md-3*opts.AdvertInterval)
				if wire > 2*(md-3*opts.AdvertInterval)+200*time.Millisecond {
					t.Errorf("native took %v after keepalived resigned, want about Skew_Time", wire)
				}
				break
			}
		}
		_ = d
	}
	nativeToKeepalived := func() {
		// The native master's node dies: its engine stops without a word;
		// keepalived takes over after Master_Down_Interval.
		t0 := time.Now()
		if err := nat.te.e.Shutdown(ctx, false); err != nil {
			t.Fatal(err)
		}
		d := timed("keepalived takes over from a dead native master", t0, kHolds)
		if d < 2*opts.AdvertInterval {
			t.Errorf("keepalived took over after %v, before Master_Down_Interval", d)
		}
		nat.clearRouterState(t) // the dead node reboots
	}
	if keepalivedFirst {
		keepalivedToNative()
		k = startKeepalived(t, kn.ns, kcfg)
		waitFor(t, waitLong, "keepalived back as backup", func() bool { return strings.Count(k.out.String(), "Entering BACKUP STATE") >= 1 })
		stableOne(true)
		nativeToKeepalived()
	} else {
		nativeToKeepalived()
		startNative("native'")
		waitFor(t, waitLong, "native back as backup", nBackup)
		stableOne(false)
		keepalivedToNative()
	}

	// Nobody refused anybody's packets.
	// Except, paced, for the advert that breaks the pace when the native
	// engine stops for a restart: keepalived drops that one.
	paceBreak := fmt.Sprintf("advertisement interval mismatch mine=%d sec rcv'd=%d sec",
		opts.AdvertInterval/time.Second, vrrp.PaceBreakInterval(opts.AdvertInterval))
	for _, line := range strings.Split(k.out.String(), "\n") {
		if opts.Pace > 0 && strings.HasSuffix(line, paceBreak) {
			continue
		}
		if keepalivedComplaints.MatchString(line) {
			t.Errorf("keepalived: %s", line)
		}
	}
	var refused []string
	for r, n := range nat.te.e.Drops() {
		refused = append(refused, fmt.Sprintf("%s=%d", r, n))
	}
	if len(refused) > 0 {
		t.Errorf("native engine dropped keepalived's packets: %v", refused)
	}
}
