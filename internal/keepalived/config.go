package keepalived

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/l3ha/l3ha/internal/agentapi"
)

// Neutron's fixed values.
const (
	// EmailFrom and RouterIDName are global_defs' notification_email_from and
	// router_id, as Neutron writes them.
	EmailFrom    = "neutron@openstack.local"
	RouterIDName = "neutron"

	DefaultPriority        = 50
	DefaultGARPMasterDelay = 60 // seconds
	DefaultAdvertInt       = 2 * time.Second
	AuthTypePASS           = "PASS"
	AuthTypeAH             = "AH"

	// Device name prefixes and length (Neutron truncates prefix+port id to 14).
	PrefixHA       = "ha-"
	PrefixInternal = "qr-"
	PrefixGateway  = "qg-"
	DeviceNameLen  = 14
)

// Config is everything that goes into one router's keepalived.conf. Zero
// values take Neutron's defaults, so a Config with RouterID, VRID,
// HAInterface, Excluded and Routes set renders what Neutron writes.
type Config struct {
	// RouterID is the router's id. It is not written into the file (Neutron
	// does not either) but Manager.Ensure checks it when set.
	RouterID string `json:"router_id,omitempty"`
	// VRID is the VRRP virtual router id (1..255; Neutron allocates 1..254).
	// It names the instance (VR_<vrid>) and the VIP 169.254.0.<vrid>/24.
	VRID int `json:"vrid"`
	// HAInterface is the router's ha- device, ha-xxxxxxxx-xx.
	HAInterface string `json:"ha_interface"`
	// Priority is the VRRP priority (1..254); 0 means 50, as Neutron.
	Priority int `json:"priority,omitempty"`
	// GARPMasterDelay is garp_master_delay in seconds; 0 means 60.
	GARPMasterDelay int `json:"garp_master_delay,omitempty"`
	// Preempt drops nopreempt. Neutron never preempts: a recovered node must
	// not take mastership back.
	Preempt bool `json:"preempt,omitempty"`
	// AdvertInt is the advertisement interval; 0 means 2s (Neutron's
	// ha_vrrp_advert_int). VRRPv2 takes whole seconds from 1 to 255; VRRPv3
	// takes multiples of 10ms up to 40.95s and is written with decimals
	// (advert_int 0.1).
	AdvertInt time.Duration `json:"advert_int,omitempty"`
	// Version is the VRRP version: 0 or 2 for VRRPv2 (Neutron, no version line
	// is written), 3 for VRRPv3 ("version 3" in the instance; no
	// authentication, which VRRPv3 does not have).
	Version int `json:"version,omitempty"`
	// AuthType is PASS (default) or AH; used only with AuthPassword.
	AuthType string `json:"auth_type,omitempty"`
	// AuthPassword is ha_vrrp_auth_password; empty writes no authentication
	// block.
	AuthPassword string `json:"auth_password,omitempty"`
	// TrackInterfaces are the devices in track_interface; nil means
	// [HAInterface], as Neutron.
	TrackInterfaces []string `json:"track_interfaces,omitempty"`
	// Excluded are the router's addresses, virtual_ipaddress_excluded. They
	// are written sorted by address text and without duplicates (Neutron's
	// order), so the caller's order does not matter.
	Excluded []Address `json:"excluded,omitempty"`
	// StartupDelay is global_defs' vrrp_startup_delay: how long keepalived
	// waits before its instance starts. l3ha delays the instances of a
	// router's later bindings so that the binding the scheduler made first
	// (spread over agents) wins the first election; 0 writes nothing
	// (Neutron's file).
	StartupDelay time.Duration `json:"startup_delay,omitempty"`
	// Routes are virtual_routes, in this order (Neutron: default routes, then
	// extra routes).
	Routes []Route `json:"routes,omitempty"`
}

// Address is one line of virtual_ipaddress_excluded:
// "<prefix> dev <dev>[ scope <scope>][ no_track]".
type Address struct {
	// Prefix is the address with its subnet's length, 10.0.0.1/24, or /32 for
	// a floating IP.
	Prefix netip.Prefix `json:"prefix"`
	Dev    string       `json:"dev"`
	Scope  string       `json:"scope,omitempty"`
	// Track drops no_track. Neutron writes no_track on every router address.
	Track bool `json:"track,omitempty"`
}

// Route is one line of virtual_routes:
// "<dst>[ via <via>][ dev <dev>][ scope <scope>][ no_track][ protocol <p>]".
type Route struct {
	Destination netip.Prefix `json:"destination"`
	Via         netip.Addr   `json:"via,omitzero"`
	Dev         string       `json:"dev,omitempty"`
	Scope       string       `json:"scope,omitempty"`
	// Track drops no_track. Neutron writes no_track on every route.
	Track bool `json:"track,omitempty"`
	// Protocol is the route's protocol (e.g. "static"); empty writes none,
	// as Neutron Zed does.
	Protocol string `json:"protocol,omitempty"`
}

