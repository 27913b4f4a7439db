package health

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// script is a fake probe that returns a scripted sequence of results, one
// per call, repeating the last one forever.
type script struct {
	mu    sync.Mutex
	steps []bool
	calls int
}

func (s *script) probe(context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ok := s.steps[min(s.calls, len(s.steps)-1)]
	s.calls++
	if ok {
		return "pass", nil
	}
	return "fail", errors.New("scripted failure")
}

// fakeRunner builds a Runner whose checks use the given probes instead of
// real ones.
func fakeRunner(t *testing.T, specs []Check, probes []probeFunc, opts Options) *Runner {
	t.Helper()
	for i := range specs {
		if specs[i].Type == "" {
			specs[i].Type = TypeTCP
			specs[i].Target = "127.0.0.1:1"
		}
	}
	r, err := New(specs, discard(), opts)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range probes {
		r.checks[i].probe = p
	}
	return r
}

// start runs r in the background and stops it when the test ends.
func start(t *testing.T, r *Runner) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v", err)
		}
	})
}

func TestHysteresis(t *testing.T) {
	const P, F = true, false
	tests := []struct {
		name       string
		rise, fall int
		steps      []bool
		want       []bool // Healthy after each step
	}{
		{name: "starts unhealthy and rises after rise passes", rise: 3, fall: 2,
			steps: []bool{P, P, P, P}, want: []bool{F, F, T, T}},
		{name: "falls after fall failures", rise: 1, fall: 2,
			steps: []bool{P, F, F, F}, want: []bool{T, T, F, F}},
		{name: "flapping never rises", rise: 3, fall: 2,
			steps: []bool{P, F, P, F, P, P, F, P, P, F}, want: []bool{F, F, F, F, F, F, F, F, F, F}},
		{name: "flapping never falls", rise: 2, fall: 2,
			steps: []bool{P, P, F, P, F, P, F, P, F, P}, want: []bool{F, T, T, T, T, T, T, T, T, T}},
		{name: "a pass resets the failure count", rise: 1, fall: 3,
			steps: []bool{P, F, F, P, F, F, F}, want: []bool{T, T, T, T, T, T, F}},
		{name: "recovers after rise passes", rise: 2, fall: 1,
			steps: []bool{P, P, F, P, P}, want: []bool{F, T, F, F, T}},
		{name: "rise 1 fall 1 follows every result", rise: 1, fall: 1,
			steps: []bool{F, P, F, P}, want: []bool{F, T, F, T}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const iv = time.Second
				s := &script{steps: tt.steps}
				r := fakeRunner(t, []Check{{Name: "c", Interval: iv, Rise: tt.rise, Fall: tt.fall}}, []probeFunc{s.probe}, Options{})
				start(t, r)
				for i := range tt.steps {
					synctest.Wait() // probe i has run and been recorded
					st := r.Snapshot().Checks[0]
					if st.Healthy != tt.want[i] {
						t.Fatalf("after step %d (%v): Healthy = %v; want %v (passes %d, fails %d)",
							i, tt.steps[i], st.Healthy, tt.want[i], st.Passes, st.Fails)
					}
					if tt.steps[i] && (st.Passes == 0 || st.Fails != 0) || !tt.steps[i] && (st.Fails == 0 || st.Passes != 0) {
						t.Fatalf("after step %d: passes %d, fails %d", i, st.Passes, st.Fails)
					}
					time.Sleep(iv)
				}
			})
		})
	}
}

const T = true

func TestChangesNotifyAndCoalesce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &script{steps: []bool{true, false, true, false}} // rise 1, fall 1: four transitions... the first is a rise
		r := fakeRunner(t, []Check{{Name: "c", Interval: time.Second, Rise: 1, Fall: 1}}, []probeFunc{s.probe}, Options{})
		select {
		case <-r.Changes():
			t.Fatal("change before Run")
		default:
		}
		start(t, r)
		synctest.Wait()
		select {
		case <-r.Changes():
		default:
			t.Fatal("no change notification after the check rose")
		}
		if !r.Snapshot().Healthy {
			t.Fatal("not healthy after the notification")
		}
		// Three more transitions with nobody reading: one pending value.
		time.Sleep(3 * time.Second)
		synctest.Wait()
		n := 0
	drain:
		for {
			select {
			case <-r.Changes():
				n++
			default:
				break drain
			}
		}
		if n != 1 {
			t.Errorf("got %d pending notifications; want 1 (coalesced)", n)
		}
		if r.Snapshot().Healthy {
			t.Error("healthy after the last scripted failure")
		}
		// A steady state sends nothing.
		time.Sleep(5 * time.Second)
		synctest.Wait()
		select {
		case <-r.Changes():
			t.Error("notification without a transition")
		default:
		}
	})
}

