// Package liveness is the probe mesh every capability shares: each node
// sends every other member a message every Interval over one persistent
// mutual-TLS stream per pair of nodes.
//
// A message is a probe and an answer in one: it acknowledges the latest
// message its sender received from the receiver, which proves to the
// receiver that the sender heard it since it sent that message, so each
// pair of nodes exchanges two messages an interval where a probe and a
// reply each way took four. A message carries two kinds of content:
//
//   - the mesh's own: how long ago the sender last heard from each voter,
//     from which, with the acknowledgements, a node's lease (LeaseValid)
//     and a peer's provable death (Dead) follow;
//   - facts: small named values each capability contributes (Contribute),
//     such as failover's health and holding, later delivery's installed
//     version or file replication's generation. Consumers read a peer's
//     latest facts by name (Peer) and are told of every message
//     (Subscribe), so several capabilities can follow the same messages.
//
// The package never imports raft, config or providers. Its seam to the
// network is Transport, which dials; StreamTransport and ServeConn are the
// production pair, speaking the compact binary frames of wire.go over
// connections the cluster's listener routes here by ALPN. During a rolling
// upgrade, ServeConnV1 answers the probes of nodes that still run the older
// request-and-reply protocol, and the mesh probes them the old way in
// turn, whatever their names, so that their replies extend this node's
// lease and bring their facts.
package liveness
