// Package servertest starts real l3ha servers in-process for tests — on
// SQLite in a temporary directory or on a fresh PostgreSQL database — and
// real agent processes' loops with the fake data plane, so that API and
// control-plane tests exercise the same code as production over HTTP.
package servertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/l3ha/l3ha/internal/agent"
	"github.com/l3ha/l3ha/internal/api"
	"github.com/l3ha/l3ha/internal/ha"
	"github.com/l3ha/l3ha/internal/ipam"
	"github.com/l3ha/l3ha/internal/server"
	"github.com/l3ha/l3ha/internal/store"
)

// PostgresEnv names the variable holding the URL of a PostgreSQL server the
// tests may create databases on (scripts/postgres.sh prints one).
const PostgresEnv = "L3HA_TEST_POSTGRES"

// agentTokenPrefix starts every agent token of test servers.
const agentTokenPrefix = "test-agent-token-of-"

// AgentTokenOf is the agent credential of host on test servers.
func AgentTokenOf(host string) string { return agentTokenPrefix + host }

// FakeAgentCredentials are test servers' agent credentials: the token
// AgentTokenOf(host) acts for host, whatever the host, so that tests can
// start agents of any name. Production reads AgentTokensFile.
type FakeAgentCredentials struct{}

// HostFor implements server.AgentCredentials.
func (FakeAgentCredentials) HostFor(token string) (string, bool) {
	host, ok := strings.CutPrefix(token, agentTokenPrefix)
	return host, ok && host != ""
}

// Backends returns the database backends to run a test on: sqlite always,
// postgres when L3HA_TEST_POSTGRES is set. With L3HA_TEST_REQUIRE_POSTGRES=1
// (set by `make test`) a missing PostgreSQL fails the test instead of
// narrowing it.
func Backends(t testing.TB) []string {
	if os.Getenv(PostgresEnv) != "" {
		return []string{"sqlite", "postgres"}
	}
	if os.Getenv("L3HA_TEST_REQUIRE_POSTGRES") == "1" {
		t.Fatalf("%s is not set but L3HA_TEST_REQUIRE_POSTGRES=1", PostgresEnv)
	}
	t.Logf("%s not set: PostgreSQL backend not tested", PostgresEnv)
	return []string{"sqlite"}
}

// DatabaseURL returns a fresh, empty database of backend for t, removed when
// t ends.
func DatabaseURL(t testing.TB, backend string) string {
	t.Helper()
	switch backend {
	case "sqlite":
		return "sqlite://" + t.TempDir() + "/l3ha.db"
	case "postgres":
		base := os.Getenv(PostgresEnv)
		if base == "" {
			t.Fatalf("%s is not set", PostgresEnv)
		}
		admin, err := sql.Open("pgx", base)
		if err != nil {
			t.Fatal(err)
		}
		var b [6]byte
		_, _ = rand.Read(b[:])
		name := "l3ha_test_" + hex.EncodeToString(b[:])
		if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
			admin.Close()
			t.Fatalf("creating test database: %v", err)
		}
		t.Cleanup(func() {
			_, _ = admin.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
			admin.Close()
		})
		return replaceDBName(base, name)
	}
	t.Fatalf("unknown backend %q", backend)
	return ""
}

func replaceDBName(url, name string) string {
	q := ""
	if i := strings.Index(url, "?"); i >= 0 {
		url, q = url[:i], url[i:]
	}
	if i := strings.LastIndex(url, "/"); i > len("postgres://") {
		url = url[:i]
	}
	return url + "/" + name + q
}

// Options adjust a test server; zero values take Neutron's defaults except
// where noted.
type Options struct {
	Backend     string // "sqlite" (default) or "postgres"
	DatabaseURL string // share a database with another server (overrides Backend)
	DefaultHA   bool   // l3_ha
	MaxAgents   *int   // max_l3_agents_per_router (default 3)
	MinAgents   *int   // min_l3_agents_per_router (default 2)
	// AgentDownTime defaults to 75s; tests of dead agents set a few seconds.
	AgentDownTime time.Duration
	// Auth defaults to noauth with default project "admin".
	Auth         api.Authenticator
	AutoSchedule *bool
	// RoutersPerNetwork is l3_ha_routers_per_network (default 254).
	RoutersPerNetwork int
	// AgentCredentials default to FakeAgentCredentials.
	AgentCredentials server.AgentCredentials
	// TLSCert and TLSKey (PEM files) make the server serve https.
	TLSCert, TLSKey string
	// Transitions bounds the HA transition history (zero fields: the
	// server's defaults).
	Transitions store.HATransitionRetention
}

// Instance is a running test server.
type Instance struct {
	URL         string // http://127.0.0.1:port (https with Options.TLSCert)
	DatabaseURL string
	Server      *server.Server
	cancel      context.CancelFunc
	done        chan error
	ln          *killableListener
}

// Int returns a pointer to v, for Options.
func Int(v int) *int { return &v }

// defaultConfig is the configuration of a test server on dbURL: noauth
// (project "admin"), fake agent credentials, 2 to 3 agents per HA router,
// agent_down_time 75 s.
func defaultConfig(dbURL string) *server.Config {
	return &server.Config{
		Bind: "127.0.0.1:0", Database: dbURL, AgentCredentials: FakeAgentCredentials{},
		AutoSchedule: true,
		HA: ha.Config{
			MaxAgents: 3, MinAgents: 2, NetCIDR: netip.MustParsePrefix("169.254.192.0/18"),
			VNIs: ipam.VNIRange{Min: 1, Max: 65535}, AgentDownTime: 75 * time.Second,
		},
		Auth: api.NoAuth{DefaultProject: "admin"},
	}
}

