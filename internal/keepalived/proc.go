package keepalived

import (
	"bytes"
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

// process is one running keepalived (its parent process; the VRRP child is
// in the same process group) as the Manager sees it.
type process interface {
	Pid() int
	// Signal signals the keepalived parent.
	Signal(sig syscall.Signal) error
	// KillGroup sends SIGKILL to the whole process group (parent and VRRP
	// child).
	KillGroup()
	// Done is closed once the parent has exited.
	Done() <-chan struct{}
	// Release stops watching the process without touching it.
	Release()
}

// procSpec is what is needed to start one keepalived.
type procSpec struct {
	Namespace string
	Args      []string // keepalived's arguments
	LogPath   string
}

// starter starts a keepalived.
type starter func(procSpec) (process, error)

// maxLogSize is the size above which a router's keepalived.log is rotated
// (to keepalived.log.1) when keepalived is (re)started.
const maxLogSize = 4 << 20

// execStarter runs keepalived with "ip netns exec", which enters the
// namespace and execs keepalived in the same process, so the child's pid is
// keepalived's.
func execStarter(ipPath, keepalivedPath string) starter {
	return func(s procSpec) (process, error) {
		if fi, err := os.Stat(s.LogPath); err == nil && fi.Size() > maxLogSize {
			_ = os.Rename(s.LogPath, s.LogPath+".1")
		}
		// keepalived's console log goes to a file, never a pipe: a pipe would
		// break (SIGPIPE) when the agent that read it exits, and keepalived
		// must outlive the agent.
		logf, err := os.OpenFile(s.LogPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			return nil, err
		}
		defer logf.Close()
		var cmd *exec.Cmd
		if ipPath == "" { // tests: no namespace
			cmd = exec.Command(keepalivedPath, s.Args...)
		} else {
			cmd = exec.Command(ipPath, append([]string{"netns", "exec", s.Namespace, keepalivedPath}, s.Args...)...)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		// Own process group: a Ctrl-C at the agent's terminal must not reach
		// keepalived. No Pdeathsig: keepalived outlives the agent.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		p := &childProc{cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{})}
		go func() {
			// Reaps the child even after the Manager is closed, so that a
			// keepalived removed by another Manager leaves no zombie.
			_ = cmd.Wait()
			close(p.done)
		}()
		return p, nil
	}
}

// childProc is a keepalived the Manager started.
type childProc struct {
	cmd  *exec.Cmd
	pid  int
	done chan struct{}
}

func (p *childProc) Pid() int              { return p.pid }
func (p *childProc) Done() <-chan struct{} { return p.done }
func (p *childProc) Release()              {}

func (p *childProc) Signal(sig syscall.Signal) error {
	// os.Process signals through a pidfd: never a recycled pid.
	return p.cmd.Process.Signal(sig)
}

func (p *childProc) KillGroup() {
	_ = p.cmd.Process.Kill()
	// The group id stays reserved while any member lives, so this reaches
	// only this keepalived's VRRP child if it outlived its parent.
	_ = syscall.Kill(-p.pid, syscall.SIGKILL)
}

// procInfo is what /proc says about a process.
type procInfo struct {
	State     byte
	PGrp      int
	StartTime uint64
	Args      []string
}

func readProcInfo(pid int) (procInfo, error) {
	var pi procInfo
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return pi, err
	}
	// pid (comm) state ppid pgrp ... ; comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return pi, errors.New("malformed stat")
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 20 {
		return pi, errors.New("short stat")
	}
	pi.State = f[0][0]
	if pi.PGrp, err = strconv.Atoi(f[2]); err != nil {
		return pi, err
	}
	if pi.StartTime, err = strconv.ParseUint(f[19], 10, 64); err != nil {
		return pi, err
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return pi, err
	}
	pi.Args = strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	return pi, nil
}

// isOurKeepalived reports whether pi is a live keepalived reading confPath.
func (pi procInfo) isOurKeepalived(confPath string) bool {
	if pi.State == 'Z' || pi.State == 'X' || len(pi.Args) == 0 || filepath.Base(pi.Args[0]) != "keepalived" {
		return false
	}
	for i, a := range pi.Args {
		switch {
		case (a == "-f" || a == "--use-file") && i+1 < len(pi.Args) && pi.Args[i+1] == confPath:
			return true
		case a == "-f"+confPath || a == "--use-file="+confPath:
			return true
		}
	}
	return false
}

// findKeepalived returns the keepalived whose pid is in pidFile if it is
// alive and reads confPath, or nil.
func findKeepalived(pidFile, confPath string) (pid int, pi procInfo, ok bool) {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return 0, pi, false
	}
	pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, pi, false
	}
	pi, err = readProcInfo(pid)
	if err != nil || !pi.isOurKeepalived(confPath) {
		return 0, pi, false
	}
	return pid, pi, true
}