func TestReactsWithinOneInterval(t *testing.T) {
	// Failing fast: with fall 1 the transition is signalled the moment the
	// first failing probe ends, not at some later poll.
	synctest.Test(t, func(t *testing.T) {
		const iv = 200 * time.Millisecond
		s := &script{steps: []bool{true, false}}
		r := fakeRunner(t, []Check{{Name: "c", Interval: iv, Rise: 1, Fall: 1}}, []probeFunc{s.probe}, Options{})
		start(t, r)
		<-r.Changes() // rose at t=0
		t0 := time.Now()
		<-r.Changes()
		if d := time.Since(t0); d != iv {
			t.Errorf("fall signalled %s after the rise; want exactly one interval (%s)", d, iv)
		}
		if r.Snapshot().Healthy {
			t.Error("healthy after a failure with fall 1")
		}
	})
}

func TestSlowCheckDoesNotBlockOthers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hang := func(ctx context.Context) (string, error) {
			<-ctx.Done()
			return "", ctx.Err()
		}
		fast := &script{steps: []bool{true}}
		specs := []Check{
			{Name: "hung", Interval: time.Second, Timeout: 10 * time.Second, Rise: 1, Fall: 1},
			{Name: "fast", Interval: 100 * time.Millisecond, Rise: 2, Fall: 1},
		}
		r := fakeRunner(t, specs, []probeFunc{hang, fast.probe}, Options{})
		start(t, r)
		time.Sleep(time.Second + time.Millisecond)
		synctest.Wait()
		rep := r.Snapshot()
		if got := rep.Checks[1]; !got.Healthy || got.Passes != 11 {
			t.Errorf("fast check while the other hangs: healthy %v, passes %d; want healthy with 11 passes", got.Healthy, got.Passes)
		}
		if got := rep.Checks[0]; !got.LastRun.IsZero() {
			t.Errorf("hung check has a result before its timeout: %+v", got)
		}
		if rep.Healthy {
			t.Error("overall healthy while a check has never passed")
		}
	})
}

func TestTimeoutIsAFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hang := func(ctx context.Context) (string, error) {
			<-ctx.Done()
			return "partial", ctx.Err()
		}
		var results []bool
		var durations []time.Duration
		opts := Options{OnResult: func(name string, ok bool, d time.Duration) {
			if name != "slow" {
				t.Errorf("OnResult name %q", name)
			}
			results = append(results, ok)
			durations = append(durations, d)
		}}
		r := fakeRunner(t, []Check{{Name: "slow", Interval: time.Second, Timeout: 300 * time.Millisecond, Rise: 1, Fall: 1}}, []probeFunc{hang}, opts)
		start(t, r)
		time.Sleep(300 * time.Millisecond)
		synctest.Wait()
		st := r.Snapshot().Checks[0]
		if st.Fails != 1 || st.Healthy {
			t.Fatalf("after the timeout: %+v; want one failure", st)
		}
		if !strings.Contains(st.Error, "timed out after 300ms") {
			t.Errorf("Error = %q; want it to say it timed out", st.Error)
		}
		if st.Output != "partial" || st.LastDuration != 300*time.Millisecond {
			t.Errorf("Output %q, LastDuration %s; want \"partial\", 300ms", st.Output, st.LastDuration)
		}
		if len(results) != 1 || results[0] || durations[0] != 300*time.Millisecond {
			t.Errorf("OnResult saw %v %v; want one failure of 300ms", results, durations)
		}
	})
}

