package ops

import (
	"context"
	"errors"
	"fmt"
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
	// Restore, on the holder, adds what node from's quarantine of epoch
	// beside path holds and the holder's copy lacks.
	Restore func(ctx context.Context, from, path string, epoch uint64) (int64, error)
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
		{Pattern: "POST /v1/files/restore", Handler: localapi.Endpoint(func(ctx context.Context, r localapi.FilesRestoreRequest) (localapi.FilesRestoreReply, error) {
			if f.Restore == nil {
				return localapi.FilesRestoreReply{}, errors.New("no [[files]] are declared on this node")
			}
			if r.From == "" || r.Epoch == 0 || r.Path == "" {
				return localapi.FilesRestoreReply{}, errors.New("restore needs the node that keeps the quarantine, its epoch and the path (as 'tandem status' prints them)")
			}
			n, err := f.Restore(ctx, r.From, r.Path, r.Epoch)
			if err != nil {
				return localapi.FilesRestoreReply{}, err
			}
			return localapi.FilesRestoreReply{Files: n, Message: fmt.Sprintf("%d files restored from %s's quarantine of epoch %d into %s; they replicate now. Discard the quarantine on %s once you are satisfied.", n, r.From, r.Epoch, r.Path, r.From)}, nil
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
	h := f.Machine.View().Holder
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
			on, restore := restoreCommand(q.Dir, p.Dir, q.Epoch, h.Node, f.Name)
			fp.Quarantine = append(fp.Quarantine, localapi.FilesQuarantine{Dir: q.Dir, Epoch: q.Epoch, Files: q.Files,
				Restore: restore, RestoreOn: on, Discard: "rm -r " + shellQuote(q.Dir)})
		}
		out.Paths = append(out.Paths, fp)
	}
	return out
}

// restoreCommand is how an operator puts quarantined files back into the
// holder's copy (the only one that replicates), never over files it has,
// and the node to run it on: a plain rsync here when this node holds
// (or nobody does), else 'tandem files restore' on the holder, which
// fetches the quarantine over the cluster's mTLS (no SSH between nodes).
func restoreCommand(qdir, dir string, epoch uint64, holder, self string) (on, cmd string) {
	if holder == "" || holder == self {
		return self, fmt.Sprintf("rsync -a --ignore-existing %s %s",
			shellQuote(strings.TrimSuffix(qdir, "/")+"/"), shellQuote(strings.TrimSuffix(dir, "/")+"/"))
	}
	return holder, fmt.Sprintf("tandem files restore --from %s --epoch %d %s", self, epoch, shellQuote(dir))
}

func shellQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t'\"\\$`!*?[]{}()<>|&;#~") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
