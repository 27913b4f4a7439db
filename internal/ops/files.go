package ops

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/files"
	"github.com/tandem-ha/tandem/internal/localapi"
)

// Files reports file replication and carries out its commands.
type Files struct {
	Name    string
	Machine *state.Machine
	// Local is this node's replication; nil without [[files]].
	Local func() files.Status
	// HolderFact returns the holder's latest liveness fact (the receivers'
	// lag), when this node is not the holder.
	HolderFact func(holder string) ([]byte, bool)
	// SyncAll forces a full reconcile; it reports whether this node is the
	// source.
	SyncAll func() bool
}

// Routes are the local API endpoints of file replication.
func (f *Files) Routes() []localapi.Route {
	return []localapi.Route{
		{Pattern: "GET /v1/files/status", Handler: localapi.Endpoint(func(ctx context.Context, _ localapi.Empty) (localapi.FilesStatus, error) {
			st := f.Status()
			if st == nil {
				return localapi.FilesStatus{}, errors.New("no [[files]] are declared on this node (see 'tandem config example')")
			}
			return *st, nil
		})},
		{Pattern: "POST /v1/files/sync", Handler: localapi.Endpoint(func(ctx context.Context, r localapi.FilesSyncRequest) (localapi.FilesSyncReply, error) {
			if f.SyncAll == nil {
				return localapi.FilesSyncReply{}, errors.New("no [[files]] are declared on this node")
			}
			if f.SyncAll() {
				return localapi.FilesSyncReply{Sending: true, Message: "full sync of every path to every receiver started; watch 'tandem files status'"}, nil
			}
			holder := f.Machine.View().Holder.Node
			return localapi.FilesSyncReply{Message: fmt.Sprintf("this node receives; run 'tandem files sync --full' on the holder (%s)", orNone(holder))}, nil
		})},
	}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// Status assembles file replication's status; nil without [[files]].
func (f *Files) Status() *localapi.FilesStatus {
	if f == nil || f.Local == nil {
		return nil
	}
	st := f.Local()
	s := f.Machine.View()
	h := s.Holder
	out := &localapi.FilesStatus{Node: f.Name, Holder: h.Node, Sending: st.Sending, Epoch: st.Epoch}
	var remote map[string][]files.PeerStatus
	if !st.Sending && h.Node != "" && h.Node != f.Name && f.HolderFact != nil {
		if b, ok := f.HolderFact(h.Node); ok {
			if _, dirs, err := files.ParseFact(b); err == nil {
				remote, out.FromHolder = dirs, true
			}
		}
	}
	for _, p := range st.Paths {
		fp := localapi.FilesPath{Path: p.Dir, LastScan: p.LastScan, SQLite: p.SQLite,
			Source: p.Source, SourceEpoch: p.SourceEpoch, PullMs: p.PullTook.Milliseconds()}
		for _, e := range []struct{ what, err string }{{"scan", p.ScanError}, {"watch", p.WatchError}, {"last pull", p.PullError}} {
			if e.err != "" {
				fp.Errors = append(fp.Errors, e.what+": "+e.err)
			}
		}
		if !p.LastPull.IsZero() {
			t := p.LastPull
			fp.LastPull = &t
		}
		peers := p.Peers
		if remote != nil {
			peers = remote[p.Dir]
		}
		for _, ps := range peers {
			n := localapi.FilesNode{Node: ps.Node, LagSeconds: ps.Lag.Seconds(), PendingBytes: ps.PendingBytes,
				LastError: ps.LastError, Syncs: ps.Syncs, Failures: ps.Failures}
			if !ps.LastSync.IsZero() {
				t := ps.LastSync
				n.LastSync = &t
			}
			fp.Nodes = append(fp.Nodes, n)
		}
		for _, q := range p.Quarantine {
			fp.Quarantine = append(fp.Quarantine, localapi.FilesQuarantine{Dir: q.Dir, Epoch: q.Epoch, Files: q.Files,
				Restore: restoreCommand(q.Dir, p.Dir, holderHost(s, f.Name)),
				Discard: "rm -r " + shellQuote(q.Dir)})
		}
		out.Paths = append(out.Paths, fp)
	}
	return out
}

// holderHost is where this node reaches the holder's copy: "" when it is
// the holder itself (or there is none), else the host of the holder's
// cluster address (which this node reaches already), or its name.
func holderHost(s state.Snapshot, self string) string {
	h := s.Holder.Node
	if h == "" || h == self {
		return ""
	}
	if host, _, err := net.SplitHostPort(s.Members[h].Address); err == nil && host != "" {
		return host
	}
	return h
}

// restoreCommand is how an operator puts quarantined files back: into the
// holder's copy (the only one that replicates; host "" is this node),
// never over newer files. It is one shell command, ready to paste.
func restoreCommand(qdir, dir, host string) string {
	src := shellQuote(strings.TrimSuffix(qdir, "/") + "/")
	dst := strings.TrimSuffix(dir, "/") + "/"
	if host == "" {
		return fmt.Sprintf("rsync -a --ignore-existing %s %s", src, shellQuote(dst))
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]" // an IPv6 address
	}
	return fmt.Sprintf("rsync -a --ignore-existing %s %s", src, shellQuote("root@"+host+":"+dst))
}

func shellQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t'\"\\$`!*?[]{}()<>|&;#~") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
