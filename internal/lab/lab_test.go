package lab

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestStateRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lab")
	if st, err := LoadState(dir); st != nil || err != nil {
		t.Fatalf("LoadState of a missing file = %v, %v; want nil, nil", st, err)
	}
	st := &State{
		Name: "t1", Dir: dir, Binary: "/usr/bin/l3ha", CreatedAt: time.Unix(1700000000, 0).UTC(),
		Dataplane: "fake", AgentDownTime: 10, ServerURL: serverURL(),
		Processes: []Process{{Name: "server", Node: "net1", Namespace: "l3ha-t1-net1", PID: 42, StartTime: 7, Argv: []string{"/usr/bin/l3ha", "server"}, Log: "/x"}},
	}
	if err := st.Save(); err != nil {
		t.Fatal(err)
	}
	st.setProcess(Process{Name: "agent-net1", PID: 43})
	st.setProcess(Process{Name: "server", PID: 44, Argv: []string{"a"}})
	if err := st.Save(); err != nil {
		t.Fatal(err)
	}
	got, err := LoadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "t1" || got.ServerURL != "https://10.99.0.1:9696" || len(got.Processes) != 2 {
		t.Fatalf("loaded %+v", got)
	}
	if p, ok := got.process("server"); !ok || p.PID != 44 {
		t.Errorf("server = %+v, %v; want the replaced record (pid 44)", p, ok)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() != stateFile {
			t.Errorf("left over in the lab directory: %s", e.Name())
		}
	}
	if err := os.WriteFile(statePath(dir), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadState(dir); err == nil {
		t.Error("LoadState of a corrupt file: no error")
	}
}

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"lab", "t1", "abcdefghijkl", "0"} {
		if err := ValidateName(ok); err != nil {
			t.Errorf("ValidateName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "Lab", "a-b", "a_b", "abcdefghijklm", "../x", "a b"} {
		if err := ValidateName(bad); err == nil {
			t.Errorf("ValidateName(%q): no error", bad)
		}
	}
}

func TestOwnsNamespace(t *testing.T) {
	const id = "2274a168-8f82-4445-8a23-905ac1d4cb92"
	cases := map[string]bool{
		"l3ha-lab-net1":                true,
		"l3ha-lab-fabric":              true,
		"l3ha-lab-vm1":                 true,
		"l3ha-lab-other":               false, // not a role of the lab
		"l3ha-lab2-net1":               false, // another lab
		"qrouter-" + id + "-lab-net1":  true,
		"qrouter-" + id + "-lab-net2":  true,
		"qrouter-" + id + "-lab-cpu":   false, // not a node
		"qrouter-" + id + "-xlab-net1": false, // lab "xlab"
		"qrouter-" + id + "-net1":      false, // no lab name
		"qrouter-" + id:                false, // a real node's router
		"snat-" + id + "-lab-net1":     true,
		"qrouter-1234-lab-net1":        false, // not a uuid
	}
	for ns, want := range cases {
		if got := ownsNamespace("lab", ns); got != want {
			t.Errorf("ownsNamespace(lab, %q) = %v, want %v", ns, got, want)
		}
	}
	// Another lab whose name ends like this one never matches it.
	if ownsNamespace("lab", "qrouter-"+id+NetnsSuffix("xlab", "net1")) {
		t.Error("lab owns xlab's router")
	}
	if got := RouterNamespace("lab", id, "net1"); got != "qrouter-"+id+"-lab-net1" {
		t.Errorf("RouterNamespace = %q", got)
	}
}

func TestDeviceNamesFit(t *testing.T) {
	names := []string{devFabric, devExternal, devUplink, devBridge, devInstance, upstreamNS,
		BridgeName("30dce36e-c7aa-4bb1-9d55-000000000000"), TapName("817fe707-6c11-4c11-8d55-000000000000")}
	for _, n := range Nodes {
		names = append(names, n.Name) // switch-side veth names
	}
	for _, n := range names {
		if len(n) > 15 {
			t.Errorf("device name %q is longer than IFNAMSIZ-1 (15)", n)
		}
	}
	if got := BridgeName("30dce36e-c7aa-4bb1-9d55-000000000000"); got != "brq30dce36e-c7" {
		t.Errorf("BridgeName = %q, want brq30dce36e-c7", got)
	}
}

// helpNow is `l3ha agent --help` with every flag the lab can use.
const helpNow = `Flags:
      --agent-mode string                    agent mode: legacy or dvr_snat (routers are scheduled here), dvr (compute node: wires the networks of its instances only) (default "legacy")
      --agent-token string                   shared agent token
      --agent-token-file string              file holding the shared agent token
      --dataplane string                     data plane: linux (namespaces, bridges, VRRP) or fake (touches nothing; for tests and simulations) (default "linux")
      --ha-driver string                     VRRP implementation for HA routers: keepalived (default "keepalived")
      --ha-vrrp-advert-int float             VRRP advertisement interval in seconds (default 2)
  -h, --help                                 help for agent
      --host string                          name of this host as the server knows it (default "vm")
      --local-ip string                      this node's underlay address for VXLAN tunnels
      --netns-suffix string                  suffix of this agent's router namespaces (qrouter-<id><suffix>)
      --physical-interface-mappings string   flat networks: PHYSNET:IFACE[,PHYSNET:IFACE...]
      --server strings                       URL of an l3ha server (default [http://127.0.0.1:9696])
      --server-ca string                     PEM file of the CA(s) that signed the servers' certificates
      --state-dir string                     directory for the agent's state (default "/var/lib/l3ha")

Global Flags:
  -o, --output string    output format: table|json (default "table")
      --url string       l3ha/Neutron API endpoint (env L3HA_URL) (default "http://127.0.0.1:9696")
`

// helpOld is the agent before the Linux data plane: no dvr, no lab flags.
const helpOld = `Flags:
      --agent-mode string         agent mode: legacy or dvr_snat (default "legacy")
      --agent-token string        shared agent token
      --agent-token-file string   file holding the shared agent token
      --dataplane string          data plane: linux (namespaces, bridges, VRRP) or fake (touches nothing; for tests and simulations) (default "linux")
  -h, --help                      help for agent
      --host string               name of this host as the server knows it (default "vm")
      --local-ip string           this node's underlay address for VXLAN tunnels
      --server string             URL of the l3ha server (default "http://127.0.0.1:9696")
      --state-dir string          directory for the agent's state (ha_confs/<router_id>/state, ...) (default "/var/lib/l3ha")
`

func TestParseAgentHelp(t *testing.T) {
	now := parseAgentHelp(helpNow)
	if !now.dvr {
		t.Error("dvr not detected")
	}
	for _, f := range []string{"netns-suffix", "physical-interface-mappings", "ha-driver", "ha-vrrp-advert-int", "agent-token-file", "help", "output", "url"} {
		if !now.flags[f] {
			t.Errorf("flag --%s not detected", f)
		}
	}
	if now.flags["id"] || now.flags["default"] {
		t.Error("words inside usage texts taken for flags")
	}
	old := parseAgentHelp(helpOld)
	if old.dvr {
		t.Error("dvr detected in \"legacy or dvr_snat\"")
	}
	if old.flags["netns-suffix"] || !old.flags["agent-mode"] {
		t.Errorf("old flags = %v", old.flags)
	}
}

func TestAgentArgv(t *testing.T) {
	st := &State{Name: "lab", Dir: "/run/l3ha-lab/lab", Binary: "/bin/l3ha", Dataplane: DataplaneLinux, ServerURL: serverURL(), HADriver: "keepalived", AdvertInt: "0.1"}
	now := parseAgentHelp(helpNow)
	net1, _ := nodeByName("net1")
	argv, err := agentArgv(st, net1, now)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/bin/l3ha", "agent", "--host", "net1", "--server", "https://10.99.0.1:9696",
		"--server-ca", "/run/l3ha-lab/lab/tls/ca.pem", "--agent-token-file", "/run/l3ha-lab/lab/agent-token-net1", "--state-dir", "/run/l3ha-lab/lab/nodes/net1",
		"--local-ip", "10.99.0.2", "--dataplane", "linux", "--agent-mode", "legacy",
		"--netns-suffix", "-lab-net1", "--physical-interface-mappings", "public:ext0",
		"--ha-driver", "keepalived", "--ha-vrrp-advert-int", "0.1"}
	if !slices.Equal(argv, want) {
		t.Errorf("net1 argv =\n%q\nwant\n%q", argv, want)
	}
	c1, _ := nodeByName("compute1")
	argv, err = agentArgv(st, c1, now)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Join(argv, " ")
	if !strings.Contains(s, "--agent-mode dvr") || strings.Contains(s, "physical-interface-mappings") || !strings.Contains(s, "--ha-driver keepalived") {
		t.Errorf("compute1 argv = %s", s)
	}

	// The old agent: the Linux data plane cannot do without the lab flags,
	// and names them.
	old := parseAgentHelp(helpOld)
	_, err = agentArgv(st, net1, old)
	if err == nil || !strings.Contains(err.Error(), "--netns-suffix") || !strings.Contains(err.Error(), "--ha-driver") {
		t.Errorf("old agent, linux: err = %v", err)
	}
	// Nor can the fake data plane: an agent that cannot verify the lab's
	// https server (no --server-ca) is refused by name.
	fake := &State{Name: "lab", Dir: "/d", Binary: "/bin/l3ha", Dataplane: DataplaneFake, ServerURL: serverURL()}
	if _, err := agentArgv(fake, c1, old); err == nil || !strings.Contains(err.Error(), "--server-ca") {
		t.Errorf("old agent, fake: err = %v, want one naming --server-ca", err)
	}
}

