package cluster

import (
	"context"
	"maps"
	"net/http"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
)

// joinedSet is what a freshly joined node knows of the members before its
// raft log names any: the members it was told of at join, and those it has
// learnt since from them (see learnPeers).
type joinedSet struct {
	peers map[string]string // name -> address
	keys  map[string]string // name -> pinned key
}

// fresh reports whether this node's raft log names no server yet: it has
// just joined and not heard from the leader.
func (n *Node) fresh() bool {
	r := n.raftRef.Load()
	if r == nil {
		return true
	}
	f := r.GetConfiguration()
	return f.Error() != nil || len(f.Configuration().Servers) == 0
}

// learnPeers runs while this node is fresh. Members that joined after it
// (and may lead by now) are not among those it was told of at join, so it
// would refuse their raft connections and never catch up. It asks the
// members it knows, over mTLS with their pinned keys, for the current
// members, and admits those too.
func (n *Node) learnPeers(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for n.fresh() {
		for name, addr := range n.joined.Load().peers {
			if name == n.name {
				continue
			}
			members, err := n.fetchMembers(ctx, addr)
			if err != nil {
				n.log.Debug("learning the members failed", "from", name, "err", err)
				continue
			}
			n.admit(members)
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// admit adds members to the joined set (never removing any: a fresh node
// learns the rest from the log as soon as the leader reaches it).
func (n *Node) admit(members []state.Member) {
	cur := n.joined.Load()
	next := &joinedSet{peers: maps.Clone(cur.peers), keys: maps.Clone(cur.keys)}
	if next.peers == nil {
		next.peers = map[string]string{}
	}
	if next.keys == nil {
		next.keys = map[string]string{}
	}
	added := 0
	for _, m := range members {
		if _, ok := next.peers[m.Name]; ok || m.Name == "" || m.Address == "" {
			continue
		}
		next.peers[m.Name], added = m.Address, added+1
		if m.Key != "" {
			next.keys[m.Name] = m.Key
		}
	}
	if added > 0 {
		n.joined.Store(next)
		n.log.Info("learnt members that joined after this node", "count", added)
	}
}

func (n *Node) fetchMembers(ctx context.Context, addr string) ([]state.Member, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var members []state.Member
	return members, requestJSON(ctx, n.client, http.MethodGet, addr, "/v1/members", nil, &members)
}

// handleMembers lists the members for another member (a fresh node
// learning who may lead it).
func (n *Node) handleMembers(w http.ResponseWriter, _ *http.Request) {
	v := n.machine.View()
	out := make([]state.Member, 0, len(v.Members))
	for _, name := range v.Names() {
		out = append(out, v.Members[name])
	}
	writeJSON(w, out)
}
