package neutronlocal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Patience when stopping: a process gets termGrace after SIGTERM before its
// group gets SIGKILL, and killGrace after that to disappear.
const (
	termGrace = 15 * time.Second
	killGrace = 10 * time.Second
)

// childPath is the PATH of every child: Debian's tools (ip, keepalived,
// iptables-save, conntrack, arping, privsep-helper) and nothing of a
// developer's PATH that could shadow them (pyenv's python3 and shims).
const childPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// proc is a process this package started as the leader of its own session
// and process group (its pid is its pgid), with the logs that explain its
// failures.
type proc struct {
	name    string
	pid     int
	logs    []string
	done    chan struct{}
	waitErr error // valid once done is closed

	endOnce sync.Once
	endErr  error
}

// childEnv is this process's environment without what would change how
// Neutron, oslo.config, MariaDB or Python behave: OS_* (oslo.config reads
// OS_<GROUP>__<OPTION>), PYTHON* (pyenv's PYTHONPATH or PYTHONHOME would
// break Debian's /usr/bin/python3), MYSQL_*/MARIADB_*, HOME (oslo.config
// searches ~/.neutron and ~/), PATH (replaced by childPath), plus HOME=home
// and no Python user site.
func childEnv(home string, extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(name, "OS_"), strings.HasPrefix(name, "PYTHON"),
			strings.HasPrefix(name, "MYSQL"), strings.HasPrefix(name, "MARIADB"),
			name == "HOME", name == "PATH", name == "SNAP", name == "SNAP_COMMON":
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "HOME="+home, "PATH="+childPath, "PYTHONNOUSERSITE=1", "LC_ALL=C.UTF-8")
	return append(env, extra...)
}

// startProc starts argv in a session and process group of its own, with
// stdout and stderr appended to out (a file: the process may outlive a pipe
// reader) and SIGTERM as its parent-death signal, so that a test binary that
// dies takes it along. (The signal belongs to the OS thread that forks;
// nothing in this package starts processes from a thread it discards.)
func startProc(name string, argv []string, env []string, dir, out string, logs ...string) (*proc, error) {
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%s: output file: %w", name, err)
	}
	defer f.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, pid: cmd.Process.Pid, logs: append([]string{out}, logs...), done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether p has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop ends p's process group: SIGTERM to p, SIGKILL to the group if p takes
// longer than grace or anything of the group is left, and waits until the
// group is empty. Idempotent (later calls return the first result,
// whatever their grace).
func (p *proc) stop(grace time.Duration) error {
	p.endOnce.Do(func() {
		select {
		case <-p.done:
		default:
			if grace > 0 {
				_ = syscall.Kill(p.pid, syscall.SIGTERM)
			}
			timer := time.NewTimer(grace)
			select {
			case <-p.done:
			case <-timer.C:
				// The group id stays reserved while any member lives,
				// so this reaches no stranger.
				_ = syscall.Kill(-p.pid, syscall.SIGKILL)
				<-p.done
			}
			timer.Stop()
		}
		p.endErr = killGroup(p.pid, killGrace)
		if p.endErr != nil {
			p.endErr = fmt.Errorf("%s: %w", p.name, p.endErr)
		}
	})
	return p.endErr
}

// kill is stop without the SIGTERM.
func (p *proc) kill() error { return p.stop(0) }

// logTails is the tails of p's logs, for an error message.
func (p *proc) logTails() string {
	var b strings.Builder
	for _, l := range p.logs {
		b.WriteString(logTail(l))
	}
	return b.String()
}

