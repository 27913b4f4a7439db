package state

import (
	"errors"
	"testing"
	"time"
)

func TestDeployCommands(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	del := func(id string, keys ...string) Command {
		return ReceiveDelivery{Delivery: Delivery{ID: id, Source: "gitlab", ReceivedBy: "node1", ReceivedAt: t0, Keys: keys}}
	}
	start := StartRollout{Rollout: Rollout{ID: "d-2", Phase: PhaseFetch, Driver: "node1", StartedAt: t0}}
	step := func(driver string, n int) Command {
		return RolloutStep{ID: "d-2", Driver: driver, Step: &Step{N: n, Action: "install", Node: "node2", State: StepStarted, At: t0}}
	}
	tests := []struct {
		name    string
		cmds    []Command
		wantErr error // of the last command
		check   func(t *testing.T, d *Deploy)
	}{
		{"a delivery is queued", []Command{del("d-1", "k1")}, nil, func(t *testing.T, d *Deploy) {
			if d.Deliveries[0].Status != DeliveryQueued || d.Deliveries[0].Seq != 1 {
				t.Errorf("%+v", d.Deliveries[0])
			}
		}},
		{"same delivery ID is a duplicate", []Command{del("d-1", "k1"), del("d-1", "k9")}, ErrDuplicate, nil},
		{"same dedupe key is a duplicate", []Command{del("d-1", "gitlab/commit/p@abc"), del("d-2", "gitlab/id/x", "gitlab/commit/p@abc")}, ErrDuplicate, nil},
		{"a delivery that failed before its release was known may come again", []Command{del("d-1", "k1"), del("d-9", "k9"),
			StartRollout{Rollout: Rollout{ID: "d-1", Phase: PhaseFetch, Driver: "node1", StartedAt: t0}},
			FinishRollout{ID: "d-1", Driver: "node1", Outcome: DeliveryFailed, Reason: "forge: 503", At: t0}, del("d-2", "k1")}, nil, nil},
		{"a delivery without ID is invalid", []Command{ReceiveDelivery{Delivery: Delivery{ReceivedAt: t0}}}, ErrInvalid, nil},
		{"starting supersedes older queued deliveries", []Command{del("d-1", "a"), del("d-2", "b"), start}, nil, func(t *testing.T, d *Deploy) {
			if d.Deliveries[0].Status != DeliverySuperseded || d.Deliveries[1].Status != DeliveryRunning {
				t.Errorf("%s %s", d.Deliveries[0].Status, d.Deliveries[1].Status)
			}
		}},
		{"one rollout at a time", []Command{del("d-1", "a"), del("d-2", "b"), start,
			StartRollout{Rollout: Rollout{ID: "d-1", Phase: PhaseFetch, StartedAt: t0}}}, ErrBusy, nil},
		{"only the driver journals", []Command{del("d-2", "b"), start, step("node2", 1)}, ErrStaleEpoch, nil},
		{"a new driver takes over, then the old one is fenced", []Command{del("d-2", "b"), start, step("node1", 1),
			RolloutStep{ID: "d-2", Driver: "witness", TakeOver: true}, step("node1", 2)}, ErrStaleEpoch, nil},
		{"steps are numbered in order", []Command{del("d-2", "b"), start, step("node1", 3)}, ErrInvalid, nil},
		{"finishing records the outcome and marks the release bad", []Command{del("d-2", "b"), start,
			RolloutStep{ID: "d-2", Driver: "node1", Package: "site", Version: "2", Digest: "abc"},
			FinishRollout{ID: "d-2", Driver: "node1", Outcome: DeliveryRolledBack, Reason: "gate", MarkBad: true, At: t0}}, nil,
			func(t *testing.T, d *Deploy) {
				if d.Rollout != nil || len(d.History) != 1 || d.Deliveries[0].Status != DeliveryRolledBack || d.Bad["abc"] == "" {
					t.Errorf("rollout %v history %d status %s bad %v", d.Rollout, len(d.History), d.Deliveries[0].Status, d.Bad)
				}
			}},
		{"a bad outcome is refused", []Command{del("d-2", "b"), start, FinishRollout{ID: "d-2", Driver: "node1", Outcome: "great"}}, ErrInvalid, nil},
		{"installed releases of a non-member are refused", []Command{SetInstalled{Node: "ghost"}}, ErrUnknownMember, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New()
			var idx uint64
			apply := func(c Command) error {
				idx++
				b, err := Encode(c)
				if err != nil {
					t.Fatal(err)
				}
				return m.Apply(idx, b)
			}
			for _, n := range []string{"node1", "node2"} {
				if err := apply(AddMember{Member: Member{Name: n, Role: RoleApp}}); err != nil {
					t.Fatal(err)
				}
			}
			var err error
			for i, c := range tt.cmds {
				err = apply(c)
				if i < len(tt.cmds)-1 && err != nil {
					t.Fatalf("command %d (%s): %v", i, c.Type(), err)
				}
			}
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("last command: %v; want %v", err, tt.wantErr)
			}
			if tt.check != nil {
				tt.check(t, m.View().Deploy())
			}
			// The domain survives a snapshot.
			b, err := m.Save()
			if err != nil {
				t.Fatal(err)
			}
			m2 := New()
			if err := m2.Restore(b); err != nil {
				t.Fatal(err)
			}
			if a, b := len(m.View().Deploy().Deliveries), len(m2.View().Deploy().Deliveries); a != b {
				t.Errorf("restored %d deliveries; had %d", b, a)
			}
		})
	}
}

func TestSetInstalledOnlyForOneself(t *testing.T) {
	c := SetInstalled{Node: "node2"}
	if err := c.Authorize(Member{Name: "node1", Role: RoleApp}); !errors.Is(err, ErrForbidden) {
		t.Errorf("node1 reporting node2's releases: %v; want ErrForbidden", err)
	}
	if err := c.Authorize(Member{Name: "node2", Role: RoleApp}); err != nil {
		t.Errorf("node2 reporting its own: %v", err)
	}
}

func TestWitnessMayNotProposeDeployCommands(t *testing.T) {
	m := New()
	for _, c := range []Command{ReceiveDelivery{}, StartRollout{}, RolloutStep{}, FinishRollout{}, SetDeployLock{}, SetDeployPolicy{}, SetInstalled{Node: "w"}} {
		b, _ := Encode(c)
		if err := m.Authorize(Member{Name: "w", Role: RoleWitness}, b); !errors.Is(err, ErrForbidden) {
			t.Errorf("witness proposing %s: %v; want ErrForbidden", c.Type(), err)
		}
	}
}

func TestOnlyTheLeaderDrivesRollouts(t *testing.T) {
	m := New()
	for _, c := range []Command{StartRollout{}, RolloutStep{}, FinishRollout{}} {
		b, _ := Encode(c)
		if err := m.Authorize(Member{Name: "node2", Role: RoleApp}, b); !errors.Is(err, ErrForbidden) {
			t.Errorf("an app node proposing %s through the leader: %v; want ErrForbidden", c.Type(), err)
		}
	}
}
