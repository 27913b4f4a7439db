package cluster

import (
	"context"
	"errors"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
)

// reportSelf keeps this node's member record current with what only the
// node knows: the state level of its binary (so the leader refuses commands
// it could not apply) and its configured priority (so a priority changed in
// tandem.toml needs no new join). It proposes them once the node is a
// member; the priority once per start, so that a later change made through
// the cluster stands until the next restart. It reports its level again to
// each new leader, whose record may predate this node's upgrade: a node
// older than levels skips level reports and a snapshot it wrote lacks them.
// A member that joined before keys were pinned reports its own key once
// (state.SetMemberKey), so that from then on peers check it.
func (n *Node) reportSelf(ctx context.Context) {
	level := n.machine.Level()
	key := n.ownKey()
	var (
		reportedTo string           // the leader that last took our level
		retry      <-chan time.Time // set while waiting to retry
		warned     bool             // the priority refusal has been logged
		prioDone   bool             // the configured priority is recorded
		keyWarned  bool             // the key refusal or mismatch has been logged
	)
	// The wake-ups are taken before the view is read: a change between
	// reading the view and taking them would otherwise wake no one, and
	// this loop has no other timer.
	changed, leaderChanged := n.machine.Changed(state.MembershipDomain), n.LeadershipChanged()
	for first := true; ; first = false {
		if !first {
			select {
			case <-ctx.Done():
				return
			case <-changed:
			case <-leaderChanged:
			case <-retry:
				retry = nil
			}
			changed, leaderChanged = n.machine.Changed(state.MembershipDomain), n.LeadershipChanged()
		}
		if retry != nil {
			continue
		}
		me, ok := n.machine.View().Members[n.name]
		leader, _ := n.Leader()
		if !ok || leader == "" {
			continue
		}
		if me.Level != level || (leader != reportedTo && leader != n.name) {
			actx, cancel := context.WithTimeout(ctx, n.timing.ApplyTimeout)
			err := n.Apply(actx, state.SetMemberLevel{Name: n.name, Level: level})
			cancel()
			if err != nil {
				wait := 2 * time.Second
				if errors.Is(err, state.ErrInvalid) {
					// A leader older than levels cannot decode the report.
					wait = 10 * time.Second
				}
				n.log.Warn("reporting this node's state level failed; will retry", "level", level, "in", wait, "err", err)
				retry = time.After(wait)
				continue
			}
			reportedTo = leader
		}
		if me.Priority == n.priority {
			prioDone = true
		}
		if !prioDone {
			actx, cancel := context.WithTimeout(ctx, n.timing.ApplyTimeout)
			err := n.Apply(actx, state.SetMemberPriority{Name: n.name, Priority: n.priority})
			cancel()
			switch {
			case err == nil:
				prioDone = true
				n.log.Info("recorded this node's priority", "was", me.Priority, "now", n.priority)
			case errors.Is(err, state.ErrUpgradeNeeded) || errors.Is(err, state.ErrInvalid):
				// An older member (or leader) cannot take the command yet.
				if !warned {
					n.log.Warn("this node's priority cannot be recorded until every member runs this tandem; will retry",
						"priority", n.priority, "err", err)
					warned = true
				}
				retry = time.After(10 * time.Second)
			default:
				n.log.Warn("recording this node's priority failed; will retry", "priority", n.priority, "err", err)
				retry = time.After(2 * time.Second)
			}
		}
		switch {
		case me.Key == key:
		case me.Key != "":
			if !keyWarned {
				n.log.Error("the cluster pins another key for this node, so its peers refuse it: remove it (tandem remove) and join again",
					"pinned", me.Key, "own", key)
				keyWarned = true
			}
		case retry == nil:
			actx, cancel := context.WithTimeout(ctx, n.timing.ApplyTimeout)
			err := n.Apply(actx, state.SetMemberKey{Name: n.name, Key: key})
			cancel()
			switch {
			case err == nil:
				n.log.Info("pinned this node's key in the cluster", "key", key)
			case errors.Is(err, state.ErrUpgradeNeeded) || errors.Is(err, state.ErrInvalid):
				if !keyWarned {
					n.log.Warn("this node's key cannot be pinned until every member runs this tandem; will retry", "err", err)
					keyWarned = true
				}
				retry = time.After(10 * time.Second)
			default:
				n.log.Warn("pinning this node's key failed; will retry", "err", err)
				retry = time.After(2 * time.Second)
			}
		}
	}
}
