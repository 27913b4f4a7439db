package labprobe

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/testenv"
)

func TestMovesCountsHolderChanges(t *testing.T) {
	tests := []struct {
		name    string
		changes [][]string
		want    int
	}{
		{"steady", [][]string{{"node1"}}, 0},
		{"one failover via nobody", [][]string{{"node1"}, nil, {"node2"}}, 1},
		{"flap", [][]string{{"node1"}, {"node2"}, {"node1"}}, 2},
		{"split brain then settle", [][]string{{"node1"}, {"node1", "node2"}, {"node2"}}, 1},
		{"drop and return", [][]string{{"node1"}, nil, {"node1"}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Report
			for _, h := range tt.changes {
				r.Changes = append(r.Changes, Sample{Holders: h})
			}
			if got := r.Moves(); got != tt.want {
				t.Errorf("Moves() = %d; want %d", got, tt.want)
			}
		})
	}
}

func TestOutageAndFailures(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	rs := []Result{
		{Start: at(0), End: at(5), OK: true},
		{Start: at(10), End: at(260), OK: false},
		{Start: at(20), End: at(270), OK: false},
		{Start: at(700), End: at(720), OK: true},
	}
	if d, ok := Outage(rs, at(8)); !ok || d != 712*time.Millisecond {
		t.Errorf("Outage = %v, %v; want 712ms", d, ok)
	}
	if _, ok := Outage(rs, at(800)); ok {
		t.Error("Outage after the last success should report none")
	}
	if n := Failures(rs, at(0), at(700)); n != 2 {
		t.Errorf("Failures = %d; want 2", n)
	}
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestInNamespaces checks the observer and the client against two real
// network namespaces joined by a veth pair.
func TestInNamespaces(t *testing.T) {
	testenv.NeedRoot(t, "for network namespaces")
	testenv.NeedCommand(t, "ip", "iproute2")
	srv := fmt.Sprintf("tandem-lp-s%d", os.Getpid())
	cli := fmt.Sprintf("tandem-lp-c%d", os.Getpid())
	t.Cleanup(func() {
		_ = exec.Command("ip", "netns", "del", srv).Run()
		_ = exec.Command("ip", "netns", "del", cli).Run()
	})
	run(t, "ip", "netns", "add", srv)
	run(t, "ip", "netns", "add", cli)
	run(t, "ip", "-n", srv, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", cli)
	run(t, "ip", "-n", srv, "addr", "add", "10.99.0.1/24", "dev", "eth0")
	run(t, "ip", "-n", cli, "addr", "add", "10.99.0.2/24", "dev", "eth0")
	for _, ns := range []string{srv, cli} {
		run(t, "ip", "-n", ns, "link", "set", "eth0", "up")
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	server := exec.Command("ip", "netns", "exec", srv, "python3", "-m", "http.server", "--bind", "10.99.0.100", "8080")
	vip := netip.MustParseAddr("10.99.0.100")
	obs := NewObserver(vip, map[string]string{"srv": "/run/netns/" + srv, "cli": "/run/netns/" + cli}, 5*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = obs.Run(ctx) }()
	time.Sleep(50 * time.Millisecond)
	if h := obs.Current().Holders; len(h) != 0 {
		t.Fatalf("holders before adding the VIP = %v", h)
	}
	run(t, "ip", "-n", srv, "addr", "add", "10.99.0.100/24", "dev", "eth0")
	if err := server.Start(); err != nil {
		testenv.Missing(t, "python3 http.server: %v", err)
	}
	defer func() { _ = server.Process.Kill(); _ = server.Wait() }()
	mainNS, _ := os.Readlink("/proc/self/ns/net")
	c, err := NewClient("/run/netns/"+cli, "http://10.99.0.100:8080/", 10*time.Millisecond, 250*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
	defer ccancel()
	_ = c.Run(cctx)
	if h := obs.Current().Holders; len(h) != 1 || h[0] != "srv" {
		t.Errorf("holders = %v; want [srv]", h)
	}
	rs := c.Results()
	ok := 0
	for _, r := range rs {
		if r.OK {
			ok++
		}
	}
	if ok == 0 || len(rs) < 50 {
		t.Fatalf("client: %d of %d requests succeeded; want most of >= 50", ok, len(rs))
	}
	// The lab's teardown judges a process by its main thread's namespace.
	if now, _ := os.Readlink("/proc/self/ns/net"); now != mainNS {
		t.Errorf("the process's network namespace changed from %s to %s", mainNS, now)
	}
	// The client's own namespace must not leak into the test process.
	if out, _ := exec.Command("ip", "-o", "addr").Output(); strings.Contains(string(out), "10.99.0.") {
		t.Errorf("lab addresses visible in the host namespace:\n%s", out)
	}
	run(t, "ip", "-n", cli, "addr", "add", "10.99.0.100/24", "dev", "eth0")
	time.Sleep(30 * time.Millisecond)
	if rep := obs.Report(); len(rep.SplitBrain) == 0 {
		t.Errorf("observer missed two holders of the VIP")
	}
}

// TestClientJudgesReplies checks that only a whole 200 reply counts as
// served: a reply cut off by a dying server is a failure.
func TestClientJudgesReplies(t *testing.T) {
	cases := []struct {
		name    string
		handler http.HandlerFunc
		wantOK  bool
	}{
		{"whole 200", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, `{"node":"node1"}`) }, true},
		{"503", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }, false},
		{"200 cut off", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Length", "100")
			fmt.Fprint(w, `{"no`)
			w.(http.Flusher).Flush()
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			c := &Client{url: srv.URL, timeout: time.Second, hc: srv.Client()}
			c.one(context.Background())
			rs := c.Results()
			if len(rs) != 1 {
				t.Fatalf("results = %d; want 1", len(rs))
			}
			if rs[0].OK != tc.wantOK {
				t.Errorf("OK = %v (err %q); want %v", rs[0].OK, rs[0].Err, tc.wantOK)
			}
			if !tc.wantOK && rs[0].Err == "" {
				t.Errorf("a failed request has no error")
			}
		})
	}
}
