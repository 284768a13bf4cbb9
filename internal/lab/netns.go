package lab

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/l3ha/l3ha/internal/linux"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsDir is where named network namespaces are bind-mounted, as iproute2
// does (`ip netns add`).
const netnsDir = "/run/netns"

func nsPath(name string) string { return filepath.Join(netnsDir, name) }

// nsExists reports whether the named namespace exists.
func nsExists(name string) bool {
	ok, err := linux.NamespaceExists(name)
	return err == nil && ok
}

// listNamespaces returns the names under /run/netns (mounted namespaces and
// stale files alike) for which keep returns true, sorted.
func listNamespaces(keep func(string) bool) ([]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if keep(e.Name()) {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}

// createNamespace creates the named network namespace (like `ip netns add`)
// and brings its loopback up. Unlike linux.CreateNamespace it fails if the
// namespace exists already: a lab never adopts a namespace it did not make.
func createNamespace(name string) error {
	if nsExists(name) {
		return fmt.Errorf("namespace %s exists already", name)
	}
	return linux.CreateNamespace(name)
}

// deleteNamespace deletes the named namespace (like `ip netns delete`),
// also when it is only a stale file. Deleting what does not exist succeeds.
func deleteNamespace(name string) error { return linux.DeleteNamespace(name) }

// nsInode is the inode that identifies the named namespace (the number in
// /proc/<pid>/ns/net's "net:[N]"); 0 when it does not exist.
func nsInode(name string) uint64 {
	if !nsExists(name) {
		return 0
	}
	var st unix.Stat_t
	if err := unix.Stat(nsPath(name), &st); err != nil {
		return 0
	}
	return st.Ino
}

// openNS opens a handle on the named namespace; the caller closes it.
func openNS(name string) (netns.NsHandle, error) {
	if !nsExists(name) {
		return netns.None(), fmt.Errorf("network namespace %s does not exist", name)
	}
	h, err := netns.GetFromPath(nsPath(name))
	if err != nil {
		return netns.None(), fmt.Errorf("open namespace %s: %w", name, err)
	}
	return h, nil
}

// withHandle runs fn with an rtnetlink handle whose socket lives in the named
// namespace: no thread of the caller changes namespace.
func withHandle(name string, fn func(h *netlink.Handle) error) error {
	h, err := handleIn(name)
	if err != nil {
		return err
	}
	defer h.Close()
	return fn(h)
}

// handleIn returns an rtnetlink handle in the named namespace; the caller
// closes it.
func handleIn(name string) (*netlink.Handle, error) {
	nsh, err := openNS(name)
	if err != nil {
		return nil, err
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in %s: %w", name, err)
	}
	return h, nil
}

// inNamespace runs fn on an OS thread that is in the named namespace and
// waits for it (linux.Do). Sockets fn opens and processes fn starts (they
// inherit the namespace of the forking thread) live in that namespace;
// everything else about the process (mount namespace, files) is unchanged.
func inNamespace(name string, fn func() error) error { return linux.Do(name, fn) }

// retryDump repeats a netlink dump that the kernel interrupted because the
// table changed meanwhile.
func retryDump[T any](dump func() ([]T, error)) ([]T, error) {
	var (
		out []T
		err error
	)
	for range 10 {
		out, err = dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, err
		}
	}
	return out, err
}

// isNotFound reports whether a netlink error means "no such device".
func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}

// hasPrefixAny reports whether s starts with one of prefixes.
func hasPrefixAny(s string, prefixes ...string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
