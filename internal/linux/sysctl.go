package linux

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// sysctlPath turns a sysctl key into its /proc/sys path. Keys use dots
// ("net.ipv4.ip_forward") or slashes ("net/ipv6/conf/eth0.100/disable_ipv6",
// needed when a device name contains a dot).
func sysctlPath(key string) (string, error) {
	k := key
	if !strings.Contains(k, "/") {
		k = strings.ReplaceAll(k, ".", "/")
	}
	k = strings.TrimPrefix(k, "/")
	clean := filepath.Clean(k)
	if k == "" || clean != k || strings.HasPrefix(clean, "..") {
		return "", fmt.Errorf("invalid sysctl key %q", key)
	}
	return filepath.Join("/proc/sys", clean), nil
}

// Sysctl reads one sysctl of namespace ns (net.* keys are per namespace;
// others are global).
func Sysctl(ns, key string) (string, error) {
	path, err := sysctlPath(key)
	if err != nil {
		return "", err
	}
	var v string
	err = Do(ns, func() error {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("sysctl %s: %w", key, err)
		}
		v = string(bytes.TrimSpace(b))
		return nil
	})
	return v, err
}

// SetSysctls sets the sysctls in kv in namespace ns, in key order, writing
// only those whose value differs (writing some, e.g. net.ipv4.ip_forward,
// has side effects even when the value does not change). Examples:
// net.ipv4.ip_forward=1, net.ipv4.ip_nonlocal_bind=1,
// net.ipv6.conf.<qg device>.disable_ipv6=1.
func SetSysctls(ns string, kv map[string]string) error {
	keys := make([]string, 0, len(kv))
	paths := make(map[string]string, len(kv))
	for k := range kv {
		p, err := sysctlPath(k)
		if err != nil {
			return err
		}
		keys = append(keys, k)
		paths[k] = p
	}
	sort.Strings(keys)
	// /proc/sys/net resolves to the network namespace of the thread that
	// opens the file, so open it from a thread inside ns.
	return Do(ns, func() error {
		for _, k := range keys {
			want := strings.TrimSpace(kv[k])
			cur, err := os.ReadFile(paths[k])
			if err != nil {
				return fmt.Errorf("sysctl %s in %s: %w", k, nsLabel(ns), err)
			}
			if sameSysctl(string(cur), want) {
				continue
			}
			if err := os.WriteFile(paths[k], []byte(want), 0o644); err != nil {
				return fmt.Errorf("sysctl %s=%s in %s: %w", k, want, nsLabel(ns), err)
			}
		}
		return nil
	})
}

// sameSysctl compares values the way sysctl prints them: multi-field values
// (e.g. "32768\t60999") compare field by field.
func sameSysctl(cur, want string) bool {
	return strings.Join(strings.Fields(cur), " ") == strings.Join(strings.Fields(want), " ")
}
