package neutronlocal

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"text/template"
)

// paths are the files of one Neutron under its scratch directory.
type paths struct {
	dir     string
	etc     string // configuration
	confDir string // an empty directory passed as --config-dir
	log     string
	run     string // sockets and pid files
	state   string // the server's state_path
	lock    string
	datadir string // MariaDB
	socket  string // MariaDB's socket

	neutronConf, ml2Conf, extraConf, pasteConf, policyFile, policyDir string
}

func newPaths(dir string) paths {
	etc := filepath.Join(dir, "etc")
	p := paths{
		dir:     dir,
		etc:     etc,
		confDir: filepath.Join(etc, "conf.d"),
		log:     filepath.Join(dir, "log"),
		run:     filepath.Join(dir, "run"),
		state:   filepath.Join(dir, "state"),
		lock:    filepath.Join(dir, "lock"),
		datadir: filepath.Join(dir, "mysql"),
	}
	p.socket = filepath.Join(p.run, "mysqld.sock")
	p.neutronConf = filepath.Join(etc, "neutron.conf")
	p.ml2Conf = filepath.Join(etc, "ml2_conf.ini")
	p.extraConf = filepath.Join(etc, "server-extra.conf")
	p.pasteConf = filepath.Join(etc, "api-paste.ini")
	p.policyFile = filepath.Join(etc, "policy.yaml")
	p.policyDir = filepath.Join(etc, "policy.d")
	return p
}

func (p paths) logFile(name string) string { return filepath.Join(p.log, name) }

