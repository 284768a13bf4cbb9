package server_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/layer3/routers"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"

	"github.com/l3ha/l3ha/internal/agentapi"
	"github.com/l3ha/l3ha/internal/api"
	"github.com/l3ha/l3ha/internal/keystone"
	"github.com/l3ha/l3ha/internal/keystone/local"
	"github.com/l3ha/l3ha/internal/servertest"
)

// TestOpenstackClientThroughKeystone drives l3ha the way a cloud's users
// do: the real `openstack` client with a clouds.yaml, a password login to
// Keystone, the network endpoint found in Keystone's catalog, the token
// validated by l3ha with Keystone. An admin builds an HA router with a
// tenant network, a gateway and a floating IP; a member does the same in
// project alpha; a reader of alpha sees alpha's resources and every write
// of its fails with 403.
func TestOpenstackClientThroughKeystone(t *testing.T) {
	bin, err := exec.LookPath("openstack")
	if err != nil {
		if os.Getenv("L3HA_TEST_REQUIRE_ALL") == "1" {
			t.Fatalf("openstack client not found (apt-get install python3-openstackclient): %v", err)
		}
		t.Skipf("openstack client not found: %v", err)
	}
	srv := startKeystoneServer(t, "", nil)
	srv.StartFakeAgent(t, "net1")
	srv.StartFakeAgent(t, "net2")
	home := t.TempDir()
	if err := os.MkdirAll(filepath.Join(home, ".config", "openstack"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := srv.cloud.WriteCloudsYAML(filepath.Join(home, ".config", "openstack", "clouds.yaml")); err != nil {
		t.Fatal(err)
	}
	client := func(cloud string) *oscClient { return &oscClient{t: t, bin: bin, home: home, cloud: cloud} }
	admin, member, reader := client(local.CloudAdmin), client(local.CloudMember), client(local.CloudReader)

	// The admin: external network, tenant network, HA router, gateway, FIP.
	var ext, sub, r, fip map[string]any
	admin.json(&ext, "network", "create", "--external", "--provider-network-type", "flat", "--provider-physical-network", "public", "public")
	oscWant(t, "public network", ext, map[string]any{"router:external": true, "project_id": srv.cloud.Alpha.ID})
	admin.json(&sub, "subnet", "create", "--network", "public", "--subnet-range", "172.24.4.0/24", "--no-dhcp", "public-subnet")
	admin.json(&r, "router", "create", "--ha", "r1")
	oscWant(t, "admin router create --ha", r, map[string]any{"name": "r1", "ha": true, "project_id": srv.cloud.Alpha.ID})
	admin.json(&sub, "network", "create", "admin-net")
	admin.json(&sub, "subnet", "create", "--network", "admin-net", "--subnet-range", "10.0.0.0/24", "admin-subnet")
	admin.run1("router", "add", "subnet", "r1", "admin-subnet")
	admin.run1("router", "set", "--external-gateway", "public", "r1")
	admin.json(&fip, "floating", "ip", "create", "public")
	oscOneActive(t, admin, "r1")

	// A member of alpha: its own network, subnet, router (ha is the
	// server's default: tenants may not set it), gateway, floating IP. The
	// agents hosting a router are an admin's business: 403, as in Neutron.
	var mnet, mr map[string]any
	member.json(&mnet, "network", "create", "member-net")
	oscWant(t, "member network", mnet, map[string]any{"project_id": srv.cloud.Alpha.ID})
	member.json(&sub, "subnet", "create", "--network", "member-net", "--subnet-range", "10.1.0.0/24", "member-subnet")
	if out, err := member.run("router", "create", "--ha", "m-ha"); err == nil || !strings.Contains(out, "disallowed by policy") {
		t.Errorf("member router create --ha: err %v, output %s", err, out)
	}
	member.json(&mr, "router", "create", "m1")
	member.run1("router", "add", "subnet", "m1", "member-subnet")
	member.run1("router", "set", "--external-gateway", "public", "m1")
	member.json(&fip, "floating", "ip", "create", "public")
	oscWant(t, "member floating ip", fip, map[string]any{"project_id": srv.cloud.Alpha.ID})
	if out, err := member.run("network", "agent", "list", "--router", "m1", "--long"); err == nil || !strings.Contains(out, "403") {
		t.Errorf("member network agent list --router: err %v, output %s", err, out)
	}

	// A reader of alpha reads alpha's resources and writes nothing.
	var nets, rs []map[string]any
	reader.json(&nets, "network", "list")
	if !oscListHas(nets, "member-net") || !oscListHas(nets, "public") {
		t.Errorf("reader network list: %v", nets)
	}
	reader.json(&rs, "router", "list")
	if !oscListHas(rs, "m1") || !oscListHas(rs, "r1") {
		t.Errorf("reader router list: %v", rs)
	}
	reader.json(&r, "router", "show", "m1")
	for _, write := range [][]string{
		{"network", "create", "reader-net"},
		{"subnet", "create", "--network", "member-net", "--subnet-range", "10.2.0.0/24", "reader-subnet"},
		{"router", "create", "reader-router"},
		{"router", "add", "subnet", "m1", "admin-subnet"},
		{"router", "set", "--external-gateway", "public", "r1"},
		{"router", "set", "--name", "renamed", "m1"},
		{"floating", "ip", "create", "public"},
		{"router", "delete", "m1"},
		{"network", "delete", "member-net"},
	} {
		out, err := reader.run(write...)
		if err == nil || !strings.Contains(out, "403") {
			t.Errorf("reader: openstack %s: err %v, want a 403; output %s", strings.Join(write, " "), err, out)
		}
	}
	reader.json(&rs, "router", "list")
	if !oscListHas(rs, "m1") || oscListHas(rs, "reader-router") || oscListHas(rs, "renamed") {
		t.Errorf("router list after the reader's writes: %v", rs)
	}
}

func oscListHas(list []map[string]any, name string) bool {
	for _, e := range list {
		if e["Name"] == name {
			return true
		}
	}
	return false
}

// TestGophercloudThroughKeystone logs in with gophercloud's Keystone v3
// password authentication, finds the network service in the catalog and
// creates and reads an HA router as admin and a router as a member of the
// same project.
func TestGophercloudThroughKeystone(t *testing.T) {
	srv := startKeystoneServer(t, "", nil)
	srv.StartFakeAgent(t, "net1")
	srv.StartFakeAgent(t, "net2")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	login := func(u local.User) *gophercloud.ServiceClient {
		t.Helper()
		provider, err := openstack.AuthenticatedClient(ctx, gophercloud.AuthOptions{
			IdentityEndpoint: srv.ks.IdentityURL(), Username: u.Name, Password: u.Password, DomainName: "Default",
			Scope: &gophercloud.AuthScope{ProjectName: u.Project.Name, DomainName: "Default"},
		})
		if err != nil {
			t.Fatalf("gophercloud login as %s: %v", u.Name, err)
		}
		nc, err := openstack.NewNetworkV2(provider, gophercloud.EndpointOpts{Region: srv.cloud.Region})
		if err != nil {
			t.Fatalf("network endpoint from the catalog: %v", err)
		}
		if !strings.HasPrefix(nc.Endpoint, srv.URL) {
			t.Fatalf("catalog's network endpoint %q, want the server at %s", nc.Endpoint, srv.URL)
		}
		return nc
	}
	admin, member := login(srv.cloud.Admin), login(srv.cloud.MemberAlpha)
	r, err := routers.Create(ctx, admin, gcHARouterCreateOpts{CreateOpts: routers.CreateOpts{Name: "gc-ha"}, HA: gophercloud.Enabled}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	if r.ProjectID != srv.cloud.Alpha.ID {
		t.Errorf("admin's router belongs to %q, want alpha %q", r.ProjectID, srv.cloud.Alpha.ID)
	}
	n, err := networks.Create(ctx, member, networks.CreateOpts{Name: "gc-member-net"}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	if n.ProjectID != srv.cloud.Alpha.ID {
		t.Errorf("member's network belongs to %q, want alpha", n.ProjectID)
	}
	got, err := routers.Get(ctx, member, r.ID).Extract()
	if err != nil || got.Name != "gc-ha" {
		t.Fatalf("member reading the project's router: %v %+v", err, got)
	}
}

// TestKeystoneBadTokensAreRefusedAndChangeNothing: every request below is
// refused with Keystone's and Neutron's status, and the database is the same
// after it as before.
func TestKeystoneBadTokensAreRefusedAndChangeNothing(t *testing.T) {
	ks, _ := sharedKeystone(t)
	proxy := startKeystoneProxy(t, ks.URL)
	srv := startKeystoneServer(t, proxy.URL, func(c *keystone.Config) {
		c.Timeout = time.Second
		c.MaxRetries = 1
		// Every request asks Keystone, so that Keystone's trouble shows.
		c.CacheTime = 0
	})
	member := srv.token(t, srv.cloud.MemberAlpha)
	beta := srv.token(t, srv.cloud.MemberBeta)
	hdr := func(tok string) map[string]string { return map[string]string{"X-Auth-Token": tok} }

	var net struct{ Network map[string]any }
	if err := biCall(srv.URL, "POST", "/v2.0/networks", hdr(member), `{"network": {"name": "alpha-net"}}`, 201, &net); err != nil {
		t.Fatal(err)
	}
	netID := net.Network["id"].(string)
	if net.Network["project_id"] != srv.cloud.Alpha.ID {
		t.Fatalf("network of alpha's member belongs to %v", net.Network["project_id"])
	}

	// A revoked token, and one that has expired (issued by a Keystone
	// sharing this one's keys with a 2 s token lifetime).
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	revoked := srv.token(t, srv.cloud.MemberAlpha)
	admin, err := ks.AdminClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.RevokeToken(ctx, revoked); err != nil {
		t.Fatal(err)
	}
	issuer, stopIssuer, err := ks.StartIssuer(ctx, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer stopIssuer()
	short, err := local.NewClient(issuer+"/v3", nil).IssueToken(ctx, srv.cloud.MemberAlpha.Credentials())
	if err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 30*time.Second, func() error {
		if time.Now().Before(short.ExpiresAt.Add(500 * time.Millisecond)) {
			return fmt.Errorf("token expires at %s", short.ExpiresAt)
		}
		return nil
	})

	writes := []struct{ method, path, body string }{
		{"GET", "/v2.0/networks", ""},
		{"GET", "/v2.0/networks/" + netID, ""},
		{"POST", "/v2.0/networks", `{"network": {"name": "x"}}`},
		{"PUT", "/v2.0/networks/" + netID, `{"network": {"name": "pwn"}}`},
		{"DELETE", "/v2.0/networks/" + netID, ""},
	}
	var cases []biCase
	for _, tok := range []struct{ name, token string }{
		{"no token", ""}, {"empty token", " "}, {"garbage token", "gAAAAA-not-a-fernet-token"},
		{"revoked token", revoked}, {"expired token", short.ID}, {"service token of another cloud", strings.Repeat("x", 300)},
	} {
		for _, w := range writes {
			cases = append(cases, biCase{name: tok.name + " " + w.method + " " + w.path, method: w.method, path: w.path,
				header: hdr(tok.token), body: w.body, status: 401, plain401: true})
		}
	}
	// Another project's valid token sees nothing of alpha's: 404, as for
	// any resource of another project.
	cases = append(cases,
		biCase{name: "beta token reads alpha's network", method: "GET", path: "/v2.0/networks/" + netID, header: hdr(beta), status: 404, typ: "NetworkNotFound"},
		biCase{name: "beta token renames alpha's network", method: "PUT", path: "/v2.0/networks/" + netID, header: hdr(beta), body: `{"network": {"name": "pwn"}}`, status: 404, typ: "NetworkNotFound"},
		biCase{name: "beta token deletes alpha's network", method: "DELETE", path: "/v2.0/networks/" + netID, header: hdr(beta), status: 404, typ: "NetworkNotFound"},
	)
	// Identity headers mean nothing beside a Keystone token: a member
	// claiming admin roles and another project is still alpha's member.
	spoof := map[string]string{"X-Auth-Token": member, "X-Roles": "admin", "X-Project-Id": srv.cloud.Beta.ID, "X-Identity-Status": "Confirmed"}
	cases = append(cases, biCase{name: "member token with admin headers sets provider attributes", method: "POST", path: "/v2.0/networks",
		header: spoof, body: `{"network": {"name": "x", "provider:network_type": "flat", "provider:physical_network": "public"}}`,
		status: 403, typ: "PolicyNotAuthorized"})
	// The agent endpoint keeps its own shared secret: a Keystone token,
	// even an admin's, opens nothing there.
	adminTok := srv.token(t, srv.cloud.Admin)
	hb := `{"host": "intruder", "agent_type": "L3 agent", "configurations": {}}`
	for _, h := range []map[string]string{{"X-Auth-Token": adminTok}, {agentapi.TokenHeader: adminTok}} {
		cases = append(cases, biCase{name: "keystone admin token on the agent endpoint", method: "POST", path: agentapi.PathHeartbeat,
			header: h, body: hb, status: 401, typ: "HTTPUnauthorized", msg: "missing or invalid agent token"})
	}
	biSettleQuiet(t, srv.Instance)
	for _, c := range cases {
		biRunCase(t, srv.Instance, c)
	}
	for _, c := range cases[:len(writes)*3] {
		if c.header["X-Auth-Token"] == "" || strings.TrimSpace(c.header["X-Auth-Token"]) == "" {
			continue
		}
		status, h, _, err := biDo(srv.URL, c.method, c.path, c.header, c.body)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := h.Get("WWW-Authenticate"), fmt.Sprintf("Keystone uri=%q", ks.URL); status != 401 || got != want {
			t.Errorf("%s: %d WWW-Authenticate %q, want 401 %q", c.name, status, got, want)
		}
	}

	// Keystone down, then slower than http_connect_timeout: 503, and the
	// request does nothing; once Keystone is back the same token works.
	for _, trouble := range []struct {
		name  string
		apply func()
	}{
		{"keystone down", func() { proxy.down.Store(true) }},
		{"keystone slower than the timeout", func() { proxy.down.Store(false); proxy.delay.Store(int64(3 * time.Second)) }},
	} {
		trouble.apply()
		for _, w := range writes {
			biRunCase(t, srv.Instance, biCase{name: trouble.name + " " + w.method + " " + w.path, method: w.method, path: w.path,
				header: hdr(member), body: w.body, status: 503, typ: "HTTPServiceUnavailable"})
		}
	}
	proxy.down.Store(false)
	proxy.delay.Store(0)
	if err := biCall(srv.URL, "GET", "/v2.0/networks/"+netID, hdr(member), "", 200, nil); err != nil {
		t.Fatalf("after Keystone recovered: %v", err)
	}
}

// BenchmarkRequestLatency compares the latency of one API request
// (GET /v2.0/networks, a project with a few networks) under the static
// token file and under Keystone with the token cached (token_cache_time
// 300 s, the default) and uncached (token_cache_time 0: every request
// asks Keystone). Run: go test -run '^$' -bench RequestLatency ./internal/server
func BenchmarkRequestLatency(b *testing.B) {
	dir := b.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("statictok alpha member,reader\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	static := startTokenFileServer(b, tokens)
	cached := startKeystoneServer(b, "", nil)
	uncached := startKeystoneServer(b, "", func(c *keystone.Config) { c.CacheTime = 0 })
	tok := cached.token(b, cached.cloud.MemberAlpha)
	for _, s := range []struct {
		name, url, token string
	}{{"static-token", static.URL, "statictok"}, {"keystone-cached", cached.URL, tok}, {"keystone-uncached", uncached.URL, tok}} {
		for i := range 3 {
			if err := biCall(s.url, "POST", "/v2.0/networks", map[string]string{"X-Auth-Token": s.token}, fmt.Sprintf(`{"network": {"name": "n%d"}}`, i), 201, nil); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(s.name, func(b *testing.B) {
			client := &http.Client{}
			lat := make([]time.Duration, 0, b.N)
			for b.Loop() {
				req, _ := http.NewRequest("GET", s.url+"/v2.0/networks", nil)
				req.Header.Set("X-Auth-Token", s.token)
				start := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
				lat = append(lat, time.Since(start))
				if resp.StatusCode != 200 {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
			b.ReportMetric(float64(benchPercentile(lat, 50).Microseconds()), "p50-µs")
			b.ReportMetric(float64(benchPercentile(lat, 99).Microseconds()), "p99-µs")
		})
	}
}

// startTokenFileServer is an l3ha server in token mode (the static token
// file), for comparison with Keystone.
func startTokenFileServer(tb testing.TB, file string) *servertest.Instance {
	tb.Helper()
	auth, err := api.LoadTokenFile(file)
	if err != nil {
		tb.Fatal(err)
	}
	return servertest.Start(tb, servertest.Options{Auth: auth})
}
