package keepalived

import (
	"bytes"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/l3ha/l3ha/internal/agentapi"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ (never the neutron-transcript-* ones)")

// transcriptRouter is the router of neutron-transcripts/10-l3-ha-agents.txt
// as the server would send it to the agent on host l3-a (HA port a67354cf…)
// or l3-b (c309a94a…).
func transcriptRouter(haPortID string) agentapi.RouterSpec {
	return agentapi.RouterSpec{
		ID:           "e2067cba-2c85-42f9-af45-b887730d95c4",
		Name:         "ha-router",
		ProjectID:    "demo-project",
		AdminStateUp: true,
		HA:           true,
		VRID:         41,
		BindingIndex: 1,
		HAPort: &agentapi.PortSpec{
			ID:          haPortID,
			DeviceOwner: "network:router_ha_interface",
			FixedIPs:    []agentapi.FixedIPSpec{{IPAddress: "169.254.193.159", CIDR: "169.254.192.0/18"}},
		},
		Interfaces: []agentapi.PortSpec{{
			ID:          "18e3094c-8999-4879-a986-65de2fcc2792",
			MACAddress:  "fa:16:3e:57:3b:1f",
			DeviceOwner: "network:ha_router_replicated_interface",
			FixedIPs:    []agentapi.FixedIPSpec{{SubnetID: "ae297d3c-3aa0-4d4f-b92a-122f93cf5480", IPAddress: "10.0.0.1", CIDR: "10.0.0.0/24", GatewayIP: "10.0.0.1"}},
		}},
		Gateway: &agentapi.PortSpec{
			ID:          "f4648b3b-b2af-40fc-b80b-17cb839670c1",
			MACAddress:  "fa:16:3e:c8:7f:be",
			DeviceOwner: "network:router_gateway",
			FixedIPs:    []agentapi.FixedIPSpec{{SubnetID: "a2c6aa56-7115-47fb-8c83-45c17ffe8790", IPAddress: "172.24.4.88", CIDR: "172.24.4.0/24", GatewayIP: "172.24.4.1"}},
		},
		EnableSNAT: true,
	}
}

