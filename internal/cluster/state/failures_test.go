package state

import (
	"encoding/json"
	"errors"
	"testing"
	"time"
)

func TestResetFailures(t *testing.T) {
	tests := []struct {
		name    string
		cmds    []Command
		wantErr error // of the last command
		want    time.Time
	}{
		{"sets the marker", []Command{ResetFailures{Node: "node1", At: t0}}, nil, t0},
		{"a later reset wins", []Command{ResetFailures{Node: "node1", At: t0}, ResetFailures{Node: "node1", At: t0.Add(time.Minute)}}, nil, t0.Add(time.Minute)},
		{"an older reset changes nothing", []Command{ResetFailures{Node: "node1", At: t0.Add(time.Minute)}, ResetFailures{Node: "node1", At: t0}}, nil, t0.Add(time.Minute)},
		{"unknown node", []Command{ResetFailures{Node: "ghost", At: t0}}, ErrUnknownMember, time.Time{}},
		{"no time", []Command{ResetFailures{Node: "node1"}}, ErrInvalid, time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := threeNodes(t)
			var err error
			for i, c := range tt.cmds {
				err = mustApply(t, m, uint64(10+i), c)
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("last command = %v; want %v", err, tt.wantErr)
			}
			if got := m.View().FailureResets["node1"]; !got.Equal(tt.want) {
				t.Errorf("reset marker = %v; want %v", got, tt.want)
			}
		})
	}
}

// TestResetFailuresSurvivesSnapshot checks the marker is saved, restored
// and copied (not shared) by View.
func TestResetFailuresSurvivesSnapshot(t *testing.T) {
	m := threeNodes(t)
	if err := mustApply(t, m, 10, ResetFailures{Node: "node2", At: t0}); err != nil {
		t.Fatal(err)
	}
	// A view is shared and read-only: a later reset must not change one
	// taken before it (copy on write).
	v := m.View()
	if err := mustApply(t, m, 11, ResetFailures{Node: "node2", At: t0.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if !v.FailureResets["node2"].Equal(t0) || !m.View().FailureResets["node2"].Equal(t0.Add(time.Minute)) {
		t.Fatal("a reset changed a view taken before it")
	}
	saved, err := m.Save()
	if err != nil {
		t.Fatal(err)
	}
	r := New()
	if err := r.Restore(saved); err != nil {
		t.Fatal(err)
	}
	if got := r.View().FailureResets["node2"]; !got.Equal(t0.Add(time.Minute)) {
		t.Errorf("restored marker = %v; want %v", got, t0.Add(time.Minute))
	}
}

// TestOlderPolicyStillRestores checks that a snapshot and a set_policy
// entry written by a version with the hourly move cap still load: the old
// field is ignored and the failure fields are zero (the defaults).
func TestOlderPolicyStillRestores(t *testing.T) {
	old := `{"members":{},"holder":{"node":"","epoch":3,"active":false,"previous":"","since":"0001-01-01T00:00:00Z"},` +
		`"mode":"auto","policy":{"preempt":true,"cooloff":5000000000,"max_moves_per_hour":6},"moves":[],"tokens":{},"index":9}`
	m := New()
	if err := m.Restore([]byte(old)); err != nil {
		t.Fatalf("Restore(old snapshot) = %v", err)
	}
	want := Policy{Preempt: true, Cooloff: 5 * time.Second}
	if got := m.View().Policy; got == nil || *got != want {
		t.Fatalf("restored policy = %+v; want %+v", got, want)
	}
	entry := `{"type":"set_policy","data":{"policy":{"preempt":false,"cooloff":20000000000,"max_moves_per_hour":6}}}`
	if err := m.Apply(10, []byte(entry)); err != nil {
		t.Fatalf("Apply(old set_policy) = %v", err)
	}
	if got := m.View().Policy; got == nil || got.Cooloff != 20*time.Second || got.FailureThreshold != 0 {
		t.Fatalf("policy after old set_policy = %+v", got)
	}
}

// TestSetPolicyCarriesALegacyCap checks that a published policy carries an
// hourly cap that older versions accept (and that never binds), and that
// it still decodes to the same policy here.
func TestSetPolicyCarriesALegacyCap(t *testing.T) {
	want := Policy{Preempt: true, Cooloff: 5 * time.Second, FailureThreshold: 4, FailureWindow: time.Minute}
	b, err := Encode(SetPolicy{Policy: want})
	if err != nil {
		t.Fatal(err)
	}
	var env struct {
		Data struct {
			Policy map[string]any `json:"policy"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		t.Fatal(err)
	}
	if limit, _ := env.Data.Policy["max_moves_per_hour"].(float64); limit < 1000 {
		t.Errorf("max_moves_per_hour = %v in %s; want a cap older versions accept and that never binds", limit, b)
	}
	c, err := New().Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.(*SetPolicy).Policy; got != want {
		t.Errorf("decoded policy = %+v; want %+v", got, want)
	}
}
