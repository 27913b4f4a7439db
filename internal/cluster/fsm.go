package cluster

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/hashicorp/raft"
	"github.com/tandem-ha/tandem/internal/cluster/state"
)

// fsm adapts *state.Machine to raft.FSM. Apply returns the machine's error
// (or nil) as the raft response, so the proposer sees rejections.
type fsm struct {
	m   *state.Machine
	log *slog.Logger
}

func (f fsm) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	before, _ := f.m.Undecodable()
	err := f.m.Apply(l.Index, l.Data)
	if after, typ := f.m.Undecodable(); after > before {
		// The leader refuses commands a member cannot apply, so this means a
		// newer node proposed without that check: this node's state now
		// lacks a change the others applied.
		f.log.Error("this node cannot apply a committed entry; its state differs from the cluster's until it is upgraded",
			"index", l.Index, "type", typ, "state_level", f.m.Level(), "err", err, "undecodable_total", after)
	}
	if err != nil {
		return err
	}
	return nil
}

func (f fsm) Snapshot() (raft.FSMSnapshot, error) {
	b, err := f.m.Save()
	if err != nil {
		return nil, fmt.Errorf("snapshot state: %w", err)
	}
	return snapshot(b), nil
}

func (f fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("restore state: %w", err)
	}
	return f.m.Restore(b)
}

type snapshot []byte

func (s snapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s snapshot) Release() {}
