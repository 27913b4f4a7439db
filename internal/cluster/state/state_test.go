package state

import (
	"errors"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func mustApply(t *testing.T, m *Machine, idx uint64, c Command) error {
	t.Helper()
	b, err := Encode(c)
	if err != nil {
		t.Fatalf("Encode(%T) = %v", c, err)
	}
	return m.Apply(idx, b)
}

func threeNodes(t *testing.T) *Machine {
	m := New()
	for i, mem := range []Member{{Name: "node1", Role: RoleApp}, {Name: "node2", Role: RoleApp}, {Name: "witness", Role: RoleWitness}} {
		if err := mustApply(t, m, uint64(i+1), AddMember{Member: mem}); err != nil {
			t.Fatalf("AddMember(%s) = %v", mem.Name, err)
		}
	}
	return m
}

func TestHolderTransitions(t *testing.T) {
	tests := []struct {
		name    string
		cmds    []Command
		wantErr error // of the last command
		want    Holder
	}{
		{
			name: "first placement active",
			cmds: []Command{SetHolder{Node: "node1", PrevEpoch: 0, Active: true, Reason: "initial", At: t0}},
			want: Holder{Node: "node1", Epoch: 1, Active: true, Since: t0},
		},
		{
			name: "stale epoch rejected",
			cmds: []Command{
				SetHolder{Node: "node1", PrevEpoch: 0, Active: true, At: t0},
				SetHolder{Node: "node2", PrevEpoch: 0, Active: true, At: t0},
			},
			wantErr: ErrStaleEpoch,
			want:    Holder{Node: "node1", Epoch: 1, Active: true, Since: t0},
		},
		{
			name: "witness never holds",
			cmds: []Command{
				SetHolder{Node: "witness", PrevEpoch: 0, Active: true, At: t0},
			},
			wantErr: ErrInvalid,
			want:    Holder{},
		},
		{
			name: "unknown member rejected",
			cmds: []Command{
				SetHolder{Node: "node9", PrevEpoch: 0, Active: true, At: t0},
			},
			wantErr: ErrUnknownMember,
			want:    Holder{},
		},
		{
			name: "pending move activated by release of previous holder",
			cmds: []Command{
				SetHolder{Node: "node1", PrevEpoch: 0, Active: true, At: t0},
				SetHolder{Node: "node2", PrevEpoch: 1, Active: false, At: t0.Add(time.Second)},
				Released{Node: "node1", Epoch: 2, At: t0.Add(2 * time.Second)},
			},
			want: Holder{Node: "node2", Epoch: 2, Active: true, Previous: "node1", Since: t0.Add(2 * time.Second)},
		},
		{
			name: "release by another node does not activate",
			cmds: []Command{
				SetHolder{Node: "node1", PrevEpoch: 0, Active: true, At: t0},
				SetHolder{Node: "node2", PrevEpoch: 1, Active: false, At: t0.Add(time.Second)},
				Released{Node: "node2", Epoch: 2, At: t0.Add(2 * time.Second)},
			},
			want: Holder{Node: "node2", Epoch: 2, Active: false, Previous: "node1", Since: t0.Add(time.Second)},
		},
		{
			name: "activate for an old epoch is rejected",
			cmds: []Command{
				SetHolder{Node: "node1", PrevEpoch: 0, Active: false, At: t0},
				SetHolder{Node: "node2", PrevEpoch: 1, Active: false, At: t0},
				Activate{Epoch: 1, At: t0},
			},
			wantErr: ErrStaleEpoch,
			want:    Holder{Node: "node2", Epoch: 2, Active: false, Previous: "node1", Since: t0},
		},
		{
			name: "planned move drains until activated",
			cmds: []Command{
				SetHolder{Node: "node1", PrevEpoch: 0, Active: true, At: t0},
				SetHolder{Node: "node2", PrevEpoch: 1, Active: false, Drain: true, At: t0.Add(time.Second)},
			},
			want: Holder{Node: "node2", Epoch: 2, Active: false, Previous: "node1", Since: t0.Add(time.Second), Drain: true},
		},
		{
			name: "activation ends the drain",
			cmds: []Command{
				SetHolder{Node: "node1", PrevEpoch: 0, Active: true, At: t0},
				SetHolder{Node: "node2", PrevEpoch: 1, Active: false, Drain: true, At: t0.Add(time.Second)},
				Released{Node: "node1", Epoch: 2, At: t0.Add(2 * time.Second)},
			},
			want: Holder{Node: "node2", Epoch: 2, Active: true, Previous: "node1", Since: t0.Add(2 * time.Second)},
		},
		{
			name: "an active move has nothing to drain",
			cmds: []Command{
				SetHolder{Node: "node1", PrevEpoch: 0, Active: true, Drain: true, At: t0},
			},
			want: Holder{Node: "node1", Epoch: 1, Active: true, Since: t0},
		},
		{
			name: "removing the holder clears it in a new epoch",
			cmds: []Command{
				SetHolder{Node: "node1", PrevEpoch: 0, Active: true, At: t0},
				RemoveMember{Name: "node1", At: t0.Add(time.Minute)},
			},
			want: Holder{Epoch: 2, Previous: "node1", Since: t0.Add(time.Minute)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := threeNodes(t)
			var err error
			for i, c := range tt.cmds {
				err = mustApply(t, m, uint64(10+i), c)
				if i < len(tt.cmds)-1 && err != nil {
					t.Fatalf("command %d (%T) = %v", i, c, err)
				}
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("last command error = %v; want %v", err, tt.wantErr)
			}
			if got := m.View().Holder; got != tt.want {
				t.Errorf("holder = %+v; want %+v", got, tt.want)
			}
		})
	}
}

func TestMoveHistoryAndDuration(t *testing.T) {
	m := threeNodes(t)
	fault := t0.Add(-800 * time.Millisecond)
	cmds := []Command{
		SetHolder{Node: "node1", PrevEpoch: 0, Active: true, Reason: "initial", At: t0},
		SetHolder{Node: "node2", PrevEpoch: 1, Reason: "unhealthy", FaultAt: fault, At: t0.Add(time.Hour)},
		Activate{Epoch: 2, At: t0.Add(time.Hour + 100*time.Millisecond)},
	}
	for i, c := range cmds {
		if err := mustApply(t, m, uint64(10+i), c); err != nil {
			t.Fatalf("%T = %v", c, err)
		}
	}
	v := m.View()
	last, ok := v.LastMove()
	if !ok || last.From != "node1" || last.To != "node2" || last.Reason != "unhealthy" {
		t.Fatalf("LastMove() = %+v, %v", last, ok)
	}
	if got, want := last.Duration(), time.Hour+900*time.Millisecond; got != want {
		t.Errorf("Duration() = %v; want %v", got, want)
	}
	if got := v.MovesSince(t0.Add(30 * time.Minute)); got != 1 {
		t.Errorf("MovesSince(+30m) = %d; want 1", got)
	}
	if got := v.MovesSince(t0); got != 2 {
		t.Errorf("MovesSince(t0) = %d; want 2", got)
	}
}

func TestTokens(t *testing.T) {
	tests := []struct {
		name  string
		token Token
		use   UseToken
		uses  int // how many times to use it
		want  error
	}{
		{"valid", Token{ID: "a", SecretHash: "h", Expires: t0.Add(time.Hour), UsesLeft: 1}, UseToken{ID: "a", SecretHash: "h", At: t0}, 1, nil},
		{"wrong secret", Token{ID: "a", SecretHash: "h", Expires: t0.Add(time.Hour), UsesLeft: 1}, UseToken{ID: "a", SecretHash: "x", At: t0}, 1, ErrBadToken},
		{"unknown id", Token{ID: "a", SecretHash: "h", Expires: t0.Add(time.Hour), UsesLeft: 1}, UseToken{ID: "b", SecretHash: "h", At: t0}, 1, ErrBadToken},
		{"expired", Token{ID: "a", SecretHash: "h", Expires: t0, UsesLeft: 1}, UseToken{ID: "a", SecretHash: "h", At: t0}, 1, ErrTokenExpired},
		{"used up", Token{ID: "a", SecretHash: "h", Expires: t0.Add(time.Hour), UsesLeft: 2}, UseToken{ID: "a", SecretHash: "h", At: t0}, 3, ErrTokenUsedUp},
		{"unlimited", Token{ID: "a", SecretHash: "h", Expires: t0.Add(time.Hour), UsesLeft: -1}, UseToken{ID: "a", SecretHash: "h", At: t0}, 5, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New()
			if err := mustApply(t, m, 1, AddToken{Token: tt.token}); err != nil {
				t.Fatalf("AddToken = %v", err)
			}
			var err error
			for i := 0; i < tt.uses; i++ {
				err = mustApply(t, m, uint64(2+i), tt.use)
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("UseToken = %v; want %v", err, tt.want)
			}
		})
	}
}

