package failover

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
)

// ErrNoStandby means a planned move found no healthy node to move to.
var ErrNoStandby = errors.New("no healthy standby to move to")

// Move is a completed planned move.
type Move struct {
	From  string
	To    string
	Epoch uint64
	Took  time.Duration
}

// PlanSwitchover checks a planned move of the IP to node to ("" for the
// best healthy standby) against the committed state and the DC's views. It
// returns the command to commit, or ready=false while the target is not
// healthy yet, or an error when the move can never happen as asked.
func PlanSwitchover(now time.Time, s state.Snapshot, views map[string]NodeView, to string) (cmd state.SetHolder, ready bool, err error) {
	from := s.Holder.Node
	if to != "" {
		m, ok := s.Members[to]
		switch {
		case !ok:
			return cmd, false, fmt.Errorf("%q is not a member (see 'tandem status')", to)
		case m.Role != state.RoleApp:
			return cmd, false, fmt.Errorf("%q is a witness and cannot hold the IP", to)
		case m.Pending:
			return cmd, false, fmt.Errorf("%q has joined but is not a voter yet; wait until 'tandem status' counts it", to)
		case to == from:
			return cmd, false, fmt.Errorf("%q already holds the IP", to)
		}
	} else {
		// Penalised nodes come last, but an operator's move may still
		// pick one when nothing else is healthy.
		fails := NodeFailures(now, s, EffectivePolicy(s, state.Policy{}))
		to, _ = candidate(s, views, from, fails)
	}
	if to == "" {
		return cmd, false, nil
	}
	v := views[to]
	if !v.Reachable || !v.Healthy || v.Dead {
		return cmd, false, nil
	}
	return state.SetHolder{Node: to, PrevEpoch: s.Holder.Epoch, Active: from == "",
		Reason: "switchover", FaultAt: now, At: now, Drain: true}, true, nil
}

// Switchover moves the IP to node to ("" for the best healthy standby) as a
// planned move: it waits for the target to be healthy, commits the move,
// lets the previous holder drain and waits until the new holder is cleared
// to act. Any node may call it; the epoch compare-and-set in the state makes
// it safe against a concurrent decision of the DC.
func (n *Node) Switchover(ctx context.Context, to string, timeout time.Duration) (Move, error) {
	start := time.Now()
	if timeout <= 0 {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var cmd state.SetHolder
	var from string
	for {
		s := n.o.Machine.View()
		from = s.Holder.Node
		c, ready, err := PlanSwitchover(time.Now(), s, n.Views(time.Now(), s.Holder.Epoch), to)
		if err != nil {
			return Move{}, fmt.Errorf("switchover: %w", err)
		}
		if ready {
			cmd = c
			break
		}
		select {
		case <-ctx.Done():
			if to == "" {
				return Move{}, fmt.Errorf("switchover: %w; check 'tandem status'", ErrNoStandby)
			}
			return Move{}, fmt.Errorf("switchover: %s did not become healthy within %v; check 'tandem status'", to, timeout)
		case <-n.o.Machine.Changed(state.FailoverDomain):
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err := n.o.Cluster.Apply(ctx, cmd); err != nil {
		if errors.Is(err, state.ErrStaleEpoch) {
			return Move{}, errors.New("switchover: the holder changed meanwhile; check 'tandem status' and retry")
		}
		return Move{}, fmt.Errorf("switchover to %s: %w", cmd.Node, err)
	}
	n.pokeController()
	epoch := cmd.PrevEpoch + 1
	for {
		h := n.o.Machine.View().Holder
		if h.Epoch > epoch {
			return Move{}, fmt.Errorf("switchover: superseded by epoch %d (holder %s)", h.Epoch, h.Node)
		}
		active := h.Epoch == epoch && h.Active
		// Success is the new holder serving the IP, not just the commit:
		// a holder that holds back (no lease, no confirmation) must show.
		if active && n.serving(cmd.Node, epoch) {
			return Move{From: from, To: cmd.Node, Epoch: epoch, Took: time.Since(start)}, nil
		}
		select {
		case <-ctx.Done():
			if active {
				return Move{}, fmt.Errorf("switchover: committed epoch %d, but %s does not report the IP configured; see 'tandem status' on %s for why it holds back",
					epoch, cmd.Node, cmd.Node)
			}
			return Move{}, fmt.Errorf("switchover: committed epoch %d but %s has not released the IP yet", epoch, from)
		case <-n.o.Machine.Changed(state.FailoverDomain):
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// serving reports whether node says it has the IP configured at epoch (or
// a later one): this node from its own state, a peer from its latest
// liveness reply.
func (n *Node) serving(node string, epoch uint64) bool {
	if node == n.o.Name {
		n.mu.Lock()
		defer n.mu.Unlock()
		return n.holding && n.heldEpoch >= epoch
	}
	f, _, ok := n.peerFacts(node, false)
	return ok && f.Holding && f.Epoch >= epoch
}

// HandOff moves the IP to a healthy standby if this node holds it, so that
// a planned stop or leave costs no failover.
func (n *Node) HandOff(ctx context.Context, timeout time.Duration) (Move, bool, error) {
	if n.o.Machine.View().Holder.Node != n.o.Name {
		return Move{}, false, nil
	}
	mv, err := n.Switchover(ctx, "", timeout)
	return mv, err == nil, err
}
