package lab

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsDir is where named network namespaces are bind-mounted, as iproute2
// does (`ip netns add`).
const netnsDir = "/run/netns"

// nsMu serialises namespace creation and deletion within the process.
var nsMu sync.Mutex

func nsPath(name string) string { return filepath.Join(netnsDir, name) }

// isNSMount reports whether path is a bind mount of a namespace (nsfs).
func isNSMount(path string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false
	}
	return st.Type == unix.NSFS_MAGIC
}

// nsExists reports whether the named namespace exists.
func nsExists(name string) bool { return isNSMount(nsPath(name)) }

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

// prepareNetnsDir creates /run/netns and makes it a shared mount point, as
// iproute2 does, so that namespaces mounted later propagate to every mount
// namespace.
func prepareNetnsDir() error {
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return err
	}
	for range 2 {
		err := unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("make %s shared: %w", netnsDir, err)
		}
		if err := unix.Mount(netnsDir, netnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s: %w", netnsDir, err)
		}
	}
	return fmt.Errorf("make %s shared: still not a mount point", netnsDir)
}

// createNamespace creates the named network namespace (like `ip netns add`)
// and brings its loopback up. It fails if the namespace exists already.
func createNamespace(name string) error {
	nsMu.Lock()
	defer nsMu.Unlock()
	path := nsPath(name)
	if isNSMount(path) {
		return fmt.Errorf("namespace %s exists already", name)
	}
	if err := prepareNetnsDir(); err != nil {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	f.Close()
	// unshare(CLONE_NEWNET) moves the calling thread: do it on a locked
	// goroutine and put the thread back before unlocking it. If that fails
	// the goroutine exits locked and the runtime discards the thread.
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("current namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		mountErr := unix.Mount(src, path, "none", unix.MS_BIND, "")
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(mountErr, fmt.Errorf("restore thread namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		if mountErr != nil {
			mountErr = fmt.Errorf("bind mount %s: %w", path, mountErr)
		}
		errc <- mountErr
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	return withHandle(name, func(h *netlink.Handle) error {
		lo, err := h.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("namespace %s: lo: %w", name, err)
		}
		return h.LinkSetUp(lo)
	})
}

// deleteNamespace deletes the named namespace (like `ip netns delete`),
// also when it is only a stale file. Deleting what does not exist succeeds.
func deleteNamespace(name string) error {
	nsMu.Lock()
	defer nsMu.Unlock()
	path := nsPath(name)
	if isNSMount(path) {
		if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("delete namespace %s: unmount: %w", name, err)
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete namespace %s: %w", name, err)
	}
	return nil
}

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
// waits for it. Sockets fn opens and processes fn starts (they inherit the
// namespace of the forking thread) live in that namespace; everything else
// about the process (mount namespace, files) is unchanged. The thread is put
// back afterwards; if that fails the thread is discarded, never reused.
func inNamespace(name string, fn func() error) error {
	target, err := openNS(name)
	if err != nil {
		return err
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("current namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			errc <- fmt.Errorf("enter namespace %s: %w", name, err)
			return
		}
		var ferr error
		func() {
			defer func() {
				if r := recover(); r != nil {
					ferr = fmt.Errorf("panic in namespace %s: %v", name, r)
				}
			}()
			ferr = fn()
		}()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leave namespace %s: %w", name, err))
			return // still locked: the thread dies with the goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

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
