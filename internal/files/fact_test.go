package files

import (
	"testing"
	"time"
)

func TestFactEncodesOnlyOnChange(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	l2, l3 := &link{peer: "node2"}, &link{peer: "node3"}
	c := &Controller{o: Options{Now: func() time.Time { return now }}, order: []string{"/srv/a"},
		paths: map[string]*dirState{"/srv/a": {links: map[string]*link{"node3": l3, "node2": l2}}}}
	if b := c.Fact(); b != nil {
		t.Fatalf("a node that is not the source contributes %q; want nothing", b)
	}
	c.sending, c.epoch = true, 7

	first := c.Fact()
	check := func(b []byte, wantLag map[string]time.Duration, wantErr string) {
		t.Helper()
		epoch, dirs, err := ParseFact(b)
		if err != nil || epoch != 7 || len(dirs["/srv/a"]) != 2 {
			t.Fatalf("ParseFact(%s) = %d, %v, %v", b, epoch, dirs, err)
		}
		for i, p := range dirs["/srv/a"] {
			if want := []string{"node2", "node3"}[i]; p.Node != want {
				t.Errorf("peer %d is %s, want %s (sorted)", i, p.Node, want)
			}
			if p.Lag != wantLag[p.Node] {
				t.Errorf("%s lag %v, want %v", p.Node, p.Lag, wantLag[p.Node])
			}
			if (p.LastError != "") != (p.Node == wantErr) {
				t.Errorf("%s error %q", p.Node, p.LastError)
			}
		}
	}
	check(first, nil, "")
	now = now.Add(time.Second)
	if again := c.Fact(); &again[0] != &first[0] {
		t.Error("an unchanged fact was encoded again; want the previous encoding")
	}

	c.mu.Lock()
	l3.dirty, l3.dirtySince, l3.dirtyBytes = true, now.Add(-1500*time.Millisecond), 10
	c.mu.Unlock()
	lagging := c.Fact()
	check(lagging, map[string]time.Duration{"node3": 1500 * time.Millisecond}, "")
	now = now.Add(100 * time.Millisecond)
	check(c.Fact(), map[string]time.Duration{"node3": 1600 * time.Millisecond}, "")

	c.mu.Lock()
	l3.dirty, l3.dirtySince, l3.dirtyBytes = false, time.Time{}, 0
	l2.lastErr = "rsync failed"
	c.mu.Unlock()
	check(c.Fact(), nil, "node2")

	c.mu.Lock()
	c.sending = false
	c.mu.Unlock()
	if b := c.Fact(); b != nil {
		t.Fatalf("after losing the source role the fact is %q; want nothing", b)
	}
}
