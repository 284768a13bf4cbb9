// Package rabbitlocal runs a private, real RabbitMQ broker for tests.
//
// Start launches Debian's rabbitmq-server (package rabbitmq-server, which
// brings Erlang) as the calling user, bound to 127.0.0.1 only: AMQP on a free
// port, the Erlang distribution on another free port and the node's own epmd
// on a third, started by this package in the foreground so that it can be
// stopped by PID. The node has its own name, its own Erlang cookie (HOME is
// the data directory) and keeps mnesia, logs and configuration under the
// directory it is given; the only user is RabbitMQ's built-in guest, which
// may log in from loopback only. Restart stops the broker and starts it again
// on the same port and data directory, which is how tests simulate "RabbitMQ
// restarted" under a connected client.
//
// Nothing here is meant for production; it exists so that the oslo.messaging
// code can be tested against the real broker neutron-server talks to.
package rabbitlocal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// ServerScript is where Debian's rabbitmq-server package installs the
// script that runs the broker in the foreground (the /usr/sbin wrapper would
// switch to the rabbitmq user).
const ServerScript = "/usr/lib/rabbitmq/bin/rabbitmq-server"

// DefaultStartTimeout bounds how long Start and Restart wait for the broker
// to accept AMQP connections when ctx has no earlier deadline. RabbitMQ
// boots in 5–30 s; a loaded two-core machine needs the margin.
const DefaultStartTimeout = 3 * time.Minute

// stopTimeout bounds the graceful shutdown before the process group is
// killed.
const stopTimeout = 60 * time.Second

// ErrNotInstalled is returned by Start when rabbitmq-server or epmd is
// missing.
var ErrNotInstalled = errors.New("rabbitlocal: rabbitmq-server is not installed (Debian package rabbitmq-server)")

// Installed reports whether the broker and epmd can be started.
func Installed() error {
	if _, err := os.Stat(ServerScript); err != nil {
		return fmt.Errorf("%w: %v", ErrNotInstalled, err)
	}
	if _, err := exec.LookPath("epmd"); err != nil {
		return fmt.Errorf("%w: epmd: %v", ErrNotInstalled, err)
	}
	return nil
}

// Server is a running private broker.
type Server struct {
	dir  string
	log  *slog.Logger
	node string

	amqpPort, distPort, epmdPort int

	mu     sync.Mutex
	epmd   *proc
	broker *proc
}

// proc is a child process running in its own process group.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd.Wait returns
	err  error         // Wait's result, valid after done
	logf string
}

// Start runs a new broker with its data under dir (created if missing) and
// returns once an AMQP connection as guest succeeds.
func Start(ctx context.Context, dir string, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := Installed(); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("rabbitlocal: data dir: %w", err)
	}
	for _, d := range []string{dir, filepath.Join(dir, "mnesia"), filepath.Join(dir, "log")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("rabbitlocal: creating %s: %w", d, err)
		}
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	s := &Server{
		dir:      dir,
		log:      log,
		node:     fmt.Sprintf("l3ha-%d-%d@localhost", os.Getpid(), time.Now().UnixNano()%1e9),
		amqpPort: ports[0],
		distPort: ports[1],
		epmdPort: ports[2],
	}
	if err := s.writeConfig(); err != nil {
		return nil, err
	}
	if err := s.startEPMD(ctx); err != nil {
		return nil, err
	}
	if err := s.startBroker(ctx); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// URL is the broker's AMQP URL for the guest user.
func (s *Server) URL() string {
	return fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", s.amqpPort)
}

// TransportURL is URL in oslo.messaging's notation (transport_url).
func (s *Server) TransportURL() string {
	return fmt.Sprintf("rabbit://guest:guest@127.0.0.1:%d/", s.amqpPort)
}

// Port is the AMQP port on 127.0.0.1.
func (s *Server) Port() int { return s.amqpPort }

// Node is the Erlang node name.
func (s *Server) Node() string { return s.node }

// Dir is the data directory.
func (s *Server) Dir() string { return s.dir }

