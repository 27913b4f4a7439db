// Package failover keeps the floating IP on exactly one healthy node.
//
// It builds on the liveness mesh (internal/liveness), to which it
// contributes its facts to every message: FactNode (this node's health,
// whether it holds the IP and the epoch it has applied) and FactLeader (the
// committed holder, while this node is the raft leader). Three parts
// cooperate on every node:
//
//   - The lease, from the mesh: a node's lease is the time since it sent a
//     message that a peer acknowledged; it needs acknowledgements from
//     enough peers to form a majority with itself within the lease.
//   - The designated controller (DC), which is the raft leader, decides
//     placement from its peers' facts (Decide) and commits it through raft.
//     It declares a holder dead only when enough voters to rule out a
//     majority for the holder report that they have not heard from it for
//     Lease+Margin: by then the holder has fenced itself.
//   - The holder loop on app nodes configures the IP only when the committed
//     state names this node as the active holder, the current raft leader has
//     confirmed that epoch, and the lease is valid; it drops the IP as soon as
//     any of these stops being true, at the lease's expiry at the latest.
//
// Holder transitions go to every Events subscriber. The package never
// imports raft, config or providers: its seams (Provider, Cluster, Health,
// Events) are declared here; Health uses health.Report, the one
// representation of a check's status.
package failover
