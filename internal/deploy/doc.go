// Package deploy is tandem's continuous delivery: it takes a build from a
// webhook, the poll fallback or an operator, and rolls it out node by node
// behind the floating IP, health-gated, rolling back by itself on failure.
//
// The parts, and where they run:
//
//	Intake   every app node: the webhook listener. It verifies a delivery
//	         (internal/webhook), commits it to the cluster and answers
//	         202 within a second; the commit is what makes it durable (I5).
//	Poller   the IP holder: asks the forges for builds no webhook announced.
//	Driver   the raft leader: starts the newest queued delivery (older ones
//	         are superseded) and drives the rollout. Every step is
//	         journaled in the replicated state before and after it runs,
//	         and every decision is derived again from that state, so a new
//	         leader resumes or rolls back where the old one stopped.
//	Local    every app node: fetches and verifies a release
//	         (internal/artifact), keeps it in the content-addressed store,
//	         copies it to peers over the cluster's mTLS, installs it
//	         (Installer), gates it on health, and reports what it runs.
//
// A rollout installs the nodes that do not hold the IP first, then moves
// the IP to an upgraded node as a planned move (it drains), then upgrades
// the former holder. Any failure rolls every node back to the release it
// had, the IP staying on or returning to a node on the old version.
package deploy
