package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"maps"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/guard"
	"github.com/tandem-ha/tandem/internal/guard/bans"
)

// TestBanAuthorization is the attacker's view of the ban commands: only an
// app node that is a current member may ban, in its own name. A witness, a
// removed node and an outsider holding a certificate from the cluster CA
// that never joined are refused, and the refusals leave no ban behind.
func TestBanAuthorization(t *testing.T) {
	ctx := context.Background()
	c, ca, a := founded(t)
	tok, err := a.CreateToken(ctx, time.Hour, 3, "")
	if err != nil {
		t.Fatal(err)
	}
	w, _ := c.join(a, tok.String(), "w", state.RoleWitness)
	b, _ := c.join(a, tok.String(), "b", state.RoleApp)
	r, _ := c.join(a, tok.String(), "r", state.RoleApp)
	eventually(t, 10*time.Second, "four members", func() bool { return len(a.Machine().View().Members) == 4 })
	rcreds := r.Credentials()
	if err := r.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.RemoveServer(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	outsider := issue(t, ca, "o")

	ban := func(by, addr string) []byte {
		return mustEncode(state.BanAddr{Addr: netip.MustParseAddr(addr), Jail: "sshd", By: by, At: time.Now(), Bantime: time.Hour})
	}
	post := func(client *http.Client, body []byte) (int, string) {
		t.Helper()
		resp, err := client.Post("https://"+a.Addr()+"/v1/apply", "application/json", bytes.NewReader(body))
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(out)
	}
	withCert := func(cert tls.Certificate) *http.Client {
		cfg := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, NextProtos: []string{"http/1.1"},
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 5 * time.Second}
	}
	refused := []struct {
		name   string
		client *http.Client
		body   []byte
		code   int
		says   string
	}{
		{"the witness", w.Client(), ban("w", "203.0.113.1"), http.StatusForbidden, "forbidden"},
		{"an app node in another's name", b.Client(), ban("a", "203.0.113.2"), http.StatusForbidden, "forbidden"},
		{"the witness unbanning", w.Client(), mustEncode(state.UnbanAddr{Addr: netip.MustParseAddr("203.0.113.9"), By: "w", At: time.Now()}), http.StatusForbidden, "forbidden"},
		{"a removed node", withCert(rcreds.Cert), ban("r", "203.0.113.3"), http.StatusUnauthorized, "not a member"},
		{"an outsider with a CA certificate", withCert(outsider.Cert), ban("o", "203.0.113.4"), http.StatusUnauthorized, "not a member"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			if code, body := post(tt.client, tt.body); code != tt.code || !strings.Contains(body, tt.says) {
				t.Errorf("ban = %d %s; want %d %s", code, body, tt.code, tt.says)
			}
		})
	}
	if n := len(a.Machine().View().Guard().Bans); n != 0 {
		t.Fatalf("refused bans left %d bans", n)
	}
	// The control: b, a current app member, bans in its own name.
	if code, body := post(b.Client(), ban("b", "203.0.113.9")); code != http.StatusOK {
		t.Fatalf("b's own ban = %d %s; want 200", code, body)
	}
	if _, ok := a.Machine().View().Guard().Bans[netip.MustParseAddr("203.0.113.9")]; !ok {
		t.Fatal("b's ban is not in the state")
	}
}

// fakeKernel records what a node's controller enforces.
type fakeKernel struct {
	mu   sync.Mutex
	bans map[netip.Addr]time.Duration
	at   map[netip.Addr]time.Time // when each address first arrived
}

func (k *fakeKernel) Enforce(_ context.Context, b map[netip.Addr]time.Duration) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.at == nil {
		k.at = map[netip.Addr]time.Time{}
	}
	for a := range b {
		if _, ok := k.bans[a]; !ok {
			k.at[a] = time.Now()
		}
	}
	k.bans = maps.Clone(b)
	return nil
}

func (k *fakeKernel) has(a netip.Addr) (time.Duration, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	d, ok := k.bans[a]
	return d, ok
}