func (p paths) mkdirs() error {
	for _, d := range []string{p.dir, p.etc, p.confDir, p.log, p.run, p.state, p.lock, p.policyDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	return nil
}

// maxSocketPath is the longest unix socket path the kernel takes
// (sizeof(sun_path) less the terminating NUL).
const maxSocketPath = 107

// checkPath rejects directory names that cannot be written into an oslo.config
// file ($ is substituted, a leading or trailing space is lost), an SQLAlchemy
// URL (? # % &) or a shell command line of this package.
func checkPath(p string) error {
	if i := strings.IndexAny(p, " \t\r\n;?#%$&'\"\\"); i >= 0 {
		return fmt.Errorf("%q: unsupported character %q", p, p[i])
	}
	return nil
}

// serverConfig is the data of neutron.conf and ml2_conf.ini.
type serverConfig struct {
	Port          int
	TransportURL  string
	AuthStrategy  string
	Debug         bool
	AgentDownTime int
	// Paths, from paths.
	State, PasteConf, Log, Socket, Lock, PolicyFile, PolicyDir string
}

var serverTemplate = template.Must(template.New("neutron.conf").Parse(`# Written by l3ha (internal/neutronlocal): a private neutron-server for tests.
# Only files of this directory are read: neutron-server runs with
# --config-file for this file and ml2_conf.ini and --config-dir for an empty
# directory, so nothing under /etc/neutron applies.
[DEFAULT]
auth_strategy = {{.AuthStrategy}}
core_plugin = ml2
service_plugins = router
bind_host = 127.0.0.1
bind_port = {{.Port}}
# One API worker and one of each RPC worker (0 is raised to 1 anyway).
api_workers = 1
rpc_workers = 1
rpc_state_report_workers = 1
# L3 HA: every router created without "ha" is HA, on two agents; the HA
# network is flat on physnet hanet (this kernel may have no 802.1q).
l3_ha = True
max_l3_agents_per_router = 2
l3_ha_network_type = flat
l3_ha_network_physical_name = hanet
# Agents report every 5 s; one silent for this long is dead.
agent_down_time = {{.AgentDownTime}}
allow_overlapping_ips = True
# oslo.service: children that take longer to stop gracefully are killed
# (the RPC servers' consumers stop one by one, seconds each).
graceful_shutdown_timeout = 5
state_path = {{.State}}
api_paste_config = {{.PasteConf}}
transport_url = {{.TransportURL}}
notify_nova_on_port_status_changes = False
notify_nova_on_port_data_changes = False
debug = {{.Debug}}
use_stderr = False
use_syslog = False
log_file = {{.Log}}/neutron-server.log

[database]
connection = mysql+pymysql://root@localhost/neutron?unix_socket={{.Socket}}&charset=utf8
max_pool_size = 10
max_overflow = 20

[experimental]
# Zed marks the linuxbridge mechanism driver and agent experimental.
linuxbridge = true

[oslo_concurrency]
lock_path = {{.Lock}}

[oslo_policy]
# Neutron's built-in defaults; nothing from /etc/neutron/policy.d.
policy_file = {{.PolicyFile}}
policy_dirs = {{.PolicyDir}}

[oslo_messaging_notifications]
driver = noop
`))

var ml2Template = template.Must(template.New("ml2_conf.ini").Parse(`# Written by l3ha (internal/neutronlocal).
[ml2]
type_drivers = flat,vxlan
tenant_network_types = vxlan
mechanism_drivers = linuxbridge
extension_drivers = port_security

[ml2_type_flat]
# hanet: HA networks; public: external networks; tenant: one flat tenant
# network (admin-made, provider:physical_network tenant).
flat_networks = {{.}}

[ml2_type_vxlan]
vni_ranges = 1:1000

[securitygroup]
enable_security_group = True
firewall_driver = noop
`))

// pasteConfig is Debian's api-paste.ini (Zed) without osprofiler, healthcheck
// and cors (whose "oslo_config_project = neutron" makes oslo.middleware parse
// a ConfigOpts of its own from the default files, /etc/neutron/neutron.conf;
// without it cors refuses to load), plus a "headers" pipeline: keystonecontext without
// authtoken, so that X-User-Id, X-Project-Id and X-Roles make the request
// context as if a token had been validated.
const pasteConfig = `# Written by l3ha (internal/neutronlocal).
[composite:neutron]
use = egg:Paste#urlmap
/: neutronversions_composite
/v2.0: neutronapi_v2_0

[composite:neutronapi_v2_0]
use = call:neutron.auth:pipeline_factory
noauth = http_proxy_to_wsgi request_id fake_project_id catch_errors extensions neutronapiapp_v2_0
headers = http_proxy_to_wsgi request_id catch_errors keystonecontext extensions neutronapiapp_v2_0

[composite:neutronversions_composite]
use = call:neutron.auth:pipeline_factory
noauth = http_proxy_to_wsgi neutronversions
headers = http_proxy_to_wsgi neutronversions

[filter:request_id]
paste.filter_factory = oslo_middleware:RequestId.factory

[filter:catch_errors]
paste.filter_factory = oslo_middleware:CatchErrors.factory

[filter:fake_project_id]
paste.filter_factory = neutron.auth:NoauthFakeProjectId.factory

[filter:http_proxy_to_wsgi]
paste.filter_factory = oslo_middleware.http_proxy_to_wsgi:HTTPProxyToWSGI.factory

[filter:keystonecontext]
paste.filter_factory = neutron.auth:NeutronKeystoneContext.factory

[filter:extensions]
paste.filter_factory = neutron.api.extensions:plugin_aware_extension_middleware_factory

[app:neutronversions]
paste.app_factory = neutron.pecan_wsgi.app:versions_factory

[app:neutronapiapp_v2_0]
paste.app_factory = neutron.api.v2.router:APIRouter.factory
`

// writeServerFiles writes neutron.conf, ml2_conf.ini, api-paste.ini, an
// empty policy and server-extra.conf (extra, possibly empty).
func (n *Neutron) writeServerFiles(extra string) error {
	var conf, ml2 bytes.Buffer
	if err := serverTemplate.Execute(&conf, n.conf); err != nil {
		return err
	}
	if err := ml2Template.Execute(&ml2, strings.Join(Physnets, ",")); err != nil {
		return err
	}
	for _, f := range []struct {
		path string
		data []byte
	}{
		{n.paths.neutronConf, conf.Bytes()},
		{n.paths.ml2Conf, ml2.Bytes()},
		{n.paths.pasteConf, []byte(pasteConfig)},
		{n.paths.policyFile, []byte("# Neutron's default policy, unchanged.\n{}\n")},
		{n.paths.extraConf, []byte("# Options.ServerConfig\n" + extra + "\n")},
	} {
		if err := writeFileAtomic(f.path, f.data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// serverArgs are the configuration arguments of neutron-server and
// neutron-db-manage.
func (n *Neutron) serverArgs() []string {
	return []string{
		"--config-file", n.paths.neutronConf,
		"--config-file", n.paths.ml2Conf,
		"--config-file", n.paths.extraConf,
		"--config-dir", n.paths.confDir,
	}
}

// nodeConfig is the data of one network node's agent configuration.
type nodeConfig struct {
	Host         string
	Dir          string // state_path
	TransportURL string
	Debug        bool
	LocalIP      netip.Addr
	Mappings     string
	L3Extra      string
	LBExtra      string
}

var agentTemplate = template.Must(template.New("neutron.conf").Parse(`# Written by l3ha (internal/neutronlocal): the neutron.conf of the agents of
# network node {{.Host}} (network namespace l3ha-nn-{{.Host}}).
[DEFAULT]
host = {{.Host}}
# 127.0.0.1 of the node's namespace: a relay to the RabbitMQ of the root
# namespace.
transport_url = {{.TransportURL}}
state_path = {{.Dir}}
debug = {{.Debug}}
use_stderr = False
use_syslog = False
graceful_shutdown_timeout = 5

[agent]
# The agents run as root: no rootwrap or sudo; privsep-helper runs directly.
root_helper =
report_interval = 5

[experimental]
linuxbridge = true

[oslo_concurrency]
lock_path = {{.Dir}}/lock
`))

var l3Template = template.Must(template.New("l3_agent.ini").Parse(`# Written by l3ha (internal/neutronlocal): the L3 agent of network node {{.Host}}.
[DEFAULT]
interface_driver = linuxbridge
agent_mode = legacy
ha_confs_path = {{.Dir}}/ha_confs
ha_vrrp_advert_int = 2
ha_vrrp_health_check_interval = 0
# No metadata service (and no haproxy) here.
enable_metadata_proxy = False

[agent]
extensions =
{{if .L3Extra}}
# NodeOptions.L3AgentConfig
{{.L3Extra}}
{{end}}`))

var lbTemplate = template.Must(template.New("linuxbridge_agent.ini").Parse(`# Written by l3ha (internal/neutronlocal): the Linux bridge agent of network node {{.Host}}.
[linux_bridge]
# veths to the bridges of namespace l3ha-nn-switch, one per physnet.
physical_interface_mappings = {{.Mappings}}

[vxlan]
# Multicast VXLAN over the underlay veth (bridge br-underlay of
# l3ha-nn-switch); no l2population.
enable_vxlan = true
local_ip = {{.LocalIP}}
udp_dstport = 4789
vxlan_group = 224.0.0.1
l2_population = false

[securitygroup]
enable_security_group = False
firewall_driver = noop

[agent]
polling_interval = 2
{{if .LBExtra}}
# NodeOptions.LinuxBridgeAgentConfig
{{.LBExtra}}
{{end}}`))

// writeNodeFiles writes the node's neutron.conf, l3_agent.ini and
// linuxbridge_agent.ini.
func writeNodeFiles(c nodeConfig, neutronConf, l3Conf, lbConf string) error {
	for _, f := range []struct {
		t    *template.Template
		path string
	}{{agentTemplate, neutronConf}, {l3Template, l3Conf}, {lbTemplate, lbConf}} {
		var b bytes.Buffer
		if err := f.t.Execute(&b, c); err != nil {
			return err
		}
		if err := writeFileAtomic(f.path, b.Bytes(), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// physnetMappings is physical_interface_mappings: each physnet on the
// node's device of the same name.
func physnetMappings() string {
	var m []string
	for _, p := range Physnets {
		m = append(m, p+":"+p)
	}
	return strings.Join(m, ",")
}

// writeFileAtomic writes data to path through a temporary file and a rename.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
