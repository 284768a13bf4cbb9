package servertest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/server"
)

// childEnv, in the environment of a test binary StartProcess started, holds
// the JSON of the childConfig it must serve instead of running tests.
const childEnv = "L3HA_SERVERTEST_CHILD"

// childConfig is what a child server is started with.
type childConfig struct {
	DatabaseURL string `json:"database_url"`
}

// RunChildIfAsked makes the test binary serve as the server StartProcess
// asked for, and exit, when it is that child; otherwise it returns at once.
// Call it first in the package's TestMain.
func RunChildIfAsked() {
	v := os.Getenv(childEnv)
	if v == "" {
		return
	}
	var c childConfig
	if err := json.Unmarshal([]byte(v), &c); err != nil {
		fmt.Fprintln(os.Stderr, "servertest child:", err)
		os.Exit(2)
	}
	if err := serveChild(c); err != nil {
		fmt.Fprintln(os.Stderr, "servertest child:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func serveChild(c childConfig) error {
	cfg := defaultConfig(c.DatabaseURL)
	log := childLogger()
	ctx := context.Background()
	srv, err := server.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	// The parent reads this line to learn where to connect.
	fmt.Printf("listening http://%s\n", ln.Addr())
	return srv.ServeListener(ctx, ln)
}

// Process is an l3ha server running as a process of its own (this test
// binary, re-executed), so that a test can SIGKILL it mid-request.
type Process struct {
	URL, DatabaseURL string
	cmd              *exec.Cmd
	done             chan struct{}
}

// StartProcess starts a server process on dbURL with Start's defaults and
// waits until it listens; it is killed when t ends. The package's TestMain
// must call RunChildIfAsked.
func StartProcess(t testing.TB, dbURL string) *Process {
	t.Helper()
	cfg, err := json.Marshal(childConfig{DatabaseURL: dbURL})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(cfg))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the server process: %v", err)
	}
	p := &Process{DatabaseURL: dbURL, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(p.Kill)
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "listening "); ok {
				urls <- u
			}
		}
	}()
	select {
	case p.URL = <-urls:
	case <-p.done:
		t.Fatal("the server process exited before it listened")
	case <-time.After(60 * time.Second):
		t.Fatal("the server process did not listen within 60s")
	}
	return p
}

// Kill SIGKILLs the server process and waits until it is gone (idempotent).
func (p *Process) Kill() {
	if p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
}
