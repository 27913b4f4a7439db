package cluster

import (
	"fmt"
	"io"

	"github.com/hashicorp/raft"
	"github.com/tandem-ha/tandem/internal/cluster/state"
)

// fsm adapts *state.Machine to raft.FSM. Apply returns the machine's error
// (or nil) as the raft response, so the proposer sees rejections.
type fsm struct{ m *state.Machine }

func (f fsm) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	if err := f.m.Apply(l.Index, l.Data); err != nil {
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
