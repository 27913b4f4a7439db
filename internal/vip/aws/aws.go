// Package aws moves an EC2 Elastic IP with AssociateAddress.
//
// Acquire associates the address with this instance (AllowReassociation, so
// it is taken from whoever holds it) and returns once DescribeAddresses shows
// the new association: EC2 is eventually consistent, so the call returning is
// not proof. Throttling (RequestLimitExceeded) and server errors are retried
// with exponential backoff; EC2 sends no rate-limit headers. Release is a
// no-op: the next holder's association moves the address.
package aws

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go"

	"github.com/tandem-ha/tandem/internal/vip/internal/retry"
)

// Options configures a Provider.
type Options struct {
	// AllocationID is the Elastic IP's allocation id (eipalloc-...).
	AllocationID string
	// InstanceID is this instance; "" reads it from the metadata service.
	InstanceID string
	// Region is the EC2 region; "" reads it from the metadata service.
	Region string
	// Endpoint overrides the EC2 endpoint (tests, VPC endpoints).
	Endpoint string
	// IMDSEndpoint overrides the instance metadata endpoint.
	IMDSEndpoint string
	// AccessKeyID, SecretAccessKey and SessionToken are static credentials;
	// when AccessKeyID is empty the SDK's default chain (environment, shared
	// files, instance role) is used.
	AccessKeyID, SecretAccessKey, SessionToken string
	// PollInterval is the wait between DescribeAddresses polls (default 1s).
	PollInterval time.Duration
	// MinBackoff and MaxBackoff bound the backoff when throttled or on server
	// errors (defaults 1s and 20s).
	MinBackoff, MaxBackoff time.Duration
	// HTTPClient is used for EC2 and IMDS calls (default: the SDK's client
	// with a 15s timeout, which honours AWS_CA_BUNDLE).
	HTTPClient *http.Client
	Logger     *slog.Logger
}

// Provider holds one Elastic IP for one instance. Safe for concurrent use.
type Provider struct {
	o      Options
	hc     httpDoer
	backof retry.Backoff

	mu       sync.Mutex
	ec2      *ec2Calls // nil until setup
	instance string
}

// ec2Calls are the two EC2 operations the provider makes, as method
// values. The client is kept out of every type's fields on purpose: the
// binary uses reflection (text/template), so the linker keeps every
// exported method of a type reachable from an interface value, and a
// *ec2.Client field kept all ~800 operations of EC2: 19 MB of code, and
// megabytes of it resident in every agent.
type ec2Calls struct {
	associate func(context.Context, *ec2.AssociateAddressInput, ...func(*ec2.Options)) (*ec2.AssociateAddressOutput, error)
	describe  func(context.Context, *ec2.DescribeAddressesInput, ...func(*ec2.Options)) (*ec2.DescribeAddressesOutput, error)
}

// New checks the options; it makes no requests.
func New(o Options) (*Provider, error) {
	if !strings.HasPrefix(o.AllocationID, "eipalloc-") {
		return nil, fmt.Errorf("aws vip: allocation id %q is not an Elastic IP allocation id (eipalloc-...)", o.AllocationID)
	}
	if o.InstanceID != "" && !strings.HasPrefix(o.InstanceID, "i-") {
		return nil, fmt.Errorf("aws vip: instance id %q is not an EC2 instance id (i-...)", o.InstanceID)
	}
	if (o.AccessKeyID == "") != (o.SecretAccessKey == "") {
		return nil, errors.New("aws vip: set both the access key id and the secret access key, or neither to use the default credential chain")
	}
	if o.Logger == nil {
		return nil, errors.New("aws vip: Logger is nil")
	}
	o.PollInterval = retry.Or(o.PollInterval, time.Second)
	o.MinBackoff = retry.Or(o.MinBackoff, time.Second)
	o.MaxBackoff = retry.Or(o.MaxBackoff, 20*time.Second)
	var hc httpDoer = awshttp.NewBuildableClient().WithTimeout(15 * time.Second)
	if o.HTTPClient != nil {
		hc = o.HTTPClient
	}
	return &Provider{o: o, hc: hc, backof: retry.Backoff{Min: o.MinBackoff, Max: o.MaxBackoff}}, nil
}

type httpDoer interface {
	Do(*http.Request) (*http.Response, error)
}

