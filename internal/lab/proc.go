package lab

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// startInNamespace starts cmd with its network namespace set to the named
// one. The child is forked from a thread that is in that namespace, so it
// inherits it, and nothing else: unlike `ip netns exec` it stays in the
// caller's mount namespace, so the router namespaces an agent bind-mounts
// under /run/netns are visible to everyone (under `ip netns exec` they would
// exist only in the agent's private mount namespace).
func startInNamespace(ns string, cmd *exec.Cmd) error {
	return inNamespace(ns, cmd.Start)
}

// childEnv is the environment of the lab's daemons: the caller's, without
// L3HA_* variables, which would otherwise override the lab's flags (a
// L3HA_DATABASE would move the lab's server onto someone's PostgreSQL).
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "L3HA_") {
			env = append(env, kv)
		}
	}
	return env
}

// startDaemon starts argv as a daemon of the lab in namespace ns: its own
// session (so no terminal signal reaches it and it outlives `lab up`), stdin
// from /dev/null, stdout and stderr appended to logPath. The returned
// Process identifies it for later commands.
func startDaemon(name, node, ns string, argv []string, logPath string) (Process, *exec.Cmd, error) {
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return Process{}, nil, err
	}
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return Process{}, nil, err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := startInNamespace(ns, cmd); err != nil {
		return Process{}, nil, fmt.Errorf("starting %s: %w", name, err)
	}
	// Reap it when it exits, for as long as this process lives.
	go cmd.Wait() //nolint:errcheck
	p := Process{Name: name, Node: node, Namespace: ns, PID: cmd.Process.Pid, Argv: argv, Log: logPath}
	st, err := procStartTime(p.PID)
	if err != nil {
		// It died at once; keep the record so that the caller reports its log.
		return p, cmd, nil
	}
	p.StartTime = st
	return p, cmd, nil
}

// procStat returns the state letter and start time of pid from
// /proc/<pid>/stat.
func procStat(pid int) (state byte, start uint64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	return parseStat(b)
}

// parseStat parses the content of /proc/<pid>/stat: state (field 3) and
// starttime (field 22). The command name (field 2) may hold spaces and
// parentheses, so fields are counted after its last ')'.
func parseStat(b []byte) (state byte, start uint64, err error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, errors.New("malformed stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); field 22 is f[19].
	if len(f) < 20 || len(f[0]) != 1 {
		return 0, 0, errors.New("malformed stat")
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("malformed stat: %w", err)
	}
	return f[0][0], start, nil
}

func procStartTime(pid int) (uint64, error) {
	_, st, err := procStat(pid)
	return st, err
}

// cmdlineOf returns /proc/<pid>/cmdline split at NULs.
func cmdlineOf(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil, err
	}
	return splitCmdline(b), nil
}

func splitCmdline(b []byte) []string {
	b = bytes.TrimSuffix(b, []byte{0})
	if len(b) == 0 {
		return nil
	}
	return strings.Split(string(b), "\x00")
}

func sameArgv(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// running reports whether p is still the process the lab started: same pid,
// same start time, same command line, and not a zombie. A recycled pid is
// never mistaken for it.
func (p Process) running() bool {
	if p.PID <= 0 {
		return false
	}
	state, start, err := procStat(p.PID)
	if err != nil || state == 'Z' || state == 'X' {
		return false
	}
	if p.StartTime != 0 && start != p.StartTime {
		return false
	}
	argv, err := cmdlineOf(p.PID)
	if err != nil {
		return false
	}
	return sameArgv(argv, p.Argv)
}

// signal sends sig to p if it is still the lab's process.
func (p Process) signal(sig syscall.Signal) error {
	if !p.running() {
		return nil
	}
	err := syscall.Kill(p.PID, sig)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	state, _, err := procStat(pid)
	return err == nil && state != 'Z' && state != 'X'
}

// stopPIDs sends SIGTERM to every pid that check still accepts, waits up to
// grace for them to exit, then SIGKILLs the rest and waits again. check is
// asked before every signal, so a pid that was recycled meanwhile is left
// alone. It returns the pids that survived.
func stopPIDs(pids []int, check func(pid int) bool, grace time.Duration) []int {
	send := func(sig syscall.Signal) {
		for _, pid := range pids {
			if check(pid) {
				_ = syscall.Kill(pid, sig)
			}
		}
	}
	waitGone := func(d time.Duration) []int {
		deadline := time.Now().Add(d)
		for {
			var left []int
			for _, pid := range pids {
				if alive(pid) && check(pid) {
					left = append(left, pid)
				}
			}
			if len(left) == 0 || time.Now().After(deadline) {
				return left
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	send(syscall.SIGTERM)
	if left := waitGone(grace); len(left) == 0 {
		return nil
	}
	send(syscall.SIGKILL)
	return waitGone(5 * time.Second)
}

// pidsInNamespaces returns the processes (other than this one) whose network
// namespace is one of inodes.
func pidsInNamespaces(inodes map[uint64]bool) []int {
	if len(inodes) == 0 {
		return nil
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if ino, ok := netnsOfPID(pid); ok && inodes[ino] {
			out = append(out, pid)
		}
	}
	return out
}

// pidsWithArgs returns the processes (other than this one) whose command
// line has flag immediately followed by value; with only, it looks at those
// pids alone.
func pidsWithArgs(flag, value string, only ...int) []int {
	var pids []int
	if len(only) > 0 {
		pids = only
	} else {
		entries, err := os.ReadDir("/proc")
		if err != nil {
			return nil
		}
		for _, e := range entries {
			if pid, err := strconv.Atoi(e.Name()); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	self := os.Getpid()
	var out []int
	for _, pid := range pids {
		if pid == self {
			continue
		}
		argv, err := cmdlineOf(pid)
		if err != nil {
			continue
		}
		for i := 0; i+1 < len(argv); i++ {
			if argv[i] == flag && argv[i+1] == value {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// netnsOfPID returns the inode of pid's network namespace.
func netnsOfPID(pid int) (uint64, bool) {
	link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return 0, false
	}
	return parseNSLink(link)
}

// parseNSLink parses "net:[4026531840]".
func parseNSLink(link string) (uint64, bool) {
	s, ok := strings.CutPrefix(link, "net:[")
	if !ok {
		return 0, false
	}
	s, ok = strings.CutSuffix(s, "]")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}

// tailFile returns the last n lines of a file, for error messages.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
