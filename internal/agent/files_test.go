package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/files"
)

func TestOutsideSandbox(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "uploads")
	argv := []string{"rsync", "-a"}
	t.Setenv("INVOCATION_ID", "")
	if got := outsideSandbox(discard{})(dir, argv); !slices.Equal(got, argv) {
		t.Errorf("outside systemd: %q", got)
	}
	t.Setenv("INVOCATION_ID", "x")
	if got := outsideSandbox(discard{})(dir, argv); !slices.Equal(got, argv) {
		t.Errorf("writable dir under systemd: %q; want rsync as is", got)
	}
	if os.Geteuid() != 0 {
		ro := t.TempDir()
		if err := os.Chmod(ro, 0o555); err != nil {
			t.Fatal(err)
		}
		got := outsideSandbox(discard{})(filepath.Join(ro, "uploads"), argv)
		if len(got) < 3 || got[0] != "systemd-run" || !slices.Equal(got[len(got)-2:], argv) {
			t.Errorf("read-only dir under systemd: %q; want systemd-run ... rsync -a", got)
		}
	}
}

type discard struct{}

func (discard) Debug(string, ...any) {}

type failingPeers struct{}

func (failingPeers) Sync(context.Context, string, files.SyncRequest) (files.SyncReply, error) {
	return files.SyncReply{}, errors.New("dial b: connection refused")
}

type noTransfer struct{}

func (noTransfer) Pull(context.Context, files.Pull) (files.PullResult, error) {
	return files.PullResult{}, nil
}

// TestFilesMetricsExportLag: /metrics carries, on the source, each
// receiver's lag and pending bytes per path; here the receiver is
// unreachable, so the lag grows with the fake clock.
func TestFilesMetricsExportLag(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := state.New()
		for i, cmd := range []state.Command{
			state.AddMember{Member: state.Member{Name: "a", Role: state.RoleApp, Address: "a:1"}},
			state.AddMember{Member: state.Member{Name: "b", Role: state.RoleApp, Address: "b:1"}},
			state.SetHolder{Node: "a", Active: true, Reason: "test"},
		} {
			b, _ := state.Encode(cmd)
			if err := m.Apply(uint64(i+1), b); err != nil {
				t.Fatal(err)
			}
		}
		c, err := files.New(files.Options{Name: "a", Specs: []files.Spec{{Dir: "/srv/up", Delete: true}}, Machine: m,
			Held:     func() files.Held { return files.Held{Holding: true, Epoch: 1} },
			Transfer: noTransfer{}, Peers: failingPeers{}, FullScan: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go c.Run(ctx)
		time.Sleep(5 * time.Second)
		synctest.Wait()
		reg := prometheus.NewRegistry()
		if err := reg.Register(filesCollector{c}); err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			for _, mt := range mf.GetMetric() {
				key := mf.GetName()
				for _, l := range mt.GetLabel() {
					key += "," + l.GetName() + "=" + l.GetValue()
				}
				switch {
				case mt.Gauge != nil:
					got[key] = mt.GetGauge().GetValue()
				case mt.Counter != nil:
					got[key] = mt.GetCounter().GetValue()
				}
			}
		}
		if lag := got["tandem_files_lag_seconds,node=b,path=/srv/up"]; lag < 4 {
			t.Errorf("lag of the unreachable receiver = %v s; want about 5 (metrics: %v)", lag, got)
		}
		if _, ok := got["tandem_files_pending_bytes,node=b,path=/srv/up"]; !ok {
			t.Errorf("no pending bytes for b: %v", got)
		}
		if got["tandem_files_sending"] != 1 || got["tandem_files_syncs_total,node=b,outcome=error,path=/srv/up"] < 1 {
			t.Errorf("sending and failed syncs not exported: %v", got)
		}
		cancel()
		synctest.Wait()
	})
}
