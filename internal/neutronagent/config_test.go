package neutronagent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// load writes files (name → content) to a directory and loads them as
// `l3ha neutron-l3-agent --config-file ...` in that order.
func load(t *testing.T, files ...[2]string) (*Config, error) {
	t.Helper()
	dir := t.TempDir()
	var args []string
	for _, f := range files {
		p := filepath.Join(dir, f[0])
		if err := os.WriteFile(p, []byte(f[1]), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--config-file", p)
	}
	fs := pflag.NewFlagSet("neutron-l3-agent", pflag.ContinueOnError)
	set := RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return Load(set, nil)
}

const neutronConf = `[DEFAULT]
core_plugin = ml2
transport_url = rabbit://guest:guest@127.0.0.1:5672/
state_path = /var/lib/neutron
host = net2
[agent]
report_interval = 5
root_helper = sudo neutron-rootwrap /etc/neutron/rootwrap.conf
[database]
connection = mysql+pymysql://neutron:pw@db/neutron
[oslo_concurrency]
lock_path = /var/lock/neutron
`

const l3AgentIni = `[DEFAULT]
interface_driver = linuxbridge
agent_mode = legacy
ha_vrrp_auth_password = s3cret
ha_vrrp_advert_int = 2
enable_metadata_proxy = False
[l3ha]
ha_driver = native
`

// An operator's neutron.conf and l3_agent.ini configure the agent by
// Neutron's names; what l3ha does not read is ignored.
func TestNeutronConfigFilesConfigureTheAgent(t *testing.T) {
	c, err := load(t, [2]string{"neutron.conf", neutronConf}, [2]string{"l3_agent.ini", l3AgentIni})
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		TransportURL: "rabbit://guest:guest@127.0.0.1:5672/", Host: "net2", StatePath: "/var/lib/neutron",
		InterfaceDriver: "linuxbridge", HAConfsPath: "/var/lib/neutron/ha_confs", AuthPassword: "s3cret",
		AdvertInt: 2 * time.Second, L3HAVersion: 2, L3HAAdvertInt: 2 * time.Second, Pace: 200 * time.Millisecond,
		ControlExchange: "neutron", RPCTimeout: 60 * time.Second, HandleInternalOnly: true,
		ReportInterval: 5 * time.Second, AvailabilityZone: "nova", HADriver: "native", HealthCheckFall: 3, ConntrackSync: true,
	}
	if *c != want {
		t.Errorf("config\n%+v\nwant\n%+v", *c, want)
	}
}

// How the node's routers run VRRP: Neutron's VRRPv2 packets paced at
// [l3ha] advert_int by default (native driver), VRRPv3 at advert_int when
// asked for.
func TestL3haVRRPSettings(t *testing.T) {
	for _, tc := range []struct {
		name, l3ha string
		version    int
		interval   time.Duration
		pace       time.Duration
	}{
		{"default: paced at 0.2 s", "", 2, 2 * time.Second, 200 * time.Millisecond},
		{"another pace", "advert_int = 0.5\n", 2, 2 * time.Second, 500 * time.Millisecond},
		{"no pace", "advert_int = 0\n", 2, 2 * time.Second, 0},
		{"VRRPv3", "vrrp_version = 3\nadvert_int = 0.1\n", 3, 100 * time.Millisecond, 0},
		{"VRRPv3 default interval", "vrrp_version = 3\n", 3, 200 * time.Millisecond, 0},
		{"keepalived: Neutron's", "ha_driver = keepalived\n", 2, 2 * time.Second, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ini := strings.Replace(l3AgentIni, "ha_driver = native\n", "", 1) + tc.l3ha
			c, err := load(t, [2]string{"neutron.conf", neutronConf}, [2]string{"l3_agent.ini", ini})
			if err != nil {
				t.Fatal(err)
			}
			if c.L3HAVersion != tc.version || c.L3HAAdvertInt != tc.interval || c.Pace != tc.pace {
				t.Errorf("VRRPv%d at %v, pace %v; want VRRPv%d at %v, pace %v", c.L3HAVersion, c.L3HAAdvertInt, c.Pace, tc.version, tc.interval, tc.pace)
			}
		})
	}
}

