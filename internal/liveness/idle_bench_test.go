package liveness

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/pki"
)

// BenchmarkIdleMesh runs three meshes (node1, node2, witness) over real
// mutual-TLS streams on loopback at the production interval and reports
// the CPU they use per node, in % of one core, as the mesh's share of an
// idle agent. Run it with -benchtime=10x or more (each iteration is one
// second) and -cpuprofile to see where it goes.
func BenchmarkIdleMesh(b *testing.B) {
	creds1, others := tlsPeers(b, "node2", "witness")
	creds := map[string]*pki.Node{"node1": creds1, "node2": others["node2"], "witness": others["witness"]}
	addrs, starts := map[string]string{}, map[string]func(*Mesh){}
	for name, c := range creds {
		ln, _, start := listen(b, c)
		addrs[name], starts[name] = ln.Addr().String(), start
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, len(creds))
	for name, c := range creds {
		m, err := New(Options{Self: name, Machine: addrState(b, addrs), Tr: &StreamTransport{TLS: c.ClientConfig()},
			Interval: 50 * time.Millisecond, Lease: 500 * time.Millisecond})
		if err != nil {
			b.Fatal(err)
		}
		fact := []byte("0123456789abcdef0123456789abcdef")
		if err := m.Contribute(Source{Name: "failover", Value: func() []byte { return fact }}); err != nil {
			b.Fatal(err)
		}
		starts[name](m)
		go func() { _ = m.Run(ctx); done <- struct{}{} }()
	}
	defer func() {
		cancel()
		for range creds {
			<-done
		}
	}()
	time.Sleep(time.Second) // streams up
	cpu := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			b.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	b.ResetTimer()
	start, c0 := time.Now(), cpu()
	for range b.N {
		time.Sleep(time.Second)
	}
	used, took := cpu()-c0, time.Since(start)
	b.StopTimer()
	b.ReportMetric(100*used.Seconds()/took.Seconds()/float64(len(creds)), "%core/node")
}