// TestBansAcrossTheCluster runs a ban controller on each node of a
// three-node cluster on raft's in-memory transport: a decision on a
// follower is forwarded, committed and enforced on every node well within
// a second; a repeat offender's bantime grows; a member's address is never
// banned; an unban on another node lifts the ban everywhere; and the bans
// survive a restart of every node (I4).
func TestBansAcrossTheCluster(t *testing.T) {
	c := newMemCluster(t, 3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kernels := make([]*fakeKernel, 3)
	ctrls := make([]*bans.Controller, 3)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for i, n := range c.nodes {
		kernels[i] = &fakeKernel{}
		ctrls[i] = bans.New(bans.Options{Name: n.Name(), Cluster: n, Machine: n.Machine(), Enforcer: kernels[i], Log: testLogger(t)})
		wg.Go(func() { _ = ctrls[i].Run(ctx) })
	}
	attacker := netip.MustParseAddr("203.0.113.7")
	follower := c.follower()
	fi := 0
	for i, n := range c.nodes {
		if n == follower {
			fi = i
		}
	}
	decided := time.Now()
	ctrls[fi].Decide(guard.Decision{Addr: attacker, Jail: "sshd", Failures: 5, Bantime: time.Hour, MaxBantime: 4 * time.Hour, Factor: 2, At: decided})
	eventually(t, 2*time.Second, "the ban on every node", func() bool {
		for _, k := range kernels {
			if _, ok := k.has(attacker); !ok {
				return false
			}
		}
		return true
	})
	for i, k := range kernels {
		k.mu.Lock()
		lat := k.at[attacker].Sub(decided)
		k.mu.Unlock()
		t.Logf("node %d enforced %v after %v", i+1, attacker, lat)
		if lat > time.Second {
			t.Errorf("node %d enforced the ban %v after the decision; want within 1 s", i+1, lat)
		}
		if d, _ := k.has(attacker); d < 59*time.Minute || d > time.Hour {
			t.Errorf("node %d holds the ban for %v; want about an hour", i+1, d)
		}
	}
	// A member's address is refused at proposal, with a reason.
	if _, err := ctrls[0].Ban(ctx, netip.MustParseAddrPort(c.nodes[1].Addr()).Addr(), time.Hour, "test"); err == nil {
		t.Error("banning a member's address succeeded")
	}
	// Unban on another node lifts it everywhere.
	if err := ctrls[(fi+1)%3].Unban(ctx, attacker); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "the unban on every node", func() bool {
		for _, k := range kernels {
			if _, ok := k.has(attacker); ok {
				return false
			}
		}
		return true
	})
	// Ban twice more: the second offence's bantime doubles.
	second := netip.MustParseAddr("2001:db8::66")
	for i, at := range []time.Time{time.Now().Add(-2 * time.Hour), time.Now()} {
		d := guard.Decision{Addr: second, Jail: "sshd", Bantime: time.Hour, MaxBantime: 4 * time.Hour, Factor: 2, At: at}
		ctrls[i].Decide(d)
		eventually(t, 2*time.Second, "the decision committed", func() bool {
			b, ok := c.nodes[2].Machine().View().Guard().Bans[second]
			return ok && b.Offence == i+1
		})
	}
	eventually(t, 2*time.Second, "the grown ban on every node", func() bool {
		for _, k := range kernels {
			if d, ok := k.has(second); !ok || d < 119*time.Minute {
				return false
			}
		}
		return true
	})
	// I4: every node restarts; the bans come back from the log/snapshot.
	cancel()
	wg.Wait()
	want := c.nodes[0].Machine().View().Guard()
	for i := range c.nodes {
		if err := c.nodes[i].raft.Snapshot().Error(); err != nil {
			t.Fatal(err)
		}
	}
	shutdownAll(c.nodes)
	for i := range c.nodes {
		n, err := New(context.Background(), c.opts(i, c.trans[i]))
		if err != nil {
			t.Fatal(err)
		}
		c.nodes[i] = n
	}
	c.connectAll()
	c.leader()
	for i, n := range c.nodes {
		eventually(t, 5*time.Second, "the bans restored", func() bool {
			g := n.Machine().View().Guard()
			return len(g.Bans) == len(want.Bans) && g.Bans[second].Offence == 2 && g.History[second].Count == 2
		})
		_ = i
	}
}
