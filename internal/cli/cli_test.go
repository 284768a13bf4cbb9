package cli

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

func TestIdentityHeaders(t *testing.T) {
	cases := []struct {
		name                 string
		env                  map[string]string
		args                 []string
		token, project, role string
	}{
		{name: "none"},
		{
			name:    "from env",
			env:     map[string]string{envToken: "tok-env", envProject: "demo-project", envRoles: "member,reader"},
			token:   "tok-env",
			project: "demo-project",
			role:    "member,reader",
		},
		{
			name:    "flags win over env",
			env:     map[string]string{envToken: "tok-env", envProject: "demo-project", envRoles: "member"},
			args:    []string{"--token", "tok-flag", "--project", "admin-project", "--roles", "admin"},
			token:   "tok-flag",
			project: "admin-project",
			role:    "admin",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			f := newFakeNeutron(t)
			f.on("GET /v2.0/agents", 200, many("agents"))
			res := runCLI(t, f.srv.URL, append(tc.args, "agent", "list")...)
			if res.err != nil {
				t.Fatal(res.err, res.errOut)
			}
			reqs := f.requests()
			if len(reqs) != 1 {
				t.Fatalf("%d requests", len(reqs))
			}
			h := reqs[0].Header
			for name, want := range map[string]string{"X-Auth-Token": tc.token, "X-Project-Id": tc.project, "X-Roles": tc.role} {
				if got := h.Get(name); got != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
				if want == "" && len(h.Values(name)) > 0 {
					t.Errorf("%s sent though empty", name)
				}
			}
			if got := h.Get("Accept"); got != "application/json" {
				t.Errorf("Accept = %q", got)
			}
		})
	}
}

func TestURL(t *testing.T) {
	f := newFakeNeutron(t)
	f.on("GET /v2.0/routers", 200, many("routers"))
	t.Run("from env", func(t *testing.T) {
		clearEnv(t)
		t.Setenv(envURL, f.srv.URL)
		res := runCLI(t, "", "router", "list")
		if res.err != nil {
			t.Fatal(res.err, res.errOut)
		}
	})
	t.Run("trailing /v2.0/ is accepted", func(t *testing.T) {
		clearEnv(t)
		res := runCLI(t, f.srv.URL+"/v2.0/", "router", "list")
		if res.err != nil {
			t.Fatal(res.err, res.errOut)
		}
	})
	t.Run("invalid", func(t *testing.T) {
		clearEnv(t)
		res := runCLI(t, "127.0.0.1:9696", "router", "list")
		if res.err == nil || !strings.Contains(res.errOut, `Error: invalid --url "127.0.0.1:9696"`) {
			t.Errorf("err %v, stderr %q", res.err, res.errOut)
		}
	})
	t.Run("default", func(t *testing.T) {
		clearEnv(t)
		root := &cobra.Command{Use: "l3ha"}
		Register(root, &cobra.Command{Use: "agent"})
		if got := root.PersistentFlags().Lookup("url").DefValue; got != defaultURL {
			t.Errorf("default --url %q", got)
		}
		if got := root.PersistentFlags().ShorthandLookup("o").DefValue; got != "table" {
			t.Errorf("default -o %q", got)
		}
	})
	for _, r := range f.requests() {
		if r.URI != "/v2.0/routers" {
			t.Errorf("request to %s", r.URI)
		}
	}
}

func TestServerUnreachable(t *testing.T) {
	clearEnv(t)
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	res := runCLI(t, url, "network", "list")
	if res.err == nil || !strings.HasPrefix(res.errOut, "Error: ") {
		t.Errorf("err %v, stderr %q", res.err, res.errOut)
	}
	if strings.Contains(res.errOut, "Usage:") || strings.Contains(res.out, "Usage:") {
		t.Error("usage printed for a run-time error")
	}
}

// The agent daemon command keeps its own Run and flags; "list" is added under it.
func TestAgentCommandKept(t *testing.T) {
	clearEnv(t)
	res := runCLI(t, "", "agent", "--config", "x.ini")
	if res.err != nil || !res.agentRan {
		t.Fatalf("agent Run not called: err %v, stderr %q", res.err, res.errOut)
	}
	f := newFakeNeutron(t)
	f.on("GET /v2.0/agents", 200, many("agents"))
	res = runCLI(t, f.srv.URL, "agent", "list")
	if res.err != nil || res.agentRan {
		t.Fatalf("agent list: err %v, agent Run called %v", res.err, res.agentRan)
	}
}

func TestRegisterCommands(t *testing.T) {
	root := &cobra.Command{Use: "l3ha"}
	agent := &cobra.Command{Use: "agent", Run: func(*cobra.Command, []string) {}}
	root.AddCommand(agent)
	Register(root, agent)
	want := []string{
		"network create", "network list", "network show", "network delete",
		"subnet create", "subnet list", "subnet show", "subnet delete",
		"router create", "router list", "router show", "router update", "router delete",
		"router add-interface", "router remove-interface", "router set-gateway", "router clear-gateway", "router agents", "router history",
		"floatingip create", "floatingip associate", "floatingip disassociate", "floatingip list", "floatingip show", "floatingip delete",
		"agent list",
	}
	for _, w := range want {
		cmd, rest, err := root.Find(strings.Fields(w))
		if err != nil || len(rest) != 0 || cmd.Name() != strings.Fields(w)[1] {
			t.Errorf("%q not registered (%v)", w, err)
		}
	}
	if agent.Run == nil {
		t.Error("agent Run changed")
	}
}

func TestClientTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	c, err := newClient(srv.URL, "", "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	c.timeout = 50 * time.Millisecond
	start := time.Now()
	_, err = c.do(context.Background(), http.MethodGet, "/v2.0/networks", nil, nil)
	if err == nil || !strings.Contains(err.Error(), "no answer within 50ms") {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s", d)
	}
}

func TestClientCancel(t *testing.T) {
	c, err := newClient("http://127.0.0.1:1", "", "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.do(ctx, http.MethodGet, "/v2.0/networks", nil, nil); err == nil {
		t.Fatal("want an error for a cancelled context")
	}
}

func TestParseAPIError(t *testing.T) {
	cases := []struct {
		status int
		body   string
		want   string
	}{
		{409, `{"NeutronError":{"type":"IpAddressInUse","message":"in use","detail":""}}`, "Error (HTTP 409 Conflict, IpAddressInUse): in use"},
		{400, `{"NeutronError":"legacy message"}`, "Error (HTTP 400 Bad Request): legacy message"},
		{500, `{"something":"else"}`, `Error (HTTP 500 Internal Server Error): {"something":"else"}`},
		{599, ``, "Error (HTTP 599): no error message in the answer"},
	}
	for _, tc := range cases {
		e := parseAPIError(tc.status, []byte(tc.body))
		if got := e.render(); got != tc.want {
			t.Errorf("%d %s: got %q, want %q", tc.status, tc.body, got, tc.want)
		}
	}
	e := parseAPIError(409, []byte(`{"NeutronError":{"type":"T","message":"m","detail":"d"}}`))
	if got := e.Error(); got != "HTTP 409 Conflict, T: m" {
		t.Errorf("Error() = %q", got)
	}
}

func TestFormatValue(t *testing.T) {
	var v map[string]any
	if err := json.Unmarshal([]byte(`{"routes":[{"destination":"10.1.0.0/24","nexthop":"10.0.0.5"}]}`), &v); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		in   any
		want string
	}{
		{nil, ""},
		{"x", "x"},
		{true, "True"},
		{false, "False"},
		{json.Number("981"), "981"},
		{[]any{}, ""},
		{[]any{"a", "b"}, "a, b"},
		{map[string]any{"b": json.Number("1"), "a": "x"}, `{"a":"x","b":1}`},
		{v["routes"], `[{"destination":"10.1.0.0/24","nexthop":"10.0.0.5"}]`},
	}
	for _, tc := range cases {
		if got := formatValue(tc.in); got != tc.want {
			t.Errorf("formatValue(%#v) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if formatAlive(true) != ":-)" || formatAlive(false) != "xxx" || formatAlive(nil) != "" {
		t.Error("formatAlive")
	}
}

func TestParseKV(t *testing.T) {
	pool := []string{"start", "end"}
	cases := []struct {
		in      string
		wantErr string
	}{
		{"start=1.1.1.1,end=1.1.1.9", ""},
		{" end=1.1.1.9 , start=1.1.1.1 ", ""},
		{"start=1.1.1.1", `missing "end"`},
		{"start=1.1.1.1,end=", "want start=VALUE,end=VALUE"},
		{"start=1.1.1.1,stop=2", `unknown key "stop"`},
		{"start=1,start=2,end=3", `"start" given twice`},
		{"1.1.1.1-1.1.1.9", "want start=VALUE,end=VALUE"},
	}
	for _, tc := range cases {
		kv, err := parseKV("--allocation-pool", tc.in, pool, pool)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%q: %v", tc.in, err)
		case tc.wantErr == "" && (kv["start"] != "1.1.1.1" || kv["end"] != "1.1.1.9"):
			t.Errorf("%q: got %v", tc.in, kv)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%q: err %v, want %q", tc.in, err, tc.wantErr)
		}
	}
	if _, err := parseRoute("destination=10.0.0.0/8,gateway=1.1.1.1,nexthop=1.1.1.2"); err == nil {
		t.Error("gateway and nexthop both accepted")
	}
}

func TestIsUUID(t *testing.T) {
	for s, want := range map[string]bool{
		routerID:                               true,
		strings.ToUpper(routerID):              true,
		"d50b71470cd943e7b91fa5235c2b0a11":     false, // not canonical: a name
		"urn:uuid:" + routerID:                 false,
		"ha-router":                            false,
		"d50b7147-0cd9-43e7-b91f-a5235c2b0a1x": false,
	} {
		if got := isUUID(s); got != want {
			t.Errorf("isUUID(%q) = %v", s, got)
		}
	}
}