func TestServerArgv(t *testing.T) {
	st := &State{Name: "lab", Dir: "/d", Binary: "/bin/l3ha", AgentDownTime: 10}
	s := strings.Join(serverArgv(st), " ")
	for _, want := range []string{"/bin/l3ha server", "--bind 10.99.0.1:9696", "--state-dir /d/server", "--agent-tokens-file /d/agent-tokens",
		"--l3-ha true", "--agent-down-time 10", "--min-l3-agents-per-router 2", "--max-l3-agents-per-router 2"} {
		if !strings.Contains(s, want) {
			t.Errorf("server argv %q lacks %q", s, want)
		}
	}
	if !strings.HasSuffix(s, " --auth-strategy noauth") || strings.Contains(s, "--config-file") {
		t.Errorf("server argv without keystone %q: want --auth-strategy noauth and no --config-file", s)
	}

	// With Keystone the server reads auth_strategy and [keystone_authtoken]
	// (the service user's password) from <dir>/server.conf: nothing of it
	// on the command line, where ps would show it.
	st.Keystone = &LabKeystone{URL: "http://127.0.0.1:5000", AdminUser: "admin-alpha", AdminPassword: "secret", AdminProject: "alpha"}
	ks := serverArgv(st)
	if n := len(ks); n < 2 || ks[n-2] != "--config-file" || ks[n-1] != "/d/server.conf" {
		t.Errorf("server argv with keystone %q: want --config-file /d/server.conf at the end", ks)
	}
	for _, a := range ks {
		if a == "--auth-strategy" || a == "noauth" || strings.Contains(a, "secret") || strings.Contains(a, "127.0.0.1:5000") {
			t.Errorf("server argv with keystone %q has %q", ks, a)
		}
	}
	if got, want := strings.Join(ks[:len(ks)-2], " "), strings.TrimSuffix(s, " --auth-strategy noauth"); got != want {
		t.Errorf("server argv with keystone %q, want the same flags as without (%q)", got, want)
	}
}

