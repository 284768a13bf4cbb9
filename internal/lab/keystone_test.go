package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/keystone/local"
)

// stampWriter collects progress lines, each prefixed with the time since
// began.
type stampWriter struct {
	began time.Time
	b     strings.Builder
}

func (w *stampWriter) Write(p []byte) (int, error) {
	for _, l := range strings.SplitAfter(string(p), "\n") {
		if l != "" {
			fmt.Fprintf(&w.b, "[%5.1fs] %s", time.Since(w.began).Seconds(), l)
		}
	}
	return len(p), nil
}

func (w *stampWriter) String() string { return w.b.String() }

// needKeystone skips the test without Debian's keystone (and uWSGI) or the
// openstack client, or fails it under L3HA_TEST_REQUIRE_ALL=1 (make test),
// and returns the openstack client's path.
func needKeystone(t *testing.T) string {
	t.Helper()
	err := local.Available()
	osc, lerr := exec.LookPath("openstack")
	if err == nil && lerr != nil {
		err = fmt.Errorf("openstack client not found (apt-get install python3-openstackclient): %w", lerr)
	}
	if err != nil {
		if os.Getenv("L3HA_TEST_REQUIRE_ALL") == "1" {
			t.Fatalf("%v (L3HA_TEST_REQUIRE_ALL=1; make deps)", err)
		}
		t.Skipf("%v (make deps)", err)
	}
	return osc
}

// cleanEnv is this process's environment without what would pick the
// openstack client's or the l3ha CLI's credentials (OS_*, L3HA_*) or its
// configuration (HOME), plus extra.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "OS_") || strings.HasPrefix(name, "L3HA_") || name == "HOME" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// inNSEnv runs argv in namespace ns with env, stdin /dev/null, and a bound
// on its time (Python clients on a loaded machine are slow, not stuck).
func inNSEnv(ctx context.Context, ns string, env []string, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, argv...)...)
	cmd.Env = env
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// groupMembersOf lists the processes of process group pgid: the live ones
// and the zombies.
func groupMembersOf(pgid int) (live, zombies []int) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:])) // state ppid pgrp ...
		if len(f) < 3 || f[2] != strconv.Itoa(pgid) {
			continue
		}
		if f[0] == "Z" || f[0] == "X" {
			zombies = append(zombies, pid)
		} else {
			live = append(live, pid)
		}
	}
	return live, zombies
}

