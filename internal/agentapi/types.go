// Package agentapi is the wire protocol between l3ha agents and l3ha server:
// registration and heartbeats, a long-poll for the desired state of everything
// bound to a host, and batched ha_state reports. It holds the JSON types and
// the agents' HTTP client; the server side lives in internal/server.
package agentapi

import "time"

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
	// Interfaces are the router's internal ports (qr- devices).
	Interfaces []PortSpec `json:"interfaces"`
	// Gateway is the external gateway port (qg- device), if any.
	Gateway    *PortSpec `json:"gateway,omitempty"`
	EnableSNAT bool      `json:"enable_snat"`
	// Routes are the router's extra routes.
	Routes      []Route          `json:"routes"`
	FloatingIPs []FloatingIPSpec `json:"floating_ips"`
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

// HAStateReport is a batch of VRRP transitions seen by one host, keyed by
// router id; values are HAActive or HAStandby.
type HAStateReport struct {
	Host   string            `json:"host"`
	States map[string]string `json:"states"`
}
