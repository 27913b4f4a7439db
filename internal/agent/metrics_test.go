package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/failover"
)

type plainProvider struct{}

func (plainProvider) Acquire(context.Context) error      { return nil }
func (plainProvider) Release(context.Context) error      { return nil }
func (plainProvider) Held(context.Context) (bool, error) { return false, nil }

type drainingProvider struct {
	plainProvider
	stopped bool
}

func (d *drainingProvider) StopNew(context.Context) error         { d.stopped = true; return nil }
func (d *drainingProvider) InFlight(context.Context) (int, error) { return 7, nil }

// TestInstrumentKeepsDrainer: the metrics wrapper must not hide a provider's
// ability to drain, or planned moves would cut connections.
func TestInstrumentKeepsDrainer(t *testing.T) {
	m := newMetrics()
	if _, ok := instrument(plainProvider{}, m).(failover.Drainer); ok {
		t.Errorf("a provider that cannot drain became a Drainer")
	}
	inner := &drainingProvider{}
	d, ok := instrument(inner, m).(failover.Drainer)
	if !ok {
		t.Fatal("the wrapper hides the provider's Drainer")
	}
	if err := d.StopNew(context.Background()); err != nil || !inner.stopped {
		t.Errorf("StopNew did not reach the provider (err %v)", err)
	}
	if n, err := d.InFlight(context.Background()); err != nil || n != 7 {
		t.Errorf("InFlight = %d, %v; want 7 from the provider", n, err)
	}
}

// TestCapListener: the metrics listener serves at most its cap of
// connections at once and closes the ones beyond it at once; a closed
// connection frees its slot.
func TestCapListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const limit = 8
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") }),
		ReadHeaderTimeout: time.Minute}
	go func() { _ = srv.Serve(newCapListener(ln, limit)) }()
	t.Cleanup(func() { srv.Close() })

	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range limit + 5 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	time.Sleep(300 * time.Millisecond) // the server accepts them in its own time
	closed := 0
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			closed++
		}
	}
	if closed != 5 {
		t.Errorf("%d of %d idle connections were closed at once; want the 5 beyond the cap of %d", closed, len(conns), limit)
	}
	// Freeing one slot lets the next request through.
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	var resp *http.Response
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp, err = http.Get("http://" + ln.Addr().String() + "/")
		if err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("a request once the idle connections closed: %v %v", resp, err)
	}
	resp.Body.Close()
}
