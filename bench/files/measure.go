package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tandem-ha/tandem/internal/labcluster"
)

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// series writes a stream of files into dir on the holder and measures
// when each appears on the standby, then the bulk of small files.
func (b *bench) series(ctx context.Context, name, holder, standby, dir string, d time.Duration) (row, error) {
	r := row{name: name}
	run := fmt.Sprintf("run%d", time.Now().UnixNano())
	src, dst := filepath.Join(b.host(holder, dir), run), filepath.Join(b.host(standby, dir), run)
	if err := os.MkdirAll(src, 0o755); err != nil {
		return r, err
	}
	fmt.Fprintf(b.out, "%s: streaming files for %v ...\n", name, d)
	lags, missing := stream(ctx, src, dst, d, b.o.interval, b.o.stragglerLimit)
	r.lags, r.missing = lags, missing
	r.written = len(lags) + missing

	bulk := filepath.Join(src, "bulk")
	fmt.Fprintf(b.out, "%s: %d small files ...\n", name, b.o.small)
	start := time.Now()
	if err := os.MkdirAll(bulk, 0o755); err != nil {
		return r, err
	}
	for i := range b.o.small {
		if err := os.WriteFile(filepath.Join(bulk, fmt.Sprintf("f%05d", i)), []byte(fmt.Sprintf("small %d\n", i)), 0o644); err != nil {
			return r, err
		}
	}
	deadline := time.Now().Add(b.o.stragglerLimit + 60*time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		ents, _ := os.ReadDir(filepath.Join(dst, "bulk"))
		if len(ents) >= b.o.small {
			r.small, r.smallOK = time.Since(start), true
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Clean up, so the next system's series does not rescan it.
	_ = os.RemoveAll(src)
	return r, nil
}

// stream writes a 1 KiB file every interval (exponentially distributed)
// into src for d and returns, for each, the time from its close to its
// appearance in dst, and how many never appeared within settle.
func stream(ctx context.Context, src, dst string, d, interval, settle time.Duration) ([]float64, int) {
	type pending struct {
		name   string
		closed time.Time
	}
	var mu sync.Mutex
	var waiting []pending
	var lags []float64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			mu.Lock()
			kept := waiting[:0]
			for _, p := range waiting {
				if _, err := os.Stat(filepath.Join(dst, p.name)); err == nil {
					lags = append(lags, time.Since(p.closed).Seconds())
				} else {
					kept = append(kept, p)
				}
			}
			waiting = kept
			n := len(waiting)
			mu.Unlock()
			select {
			case <-stop:
				if n == 0 {
					return
				}
			default:
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	payload := make([]byte, 1024)
	end := time.Now().Add(d)
	for i := 0; time.Now().Before(end) && ctx.Err() == nil; i++ {
		name := fmt.Sprintf("s%05d", i)
		f, err := os.Create(filepath.Join(src, name))
		if err == nil {
			_, _ = f.Write(payload)
			err = f.Close()
		}
		if err == nil {
			mu.Lock()
			waiting = append(waiting, pending{name, time.Now()})
			mu.Unlock()
		}
		time.Sleep(time.Duration(rand.ExpFloat64() * float64(interval)))
	}
	close(stop)
	select {
	case <-done:
	case <-time.After(settle):
	case <-ctx.Done():
	}
	mu.Lock()
	defer mu.Unlock()
	return slices.Clone(lags), len(waiting)
}

func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Sorted(slices.Values(xs))
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func report(out io.Writer, rows []row, rpo []float64) error {
	fmt.Fprintln(out)
	fmt.Fprintf(out, "%-20s %8s %8s %8s %8s %8s  %s\n", "system", "files", "p50", "p99", "max", "missing", "10,000 small files")
	byName := map[string]row{}
	for _, r := range rows {
		byName[r.name] = r
		small := "did not finish"
		if r.smallOK {
			small = r.small.Round(time.Millisecond).String()
		}
		fmt.Fprintf(out, "%-20s %8d %7.3fs %7.3fs %7.3fs %8d  %s\n", r.name, len(r.lags), percentile(r.lags, 50), percentile(r.lags, 99),
			percentile(r.lags, 100), r.missing, small)
	}
	var failed bool
	goal := func(ok bool, format string, args ...any) {
		word := "PASS"
		if !ok {
			word, failed = "FAIL", true
		}
		fmt.Fprintf(out, "goal %s: %s\n", word, fmt.Sprintf(format, args...))
	}
	fmt.Fprintln(out)
	t := byName["tandem"]
	tp99 := percentile(t.lags, 99)
	goal(tp99 <= 1 && t.missing == 0, "tandem p99 lag %.3fs <= 1s, nothing missing (%d)", tp99, t.missing)
	if d, ok := byName["lsyncd (defaults)"]; ok {
		dp99 := percentile(d.lags, 99)
		goal(tp99*10 <= dp99, "tandem p99 %.3fs at least 10x lower than lsyncd's defaults %.3fs (%.1fx)", tp99, dp99, dp99/tp99)
	}
	if d, ok := byName["lsyncd (delay = 1)"]; ok {
		dp99 := percentile(d.lags, 99)
		goal(tp99 <= dp99, "tandem p99 %.3fs no worse than lsyncd delay = 1 %.3fs", tp99, dp99)
	}
	if len(rpo) > 0 {
		p99 := percentile(rpo, 99)
		fmt.Fprintf(out, "recovery point over %d holder kills: p50 %.3fs, p99 %.3fs, max %.3fs (age of the oldest file lost; 0 = nothing lost)\n",
			len(rpo), percentile(rpo, 50), p99, percentile(rpo, 100))
		goal(p99 <= 1, "recovery point p99 %.3fs <= 1s", p99)
	}
	if failed {
		return errGoals
	}
	return nil
}

// startLsyncd runs Debian's lsyncd on the holder, syncing lsyncdDir to the
// standby with rsync over ssh (a key made for the run), as a peer would
// set it up; delay is "" (its default, 15 s) or e.g. "delay = 1,".
func (b *bench) startLsyncd(ctx context.Context, holder, standby, delay string) error {
	addr := map[string]string{"node1": "10.77.0.11", "node2": "10.77.0.12"}[standby]
	if _, err := b.sh(ctx, holder, "mkdir -p /root/.ssh "+lsyncdDir+" && { [ -f /root/.ssh/bench ] || ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/bench; }"); err != nil {
		return err
	}
	pub, err := os.ReadFile(b.host(holder, "/root/.ssh/bench.pub"))
	if err != nil {
		return err
	}
	if _, err := b.sh(ctx, standby, "mkdir -p /root/.ssh "+lsyncdDir+" && chmod 700 /root/.ssh && grep -qF '"+strings.TrimSpace(string(pub))+"' /root/.ssh/authorized_keys 2>/dev/null || echo '"+strings.TrimSpace(string(pub))+"' >> /root/.ssh/authorized_keys; systemctl start ssh"); err != nil {
		return err
	}
	conf := fmt.Sprintf(`settings { nodaemon = true, insist = true, logfile = "/var/log/lsyncd-bench.log" }
sync {
  default.rsync,
  source = "%s/",
  target = "%s:%s/",
  %s
  rsync = { rsh = "/usr/bin/ssh -i /root/.ssh/bench -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null" },
}
`, lsyncdDir, addr, lsyncdDir, delay)
	if err := os.WriteFile(b.host(holder, "/root/lsyncd-bench.lua"), []byte(conf), 0o644); err != nil {
		return err
	}
	if _, err := b.sh(ctx, holder, "systemctl stop bench-lsyncd 2>/dev/null; systemd-run --unit=bench-lsyncd --collect lsyncd /root/lsyncd-bench.lua"); err != nil {
		return err
	}
	// Its start-up sync, then the stream.
	marker := fmt.Sprintf("ready-%d", time.Now().UnixNano())
	if err := os.WriteFile(filepath.Join(b.host(holder, lsyncdDir), marker), nil, 0o644); err != nil {
		return err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(b.host(standby, lsyncdDir), marker)); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			out, _ := b.sh(ctx, holder, "tail -5 /var/log/lsyncd-bench.log; systemctl status bench-lsyncd --no-pager | tail -5")
			return fmt.Errorf("lsyncd did not sync within 60s: %s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (b *bench) stopLsyncd(holder string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, _ = b.sh(ctx, holder, "systemctl stop bench-lsyncd")
}

// rpo kills the holder at random moments of a stream of writes and
// returns, per trial, the age at the kill of the oldest file the new
// holder lacks (0 when nothing was lost).
func (b *bench) rpo(ctx context.Context, trials int) ([]float64, error) {
	var out []float64
	dir := labcluster.SiteDataDir + "/rpo"
	for i := range trials {
		holder, err := b.holder(ctx)
		if err != nil {
			return out, err
		}
		standby := "node1"
		if holder == "node1" {
			standby = "node2"
		}
		src := b.host(holder, dir)
		if err := os.MkdirAll(src, 0o755); err != nil {
			return out, err
		}
		type written struct {
			name   string
			closed time.Time
		}
		var files []written
		until := time.Now().Add(2*time.Second + time.Duration(rand.Int64N(int64(2*time.Second))))
		for n := 0; time.Now().Before(until); n++ {
			name := fmt.Sprintf("t%02d-%05d", i, n)
			if err := os.WriteFile(filepath.Join(src, name), make([]byte, 1024), 0o644); err == nil {
				files = append(files, written{name, time.Now()})
			}
			time.Sleep(time.Duration(rand.ExpFloat64() * float64(b.o.interval)))
		}
		kill := time.Now()
		if err := b.l.Kill(ctx, holder); err != nil {
			return out, err
		}
		// The standby takes over; then what it has is what survived.
		var got string
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if h, err := b.holderOnce(ctx, standby); err == nil && h == standby {
				got = standby
				break
			}
		}
		if got == "" {
			return out, fmt.Errorf("trial %d: %s did not take over", i+1, standby)
		}
		age := 0.0
		for _, f := range files {
			if _, err := os.Stat(filepath.Join(b.host(standby, dir), f.name)); err != nil {
				age = kill.Sub(f.closed).Seconds()
				break
			}
		}
		out = append(out, age)
		fmt.Fprintf(b.out, "rpo trial %d: killed %s after %d files; oldest lost %.3fs before the kill\n", i+1, holder, len(files), age)
		if err := b.l.Start(ctx, holder); err != nil {
			return out, err
		}
		// Let it come back and catch up; discard its quarantine.
		time.Sleep(8 * time.Second)
		_, _ = b.sh(ctx, holder, "rm -rf "+labcluster.SiteDataDir+".tandem-quarantine")
	}
	_, _ = b.sh(ctx, "node1", "true")
	return out, nil
}

func (b *bench) holderOnce(ctx context.Context, node string) (string, error) {
	outp, err := b.sh(ctx, node, "tandem status --json")
	if err != nil {
		return "", err
	}
	var st struct {
		Holder struct {
			Node   string `json:"node"`
			Active bool   `json:"active"`
		} `json:"holder"`
		VIP struct {
			HeldHere bool `json:"held_here"`
		} `json:"vip"`
	}
	if err := json.Unmarshal([]byte(outp), &st); err != nil {
		return "", err
	}
	if !st.Holder.Active || !st.VIP.HeldHere {
		return "", errors.New("not yet")
	}
	return st.Holder.Node, nil
}
