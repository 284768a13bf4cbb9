// Package linux is a set of thin adapters over the Linux kernel for the agent's
// data plane: named network namespaces, links (bridge, VXLAN with head-end
// replication FDB entries, veth pairs), addresses, routes, sysctls, the
// per-router nftables NAT table, and the node's bridge-family table that
// keeps routers' gratuitous ARP from each other (AnnouncementTable).
//
// It holds no business logic: the data-plane reconciler decides what must
// exist, this package makes it so. Every mutating call converges ("Ensure",
// "Sync"): it adds what is missing, removes what is extra and leaves what is
// already right untouched, so that calling it again changes nothing. This
// matters for VRRP masters: an address or route that is already right is never
// removed and re-added.
//
// # Namespaces
//
// Every function takes the network namespace it works in as its first
// argument. NodeNS ("") is the node namespace: the one the process was in when
// this package was initialised (on a real node the root namespace, in the lab
// a namespace such as l3ha-lab-net1). Any other value names a namespace under
// /run/netns, as `ip netns` does; CreateNamespace makes them. Kernel objects
// are reached through netlink sockets opened in the target namespace, so no
// goroutine or thread of the caller ever changes namespace except inside Do.
//
// Functions are safe for concurrent use; converging the same object from two
// goroutines at once is the caller's business to avoid.
//
// All netlink work goes through github.com/vishvananda/netlink; nftables
// through github.com/google/nftables (one netlink batch per change, which the
// kernel commits as a single transaction). No command is forked.
package linux