// VIP returns the VRRP address of a VRID, 169.254.0.<vrid>/24 (Neutron's
// primary VIP, the only address in virtual_ipaddress).
func VIP(vrid int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{169, 254, 0, byte(vrid)}), 24)
}

// VIP returns the config's VRRP address.
func (c Config) VIP() netip.Prefix { return VIP(c.VRID) }

// Advert returns the effective advertisement interval.
func (c Config) Advert() time.Duration {
	if c.AdvertInt == 0 {
		return DefaultAdvertInt
	}
	return c.AdvertInt
}

// DeviceName returns the device Neutron names for a port: prefix + port id,
// truncated to 14 characters (ha-a67354cf-0b).
func DeviceName(prefix, portID string) string {
	n := prefix + portID
	if len(n) > DeviceNameLen {
		n = n[:DeviceNameLen]
	}
	return n
}

// LinkLocal returns the EUI-64 IPv6 link-local address of a MAC as a /64,
// which Neutron adds (scope link) for every qr- and qg- device so that only
// the master holds it.
func LinkLocal(mac string) (netip.Prefix, error) {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return netip.Prefix{}, err
	}
	if len(hw) != 6 {
		return netip.Prefix{}, fmt.Errorf("not an EUI-48 address: %s", mac)
	}
	var a [16]byte
	a[0], a[1] = 0xfe, 0x80
	a[8], a[9], a[10] = hw[0]^0x02, hw[1], hw[2]
	a[11], a[12] = 0xff, 0xfe
	a[13], a[14], a[15] = hw[3], hw[4], hw[5]
	return netip.PrefixFrom(netip.AddrFrom16(a), 64), nil
}

// Settings are the agent-wide VRRP options (Neutron's ha_vrrp_*), applied to
// every router by FromRouter.
type Settings struct {
	AdvertInt    time.Duration // ha_vrrp_advert_int; 0 = 2s
	Version      int           // 0/2 = VRRPv2, 3 = VRRPv3
	AuthType     string        // ha_vrrp_auth_type; "" = PASS
	AuthPassword string        // ha_vrrp_auth_password; "" = no authentication
	Priority     int           // 0 = 50
	// RouteProtocol, when set, is written as "protocol <p>" on every
	// virtual route. Neutron Zed writes none.
	RouteProtocol string
}

// FromRouter builds a router's Config the way Neutron's HA router does: the
// VIP on the ha- device of this host's HA port; each internal port's
// addresses with their subnet's length on its qr- device and the gateway
// port's on qg-; the EUI-64 link-local address of every qr- and qg- device
// (scope link); each floating IP as a /32 on qg-; a default route via each
// gateway subnet's gateway on qg-; then the router's extra routes.
func FromRouter(r agentapi.RouterSpec, s Settings) (Config, error) {
	if !r.HA {
		return Config{}, fmt.Errorf("router %s is not an HA router", r.ID)
	}
	if r.HAPort == nil {
		return Config{}, fmt.Errorf("router %s has no HA port on this host", r.ID)
	}
	c := Config{
		RouterID:     r.ID,
		VRID:         r.VRID,
		HAInterface:  DeviceName(PrefixHA, r.HAPort.ID),
		Priority:     s.Priority,
		AdvertInt:    s.AdvertInt,
		Version:      s.Version,
		AuthType:     s.AuthType,
		AuthPassword: s.AuthPassword,
	}
	addPort := func(p agentapi.PortSpec, prefix string) (string, error) {
		dev := DeviceName(prefix, p.ID)
		for _, ip := range p.FixedIPs {
			a, err := fixedIPPrefix(ip)
			if err != nil {
				return "", fmt.Errorf("router %s port %s: %w", r.ID, p.ID, err)
			}
			c.Excluded = append(c.Excluded, Address{Prefix: a, Dev: dev})
		}
		if p.MACAddress != "" {
			ll, err := LinkLocal(p.MACAddress)
			if err != nil {
				return "", fmt.Errorf("router %s port %s: %w", r.ID, p.ID, err)
			}
			c.Excluded = append(c.Excluded, Address{Prefix: ll, Dev: dev, Scope: "link"})
		}
		return dev, nil
	}
	for _, p := range r.Interfaces {
		if _, err := addPort(p, PrefixInternal); err != nil {
			return Config{}, err
		}
	}
	if r.Gateway != nil {
		qg, err := addPort(*r.Gateway, PrefixGateway)
		if err != nil {
			return Config{}, err
		}
		for _, f := range r.FloatingIPs {
			a, err := netip.ParseAddr(f.FloatingIPAddress)
			if err != nil {
				return Config{}, fmt.Errorf("router %s floating IP %s: %w", r.ID, f.ID, err)
			}
			c.Excluded = append(c.Excluded, Address{Prefix: netip.PrefixFrom(a, a.BitLen()), Dev: qg})
		}
		for _, ip := range r.Gateway.FixedIPs {
			if ip.GatewayIP == "" {
				continue
			}
			gw, err := netip.ParseAddr(ip.GatewayIP)
			if err != nil {
				return Config{}, fmt.Errorf("router %s gateway %q: %w", r.ID, ip.GatewayIP, err)
			}
			dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
			if gw.Is6() {
				dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
			}
			c.Routes = append(c.Routes, Route{Destination: dst, Via: gw, Dev: qg, Protocol: s.RouteProtocol})
		}
	}
	for _, rt := range r.Routes {
		dst, err := netip.ParsePrefix(rt.Destination)
		if err != nil {
			return Config{}, fmt.Errorf("router %s route %s: %w", r.ID, rt.Destination, err)
		}
		via, err := netip.ParseAddr(rt.NextHop)
		if err != nil {
			return Config{}, fmt.Errorf("router %s route %s nexthop %q: %w", r.ID, rt.Destination, rt.NextHop, err)
		}
		c.Routes = append(c.Routes, Route{Destination: dst, Via: via, Protocol: s.RouteProtocol})
	}
	return c, c.Validate()
}

