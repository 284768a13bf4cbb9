// Package neutronagent is `l3ha neutron-l3-agent`: l3ha's agent serving a
// real neutron-server as its L3 agent. It reads neutron-l3-agent's own
// config files, speaks Neutron's L3 agent RPC API over oslo.messaging
// (internal/oslo), turns the router dicts neutron-server sends into the
// agent's desired state, and runs them on l3ha's data plane, with Neutron's
// HA ports and VRIDs so that one HA router can have a neutron-l3-agent +
// keepalived on one node and l3ha on another.
package neutronagent

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/l3ha/l3ha/internal/config"
)

// Options are neutron-l3-agent's options l3ha reads, by Neutron's names and
// sections, and l3ha's own in [l3ha].
var Options = []config.Option{
	{Section: "default", Name: "transport_url", Flag: "transport-url", Usage: "oslo.messaging transport URL of neutron-server's RabbitMQ, rabbit://user:pass@host:5672/ (required)"},
	{Section: "default", Name: "host", Flag: "host", Usage: "host name the agent reports (default: the machine's host name)"},
	{Section: "default", Name: "state_path", Flag: "state-path", Default: "/var/lib/neutron", Usage: "where Neutron's state files live"},
	{Section: "default", Name: "interface_driver", Flag: "interface-driver", Usage: "linuxbridge (tap veths the neutron-linuxbridge-agent plugs into its brq bridges) (required)"},
	{Section: "default", Name: "agent_mode", Flag: "agent-mode", Default: "legacy", Usage: "legacy (dvr modes are not supported)"},
	{Section: "default", Name: "ha_confs_path", Flag: "ha-confs-path", Default: "$state_path/ha_confs", Usage: "where ha_confs/<router_id>/state is written"},
	{Section: "default", Name: "ha_vrrp_auth_type", Flag: "ha-vrrp-auth-type", Default: "PASS", Usage: "VRRP authentication type: PASS"},
	{Section: "default", Name: "ha_vrrp_auth_password", Flag: "ha-vrrp-auth-password", Usage: "VRRP (v2) PASS password; empty: no authentication"},
	{Section: "default", Name: "ha_vrrp_advert_int", Flag: "ha-vrrp-advert-int", Default: "2", Usage: "VRRP advertisement interval in whole seconds (Neutron's, used while a router shares nodes with keepalived)"},
	{Section: "default", Name: "ha_vrrp_health_check_interval", Flag: "ha-vrrp-health-check-interval", Default: "0", Usage: "seconds between two checks of each HA router's gateway (l3ha: ARP from the qg- device; the master hands over to a backup whose gateway answers); 0: off; needs [l3ha] ha_driver native"},
	{Section: "default", Name: "control_exchange", Flag: "control-exchange", Default: "neutron", Usage: "oslo.messaging exchange of neutron-server's topics"},
	{Section: "default", Name: "rpc_response_timeout", Flag: "rpc-response-timeout", Default: "60", Usage: "seconds an RPC call to neutron-server may take"},
	{Section: "default", Name: "handle_internal_only_routers", Flag: "handle-internal-only-routers", Default: "true", Usage: "serve routers without an external gateway"},
	{Section: "agent", Name: "report_interval", Flag: "report-interval", Default: "30", Usage: "seconds between state reports to neutron-server"},
	{Section: "agent", Name: "availability_zone", Flag: "availability-zone", Default: "nova", Usage: "availability zone the agent reports"},
	{Section: "l3ha", Name: "ha_driver", Flag: "ha-driver", Default: "native", Usage: "native (l3ha's VRRP engine) or keepalived (one keepalived per router)"},
	{Section: "l3ha", Name: "vrrp_version", Flag: "vrrp-version", Default: "2", Usage: "2: Neutron's VRRPv2 at ha_vrrp_advert_int, paced at advert_int between l3ha nodes (works beside keepalived); 3: VRRPv3 at advert_int for every router of the node (only once no node of these routers runs neutron-l3-agent)"},
	{Section: "l3ha", Name: "advert_int", Flag: "advert-int", Default: "", Usage: "l3ha's own advert interval in seconds: with vrrp_version 2 and the native driver the pace between l3ha nodes (default 0.2; 0: none), with 3 the VRRPv3 interval (default 0.2)"},
	{Section: "l3ha", Name: "health_check_fall", Flag: "health-check-fall", Default: "3", Usage: "failed gateway checks in a row (ha_vrrp_health_check_interval) that make a router unhealthy; 2 good ones make it healthy again"},
	{Section: "l3ha", Name: "conntrack_sync", Flag: "conntrack-sync", Default: "true", Usage: "replicate each HA router's connection tracking (NAT included) from its master to its backups over the HA network (UDP 3781, multicast 239.255.76.<vrid>), so connections survive a failover"},
	{Section: "l3ha", Name: "metrics_bind", Flag: "metrics-bind", Usage: "address to serve Prometheus metrics on, e.g. 127.0.0.1:9697; empty: off"},
}

