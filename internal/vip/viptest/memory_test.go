package viptest

import (
	"errors"
	"testing"
	"time"
)

// The in-memory register passes the suite, which also checks the suite
// itself against a provider whose behaviour is known.
func TestRegisterConformance(t *testing.T) {
	Run(t, func(t *testing.T) Env {
		r := NewRegister()
		return Env{
			A: r.Node("a"), B: r.Node("b"),
			Exclusive: true, ReleaseDrops: true,
			ThirdParty:  func(t *testing.T) { r.SetHolder("c") },
			ActionDelay: func(t *testing.T, d time.Duration) { r.SetDelay(d) },
		}
	})
}

func TestRegisterFailNext(t *testing.T) {
	r := NewRegister()
	boom := errors.New("boom")
	r.FailNext(1, boom)
	a := r.Node("a")
	if err := a.Acquire(t.Context()); !errors.Is(err, boom) {
		t.Fatalf("Acquire = %v, want boom", err)
	}
	if err := a.Acquire(t.Context()); err != nil {
		t.Fatal(err)
	}
	if r.Holder() != "a" || r.Calls("a Acquire") != 2 {
		t.Fatalf("holder %q, calls %d", r.Holder(), r.Calls("a Acquire"))
	}
}