func TestSnapshot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		good := &script{steps: []bool{true}}
		bad := &script{steps: []bool{false}}
		r := fakeRunner(t, []Check{
			{Name: "good", Interval: time.Second, Rise: 1},
			{Name: "bad", Interval: time.Second, Rise: 1},
			{Name: "later", Interval: time.Second},
		}, []probeFunc{good.probe, bad.probe, func(ctx context.Context) (string, error) {
			<-ctx.Done()
			return "", ctx.Err()
		}}, Options{})

		empty := r.Snapshot()
		if empty.Healthy || len(empty.Checks) != 3 || empty.Checks[0].Name != "good" || empty.Checks[0].Type != TypeTCP {
			t.Fatalf("before Run: %+v", empty)
		}
		start(t, r)
		synctest.Wait()
		rep := r.Snapshot()
		if rep.Healthy {
			t.Error("overall healthy with a failing check")
		}
		g, b := rep.Checks[0], rep.Checks[1]
		if !g.Healthy || g.Output != "pass" || g.Error != "" || !g.LastRun.Equal(time.Now()) || !g.Since.Equal(time.Now()) {
			t.Errorf("good = %+v", g)
		}
		if b.Healthy || b.Output != "fail" || b.Error != "scripted failure" || !b.Since.IsZero() {
			t.Errorf("bad = %+v", b)
		}
		want := []string{"bad: scripted failure", "later: not run yet"}
		if got := rep.Failing(); strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("Failing() = %q; want %q", got, want)
		}
	})
}

func TestNoChecksIsHealthy(t *testing.T) {
	r, err := New(nil, discard(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Snapshot().Healthy {
		t.Error("a node with no checks is unhealthy")
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := r.Run(ctx); err != nil {
		t.Errorf("Run() = %v", err)
	}
	if err := r.Run(t.Context()); err == nil {
		t.Error("second Run() succeeded")
	}
}

func TestRunStopsPromptly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hang := func(ctx context.Context) (string, error) {
			<-ctx.Done()
			return "", ctx.Err()
		}
		r := fakeRunner(t, []Check{{Name: "c", Interval: time.Second, Timeout: time.Hour}}, []probeFunc{hang}, Options{})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { r.Run(ctx); close(done) }()
		time.Sleep(time.Second)
		cancel()
		synctest.Wait()
		select {
		case <-done:
		default:
			t.Fatal("Run did not return after cancel")
		}
		if st := r.Snapshot().Checks[0]; !st.LastRun.IsZero() || st.Fails != 0 {
			t.Errorf("the probe cancelled by shutdown was recorded: %+v", st)
		}
	})
}

func TestOverallSince(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := &script{steps: []bool{true}}
		b := &script{steps: []bool{false, false, true, false}}
		r := fakeRunner(t, []Check{
			{Name: "a", Interval: time.Second, Rise: 1, Fall: 1},
			{Name: "b", Interval: time.Second, Rise: 1, Fall: 1},
		}, []probeFunc{a.probe, b.probe}, Options{})
		if rep := r.Snapshot(); !rep.Since.IsZero() || rep.UnhealthyFor(time.Now()) != 0 {
			t.Errorf("before Run: Since %v", rep.Since)
		}
		t0 := time.Now()
		start(t, r)
		steps := []struct {
			healthy      bool
			since        time.Duration // after t0
			unhealthyFor time.Duration
		}{
			{false, 0, 0},
			{false, 0, time.Second},
			{true, 2 * time.Second, 0},
			{false, 3 * time.Second, 0},
			{false, 3 * time.Second, time.Second},
		}
		for i, want := range steps {
			synctest.Wait()
			rep := r.Snapshot()
			if rep.Healthy != want.healthy || !rep.Since.Equal(t0.Add(want.since)) || rep.UnhealthyFor(time.Now()) != want.unhealthyFor {
				t.Errorf("at %ds: healthy %v, since +%s, unhealthy for %s; want %v, +%s, %s", i,
					rep.Healthy, rep.Since.Sub(t0), rep.UnhealthyFor(time.Now()), want.healthy, want.since, want.unhealthyFor)
			}
			time.Sleep(time.Second)
		}
	})
}
