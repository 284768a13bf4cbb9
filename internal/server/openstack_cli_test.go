package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/api"
	"github.com/l3ha/l3ha/internal/servertest"
)

// TestOpenstackClientDrivesHARouters runs the real `openstack` client
// (Debian's python3-openstackclient) against a test server in token mode, the
// way an operator would: --os-token and --os-endpoint, no clouds.yaml, no
// OS_* variables. Every command an HA router's life needs must succeed, and
// its JSON output must say what Neutron's would.
//
// The client is what is under test here, not the store, and each command
// costs a Python start-up, so the scenario runs on one backend: PostgreSQL
// when it is configured (the stricter database), else SQLite.
func TestOpenstackClientDrivesHARouters(t *testing.T) {
	bin, err := exec.LookPath("openstack")
	if err != nil {
		if os.Getenv("L3HA_TEST_REQUIRE_ALL") == "1" {
			t.Fatalf("openstack client not found (apt-get install python3-openstackclient): %v", err)
		}
		t.Skipf("openstack client not found (apt-get install python3-openstackclient): %v", err)
	}
	backends := servertest.Backends(t)
	backend := backends[len(backends)-1]
	t.Run(backend, func(t *testing.T) { oscScenario(t, bin, backend) })
}

func oscScenario(t *testing.T, bin, backend string) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("admintok admin admin,member,reader\ndemotok demo member,reader\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	auth, err := api.LoadTokenFile(tokens)
	if err != nil {
		t.Fatal(err)
	}
	srv := servertest.Start(t, servertest.Options{Backend: backend, Auth: auth})
	srv.StartFakeAgent(t, "net1")
	srv.StartFakeAgent(t, "net2")
	home := filepath.Join(dir, "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	admin := &oscClient{t: t, bin: bin, url: srv.URL, token: "admintok", home: home}
	demo := &oscClient{t: t, bin: bin, url: srv.URL, token: "demotok", home: home}

	// The agents, as the client lists them.
	servertest.Eventually(t, 30*time.Second, func() error {
		var agents []map[string]any
		if err := admin.tryJSON(&agents, "network", "agent", "list", "--agent-type", "l3"); err != nil {
			return err
		}
		if len(agents) != 2 {
			return fmt.Errorf("%d L3 agents listed", len(agents))
		}
		return nil
	})

	// Networks and subnets, created with the client.
	var ext map[string]any
	admin.json(&ext, "network", "create", "--external", "--provider-network-type", "flat", "--provider-physical-network", "public", "public")
	oscWant(t, "public network", ext, map[string]any{"router:external": true, "provider:network_type": "flat", "provider:physical_network": "public", "name": "public"})
	extID := ext["id"].(string)
	var extSub map[string]any
	admin.json(&extSub, "subnet", "create", "--network", "public", "--subnet-range", "172.24.4.0/24", "--gateway", "172.24.4.1",
		"--no-dhcp", "--allocation-pool", "start=172.24.4.10,end=172.24.4.250", "public-subnet")
	oscWant(t, "public subnet", extSub, map[string]any{"cidr": "172.24.4.0/24", "gateway_ip": "172.24.4.1", "enable_dhcp": false, "network_id": extID})
	var net, sub map[string]any
	admin.json(&net, "network", "create", "demo-net")
	admin.json(&sub, "subnet", "create", "--network", "demo-net", "--subnet-range", "10.0.0.0/24", "demo-subnet")
	oscWant(t, "demo subnet", sub, map[string]any{"cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.1", "network_id": net["id"]})
	subID := sub["id"].(string)

	// A tenant may not ask for HA: the client shows Neutron's policy error.
	if out, err := demo.run("router", "create", "--ha", "T"); err == nil || !strings.Contains(out, "disallowed by policy") {
		t.Errorf("tenant router create --ha: err %v, output %s", err, out)
	}

	// router create --ha, list, list --long, show.
	var r map[string]any
	admin.json(&r, "router", "create", "--ha", "R")
	oscWant(t, "router create --ha", r, map[string]any{"name": "R", "ha": true, "admin_state_up": true, "status": "ACTIVE"})
	rID := r["id"].(string)
	var list []map[string]any
	admin.json(&list, "router", "list")
	if len(list) != 1 || list[0]["ID"] != rID || list[0]["HA"] != true || list[0]["Name"] != "R" || list[0]["State"] != true {
		t.Errorf("router list: %v", list)
	}
	admin.json(&list, "router", "list", "--long")
	if len(list) != 1 || list[0]["ID"] != rID || list[0]["HA"] != true || list[0]["Distributed"] != false {
		t.Errorf("router list --long: %v", list)
	}
	admin.json(&r, "router", "show", "R")
	oscWant(t, "router show", r, map[string]any{"id": rID, "ha": true, "distributed": false, "admin_state_up": true})
	oscOneActive(t, admin, "R")

	// add subnet, external gateway, floating IPs.
	admin.run1("router", "add", "subnet", "R", "demo-subnet")
	admin.json(&r, "router", "show", "R")
	if !oscHasInterface(r, subID, "10.0.0.1") {
		t.Errorf("router show after add subnet: interfaces_info %v", r["interfaces_info"])
	}
	admin.run1("router", "set", "--external-gateway", "public", "R")
	admin.json(&r, "router", "show", "R")
	gw, _ := r["external_gateway_info"].(map[string]any)
	if gw == nil || gw["network_id"] != extID || gw["enable_snat"] != true || !oscFixedIPIn(gw["external_fixed_ips"], "172.24.4.0/24") {
		t.Errorf("router show after set --external-gateway: external_gateway_info %v", r["external_gateway_info"])
	}
	var fip map[string]any
	admin.json(&fip, "floating", "ip", "create", "public")
	if a, err := netip.ParseAddr(fmt.Sprint(fip["floating_ip_address"])); err != nil || !netip.MustParsePrefix("172.24.4.0/24").Contains(a) {
		t.Errorf("floating ip create: %v", fip)
	}
	oscWant(t, "floating ip create", fip, map[string]any{"floating_network_id": extID, "port_id": nil, "router_id": nil})
	var port, fip2 map[string]any
	admin.json(&port, "port", "create", "--network", "demo-net", "vm-port")
	admin.json(&fip2, "floating", "ip", "create", "--port", "vm-port", "public")
	oscWant(t, "floating ip create --port", fip2, map[string]any{"port_id": port["id"], "router_id": rID})
	// The gateway is needed by the associated floating IP: Neutron's 409.
	if out, err := admin.run("router", "unset", "--external-gateway", "R"); err == nil || !strings.Contains(out, "required by one or more floating IPs") {
		t.Errorf("router unset --external-gateway with an associated floating IP: err %v, output %s", err, out)
	}
	admin.run1("floating", "ip", "delete", fip2["id"].(string))
	admin.run1("router", "unset", "--external-gateway", "R")
	admin.json(&r, "router", "show", "R")
	if gw, ok := r["external_gateway_info"].(map[string]any); ok && len(gw) > 0 {
		t.Errorf("router show after unset --external-gateway: %v", gw)
	}

	// HA → legacy and back, through the admin_state_up dance.
	if out, err := admin.run("router", "set", "--no-ha", "R"); err == nil || !strings.Contains(out, "admin_state_up to False") {
		t.Errorf("router set --no-ha on an active router: err %v, output %s", err, out)
	}
	admin.run1("router", "set", "--disable", "--no-ha", "R")
	admin.json(&r, "router", "show", "R")
	oscWant(t, "router after --disable --no-ha", r, map[string]any{"ha": false, "admin_state_up": false})
	admin.run1("router", "set", "--ha", "R")
	admin.run1("router", "set", "--enable", "R")
	admin.json(&r, "router", "show", "R")
	oscWant(t, "router after --ha, --enable", r, map[string]any{"ha": true, "admin_state_up": true, "status": "ACTIVE"})
	oscOneActive(t, admin, "R")

	// Clean up with the client: the HA network goes with the last HA router.
	admin.run1("router", "remove", "subnet", "R", "demo-subnet")
	admin.run1("router", "delete", "R")
	admin.json(&list, "router", "list")
	if len(list) != 0 {
		t.Errorf("router list after delete: %v", list)
	}
	var nets []map[string]any
	admin.json(&nets, "network", "list")
	for _, n := range nets {
		if strings.HasPrefix(fmt.Sprint(n["Name"]), "HA network") {
			t.Errorf("HA network left after the last HA router: %v", n)
		}
	}
	admin.run1("floating", "ip", "delete", fip["id"].(string))
	admin.run1("port", "delete", "vm-port")
	admin.run1("subnet", "delete", "demo-subnet")
	admin.run1("network", "delete", "demo-net")
}

// oscOneActive waits until `network agent list --router R --long` shows the
// router on both agents, one active and one standby.
func oscOneActive(t *testing.T, c *oscClient, router string) {
	t.Helper()
	servertest.Eventually(t, 30*time.Second, func() error {
		var agents []map[string]any
		if err := c.tryJSON(&agents, "network", "agent", "list", "--router", router, "--long"); err != nil {
			return err
		}
		states := map[string]int{}
		for _, a := range agents {
			states[fmt.Sprint(a["HA State"])]++
			if a["Alive"] != true || a["State"] != true || a["Agent Type"] != "L3 agent" {
				return fmt.Errorf("agent %v", a)
			}
		}
		if len(agents) != 2 || states["active"] != 1 || states["standby"] != 1 {
			return fmt.Errorf("HA State column: %v", states)
		}
		return nil
	})
}

func oscWant(t *testing.T, what string, got map[string]any, want map[string]any) {
	t.Helper()
	for k, v := range want {
		if g, ok := got[k]; !ok || fmt.Sprint(g) != fmt.Sprint(v) {
			t.Errorf("%s: %s = %v (present %v), want %v", what, k, g, ok, v)
		}
	}
}

func oscHasInterface(r map[string]any, subnetID, ip string) bool {
	infos, _ := r["interfaces_info"].([]any)
	for _, i := range infos {
		m, _ := i.(map[string]any)
		if m["subnet_id"] == subnetID && m["ip_address"] == ip {
			return true
		}
	}
	return false
}

func oscFixedIPIn(v any, cidr string) bool {
	ips, _ := v.([]any)
	for _, i := range ips {
		m, _ := i.(map[string]any)
		if a, err := netip.ParseAddr(fmt.Sprint(m["ip_address"])); err == nil && netip.MustParsePrefix(cidr).Contains(a) {
			return true
		}
	}
	return false
}

// oscClient runs the openstack client against one server with one token.
type oscClient struct {
	t                     *testing.T
	bin, url, token, home string
	// cloud, when set, is a cloud of the clouds.yaml in home/.config/openstack:
	// the client logs in to Keystone with a password and finds the network
	// endpoint in the catalog instead of --os-token/--os-endpoint.
	cloud string
}

// run runs `openstack --debug --os-token T --os-endpoint URL args...` with
// a clean environment (no OS_* variables, HOME without clouds.yaml) and
// stdin closed. It returns stdout, or on failure stdout and stderr (the
// --debug HTTP traffic).
func (c *oscClient) run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	auth := []string{"--os-token", c.token, "--os-endpoint", c.url}
	if c.cloud != "" {
		auth = []string{"--os-cloud", c.cloud}
	}
	full := append(append([]string{"--debug"}, auth...), args...)
	cmd := exec.CommandContext(ctx, c.bin, full...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + c.home, "LANG=C.UTF-8", "LC_ALL=C.UTF-8", "PYTHONDONTWRITEBYTECODE=1"}
	cmd.Dir = c.home
	cmd.Stdin = nil // /dev/null
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		err = errors.Join(err, ctx.Err())
	}
	if err != nil {
		return stdout.String() + oscTraffic(stderr.String()), fmt.Errorf("openstack %s: %w", strings.Join(args, " "), err)
	}
	return stdout.String(), nil
}

