package files

import (
	"maps"
	"slices"
	"time"
)

// Status is this node's replication, for 'tandem files status' and the
// lag metrics.
type Status struct {
	Sending bool        `json:"sending"`
	Epoch   uint64      `json:"epoch,omitempty"` // the epoch sent in, while sending
	Paths   []DirStatus `json:"paths"`
}

// DirStatus is one declared directory.
type DirStatus struct {
	Dir        string       `json:"dir"`
	LastScan   time.Time    `json:"last_scan"`
	ScanError  string       `json:"scan_error,omitempty"`
	WatchError string       `json:"watch_error,omitempty"`
	SQLite     []string     `json:"sqlite,omitempty"` // databases left out
	Peers      []PeerStatus `json:"peers,omitempty"`  // while sending
	// The receiving side: the last catch-up.
	Source      string        `json:"source,omitempty"`
	SourceEpoch uint64        `json:"source_epoch,omitempty"`
	LastPull    time.Time     `json:"last_pull,omitempty"`
	PullFrom    string        `json:"pull_from,omitempty"`
	PullTook    time.Duration `json:"pull_took,omitempty"`
	PullError   string        `json:"pull_error,omitempty"`
	Quarantine  []Quarantine  `json:"quarantine,omitempty"`
}

// PeerStatus is one receiver of a directory, seen from the source.
type PeerStatus struct {
	Node string `json:"node"`
	// Lag is how long the oldest change not yet on the peer has waited
	// (0: caught up); PendingBytes the size of the changed files.
	Lag          time.Duration `json:"lag"`
	PendingBytes int64         `json:"pending_bytes"`
	LastSync     time.Time     `json:"last_sync,omitempty"`
	LastError    string        `json:"last_error,omitempty"`
	Syncs        int           `json:"syncs"`
	Failures     int           `json:"failures"`
}

// Status reports this node's replication now.
func (c *Controller) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.o.Now()
	st := Status{Sending: c.sending, Epoch: c.epoch}
	for _, dir := range c.order {
		p := c.paths[dir]
		ds := DirStatus{Dir: dir, LastScan: p.lastScan, ScanError: p.scanErr, WatchError: p.watchErr,
			SQLite: slices.Clone(p.sqlite), Source: p.mark.Source, SourceEpoch: p.mark.Epoch,
			LastPull: p.lastPull, PullFrom: p.pullFrom, PullTook: p.pullTook, PullError: p.pullErr,
			Quarantine: slices.Clone(p.quarantine)}
		if c.sending {
			for _, name := range slices.Sorted(maps.Keys(p.links)) {
				l := p.links[name]
				ds.Peers = append(ds.Peers, PeerStatus{Node: name, PendingBytes: l.dirtyBytes + l.inflightBytes, LastSync: l.lastOK,
					LastError: l.lastErr, Syncs: l.syncs, Failures: l.fails, Lag: l.lagLocked(now)})
			}
		}
		st.Paths = append(st.Paths, ds)
	}
	return st
}

// lagLocked is how long the oldest change not yet on the peer has waited;
// Controller.mu is held.
func (l *link) lagLocked(now time.Time) time.Duration {
	oldest := l.dirtySince
	if !l.inflightSince.IsZero() && (oldest.IsZero() || l.inflightSince.Before(oldest)) {
		oldest = l.inflightSince
	}
	if oldest.IsZero() {
		return 0
	}
	return max(now.Sub(oldest), 0)
}
