package server_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/agentapi"
	"github.com/l3ha/l3ha/internal/server"
	"github.com/l3ha/l3ha/internal/servertest"
	"github.com/l3ha/l3ha/internal/tlsconf"
)

func TestAgentTokensFileRefusesMalformedFiles(t *testing.T) {
	for _, tc := range []struct{ name, file, want string }{
		{"empty", "# nobody\n\n", "no HOST TOKEN lines"},
		{"token missing", "net1\n", "line 1: want HOST TOKEN"},
		{"three fields", "net1 0123456789abcdef extra\n", "line 1: want HOST TOKEN"},
		{"short token", "net1 0123456789abcdef\nnet2 short\n", "line 2: the token of host net2 is shorter than 16"},
		{"two hosts, one token", "net1 0123456789abcdef\nnet2 0123456789abcdef\n", "host net2 has the token of host net1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "agent-tokens")
			if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := server.LoadAgentTokensFile(path, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "0123456789abcdef") {
				t.Errorf("error shows a token: %v", err)
			}
		})
	}
}

// agentHeartbeat sends one heartbeat for host with token and returns the
// status.
func agentHeartbeat(t *testing.T, hc *http.Client, base, host, token string) int {
	t.Helper()
	body := fmt.Sprintf(`{"host": %q, "agent_type": "L3 agent", "configurations": {}}`, host)
	req, err := http.NewRequest("POST", base+agentapi.PathHeartbeat, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(agentapi.TokenHeader, token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// A credential is rotated by editing the tokens file: the new token works
// and the old one stops working without a restart of the server; a file
// broken by a bad edit keeps the last good credentials in force.
func TestAgentCredentialRotatesWithoutRestart(t *testing.T) {
	const oldTok, newTok = "net1-old-0123456789", "net1-new-0123456789abcdef"
	path := filepath.Join(t.TempDir(), "agent-tokens")
	write := func(content string) {
		t.Helper()
		// Written aside and renamed, as an operator's tool would: the
		// server never reads half a file.
		if err := os.WriteFile(path+".new", []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".new", path); err != nil {
			t.Fatal(err)
		}
	}
	write("net1 " + oldTok + "\n")
	creds, err := server.LoadAgentTokensFile(path, servertest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	srv := servertest.Start(t, servertest.Options{AgentCredentials: creds})
	hc := &http.Client{Timeout: 10 * time.Second}
	if got := agentHeartbeat(t, hc, srv.URL, "net1", oldTok); got != 200 {
		t.Fatalf("heartbeat with the current token: %d", got)
	}
	if got := agentHeartbeat(t, hc, srv.URL, "net2", oldTok); got != 403 {
		t.Fatalf("heartbeat for net2 with net1's token: %d, want 403", got)
	}
	// Rotation, step 1: both tokens valid.
	write("net1 " + oldTok + "\nnet1 " + newTok + "\n")
	servertest.Eventually(t, 10*time.Second, func() error {
		if got := agentHeartbeat(t, hc, srv.URL, "net1", newTok); got != 200 {
			return fmt.Errorf("new token: %d", got)
		}
		return nil
	})
	if got := agentHeartbeat(t, hc, srv.URL, "net1", oldTok); got != 200 {
		t.Fatalf("old token during the rotation: %d, want 200", got)
	}
	// Step 2: the old one goes.
	write("net1 " + newTok + "\n")
	servertest.Eventually(t, 10*time.Second, func() error {
		if got := agentHeartbeat(t, hc, srv.URL, "net1", oldTok); got != 401 {
			return fmt.Errorf("old token after the rotation: %d, want 401", got)
		}
		return nil
	})
	// A broken edit changes nothing.
	write("net1\n")
	deadline := time.Now().Add(2500 * time.Millisecond) // past two reload checks
	for time.Now().Before(deadline) {
		if got := agentHeartbeat(t, hc, srv.URL, "net1", newTok); got != 200 {
			t.Fatalf("after a malformed edit the last good token gets %d", got)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The API and the agent endpoint serve TLS with the configured certificate:
// an agent and an API client trusting the CA work, a client that does not
// trust it and a plain-HTTP client are refused, and a renewed certificate
// is served without a restart.
func TestAPIAndAgentEndpointServeTLS(t *testing.T) {
	dir := t.TempDir()
	ca, err := tlsconf.NewCA("l3ha test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caFile, certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	if err := os.WriteFile(caFile, ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	localhost := []net.IP{net.ParseIP("127.0.0.1")}
	if err := ca.IssueServer(certFile, keyFile, 100, time.Hour, localhost); err != nil {
		t.Fatal(err)
	}
	srv := servertest.Start(t, servertest.Options{TLSCert: certFile, TLSKey: keyFile})
	if !strings.HasPrefix(srv.URL, "https://") {
		t.Fatalf("server URL %s", srv.URL)
	}
	tr, err := tlsconf.Transport(caFile)
	if err != nil {
		t.Fatal(err)
	}
	trusted := &http.Client{Transport: tr, Timeout: 10 * time.Second}

	// An agent that trusts the CA registers and is served.
	servertest.StartFakeAgentOf(t, "net1", []string{srv.URL}, trusted)
	servertest.Eventually(t, 10*time.Second, func() error {
		resp, err := trusted.Get(srv.URL + "/v2.0/agents")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var out struct{ Agents []struct{ Host string } }
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			return err
		}
		if len(out.Agents) != 1 || out.Agents[0].Host != "net1" {
			return fmt.Errorf("agents over https: %+v", out.Agents)
		}
		return nil
	})

	// A client with the system's roots does not trust the test CA.
	untrusted := &http.Client{Timeout: 10 * time.Second}
	_, err = untrusted.Get(srv.URL + "/v2.0/networks")
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("client without the CA: err = %v, want an unknown authority", err)
	}
	// Plain HTTP on the TLS port gets no API answer.
	resp, err := untrusted.Get("http://" + strings.TrimPrefix(srv.URL, "https://") + "/v2.0/networks")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP to the TLS port: %d, want 400 (client sent an HTTP request to an HTTPS server)", resp.StatusCode)
		}
	}

	// Renewal: the new certificate is served within seconds.
	if err := ca.IssueServer(certFile, keyFile, 101, time.Hour, localhost); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 10*time.Second, func() error {
		conn, err := tls.Dial("tcp", strings.TrimPrefix(srv.URL, "https://"), &tls.Config{RootCAs: tr.TLSClientConfig.RootCAs})
		if err != nil {
			return err
		}
		defer conn.Close()
		if got := conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); got != 101 {
			return fmt.Errorf("serving certificate %d, want the renewed 101", got)
		}
		return nil
	})
}

// Two servers share one PostgreSQL; the agents talk to the first. When it
// is killed they move to the second within a request: heartbeats go on, a
// transition reported after the kill is shown by the second server, and the
// data plane is not touched (the desired state's ETag is the same on every
// server, so nothing is applied again).
func TestAgentsMoveToTheOtherServerWhenTheirsIsKilled(t *testing.T) {
	if os.Getenv(servertest.PostgresEnv) == "" {
		servertest.Backends(t) // fails under L3HA_TEST_REQUIRE_POSTGRES=1
		t.Skip("two servers need a shared PostgreSQL")
	}
	// agent_down_time 9 s: heartbeats every 3 s.
	a := servertest.Start(t, servertest.Options{Backend: "postgres", AgentDownTime: 9 * time.Second})
	b := servertest.Start(t, servertest.Options{DatabaseURL: a.DatabaseURL, AgentDownTime: 9 * time.Second})
	hc := &http.Client{Transport: &http.Transport{}}
	net1 := servertest.StartFakeAgentOf(t, "net1", []string{a.URL, b.URL}, hc)
	net2 := servertest.StartFakeAgentOf(t, "net2", []string{a.URL, b.URL}, hc)

	api := func(base, method, path, body string, out any) error {
		req, err := http.NewRequest(method, base+path, strings.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("%s %s: %d", method, path, resp.StatusCode)
		}
		if out != nil {
			return json.NewDecoder(resp.Body).Decode(out)
		}
		return nil
	}
	var r struct{ Router struct{ ID string } }
	// 409 until both agents have registered.
	servertest.Eventually(t, 20*time.Second, func() error {
		return api(a.URL, "POST", "/v2.0/routers", `{"router": {"name": "r1", "ha": true}}`, &r)
	})
	activeOn := func(base string) (string, error) {
		var out struct {
			Agents []struct {
				Host    string `json:"host"`
				HAState string `json:"ha_state"`
			} `json:"agents"`
		}
		if err := api(base, "GET", "/v2.0/routers/"+r.Router.ID+"/l3-agents", "", &out); err != nil {
			return "", err
		}
		var active []string
		for _, ag := range out.Agents {
			if ag.HAState == agentapi.HAActive {
				active = append(active, ag.Host)
			}
		}
		if len(out.Agents) != 2 || len(active) != 1 {
			return "", fmt.Errorf("bindings %+v", out.Agents)
		}
		return active[0], nil
	}
	var first string
	servertest.Eventually(t, 20*time.Second, func() error {
		var err error
		first, err = activeOn(a.URL)
		return err
	})
	st1, applies1 := net1.Dataplane.LastApplied()
	st2, applies2 := net2.Dataplane.LastApplied()

	a.Kill()
	t.Logf("server %s killed; %s was active", a.URL, first)

	// A failover after the kill: its reports reach the second server.
	other := map[string]*servertest.FakeAgent{"net1": net2, "net2": net1}[first]
	was := map[string]*servertest.FakeAgent{"net1": net1, "net2": net2}[first]
	if err := was.Dataplane.SetState(r.Router.ID, agentapi.HAStandby); err != nil {
		t.Fatal(err)
	}
	if err := other.Dataplane.SetState(r.Router.ID, agentapi.HAActive); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 10*time.Second, func() error {
		got, err := activeOn(b.URL)
		if err != nil {
			return err
		}
		if got != other.Host {
			return fmt.Errorf("the second server shows %s active, want %s", got, other.Host)
		}
		return nil
	})
	// Heartbeats reach the second server: both agents stay alive there
	// after a heartbeat interval has certainly passed.
	var agents struct {
		Agents []struct {
			Host        string `json:"host"`
			Alive       bool   `json:"alive"`
			HeartbeatAt string `json:"heartbeat_timestamp"`
		} `json:"agents"`
	}
	if err := api(b.URL, "GET", "/v2.0/agents", "", &agents); err != nil {
		t.Fatal(err)
	}
	before := map[string]string{}
	for _, ag := range agents.Agents {
		before[ag.Host] = ag.HeartbeatAt
	}
	servertest.Eventually(t, 60*time.Second, func() error {
		if err := api(b.URL, "GET", "/v2.0/agents", "", &agents); err != nil {
			return err
		}
		for _, ag := range agents.Agents {
			if !ag.Alive || ag.HeartbeatAt == before[ag.Host] {
				return fmt.Errorf("agent %s: alive %v, heartbeat %s (was %s)", ag.Host, ag.Alive, ag.HeartbeatAt, before[ag.Host])
			}
		}
		return nil
	})
	// The data plane saw nothing new from the second server.
	for _, c := range []struct {
		fa      *servertest.FakeAgent
		etag    string
		applies int
	}{{net1, st1.ETag, applies1}, {net2, st2.ETag, applies2}} {
		st, n := c.fa.Dataplane.LastApplied()
		if st.ETag != c.etag || n != c.applies {
			t.Errorf("%s: applied %d time(s) since the kill, ETag %s → %s; want no change", c.fa.Host, n-c.applies, c.etag, st.ETag)
		}
	}
}
