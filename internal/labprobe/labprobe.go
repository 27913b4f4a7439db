// Package labprobe measures a lab cluster from outside: a split-brain
// observer that samples every node's floating IP through netlink in the
// node's network namespace, and a client that sends requests through the
// floating IP from the client namespace. The end-to-end tests and the
// failover benchmark both use it. Linux only; needs root.
package labprobe

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Sample is one instant of the observer: the nodes that had the VIP.
type Sample struct {
	At      time.Time
	Holders []string
}

// Observer samples which nodes have the VIP configured.
type Observer struct {
	vip     netip.Addr
	nodes   map[string]string // name -> netns path
	every   time.Duration
	mu      sync.Mutex
	samples int
	split   []Sample // samples with two or more holders
	last    Sample
	changes []Sample // every change of the holder set
}

// NewObserver watches vip on the nodes (name -> network namespace path).
func NewObserver(vip netip.Addr, nodes map[string]string, every time.Duration) *Observer {
	return &Observer{vip: vip, nodes: nodes, every: every}
}

// Run samples until ctx ends.
func (o *Observer) Run(ctx context.Context) error {
	handles := map[string]*netlink.Handle{}
	defer func() {
		for _, h := range handles {
			h.Close()
		}
	}()
	for name, path := range o.nodes {
		ns, err := netns.GetFromPath(path)
		if err != nil {
			return fmt.Errorf("observer: open %s: %w", path, err)
		}
		h, err := netlink.NewHandleAt(ns)
		ns.Close()
		if err != nil {
			return fmt.Errorf("observer: netlink in %s: %w", path, err)
		}
		handles[name] = h
	}
	names := make([]string, 0, len(handles))
	for n := range handles {
		names = append(names, n)
	}
	slices.Sort(names)
	t := time.NewTicker(o.every)
	defer t.Stop()
	for {
		var holders []string
		for _, n := range names {
			if has(handles[n], o.vip) {
				holders = append(holders, n)
			}
		}
		o.record(Sample{At: time.Now(), Holders: holders})
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func has(h *netlink.Handle, vip netip.Addr) bool {
	addrs, err := h.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == vip {
			return true
		}
	}
	return false
}

func (o *Observer) record(s Sample) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.samples++
	if len(s.Holders) > 1 {
		o.split = append(o.split, s)
	}
	if !slices.Equal(s.Holders, o.last.Holders) || o.samples == 1 {
		o.changes = append(o.changes, s)
	}
	o.last = s
}

// Report summarises what the observer saw.
type Report struct {
	Samples     int
	SplitBrain  []Sample // instants with more than one holder
	Changes     []Sample // each change of the set of holders
	MaxInterval time.Duration
}

// Report returns the observations so far.
func (o *Observer) Report() Report {
	o.mu.Lock()
	defer o.mu.Unlock()
	return Report{Samples: o.samples, SplitBrain: slices.Clone(o.split), Changes: slices.Clone(o.changes)}
}

// Current returns the latest sample.
func (o *Observer) Current() Sample {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.last
}

// Moves counts the changes of holder after the first: a change from one
// holder to none and then to another counts once.
func (r Report) Moves() int {
	moves := 0
	prev := ""
	for _, c := range r.Changes {
		if len(c.Holders) != 1 {
			continue
		}
		if prev != "" && c.Holders[0] != prev {
			moves++
		}
		prev = c.Holders[0]
	}
	return moves
}

// Result is one request of the client.
type Result struct {
	Start time.Time
	End   time.Time
	OK    bool
	Body  string
	Err   string
}

// Client sends a request through the VIP every interval, each with its own
// timeout and a fresh connection, from inside a network namespace.
type Client struct {
	url      string
	interval time.Duration
	timeout  time.Duration
	hc       *http.Client
	mu       sync.Mutex
	results  []Result
}

