package server_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/servertest"
)

// privatePostgres starts a PostgreSQL of the test's own (scripts/postgres.sh
// with its own data directory and port), so that the test may restart it
// without disturbing the package's shared one, and returns its URL and a
// function that restarts it (pg_ctl restart, fast: every backend is
// terminated, as in a restart of the service).
func privatePostgres(t *testing.T) (url string, restart func()) {
	t.Helper()
	script, err := filepath.Abs("../../scripts/postgres.sh")
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv(servertest.PostgresEnv) == "" {
		if os.Getenv("L3HA_TEST_REQUIRE_POSTGRES") == "1" {
			t.Fatalf("%s is not set", servertest.PostgresEnv)
		}
		t.Skipf("%s is not set: PostgreSQL not tested", servertest.PostgresEnv)
	}
	dir, err := os.MkdirTemp("", "l3ha-pgrestart-")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	env := append(os.Environ(), "L3HA_PG_DIR="+dir, "L3HA_PG_PORT="+port)
	run := func(args ...string) string {
		cmd := exec.Command(script, args...)
		cmd.Env = env
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", script, args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	url = run()
	t.Cleanup(func() {
		run("stop")
		os.RemoveAll(dir)
	})
	bin, err := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	if err != nil || len(bin) == 0 {
		t.Fatal("pg_ctl not found")
	}
	restart = func() {
		// With its log file, or the new postmaster keeps pg_ctl's output
		// open and the wait for it never ends.
		cmd := exec.Command("runuser", "-u", "postgres", "--", bin[len(bin)-1], "-D", filepath.Join(dir, "data"),
			"-l", filepath.Join(dir, "server.log"), "-m", "fast", "-w", "-t", "60", "restart")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("restarting PostgreSQL: %v\n%s", err, out)
		}
	}
	return url, restart
}

// TestPostgresRestartedDuringCreates (issue 13's fault table): PostgreSQL
// restarts while 50 HA routers are being created by 10 clients. Each create
// either succeeded (201) and its router is complete, or failed with a 5xx
// and left nothing; the server does not crash, reconnects, and creates work
// again afterwards.
func TestPostgresRestartedDuringCreates(t *testing.T) {
	url, restart := privatePostgres(t)
	srv := servertest.Start(t, servertest.Options{DatabaseURL: url})
	fsHeartbeat(t, srv, "net1")
	fsHeartbeat(t, srv, "net2")

	type outcome struct {
		name string
		id   string
		err  error
	}
	names := make(chan string)
	results := make(chan outcome, 50)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			for name := range names {
				var out struct{ Router map[string]any }
				err := call(srv.URL, "POST", "/v2.0/routers", map[string]any{"router": map[string]any{"name": name, "ha": true}}, &out)
				id, _ := out.Router["id"].(string)
				results <- outcome{name, id, err}
			}
		})
	}
	restarted := make(chan struct{})
	go func() {
		defer close(names)
		for i := range 50 {
			if i == 15 {
				go func() { restart(); close(restarted) }()
			}
			names <- fmt.Sprintf("pg-%02d", i)
			time.Sleep(40 * time.Millisecond) // spread over the restart
		}
	}()
	wg.Wait()
	close(results)
	<-restarted

	var ok, failed int
	wantGone := map[string]bool{}
	for r := range results {
		switch {
		case r.err == nil:
			ok++
		case strings.Contains(r.err.Error(), ": 5"):
			failed++
			wantGone[r.name] = true
		default:
			t.Errorf("create %s: %v, want 201 or a 5xx", r.name, r.err)
		}
	}
	t.Logf("50 creates across a PostgreSQL restart: %d succeeded, %d failed with a 5xx", ok, failed)
	// Reconnected: creates work again (within a few seconds of the restart).
	servertest.Eventually(t, 30*time.Second, func() error {
		return call(srv.URL, "POST", "/v2.0/routers", map[string]any{"router": map[string]any{"name": "after", "ha": true}}, nil)
	})
	var routers struct{ Routers []map[string]any }
	if err := call(srv.URL, "GET", "/v2.0/routers", nil, &routers); err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, r := range routers.Routers {
		name, id := fmt.Sprint(r["name"]), fmt.Sprint(r["id"])
		if wantGone[name] {
			t.Errorf("router %s (%s) exists though its create failed", name, id)
		}
		var agents struct{ Agents []map[string]any }
		if err := call(srv.URL, "GET", "/v2.0/routers/"+id+"/l3-agents", nil, &agents); err != nil {
			t.Fatal(err)
		}
		var ports struct{ Ports []map[string]any }
		if err := call(srv.URL, "GET", "/v2.0/ports?device_owner=network:router_ha_interface&device_id="+id, nil, &ports); err != nil {
			t.Fatal(err)
		}
		if r["status"] != "ACTIVE" || len(agents.Agents) != 2 || len(ports.Ports) != 2 {
			t.Errorf("router %s: status %v, %d agents, %d HA ports; want a complete HA router", name, r["status"], len(agents.Agents), len(ports.Ports))
		}
		if strings.HasPrefix(name, "pg-") {
			seen++
		}
	}
	if seen != ok {
		t.Errorf("%d pg- routers exist, %d creates succeeded", seen, ok)
	}
}
