package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/tandem-ha/tandem/internal/guard"
)

// latencyFigures are milliseconds.
type latencyFigures struct {
	N   int       `json:"n"`
	P50 float64   `json:"p50_ms"`
	P99 float64   `json:"p99_ms"`
	Max float64   `json:"max_ms"`
	All []float64 `json:"all_ms,omitempty"`
}

func figures(ms []float64) *latencyFigures {
	s := slices.Clone(ms)
	slices.Sort(s)
	at := func(q float64) float64 { return s[min(len(s)-1, int(math.Ceil(q*float64(len(s))))-1)] }
	return &latencyFigures{N: len(s), P50: at(0.50), P99: at(0.99), Max: s[len(s)-1], All: ms}
}

// engineLatency times, n times, a failure line appended to a followed log
// file until the engine's decide callback has the ban (maxretry 1, one
// new host per line), with the engine's default poll interval.
func engineLatency(ctx context.Context, dir string, n int) (*latencyFigures, error) {
	path := filepath.Join(dir, "latency.log")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		return nil, err
	}
	e, err := guard.New(guard.Config{Jails: []guard.JailConfig{{
		Name: "sshd", Filter: "sshd", Files: []string{path}, MaxRetry: 1, FindTime: time.Minute, BanTime: time.Minute,
	}}}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return nil, err
	}
	decided := make(chan netip.Addr, 1)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = e.Run(ctx, func(d guard.Decision) { decided <- d.Addr }) }()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	time.Sleep(100 * time.Millisecond) // the follower opens the file
	var ms []float64
	for i := range n {
		addr := netip.AddrFrom4([4]byte{203, 0, byte(113 + i/250), byte(1 + i%250)})
		line := fmt.Sprintf("Nov 28 21:00:00 web1 sshd[1]: Failed password for root from %s port 22 ssh2\n", addr)
		start := time.Now()
		if _, err := f.WriteString(line); err != nil {
			return nil, err
		}
		select {
		case got := <-decided:
			if got != addr {
				return nil, fmt.Errorf("decided on %v; want %v", got, addr)
			}
		case <-time.After(5 * time.Second):
			return nil, fmt.Errorf("no decision on %v within 5s", addr)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		ms = append(ms, float64(time.Since(start).Microseconds())/1000)
		// Spread the writes over the poll period, as real lines arrive.
		time.Sleep(time.Duration(3+i%11) * time.Millisecond)
	}
	return figures(ms), nil
}