// setup builds the EC2 client and learns the instance id, once.
func (p *Provider) setup(ctx context.Context) (*ec2Calls, string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ec2 != nil {
		return p.ec2, p.instance, nil
	}
	instance, region := p.o.InstanceID, p.o.Region
	if instance == "" || region == "" {
		md := imds.New(imds.Options{Endpoint: p.o.IMDSEndpoint, HTTPClient: p.hc})
		if instance == "" {
			out, err := md.GetMetadata(ctx, &imds.GetMetadataInput{Path: "instance-id"})
			if err != nil {
				return nil, "", fmt.Errorf("instance id from metadata: %w (set the instance id in the config when not on EC2)", err)
			}
			instance, err = readAll(out.Content)
			if err != nil || !strings.HasPrefix(instance, "i-") {
				return nil, "", fmt.Errorf("instance id from metadata: unexpected %q (%v)", instance, err)
			}
		}
		if region == "" {
			out, err := md.GetRegion(ctx, &imds.GetRegionInput{})
			if err != nil {
				return nil, "", fmt.Errorf("region from metadata: %w (set the region in the config when not on EC2)", err)
			}
			region = out.Region
		}
	}
	retryer := func() aws.Retryer { return aws.NopRetryer{} }
	var c *ec2.Client
	if p.o.AccessKeyID != "" {
		c = ec2.New(ec2.Options{
			Region:      region,
			Credentials: credentials.NewStaticCredentialsProvider(p.o.AccessKeyID, p.o.SecretAccessKey, p.o.SessionToken),
			HTTPClient:  p.hc,
			Retryer:     retryer(),
		}, p.endpoint)
	} else {
		cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion(region), config.WithHTTPClient(p.hc), config.WithRetryer(retryer))
		if err != nil {
			return nil, "", fmt.Errorf("aws config: %w", err)
		}
		c = ec2.NewFromConfig(cfg, p.endpoint)
	}
	p.ec2 = &ec2Calls{associate: c.AssociateAddress, describe: c.DescribeAddresses}
	p.instance = instance
	return p.ec2, instance, nil
}

func (p *Provider) endpoint(o *ec2.Options) {
	if p.o.Endpoint != "" {
		o.BaseEndpoint = aws.String(p.o.Endpoint)
	}
}

// Acquire associates the address with this instance and returns once
// DescribeAddresses confirms it, or ctx ends.
func (p *Provider) Acquire(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("associate %s: %w", p.o.AllocationID, err)
	}
	c, instance, err := p.setup(ctx)
	if err != nil {
		return fmt.Errorf("associate %s: %w", p.o.AllocationID, err)
	}
	holder, err := p.holder(ctx, c)
	if err != nil {
		return fmt.Errorf("associate %s: %w", p.o.AllocationID, err)
	}
	if holder == instance {
		return nil
	}
	start := time.Now()
	for attempt := 0; ; attempt++ {
		_, err := c.associate(ctx, &ec2.AssociateAddressInput{
			AllocationId:       aws.String(p.o.AllocationID),
			InstanceId:         aws.String(instance),
			AllowReassociation: aws.Bool(true),
		})
		if err == nil {
			break
		}
		if !p.retryable(ctx, err) {
			return fmt.Errorf("associate %s with %s: %w", p.o.AllocationID, instance, err)
		}
		wait := p.backof.Delay(attempt)
		p.o.Logger.Warn("vip associate failed, retrying", "provider", "aws", "allocation", p.o.AllocationID, "err", err, "wait", wait)
		if err := retry.Sleep(ctx, wait); err != nil {
			return fmt.Errorf("associate %s with %s: %w", p.o.AllocationID, instance, err)
		}
	}
	// EC2 is eventually consistent: the call returning is not proof.
	holderOf := func(ctx context.Context) (string, error) { return p.holder(ctx, c) }
	stale := func(holder string) string { return fmt.Sprintf("DescribeAddresses still shows %q", holder) }
	if err := retry.Await(ctx, p.o.PollInterval, instance, holderOf, stale); err != nil {
		return fmt.Errorf("associate %s with %s: %w", p.o.AllocationID, instance, err)
	}
	p.o.Logger.Info("vip acquired", "provider", "aws", "allocation", p.o.AllocationID, "instance", instance, "took", time.Since(start))
	return nil
}

// Release does nothing; see the package comment.
func (p *Provider) Release(ctx context.Context) error {
	return nil
}

// Held asks DescribeAddresses whether the address is associated with this
// instance.
func (p *Provider) Held(ctx context.Context) (bool, error) {
	c, instance, err := p.setup(ctx)
	if err != nil {
		return false, fmt.Errorf("holder of %s: %w", p.o.AllocationID, err)
	}
	holder, err := p.holder(ctx, c)
	if err != nil {
		return false, fmt.Errorf("holder of %s: %w", p.o.AllocationID, err)
	}
	return holder == instance, nil
}

// holder returns the instance the address is associated with, "" for none.
func (p *Provider) holder(ctx context.Context, c *ec2Calls) (string, error) {
	for attempt := 0; ; attempt++ {
		out, err := c.describe(ctx, &ec2.DescribeAddressesInput{AllocationIds: []string{p.o.AllocationID}})
		if err == nil {
			if len(out.Addresses) != 1 {
				return "", fmt.Errorf("describe addresses: %d results for %s, want 1", len(out.Addresses), p.o.AllocationID)
			}
			return aws.ToString(out.Addresses[0].InstanceId), nil
		}
		if !p.retryable(ctx, err) {
			return "", fmt.Errorf("describe addresses: %w", err)
		}
		if err := retry.Sleep(ctx, p.backof.Delay(attempt)); err != nil {
			return "", fmt.Errorf("describe addresses: %w", err)
		}
	}
}

// retryable: throttling, server-side errors and transport failures.
func (p *Provider) retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "RequestLimitExceeded", "Throttling", "ThrottlingException", "RequestThrottled",
			"InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable":
			return true
		}
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode() >= 500
	}
	return ae == nil // no response at all: network trouble
}

func readAll(rc io.ReadCloser) (string, error) {
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 4<<10))
	return strings.TrimSpace(string(b)), err
}

// Close releases nothing and exists so every provider is an io.Closer.
func (p *Provider) Close() error { return nil }
