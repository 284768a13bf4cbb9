// Package agentapi is the wire protocol between l3ha agents and l3ha server:
// registration and heartbeats, a long-poll for the desired state of everything
// bound to a host, and batched ha_state reports. It holds the JSON types and
// the agents' HTTP client; the server side lives in internal/server.
package agentapi

import (
	"slices"
	"time"
)

// HTTP paths of the agent endpoint. Every request carries the shared agent
// token in the TokenHeader header; a missing or wrong token is 401.
const (
	PathHeartbeat = "/agent/v1/heartbeat"
	PathState     = "/agent/v1/state"
	PathHAStates  = "/agent/v1/ha_states"
	TokenHeader   = "X-L3HA-Agent-Token"
)

// Agent types and modes, as Neutron names them.
const (
	AgentTypeL3   = "L3 agent"
	BinaryL3      = "neutron-l3-agent"
	TopicL3       = "l3_agent"
	ModeLegacy    = "legacy"
	ModeDVRSNAT   = "dvr_snat"
	ModeDVR       = "dvr"
	HAActive      = "active"
	HAStandby     = "standby"
	HAUnknown     = "unknown"
	DefaultAZ     = "nova"
	ConfigLocalIP = "local_ip"
)

// Heartbeat registers the agent on first use and refreshes its liveness after.
type Heartbeat struct {
	Host      string    `json:"host"`
	AgentType string    `json:"agent_type"` // AgentTypeL3
	Binary    string    `json:"binary"`
	Topic     string    `json:"topic"`
	StartedAt time.Time `json:"started_at"`
	// Configurations is shown as the agent's "configurations" in the API;
	// "agent_mode" (legacy|dvr_snat|dvr) and "local_ip" (VXLAN underlay) are read
	// by the server.
	Configurations map[string]any `json:"configurations"`
}

// HeartbeatReply tells the agent who it is and how often to come back.
type HeartbeatReply struct {
	AgentID string `json:"agent_id"`
	// IntervalSeconds is how often the agent should heartbeat; a third of the
	// server's agent_down_time so that two lost heartbeats are survivable.
	IntervalSeconds float64 `json:"interval_seconds"`
	// AgentDownTimeSeconds is the server's agent_down_time.
	AgentDownTimeSeconds float64 `json:"agent_down_time_seconds"`
}

// StateQuery parameters (query string of GET PathState):
//   host=H          the agent's host (required)
//   etag=E          the ETag of the state the agent already holds ("" = none)
//   wait=SECONDS    how long to hold the request when nothing changed (max 60)
// The reply is 200 with a DesiredState when the host's state differs from
// etag, or 204 when wait expired with nothing new.

// DesiredState is everything one host must run.
type DesiredState struct {
	// ETag identifies this content; equal ETags mean equal states.
	ETag     string        `json:"etag"`
	Host     string        `json:"host"`
	Routers  []RouterSpec  `json:"routers"`
	Networks []NetworkSpec `json:"networks"`
}

// RouterSpec is one router bound to the host.
type RouterSpec struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	ProjectID    string `json:"project_id"`
	AdminStateUp bool   `json:"admin_state_up"`
	HA           bool   `json:"ha"`
	Distributed  bool   `json:"distributed"`
	// VRID is the router's VRRP virtual router id on its HA network (1..254),
	// 0 for legacy routers.
	VRID int `json:"vrid,omitempty"`
	// BindingIndex is the host's binding index for this router (1..N).
	BindingIndex int `json:"binding_index"`
	// HAPort is this host's port on the HA network (nil for legacy routers).
	HAPort *PortSpec `json:"ha_port,omitempty"`
	// HAPending: the router's devices are wired but its VRRP must not
	// start yet — under Neutron, until the L2 agent has bound the HA port
	// (as neutron-l3-agent waits for it). VRRP already running keeps running.
	HAPending bool `json:"ha_pending,omitempty"`
	// Switchover, while an operator's switchover of the router is in
	// progress, names the agent that must become its master.
	Switchover *SwitchoverSpec `json:"switchover,omitempty"`
	// Interfaces are the router's internal ports (qr- devices).
	Interfaces []PortSpec `json:"interfaces"`
	// Gateway is the external gateway port (qg- device), if any.
	Gateway    *PortSpec `json:"gateway,omitempty"`
	EnableSNAT bool      `json:"enable_snat"`
	// Routes are the router's extra routes.
	Routes      []Route          `json:"routes"`
	FloatingIPs []FloatingIPSpec `json:"floating_ips"`
}

// SwitchoverSpec is an operator's request that a router's master move to
// one agent (POST /v2.0/routers/{id}/switchover). The target takes over at
// once and outbids the current master, which then steps down (VRRP); the
// others do nothing. The server keeps it in the desired state until the
// target reports active or it expires, so an agent acts on each ID once.
type SwitchoverSpec struct {
	// ID names the request: a new request for the same router has another.
	ID      string `json:"id"`
	AgentID string `json:"agent_id"`
	Host    string `json:"host"`
}

// PortSpec is a router port: device name derives from ID and DeviceOwner.
type PortSpec struct {
	ID          string        `json:"id"`
	NetworkID   string        `json:"network_id"`
	MACAddress  string        `json:"mac_address"`
	DeviceOwner string        `json:"device_owner"`
	MTU         int           `json:"mtu"`
	FixedIPs    []FixedIPSpec `json:"fixed_ips"`
}

