package keepalived

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pidsMatching returns the live (non-zombie) processes whose command line
// contains marker.
func pidsMatching(marker string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		pi, err := readProcInfo(pid)
		if err != nil || pi.State == 'Z' || pi.State == 'X' {
			continue
		}
		if strings.Contains(strings.Join(pi.Args, " "), marker) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killStrays kills, by pid, every process whose command line names marker
// (a test's own temporary directory) and waits until they are gone.
func killStrays(t *testing.T, marker string) {
	t.Helper()
	pids := pidsMatching(marker)
	for _, pid := range pids {
		t.Logf("cleanup: killing stray pid %d", pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(pidsMatching(marker)) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if left := pidsMatching(marker); len(left) > 0 {
		t.Errorf("processes left behind: %v", left)
	}
}

func alive(pid int) bool {
	pi, err := readProcInfo(pid)
	return err == nil && pi.State != 'Z' && pi.State != 'X'
}

func countInLog(t *testing.T, path, s string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return strings.Count(string(b), s)
}

func fakeKeepalivedPath(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "keepalived")
	if err := os.Symlink(exe, p); err != nil {
		t.Fatal(err)
	}
	t.Setenv(fakeKeepalivedEnv, "1")
	return p
}

// newProcManager runs real processes (the fake keepalived, outside any
// namespace) and no watcher.
func newProcManager(t *testing.T, stateDir, keepalived string) *Manager {
	t.Helper()
	// ReloadDelay: long enough that a burst of ten changes surely fits in
	// one window on a loaded machine.
	m, err := New(Options{StateDir: stateDir, ReloadDelay: time.Second, MinBackoff: 50 * time.Millisecond, StopTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	m.start = execStarter("", keepalived)
	m.watch = func(s watchSpec) (func(), error) { return func() {}, nil }
	return m
}

func pidOf(t *testing.T, m *Manager, id string) int {
	t.Helper()
	st, ok := m.Status(id)
	if !ok {
		t.Fatalf("router %s unknown", id)
	}
	return st.PID
}

// TestProcessSupervision runs real processes (the test binary posing as
// keepalived) through start, coalesced SIGHUP, respawn, detach, adoption from
// pid files (refusing pids that are not our keepalived), death of an adopted
// process (seen through its pidfd), and Remove with SIGKILL escalation.
func TestProcessSupervision(t *testing.T) {
	ctx := context.Background()
	ka := fakeKeepalivedPath(t)
	stateDir := t.TempDir()
	t.Cleanup(func() { killStrays(t, stateDir) })

	m1 := newProcManager(t, stateDir, ka)
	defer m1.Close()
	dir := m1.Dir("r1")
	logPath := filepath.Join(dir, LogFile)
	if err := m1.Ensure(ctx, "r1", "ns-r1", testConfig(0)); err != nil {
		t.Fatal(err)
	}
	pid := pidOf(t, m1, "r1")
	waitFor(t, 10*time.Second, "pid file", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, PidFile))
		return strings.TrimSpace(string(b)) == strconv.Itoa(pid)
	})
	pi, err := readProcInfo(pid)
	if err != nil || pi.PGrp != pid || !pi.isOurKeepalived(filepath.Join(dir, ConfFile)) {
		t.Fatalf("started process: %+v, %v (want its own process group and our config)", pi, err)
	}

	// Ten quick changes: one SIGHUP.
	for i := 1; i <= 10; i++ {
		if err := m1.Ensure(ctx, "r1", "ns-r1", testConfig(i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "the coalesced reload", func() bool {
		st, _ := m1.Status("r1")
		return st.Reloads == 1 && !st.ReloadPending && countInLog(t, logPath, "Reloading ...") == 1
	})

	// Crash: respawned.
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "respawn", func() bool {
		p := pidOf(t, m1, "r1")
		return p != 0 && p != pid && alive(p)
	})
	pid = pidOf(t, m1, "r1")
	if st, _ := m1.Status("r1"); st.Starts != 2 {
		t.Errorf("starts = %d, want 2", st.Starts)
	}
	waitFor(t, 10*time.Second, "respawned pid file", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, PidFile))
		return strings.TrimSpace(string(b)) == strconv.Itoa(pid)
	})

	// The agent goes away: keepalived stays.
	if err := m1.Close(); err != nil {
		t.Fatal(err)
	}
	if !alive(pid) {
		t.Fatal("Close stopped keepalived")
	}

	// Leftovers that must not be adopted: a pid file naming a process that
	// is not keepalived (a recycled pid), and one naming a dead process.
	writeRouterDir := func(id string, pidInFile int) {
		d := m1.Dir(id)
		if err := os.MkdirAll(d, 0o750); err != nil {
			t.Fatal(err)
		}
		mb, _ := json.Marshal(meta{Namespace: "ns-" + id, Config: testConfig(1)})
		for name, data := range map[string][]byte{
			MetaFile: mb,
			ConfFile: mustRender(t, testConfig(1)),
			PidFile:  []byte(strconv.Itoa(pidInFile) + "\n"),
		} {
			if err := os.WriteFile(filepath.Join(d, name), data, 0o640); err != nil {
				t.Fatal(err)
			}
		}
	}
	writeRouterDir("recycled", os.Getpid())
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	writeRouterDir("dead", dead.Process.Pid)
	if err := os.MkdirAll(filepath.Join(stateDir, "ha_confs", "not-ours"), 0o750); err != nil {
		t.Fatal(err)
	}

	// The previous agent wrote a config and died before its SIGHUP.
	if err := os.WriteFile(filepath.Join(dir, reloadMarker), nil, 0o640); err != nil {
		t.Fatal(err)
	}

	m2 := newProcManager(t, stateDir, ka)
	defer m2.Close()
	adopted, err := m2.Adopt(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(adopted) != "[r1]" {
		t.Fatalf("adopted %v, want [r1]", adopted)
	}
	if got := m2.Routers(); !slices.Equal(got, []string{"dead", "r1", "recycled"}) {
		t.Errorf("routers = %v", got)
	}
	st, _ := m2.Status("r1")
	if st.PID != pid || !st.Adopted || st.Starts != 0 {
		t.Fatalf("adopted status = %+v, want pid %d adopted without a start", st, pid)
	}
	for _, id := range []string{"recycled", "dead"} {
		if st, _ := m2.Status(id); st.PID != 0 || st.Adopted {
			t.Errorf("%s adopted: %+v", id, st)
		}
	}
	waitFor(t, 10*time.Second, "the reload the previous agent owed", func() bool {
		st, _ := m2.Status("r1")
		return st.Reloads == 1 && !st.ReloadPending && countInLog(t, logPath, "Reloading ...") == 2
	})
	// The same config again: nothing; a new one: a SIGHUP through the pidfd.
	if err := m2.Ensure(ctx, "r1", "ns-r1", testConfig(10)); err != nil {
		t.Fatal(err)
	}
	if st, _ := m2.Status("r1"); st.ReloadPending || st.Starts != 0 || st.PID != pid {
		t.Fatalf("Ensure of the adopted config: %+v", st)
	}
	if err := m2.Ensure(ctx, "r1", "ns-r1", testConfig(11)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "reload of the adopted keepalived", func() bool {
		return countInLog(t, logPath, "Reloading ...") == 3
	})

	// The adopted keepalived dies: seen without being its parent.
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "respawn of the adopted keepalived", func() bool {
		p := pidOf(t, m2, "r1")
		return p != 0 && p != pid && alive(p)
	})
	pid = pidOf(t, m2, "r1")
	waitFor(t, 10*time.Second, "respawned pid file", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, PidFile))
		return strings.TrimSpace(string(b)) == strconv.Itoa(pid)
	})

	// Ensure without Adopt also takes over a running keepalived.
	if err := m2.Close(); err != nil {
		t.Fatal(err)
	}
	m3 := newProcManager(t, stateDir, ka)
	defer m3.Close()
	if err := m3.Ensure(ctx, "r1", "ns-r1", testConfig(11)); err != nil {
		t.Fatal(err)
	}
	if st, _ := m3.Status("r1"); st.PID != pid || !st.Adopted || st.Starts != 0 {
		t.Fatalf("Ensure without Adopt: %+v, want pid %d adopted", st, pid)
	}

	// Remove of a keepalived that ignores SIGTERM: SIGKILL after StopTimeout.
	if err := os.WriteFile(filepath.Join(dir, ConfFile+".ignore-term"), nil, 0o640); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := m3.Remove(ctx, "r1"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 500*time.Millisecond {
		t.Errorf("Remove returned after %v, before StopTimeout", d)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("router directory left: %v", err)
	}
	waitFor(t, 5*time.Second, "removed keepalived to be gone", func() bool { return !alive(pid) })

	// Remove of routers found without a process, and of one never seen, with
	// a running keepalived started by someone else's Manager from its files.
	m4 := newProcManager(t, t.TempDir(), ka)
	defer m4.Close()
	t.Cleanup(func() { killStrays(t, m4.opts.StateDir) })
	if err := m4.Ensure(ctx, "x1", "ns-x1", testConfig(0)); err != nil {
		t.Fatal(err)
	}
	xpid := pidOf(t, m4, "x1")
	waitFor(t, 10*time.Second, "pid file", func() bool {
		b, _ := os.ReadFile(filepath.Join(m4.Dir("x1"), PidFile))
		return strings.TrimSpace(string(b)) == strconv.Itoa(xpid)
	})
	if err := m4.Close(); err != nil {
		t.Fatal(err)
	}
	m5 := newProcManager(t, m4.opts.StateDir, ka)
	defer m5.Close()
	if err := m5.Remove(ctx, "x1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "keepalived removed by a Manager that never adopted it", func() bool { return !alive(xpid) })
	for _, id := range []string{"dead", "recycled"} {
		if err := m3.Remove(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	ents, _ := os.ReadDir(filepath.Join(stateDir, "ha_confs"))
	if len(ents) != 1 || ents[0].Name() != "not-ours" {
		t.Errorf("ha_confs holds %v, want only not-ours", ents)
	}
}
