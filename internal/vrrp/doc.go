// Package vrrp is the pure core of l3ha's native HA driver: the VRRP wire
// format and the per-virtual-router state machine, with no sockets, no
// goroutines, no clock and no global state.
//
// It speaks VRRPv3 (RFC 5798, centisecond adverts) and VRRPv2 (RFC 3768, with
// keepalived's RFC 2338 simple-password authentication) over IPv4, so that an
// l3ha node can share a VRRP group with keepalived, which is what Neutron's
// agents run.
//
// The codec (Marshal, Parse) turns VRRP messages (the IP payload, protocol
// 112) into Packets and back. The state machine (Machine), in the style of
// etcd's raft, is driven by its caller: every input (Start, Receive, Tick,
// Resign, Shutdown) carries the current time and returns the Actions the
// caller must perform, in order; NextDeadline says when the machine next
// wants a Tick. One adapter can so run thousands of virtual routers with a
// single timer heap and no goroutine per router, and tests drive the protocol
// with a fake clock.
//
// Drops, whether the bytes did not parse or the machine refused the packet,
// are reported as *DropError values whose Reason is a short label fit for a
// metric.
package vrrp
