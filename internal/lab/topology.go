package lab

import (
	"fmt"
	"regexp"
	"strings"
)

// Addresses and names of the lab's picture. They are the same in every lab:
// each lab has its own namespaces, so two labs never share a segment.
const (
	// FabricPrefixLen is the prefix of the underlay (VXLAN) network
	// 10.99.0.0/24 that joins every node's eth1.
	FabricPrefixLen = 24
	// ControllerIP is the server's address on the controller (= node net1).
	ControllerIP = "10.99.0.1"
	// ServerPort is the port the server listens on.
	ServerPort = 9696

	// ExternalCIDR is the external (provider, flat) network on physical
	// network "public"; the upstream host is its gateway.
	ExternalCIDR    = "172.24.4.0/24"
	UpstreamIP      = "172.24.4.1"
	ExternalPrefix  = 24
	ExternalPoolLo  = "172.24.4.100"
	ExternalPoolHi  = "172.24.4.200"
	PhysicalNetwork = "public"

	// TenantCIDR is the instance's network (the blog's 10.10.30.0/24).
	TenantCIDR    = "10.10.30.0/24"
	TenantGateway = "10.10.30.1"

	// Devices inside the lab's namespaces (all ≤ 15 characters).
	devFabric   = "eth1"   // a node's underlay veth
	devExternal = "ext0"   // a network node's veth on the external segment
	devUplink   = "eth0"   // the upstream host's and the instance's veth
	devBridge   = "br0"    // the bridge of the fabric and ext namespaces
	devInstance = "eth0"   // the instance's interface
	instanceNS  = "vm1"    // namespace role of the instance
	fabricNS    = "fabric" // namespace role of the underlay switch
	externalNS  = "ext"    // namespace role of the external switch
	upstreamNS  = "upstream"
)

// Node is one machine of the lab: a namespace that runs an agent.
type Node struct {
	Name string // host name the agent registers (net1, net2, compute1)
	// FabricIP is the node's underlay address (--local-ip).
	FabricIP string
	// Network: the node runs routers (agent mode legacy) and has ext0 on the
	// external segment. Otherwise it is a compute node (agent mode dvr).
	Network bool
	// Controller: the server runs in this node's namespace too, on
	// ControllerIP.
	Controller bool
}

// Nodes are the lab's machines, in start order.
var Nodes = []Node{
	{Name: "net1", FabricIP: "10.99.0.2", Network: true, Controller: true},
	{Name: "net2", FabricIP: "10.99.0.3", Network: true},
	{Name: "compute1", FabricIP: "10.99.0.4"},
}

// controllerNode is the node whose namespace runs the server.
func controllerNode() Node {
	for _, n := range Nodes {
		if n.Controller {
			return n
		}
	}
	panic("lab: no controller node")
}

// nodeByName returns the node called name.
func nodeByName(name string) (Node, bool) {
	for _, n := range Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return Node{}, false
}

// validName matches lab names: short, lower case, no dashes (so that
// namespace names parse back unambiguously).
var validName = regexp.MustCompile(`^[a-z0-9]{1,12}$`)

// ValidateName checks a lab name.
func ValidateName(name string) error {
	if !validName.MatchString(name) {
		return fmt.Errorf("invalid lab name %q: want 1 to 12 lower-case letters or digits", name)
	}
	return nil
}

// nsPrefix is the prefix of every namespace the lab itself creates.
func nsPrefix(lab string) string { return "l3ha-" + lab + "-" }

// NodeNamespace is the namespace of a node (or of the fabric, ext, upstream
// and vm1 roles): l3ha-<lab>-<role>.
func NodeNamespace(lab, role string) string { return nsPrefix(lab) + role }

// NetnsSuffix is the --netns-suffix given to a node's agent: its router
// namespaces are qrouter-<router_id>-<lab>-<node>. The lab name is part of it
// so that two labs on one machine never touch each other's routers.
func NetnsSuffix(lab, node string) string { return "-" + lab + "-" + node }

// RouterNamespace is the namespace of router id on node (see NetnsSuffix).
func RouterNamespace(lab, routerID, node string) string {
	return "qrouter-" + routerID + NetnsSuffix(lab, node)
}

// uuidNS matches namespaces that agents make for a resource: <kind>-<uuid>
// followed by a suffix.
var uuidNS = regexp.MustCompile(`^[a-z]+-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(-.+)$`)

// labRoles are the roles of the namespaces a lab creates.
func labRoles() []string {
	roles := []string{fabricNS, externalNS, upstreamNS}
	for _, n := range Nodes {
		roles = append(roles, n.Name)
	}
	return append(roles, instanceNS)
}

// ownsNamespace reports whether namespace ns belongs to lab: one of its own
// (l3ha-<lab>-<role>) or one an agent of the lab made
// (<kind>-<uuid>-<lab>-<node>, e.g. qrouter-…-lab-net1).
func ownsNamespace(lab, ns string) bool {
	if rest, ok := strings.CutPrefix(ns, nsPrefix(lab)); ok {
		for _, r := range labRoles() {
			if rest == r {
				return true
			}
		}
		return false
	}
	m := uuidNS.FindStringSubmatch(ns)
	if m == nil {
		return false
	}
	for _, n := range Nodes {
		if m[1] == NetnsSuffix(lab, n.Name) {
			return true
		}
	}
	return false
}

// devSuffix is the 11 characters of an id that Neutron puts in device names.
func devSuffix(id string) string {
	if len(id) > 11 {
		return id[:11]
	}
	return id
}

// BridgeName is the bridge of network netID on a node: brq<id[:11]>.
func BridgeName(netID string) string { return "brq" + devSuffix(netID) }

// TapName is the node-side device of a port: tap<id[:11]>.
func TapName(portID string) string { return "tap" + devSuffix(portID) }
