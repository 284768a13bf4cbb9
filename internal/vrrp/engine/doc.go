// Package engine is the Linux adapter of l3ha's native VRRP: it runs the pure
// state machines of package vrrp for every HA router of a node, over real
// sockets and netlink.
//
// # One engine, one loop, one timer
//
// An Engine (one per agent) owns a single event loop goroutine. Every
// per-router object — the vrrp.Machine, its place in the timer heap, whether
// its addresses should be installed — lives in that loop and is touched by
// nothing else. The loop waits on one time.Timer armed for the earliest
// Machine.NextDeadline of all routers (a min-heap), on packets handed over by
// the receive goroutines, and on requests (Ensure, Remove, Shutdown, status).
// There is no goroutine-with-sleep per router: a thousand routers cost one
// timer and one heap.
//
// # Sockets
//
// Each router has one raw IPv4 socket for IP protocol 112, opened inside its
// namespace (linux.Do), bound to its ha- device (SO_BINDTODEVICE), member of
// 224.0.0.18 on that device only (IP_MULTICAST_ALL off), sending with
// IP_MULTICAST_TTL 255, IP_MULTICAST_LOOP off and its ha- address as source
// (IP_PKTINFO). Reading a socket blocks, so each has a receive goroutine; it
// parses the IP header the raw socket delivers (TTL, source, destination),
// decodes and verifies the VRRP message (vrrp.Parse: version, type, length,
// checksum), drops what can never concern its router (bad TTL, other VRID,
// other version) and hands the rest to the loop through a small bounded
// per-router queue. The loop drains the queues round-robin, a few packets per
// router per round, and fires due timers between rounds, so a flood on one
// ha- device delays no other router's adverts: at worst the flooded router's
// own queue overflows (counted as "queue_full").
//
// Every dropped packet is counted by reason (vrrp.Reason labels, plus the
// adapter's own: "oversized", "bad_ip_header", "queue_full"), per router
// (Status) and in Prometheus counters when a Registerer is given.
//
// # Addresses, routes, gratuitous ARP
//
// Netlink work never runs in the loop. The loop hands the desired data-plane
// state of a router (addresses installed or not, GARP wanted, state to report)
// to a small pool of workers that serialise the work of each router and
// coalesce it (only the latest desired state matters). A master gets its VIP
// on the ha- device, its virtual_ipaddress_excluded addresses on their devices
// and its routes (protocol linux.RouteProtocolVRRP, so that the reconciler's
// own routes are never touched); a backup has none of them. Both are converged
// (add what is missing, remove what is extra, leave what is right), so
// applying them again never flaps an address. Gratuitous ARP (an ARP request
// for every IPv4 address, sender = target = the address, from the device's
// MAC) goes out on an AF_PACKET socket opened in the namespace, after the
// addresses are in place. The state is reported after the data plane matches.
//
// # Restarts
//
// A router whose VIP is already on its ha- device when the engine first sees
// it is adopted as master (vrrp.StartMaster): it advertises at once and its
// addresses are left as they are. Others start as backup. With a StateDir the
// engine remembers each router in <StateDir>/ha_confs/<router_id>/vrrp.json,
// so that Start adopts every router at once, before the agent has talked to
// its server. Shutdown(ctx, false) stops for a restart: each master sends one
// last advert, sockets close, addresses stay. Shutdown(ctx, true) stops for
// good: masters resign with a priority-0 advert, so backups take over after
// Skew_Time, and keep forwarding until they hear the new master (plus
// Options.HandoverGrace) before they remove their addresses (see handover in
// loop.go).
//
// The trade-off of a restart: while no engine runs, nobody advertises. The
// backups take over once their Master_Down_Interval (3 adverts plus the skew,
// 0.38 s at 0.1 s adverts and priority 50, 3.8 s at 1 s) has passed since the
// last advert. What keeps masters masters is therefore a fast restart: the
// new process adopts in Start, from the saved routers, without waiting for
// its server or for an Ensure. Measured here (TestKernelAgentProcessRestart-
// KeepsMaster): signal → old process gone in 2-6 ms, new process adopted
// 6-33 ms later, longest silence on the wire one advert interval (the adopted
// master advertises at once). On a loaded host a process restart can take
// longer than 0.38 s (0.6 s was seen in the lab), so in VRRPv3 the stopping
// master's last advert announces Options.RestartAdvertInterval (1 s): the
// backups adopt the master's interval (RFC 5798 §6.4.2) and wait 3.8 s for
// the next engine, whose first advert sets the interval back
// (TestKernelSlowRestartKeepsMaster). The price: a node that dies while its
// agent restarts fails over after 3.8 s. A restart longer than that (or in
// VRRPv2, longer than Master_Down_Interval) lets a backup take over while the
// old node still holds the addresses; the restarted engine then adopts, two
// masters see each other's adverts and the equal-priority tie-break (higher
// ha- address) leaves one within an advert; the loser, once its addresses
// are gone, sends a priority-0 advert, which the winner answers with
// gratuitous ARP, so traffic follows the winner at once.
//
// A loaded node can also stall the engine's process beyond
// Master_Down_Interval: a backup whose timer runs out first reads the adverts
// waiting in its socket, and one whose timer fired far too late gives the
// master one more advert interval (see catchUp in loop.go). A router whose
// ha- device is down is in fault, as keepalived's FAULT state: no addresses,
// no election, until the device is up (see enterFault). Each VRRP socket
// carries a BPF filter for its VRID, so that the n routers of an HA network
// do not wake each other n² times per advert interval.
package engine
