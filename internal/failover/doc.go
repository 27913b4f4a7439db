// Package failover keeps the floating IP on exactly one healthy node.
//
// Three parts cooperate on every node:
//
//   - The mesh: every node probes every other member over mTLS every
//     ProbeInterval. A probe reply carries the peer's health, whether it has
//     the IP configured, and how long ago it last heard from each other
//     node. A node's lease is the time since it sent a probe that a peer
//     answered; it needs answers from enough peers to form a majority with
//     itself within Lease.
//   - The designated controller (DC), which is the raft leader, decides
//     placement from the probe replies (Decide) and commits it through raft.
//     It declares a holder dead only when enough voters to rule out a
//     majority for the holder report that they have not heard from it for
//     Lease+Margin: by then the holder has fenced itself.
//   - The holder loop on app nodes configures the IP only when the committed
//     state names this node as the active holder, the current raft leader has
//     confirmed that epoch, and the lease is valid; it drops the IP as soon as
//     any of these stops being true.
//
// The package never imports raft, config or providers: its seams (Provider,
// Cluster, Health, Hooks) are declared here and use standard types.
package failover
