package linux

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func nsInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestCreateNamespaceIsIdempotentAndDeleteRemovesIt(t *testing.T) {
	ns := newNS(t)
	ino := nsInode(t, nsPath(ns))
	if err := CreateNamespace(ns); err != nil {
		t.Fatalf("second CreateNamespace: %v", err)
	}
	mustEqual(t, "namespace inode after second create", nsInode(t, nsPath(ns)), ino)
	if ok, err := NamespaceExists(ns); err != nil || !ok {
		t.Fatalf("NamespaceExists = %v, %v", ok, err)
	}
	if lo := link(t, ns, "lo"); lo.Attrs().Flags&unix.IFF_UP == 0 {
		t.Error("lo is not up in a new namespace")
	}
	list, err := ListNamespaces(testNSPrefix)
	if err != nil || !slices.Contains(list, ns) {
		t.Fatalf("ListNamespaces(%q) = %v, %v; want it to contain %s", testNSPrefix, list, err, ns)
	}
	other := newNS(t)
	if nsInode(t, nsPath(other)) == ino {
		t.Fatal("two namespaces share an inode")
	}

	for i := range 2 {
		if err := DeleteNamespace(ns); err != nil {
			t.Fatalf("DeleteNamespace #%d: %v", i+1, err)
		}
	}
	assertThreadsInNodeNS(t)
	if ok, err := NamespaceExists(ns); err != nil || ok {
		t.Fatalf("NamespaceExists after delete = %v, %v", ok, err)
	}
	if _, err := os.Stat(nsPath(ns)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s still there: %v", nsPath(ns), err)
	}
	if list, _ := ListNamespaces(testNSPrefix); slices.Contains(list, ns) {
		t.Fatalf("deleted namespace still listed: %v", list)
	}
	if err := withHandle(ns, func(*netlink.Handle) error { return nil }); !errors.Is(err, ErrNamespaceNotFound) {
		t.Fatalf("using a deleted namespace: %v, want ErrNamespaceNotFound", err)
	}
}

func TestCreateNamespaceReplacesStaleFile(t *testing.T) {
	ns := newNS(t)
	if err := DeleteNamespace(ns); err != nil {
		t.Fatal(err)
	}
	// What a crash between creating the file and mounting on it leaves.
	if err := os.WriteFile(nsPath(ns), nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if list, _ := ListNamespaces(testNSPrefix); slices.Contains(list, ns) {
		t.Fatal("a stale file is listed as a namespace")
	}
	if err := CreateNamespace(ns); err != nil {
		t.Fatal(err)
	}
	if ok, _ := NamespaceExists(ns); !ok {
		t.Fatal("namespace not created over the stale file")
	}
}

func TestNamespaceNamesAreValidated(t *testing.T) {
	for _, bad := range []string{"", ".", "..", "a/b", "../etc"} {
		if err := CreateNamespace(bad); err == nil {
			t.Errorf("CreateNamespace(%q) succeeded", bad)
		}
		if err := DeleteNamespace(bad); err == nil {
			t.Errorf("DeleteNamespace(%q) succeeded", bad)
		}
	}
}

func TestDoRunsInTheNamespaceAndLeavesNoThreadBehind(t *testing.T) {
	ns := newNS(t)
	target, err := netns.GetFromPath(nsPath(ns))
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	for range 20 {
		err := Do(ns, func() error {
			cur, err := netns.Get()
			if err != nil {
				return err
			}
			defer cur.Close()
			if !cur.Equal(target) {
				return errors.New("fn does not run in the namespace")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	assertThreadsInNodeNS(t)

	sentinel := errors.New("from fn")
	if err := Do(ns, func() error { return sentinel }); !errors.Is(err, sentinel) {
		t.Errorf("Do returned %v, want fn's error", err)
	}
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("recovered %v, want fn's panic", r)
			}
		}()
		Do(ns, func() error { panic("boom") })
	}()
	if err := Do(testNSPrefix+"does-not-exist", func() error { return nil }); !errors.Is(err, ErrNamespaceNotFound) {
		t.Errorf("Do in a missing namespace: %v, want ErrNamespaceNotFound", err)
	}
}

// assertThreadsInNodeNS checks that every thread of the process is in the
// namespace the process started in: nothing this package did left a thread
// (which the Go runtime could reuse for any goroutine) in another namespace.
func assertThreadsInNodeNS(t *testing.T) {
	t.Helper()
	// The namespace the process started in (not /proc/self/ns/net, which
	// is the main thread's).
	own, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", nodeNS))
	if err != nil {
		t.Fatal(err)
	}

	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		got, err := os.Readlink(filepath.Join("/proc/self/task", task.Name(), "ns/net"))
		if err != nil {
			continue // thread exited meanwhile
		}
		if got != own {
			t.Errorf("thread %s is in %s, the process in %s", task.Name(), got, own)
		}
	}
}

func TestNamespaceOperationsAreSafeConcurrently(t *testing.T) {
	requireRoot(t)
	const n = 8
	base := newNS(t) // for its random name
	errs := make(chan error, n)
	for i := range n {
		go func() {
			name := fmt.Sprintf("%s-%d", base, i)
			errs <- func() error {
				defer DeleteNamespace(name)
				if err := CreateNamespace(name); err != nil {
					return err
				}
				if err := CreateNamespace(name); err != nil {
					return err
				}
				if err := SetSysctls(name, map[string]string{"net.ipv4.ip_forward": "1"}); err != nil {
					return err
				}
				if err := EnsureBridge(name, "br0", 0); err != nil {
					return err
				}
				if v, err := Sysctl(name, "net.ipv4.ip_forward"); err != nil || v != "1" {
					return fmt.Errorf("%s: ip_forward = %q, %v", name, v, err)
				}
				return DeleteNamespace(name)
			}()
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if list, _ := ListNamespaces(base + "-"); len(list) != 0 {
		t.Errorf("left behind: %v", list)
	}
	assertThreadsInNodeNS(t)
}