// Restart stops the broker (not epmd) and starts it again on the same port
// with the same data directory. Clients see their connections closed.
func (s *Server) Restart(ctx context.Context) error {
	s.mu.Lock()
	b := s.broker
	s.broker = nil
	stopped := s.epmd == nil
	s.mu.Unlock()
	if stopped {
		return errors.New("rabbitlocal: Restart after Stop")
	}
	if b != nil {
		s.log.Info("rabbitlocal: stopping broker for restart", "node", s.node)
		b.stop(s.log)
	}
	return s.startBroker(ctx)
}

// Stop ends the broker and epmd (each process group) and waits for them.
// It is safe to call more than once.
func (s *Server) Stop() {
	s.mu.Lock()
	b, e := s.broker, s.epmd
	s.broker, s.epmd = nil, nil
	s.mu.Unlock()
	if b != nil {
		b.stop(s.log)
	}
	if e != nil {
		e.stop(s.log)
	}
}

// LogTail returns the last n bytes of the broker's console output and log.
func (s *Server) LogTail(n int) string {
	var out strings.Builder
	for _, f := range []string{filepath.Join(s.dir, "log", "console.log"), filepath.Join(s.dir, "log", s.node+".log")} {
		out.WriteString("==> " + f + "\n" + tail(f, n) + "\n")
	}
	return out.String()
}

func (s *Server) writeConfig() error {
	files := map[string]string{
		// The system rabbitmq-env.conf must not be read.
		"rabbitmq-env.conf": "",
		"enabled_plugins":   "[].\n",
		"rabbitmq.conf": strings.Join([]string{
			"loopback_users.guest = true",
			// Small test machines: do not block publishers on alarms.
			"disk_free_limit.absolute = 10MB",
			"vm_memory_high_watermark.relative = 0.9",
			"log.file.level = info",
			"log.console = false",
			"",
		}, "\n"),
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(s.dir, name), []byte(body), 0o600); err != nil {
			return fmt.Errorf("rabbitlocal: writing %s: %w", name, err)
		}
	}
	return nil
}

// env is the broker's environment: the caller's, minus anything that would
// make it read or share system-wide RabbitMQ/Erlang state.
func (s *Server) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "RABBITMQ_") || strings.HasPrefix(k, "ERL_") || k == "HOME" ||
			k == "CONF_ENV_FILE" || k == "NOTIFY_SOCKET" {
			continue
		}
		env = append(env, kv)
	}
	j := func(p ...string) string { return filepath.Join(append([]string{s.dir}, p...)...) }
	return append(env,
		"HOME="+s.dir, // the Erlang cookie lives in $HOME/.erlang.cookie
		"RABBITMQ_NODENAME="+s.node,
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		"RABBITMQ_NODE_PORT="+strconv.Itoa(s.amqpPort),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(s.distPort),
		"ERL_EPMD_PORT="+strconv.Itoa(s.epmdPort),
		"ERL_EPMD_ADDRESS=127.0.0.1",
		"RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1} -start_epmd false",
		"RABBITMQ_CONF_ENV_FILE="+j("rabbitmq-env.conf"),
		"RABBITMQ_CONFIG_FILE="+j("rabbitmq.conf"),
		"RABBITMQ_ADVANCED_CONFIG_FILE="+j("advanced.config"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+j("enabled_plugins"),
		"RABBITMQ_MNESIA_BASE="+j("mnesia"),
		"RABBITMQ_LOG_BASE="+j("log"),
		"RABBITMQ_PID_FILE="+j("rabbitmq.pid"),
	)
}

