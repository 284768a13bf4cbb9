package linux

import "strconv"

// Device name prefixes, as Neutron names them.
const (
	PrefixInternal = "qr-" // router interface on a tenant network
	PrefixGateway  = "qg-" // router gateway on the external network
	PrefixHA       = "ha-" // router port on the HA network
	PrefixTap      = "tap" // node-side end of a router port's veth pair
	PrefixBridge   = "brq" // per-network bridge (Neutron linuxbridge)
	PrefixVXLAN    = "vxlan-"
	PrefixRouterNS = "qrouter-"
)

// MaxDeviceName is the longest interface name Linux accepts (IFNAMSIZ-1).
const MaxDeviceName = 15

// portIDChars is how much of a port id goes into a device name: 3-character
// prefix + 11 = 14 characters, as Neutron.
const portIDChars = 11

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// DeviceName returns prefix followed by the first 11 characters of id, e.g.
// DeviceName(PrefixInternal, "6f1c2a9e-...") = "qr-6f1c2a9e-..." (14
// characters). The result never exceeds MaxDeviceName.
func DeviceName(prefix, id string) string {
	return truncate(prefix+truncate(id, portIDChars), MaxDeviceName)
}

// NodeSideName is the name of the node-side end of the veth pair of a router
// port: "tap" + the first 11 characters of the port id.
func NodeSideName(portID string) string { return DeviceName(PrefixTap, portID) }

// BridgeName is the node's bridge for a network: "brq" + the first 11
// characters of the network id.
func BridgeName(networkID string) string { return DeviceName(PrefixBridge, networkID) }

// VXLANName is the node's VXLAN device for a VNI: "vxlan-<vni>".
func VXLANName(vni int) string { return PrefixVXLAN + strconv.Itoa(vni) }

// RouterNamespace is the namespace of a router: "qrouter-<id><suffix>". The
// suffix lets several agents share one kernel (the lab); it is empty on a
// real node.
func RouterNamespace(routerID, suffix string) string {
	return PrefixRouterNS + routerID + suffix
}
