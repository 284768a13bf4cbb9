package keepalived

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// fakeKeepalivedEnv makes the test binary behave as a tiny keepalived (see
// fakeKeepalived) when it runs through a symlink named "keepalived".
const fakeKeepalivedEnv = "L3HA_TEST_FAKE_KEEPALIVED"

func TestMain(m *testing.M) {
	if os.Getenv(fakeKeepalivedEnv) == "1" && filepath.Base(os.Args[0]) == "keepalived" {
		os.Exit(fakeKeepalived(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// fakeKeepalived writes its pid files once its signal handlers are in place,
// logs "Reloading ..." on SIGHUP as keepalived does, and exits on SIGTERM
// unless <conf>.ignore-term exists.
func fakeKeepalived(args []string) int {
	var conf, pid, vrrpPid string
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "-f":
			conf = args[i+1]
		case "-p":
			pid = args[i+1]
		case "-r":
			vrrpPid = args[i+1]
		}
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM)
	fmt.Println("Starting fake keepalived", strconv.Itoa(os.Getpid()))
	me := []byte(strconv.Itoa(os.Getpid()) + "\n")
	if err := os.WriteFile(pid, me, 0o644); err != nil {
		fmt.Println(err)
		return 1
	}
	if err := os.WriteFile(vrrpPid, me, 0o644); err != nil {
		fmt.Println(err)
		return 1
	}
	for s := range sigs {
		switch s {
		case syscall.SIGHUP:
			fmt.Println("Reloading ...")
		case syscall.SIGTERM:
			if _, err := os.Stat(conf + ".ignore-term"); err == nil {
				fmt.Println("ignoring SIGTERM")
				continue
			}
			os.Remove(pid)
			os.Remove(vrrpPid)
			fmt.Println("Stopped")
			return 0
		}
	}
	return 0
}
