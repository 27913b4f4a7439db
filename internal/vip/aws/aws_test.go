package aws

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/vip/aws/ec2fake"
	"github.com/tandem-ha/tandem/internal/vip/viptest"
)

const (
	akid  = "AKIDTEST"
	alloc = "eipalloc-0123456789abcdef0"
)

func newFake(t *testing.T) *ec2fake.Server {
	f := ec2fake.New(akid, map[string]string{alloc: "192.0.2.44"})
	t.Cleanup(f.Close)
	return f
}

// newProvider gives node A everything from IMDS and node B everything from
// options, so both ways are exercised.
func newProvider(t *testing.T, f *ec2fake.Server, instance string, fromIMDS bool) *Provider {
	t.Helper()
	o := Options{
		AllocationID: alloc, Endpoint: f.URL,
		AccessKeyID: akid, SecretAccessKey: "secret",
		PollInterval: 20 * time.Millisecond, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if fromIMDS {
		o.IMDSEndpoint = f.IMDS(instance, "eu-central-1")
	} else {
		o.InstanceID, o.Region = instance, "eu-central-1"
	}
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConformance(t *testing.T) {
	viptest.Run(t, func(t *testing.T) viptest.Env {
		f := newFake(t)
		return viptest.Env{
			A: newProvider(t, f, "i-0aaaaaaaaaaaaaaa1", true), B: newProvider(t, f, "i-0bbbbbbbbbbbbbbb2", false),
			Exclusive:   true,
			ThirdParty:  func(t *testing.T) { f.SetHolder(alloc, "i-0ccccccccccccccc3") },
			ActionDelay: func(t *testing.T, d time.Duration) { f.SetPropagationDelay(d) },
			RateLimit: func(t *testing.T, d time.Duration) {
				f.Throttle(d)
				viptest.ExpectServed(t, "throttling error", func() int { return f.Stats().Throttled })
			},
			// EC2 throttling carries no reset header; the provider backs off.
			RateLimitHeaders: false,
			Assigns:          func() int { return f.Stats().Associates },
		}
	})
}

func TestErrors(t *testing.T) {
	f := newFake(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name string
		o    Options
		fail string
		want string
	}{
		{"bad key", Options{AllocationID: alloc, InstanceID: "i-1", Region: "eu-central-1", AccessKeyID: "WRONG", SecretAccessKey: "x"}, "", "AuthFailure"},
		{"unknown allocation", Options{AllocationID: "eipalloc-404", InstanceID: "i-1", Region: "eu-central-1", AccessKeyID: akid, SecretAccessKey: "x"}, "", "InvalidAllocationID.NotFound"},
		{"permanent error", Options{AllocationID: alloc, InstanceID: "i-1", Region: "eu-central-1", AccessKeyID: akid, SecretAccessKey: "x"}, "UnauthorizedOperation", "UnauthorizedOperation"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Endpoint, tc.o.Logger, tc.o.MinBackoff = f.URL, log, 10*time.Millisecond
			if tc.fail != "" {
				f.FailNext(tc.fail, 1)
			}
			p, err := New(tc.o)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Acquire(t.Context()); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Acquire = %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"no allocation", Options{Logger: log}, "allocation id"},
		{"public ip instead", Options{AllocationID: "192.0.2.1", Logger: log}, "eipalloc-"},
		{"bad instance", Options{AllocationID: alloc, InstanceID: "web1", Logger: log}, "instance id"},
		{"half credentials", Options{AllocationID: alloc, AccessKeyID: "x", Logger: log}, "both"},
		{"no logger", Options{AllocationID: alloc}, "Logger"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want error containing %q", err, tc.want)
			}
		})
	}
}

// Without static keys the SDK's default chain is used; here it finds keys in
// the environment.
func TestDefaultCredentialChain(t *testing.T) {
	f := newFake(t)
	t.Setenv("AWS_ACCESS_KEY_ID", akid)
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
	p, err := New(Options{AllocationID: alloc, InstanceID: "i-0aaaaaaaaaaaaaaa1", Region: "eu-central-1", Endpoint: f.URL,
		PollInterval: 10 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Acquire(t.Context()); err != nil {
		t.Fatal(err)
	}
	if held, err := p.Held(t.Context()); err != nil || !held {
		t.Fatalf("Held = %v, %v", held, err)
	}
}