func TestBadNeutronConfigIsAClearError(t *testing.T) {
	for _, tc := range []struct{ name, conf, want string }{
		{"no transport_url", "[DEFAULT]\ninterface_driver = linuxbridge\n", "transport_url is required"},
		{"nothing", "[DEFAULT]\n", "transport_url and interface_driver are required"},
		{"dvr mode", "[DEFAULT]\ntransport_url = rabbit://h/\ninterface_driver = linuxbridge\nagent_mode = dvr_snat\n", `agent_mode "dvr_snat"`},
		{"openvswitch", "[DEFAULT]\ntransport_url = rabbit://h/\ninterface_driver = openvswitch\n", "openvswitch: not implemented"},
		{"unknown driver", "[DEFAULT]\ntransport_url = rabbit://h/\ninterface_driver = macvtap\n", `interface_driver "macvtap"`},
		{"AH auth", "[DEFAULT]\ntransport_url = rabbit://h/\ninterface_driver = linuxbridge\nha_vrrp_auth_type = AH\n", "PASS"},
		{"long password", "[DEFAULT]\ntransport_url = rabbit://h/\ninterface_driver = linuxbridge\nha_vrrp_auth_password = 123456789\n", "8 characters"},
		{"pace too long", "[DEFAULT]\ntransport_url = rabbit://h/\ninterface_driver = linuxbridge\n[l3ha]\nadvert_int = 1.5\n", "half of ha_vrrp_advert_int"},
		{"pace too short", "[DEFAULT]\ntransport_url = rabbit://h/\ninterface_driver = linuxbridge\n[l3ha]\nadvert_int = 0.001\n", "0.01 s to half"},
		{"health check with keepalived", "[DEFAULT]\ntransport_url = rabbit://h/\ninterface_driver = linuxbridge\nha_vrrp_health_check_interval = 5\n[l3ha]\nha_driver = keepalived\n", "ha_vrrp_health_check_interval 5s needs [l3ha] ha_driver native"},
		{"negative health check", "[DEFAULT]\ntransport_url = rabbit://h/\ninterface_driver = linuxbridge\nha_vrrp_health_check_interval = -1\n", `ha_vrrp_health_check_interval="-1" (from config file): want an integer ≥ 0`},
		{"health check fall 0", "[DEFAULT]\ntransport_url = rabbit://h/\ninterface_driver = linuxbridge\n[l3ha]\nhealth_check_fall = 0\n", `l3ha.health_check_fall="0" (from config file): want an integer ≥ 1`},
		{"pace with keepalived", "[DEFAULT]\ntransport_url = rabbit://h/\ninterface_driver = linuxbridge\n[l3ha]\nha_driver = keepalived\nadvert_int = 0.2\n", "native driver's pace"},
		{"v3 advert too short", "[DEFAULT]\ntransport_url = rabbit://h/\ninterface_driver = linuxbridge\n[l3ha]\nvrrp_version = 3\nadvert_int = 0.001\n", "0.01 to 40.95"},
		{"v4", "[DEFAULT]\ntransport_url = rabbit://h/\ninterface_driver = linuxbridge\n[l3ha]\nvrrp_version = 4\n", "vrrp_version 4"},
		{"Neutron advert 0", "[DEFAULT]\ntransport_url = rabbit://h/\ninterface_driver = linuxbridge\nha_vrrp_advert_int = 0\n", "ha_vrrp_advert_int"},
		{"advert not a number", "[DEFAULT]\ntransport_url = rabbit://h/\ninterface_driver = linuxbridge\nha_vrrp_advert_int = fast\n", "ha_vrrp_advert_int"},
		{"bad ha_driver", "[DEFAULT]\ntransport_url = rabbit://h/\ninterface_driver = linuxbridge\n[l3ha]\nha_driver = vrrpd\n", `ha_driver "vrrpd"`},
		{"malformed file", "[DEFAULT\ntransport_url = rabbit://h/\n", "reading config file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(t, [2]string{"neutron.conf", tc.conf})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}
