// Package ctsync replicates an HA router's connection tracking state — NAT
// mappings included — from its VRRP master to its backups over the router's
// HA network, so that an established connection survives a failover even
// with nf_conntrack_tcp_loose=0 and even when the new master would have
// chosen other SNAT ports.
//
// # Design
//
// One Syncer per HA router, in the agent, beside VRRP:
//
//   - The master listens to its router namespace's conntrack events
//     (ctnetlink NEW, UPDATE, DESTROY), batches them for FlushInterval and
//     multicasts them from the router's ha- device. It sends its whole
//     table when it becomes master and whenever a backup asks; every
//     RefreshInterval it renews the flows that could expire on a backup
//     before an event renews them (UDP, ICMP, closing TCP), and every tenth
//     time the whole table, which heals a lost datagram. A master with an
//     empty table and no event since sends nothing.
//   - A backup installs what it receives directly into its router
//     namespace's kernel table (create, or update when the entry exists), NAT
//     included (CTA_NAT_SRC/CTA_NAT_DST give the kernel the exact mapping the
//     master chose), with TCP window tracking relaxed (IP_CT_TCP_FLAG_BE_LIBERAL)
//     because the backup never saw the windows. The takeover therefore needs
//     no extra step: the new master's kernel already knows every flow.
//   - A node that becomes backup asks the master for its table at once.
//
// Sync traffic stays on the HA network: UDP to the group GroupFor(vrid) on
// Port, TTL 1, sent and received only on the router's ha- device, in the
// router namespace. Flows of the HA network itself (VRRP, the sync) are not
// synchronised.
//
// The wire format (wire.go) is pure and fuzzed; the kernel adapter
// (kernel.go) and the socket (transport.go) are thin and tested against a
// real kernel in throwaway namespaces.
package ctsync
