package lab

import (
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

// ClockJump is how far FaultClockJump sets the clock back (and then
// forward again).
const ClockJump = time.Hour

// clockJump moves the machine's wall clock — every node of the lab shares
// it — back by ClockJump and later forward to the true time again. It
// never sets the clock ahead of the true time: other processes on the
// machine then at worst see time pass more slowly, never a timeout fire
// early. A watchdog process of its own session puts the clock right if
// the lab dies before it does (see startClockWatchdog).
type clockJump struct {
	// t0 carries the monotonic reading the true time is computed from.
	t0       time.Time
	mark     string
	watchdog *os.Process
	once     sync.Once
	err      error
}

// clockWatchdogAfter is how long the watchdog waits before it restores a
// clock the lab did not restore itself.
const clockWatchdogAfter = 2 * time.Minute

// jumpClockBack starts the watchdog, then sets the clock back by d. dir
// holds the watchdog's mark file.
func jumpClockBack(dir string, d time.Duration) (*clockJump, error) {
	c := &clockJump{t0: time.Now(), mark: filepath.Join(dir, "clock-jump.mark")}
	up, err := uptime()
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(c.mark, []byte(c.t0.UTC().Format(time.RFC3339Nano)+"\n"), 0o600); err != nil {
		return nil, err
	}
	// The true time is t0 plus the boot-clock time since (CLOCK_BOOTTIME,
	// /proc/uptime, does not move with the wall clock).
	script := fmt.Sprintf(`sleep %d; if [ -e %q ]; then now=$(awk -v r0=%.6f -v u0=%s '{printf "%%.6f", r0 + $1 - u0}' /proc/uptime); date -u -s "@$now" >/dev/null; rm -f %q; fi`,
		int(clockWatchdogAfter.Seconds()), c.mark, float64(c.t0.UnixMicro())/1e6, up, c.mark)
	cmd := exec.Command("sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		os.Remove(c.mark)
		return nil, fmt.Errorf("starting the clock watchdog: %w", err)
	}
	c.watchdog = cmd.Process
	go cmd.Wait() // reaped whenever it ends
	if err := setClock(time.Now().Add(-d)); err != nil {
		c.restore()
		return nil, fmt.Errorf("setting the clock back: %w", err)
	}
	return c, nil
}

// restore sets the clock to the true time and ends the watchdog; it may be
// called more than once.
func (c *clockJump) restore() error {
	c.once.Do(func() {
		c.err = setClock(c.t0.Add(time.Since(c.t0)))
		if c.err == nil {
			os.Remove(c.mark)
			_ = c.watchdog.Signal(syscall.SIGTERM)
		}
	})
	return c.err
}

func setClock(t time.Time) error {
	ts := unix.NsecToTimespec(t.UnixNano())
	return unix.ClockSettime(unix.CLOCK_REALTIME, &ts)
}

// uptime is /proc/uptime's first field, as written there.
func uptime() (string, error) {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return "", err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "", errors.New("/proc/uptime is empty")
	}
	if _, err := strconv.ParseFloat(f[0], 64); err != nil {
		return "", fmt.Errorf("/proc/uptime: %w", err)
	}
	return f[0], nil
}

// cpuSeconds is the user and system CPU time a process has used.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command (which may hold spaces) in parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	const clkTck = 100 // sysconf(_SC_CLK_TCK) on Linux
	return float64(ut+st) / clkTck, nil
}