// Config is the resolved configuration of `l3ha neutron-l3-agent`.
type Config struct {
	TransportURL    string
	Host            string
	StatePath       string
	InterfaceDriver string // "linuxbridge"
	HAConfsPath     string
	// VRRP as Neutron's keepalived runs it.
	AuthPassword string
	AdvertInt    time.Duration
	// HealthCheckInterval is ha_vrrp_health_check_interval (0: off), and
	// HealthCheckFall [l3ha] health_check_fall.
	HealthCheckInterval time.Duration
	HealthCheckFall     int
	// VRRP as every router of the node runs it: Neutron's VRRPv2 at
	// AdvertInt, with Pace (native driver) the interval between l3ha nodes
	// (vrrp.Config.Pace); or with [l3ha] vrrp_version = 3, VRRPv3 at
	// [l3ha] advert_int.
	L3HAVersion   int
	L3HAAdvertInt time.Duration
	Pace          time.Duration

	ControlExchange    string
	RPCTimeout         time.Duration
	HandleInternalOnly bool
	ReportInterval     time.Duration
	AvailabilityZone   string
	HADriver           string
	MetricsBind        string
	// ConntrackSync is [l3ha] conntrack_sync.
	ConntrackSync bool
}

// RegisterFlags declares the options on flags (plus --config-file and
// --config-dir, as neutron-l3-agent takes them).
func RegisterFlags(flags *pflag.FlagSet) *config.Set { return config.New(flags, Options) }

// interfaceDrivers are the interface_driver values l3ha serves, by every
// name Neutron accepts for them.
var interfaceDrivers = map[string]string{
	"linuxbridge": "linuxbridge",
	"neutron.agent.linux.interface.BridgeInterfaceDriver": "linuxbridge",
}