// TestRenderNeutronTranscript reproduces, byte for byte, the keepalived.conf
// files that two real Neutron (Zed) L3 agents wrote for one HA router, from
// the router as the API showed it (no ha_vrrp_auth_password, default advert).
func TestRenderNeutronTranscript(t *testing.T) {
	for _, tc := range []struct{ file, haPort string }{
		{"neutron-transcript-l3-a.conf", "a67354cf-0b4f-49e3-baf0-12316336996f"},
		{"neutron-transcript-l3-b.conf", "c309a94a-ec6e-4d8a-8d21-c7e22c467545"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			want, err := os.ReadFile(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := FromRouter(transcriptRouter(tc.haPort), Settings{})
			if err != nil {
				t.Fatal(err)
			}
			got, err := Render(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("rendered config differs from Neutron's:\n--- got\n%s\n--- want\n%s", got, want)
			}
		})
	}
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func mustAddr(s string) netip.Addr     { return netip.MustParseAddr(s) }

// goldenConfigs are rendered into testdata/<name>.conf (go test -update).
func goldenConfigs(t *testing.T) map[string]Config {
	full := transcriptRouter("a67354cf-0b4f-49e3-baf0-12316336996f")
	full.Interfaces = append(full.Interfaces, agentapi.PortSpec{
		ID:         "5d1f3a3e-1111-4222-8333-944455556666",
		MACAddress: "fa:16:3e:00:11:22",
		FixedIPs: []agentapi.FixedIPSpec{
			{IPAddress: "192.168.7.1", CIDR: "192.168.7.0/24"},
			{IPAddress: "2001:db8:7::1", CIDR: "2001:db8:7::/64"},
		},
	})
	full.Gateway.FixedIPs = append(full.Gateway.FixedIPs, agentapi.FixedIPSpec{IPAddress: "2001:db8::88", CIDR: "2001:db8::/64", GatewayIP: "2001:db8::1"})
	full.FloatingIPs = []agentapi.FloatingIPSpec{
		{ID: "f1", FloatingIPAddress: "172.24.4.200", FixedIPAddress: "10.0.0.5"},
		{ID: "f2", FloatingIPAddress: "172.24.4.101", FixedIPAddress: "10.0.0.6"},
		{ID: "f3", FloatingIPAddress: "172.24.4.200", FixedIPAddress: "10.0.0.5"}, // repeated: written once
	}
	full.Routes = []agentapi.Route{{Destination: "10.9.0.0/16", NextHop: "10.0.0.254"}}
	fullCfg, err := FromRouter(full, Settings{AuthPassword: "s3cret", AdvertInt: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	staticCfg, err := FromRouter(full, Settings{RouteProtocol: "static"})
	if err != nil {
		t.Fatal(err)
	}
	internalOnly := transcriptRouter("a67354cf-0b4f-49e3-baf0-12316336996f")
	internalOnly.Gateway = nil
	internalCfg, err := FromRouter(internalOnly, Settings{AdvertInt: time.Second, AuthType: AuthTypePASS, AuthPassword: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	return map[string]Config{
		// Everything FromRouter writes: auth, floating IPs, IPv6, extra route.
		"full":                 fullCfg,
		"full-protocol-static": staticCfg,
		"internal-only":        internalCfg,
		// A router with no ports yet: only the VIP.
		"bare": {VRID: 1, HAInterface: "ha-00000000-00"},
		// VRRPv3 with 100ms adverts (l3ha's sub-second failover).
		"vrrpv3-100ms": {
			VRID: 254, HAInterface: "ha-12345678-9a", Version: 3, AdvertInt: 100 * time.Millisecond,
			Excluded: []Address{{Prefix: mustPrefix("10.1.0.1/24"), Dev: "qr-12345678-9a"}},
			Routes:   []Route{{Destination: mustPrefix("0.0.0.0/0"), Via: mustAddr("10.1.0.254"), Dev: "qr-12345678-9a", Protocol: "static"}},
		},
		"vrrpv3-1500ms": {VRID: 3, HAInterface: "ha-12345678-9b", Version: 3, AdvertInt: 1500 * time.Millisecond},
		// Every knob away from Neutron's defaults.
		"custom": {
			VRID: 77, HAInterface: "ha-abcdef01-23", Priority: 100, GARPMasterDelay: 5, Preempt: true,
			AuthType: AuthTypeAH, AuthPassword: "ahpass", TrackInterfaces: []string{"ha-abcdef01-23", "qg-abcdef01-23"},
			Excluded: []Address{
				{Prefix: mustPrefix("203.0.113.9/32"), Dev: "qg-abcdef01-23", Track: true},
				{Prefix: mustPrefix("198.51.100.0/24"), Dev: "qg-abcdef01-23", Scope: "global"},
			},
			Routes: []Route{
				{Destination: mustPrefix("198.51.100.0/24"), Dev: "qg-abcdef01-23", Scope: "link"},
				{Destination: mustPrefix("0.0.0.0/0"), Via: mustAddr("198.51.100.1"), Dev: "qg-abcdef01-23", Track: true},
			},
		},
	}
}

func TestRenderGolden(t *testing.T) {
	for name, cfg := range goldenConfigs(t) {
		t.Run(name, func(t *testing.T) {
			got, err := Render(cfg)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", name+".conf")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs:\n--- got\n%s\n--- want\n%s", path, got, want)
			}
		})
	}
}

// TestRenderShape checks the properties the golden files rely on, so that an
// -update cannot silently bless a broken shape.
func TestRenderShape(t *testing.T) {
	for name, cfg := range goldenConfigs(t) {
		b, err := Render(cfg)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		if strings.HasSuffix(s, "\n") || !strings.HasSuffix(s, "\n}") {
			t.Errorf("%s: must end with a brace and no newline, as Neutron writes it", name)
		}
		if !strings.HasPrefix(s, "global_defs {\n    notification_email_from neutron@openstack.local\n    router_id neutron\n}\nvrrp_instance VR_") {
			t.Errorf("%s: global_defs/vrrp_instance preamble differs:\n%s", name, s)
		}
		depth := 0
		for i, l := range strings.Split(s, "\n") {
			trimmed := strings.TrimLeft(l, " ")
			if strings.HasPrefix(trimmed, "}") {
				depth--
			}
			if ind := len(l) - len(trimmed); ind != 4*depth || strings.ContainsAny(l, "\t\r") {
				t.Errorf("%s line %d: indent %d, want %d: %q", name, i+1, ind, 4*depth, l)
			}
			if strings.HasSuffix(trimmed, "{") {
				depth++
			}
		}
		if depth != 0 {
			t.Errorf("%s: unbalanced braces", name)
		}
		vip := "        " + cfg.VIP().String() + " dev " + cfg.HAInterface + "\n"
		if !strings.Contains(s, "    virtual_ipaddress {\n"+vip+"    }") {
			t.Errorf("%s: virtual_ipaddress must hold exactly the VIP", name)
		}
		if cfg.Version == 3 && !strings.Contains(s, "\n    version 3\n") {
			t.Errorf("%s: no version line", name)
		}
		if (cfg.AuthPassword != "") != strings.Contains(s, "authentication {") {
			t.Errorf("%s: authentication block present iff a password is set", name)
		}
	}
}

func TestRenderExcludedSortedAndDeduplicated(t *testing.T) {
	cfg := Config{VRID: 5, HAInterface: "ha-x", Excluded: []Address{
		{Prefix: mustPrefix("fe80::1/64"), Dev: "qr-a", Scope: "link"},
		{Prefix: mustPrefix("172.24.4.9/32"), Dev: "qg-a"},
		{Prefix: mustPrefix("10.0.0.1/24"), Dev: "qr-a"},
		{Prefix: mustPrefix("172.24.4.9/32"), Dev: "qg-b"},
		{Prefix: mustPrefix("100.64.0.1/24"), Dev: "qr-b"},
	}}
	b, err := Render(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := `    virtual_ipaddress_excluded {
        10.0.0.1/24 dev qr-a no_track
        100.64.0.1/24 dev qr-b no_track
        172.24.4.9/32 dev qg-a no_track
        fe80::1/64 dev qr-a scope link no_track
    }`
	if !strings.Contains(string(b), want) {
		t.Errorf("got\n%s\nwant it to contain\n%s", b, want)
	}
	if strings.Contains(string(b), "virtual_routes") {
		t.Error("virtual_routes written without routes")
	}
}

func TestRenderAdvertFormat(t *testing.T) {
	for _, tc := range []struct {
		ver  int
		d    time.Duration
		want string
	}{
		{0, 0, "advert_int 2"},
		{2, time.Second, "advert_int 1"},
		{2, 255 * time.Second, "advert_int 255"},
		{3, 10 * time.Millisecond, "advert_int 0.01"},
		{3, 100 * time.Millisecond, "advert_int 0.1"},
		{3, 1250 * time.Millisecond, "advert_int 1.25"},
		{3, 3 * time.Second, "advert_int 3"},
		{3, 40950 * time.Millisecond, "advert_int 40.95"},
	} {
		b, err := Render(Config{VRID: 1, HAInterface: "ha-x", Version: tc.ver, AdvertInt: tc.d})
		if err != nil {
			t.Errorf("v%d %v: %v", tc.ver, tc.d, err)
			continue
		}
		if !strings.Contains(string(b), "\n    "+tc.want+"\n") {
			t.Errorf("v%d %v: no %q in\n%s", tc.ver, tc.d, tc.want, b)
		}
	}
}

func TestValidateRejects(t *testing.T) {
	ok := Config{VRID: 1, HAInterface: "ha-00000000-00"}
	for name, mut := range map[string]func(*Config){
		"vrid 0":               func(c *Config) { c.VRID = 0 },
		"vrid 256":             func(c *Config) { c.VRID = 256 },
		"no ha interface":      func(c *Config) { c.HAInterface = "" },
		"long ha interface":    func(c *Config) { c.HAInterface = "ha-0123456789abc" },
		"space in interface":   func(c *Config) { c.HAInterface = "ha 1" },
		"priority 255":         func(c *Config) { c.Priority = 255 },
		"v2 fractional advert": func(c *Config) { c.AdvertInt = 1500 * time.Millisecond },
		"v2 sub-second advert": func(c *Config) { c.AdvertInt = 100 * time.Millisecond },
		"v2 advert 256s":       func(c *Config) { c.AdvertInt = 256 * time.Second },
		"v3 advert 5ms":        func(c *Config) { c.Version, c.AdvertInt = 3, 5*time.Millisecond },
		"v3 advert 15ms":       func(c *Config) { c.Version, c.AdvertInt = 3, 15*time.Millisecond },
		"v3 advert 41s":        func(c *Config) { c.Version, c.AdvertInt = 3, 41*time.Second },
		"v3 with password":     func(c *Config) { c.Version, c.AuthPassword = 3, "x" },
		"version 4":            func(c *Config) { c.Version = 4 },
		"auth type":            func(c *Config) { c.AuthType, c.AuthPassword = "MD5", "x" },
		"password newline":     func(c *Config) { c.AuthPassword = "a\n}" },
		"password brace":       func(c *Config) { c.AuthPassword = "a}" },
		"password comment":     func(c *Config) { c.AuthPassword = "a#b" },
		"excluded no prefix":   func(c *Config) { c.Excluded = []Address{{Dev: "qr-a"}} },
		"excluded no dev":      func(c *Config) { c.Excluded = []Address{{Prefix: mustPrefix("10.0.0.1/24")}} },
		"excluded bad scope": func(c *Config) {
			c.Excluded = []Address{{Prefix: mustPrefix("10.0.0.1/24"), Dev: "qr-a", Scope: "link }"}}
		},
		"route no target": func(c *Config) { c.Routes = []Route{{Destination: mustPrefix("0.0.0.0/0")}} },
		"route family": func(c *Config) {
			c.Routes = []Route{{Destination: mustPrefix("0.0.0.0/0"), Via: mustAddr("2001:db8::1")}}
		},
		"route bad protocol": func(c *Config) {
			c.Routes = []Route{{Destination: mustPrefix("0.0.0.0/0"), Dev: "qg-a", Protocol: "a b"}}
		},
		"track bad": func(c *Config) { c.TrackInterfaces = []string{""} },
	} {
		c := ok
		mut(&c)
		if _, err := Render(c); err == nil {
			t.Errorf("%s: rendered without error", name)
		}
	}
	if _, err := Render(ok); err != nil {
		t.Errorf("minimal config: %v", err)
	}
}

func TestFromRouterErrors(t *testing.T) {
	for name, mut := range map[string]func(*agentapi.RouterSpec){
		"legacy":         func(r *agentapi.RouterSpec) { r.HA = false },
		"no HA port":     func(r *agentapi.RouterSpec) { r.HAPort = nil },
		"no VRID":        func(r *agentapi.RouterSpec) { r.VRID = 0 },
		"bad MAC":        func(r *agentapi.RouterSpec) { r.Interfaces[0].MACAddress = "zz" },
		"no CIDR":        func(r *agentapi.RouterSpec) { r.Interfaces[0].FixedIPs[0].CIDR = "" },
		"family":         func(r *agentapi.RouterSpec) { r.Interfaces[0].FixedIPs[0].CIDR = "2001:db8::/64" },
		"bad gateway":    func(r *agentapi.RouterSpec) { r.Gateway.FixedIPs[0].GatewayIP = "x" },
		"bad fip":        func(r *agentapi.RouterSpec) { r.FloatingIPs = []agentapi.FloatingIPSpec{{FloatingIPAddress: "x"}} },
		"bad route":      func(r *agentapi.RouterSpec) { r.Routes = []agentapi.Route{{Destination: "x", NextHop: "10.0.0.2"}} },
		"bad next hop":   func(r *agentapi.RouterSpec) { r.Routes = []agentapi.Route{{Destination: "10.5.0.0/16", NextHop: ""}} },
		"bad HA port id": func(r *agentapi.RouterSpec) { r.HAPort.ID = "a b c d e f g h i j k" },
	} {
		r := transcriptRouter("a67354cf-0b4f-49e3-baf0-12316336996f")
		mut(&r)
		if _, err := FromRouter(r, Settings{}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestDeviceNameAndLinkLocal(t *testing.T) {
	if got := DeviceName(PrefixHA, "a67354cf-0b4f-49e3-baf0-12316336996f"); got != "ha-a67354cf-0b" {
		t.Errorf("DeviceName = %q", got)
	}
	if got := DeviceName(PrefixInternal, "abc"); got != "qr-abc" {
		t.Errorf("DeviceName short = %q", got)
	}
	for mac, want := range map[string]string{
		"fa:16:3e:57:3b:1f": "fe80::f816:3eff:fe57:3b1f/64",
		"fa:16:3e:c8:7f:be": "fe80::f816:3eff:fec8:7fbe/64",
		"00:00:5e:00:01:01": "fe80::200:5eff:fe00:101/64",
	} {
		got, err := LinkLocal(mac)
		if err != nil || got.String() != want {
			t.Errorf("LinkLocal(%s) = %v, %v; want %s", mac, got, err, want)
		}
	}
	if _, err := LinkLocal("00:00:00:00:00:00:00:01"); err == nil {
		t.Error("EUI-64 MAC accepted")
	}
}

func TestVIP(t *testing.T) {
	if got := VIP(41).String(); got != "169.254.0.41/24" {
		t.Errorf("VIP(41) = %s", got)
	}
	if got := (Config{VRID: 254}).VIP().String(); got != "169.254.0.254/24" {
		t.Errorf("VIP(254) = %s", got)
	}
}

// A router's later bindings get vrrp_startup_delay in global_defs (so the
// scheduler's first binding wins the first election); binding 1 gets
// Neutron's file unchanged.
func TestStartupDelayIsWrittenOnlyWhenSet(t *testing.T) {
	c := Config{VRID: 3, HAInterface: "ha-12345678-9a"}
	plain, err := Render(c)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(plain), "vrrp_startup_delay") {
		t.Fatalf("delay written without being set:\n%s", plain)
	}
	c.StartupDelay = 9500 * time.Millisecond
	out, err := Render(c)
	if err != nil {
		t.Fatal(err)
	}
	want := "global_defs {\n    notification_email_from neutron@openstack.local\n    router_id neutron\n    vrrp_startup_delay 9.5\n}"
	if !strings.HasPrefix(string(out), want) {
		t.Fatalf("global_defs:\n%s\nwant prefix:\n%s", out, want)
	}
	c.StartupDelay = -time.Second
	if _, err := Render(c); err == nil {
		t.Fatal("negative delay accepted")
	}
}
