package files

import (
	"errors"
	"testing"

	"github.com/tandem-ha/tandem/internal/cluster/state"
)

func TestDirectionRules(t *testing.T) {
	active := func(node string, epoch uint64) state.Holder {
		return state.Holder{Node: node, Epoch: epoch, Active: true}
	}
	pending := func(node, prev string, epoch uint64, drain bool) state.Holder {
		return state.Holder{Node: node, Epoch: epoch, Previous: prev, Drain: drain}
	}
	tests := []struct {
		name string
		h    state.Holder
		held map[string]Held // what each node has configured
		// who may send, and in which epoch ("" = nobody)
		sender string
		epoch  uint64
	}{
		{"active holder sends", active("a", 3), map[string]Held{"a": {true, 3}}, "a", 3},
		{"holder not configured yet", active("a", 3), map[string]Held{"a": {false, 0}}, "", 0},
		{"holder configured in an older epoch", active("a", 3), map[string]Held{"a": {true, 2}}, "", 0},
		{"old holder that still believes never sends", active("b", 4), map[string]Held{"a": {true, 3}, "b": {true, 4}}, "b", 4},
		{"returning old holder, nothing configured", active("b", 4), map[string]Held{"a": {false, 0}, "b": {true, 4}}, "b", 4},
		{"planned move: previous holder flushes", pending("b", "a", 4, true), map[string]Held{"a": {true, 3}}, "a", 3},
		{"planned move: new holder waits", pending("b", "a", 4, true), map[string]Held{"b": {false, 0}}, "", 0},
		{"planned move: previous holder already released", pending("b", "a", 4, true), map[string]Held{"a": {false, 3}}, "", 0},
		{"unplanned move: nobody sends", pending("b", "a", 4, false), map[string]Held{"a": {true, 3}, "b": {false, 0}}, "", 0},
		{"no holder: nobody sends", state.Holder{Epoch: 5, Active: true}, map[string]Held{"a": {false, 0}}, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gotSender, gotEpoch := "", uint64(0)
			for _, n := range []string{"a", "b", "c"} {
				if e, ok := MaySend(n, tt.h, tt.held[n]); ok {
					if gotSender != "" {
						t.Fatalf("both %s and %s may send", gotSender, n)
					}
					gotSender, gotEpoch = n, e
				}
			}
			if gotSender != tt.sender || gotEpoch != tt.epoch {
				t.Fatalf("sender = %q in epoch %d; want %q in %d", gotSender, gotEpoch, tt.sender, tt.epoch)
			}
			// Every other node accepts exactly the sender in its epoch.
			for _, n := range []string{"a", "b", "c"} {
				for _, from := range []string{"a", "b", "c"} {
					for _, e := range []uint64{tt.h.Epoch - 1, tt.h.Epoch} {
						err := MayReceive(n, from, e, tt.h)
						src, srcEpoch, ok := Source(tt.h)
						want := ok && from == src && e == srcEpoch && n != from
						if (err == nil) != want {
							t.Errorf("MayReceive(%s from %s in %d) = %v; want ok=%v", n, from, e, err, want)
						}
						if err != nil && !errors.Is(err, ErrNotSource) {
							t.Errorf("MayReceive error %v is not ErrNotSource", err)
						}
					}
				}
			}
		})
	}
}

func TestQuarantineFor(t *testing.T) {
	tests := []struct {
		name   string
		last   Mark
		source string
		epoch  uint64
		want   string
	}{
		{"same source, same epoch: deletes propagate", Mark{"a", 3}, "a", 3, ""},
		{"never caught up: quarantine", Mark{}, "a", 3, "/srv/up.tandem-quarantine/epoch-3"},
		{"new holder after a failover", Mark{"a", 3}, "b", 4, "/srv/up.tandem-quarantine/epoch-4"},
		{"same holder, new epoch (it came back as holder)", Mark{"a", 3}, "a", 5, "/srv/up.tandem-quarantine/epoch-5"},
		{"returning old holder catching up", Mark{"b", 2}, "b", 4, "/srv/up.tandem-quarantine/epoch-4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := QuarantineFor("/srv/up/", tt.last, tt.source, tt.epoch); got != tt.want {
				t.Errorf("QuarantineFor = %q; want %q", got, tt.want)
			}
		})
	}
}

func FuzzParseFact(f *testing.F) {
	f.Add([]byte(`{"e":3,"d":[{"d":"/srv/up","p":[{"n":"b","l":120,"b":5,"e":true}]}]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, dirs, err := ParseFact(b)
		if err != nil {
			return
		}
		for _, peers := range dirs {
			for _, p := range peers {
				if p.Lag < 0 {
					t.Fatalf("negative lag %v", p.Lag)
				}
			}
		}
	})
}