func TestParseStat(t *testing.T) {
	// The command name may hold spaces and parentheses.
	stat := "1234 (l3ha (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 8 0 163706 1000000 500 18446744073709551615"
	state, start, err := parseStat([]byte(stat))
	if err != nil || state != 'S' || start != 163706 {
		t.Fatalf("parseStat = %c, %d, %v; want S, 163706", state, start, err)
	}
	for _, bad := range []string{"", "1234 (x", "1234 (x) S 1 2"} {
		if _, _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q): no error", bad)
		}
	}
	if _, _, err := procStat(os.Getpid()); err != nil {
		t.Errorf("procStat(self): %v", err)
	}
}

func TestProcessIdentity(t *testing.T) {
	self, err := cmdlineOf(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	start, err := procStartTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	p := Process{PID: os.Getpid(), StartTime: start, Argv: self}
	if !p.running() {
		t.Fatal("this process is not recognised")
	}
	for name, q := range map[string]Process{
		"other start time": {PID: p.PID, StartTime: start + 1, Argv: self},
		"other argv":       {PID: p.PID, StartTime: start, Argv: append(slices.Clone(self), "x")},
		"no pid":           {PID: 0, Argv: self},
		"gone":             {PID: 1 << 30, Argv: self},
	} {
		if q.running() {
			t.Errorf("%s: taken for the lab's process", name)
		}
	}
	if got := splitCmdline([]byte("a\x00b c\x00\x00d\x00")); !slices.Equal(got, []string{"a", "b c", "", "d"}) {
		t.Errorf("splitCmdline = %q", got)
	}
	if n, ok := parseNSLink("net:[4026531840]"); !ok || n != 4026531840 {
		t.Errorf("parseNSLink = %d, %v", n, ok)
	}
	if _, ok := parseNSLink("mnt:[1]"); ok {
		t.Error("parseNSLink accepted a mount namespace")
	}
}

func TestChildEnvDropsL3HAVariables(t *testing.T) {
	t.Setenv("L3HA_DATABASE", "postgres://elsewhere")
	t.Setenv("L3HA_LABTEST_OTHER", "x")
	for _, kv := range childEnv() {
		if strings.HasPrefix(kv, "L3HA_") {
			t.Errorf("child environment has %s", kv)
		}
	}
}

func f64(v float64) *float64 { return &v }

func sampleResult() *Result {
	return &Result{
		Lab: "lab", Fault: FaultHALink, RouterID: "r1", GatewayIP: "172.24.4.100", FloatingIP: "172.24.4.101",
		InstanceIP: "10.10.30.2", PingTarget: UpstreamIP, MasterBefore: "net2", MasterAfter: "net1",
		APIMasterBefore: "net2", APIMasterAfter: "net1", FailoverSeconds: f64(4.959), APIFailoverSeconds: f64(7.234),
		PingsSent: 530, PingsReceived: 254, PingsLost: 276, PingIntervalMS: 10, PingIntervalMeasuredMS: 16.5,
		LongestGapSeconds: 4.958, FloatingIPReachable: true, FaultDetail: "ha-817fe707-6c down",
		AgentsBefore: []AgentHAState{{Host: "net1", Alive: true, HAState: "standby"}, {Host: "net2", Alive: true, HAState: "active"}},
		AgentsAfter:  []AgentHAState{{Host: "net1", Alive: true, HAState: "active"}, {Host: "net2", Alive: true, HAState: "standby"}},
		Dataplane:    "linux",
	}
}

func TestResultJSON(t *testing.T) {
	var b bytes.Buffer
	if err := sampleResult().WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b.Bytes(), &m); err != nil {
		t.Fatalf("not one JSON object: %v\n%s", err, b.String())
	}
	want := map[string]any{
		"master_before": "net2", "master_after": "net1", "failover_seconds": 4.959,
		"pings_sent": 530.0, "pings_lost": 276.0, "ping_interval_ms": 10.0, "fault": "ha-link",
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
	if _, ok := m["agents_before"].([]any); !ok {
		t.Errorf("agents_before = %v", m["agents_before"])
	}

	// No failover: failover_seconds is null, not 0.
	r := sampleResult()
	r.FailoverSeconds, r.MasterAfter = nil, "net2"
	b.Reset()
	if err := r.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	m = nil
	if err := json.Unmarshal(b.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	if v, ok := m["failover_seconds"]; !ok || v != nil {
		t.Errorf("failover_seconds = %v (present %v), want null", v, ok)
	}
}

func TestResultTable(t *testing.T) {
	var b bytes.Buffer
	if err := sampleResult().WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"HOST  HA_STATE BEFORE  HA_STATE AFTER",
		"net1  standby          active",
		"net2  active           standby",
		"master before", "net2", "master after",
		"4.959 s", "7.234 s", "pings sent", "530", "pings lost", "276",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	r := sampleResult()
	r.FailoverSeconds, r.APIFailoverSeconds = nil, nil
	b.Reset()
	_ = r.WriteTable(&b)
	if !strings.Contains(b.String(), "no other node took over") {
		t.Errorf("table without failover:\n%s", b.String())
	}
}

func TestStatusTable(t *testing.T) {
	r := &StatusReport{Name: "lab", Dir: "/d", Up: true, Dataplane: "fake", Namespaces: []string{"l3ha-lab-net1"},
		Processes: []ProcessStatus{{Name: "server", PID: 1, Running: true}},
		Agents:    []AgentStatus{{Host: "net1", Mode: "legacy", Alive: true, AdminStateUp: true, ID: "a1"}},
		Routers:   []RouterStatus{{Name: "r", ID: "r1", HAStates: map[string]string{"net2": "standby", "net1": "active"}}}}
	var b bytes.Buffer
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`lab "lab": up`, "server", "running", "net1", "legacy", ":-)", "net1=active net2=standby"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	(&StatusReport{Name: "x", Dir: "/d"}).WriteTable(&b)
	if !strings.Contains(b.String(), `lab "x": down`) {
		t.Errorf("status of an absent lab:\n%s", b.String())
	}
}

func TestFailoverOptionsDefaults(t *testing.T) {
	o := FailoverOptions{Options: Options{Binary: "/bin/true"}}
	if err := o.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if o.Fault != FaultHALink || o.Name != "lab" || o.Dir != "/run/l3ha-lab/lab" || o.PingInterval != 10*time.Millisecond || o.Dataplane != DataplaneLinux || o.AgentDownTime != DefaultAgentDownTime {
		t.Errorf("defaults = %+v", o)
	}
	bad := FailoverOptions{Options: Options{Binary: "/bin/true"}, Fault: "meteor"}
	if err := bad.setDefaults(); err == nil {
		t.Error("unknown fault accepted")
	}
	bad = FailoverOptions{Options: Options{Binary: "/bin/true", Dataplane: "dpdk"}}
	if err := bad.setDefaults(); err == nil {
		t.Error("unknown data plane accepted")
	}
}

func TestCleanDirRemovesOnlyTheLabsFiles(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{stateFile, "agent-tokens", "agent-token-net1", stateFile + ".123", "mine.txt", "logs/server.log", "nodes/net1/x", "server/l3ha.db"} {
		p := filepath.Join(dir, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := cleanDir(dir, true); err != nil {
		t.Fatal(err)
	}
	var left []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			left = append(left, rel)
		}
		return nil
	})
	if !slices.Equal(left, []string{"logs/server.log", "mine.txt"}) {
		t.Errorf("left after cleanDir(keepLogs) = %v, want the logs and the user's file", left)
	}
	if err := cleanDir(dir, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "mine.txt")); err != nil {
		t.Errorf("the user's file went: %v", err)
	}
	os.Remove(filepath.Join(dir, "mine.txt"))
	if err := cleanDir(dir, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("empty lab directory not removed: %v", err)
	}
}

// A case of the comparison whose system under test does not settle is a
// result; anything else fails the run.
func TestCaseErrorKeepsNotSettledAsAResult(t *testing.T) {
	quiet := func(string, ...any) {}
	for _, tt := range []struct {
		name string
		err  error
		fail bool
	}{
		{"wait timed out", waitFor(t.Context(), 0, "never", func() (bool, error) { return false, nil }), false},
		{"wrapped", fmt.Errorf("failover 500 routers: %w", notSettledf("78 router(s) not mastered")), false},
		{"lab error", errors.New("creating namespaces: permission denied"), true},
		{"cond error", waitFor(t.Context(), time.Second, "x", func() (bool, error) { return false, errors.New("boom") }), true},
	} {
		if got := caseError(quiet, tt.err); (got != nil) != tt.fail {
			t.Errorf("%s: caseError(%v) = %v, want failure %v", tt.name, tt.err, got, tt.fail)
		}
	}
}
