package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
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

func TestChangedNotifiesPerDomain(t *testing.T) {
	m := threeNodes(t)
	members, failover := m.Changed(MembershipDomain), m.Changed(FailoverDomain)
	closed := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	if closed(members) || closed(failover) {
		t.Fatal("Changed closed before any change")
	}
	if err := mustApply(t, m, 10, SetMode{Mode: ModeMaintenance}); err != nil {
		t.Fatal(err)
	}
	if !closed(failover) {
		t.Fatal("Changed(failover) not closed after SetMode")
	}
	if closed(members) {
		t.Fatal("Changed(membership) closed by a failover command")
	}
	// A rejected command is not a change.
	failover = m.Changed(FailoverDomain)
	if err := mustApply(t, m, 11, SetMode{Mode: "bogus"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("SetMode(bogus) = %v; want ErrInvalid", err)
	}
	if closed(failover) {
		t.Fatal("Changed closed by a rejected command")
	}
	// Removing the holder changes both domains.
	if err := mustApply(t, m, 12, SetHolder{Node: "node1", PrevEpoch: 0, Active: true, At: t0}); err != nil {
		t.Fatal(err)
	}
	members, failover = m.Changed(MembershipDomain), m.Changed(FailoverDomain)
	if err := mustApply(t, m, 13, RemoveMember{Name: "node1", At: t0}); err != nil {
		t.Fatal(err)
	}
	if !closed(members) || !closed(failover) {
		t.Fatal("RemoveMember of the holder did not notify both domains")
	}
	if got := m.View().Index; got != 13 {
		t.Errorf("Index = %d; want 13", got)
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
		StartRotation{By: "n", Old: TrustedCA{Hash: "sha256:" + strings.Repeat("1", 64), Cert: "a"}, New: TrustedCA{Hash: "sha256:" + strings.Repeat("2", 64), Cert: "b"}, At: t0},
		ReportCA{Name: "n", Report: CAReport{Trusts: []string{"sha256:" + strings.Repeat("2", 64)}, Cert: "sha256:" + strings.Repeat("2", 64)}},
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

// TestViewsAreImmutable checks copy-on-write: a view taken before a
// command does not see it, and the domains a command does not touch are
// shared, not copied.
func TestViewsAreImmutable(t *testing.T) {
	m := threeNodes(t)
	if err := mustApply(t, m, 10, SetHolder{Node: "node1", PrevEpoch: 0, Active: true, At: t0}); err != nil {
		t.Fatal(err)
	}
	before := m.View()
	beforeSaved, _ := json.Marshal(before)
	cmds := []Command{
		SetHolder{Node: "node2", PrevEpoch: 1, At: t0},
		Activate{Epoch: 2, At: t0},
		SetPolicy{Policy: Policy{Cooloff: time.Second, FailureThreshold: 3, FailureWindow: time.Minute}},
		SetMemberPriority{Name: "node1", Priority: 5},
		AddToken{Token: Token{ID: "t", SecretHash: "h", Expires: t0.Add(time.Hour), UsesLeft: 1}},
		RemoveMember{Name: "witness", At: t0},
	}
	for i, c := range cmds {
		if err := mustApply(t, m, uint64(11+i), c); err != nil {
			t.Fatalf("%T = %v", c, err)
		}
	}
	if after, _ := json.Marshal(before); string(after) != string(beforeSaved) {
		t.Fatalf("an earlier view changed under later commands:\nbefore %s\nafter  %s", beforeSaved, after)
	}
	// A failover command leaves the membership maps shared.
	v1 := m.View()
	if err := mustApply(t, m, 20, SetMode{Mode: ModeMaintenance}); err != nil {
		t.Fatal(err)
	}
	v2 := m.View()
	if reflect.ValueOf(v1.Members).UnsafePointer() != reflect.ValueOf(v2.Members).UnsafePointer() {
		t.Error("SetMode copied the members map")
	}
	if v2.Mode != ModeMaintenance || v1.Mode != ModeAuto {
		t.Errorf("modes: before %q, after %q", v1.Mode, v2.Mode)
	}
}

// TestRestoreFlatSnapshot restores a snapshot in the format of the
// binaries before domains (testdata/snapshot-v1.json, written by them).
func TestRestoreFlatSnapshot(t *testing.T) {
	old, err := os.ReadFile("testdata/snapshot-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	m := New()
	if err := m.Restore(old); err != nil {
		t.Fatalf("Restore(flat) = %v", err)
	}
	v := m.View()
	if got := v.Names(); !slices.Equal(got, []string{"node1", "node2", "witness"}) {
		t.Errorf("members = %v", got)
	}
	if v.Members["node1"].Priority != 10 || !v.Members["node2"].Pending || v.Members["node1"].level() != BaseLevel {
		t.Errorf("members = %+v", v.Members)
	}
	want := Holder{Node: "node1", Epoch: 1, Active: true, Since: t0.Add(3 * time.Minute)}
	if v.Holder != want || v.Mode != ModeMaintenance || v.Index != 7 || len(v.Moves) != 1 {
		t.Errorf("failover = %+v, index %d", v.Failover, v.Index)
	}
	if v.Policy == nil || *v.Policy != (Policy{Preempt: true, Cooloff: 5 * time.Second}) {
		t.Errorf("policy = %+v", v.Policy)
	}
	if tok, ok := v.Tokens["tok1"]; !ok || tok.UsesLeft != -1 {
		t.Errorf("tokens = %+v", v.Tokens)
	}
	// It keeps working: the next command applies, and the next snapshot
	// is in today's format and restores to the same state.
	if err := mustApply(t, m, 8, SetHolder{Node: "node1", PrevEpoch: 1, Active: true, At: t0}); err != nil {
		t.Fatal(err)
	}
	saved, err := m.Save()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(saved), `"format":2`) {
		t.Errorf("Save = %s; want the sectioned format", saved)
	}
	again := New()
	if err := again.Restore(saved); err != nil {
		t.Fatal(err)
	}
	if b, _ := again.Save(); string(b) != string(saved) {
		t.Errorf("round trip differs:\n%s\n%s", saved, b)
	}
}

// TestUnknownSectionsAreKept restores a snapshot from a newer binary with
// a domain this one lacks: the section survives the next Save.
func TestUnknownSectionsAreKept(t *testing.T) {
	in := `{"format":2,"index":3,"domains":{"membership":{"members":{},"tokens":{}},"quotas":{"limits":{"192.0.2.1":{}}}}}`
	m := New()
	if err := m.Restore([]byte(in)); err != nil {
		t.Fatal(err)
	}
	if got := m.UnknownSections(); !slices.Equal(got, []string{"quotas"}) {
		t.Errorf("UnknownSections = %v", got)
	}
	out, _ := m.Save()
	if !strings.Contains(string(out), `"quotas":{"limits":{"192.0.2.1":{}}}`) {
		t.Errorf("Save dropped the unknown section: %s", out)
	}
	if err := New().Restore([]byte(`{"format":9,"domains":{}}`)); err == nil || !strings.Contains(err.Error(), "upgrade") {
		t.Errorf("Restore(format 9) = %v; want a refusal that says to upgrade", err)
	}
}

// TestLevels checks the rolling-upgrade rules: an older machine counts the
// entries it cannot decode, and Admissible refuses a command some member's
// recorded level is too low for, naming it.
func TestLevels(t *testing.T) {
	old := NewWith(Limit(BaseLevel, Domains()...)...)
	cur := New()
	if old.Level() != BaseLevel || cur.Level() <= BaseLevel {
		t.Fatalf("levels: old %d, current %d", old.Level(), cur.Level())
	}
	prio, _ := Encode(SetMemberPriority{Name: "node1", Priority: 3})
	for _, m := range []*Machine{old, cur} {
		for i, mem := range []Member{{Name: "node1", Role: RoleApp, Level: cur.Level()}, {Name: "node2", Role: RoleApp}} {
			if err := mustApply(t, m, uint64(i+1), AddMember{Member: mem}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// node2 has recorded no level: it runs the base level.
	err := cur.Admissible(prio)
	if !errors.Is(err, ErrUpgradeNeeded) || !strings.Contains(err.Error(), "upgrade node2 first") ||
		!strings.Contains(err.Error(), "set_member_priority needs level 2") {
		t.Fatalf("Admissible = %v; want ErrUpgradeNeeded naming node2", err)
	}
	// Reporting a level is never held back.
	report, _ := Encode(SetMemberLevel{Name: "node2", Level: cur.Level()})
	if err := cur.Admissible(report); err != nil {
		t.Fatalf("Admissible(set_member_level) = %v", err)
	}
	// The old machine cannot decode either: it counts them.
	for i, b := range [][]byte{report, prio} {
		if err := old.Apply(uint64(3+i), b); !errors.Is(err, ErrUnknownCommand) {
			t.Fatalf("old Apply = %v; want ErrUnknownCommand", err)
		}
	}
	if n, last := old.Undecodable(); n != 2 || last != "set_member_priority" {
		t.Errorf("Undecodable = %d, %q; want 2, set_member_priority", n, last)
	}
	if old.View().Index != 4 {
		t.Errorf("old index = %d; want 4 (undecodable entries still advance it)", old.View().Index)
	}
	// Once node2 reports the level, the command is admitted and applies.
	if err := cur.Apply(3, report); err != nil {
		t.Fatal(err)
	}
	if err := cur.Admissible(prio); err != nil {
		t.Fatalf("Admissible after the upgrade = %v", err)
	}
	if err := cur.Apply(4, prio); err != nil || cur.View().Members["node1"].Priority != 3 {
		t.Fatalf("SetMemberPriority = %v, members %+v", err, cur.View().Members)
	}
	if n, _ := cur.Undecodable(); n != 0 {
		t.Errorf("current machine counted %d undecodable entries", n)
	}
	if err := cur.Admissible([]byte(`{"type":"ban","data":{}}`)); !errors.Is(err, ErrInvalid) {
		t.Errorf("Admissible(unknown type) = %v; want ErrInvalid", err)
	}
}

func TestAuthorize(t *testing.T) {
	app := Member{Name: "node1", Role: RoleApp}
	wit := Member{Name: "witness", Role: RoleWitness}
	tests := []struct {
		name   string
		cmd    Authorizer
		caller Member
		ok     bool
	}{
		{"own priority", SetMemberPriority{Name: "witness"}, wit, true},
		{"witness sets another's priority", SetMemberPriority{Name: "node1"}, wit, false},
		{"app sets another's priority", SetMemberPriority{Name: "witness"}, app, true},
		{"own level", SetMemberLevel{Name: "node1", Level: 2}, app, true},
		{"another's level", SetMemberLevel{Name: "witness", Level: 2}, app, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cmd.Authorize(tt.caller)
			if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrForbidden)) {
				t.Errorf("Authorize = %v; want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestRegistry(t *testing.T) {
	m := New()
	for _, d := range Domains() {
		for _, c := range d.Commands() {
			cmd := c.New()
			if cmd.Type() != c.Name {
				t.Errorf("%s: New() makes a %q", c.Name, cmd.Type())
			}
			b, _ := Encode(cmd)
			if _, err := m.Decode(b); err != nil {
				t.Errorf("Decode(%s) = %v", c.Name, err)
			}
		}
	}
	if _, err := m.Decode([]byte(`{"type":"nope","data":{}}`)); !errors.Is(err, ErrUnknownCommand) {
		t.Errorf("Decode(nope) = %v; want ErrUnknownCommand", err)
	}
	defer func() {
		if recover() == nil {
			t.Error("registering a domain twice did not panic")
		}
	}()
	NewWith(membershipDomain{}, membershipDomain{})
}

// BenchmarkView measures a read of a state with five members and a full
// move history, as failover's loops make every few milliseconds.
func BenchmarkView(b *testing.B) {
	m := New()
	for i := range 5 {
		data, _ := Encode(AddMember{Member: Member{Name: fmt.Sprintf("node%d", i), Role: RoleApp}})
		if err := m.Apply(uint64(i+1), data); err != nil {
			b.Fatal(err)
		}
	}
	for i := range maxMoves {
		data, _ := Encode(SetHolder{Node: fmt.Sprintf("node%d", i%5), PrevEpoch: uint64(i), Active: true, At: t0})
		if err := m.Apply(uint64(i+10), data); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		s := m.View()
		if s.Holder.Epoch != maxMoves {
			b.Fatal("wrong state")
		}
	}
}

// FuzzRestore feeds snapshots of both formats, as a peer may send: Restore
// never panics, and what it accepts saves and restores to the same bytes.
func FuzzRestore(f *testing.F) {
	if old, err := os.ReadFile("testdata/snapshot-v1.json"); err == nil {
		f.Add(old)
	}
	f.Add([]byte(`{"format":2,"index":3,"domains":{"membership":{"members":{"a":{"name":"a","role":"app"}}},"failover":{"mode":""},"x":{}}}`))
	f.Add([]byte(`{"members":null,"holder":{"epoch":5}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m := New()
		if err := m.Restore(data); err != nil {
			return
		}
		saved, err := m.Save()
		if err != nil {
			t.Fatalf("Save after Restore: %v", err)
		}
		again := New()
		if err := again.Restore(saved); err != nil {
			t.Fatalf("Restore(Save()) = %v", err)
		}
		if b, _ := again.Save(); string(b) != string(saved) {
			t.Fatalf("round trip differs:\n%s\n%s", saved, b)
		}
	})
}

func TestSetMemberKey(t *testing.T) {
	k1 := "sha256:" + strings.Repeat("ab", 32)
	k2 := "sha256:" + strings.Repeat("cd", 32)
	m := New()
	if err := mustApply(t, m, 1, AddMember{Member: Member{Name: "node1", Role: RoleApp, Key: "sha256:zz"}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("AddMember with a malformed key = %v; want ErrInvalid", err)
	}
	if err := mustApply(t, m, 2, AddMember{Member: Member{Name: "node1", Role: RoleApp}}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cmd  SetMemberKey
		want error
		key  string // node1's key afterwards
	}{
		{"unknown member", SetMemberKey{Name: "ghost", Key: k1}, ErrUnknownMember, ""},
		{"malformed", SetMemberKey{Name: "node1", Key: "sha256:AB"}, ErrInvalid, ""},
		{"first report pins", SetMemberKey{Name: "node1", Key: k1}, nil, k1},
		{"same again", SetMemberKey{Name: "node1", Key: k1}, nil, k1},
		{"another key is refused", SetMemberKey{Name: "node1", Key: k2}, ErrForbidden, k1},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := mustApply(t, m, uint64(3+i), tt.cmd)
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("Apply = %v; want %v", err, tt.want)
			}
			if got := m.View().Members["node1"].Key; got != tt.key {
				t.Errorf("key = %q; want %q", got, tt.key)
			}
		})
	}
	if err := (SetMemberKey{Name: "node1"}).Authorize(Member{Name: "node2", Role: RoleApp}); !errors.Is(err, ErrForbidden) {
		t.Errorf("Authorize(another node) = %v; want ErrForbidden", err)
	}
	if err := (SetMemberKey{Name: "witness"}).Authorize(Member{Name: "witness", Role: RoleWitness}); err != nil {
		t.Errorf("Authorize(own) = %v", err)
	}
}
