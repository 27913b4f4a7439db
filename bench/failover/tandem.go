package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/tandem-ha/tandem/internal/lab"
	"github.com/tandem-ha/tandem/internal/labcluster"
	"github.com/tandem-ha/tandem/internal/localapi"
)

// tandemSystem is tandem as labcluster.Provision set it up.
type tandemSystem struct{ b *bench }

func (t *tandemSystem) Name() string { return systemTandem }

// Ready asks the witness, which no trial touches, for the cluster's view:
// three reachable voters, both app nodes healthy, an active holder that
// really has the VIP (and nobody else), and the cool-off over since the
// last move.
func (t *tandemSystem) Ready(ctx context.Context, lastMove time.Time) (holder, note string, err error) {
	var last string
	for {
		st, serr := labcluster.Status(ctx, t.b.lab, lab.WitnessName)
		if serr != nil {
			last = serr.Error()
		} else {
			last = tandemNotReady(st, t.b.vip.holders(), lastMove, t.b.o.cooloff, time.Now())
			if last == "" {
				note = ""
				if st.Raft.Leader == st.Holder.Node || st.Raft.Leader == memberAddr(st, st.Holder.Node) {
					note = "DC"
				}
				return st.Holder.Node, note, nil
			}
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return "", "", fmt.Errorf("tandem not ready: %s", last)
		}
	}
}

func memberAddr(st localapi.Status, name string) string {
	for _, m := range st.Members {
		if m.Name == name {
			return m.Address
		}
	}
	return ""
}

// tandemNotReady says why the cluster is not ready for the next fault, or
// "" when it is.
func tandemNotReady(st localapi.Status, vipHolders []string, lastMove time.Time, cooloff time.Duration, now time.Time) string {
	if len(st.Members) != 3 {
		return fmt.Sprintf("%d members, want 3", len(st.Members))
	}
	for _, m := range st.Members {
		if m.Suffrage != "voter" || !m.Reachable {
			return fmt.Sprintf("%s is not a reachable voter", m.Name)
		}
		if m.Role == "app" && !m.Healthy {
			return fmt.Sprintf("%s is unhealthy", m.Name)
		}
	}
	if st.Mode != "auto" {
		return "mode is " + st.Mode
	}
	if !st.Holder.Active || st.Holder.Node == "" {
		return fmt.Sprintf("no active holder (holder %q, active %v)", st.Holder.Node, st.Holder.Active)
	}
	if !slices.Equal(vipHolders, []string{st.Holder.Node}) {
		return fmt.Sprintf("holder is %s but the VIP is on %v", st.Holder.Node, vipHolders)
	}
	if st.LastFailover != nil && st.LastFailover.At.After(lastMove) {
		lastMove = st.LastFailover.At
	}
	if wait := cooloff - now.Sub(lastMove); wait > 0 {
		return fmt.Sprintf("cool-off: %v to go", wait.Round(time.Millisecond))
	}
	return ""
}
