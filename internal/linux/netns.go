package linux

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

// NodeNS names the node namespace: the network namespace the process was in
// when the package was initialised.
const NodeNS = ""

// NetnsDir is where named network namespaces are bind-mounted, as iproute2
// does.
const NetnsDir = "/run/netns"

// nodeNS is a handle on the namespace the process started in, taken during
// package initialisation (before any caller could have moved a thread).
var nodeNS, nodeNSErr = netns.Get()

// nsMu serialises namespace creation and deletion within the process, so
// that two goroutines creating the same name cannot see each other's half-made
// bind mount.
var nsMu sync.Mutex

// ErrNamespaceNotFound is returned (wrapped) when a named namespace does not
// exist.
var ErrNamespaceNotFound = errors.New("network namespace not found")

func nsPath(name string) string { return filepath.Join(NetnsDir, name) }

func validNSName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') || strings.ContainsRune(name, 0) {
		return fmt.Errorf("invalid network namespace name %q", name)
	}
	return nil
}

// isNSMount reports whether path is a bind mount of a namespace (nsfs).
func isNSMount(path string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, &os.PathError{Op: "statfs", Path: path, Err: err}
	}
	return st.Type == unix.NSFS_MAGIC, nil
}

// openNS returns a new handle on the namespace ns (NodeNS or a name under
// NetnsDir). The caller closes it.
func openNS(ns string) (netns.NsHandle, error) {
	if ns == NodeNS {
		if nodeNSErr != nil {
			return netns.None(), fmt.Errorf("node namespace: %w", nodeNSErr)
		}
		fd, err := unix.FcntlInt(uintptr(nodeNS), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return netns.None(), fmt.Errorf("node namespace: dup: %w", err)
		}
		return netns.NsHandle(fd), nil
	}
	if err := validNSName(ns); err != nil {
		return netns.None(), err
	}
	ok, err := isNSMount(nsPath(ns))
	if err != nil {
		return netns.None(), err
	}
	if !ok {
		return netns.None(), fmt.Errorf("%w: %s", ErrNamespaceNotFound, ns)
	}
	h, err := netns.GetFromPath(nsPath(ns))
	if err != nil {
		return netns.None(), fmt.Errorf("open namespace %s: %w", ns, err)
	}
	return h, nil
}

// withHandle runs fn with a rtnetlink handle whose sockets live in ns.
func withHandle(ns string, fn func(h *netlink.Handle) error) error {
	nsh, err := openNS(ns)
	if err != nil {
		return err
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink handle in %s: %w", nsLabel(ns), err)
	}
	defer h.Close()
	return fn(h)
}

func nsLabel(ns string) string {
	if ns == NodeNS {
		return "node namespace"
	}
	return "namespace " + ns
}

// NamespaceExists reports whether the named namespace exists.
func NamespaceExists(name string) (bool, error) {
	if err := validNSName(name); err != nil {
		return false, err
	}
	return isNSMount(nsPath(name))
}

