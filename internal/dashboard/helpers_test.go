package dashboard_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/agentapi"
	"github.com/l3ha/l3ha/internal/api"
	"github.com/l3ha/l3ha/internal/dashboard"
	"github.com/l3ha/l3ha/internal/ha"
	"github.com/l3ha/l3ha/internal/ipam"
	"github.com/l3ha/l3ha/internal/linux"
	"github.com/l3ha/l3ha/internal/server"
	"github.com/l3ha/l3ha/internal/servertest"
)

// serverOptions adjust startServer.
type serverOptions struct {
	backend string // "" sqlite
	// auth is the API's authentication (nil: noauth, no headers = admin).
	auth api.Authenticator
	// benchPlot is dashboard_bench_plot.
	benchPlot     string
	agentDownTime time.Duration // 0: 75 s
	// netns is the network namespace the server listens in ("": the
	// test's).
	netns string
}

// testServer is a running l3ha server.
type testServer struct {
	URL string
	srv *server.Server
}

// startServer runs a real l3ha server (servertest.Start's configuration,
// which has no dashboard_bench_plot) until t ends.
func startServer(t *testing.T, o serverOptions) *testServer {
	t.Helper()
	if o.backend == "" {
		o.backend = "sqlite"
	}
	cfg := &server.Config{
		Bind: "127.0.0.1:0", Database: servertest.DatabaseURL(t, o.backend), AgentCredentials: servertest.FakeAgentCredentials{},
		AutoSchedule: true, Auth: o.auth, DashboardBenchPlot: o.benchPlot,
		HA: ha.Config{
			MaxAgents: 3, MinAgents: 2, NetCIDR: netip.MustParsePrefix("169.254.192.0/18"),
			VNIs: ipam.VNIRange{Min: 1, Max: 65535}, AgentDownTime: 75 * time.Second,
		},
	}
	if cfg.Auth == nil {
		cfg.Auth = api.NoAuth{DefaultProject: "admin"}
	}
	if o.agentDownTime > 0 {
		cfg.HA.AgentDownTime = o.agentDownTime
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg, servertest.Logger(t))
	if err != nil {
		cancel()
		t.Fatalf("starting server: %v", err)
	}
	var ln net.Listener
	if o.netns == "" {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	} else {
		// A socket stays in the namespace it was made in.
		err = linux.Do(o.netns, func() error {
			var err error
			ln, err = net.Listen("tcp", "127.0.0.1:0")
			return err
		})
	}
	if err != nil {
		cancel()
		srv.Close()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeListener(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		<-done
		srv.Close()
	})
	return &testServer{URL: "http://" + ln.Addr().String(), srv: srv}
}

// tokenAuth is auth_strategy=token with an admin, a member and a reader
// token.
func tokenAuth(t *testing.T) api.Authenticator {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte("admin-token admin admin\nmember-token demo member\nreader-token demo reader\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := api.LoadTokenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// response is an HTTP answer, read whole.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) String() string { return fmt.Sprintf("%d %s", r.status, r.body) }

// do sends a request with headers (X-Auth-Token and the like) and a JSON
// body (nil: none).
func do(t *testing.T, method, url string, headers map[string]string, body any) response {
	t.Helper()
	var buf io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		buf = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, buf)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	// Redirects are answers to check, not to follow.
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, data}
}

// token is the X-Auth-Token header ("" none).
func token(tok string) map[string]string {
	if tok == "" {
		return nil
	}
	return map[string]string{"X-Auth-Token": tok}
}

// mustAPI sends an API request and decodes its answer into out (nil:
// dropped), failing t unless the status is want.
func mustAPI(t *testing.T, base, tok, method, path string, body any, want int, out any) {
	t.Helper()
	r := do(t, method, base+path, token(tok), body)
	if r.status != want {
		t.Fatalf("%s %s: %v, want %d", method, path, r, want)
	}
	if out != nil {
		if err := json.Unmarshal(r.body, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, r.body)
		}
	}
}

// createRouter creates a router through the API and returns its id.
func createRouter(t *testing.T, base, tok, name string, isHA bool) string {
	t.Helper()
	var out struct {
		Router struct {
			ID string `json:"id"`
		} `json:"router"`
	}
	mustAPI(t, base, tok, "POST", "/v2.0/routers", map[string]any{"router": map[string]any{"name": name, "ha": isHA}}, http.StatusCreated, &out)
	return out.Router.ID
}

