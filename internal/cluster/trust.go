package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/pki"
)

// A certificate from the cluster CA proves only that its holder was let in
// once, and every app node holds the CA key. So every connection, both
// ways, is checked against the replicated state: the name on the
// certificate must be a member, and its key the one pinned for that member
// (state.Member.Key). A removed member has no record and is refused at
// once; a certificate minted with the CA key for a member's name carries
// another key and is refused too. Members not pinned yet (joined before
// pins, until they report their key) are checked by name only.

// known returns what this node knows of member name: its record in the
// state, else, on a node whose state does not name it yet (freshly joined,
// or restarted from an older snapshot), the raft server or the member it
// was told of at join, with the key it was told of.
func (n *Node) known(name string) (state.Member, bool) {
	if m, ok := n.machine.View().Members[name]; ok {
		return m, true
	}
	if addr, ok := n.raftPeers()[name]; ok {
		var key string
		if j := n.joined.Load(); j != nil {
			key = j.keys[name]
		}
		return state.Member{Name: name, Address: addr, Key: key}, true
	}
	return state.Member{}, false
}

// checkPin refuses a verified certificate named for a known member whose
// key is not the one pinned for it. Whether the name may connect at all is
// the caller's check (raft: a raft server; API: a member).
func (n *Node) checkPin(cert *x509.Certificate) error {
	name := cert.Subject.CommonName
	m, ok := n.known(name)
	if !ok || m.Key == "" {
		return nil
	}
	if got := pki.Hash(cert); got != m.Key {
		return fmt.Errorf("%w: the certificate for %q carries key %s, but the cluster pins %s for it (a certificate minted with the CA key, or a node that must join again)",
			ErrUnauthenticated, name, got, m.Key)
	}
	return nil
}

// verifyClient is the listener's tls.Config.VerifyConnection: a client
// certificate, when given (its chain is verified by then), must carry the
// key pinned for its name.
func (n *Node) verifyClient(cs tls.ConnectionState) error {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return nil // anonymous: only /v1/ca and /v1/join will serve it
	}
	leaf := cs.VerifiedChains[0][0]
	if err := n.checkPin(leaf); err != nil {
		n.log.Warn("connection refused: the peer's key is not the one pinned for it", "peer", leaf.Subject.CommonName, "err", err)
		return err
	}
	return nil
}

// VerifyPeerAt checks, on the dialler's side, the node that answered at
// addr after the handshake verified its chain: its certificate must name
// the member known at addr and carry that member's pinned key. Every
// outgoing connection of the node (raft, API) passes it; other packages'
// dialers (liveness probes) should too.
func (n *Node) VerifyPeerAt(addr string, cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return fmt.Errorf("%w: the node at %s sent no certificate", ErrUnauthenticated, addr)
	}
	leaf := cs.PeerCertificates[0]
	name := leaf.Subject.CommonName
	m, ok := n.known(name)
	if !ok {
		n.log.Warn("peer refused: it is not a member", "peer", name, "addr", addr)
		return fmt.Errorf("%w: the node at %s is %q, which is not a member of this cluster", ErrUnauthenticated, addr, name)
	}
	if m.Address != addr && n.raftPeers()[name] != addr {
		n.log.Warn("peer refused: it is not the member known at its address", "peer", name, "addr", addr, "known_at", m.Address)
		return fmt.Errorf("%w: the node at %s is %q, which the cluster knows at %s", ErrUnauthenticated, addr, name, m.Address)
	}
	if err := n.checkPin(leaf); err != nil {
		n.log.Warn("peer refused: its key is not the one pinned for it", "peer", name, "addr", addr, "err", err)
		return err
	}
	return nil
}

// dialVerified dials addr with cfg and checks the answering node with
// VerifyPeerAt.
func (n *Node) dialVerified(ctx context.Context, d *net.Dialer, cfg *tls.Config, addr string) (*tls.Conn, error) {
	c, err := (&tls.Dialer{NetDialer: d, Config: cfg}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	tc := c.(*tls.Conn)
	if err := n.VerifyPeerAt(addr, tc.ConnectionState()); err != nil {
		tc.Close()
		return nil, err
	}
	return tc, nil
}

// isKnown reports whether name may open a stream: a member, or a raft
// server this node's state does not name yet (see known).
func (n *Node) isKnown(name string) bool {
	_, ok := n.known(name)
	return ok
}

// admitted checks again a connection the listener accepted: its peer must
// still be a raft server (raft) or known (streams), with its pinned key.
func (n *Node) admitted(isRaft bool, cert *x509.Certificate) error {
	name := cert.Subject.CommonName
	if isRaft && !n.raftPeer(name) {
		return fmt.Errorf("%w: %q is no raft server of this cluster", ErrUnauthenticated, name)
	}
	if !isRaft && !n.isKnown(name) {
		return fmt.Errorf("%w: %q is not a member of this cluster", ErrUnauthenticated, name)
	}
	return n.checkPin(cert)
}

// revokeInterval bounds how long an open raft or stream connection of a
// removed member outlives its removal from the raft configuration, which,
// unlike the state, notifies no one.
const revokeInterval = 2 * time.Second

// watchTrust closes open connections whose peer is no longer admitted,
// at each membership change of the state and every revokeInterval.
func (n *Node) watchTrust(ctx context.Context) {
	t := time.NewTicker(revokeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.machine.Changed(state.MembershipDomain):
		case <-t.C:
		}
		n.mux.revoke(n.admitted)
	}
}