// oscTraffic keeps the interesting lines of --debug output: requests,
// responses and errors.
func oscTraffic(stderr string) string {
	var keep []string
	for _, l := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(l, "REQ: ") || strings.HasPrefix(l, "RESP") || strings.Contains(l, "HTTP/1.1\"") ||
			strings.Contains(l, "Error") || strings.Contains(l, "Exception") || strings.Contains(l, "disallowed") ||
			strings.Contains(l, "could not") || strings.Contains(l, "required by") || strings.Contains(l, "admin_state_up") {
			keep = append(keep, l)
		}
	}
	return "\n" + strings.Join(keep, "\n")
}

// run1 runs a command that must succeed.
func (c *oscClient) run1(args ...string) string {
	c.t.Helper()
	out, err := c.run(args...)
	if err != nil {
		c.t.Fatalf("%v\n%s", err, out)
	}
	return out
}

func (c *oscClient) tryJSON(out any, args ...string) error {
	s, err := c.run(append(args, "-f", "json")...)
	if err != nil {
		return fmt.Errorf("%w\n%s", err, s)
	}
	if err := json.Unmarshal([]byte(s), out); err != nil {
		return fmt.Errorf("openstack %s: output is not JSON: %v\n%s", strings.Join(args, " "), err, s)
	}
	return nil
}

// json runs a command with -f json that must succeed and decodes its output.
func (c *oscClient) json(out any, args ...string) {
	c.t.Helper()
	if err := c.tryJSON(out, args...); err != nil {
		c.t.Fatal(err)
	}
}