// l3Agents is the API's view of a router's agents: host → ha_state.
func l3Agents(t *testing.T, base, tok, routerID string) map[string]string {
	t.Helper()
	var out struct {
		Agents []struct {
			Host    string `json:"host"`
			HAState any    `json:"ha_state"`
		} `json:"agents"`
	}
	mustAPI(t, base, tok, "GET", "/v2.0/routers/"+routerID+"/l3-agents", nil, http.StatusOK, &out)
	m := map[string]string{}
	for _, a := range out.Agents {
		m[a.Host] = fmt.Sprint(a.HAState)
	}
	return m
}

// state GETs /dashboard/state.json with tok, failing t unless it is a 200.
func state(t *testing.T, base, tok string) dashboard.State {
	t.Helper()
	var st dashboard.State
	mustAPI(t, base, tok, "GET", "/dashboard/state.json", nil, http.StatusOK, &st)
	return st
}

// fakeAgent is an L3 agent as the server sees one: a goroutine that
// heartbeats through the agent API client, and ha_state reports sent when
// the test says. It runs no data plane and acts on nothing it is told.
type fakeAgent struct {
	host, id string
	client   *agentapi.Client
	stopOnce sync.Once
	cancel   context.CancelFunc
	done     chan struct{}
}

// startAgent registers host with the server and heartbeats every period
// until t ends or stop.
func startAgent(t *testing.T, base, host string, period time.Duration) *fakeAgent {
	t.Helper()
	return startAgentVia(t, base, host, period, nil)
}

// startAgentVia is startAgent through hc (nil: a plain client).
func startAgentVia(t *testing.T, base, host string, period time.Duration, hc *http.Client) *fakeAgent {
	t.Helper()
	c := agentapi.NewClient([]string{base}, servertest.AgentTokenOf(host), hc, nil)
	hb := agentapi.Heartbeat{
		Host: host, AgentType: agentapi.AgentTypeL3, Binary: agentapi.BinaryL3, Topic: agentapi.TopicL3,
		StartedAt:      time.Now().UTC(),
		Configurations: map[string]any{"agent_mode": agentapi.ModeLegacy, agentapi.ConfigLocalIP: fmt.Sprintf("192.0.2.%d", 10+len(host)%200)},
	}
	ctx, cancel := context.WithCancel(context.Background())
	reply, err := c.Heartbeat(ctx, hb)
	if err != nil {
		cancel()
		t.Fatalf("registering %s: %v", host, err)
	}
	a := &fakeAgent{host: host, id: reply.AgentID, client: c, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(a.done)
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if _, err := c.Heartbeat(ctx, hb); err != nil && ctx.Err() == nil {
					t.Logf("heartbeat of %s: %v", host, err)
				}
			}
		}
	}()
	t.Cleanup(a.stop)
	return a
}

// stop ends the agent's heartbeats: the server sees it die after
// agent_down_time.
func (a *fakeAgent) stop() {
	a.stopOnce.Do(func() {
		a.cancel()
		<-a.done
	})
}

// transition reports that the router entered state on the agent's host,
// for reason.
func (a *fakeAgent) transition(t *testing.T, routerID, state, reason string) {
	t.Helper()
	a.send(t, agentapi.HAStateReport{Host: a.host, States: map[string]string{routerID: state}, ReassertSeconds: 10,
		Reasons: map[string]string{routerID: reason}})
}

// reassert re-asserts the router's state, the host's only router.
func (a *fakeAgent) reassert(t *testing.T, routerID, state string) {
	t.Helper()
	a.send(t, agentapi.HAStateReport{Host: a.host, States: map[string]string{routerID: state}, Full: true, ReassertSeconds: 10})
}

func (a *fakeAgent) send(t *testing.T, rep agentapi.HAStateReport) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.client.ReportHAStates(ctx, rep); err != nil {
		t.Fatalf("ha_state report of %s: %v", a.host, err)
	}
}

// clientIn is an HTTP client whose connections are made in the network
// namespace ns.
func clientIn(ns string) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := linux.Do(ns, func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}}}
}
