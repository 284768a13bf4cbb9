// Package kerneltest is shared support for kernel-tier tests: what they
// require (root, tools — skipped on a developer's machine, a failure in CI
// where L3HA_TEST_REQUIRE_ALL=1 promises everything is installed), throwaway
// network namespaces named l3ha-test-<random> that are always removed, and
// running commands.
package kerneltest

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/l3ha/l3ha/internal/linux"
)

// Prefix names every namespace this package creates.
const Prefix = "l3ha-test-"

// Skip skips t, or fails it when L3HA_TEST_REQUIRE_ALL=1.
func Skip(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("L3HA_TEST_REQUIRE_ALL") == "1" {
		t.Fatalf("%s (L3HA_TEST_REQUIRE_ALL=1)", why)
	}
	t.Skip(why)
}

// Require skips (see Skip) unless the test runs as root and every tool is
// on PATH.
func Require(t testing.TB, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Skip(t, "kernel tier: needs root")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			Skip(t, "kernel tier: "+tool+" not installed")
		}
	}
}

// RandHex returns n random bytes in hex.
func RandHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// Namespace creates a namespace l3ha-test-<random> with lo up and deletes it
// when t ends — after the cleanups registered later, which stop what runs
// in it.
func Namespace(t testing.TB) string {
	t.Helper()
	name := Prefix + RandHex(5)
	if err := linux.CreateNamespace(name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := linux.DeleteNamespace(name); err != nil {
			t.Errorf("deleting namespace %s: %v", name, err)
		}
	})
	return name
}

// Run runs a command and fails t with its output if it fails.
func Run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}