// Load resolves and validates the options; log hears what loading notices.
func Load(set *config.Set, log *slog.Logger) (*Config, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	v, err := set.Resolve()
	if err != nil {
		return nil, err
	}
	if u := v.Unknown(); len(u) > 0 {
		log.Debug("config file options l3ha neutron-l3-agent does not read (ignored, as oslo.config does)", "options", strings.Join(u, " "))
	}
	c := &Config{
		TransportURL: v.String("default.transport_url"), Host: v.String("default.host"),
		StatePath: v.String("default.state_path"), AuthPassword: v.String("default.ha_vrrp_auth_password"),
		ControlExchange: v.String("default.control_exchange"), AvailabilityZone: v.String("agent.availability_zone"),
		HADriver: v.String("l3ha.ha_driver"), MetricsBind: v.String("l3ha.metrics_bind"),
	}
	advert := v.Int("default.ha_vrrp_advert_int", 1)
	c.AdvertInt = time.Duration(advert) * time.Second
	c.HealthCheckInterval = time.Duration(v.Int("default.ha_vrrp_health_check_interval", 0)) * time.Second
	c.HealthCheckFall = v.Int("l3ha.health_check_fall", 1)
	c.RPCTimeout = v.Seconds("default.rpc_response_timeout")
	c.HandleInternalOnly = v.Bool("default.handle_internal_only_routers")
	c.ConntrackSync = v.Bool("l3ha.conntrack_sync")
	c.ReportInterval = v.Seconds("agent.report_interval")
	c.L3HAVersion = v.Int("l3ha.vrrp_version", 2)
	l3haInt, l3haIntSet := defaultL3HAInterval, v.String("l3ha.advert_int") != ""
	if l3haIntSet {
		if f, err := strconv.ParseFloat(v.String("l3ha.advert_int"), 64); err == nil && f == 0 {
			l3haInt = 0 // no pace
		} else {
			l3haInt = v.Seconds("l3ha.advert_int")
		}
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	var missing []string
	for _, k := range []string{"default.transport_url", "default.interface_driver"} {
		if v.String(k) == "" {
			missing = append(missing, strings.TrimPrefix(k, "default."))
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("invalid configuration: [DEFAULT] %s required", strings.Join(missing, " and ")+map[bool]string{true: " is", false: " are"}[len(missing) == 1])
	}
	if c.Host == "" {
		if c.Host, err = os.Hostname(); err != nil {
			return nil, fmt.Errorf("invalid configuration: no host given and the machine's host name is unknown: %w", err)
		}
	}
	drv := v.String("default.interface_driver")
	if c.InterfaceDriver = interfaceDrivers[drv]; c.InterfaceDriver == "" {
		if strings.Contains(strings.ToLower(drv), "openvswitch") || strings.HasSuffix(drv, "OVSInterfaceDriver") {
			return nil, fmt.Errorf("invalid configuration: interface_driver %q: l3ha serves linuxbridge nodes only so far (openvswitch: not implemented)", drv)
		}
		return nil, fmt.Errorf("invalid configuration: interface_driver %q (want linuxbridge)", drv)
	}
	if m := v.String("default.agent_mode"); m != "legacy" {
		return nil, fmt.Errorf("invalid configuration: agent_mode %q: l3ha runs every router centrally (legacy); distributed routers are not implemented", m)
	}
	if t := strings.ToUpper(v.String("default.ha_vrrp_auth_type")); t != "PASS" {
		return nil, fmt.Errorf("invalid configuration: ha_vrrp_auth_type %q (l3ha speaks PASS)", v.String("default.ha_vrrp_auth_type"))
	}
	if len(c.AuthPassword) > 8 {
		// VRRPv2's authentication data is 8 octets; keepalived truncates.
		return nil, errors.New("invalid configuration: ha_vrrp_auth_password is longer than VRRPv2's 8 characters")
	}
	switch c.HADriver {
	case "native", "keepalived":
	default:
		return nil, fmt.Errorf("invalid configuration: [l3ha] ha_driver %q (want native or keepalived)", c.HADriver)
	}
	switch {
	case c.HealthCheckInterval > 0 && c.HADriver != "native":
		return nil, fmt.Errorf("invalid configuration: ha_vrrp_health_check_interval %s needs [l3ha] ha_driver native", c.HealthCheckInterval)
	}
	if err := c.resolveVRRP(l3haInt, l3haIntSet); err != nil {
		return nil, err
	}
	if c.ReportInterval <= 0 {
		return nil, fmt.Errorf("invalid configuration: [agent] report_interval %s: l3ha always reports its state", c.ReportInterval)
	}
	c.HAConfsPath = interpolate(v.String("default.ha_confs_path"), map[string]string{"state_path": c.StatePath})
	if !filepath.IsAbs(c.HAConfsPath) {
		return nil, fmt.Errorf("invalid configuration: ha_confs_path %q is not absolute", c.HAConfsPath)
	}
	return c, nil
}

// defaultL3HAInterval is [l3ha] advert_int's default, the native driver's
// interval under l3ha's own server: 3 × 0.2 s + skew ≈ 0.76 s to fail over.
const defaultL3HAInterval = 200 * time.Millisecond

// resolveVRRP sets how the node's routers run VRRP from [l3ha] vrrp_version
// and advert_int (iv; set says whether the file gave it).
func (c *Config) resolveVRRP(iv time.Duration, set bool) error {
	switch c.L3HAVersion {
	case 3:
		c.L3HAAdvertInt = iv
		if iv < 10*time.Millisecond || iv > 40950*time.Millisecond || iv%(10*time.Millisecond) != 0 {
			return fmt.Errorf("invalid configuration: [l3ha] advert_int %s (VRRPv3: whole centiseconds, 0.01 to 40.95 s)", iv)
		}
		return nil
	case 2:
	default:
		return fmt.Errorf("invalid configuration: [l3ha] vrrp_version %d (want 2 or 3)", c.L3HAVersion)
	}
	// VRRPv2: the packets are Neutron's, only the pace is l3ha's.
	c.L3HAAdvertInt = c.AdvertInt
	if c.AdvertInt < time.Second || c.AdvertInt > 254*time.Second {
		return fmt.Errorf("invalid configuration: ha_vrrp_advert_int %d (whole seconds, 1 to 254)", c.AdvertInt/time.Second)
	}
	if c.HADriver == "keepalived" {
		if set && iv != 0 {
			return fmt.Errorf("invalid configuration: [l3ha] advert_int %s with vrrp_version 2 is the native driver's pace; keepalived advertises every ha_vrrp_advert_int", iv)
		}
		return nil
	}
	switch {
	case iv == 0:
	case iv < 10*time.Millisecond || iv > c.AdvertInt/2:
		return fmt.Errorf("invalid configuration: [l3ha] advert_int %s: the pace must be 0.01 s to half of ha_vrrp_advert_int (%s), or 0 for none", iv, c.AdvertInt/2)
	default:
		c.Pace = iv
	}
	return nil
}

// interpolate replaces $name and ${name} as oslo.config does, for the
// options ha_confs_path's default refers to.
func interpolate(s string, vars map[string]string) string {
	for k, val := range vars {
		s = strings.ReplaceAll(s, "${"+k+"}", val)
		s = strings.ReplaceAll(s, "$"+k, val)
	}
	return s
}