// Start runs an l3ha server for t; it stops when t ends.
func Start(t testing.TB, o Options) *Instance {
	t.Helper()
	if o.Backend == "" {
		o.Backend = "sqlite"
	}
	dbURL := o.DatabaseURL
	if dbURL == "" {
		dbURL = DatabaseURL(t, o.Backend)
	}
	cfg := defaultConfig(dbURL)
	cfg.DefaultHA = o.DefaultHA
	if o.MaxAgents != nil {
		cfg.HA.MaxAgents = *o.MaxAgents
	}
	if o.MinAgents != nil {
		cfg.HA.MinAgents = *o.MinAgents
	}
	if o.AgentDownTime > 0 {
		cfg.HA.AgentDownTime = o.AgentDownTime
	}
	if o.Auth != nil {
		cfg.Auth = o.Auth
	}
	if o.AutoSchedule != nil {
		cfg.AutoSchedule = *o.AutoSchedule
	}
	cfg.HA.RoutersPerNetwork = o.RoutersPerNetwork
	if o.AgentCredentials != nil {
		cfg.AgentCredentials = o.AgentCredentials
	}
	cfg.TLSCert, cfg.TLSKey = o.TLSCert, o.TLSKey
	cfg.Transitions = o.Transitions
	log := Logger(t)
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg, log)
	if err != nil {
		cancel()
		t.Fatalf("starting server: %v", err)
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	ln := &killableListener{Listener: tcp, conns: map[net.Conn]bool{}}
	scheme := "http://"
	if o.TLSCert != "" {
		scheme = "https://"
	}
	inst := &Instance{URL: scheme + ln.Addr().String(), DatabaseURL: dbURL, Server: srv, cancel: cancel, done: make(chan error, 1), ln: ln}
	go func() { inst.done <- srv.ServeListener(ctx, ln) }()
	t.Cleanup(inst.Stop)
	return inst
}

// Stop stops the server (idempotent).
func (i *Instance) Stop() {
	if i.cancel == nil {
		return
	}
	i.cancel()
	<-i.done
	i.Server.Close()
	i.cancel = nil
}

// Kill stops the server as SIGKILL would, as far as its clients can tell:
// the listener and every connection close at once, answers in flight are
// cut off, and no new connection is taken. The rest is then stopped.
func (i *Instance) Kill() {
	i.ln.kill()
	i.Stop()
}

// killableListener remembers the connections it accepted so that Kill can
// cut them.
type killableListener struct {
	net.Listener
	mu     sync.Mutex
	conns  map[net.Conn]bool
	killed bool
}

func (l *killableListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.killed {
		c.Close()
		return nil, net.ErrClosed
	}
	l.conns[c] = true
	return c, nil
}

func (l *killableListener) kill() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.killed = true
	l.Listener.Close()
	for c := range l.conns {
		c.Close()
	}
}

// Logger is a slog logger writing to t.Log when L3HA_TEST_VERBOSE=1, else
// nowhere.
func Logger(t testing.TB) *slog.Logger {
	if os.Getenv("L3HA_TEST_VERBOSE") == "1" {
		return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// childLogger is the log of a server process StartProcess started: its
// warnings and errors go to stderr, which the test shows.
func childLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// FakeAgent is a running agent with the fake data plane.
type FakeAgent struct {
	Host      string
	Dataplane *agent.FakeDataplane
	cancel    context.CancelFunc
	done      chan error
}

// StartFakeAgent runs the real agent loops for host against the server,
// with the fake data plane (active where its binding index is 1). It stops
// when t ends or on Stop. Heartbeats follow the server's interval
// (agent_down_time/3).
func (i *Instance) StartFakeAgent(t testing.TB, host string) *FakeAgent {
	t.Helper()
	return StartFakeAgentOf(t, host, []string{i.URL}, nil)
}

// StartFakeAgentOf is StartFakeAgent for an agent of several servers (it
// talks to the first and moves on when one fails), through hc (nil: a
// plain http.Client).
func StartFakeAgentOf(t testing.TB, host string, servers []string, hc *http.Client) *FakeAgent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	fa := &FakeAgent{Host: host, Dataplane: agent.NewFakeDataplane(), cancel: cancel, done: make(chan error, 1)}
	cfg := agent.Config{
		Host: host, Servers: servers, AgentToken: AgentTokenOf(host), LocalIP: fakeLocalIP(host),
		ReportBatchDelay: 20 * time.Millisecond, PollWait: 10 * time.Second,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second, HTTPClient: hc,
	}
	go func() { fa.done <- agent.Run(ctx, cfg, fa.Dataplane, Logger(t).With("agent", host)) }()
	t.Cleanup(fa.Stop)
	return fa
}

// Stop stops the agent (idempotent); the server will see it die after
// agent_down_time.
func (f *FakeAgent) Stop() {
	if f.cancel == nil {
		return
	}
	f.cancel()
	<-f.done
	f.cancel = nil
}

func fakeLocalIP(host string) string {
	var h byte
	for _, c := range []byte(host) {
		h = h*31 + c
	}
	return fmt.Sprintf("192.0.2.%d", 1+int(h)%250)
}

// Call sends a JSON request to the API at base (noauth without identity
// headers: the admin) and decodes the answer into out (nil: dropped); a
// status of 300 or more is an error with the NeutronError body.
func Call(base, method, path string, body, out any) error {
	var buf bytes.Buffer
	if body != nil {
		if err := json.NewEncoder(&buf).Encode(body); err != nil {
			return err
		}
	}
	req, err := http.NewRequest(method, base+path, &buf)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return fmt.Errorf("%s %s: %d %v", method, path, resp.StatusCode, e)
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

// Eventually polls cond every 20ms until it returns nil or timeout passes,
// then fails t with cond's last error.
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