func TestSnapshotRoundTripAndDeterminism(t *testing.T) {
	a := threeNodes(t)
	cmds := []Command{
		SetHolder{Node: "node1", PrevEpoch: 0, Active: true, At: t0},
		SetMode{Mode: ModeMaintenance},
		AddToken{Token: Token{ID: "t", SecretHash: "h", Expires: t0.Add(time.Hour), UsesLeft: 3}},
	}
	for i, c := range cmds {
		if err := mustApply(t, a, uint64(10+i), c); err != nil {
			t.Fatalf("%T = %v", c, err)
		}
	}
	saved, err := a.Save()
	if err != nil {
		t.Fatal(err)
	}
	b := New()
	if err := b.Restore(saved); err != nil {
		t.Fatal(err)
	}
	again, _ := b.Save()
	if string(saved) != string(again) {
		t.Errorf("Save after Restore differs:\n%s\n%s", saved, again)
	}
	if b.View().Mode != ModeMaintenance || b.View().Holder.Node != "node1" || b.View().Index != 12 {
		t.Errorf("restored view = %+v", b.View())
	}
}

func TestChangedNotifies(t *testing.T) {
	m := New()
	ch := m.Changed()
	select {
	case <-ch:
		t.Fatal("Changed closed before any change")
	default:
	}
	if err := mustApply(t, m, 1, SetMode{Mode: ModeMaintenance}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	default:
		t.Fatal("Changed not closed after a change")
	}
	// A rejected command is not a change.
	ch = m.Changed()
	if err := mustApply(t, m, 2, SetMode{Mode: "bogus"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("SetMode(bogus) = %v; want ErrInvalid", err)
	}
	select {
	case <-ch:
		t.Fatal("Changed closed by a rejected command")
	default:
	}
}

func FuzzApply(f *testing.F) {
	for _, c := range []Command{
		AddMember{Member: Member{Name: "n", Role: RoleApp}},
		AddMember{Member: Member{Name: "p", Role: RoleWitness, Pending: true}},
		PromoteMember{Name: "p"},
		SetHolder{Node: "n", Active: true, At: t0},
		UseToken{ID: "x", SecretHash: "y", At: t0},
		ResetFailures{Node: "n", At: t0},
	} {
		b, _ := Encode(c)
		f.Add(b)
	}
	f.Add([]byte(`{"type":"set_holder","data":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m := New()
		_ = m.Apply(1, data)
		saved, err := m.Save()
		if err != nil {
			t.Fatalf("Save after Apply: %v", err)
		}
		if err := New().Restore(saved); err != nil {
			t.Fatalf("Restore(Save()) = %v", err)
		}
	})
}

func TestSetPolicy(t *testing.T) {
	m := New()
	if m.View().Policy != nil {
		t.Fatal("a new state has a policy")
	}
	want := Policy{Cooloff: 5 * time.Second, FailureThreshold: 3, FailureWindow: 10 * time.Minute}
	if err := mustApply(t, m, 1, SetPolicy{Policy: want}); err != nil {
		t.Fatal(err)
	}
	if got := m.View().Policy; got == nil || *got != want {
		t.Fatalf("policy = %+v; want %+v", got, want)
	}
	if err := mustApply(t, m, 2, SetPolicy{Policy: Policy{FailureThreshold: -1}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("SetPolicy(threshold -1) = %v; want ErrInvalid", err)
	}
	// The view is a copy: changing it does not change the state.
	v := m.View()
	v.Policy.Cooloff = time.Hour
	if m.View().Policy.Cooloff != 5*time.Second {
		t.Fatal("View shares the policy with the state")
	}
}

// TestPendingMembers checks that a joined member counts as a voter only once
// promoted, and cannot hold the IP before.
func TestPendingMembers(t *testing.T) {
	tests := []struct {
		name       string
		cmds       []Command
		wantErr    error // of the last command
		wantVoters int
		wantNames  int
	}{
		{"pending is not a voter", []Command{AddMember{Member: Member{Name: "node3", Role: RoleApp, Pending: true}}}, nil, 3, 4},
		{"pending never holds", []Command{
			AddMember{Member: Member{Name: "node3", Role: RoleApp, Pending: true}},
			SetHolder{Node: "node3", PrevEpoch: 0, Active: true, At: t0},
		}, ErrInvalid, 3, 4},
		{"promoted is a voter", []Command{
			AddMember{Member: Member{Name: "node3", Role: RoleApp, Pending: true}},
			PromoteMember{Name: "node3"},
		}, nil, 4, 4},
		{"promoted can hold", []Command{
			AddMember{Member: Member{Name: "node3", Role: RoleApp, Pending: true}},
			PromoteMember{Name: "node3"},
			SetHolder{Node: "node3", PrevEpoch: 0, Active: true, At: t0},
		}, nil, 4, 4},
		{"promoting an unknown member", []Command{PromoteMember{Name: "ghost"}}, ErrUnknownMember, 3, 3},
		{"promoting twice is harmless", []Command{PromoteMember{Name: "node1"}, PromoteMember{Name: "node1"}}, nil, 3, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := threeNodes(t)
			var err error
			for i, c := range tt.cmds {
				err = mustApply(t, m, uint64(10+i), c)
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("last command = %v; want %v", err, tt.wantErr)
			}
			v := m.View()
			if got := len(v.Voters()); got != tt.wantVoters {
				t.Errorf("voters = %v; want %d", v.Voters(), tt.wantVoters)
			}
			if got := len(v.Names()); got != tt.wantNames {
				t.Errorf("names = %v; want %d", v.Names(), tt.wantNames)
			}
		})
	}
}
