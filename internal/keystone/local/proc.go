package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Stop's patience: the master gets termGrace after SIGTERM before the group
// gets SIGKILL, and the group killGrace after that to disappear.
const (
	termGrace = 15 * time.Second
	killGrace = 10 * time.Second
)

// proc is a uWSGI master this package started (the leader of its own
// session and process group) and the logs that explain its failures.
type proc struct {
	pid     int
	logs    []string // uwsgi log, keystone log
	done    chan struct{}
	waitErr error // valid once done is closed

	endOnce sync.Once
	endErr  error
}

// childEnv is this process's environment without what would change how
// keystone-manage, Keystone or uWSGI behave: OS_* (oslo.config reads
// OS_<GROUP>__<OPTION>, bootstrap reads OS_BOOTSTRAP_*), PYTHON* (pyenv's
// PYTHONPATH or PYTHONHOME would break Debian's /usr/bin/python3), UWSGI_*
// (uWSGI options) and HOME (oslo.config searches ~/.keystone), plus
// HOME=dir and no Python user site.
func childEnv(dir string, extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(name, "OS_"), strings.HasPrefix(name, "PYTHON"), strings.HasPrefix(name, "UWSGI_"),
			name == "HOME", name == "SNAP", name == "SNAP_COMMON":
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "HOME="+dir, "PYTHONNOUSERSITE=1")
	return append(env, extra...)
}

// manage runs keystone-manage with the main config. Its output is appended
// to keystone-manage.log and, on failure, quoted in the error together
// with the tail of keystone.log.
func (k *Keystone) manage(ctx context.Context, command string, args ...string) error {
	argv := append([]string{"--config-file", k.conf.Conf, command}, args...)
	cmd := exec.CommandContext(ctx, keystoneManage, argv...)
	cmd.Dir = k.Dir
	cmd.Env = childEnv(k.Dir)
	if command == "bootstrap" {
		// Not on the command line, where ps would show it.
		cmd.Env = append(cmd.Env, "OS_BOOTSTRAP_PASSWORD="+k.AdminPassword)
	}
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if len(out) > 0 {
		appendLog(filepath.Join(k.Dir, "keystone-manage.log"), fmt.Sprintf("==> keystone-manage %s (%s)\n", command, time.Now().Format(time.RFC3339)), out)
	}
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		var output string
		if len(bytes.TrimSpace(out)) > 0 {
			output = "\n--- output (tail):\n" + tailText(out, 30)
		}
		return fmt.Errorf("local keystone: keystone-manage %s: %w%s%s", command, err, output, logTail(k.conf.LogFile))
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

// startUWSGI starts uWSGI serving keystone-wsgi-public with conf on ln,
// which it closes (uWSGI has its own copy). uwsgiLog is relative to k.Dir.
func (k *Keystone) startUWSGI(conf config, ln *net.TCPListener, uwsgiLog string) (*proc, error) {
	defer ln.Close()
	sock, err := ln.File()
	if err != nil {
		return nil, fmt.Errorf("local keystone: handing the socket to uwsgi: %w", err)
	}
	defer sock.Close()
	logPath := filepath.Join(k.Dir, uwsgiLog)
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("local keystone: uwsgi log: %w", err)
	}
	defer logf.Close()

	cmd := exec.Command(uwsgiBinary,
		"--strict",
		"--plugins", "python3",
		"--master",
		"--http-socket", "fd://3", // ExtraFiles[0]
		// One single-threaded worker, so that Keystone's transactions
		// never overlap: oslo.db begins each with a plain (deferred) BEGIN,
		// and of two concurrent writers to SQLite one fails at once with
		// "database is locked" (HTTP 500 or a dropped connection). Threads
		// have more trouble: concurrent first requests race oslo.policy's
		// first rule load and are denied (403 even for an admin).
		"--processes", "1",
		"--threads", "1",
		"--enable-threads", // for whatever threads the application starts
		"--single-interpreter",
		// Preforked after the app loaded (no lazy-apps: one load, not
		// three); the fork hooks let CPython reinitialise locks and
		// reseed random in the workers.
		"--py-call-uwsgi-fork-hooks",
		"--wsgi-file", keystoneWSGI,
		"--need-app",
		"--die-on-term",
		"--no-orphans",
		"--thunder-lock",
		"--buffer-size", "65535",
		// uWSGI's http-socket closes every connection after the answer
		// without saying so; clients that reuse connections (Go's among
		// them) would fail a POST now and then with EOF.
		"--add-header", "Connection: close",
		"--chdir", conf.Dir,
	)
	cmd.Dir = conf.Dir
	cmd.Env = childEnv(k.Dir, "OS_KEYSTONE_CONFIG_FILES="+conf.Conf)
	cmd.Stdout, cmd.Stderr = logf, logf // a file, not a pipe: uWSGI may outlive us
	cmd.ExtraFiles = []*os.File{sock}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if !k.detach {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGTERM
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("local keystone: starting uwsgi: %w", err)
	}
	p := &proc{pid: cmd.Process.Pid, logs: []string{logPath, conf.LogFile}, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	k.log.Debug("uwsgi started", "pid", p.pid, "conf", conf.Conf, "log", logPath)
	return p, nil
}

// stop ends p's process group: SIGTERM to the master (--die-on-term: it
// stops its workers and exits), SIGKILL to the group if that takes longer
// than termGrace or anything of the group is left, and waits until the
// group is empty. Idempotent.
func (p *proc) stop() error { return p.end(true) }

// kill is stop without the SIGTERM: for a uWSGI that never became ready
// (while it loads the application it does not act on SIGTERM).
func (p *proc) kill() error { return p.end(false) }

func (p *proc) end(graceful bool) error {
	p.endOnce.Do(func() {
		select {
		case <-p.done:
		default:
			grace := time.Duration(0)
			if graceful {
				_ = syscall.Kill(p.pid, syscall.SIGTERM)
				grace = termGrace
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
	})
	return p.endErr
}

// killGroup SIGKILLs what is left of process group pgid (workers that
// outlived their master) and waits up to grace for it to be empty.
func killGroup(pgid int, grace time.Duration) error {
	if !groupAlive(pgid) {
		return nil
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	deadline := time.Now().Add(grace)
	for groupAlive(pgid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("local keystone: process group %d still has live processes %v after SIGKILL", pgid, groupMembers(pgid))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// groupAlive reports whether process group pgid has a process that is not a
// zombie (an orphaned worker's zombie waits for init, which is not ours to
// hurry).
func groupAlive(pgid int) bool {
	if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	return len(groupMembers(pgid)) > 0
}

// groupMembers lists the live (not zombie) processes of group pgid.
func groupMembers(pgid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces and ")".
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if g, err := strconv.Atoi(f[2]); err == nil && g == pgid {
			pids = append(pids, pid)
		}
	}
	return pids
}

// logTails is the tails of p's logs, for an error message.
func (p *proc) logTails() string {
	var b strings.Builder
	for _, l := range p.logs {
		b.WriteString(logTail(l))
	}
	return b.String()
}

// logTail is "\n--- path (tail):\n" and the last lines of path, or "" if it
// is missing or empty.
func logTail(path string) string {
	data, err := readTail(path, 16<<10)
	if err != nil || len(data) == 0 {
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
	off := fi.Size() - max
	if off < 0 {
		off = 0
	}
	buf := make([]byte, fi.Size()-off)
	n, err := f.ReadAt(buf, off)
	if err != nil && n == 0 {
		return nil, err
	}
	return buf[:n], nil
}

// tailText is the last n lines of data, newline-terminated.
func tailText(data []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n") + "\n"
}