// checkGroupGone fails unless process group pgid (Keystone's uWSGI master
// and workers) runs nothing now and is gone altogether (kill(-pgid, 0)
// fails with ESRCH) within a deadline: a process that is exiting (its
// memory, and so its command line, released; not yet a zombie) takes a
// moment, and the zombies of orphans wait for init, which on some machines
// reaps them only every few seconds.
func checkGroupGone(t *testing.T, pgid int) {
	t.Helper()
	live, _ := groupMembersOf(pgid)
	var running []string
	for _, pid := range live {
		if argv, err := cmdlineOf(pid); err == nil && len(argv) > 0 {
			running = append(running, fmt.Sprintf("pid %d %q", pid, argv))
		}
	}
	if len(running) > 0 {
		t.Errorf("keystone's process group %d still runs: %s", pgid, strings.Join(running, "; "))
		return
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := syscall.Kill(-pgid, 0)
		if errors.Is(err, syscall.ESRCH) {
			return
		}
		if time.Now().After(deadline) {
			live, zombies := groupMembersOf(pgid)
			t.Errorf("keystone's process group %d not gone: kill(-%d, 0) = %v (live %v, zombies %v)", pgid, pgid, err, live, zombies)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLabUpWithKeystone brings a lab up with Keystone (the fake data plane:
// no routers needed) and drives it the way an operator would: the real
// openstack client in the controller's namespace logs in with the lab's
// clouds.yaml, finds the network endpoint in Keystone's catalog, and the
// lab's server validates its token with Keystone; a reader may not create;
// a request without a valid token is refused. lab down then leaves no
// process of Keystone's process group, no namespace and none of the lab's
// Keystone files. A second round loses lab.json and the namespaces (`lab
// up` died, or someone deleted them): up refuses while Keystone still runs,
// and down finds and stops it all the same.
func TestLabUpWithKeystone(t *testing.T) {
	needLab(t)
	osc := needKeystone(t)
	began := time.Now()
	lap := began
	step := func(t *testing.T, what string) {
		t.Helper()
		t.Logf("%-44s %5.1fs (total %5.1fs)", what, time.Since(lap).Seconds(), time.Since(began).Seconds())
		lap = time.Now()
	}
	defer func() { t.Logf("TestLabUpWithKeystone took %.1fs", time.Since(began).Seconds()) }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	name := "k" + randomHex(3)
	dir := filepath.Join(t.TempDir(), "lab")
	t.Cleanup(func() {
		if out, err := labCmd(t, name, dir, "down"); err != nil {
			t.Errorf("cleanup: lab down: %v\n%s", err, out)
		}
	})
	ns := controllerNamespace(name)

	mustLab(t, name, dir, "up", "--keystone", "--dataplane", "fake")
	step(t, "lab up --keystone --dataplane fake")
	st, err := LoadState(dir)
	if err != nil || st == nil {
		t.Fatalf("lab.json: %v, %v", st, err)
	}
	ksProc, ok := st.process("keystone")
	if !ok || st.Keystone == nil {
		t.Fatalf("lab.json records no keystone: %+v", st)
	}
	// uWSGI leads its own session and process group: down must end the
	// whole group (master and workers).
	pgid := ksProc.PID
	if g, err := syscall.Getpgid(pgid); err != nil || g != pgid {
		t.Fatalf("keystone pid %d: process group %d, %v; want its own", pgid, g, err)
	}
	if !ksProc.running() {
		t.Fatalf("recorded keystone %+v does not run", ksProc)
	}
	live, _ := groupMembersOf(pgid)
	if len(live) < 2 {
		t.Errorf("keystone's process group %d: %v, want the master and a worker", pgid, live)
	}
	for _, f := range []struct{ path, want string }{
		{serverConfPath(dir), "[keystone_authtoken]"},
		{serverConfPath(dir), "auth_strategy = keystone"},
		{cloudsYAMLPath(dir), local.CloudAdmin + ":"},
		{cloudsYAMLPath(dir), local.CloudReader + ":"},
	} {
		b, err := os.ReadFile(f.path)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), f.want) {
			t.Errorf("%s lacks %q:\n%s", f.path, f.want, b)
		}
		if fi, err := os.Stat(f.path); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, %v; want 0600 (it holds passwords)", f.path, fi.Mode(), err)
		}
	}

	// status: up, with Keystone among the running processes; its API part
	// (the lab logs in as the provisioned admin) sees every agent.
	var rep StatusReport
	if err := json.Unmarshal([]byte(mustLab(t, name, dir, "status", "--json")), &rep); err != nil {
		t.Fatal(err)
	}
	running := map[string]bool{}
	for _, p := range rep.Processes {
		running[p.Name] = p.Running
	}
	if !rep.Up || !running["keystone"] || !running["server"] || len(rep.Processes) != 2+len(Nodes) || rep.APIError != "" || len(rep.Agents) != len(Nodes) {
		t.Errorf("status = %+v", rep)
	}
	step(t, "lab status --json")

	// The operator's way: password login, Keystone's catalog, the lab's
	// server validating the token with Keystone.
	env := cleanEnv("OS_CLIENT_CONFIG_FILE="+cloudsYAMLPath(dir), "HOME="+t.TempDir())
	openstack := func(cloud string, args ...string) (string, error) {
		return inNSEnv(ctx, ns, env, append([]string{osc, "--os-cloud", cloud}, args...)...)
	}
	var out string
	if err := waitFor(ctx, 90*time.Second, "openstack network agent list to show every agent alive", func() (bool, error) {
		out, err = openstack(local.CloudAdmin, "network", "agent", "list", "-f", "json")
		if err != nil {
			return false, fmt.Errorf("openstack --os-cloud %s network agent list: %v\n%s", local.CloudAdmin, err, out)
		}
		var agents []map[string]any
		if err := json.Unmarshal([]byte(out), &agents); err != nil {
			return false, fmt.Errorf("agent list: %v\n%s", err, out)
		}
		alive := map[string]bool{}
		for _, a := range agents {
			if h, _ := a["Host"].(string); a["Alive"] == true {
				alive[h] = true
			}
		}
		for _, n := range Nodes {
			if !alive[n.Name] {
				return false, nil
			}
		}
		return true, nil
	}); err != nil {
		t.Fatalf("%v\nlast output:\n%s", err, out)
	}
	step(t, "openstack network agent list (admin)")

	out, err = openstack(local.CloudReader, "network", "create", "x")
	if err == nil || !strings.Contains(out, "403") {
		t.Errorf("reader's network create: %v, want a 403:\n%s", err, out)
	}
	step(t, "openstack network create (reader: 403)")
	// ... and nothing was made: the lab's own client (logged in as the
	// admin of the reader's project) finds no network x.
	api := apiFor(st)
	defer api.close()
	if id, err := api.findByName(ctx, "networks", "x", nil); err != nil || id != "" {
		t.Errorf("network x after the reader's refused create: %q, %v", id, err)
	}

	// Without a token, or with one Keystone never issued, the server says
	// 401; the l3ha CLI says so too.
	for _, args := range [][]string{
		{"network", "list", "--url", serverURL(), "--ca-cert", caPath(dir)},
		{"network", "list", "--url", serverURL(), "--ca-cert", caPath(dir), "--token", "not-a-keystone-token"},
	} {
		out, err := inNSEnv(ctx, ns, cleanEnv(), append([]string{labBinary}, args...)...)
		if err == nil || !strings.Contains(out, "401") {
			t.Errorf("l3ha %s: %v, want a 401:\n%s", strings.Join(args, " "), err, out)
		}
	}
	step(t, "l3ha network list without a valid token (401)")

	pids := recordedPIDs(t, dir)
	t.Logf("lab down:\n%s", mustLab(t, name, dir, "down"))
	step(t, "lab down")
	checkGroupGone(t, pgid)
	if left := labLeftovers(name, pids); len(left) > 0 {
		t.Errorf("after down: %v", left)
	}
	for _, p := range []string{keystoneDir(dir), serverConfPath(dir), cloudsYAMLPath(dir), dir} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there after down: %v", p, err)
		}
	}
	step(t, "checks after down")

	t.Run("record and namespaces lost", func(t *testing.T) {
		// What `lab up` dying between starting Keystone and recording it
		// leaves, and worse: a uWSGI nobody recorded, in the root
		// namespace (only its socket is in the controller's), with the
		// namespaces gone too.
		mustLab(t, name, dir, "up", "--keystone", "--dataplane", "fake")
		step(t, "lab up --keystone (again)")
		st, err := LoadState(dir)
		if err != nil || st == nil {
			t.Fatalf("lab.json: %v, %v", st, err)
		}
		ks, _ := st.process("keystone")
		pgid := ks.PID
		pids := recordedPIDs(t, dir)
		if err := os.Remove(statePath(dir)); err != nil {
			t.Fatal(err)
		}
		nss, _ := existingNamespaces(name)
		for _, ns := range nss {
			if out, err := exec.Command("ip", "netns", "delete", ns).CombinedOutput(); err != nil {
				t.Fatalf("ip netns delete %s: %v\n%s", ns, err, out)
			}
		}
		if live, _ := groupMembersOf(pgid); len(live) == 0 {
			t.Fatalf("keystone (pgid %d) did not survive losing its record", pgid)
		}
		// up must not remove <dir>/keystone from under it.
		if out, err := labCmd(t, name, dir, "up", "--keystone", "--dataplane", "fake"); err == nil || !strings.Contains(out, "keystone processes running") {
			t.Errorf("up with a stray keystone: %v\n%s", err, out)
		}
		t.Logf("lab down:\n%s", mustLab(t, name, dir, "down"))
		step(t, "lab down without lab.json and namespaces")
		checkGroupGone(t, pgid)
		if left := labLeftovers(name, pids); len(left) > 0 {
			t.Errorf("after down: %v", left)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("lab directory still there: %v", err)
		}
	})

	t.Run("up fails after keystone started", func(t *testing.T) {
		// The server does not start: up's own clean-up (Down keeping the
		// logs) stops the Keystone it started, and keeps Keystone's logs,
		// which lived in <dir>/keystone, in <dir>/logs.
		wrapper := filepath.Join(t.TempDir(), "l3ha")
		script := "#!/bin/sh\nif [ \"$1\" = server ]; then echo 'no server today (test)' >&2; exit 3; fi\nexec " + labBinary + " \"$@\"\n"
		if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		progress := &stampWriter{began: time.Now()}
		_, err := Up(ctx, Options{Name: name, Dir: dir, Binary: wrapper, Dataplane: DataplaneFake, Keystone: true, Out: progress})
		step(t, "lab up --keystone with a failing server")
		t.Logf("up's progress:\n%s", progress.String())
		if err == nil || !strings.Contains(err.Error(), "no server today") {
			t.Fatalf("up: %v, want the server's failure\n%s", err, progress.String())
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		if left := labLeftovers(name, nil); len(left) > 0 {
			t.Errorf("after the failed up: %v", left)
		}
		if pids := keystonePIDs(dir); len(pids) > 0 {
			t.Errorf("keystone processes left after the failed up: %v", pids)
		}
		for _, p := range []string{keystoneDir(dir), serverConfPath(dir), cloudsYAMLPath(dir), statePath(dir)} {
			if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s still there after the failed up: %v", p, err)
			}
		}
		for _, l := range []string{"keystone.log", "keystone-uwsgi.log", "server.log"} {
			if fi, err := os.Stat(filepath.Join(dir, "logs", l)); err != nil || fi.Size() == 0 {
				t.Errorf("log %s not kept: %v", l, err)
			}
		}
	})
}