// FixedIPSpec is one address of a port with its subnet's prefix and gateway.
type FixedIPSpec struct {
	SubnetID  string `json:"subnet_id"`
	IPAddress string `json:"ip_address"`
	CIDR      string `json:"cidr"`
	GatewayIP string `json:"gateway_ip,omitempty"`
}

// Route is an extra route of a router.
type Route struct {
	Destination string `json:"destination"`
	NextHop     string `json:"nexthop"`
}

// FloatingIPSpec is a floating IP associated with a port behind the router.
type FloatingIPSpec struct {
	ID                string `json:"id"`
	FloatingIPAddress string `json:"floating_ip_address"`
	FixedIPAddress    string `json:"fixed_ip_address"`
	PortID            string `json:"port_id"`
}

// NetworkSpec is a network the host must wire at L2 because a router on the
// host has a port on it (the HA network included).
type NetworkSpec struct {
	ID              string `json:"id"`
	NetworkType     string `json:"network_type"` // vxlan | flat
	SegmentationID  int    `json:"segmentation_id,omitempty"`
	PhysicalNetwork string `json:"physical_network,omitempty"`
	MTU             int    `json:"mtu"`
	// Peers are the underlay addresses (local_ip) of the other hosts that need
	// this network, for VXLAN head-end replication.
	Peers []string `json:"peers"`
}

// HAStateReport is a batch of HA states of one host's routers, keyed by
// router id; values are HAActive or HAStandby. It is one of two kinds:
//
//   - a transition report (Full false; the original shape, still accepted
//     as such): every entry is a state the router has just entered on the
//     host (or may have: a state adopted at agent start counts too). A
//     transition to active supersedes the router's other active bindings:
//     VRRP's new master only takes over after not hearing the old one.
//   - a re-assertion (Full true): States is the current state of every
//     router of the host, sent every ReassertSeconds and after the agent
//     (re)registers or reconnects. Entries listed in Changed are
//     transitions not yet accepted by the server; the others only confirm
//     what the host holds. A re-asserted active does not hide another
//     agent's active that is fresh (reported within the freshness window):
//     both are shown, as split brain.
//
// Every report refreshes the reported bindings: the server considers a
// report fresh for twice ReassertSeconds plus some slack (for a report
// without ReassertSeconds, twice the agents' default of 10 s plus slack).
type HAStateReport struct {
	Host   string            `json:"host"`
	States map[string]string `json:"states"`
	// Full marks a re-assertion: States holds every router of the host.
	Full bool `json:"full,omitempty"`
	// Changed lists the routers of a Full report whose state is a
	// transition (sorted; ignored when Full is false, where every entry
	// is one).
	Changed []string `json:"changed,omitempty"`
	// ReassertSeconds is how often the host re-asserts its states; 0: not
	// said (an agent that reports transitions only).
	ReassertSeconds float64 `json:"reassert_seconds,omitempty"`
	// Reasons says why transitions happened, keyed by router id: one of
	// the Reason* values, for entries of States that are transitions
	// (every entry of a transition report, the Changed entries of a
	// re-assertion). Optional: agents before it send none, and a router
	// without an entry has no reason its agent could tell (the server
	// then records the transition with the reason it knows itself, or
	// none). A reason the server does not know is recorded as none, so
	// that a newer agent's reasons never make a report fail.
	Reasons map[string]string `json:"reasons,omitempty"`
}

// Reasons of HA transitions (HAStateReport.Reasons, the server's
// GET /v2.0/routers/{id}/ha_transitions). "" means not known.
const (
	// ReasonStartup: the router started on the node (a first state, or a
	// first election that heard no master).
	ReasonStartup = "startup"
	// ReasonPeerLost: the master went silent (node, link or agent dead) and
	// a backup took over; also a claim the server gave up because its agent
	// is dead or stopped reporting.
	ReasonPeerLost = "peer_lost"
	// ReasonPeerResigned: the master resigned (VRRP priority 0, e.g. its
	// agent stopped gracefully) and a backup took over.
	ReasonPeerResigned = "peer_resigned"
	// ReasonSwitchover: an operator moved the master on purpose. Nothing
	// produces it yet.
	ReasonSwitchover = "switchover"
	// ReasonHealthCheck: a health check made the master give up. Nothing
	// produces it yet.
	ReasonHealthCheck = "health_check"
	// ReasonSplitBrain: two masters at once, detected (both claim active)
	// or healed (one yields to the other).
	ReasonSplitBrain = "split_brain"
	// ReasonAdminDown: the router was set administratively down, so its
	// node stopped running it.
	ReasonAdminDown = "admin_down"
	// ReasonRestartAdopted: a restarted agent adopted the state its
	// predecessor left running (a master stays master).
	ReasonRestartAdopted = "restart_adopted"
)

// Reasons lists every reason, in a stable order.
var Reasons = []string{ReasonStartup, ReasonPeerLost, ReasonPeerResigned, ReasonSwitchover,
	ReasonHealthCheck, ReasonSplitBrain, ReasonAdminDown, ReasonRestartAdopted}

// KnownReason reports whether r is one of Reasons.
func KnownReason(r string) bool { return slices.Contains(Reasons, r) }
