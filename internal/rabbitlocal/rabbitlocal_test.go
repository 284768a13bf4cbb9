package rabbitlocal

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func requireInstalled(t *testing.T) {
	t.Helper()
	if err := Installed(); err != nil {
		if os.Getenv("L3HA_TEST_REQUIRE_ALL") == "1" {
			t.Fatalf("L3HA_TEST_REQUIRE_ALL=1 but %v", err)
		}
		t.Skipf("skipping: %v (apt-get install rabbitmq-server)", err)
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestStartStopRestart(t *testing.T) {
	requireInstalled(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	dir := t.TempDir()
	s, err := Start(ctx, dir, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()

	if want := fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", s.Port()); s.URL() != want {
		t.Errorf("URL() = %q, want %q", s.URL(), want)
	}

	// The node's files are under dir: cookie, mnesia, logs.
	for _, f := range []string{".erlang.cookie", "mnesia", filepath.Join("log", "console.log")} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("expected %s under the data dir: %v", f, err)
		}
	}

	// Everything the broker and epmd listen on is loopback.
	listens := listeningAddrs(t, s)
	if len(listens) < 3 {
		t.Errorf("expected at least AMQP, distribution and epmd listeners, got %v", listens)
	}
	for _, a := range listens {
		if !a.IP.IsLoopback() {
			t.Errorf("listener on %v is not loopback", a)
		}
	}
	if !contains(listens, s.Port()) {
		t.Errorf("AMQP port %d not among listeners %v", s.Port(), listens)
	}

	conn, err := amqp.Dial(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("rabbitlocal-test", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}

	port := s.Port()
	if err := s.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-closed:
	case <-ctx.Done():
		t.Fatal("connection was not closed by the restart")
	}
	if s.Port() != port {
		t.Errorf("port changed over restart: %d -> %d", port, s.Port())
	}
	conn2, err := amqp.Dial(s.URL())
	if err != nil {
		t.Fatalf("dial after restart: %v", err)
	}
	conn2.Close()

	s.mu.Lock()
	pgids := []int{s.broker.cmd.Process.Pid, s.epmd.cmd.Process.Pid}
	s.mu.Unlock()
	s.Stop()
	for _, pg := range pgids {
		if err := syscall.Kill(-pg, 0); err == nil {
			t.Errorf("process group %d still alive after Stop", pg)
		}
	}
	if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second); err == nil {
		c.Close()
		t.Errorf("port %d still accepts connections after Stop", port)
	}
	s.Stop() // idempotent
}

func TestStartFailsClearlyWhenNotInstalled(t *testing.T) {
	if err := Installed(); err != nil {
		if _, err2 := Start(context.Background(), t.TempDir(), nil); err2 == nil {
			t.Fatal("Start succeeded without rabbitmq-server")
		}
	}
}

func contains(as []*net.TCPAddr, port int) bool {
	for _, a := range as {
		if a.Port == port {
			return true
		}
	}
	return false
}

// listeningAddrs lists the TCP listening sockets of the broker's and epmd's
// process groups, from /proc.
func listeningAddrs(t *testing.T, s *Server) []*net.TCPAddr {
	t.Helper()
	s.mu.Lock()
	pgids := map[int]bool{s.broker.cmd.Process.Pid: true, s.epmd.cmd.Process.Pid: true}
	s.mu.Unlock()
	inodes := map[string]bool{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		pg, err := syscall.Getpgid(pid)
		if err != nil || !pgids[pg] {
			continue
		}
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, fd := range fds {
			l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
			if err == nil && strings.HasPrefix(l, "socket:[") {
				inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
			}
		}
	}
	var out []*net.TCPAddr
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		sc.Scan() // header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || fields[3] != "0A" || !inodes[fields[9]] { // 0A = LISTEN
				continue
			}
			out = append(out, parseProcAddr(t, fields[1]))
		}
		fh.Close()
	}
	return out
}

func parseProcAddr(t *testing.T, s string) *net.TCPAddr {
	hexIP, hexPort, _ := strings.Cut(s, ":")
	b, err := hex.DecodeString(hexIP)
	if err != nil {
		t.Fatalf("parsing %q: %v", s, err)
	}
	// /proc prints the address as host-order 32-bit words.
	for i := 0; i+4 <= len(b); i += 4 {
		b[i], b[i+1], b[i+2], b[i+3] = b[i+3], b[i+2], b[i+1], b[i]
	}
	port, _ := strconv.ParseUint(hexPort, 16, 16)
	return &net.TCPAddr{IP: net.IP(b), Port: int(port)}
}