// killGroup SIGKILLs what is left of process group pgid and waits up to
// grace for it to be empty.
func killGroup(pgid int, grace time.Duration) error {
	if len(groupMembers(pgid)) == 0 {
		return nil
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	deadline := time.Now().Add(grace)
	for {
		left := groupMembers(pgid)
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("process group %d still has live processes %v after SIGKILL", pgid, left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// procInfo is what this package reads of a process in /proc.
type procInfo struct {
	pid, pgrp, sid int
	cmdline        string // arguments joined by spaces
}

// processes lists the live (not zombie) processes.
func processes() []procInfo {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var ps []procInfo
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		pi, ok := readProc(pid)
		if ok {
			ps = append(ps, pi)
		}
	}
	return ps
}

// readProc reads /proc/pid; ok is false if the process is gone or a zombie
// (a zombie waits for its parent, which is not ours to hurry).
func readProc(pid int) (procInfo, bool) {
	dir := "/proc/" + strconv.Itoa(pid)
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return procInfo{}, false
	}
	// pid (comm) state ppid pgrp session ...; comm may hold spaces and ")".
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return procInfo{}, false
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 4 || f[0] == "Z" || f[0] == "X" {
		return procInfo{}, false
	}
	pgrp, err1 := strconv.Atoi(f[2])
	sid, err2 := strconv.Atoi(f[3])
	if err1 != nil || err2 != nil {
		return procInfo{}, false
	}
	cmd, _ := os.ReadFile(dir + "/cmdline")
	return procInfo{pid: pid, pgrp: pgrp, sid: sid, cmdline: string(bytes.ReplaceAll(bytes.TrimRight(cmd, "\x00"), []byte{0}, []byte{' '}))}, true
}

// groupMembers lists the live processes of group pgid.
func groupMembers(pgid int) []int {
	if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
		return nil
	}
	var pids []int
	for _, p := range processes() {
		if p.pgrp == pgid {
			pids = append(pids, p.pid)
		}
	}
	return pids
}

// strays lists the processes that belong to a run of this package but
// escaped its process groups: those whose command line names marker (a
// directory of the run: every process started for it is given a
// configuration file, pid file or directory under it), and the members of
// their sessions when the session's leader is one of them or gone (the
// daemons keepalived and neutron-keepalived-state-change start their own
// sessions; the latter's leader exits).
func strays(marker string) []int {
	marker = filepath.Clean(marker) + "/"
	self := os.Getpid()
	mySid, _ := unix.Getsid(0)
	ps := processes()
	live := make(map[int]bool, len(ps))
	for _, p := range ps {
		live[p.pid] = true
	}
	matched := make(map[int]bool)
	sessions := make(map[int]bool)
	for _, p := range ps {
		if p.pid == self || !strings.Contains(p.cmdline+"/", marker) {
			continue
		}
		matched[p.pid] = true
		if p.sid > 1 && p.sid != mySid {
			sessions[p.sid] = true
		}
	}
	for sid := range sessions {
		if live[sid] && !matched[sid] {
			delete(sessions, sid) // a live stranger leads it (say, a shell running tail -f)
		}
	}
	var pids []int
	for _, p := range ps {
		if p.pid != self && (matched[p.pid] || sessions[p.sid]) {
			pids = append(pids, p.pid)
		}
	}
	return pids
}

// killPIDs sends sig to pids, then SIGKILL to those left after grace, and
// waits up to killGrace for them to be gone.
func killPIDs(pids []int, sig syscall.Signal, grace time.Duration) error {
	if len(pids) == 0 {
		return nil
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, sig)
	}
	left := waitGone(pids, grace)
	if len(left) == 0 {
		return nil
	}
	for _, pid := range left {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if left = waitGone(left, killGrace); len(left) > 0 {
		return fmt.Errorf("processes %v still alive after SIGKILL", left)
	}
	return nil
}

// waitGone waits up to d for pids to exit and returns those still alive.
func waitGone(pids []int, d time.Duration) []int {
	deadline := time.Now().Add(d)
	for {
		var left []int
		for _, pid := range pids {
			if _, ok := readProc(pid); ok {
				left = append(left, pid)
			}
		}
		if len(left) == 0 || !time.Now().Before(deadline) {
			return left
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// killStrays ends strays(marker): SIGTERM if grace > 0, SIGKILL after it.
func killStrays(marker string, grace time.Duration) error {
	sig := syscall.SIGKILL
	if grace > 0 {
		sig = syscall.SIGTERM
	}
	// Two rounds: a daemon can fork once more while the first is signalled.
	var err error
	for range 2 {
		err = killPIDs(strays(marker), sig, grace)
	}
	return err
}

// logTail is "\n--- path (tail):\n" and the last lines of path, or "" if it
// is missing or empty.
func logTail(path string) string {
	data, err := readTail(path, 16<<10)
	if err != nil || len(bytes.TrimSpace(data)) == 0 {
		return ""
	}
	return fmt.Sprintf("\n--- %s (tail):\n%s", path, tailText(data, 30))
}

func readTail(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := max64(fi.Size()-max, 0)
	buf := make([]byte, fi.Size()-off)
	n, err := f.ReadAt(buf, off)
	if err != nil && n == 0 {
		return nil, err
	}
	return buf[:n], nil
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// tailText is the last n lines of data, newline-terminated.
func tailText(data []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n") + "\n"
}

// run runs argv to completion (for short commands: ip, mariadb-install-db,
// neutron-db-manage), with output appended to logPath if set; a failure
// quotes the output's tail.
func run(ctx context.Context, env []string, logPath string, argv ...string) error {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", argv[0], err)
	}
	waitc := make(chan error, 1)
	go func() { waitc <- cmd.Wait() }()
	var err error
	select {
	case err = <-waitc:
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-waitc
		err = ctx.Err()
	}
	if logPath != "" && out.Len() > 0 {
		appendLog(logPath, fmt.Sprintf("==> %s (%s)\n", strings.Join(argv, " "), time.Now().Format(time.RFC3339)), out.Bytes())
	}
	if err != nil {
		msg := strings.TrimSpace(tailText(out.Bytes(), 30))
		if msg != "" {
			msg = ":\n" + msg
		}
		return fmt.Errorf("%s: %w%s", strings.Join(argv, " "), err, msg)
	}
	return nil
}

func appendLog(path, header string, data []byte) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	f.WriteString(header)
	f.Write(data)
}
