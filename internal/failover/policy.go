package failover

import (
	"context"
	"errors"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
)

// JoinRule refuses a cluster of exactly two voters that are both app nodes
// when the IP is on-link: with two voters neither side of a partition has a
// majority, and there is no cloud provider to arbitrate.
func JoinRule(onLink bool) func(current []state.Member, joining state.Member) error {
	return func(current []state.Member, joining state.Member) error {
		if !onLink {
			return nil
		}
		all := append(append([]state.Member(nil), current...), joining)
		apps := 0
		for _, m := range all {
			if m.Role == state.RoleApp {
				apps++
			}
		}
		if len(all) == 2 && apps == 2 {
			return errors.New("a cluster of two app nodes and no witness has no fault tolerance, and an on-link VIP " +
				"has no provider to break ties; join a witness first ('tandem join --witness' on a small third machine), then this node")
		}
		return nil
	}
}

// publishPolicy makes this app node's placement policy the cluster's, so
// the designated controller applies it even when it is the witness.
func (n *Node) publishPolicy(ctx context.Context) {
	want := n.o.Policy
	for {
		cur := n.o.Machine.View().Policy
		if cur != nil && *cur == want {
			return
		}
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := n.o.Cluster.Apply(actx, state.SetPolicy{Policy: want})
		cancel()
		if err == nil {
			if cur != nil {
				n.log.Warn("this node's [failover] policy differed from the cluster's; published this one (keep tandem.toml alike on all app nodes)",
					"was", *cur, "now", want)
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}
