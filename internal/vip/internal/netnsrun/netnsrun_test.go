package netnsrun

import (
	"errors"
	"runtime"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/tandem-ha/tandem/internal/testenv"
)

func TestDo(t *testing.T) {
	testenv.NeedRoot(t, "to create a network namespace")
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	// netns.New switches this thread; switch back at once.
	target, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	if err := netns.Set(orig); err != nil {
		t.Fatal(err)
	}
	runtime.UnlockOSThread()

	inside := func(want netns.NsHandle) func() error {
		return func() error {
			cur, err := netns.Get()
			if err != nil {
				return err
			}
			defer cur.Close()
			if !cur.Equal(want) {
				return errors.New("fn ran in the wrong namespace")
			}
			return nil
		}
	}
	if err := Do(target, inside(target)); err != nil {
		t.Fatalf("Do(target): %v", err)
	}
	if err := Do(-1, inside(orig)); err != nil {
		t.Fatalf("Do(-1): %v", err)
	}
	// The caller's threads stay where they were.
	if err := inside(orig)(); err != nil {
		t.Fatalf("after Do: %v", err)
	}
	boom := errors.New("boom")
	if err := Do(target, func() error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("Do returned %v; want fn's error", err)
	}
}