// CreateNamespace creates the named network namespace, bind-mounted at
// /run/netns/name like `ip netns add`. It does nothing if the namespace
// exists; a stale file left by a crash (a plain file, not a mount) is
// replaced. The new namespace's loopback device is brought up.
func CreateNamespace(name string) error {
	if err := validNSName(name); err != nil {
		return err
	}
	nsMu.Lock()
	defer nsMu.Unlock()
	path := nsPath(name)
	if ok, err := isNSMount(path); err != nil || ok {
		return err
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

	// unshare(CLONE_NEWNET) moves the calling thread into a new namespace:
	// do it on a goroutine locked to its thread, and put the thread back
	// before unlocking it. If that fails the goroutine exits still locked and
	// the runtime discards the thread. (Letting every such thread die is not
	// an option: the main thread cannot die, the runtime parks it forever,
	// which would keep the namespace alive and make /proc/self/net show it.)
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

// prepareNetnsDir creates /run/netns and makes it a shared mount point, as
// iproute2 does, so that namespaces mounted later propagate to other mount
// namespaces (e.g. a service started with a private /tmp).
func prepareNetnsDir() error {
	if err := os.MkdirAll(NetnsDir, 0o755); err != nil {
		return err
	}
	for range 2 {
		err := unix.Mount("", NetnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("make %s shared: %w", NetnsDir, err)
		}
		// Not a mount point yet: bind it onto itself, then retry.
		if err := unix.Mount(NetnsDir, NetnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s: %w", NetnsDir, err)
		}
	}
	return fmt.Errorf("make %s shared: still not a mount point", NetnsDir)
}

// DeleteNamespace deletes the named namespace. It does nothing if the
// namespace does not exist. Every device in it except lo is deleted first,
// so that the node-side ends of its veth pairs are gone when DeleteNamespace
// returns (the kernel would otherwise remove them asynchronously, and only
// once no process or open file holds the namespace).
func DeleteNamespace(name string) error {
	if err := validNSName(name); err != nil {
		return err
	}
	nsMu.Lock()
	defer nsMu.Unlock()
	path := nsPath(name)
	ok, err := isNSMount(path)
	if err != nil {
		return err
	}
	if ok {
		err := withHandle(name, func(h *netlink.Handle) error {
			links, err := retryDump(h.LinkList)
			if err != nil {
				return err
			}
			for _, l := range links {
				if l.Attrs().Flags&unix.IFF_LOOPBACK != 0 || l.Attrs().Name == "lo" {
					continue
				}
				if err := h.LinkDel(l); err != nil && !isNotFound(err) {
					return fmt.Errorf("delete %s: %w", l.Attrs().Name, err)
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("delete namespace %s: %w", name, err)
		}
		if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("delete namespace %s: unmount: %w", name, err)
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete namespace %s: %w", name, err)
	}
	return nil
}

// ListNamespaces returns the names of the namespaces under /run/netns that
// start with prefix, sorted.
func ListNamespaces(prefix string) ([]string, error) {
	entries, err := os.ReadDir(NetnsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		if ok, err := isNSMount(nsPath(e.Name())); err != nil || !ok {
			continue // stale file or vanished meanwhile
		}
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names, nil
}

// Do runs fn on an OS thread that is in namespace ns, and waits for it.
// Sockets fn opens stay in ns after Do returns; /proc/sys/net read or written
// by fn is ns's. fn runs on a goroutine of its own: goroutines it starts are
// not in ns. The thread is put back in its original namespace afterwards; if
// that fails the thread is discarded, never reused. A panic in fn is re-raised
// in the caller.
func Do(ns string, fn func() error) error {
	target, err := openNS(ns)
	if err != nil {
		return err
	}
	defer target.Close()

	type result struct {
		err      error
		panicked bool
		panicVal any
	}
	resc := make(chan result, 1)
	go func() {
		// Not unlocked unless the thread is back in its own namespace: a
		// goroutine that exits locked takes its thread with it.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			resc <- result{err: fmt.Errorf("current namespace: %w", err)}
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			resc <- result{err: fmt.Errorf("enter %s: %w", nsLabel(ns), err)}
			return
		}
		var res result
		func() {
			defer func() {
				if r := recover(); r != nil {
					res = result{panicked: true, panicVal: r}
				}
			}()
			res.err = fn()
		}()
		if err := netns.Set(orig); err != nil {
			res.err = errors.Join(res.err, fmt.Errorf("leave %s: %w", nsLabel(ns), err))
			resc <- res
			return
		}
		runtime.UnlockOSThread()
		resc <- res
	}()
	res := <-resc
	if res.panicked {
		panic(res.panicVal)
	}
	return res.err
}

// retryDump retries a netlink dump the kernel reported as interrupted by a
// concurrent change (NLM_F_DUMP_INTR); such a dump may be inconsistent.
func retryDump[T any](f func() (T, error)) (T, error) {
	var v T
	var err error
	for range 10 {
		v, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}

func isNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}
