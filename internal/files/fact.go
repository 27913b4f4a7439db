package files

import (
	"encoding/json"
	"errors"
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
// receivers' lag while it is the source, nil otherwise.
func (c *Controller) Fact() []byte {
	st := c.Status()
	if !st.Sending {
		return nil
	}
	f := fact{Epoch: st.Epoch}
	for _, p := range st.Paths {
		d := factDir{Dir: p.Dir}
		for _, peer := range p.Peers {
			d.Peers = append(d.Peers, factPeer{Node: peer.Node, LagMs: peer.Lag.Milliseconds(), Pending: peer.PendingBytes, Err: peer.LastError != ""})
		}
		f.Dirs = append(f.Dirs, d)
	}
	b, err := json.Marshal(f)
	if err != nil || len(b) > maxFact {
		return nil
	}
	return b
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
