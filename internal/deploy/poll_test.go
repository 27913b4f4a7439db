package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/webhook"
)

// build is a polled GitLab pipeline for commit c.
func build(c string) webhook.Delivery {
	return webhook.Delivery{Source: webhook.GitLab, ID: "poll:" + c, Event: webhook.EventPipeline, Project: "site/pysite",
		Ref: "main", RefKind: webhook.RefBranch, Commit: c, Status: "success", PipelineID: 7, JobID: 9}
}

// rerun is another pipeline for the commit of b.
func rerun(b webhook.Delivery) webhook.Delivery {
	b.PipelineID++
	b.ID = fmt.Sprintf("poll:gitlab:%d", b.PipelineID)
	return b
}

func commit(b byte) string {
	out := make([]byte, 40)
	for i := range out {
		out[i] = b
	}
	return string(out)
}

// TestPoller: only the holder polls; a build no webhook announced is
// queued once; one already received, or refused at fetch before, is not
// queued again; one whose fetch failed for the forge's sake is; an
// interval of 0 turns polling off.
func TestPoller(t *testing.T) {
	fresh, dup, refusedBuild, forgeDown, fixed := build(commit('a')), build(commit('b')), build(commit('c')), build(commit('d')), build(commit('e'))
	tests := []struct {
		name     string
		self     string // the polling node (node1 holds the IP)
		interval time.Duration
		polled   []webhook.Delivery
		prior    map[string]string // commit → reason its earlier delivery failed with ("" = still queued)
		want     []string          // commits queued by the poll
		calls    int               // Poll calls in 3 intervals
	}{
		{name: "off", self: "node1", interval: 0, polled: []webhook.Delivery{fresh}, calls: 0},
		{name: "a standby does not poll", self: "node2", interval: time.Minute, polled: []webhook.Delivery{fresh}, calls: 0},
		{name: "a missed build is queued once", self: "node1", interval: time.Minute, polled: []webhook.Delivery{fresh},
			want: []string{fresh.Commit}, calls: 3},
		{name: "a build already received is not queued again", self: "node1", interval: time.Minute, polled: []webhook.Delivery{dup},
			prior: map[string]string{dup.Commit: ""}, calls: 3},
		{name: "a build refused at fetch is not fetched again", self: "node1", interval: time.Minute, polled: []webhook.Delivery{refusedBuild},
			prior: map[string]string{refusedBuild.Commit: ReasonRefused + "verify site.deb: artifact SHA-256 does not match"}, calls: 3},
		{name: "a new pipeline for the commit of a refused build is fetched", self: "node1", interval: time.Minute, polled: []webhook.Delivery{rerun(fixed)},
			prior: map[string]string{fixed.Commit: ReasonRefused + "verify site.deb: artifact SHA-256 does not match"}, want: []string{fixed.Commit}, calls: 3},
		{name: "a build the forge could not serve is tried again", self: "node1", interval: time.Minute, polled: []webhook.Delivery{forgeDown},
			prior: map[string]string{forgeDown.Commit: "fetch: GET https://gitlab.example/api/v4/...: 503"}, want: []string{forgeDown.Commit}, calls: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := newSim(t, "node1", "node2")
				for c, reason := range tt.prior {
					d := build(c)
					d.ID = "webhook-" + c[:4]
					s.now = s.now.Add(time.Second)
					hint, err := json.Marshal(d)
					if err != nil {
						t.Fatal(err)
					}
					s.must(state.ReceiveDelivery{Delivery: state.Delivery{ID: "d-" + c[:4], Source: "gitlab", Kind: "gitlab",
						Commit: c, Keys: d.DedupeKeys(), Hint: hint, ReceivedBy: "node1", ReceivedAt: s.now}})
					if reason != "" {
						s.must(state.StartRollout{Rollout: state.Rollout{ID: "d-" + c[:4], Phase: state.PhaseFetch, Driver: "witness", StartedAt: s.now}})
						s.must(state.FinishRollout{ID: "d-" + c[:4], Driver: "witness", Outcome: state.DeliveryFailed, Reason: reason, At: s.now})
					}
				}
				before := len(s.m.View().Deploy().Deliveries)
				log := slog.New(slog.NewTextHandler(io.Discard, nil))
				in := NewIntake(IntakeOptions{Name: tt.self, Cluster: s, Machine: s.m, Logger: log,
					Sources: []Source{{Name: "gitlab", Kind: webhook.GitLab}, {Name: "generic", Kind: webhook.Generic}},
					Now:     func() time.Time { return s.now }})
				var mu sync.Mutex
				calls := 0
				p := &Poller{Intake: in, Machine: s.m, Interval: tt.interval, Logger: log,
					Poll: func(_ context.Context, source string) ([]webhook.Delivery, error) {
						if source != "gitlab" {
							t.Errorf("polled source %s: a generic source has no API to poll", source)
						}
						mu.Lock()
						calls++
						mu.Unlock()
						return tt.polled, nil
					}}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- p.Run(ctx) }()
				time.Sleep(3*time.Minute + time.Second)
				synctest.Wait()
				cancel()
				if err := <-done; err != nil {
					t.Fatalf("Run = %v", err)
				}
				if calls != tt.calls {
					t.Errorf("Poll called %d times in 3 intervals; want %d", calls, tt.calls)
				}
				var got []string
				for _, d := range s.m.View().Deploy().Deliveries[before:] {
					got = append(got, d.Commit)
				}
				if len(got) != len(tt.want) || len(got) > 0 && got[0] != tt.want[0] {
					t.Errorf("queued %q; want %q", got, tt.want)
				}
			})
		})
	}
}