func (s *Server) startEPMD(ctx context.Context) error {
	path, err := exec.LookPath("epmd")
	if err != nil {
		return fmt.Errorf("%w: epmd: %v", ErrNotInstalled, err)
	}
	p, err := spawn(path, []string{"-port", strconv.Itoa(s.epmdPort), "-address", "127.0.0.1"},
		s.env(), filepath.Join(s.dir, "log", "epmd.log"))
	if err != nil {
		return fmt.Errorf("rabbitlocal: starting epmd: %w", err)
	}
	s.mu.Lock()
	s.epmd = p
	s.mu.Unlock()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(s.epmdPort))
	err = waitFor(ctx, 30*time.Second, p, func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("rabbitlocal: waiting for epmd on %s: %w\n%s", addr, err, tail(p.logf, 2000))
	}
	s.log.Debug("rabbitlocal: epmd up", "port", s.epmdPort, "pid", p.cmd.Process.Pid)
	return nil
}

func (s *Server) startBroker(ctx context.Context) error {
	t0 := time.Now()
	p, err := spawn(ServerScript, nil, s.env(), filepath.Join(s.dir, "log", "console.log"))
	if err != nil {
		return fmt.Errorf("rabbitlocal: starting %s: %w", ServerScript, err)
	}
	s.mu.Lock()
	s.broker = p
	s.mu.Unlock()
	s.log.Info("rabbitlocal: broker starting", "node", s.node, "pid", p.cmd.Process.Pid,
		"amqp_port", s.amqpPort, "dist_port", s.distPort, "epmd_port", s.epmdPort, "dir", s.dir)
	url := s.URL()
	err = waitFor(ctx, DefaultStartTimeout, p, func(ctx context.Context) error {
		c, err := amqp.DialConfig(url, amqp.Config{
			Dial: func(network, addr string) (net.Conn, error) {
				d := net.Dialer{Timeout: 5 * time.Second}
				return d.DialContext(ctx, network, addr)
			},
		})
		if err == nil {
			c.Close()
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("rabbitlocal: waiting for AMQP on 127.0.0.1:%d: %w\n%s", s.amqpPort, err, s.LogTail(3000))
	}
	s.log.Info("rabbitlocal: broker ready", "node", s.node, "url", url, "took", time.Since(t0).Round(time.Millisecond))
	return nil
}

// spawn starts path in a new process group with output to logf.
func spawn(path string, args, env []string, logf string) (*proc, error) {
	out, err := os.OpenFile(logf, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Env = env
	cmd.Stdin = nil
	cmd.Stdout = out
	cmd.Stderr = out
	// Pdeathsig: if the test binary dies (a -timeout panic, SIGKILL), the
	// child gets SIGTERM; rabbitmq-server's script then stops the VM.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	// Pdeathsig fires when the forking OS thread exits: start from a
	// locked thread that goes back to the pool (and lives on) afterwards.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{}), logf: logf}
	go func() {
		p.err = cmd.Wait()
		out.Close()
		close(p.done)
	}()
	return p, nil
}

// stop sends SIGTERM to the process group, waits, and kills the group if it
// does not end in time. The group is killed in any case at the end so that
// helpers (erl_child_setup, inet_gethost) do not outlive the leader.
func (p *proc) stop(log *slog.Logger) {
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		log.Warn("rabbitlocal: process did not stop, killing its group", "pid", pgid)
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	// Wait until the whole group is gone (kill(-pgid, 0) fails with ESRCH).
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitFor polls check until it succeeds, p exits, or the deadline passes.
func waitFor(ctx context.Context, max time.Duration, p *proc, check func(context.Context) error) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, max)
		defer cancel()
	}
	delay := 50 * time.Millisecond
	var last error
	for {
		select {
		case <-p.done:
			return fmt.Errorf("process exited (%v) before it was ready (last check: %v)", p.err, last)
		default:
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		last = check(cctx)
		cancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last check: %v)", ctx.Err(), last)
		case <-p.done:
			return fmt.Errorf("process exited (%v) before it was ready (last check: %v)", p.err, last)
		case <-time.After(delay):
		}
		if delay < 500*time.Millisecond {
			delay *= 2
		}
	}
}

// freePorts returns n distinct loopback TCP ports that were free a moment
// ago (all held open together so that they differ).
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("rabbitlocal: finding a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	if len(b) > n {
		b = b[len(b)-n:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}
