// Package netnsrun runs a function inside a network namespace without
// moving any other goroutine there: the providers and their tests use it
// for what netlink handles cannot do from outside (packet sockets,
// sock_diag, listening and dialling).
package netnsrun

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// Do runs fn with the calling thread in ns, on a dedicated locked goroutine
// so no other goroutine ever runs there; with ns < 0 it just runs fn. If the
// thread cannot be switched back it stays locked and dies with the
// goroutine. Sockets opened by fn stay in ns.
func Do(ns netns.NsHandle, fn func() error) error {
	if ns < 0 {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return // thread stays locked and is discarded
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("restore netns: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