func fixedIPPrefix(ip agentapi.FixedIPSpec) (netip.Prefix, error) {
	a, err := netip.ParseAddr(ip.IPAddress)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("fixed IP %q: %w", ip.IPAddress, err)
	}
	if ip.CIDR == "" {
		return netip.Prefix{}, fmt.Errorf("fixed IP %s has no subnet CIDR", ip.IPAddress)
	}
	sn, err := netip.ParsePrefix(ip.CIDR)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("fixed IP %s subnet CIDR %q: %w", ip.IPAddress, ip.CIDR, err)
	}
	if sn.Addr().Is4() != a.Is4() {
		return netip.Prefix{}, fmt.Errorf("fixed IP %s is not in subnet %s", ip.IPAddress, ip.CIDR)
	}
	return netip.PrefixFrom(a, sn.Bits()), nil
}

// Validate reports whether c can be rendered.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.VRID < 1 || c.VRID > 255 {
		bad("VRID %d out of range 1..255", c.VRID)
	}
	if err := checkDevice(c.HAInterface); err != nil {
		bad("HA interface: %v", err)
	}
	if c.StartupDelay < 0 {
		bad("negative startup delay %s", c.StartupDelay)
	}
	if c.Priority != 0 && (c.Priority < 1 || c.Priority > 254) {
		bad("priority %d out of range 1..254", c.Priority)
	}
	if c.GARPMasterDelay < 0 {
		bad("negative garp_master_delay %d", c.GARPMasterDelay)
	}
	adv := c.Advert()
	switch c.Version {
	case 0, 2:
		if adv%time.Second != 0 || adv < time.Second || adv > 255*time.Second {
			bad("advert interval %v: VRRPv2 takes whole seconds from 1 to 255", adv)
		}
	case 3:
		if adv%(10*time.Millisecond) != 0 || adv < 10*time.Millisecond || adv > 4095*10*time.Millisecond {
			bad("advert interval %v: VRRPv3 takes multiples of 10ms up to 40.95s", adv)
		}
		if c.AuthPassword != "" {
			bad("VRRPv3 has no authentication")
		}
	default:
		bad("VRRP version %d (want 2 or 3)", c.Version)
	}
	switch c.AuthType {
	case "", AuthTypePASS, AuthTypeAH:
	default:
		bad("auth type %q (want PASS or AH)", c.AuthType)
	}
	if c.AuthPassword != "" {
		if err := checkToken(c.AuthPassword); err != nil {
			bad("auth password: %v", err)
		}
	}
	for _, d := range c.TrackInterfaces {
		if err := checkDevice(d); err != nil {
			bad("track interface: %v", err)
		}
	}
	for _, a := range c.Excluded {
		if !a.Prefix.IsValid() {
			bad("excluded address without a prefix")
			continue
		}
		if err := checkDevice(a.Dev); err != nil {
			bad("excluded address %s: %v", a.Prefix, err)
		}
		if a.Scope != "" {
			if err := checkToken(a.Scope); err != nil {
				bad("excluded address %s scope: %v", a.Prefix, err)
			}
		}
	}
	for _, r := range c.Routes {
		if !r.Destination.IsValid() {
			bad("route without a destination")
			continue
		}
		if r.Via.IsValid() && r.Via.Is4() != r.Destination.Addr().Is4() {
			bad("route %s via %s: address families differ", r.Destination, r.Via)
		}
		if r.Dev != "" {
			if err := checkDevice(r.Dev); err != nil {
				bad("route %s: %v", r.Destination, err)
			}
		}
		if !r.Via.IsValid() && r.Dev == "" {
			bad("route %s has neither via nor dev", r.Destination)
		}
		for _, tok := range []string{r.Scope, r.Protocol} {
			if tok != "" {
				if err := checkToken(tok); err != nil {
					bad("route %s: %v", r.Destination, err)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// checkToken rejects what would break out of a keepalived.conf word:
// whitespace, control characters, braces, quotes and comment starters.
func checkToken(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) || strings.ContainsRune(`{}#!"'\`, r) || r > unicode.MaxASCII {
			return fmt.Errorf("%q contains %q", s, r)
		}
	}
	return nil
}

func checkDevice(d string) error {
	if err := checkToken(d); err != nil {
		return fmt.Errorf("device name: %w", err)
	}
	if len(d) > 15 || strings.ContainsRune(d, '/') {
		return fmt.Errorf("invalid device name %q", d)
	}
	return nil
}

func formatAdvert(d time.Duration) string {
	if d%time.Second == 0 {
		return strconv.FormatInt(int64(d/time.Second), 10)
	}
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64)
}

// Render returns c's keepalived.conf exactly as Neutron writes it: lines
// joined by "\n" with no newline after the last brace.
func Render(c Config) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("keepalived config: %w", err)
	}
	prio := c.Priority
	if prio == 0 {
		prio = DefaultPriority
	}
	garp := c.GARPMasterDelay
	if garp == 0 {
		garp = DefaultGARPMasterDelay
	}
	track := c.TrackInterfaces
	if track == nil {
		track = []string{c.HAInterface}
	}

	var b bytes.Buffer
	line := func(indent int, format string, a ...any) {
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(strings.Repeat("    ", indent))
		fmt.Fprintf(&b, format, a...)
	}
	line(0, "global_defs {")
	line(1, "notification_email_from %s", EmailFrom)
	line(1, "router_id %s", RouterIDName)
	if c.StartupDelay > 0 {
		line(1, "vrrp_startup_delay %s", strconv.FormatFloat(c.StartupDelay.Seconds(), 'f', -1, 64))
	}
	line(0, "}")
	line(0, "vrrp_instance VR_%d {", c.VRID)
	line(1, "state BACKUP")
	line(1, "interface %s", c.HAInterface)
	line(1, "virtual_router_id %d", c.VRID)
	line(1, "priority %d", prio)
	line(1, "garp_master_delay %d", garp)
	if !c.Preempt {
		line(1, "nopreempt")
	}
	line(1, "advert_int %s", formatAdvert(c.Advert()))
	if c.Version == 3 {
		line(1, "version 3")
	}
	if c.AuthPassword != "" {
		at := c.AuthType
		if at == "" {
			at = AuthTypePASS
		}
		line(1, "authentication {")
		line(2, "auth_type %s", at)
		line(2, "auth_pass %s", c.AuthPassword)
		line(1, "}")
	}
	if len(track) > 0 {
		line(1, "track_interface {")
		for _, d := range track {
			line(2, "%s", d)
		}
		line(1, "}")
	}
	line(1, "virtual_ipaddress {")
	line(2, "%s dev %s", c.VIP(), c.HAInterface)
	line(1, "}")
	if ex := sortedExcluded(c.Excluded); len(ex) > 0 {
		line(1, "virtual_ipaddress_excluded {")
		for _, a := range ex {
			s := a.Prefix.String() + " dev " + a.Dev
			if a.Scope != "" {
				s += " scope " + a.Scope
			}
			if !a.Track {
				s += " no_track"
			}
			line(2, "%s", s)
		}
		line(1, "}")
	}
	if len(c.Routes) > 0 {
		line(1, "virtual_routes {")
		for _, r := range c.Routes {
			s := r.Destination.String()
			if r.Via.IsValid() {
				s += " via " + r.Via.String()
			}
			if r.Dev != "" {
				s += " dev " + r.Dev
			}
			if r.Scope != "" {
				s += " scope " + r.Scope
			}
			if !r.Track {
				s += " no_track"
			}
			if r.Protocol != "" {
				s += " protocol " + r.Protocol
			}
			line(2, "%s", s)
		}
		line(1, "}")
	}
	line(0, "}")
	return b.Bytes(), nil
}

// sortedExcluded orders addresses as Neutron does (sorted by the address
// text) and drops repeated addresses, keeping the first.
func sortedExcluded(in []Address) []Address {
	seen := make(map[string]bool, len(in))
	out := make([]Address, 0, len(in))
	for _, a := range in {
		k := a.Prefix.String()
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, a)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Prefix.String() < out[j].Prefix.String() })
	return out
}
