package files

import (
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"time"
)

// FactName is the liveness fact through which the source tells every
// node its receivers' lag, so 'tandem status' shows it anywhere.
const FactName = "files"

// maxFact bounds the fact's encoding: the liveness frame is shared.
const maxFact = 8 << 10

type factPeer struct {
	Node    string `json:"n"`
	LagMs   int64  `json:"l"`
	Pending int64  `json:"b,omitempty"`
	Err     bool   `json:"e,omitempty"`
}

type factDir struct {
	Dir   string     `json:"d"`
	Peers []factPeer `json:"p"`
}

type fact struct {
	Epoch uint64    `json:"e"`
	Dirs  []factDir `json:"d"`
}

// Fact is this node's contribution to its liveness replies: the
// receivers' lag while it is the source, nil otherwise. The mesh asks for
// it with every message, so while nothing changes it returns the encoding
// it made last time (callers must not modify it) instead of encoding again.
func (c *Controller) Fact() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.sending {
		return nil
	}
	now := c.o.Now()
	f := fact{Epoch: c.epoch, Dirs: make([]factDir, 0, len(c.order))}
	for _, dir := range c.order {
		p := c.paths[dir]
		d := factDir{Dir: dir, Peers: make([]factPeer, 0, len(p.links))}
		for _, name := range slices.Sorted(maps.Keys(p.links)) {
			l := p.links[name]
			d.Peers = append(d.Peers, factPeer{Node: name, LagMs: l.lagLocked(now).Milliseconds(),
				Pending: l.dirtyBytes + l.inflightBytes, Err: l.lastErr != ""})
		}
		f.Dirs = append(f.Dirs, d)
	}
	if c.lastFact.b != nil && c.lastFact.f.equal(&f) {
		return c.lastFact.b
	}
	b, err := json.Marshal(f)
	if err != nil || len(b) > maxFact {
		return nil
	}
	c.lastFact = encodedFact{f: f, b: b}
	return b
}

// encodedFact is the fact Fact encoded last.
type encodedFact struct {
	f fact
	b []byte
}

func (f *fact) equal(g *fact) bool {
	return f.Epoch == g.Epoch && slices.EqualFunc(f.Dirs, g.Dirs, func(a, b factDir) bool {
		return a.Dir == b.Dir && slices.Equal(a.Peers, b.Peers)
	})
}

// ParseFact decodes a source's fact (from a peer's liveness reply) into
// the receivers' lag per directory.
func ParseFact(b []byte) (epoch uint64, dirs map[string][]PeerStatus, err error) {
	if len(b) > maxFact {
		return 0, nil, errors.New("files fact too large")
	}
	var f fact
	if err := json.Unmarshal(b, &f); err != nil {
		return 0, nil, err
	}
	dirs = map[string][]PeerStatus{}
	for _, d := range f.Dirs {
		for _, p := range d.Peers {
			ps := PeerStatus{Node: p.Node, Lag: time.Duration(min(max(p.LagMs, 0), 1<<40)) * time.Millisecond, PendingBytes: p.Pending}
			if p.Err {
				ps.LastError = "the holder reports an error (see 'tandem files status' on it)"
			}
			dirs[d.Dir] = append(dirs[d.Dir], ps)
		}
	}
	return f.Epoch, dirs, nil
}
