package lab

// Where a benchmark ran (Machine) and the kernel's input backlog drops.

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// backlogDrops sums the second column of /proc/net/softnet_stat: packets
// dropped because a CPU's input backlog was full.
func backlogDrops() uint64 {
	b, err := os.ReadFile("/proc/net/softnet_stat")
	if err != nil {
		return 0
	}
	var sum uint64
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		if v, err := strconv.ParseUint(f[1], 16, 64); err == nil {
			sum += v
		}
	}
	return sum
}

// Machine describes where a benchmark ran.
type Machine struct {
	CPUs              int       `json:"nproc"`
	CPUModel          string    `json:"cpu_model,omitempty"`
	MemoryMiB         int64     `json:"memory_mib,omitempty"`
	Kernel            string    `json:"kernel"`
	GoVersion         string    `json:"go_version"`
	Date              time.Time `json:"date"`
	LoadAvg           string    `json:"loadavg_at_start,omitempty"`
	KeepalivedVersion string    `json:"keepalived_version,omitempty"`
}

// ThisMachine describes this machine now.
func ThisMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), Date: time.Now().UTC().Truncate(time.Second)}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if kb, err := procKBOf("/proc/meminfo", "MemTotal"); err == nil {
		m.MemoryMiB = kb / 1024
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	return m
}

// procKBOf reads "Key: N kB" from a /proc file.
func procKBOf(path, key string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && k == key {
			f := strings.Fields(v)
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("%s: no %s", path, key)
}

// Summary is one line about the machine, for the plot.
func (m Machine) Summary() string {
	s := fmt.Sprintf("%d CPUs", m.CPUs)
	if m.CPUModel != "" {
		s += " (" + m.CPUModel + ")"
	}
	s += fmt.Sprintf(", Linux %s, %s", m.Kernel, m.Date.Format("2006-01-02"))
	if m.KeepalivedVersion != "" {
		s += ", " + m.KeepalivedVersion
	}
	return s
}