// adoptedProc is a keepalived started by an earlier agent: not our child, so
// its exit is learnt from a pidfd (or, without pidfd support, by polling
// /proc), and it is signalled through the pidfd so that a recycled pid is
// never hit.
type adoptedProc struct {
	pid   int
	info  procInfo
	done  chan struct{}
	stop  chan struct{}
	once  sync.Once
	mu    sync.Mutex
	pidfd int // -1 without pidfd
}

// pollInterval bounds how late the exit of an adopted keepalived is seen.
const pollInterval = 250 * time.Millisecond

func adoptProcess(pid int, info procInfo, confPath string) (*adoptedProc, error) {
	p := &adoptedProc{pid: pid, info: info, done: make(chan struct{}), stop: make(chan struct{}), pidfd: -1}
	if fd, err := unix.PidfdOpen(pid, 0); err == nil {
		// The pid may have been recycled between the check and the open.
		if cur, err := readProcInfo(pid); err != nil || cur.StartTime != info.StartTime || !cur.isOurKeepalived(confPath) {
			unix.Close(fd)
			return nil, fmt.Errorf("keepalived %d exited while being adopted", pid)
		}
		p.pidfd = fd
	}
	go p.watch()
	return p, nil
}

func (p *adoptedProc) alive() bool {
	cur, err := readProcInfo(p.pid)
	return err == nil && cur.StartTime == p.info.StartTime && cur.State != 'Z' && cur.State != 'X'
}

func (p *adoptedProc) watch() {
	defer func() {
		p.mu.Lock()
		if p.pidfd >= 0 {
			unix.Close(p.pidfd)
			p.pidfd = -1
		}
		p.mu.Unlock()
	}()
	for {
		select {
		case <-p.stop:
			return
		default:
		}
		exited := false
		if p.pidfd >= 0 {
			fds := []unix.PollFd{{Fd: int32(p.pidfd), Events: unix.POLLIN}}
			n, err := unix.Poll(fds, int(pollInterval/time.Millisecond))
			switch {
			case err == unix.EINTR:
			case err != nil:
				exited = !p.alive()
				time.Sleep(pollInterval)
			case n > 0:
				exited = true
			}
		} else {
			exited = !p.alive()
			if !exited {
				select {
				case <-p.stop:
					return
				case <-time.After(pollInterval):
				}
			}
		}
		if exited {
			close(p.done)
			return
		}
	}
}

func (p *adoptedProc) Pid() int              { return p.pid }
func (p *adoptedProc) Done() <-chan struct{} { return p.done }
func (p *adoptedProc) Release()              { p.once.Do(func() { close(p.stop) }) }

func (p *adoptedProc) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pidfd >= 0 {
		return unix.PidfdSendSignal(p.pidfd, sig, nil, 0)
	}
	if !p.alive() {
		return os.ErrProcessDone
	}
	return syscall.Kill(p.pid, sig)
}

func (p *adoptedProc) KillGroup() {
	_ = p.Signal(syscall.SIGKILL)
	if p.info.PGrp == p.pid {
		_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	}
}
