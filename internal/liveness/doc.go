// Package liveness is the probe mesh every capability shares: each node
// probes every other member every Interval over one persistent mutual-TLS
// stream per peer, and answers their probes.
//
// A probe's answer proves the peer alive and carries two kinds of content:
//
//   - the mesh's own: how long ago the replier last heard from each voter,
//     from which a node's lease (LeaseValid) and a peer's provable death
//     (Dead) follow;
//   - facts: small named values each capability contributes (Contribute),
//     such as failover's health and holding, later delivery's installed
//     version or file replication's generation. Consumers read a peer's
//     latest facts by name (Peer) and are told of every message
//     (Subscribe), so several capabilities can follow the same replies.
//
// The package never imports raft, config or providers. Its seam to the
// network is Transport; StreamTransport and ServeConn are the production
// pair, speaking the compact binary frames of wire.go over connections the
// cluster's listener routes here by ALPN.
package liveness
