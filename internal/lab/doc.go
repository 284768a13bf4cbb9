// Package lab builds a whole l3ha cloud on one Linux machine out of network
// namespaces, runs `l3ha server` and one `l3ha agent` per node in it, and
// drives the Neutron L3 HA blog's failover test against it (`l3ha lab
// up|status|failover|down`).
//
// # Topology
//
// A lab has a name (default "lab"; 1–12 lower-case letters or digits) and
// these namespaces:
//
//	l3ha-<name>-fabric    switch: bridge br0, one veth per node (the VXLAN underlay 10.99.0.0/24)
//	l3ha-<name>-ext       switch: bridge br0 for the external network (flat, physnet "public")
//	l3ha-<name>-upstream  the upstream gateway host: eth0 172.24.4.1/24 on the ext switch
//	l3ha-<name>-net1      controller + network node: eth1 10.99.0.1 (server) and 10.99.0.2 (VXLAN), ext0
//	l3ha-<name>-net2      network node: eth1 10.99.0.3, ext0
//	l3ha-<name>-compute1  compute node: eth1 10.99.0.4
//	l3ha-<name>-vm1       the instance: eth0 (made by `lab failover`) with its port's MAC and address
//
// ext0 has no address: the agent enslaves it (--physical-interface-mappings
// public:ext0) to the external network's bridge. The instance's veth peer,
// tap<port_id[:11]>, lives in compute1 and is plugged into the tenant
// network's bridge brq<net_id[:11]> once the compute agent made it (see
// docs/dataplane-conventions.md). Every device is created directly in its
// namespace — veth peers are created with their peer namespace set — so
// nothing, not even transiently, appears in the root namespace, and no real
// interface or root-namespace address is touched. Device names are at most 15
// characters and do not contain the lab name; the namespace names carry it.
//
// Agents make router namespaces with the suffix --netns-suffix
// -<name>-<node> (qrouter-<router_id>-lab-net1): all nodes share one kernel,
// and the lab name in the suffix keeps two labs on one machine apart. (The
// first design had "-<node>" only; two labs would then have deleted each
// other's routers.)
//
// # Processes
//
// The server runs in the controller's namespace:
//
//	l3ha server --bind 10.99.0.1:9696 --state-dir <dir>/server --agent-tokens-file <dir>/agent-tokens
//	    --auth-strategy noauth --l3-ha true --agent-down-time 10
//	    --min-l3-agents-per-router 2 --max-l3-agents-per-router 2
//
// (SQLite in <dir>/server; agent_down_time 10 s by default so that a dead
// node shows in the API quickly). Each node runs
//
//	l3ha agent --host <node> --server http://10.99.0.1:9696 --agent-token-file <dir>/agent-token-<node>
//	    --state-dir <dir>/nodes/<node> --local-ip 10.99.0.X --dataplane linux|fake
//	    --agent-mode legacy (network nodes) | dvr (compute1)
//	    --netns-suffix -<name>-<node>
//	    --physical-interface-mappings public:ext0 (network nodes)
//	    [--ha-driver D] [--ha-vrrp-advert-int S]
//
// The lab reads `l3ha agent --help` to learn which flags the agent accepts:
// with --dataplane fake it leaves out --netns-suffix and
// --physical-interface-mappings if the agent does not know them; with
// --dataplane linux they are required, as are --ha-driver and
// --ha-vrrp-advert-int whenever the lab was given them. If --agent-mode does
// not offer dvr, compute1 runs a legacy agent that the lab disables through
// the API (admin_state_up=false), which keeps routers off it. L3HA_*
// variables of the caller's environment are not passed on (they would
// override the lab's flags).
//
// Daemons are not started with `ip netns exec`: that gives the child a
// private mount namespace, and the router namespaces an agent bind-mounts
// under /run/netns would then exist only for that agent. Instead the lab
// forks each daemon from an OS thread that has entered the node's network
// namespace (setns on a locked thread, fork, thread restored): the child
// inherits that network namespace and nothing else. Each daemon gets its own
// session (it outlives `lab up` and no terminal signal reaches it), stdin
// from /dev/null, and its output in <dir>/logs/<process>.log.
//
// <dir> (default /run/l3ha-lab/<name>) holds lab.json: the settings and,
// for each daemon, its pid, start time (/proc/<pid>/stat field 22) and argv.
// A pid is signalled only while /proc/<pid>/cmdline and the start time still
// match, so a recycled pid is never killed.
//
// # Reaching the API
//
// The lab command runs in the root namespace, which has no route to
// 10.99.0.1 and must not get one. Its HTTP client therefore dials from
// inside the controller's namespace: DialContext runs net.Dialer on a
// goroutine locked to a thread that has entered l3ha-<name>-net1 (a socket
// belongs for life to the namespace it was created in); the thread is
// restored afterwards. No address, route or helper process is involved.
//
// # Down
//
// `lab down` stops the daemons recorded in lab.json (SIGTERM, SIGKILL after
// 5 s; agents before the server), then every other process whose network
// namespace is one of the lab's (found through /proc/<pid>/ns/net: pingers,
// keepalived, daemons whose record was lost), then any process whose
// command line names one of the lab's token files (a daemon whose namespace was
// deleted behind the lab's back), then deletes the lab's
// namespaces — l3ha-<name>-* and <kind>-<uuid>-<name>-<node> made by its
// agents — and what the lab made in its directory (lab.json, agent-tokens, agent-token-<node>,
// server/, nodes/, logs/ unless --keep-logs; the directory itself if that
// empties it, never a file of someone else's). It needs
// neither lab.json nor a running lab: after a crash, or run twice, it removes
// whatever is left and succeeds.
//
// # Failover
//
// `lab failover` (bringing the lab up first if it is not, and down at the
// end unless --keep) creates through the API: the external flat network
// "public" with subnet 172.24.4.0/24 (gateway 172.24.4.1, pool .100–.200),
// a tenant network with subnet 10.10.30.0/24, an HA router with its gateway
// on "public" and an interface on the tenant subnet, a port for the
// instance (device_owner compute:nova, binding:host_id compute1) and a
// floating IP for it. It plugs the instance in, waits until the instance
// pings 172.24.4.1 and the master is known both to the kernel (the one
// qrouter namespace whose qg- device holds the gateway address) and to the
// API (the one agent with ha_state active), starts `ping -D -O -i 0.01
// 172.24.4.1` in the instance, and injects the fault into the master:
//
//	ha-link     the router's ha- device is set down in the master's router namespace
//	node        eth1 and ext0 of the master node are set down and its agent is SIGKILLed
//	agent-stop  the master node's agent gets SIGTERM (a graceful stop)
//	agent-restart  the master node's agent gets SIGUSR2 (exit for a restart)
//	            and is started again with the same command line; expected:
//	            no transition, no lost ping (watched for --timeout, 10 s)
//	clock-jump  the machine's wall clock (every node's) set back 1 h, and
//	            forward to the true time again halfway through the watch
//	            (--timeout, 10 s); expected: no transition, no lost ping, no
//	            burst of agent CPU. A watchdog process restores the clock if
//	            the lab dies first; the clock is never set ahead of the true
//	            time. It moves the clock of everything on the machine.
//	switchover  no fault: an operator's switchover to the other node through
//	            the API (POST /v2.0/routers/{id}/switchover); expected: at
//	            most 2 lost pings, the new master stays
//
// failover_seconds runs from the fault until another node's router
// namespace holds the gateway address (netlink sockets kept open in each
// router namespace, polled every 2 ms); api_failover_seconds until the API
// shows another host active (polled every 100 ms); kernel_changes counts
// the changes of the set of gateway holders until the end of the run. Ping keeps running for
// --settle (2 s) after the failover, then is interrupted. Pings sent and lost
// come from the sequence numbers answered: requests sent after the last
// reply within the in-flight window (200 ms, or 5 intervals) are neither
// sent nor lost, so stopping ping does not count as loss. The result is a
// table (hosts with ha_state before and after, master before and after,
// failover seconds, pings) or, with --json, one object (see Result).
package lab
