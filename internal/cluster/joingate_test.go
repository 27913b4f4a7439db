package cluster

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestJoinGate(t *testing.T) {
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	t.Run("per source", func(t *testing.T) {
		g := newJoinGate()
		for i := range joinBurst {
			release, err := g.enter("192.0.2.1:4000", t0)
			if err != nil {
				t.Fatalf("attempt %d refused: %v", i, err)
			}
			release()
		}
		if _, err := g.enter("192.0.2.1:4001", t0); !errors.Is(err, ErrTooManyJoins) {
			t.Errorf("attempt past the burst = %v; want ErrTooManyJoins", err)
		}
		if release, err := g.enter("192.0.2.2:4000", t0); err != nil {
			t.Errorf("another source refused: %v", err)
		} else {
			release()
		}
		if release, err := g.enter("192.0.2.1:4000", t0.Add(2*time.Second)); err != nil {
			t.Errorf("after the bucket refilled: %v", err)
		} else {
			release()
		}
	})
	t.Run("in flight", func(t *testing.T) {
		g := newJoinGate()
		var releases []func()
		for i := range maxJoinsInFlight {
			release, err := g.enter(fmt.Sprintf("192.0.2.%d:1", i+1), t0)
			if err != nil {
				t.Fatal(err)
			}
			releases = append(releases, release)
		}
		if _, err := g.enter("198.51.100.1:1", t0); !errors.Is(err, ErrTooManyJoins) {
			t.Errorf("join past the in-flight bound = %v; want ErrTooManyJoins", err)
		}
		releases[0]()
		if _, err := g.enter("198.51.100.1:1", t0); err != nil {
			t.Errorf("after one finished: %v", err)
		}
	})
	t.Run("many sources", func(t *testing.T) {
		g := newJoinGate()
		for i := range maxJoinSources {
			if !g.allow(fmt.Sprintf("10.%d.%d.%d:1", i>>16&255, i>>8&255, i&255), t0) {
				t.Fatalf("source %d refused", i)
			}
		}
		if g.allow("203.0.113.9:1", t0) {
			t.Error("a new source admitted while the table is full of recent ones")
		}
		if !g.allow("203.0.113.9:1", t0.Add(joinSourceIdle+time.Second)) {
			t.Error("a new source refused after the old ones went idle")
		}
	})
}