// NewClient makes a client whose connections are opened in the network
// namespace at nsPath.
func NewClient(nsPath, url string, interval, timeout time.Duration) (*Client, error) {
	d, err := newNSDialer(nsPath)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}
	return &Client{url: url, interval: interval, timeout: timeout,
		hc: &http.Client{Transport: tr, Timeout: timeout}}, nil
}

// Run sends requests until ctx ends.
func (c *Client) Run(ctx context.Context) error {
	t := time.NewTicker(c.interval)
	defer t.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.one(ctx)
		}()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (c *Client) one(ctx context.Context) {
	r := Result{Start: time.Now()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err == nil {
		var resp *http.Response
		resp, err = c.hc.Do(req)
		if err == nil {
			// A 200 whose body was cut off (the server died mid-reply) is a
			// failure: the user saw a broken page, and the body does not say
			// who served it.
			var b []byte
			b, err = io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			r.Body = string(b)
			switch {
			case err != nil:
				err = fmt.Errorf("reading the reply: %w", err)
			case resp.StatusCode != http.StatusOK:
				err = fmt.Errorf("status %s", resp.Status)
			default:
				r.OK = true
			}
		}
	}
	if err != nil {
		r.Err = err.Error()
	}
	r.End = time.Now()
	if ctx.Err() != nil && !r.OK {
		return // cut short by the end of the run, not by the cluster
	}
	c.mu.Lock()
	c.results = append(c.results, r)
	c.mu.Unlock()
}

// Results returns the requests so far, in order of start.
func (c *Client) Results() []Result {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := slices.Clone(c.results)
	slices.SortFunc(out, func(a, b Result) int { return a.Start.Compare(b.Start) })
	return out
}

// Outage is the time from a fault at t to the first successful request
// started after t; ok is false when none succeeded.
func Outage(results []Result, t time.Time) (time.Duration, bool) {
	for _, r := range results {
		if r.OK && r.Start.After(t) {
			return r.End.Sub(t), true
		}
	}
	return 0, false
}

// Failures counts failed requests started in [from, to).
func Failures(results []Result, from, to time.Time) int {
	n := 0
	for _, r := range results {
		if !r.OK && !r.Start.Before(from) && r.Start.Before(to) {
			n++
		}
	}
	return n
}

// Keep the main goroutine on the main thread, so that the dials below never
// run there: /proc/PID/ns/net shows the main thread's namespace, and the
// lab's teardown kills every process it finds in a lab namespace.
func init() { runtime.LockOSThread() }

// nsDialer opens each connection from an OS thread that enters the network
// namespace only for the dial and then returns to its own; the socket keeps
// the namespace it was created in. Each dial has its own goroutine, so a
// slow dial never delays the next request.
type nsDialer struct {
	path   string
	target netns.NsHandle
}

func newNSDialer(path string) (*nsDialer, error) {
	target, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("client: open %s: %w", path, err)
	}
	return &nsDialer{path: path, target: target}, nil
}

// Dial opens one connection from inside the network namespace at nsPath
// (the lab's client plays the internet this way: an SSH client, a port
// probe).
func Dial(ctx context.Context, nsPath, network, addr string) (net.Conn, error) {
	d, err := newNSDialer(nsPath)
	if err != nil {
		return nil, err
	}
	defer d.target.Close()
	return d.DialContext(ctx, network, addr)
}

type dialReply struct {
	conn net.Conn
	err  error
}

func (d *nsDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	reply := make(chan dialReply, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			reply <- dialReply{err: fmt.Errorf("client: current namespace: %w", err)}
			return
		}
		defer orig.Close()
		if err := netns.Set(d.target); err != nil {
			runtime.UnlockOSThread()
			reply <- dialReply{err: fmt.Errorf("client: enter %s: %w", d.path, err)}
			return
		}
		var nd net.Dialer
		c, err := nd.DialContext(ctx, network, addr)
		// Back home before the thread serves anyone else; if that fails the
		// thread stays locked and dies with this goroutine.
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		reply <- dialReply{c, err}
	}()
	r := <-reply
	return r.conn, r.err
}
