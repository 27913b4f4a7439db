package ec2fake

import (
	"errors"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go"
)

// The fake speaks the EC2 query dialect aws-sdk-go-v2 sends and parses.
func TestWithSDK(t *testing.T) {
	f := New("AKID", map[string]string{"eipalloc-1": "192.0.2.1"})
	t.Cleanup(f.Close)
	c := ec2.New(ec2.Options{Region: "eu-central-1", BaseEndpoint: aws.String(f.URL),
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "s", ""), Retryer: aws.NopRetryer{}})
	ctx := t.Context()
	out, err := c.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: aws.String("eipalloc-1"), InstanceId: aws.String("i-1")})
	if err != nil || aws.ToString(out.AssociationId) == "" {
		t.Fatalf("AssociateAddress = %+v, %v", out, err)
	}
	// Claim-only-if-free: without AllowReassociation a bound address is refused.
	_, err = c.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: aws.String("eipalloc-1"), InstanceId: aws.String("i-2")})
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "Resource.AlreadyAssociated" {
		t.Fatalf("AssociateAddress without reassociation = %v", err)
	}
	d, err := c.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{AllocationIds: []string{"eipalloc-1"}})
	if err != nil || len(d.Addresses) != 1 || aws.ToString(d.Addresses[0].InstanceId) != "i-1" || aws.ToString(d.Addresses[0].PublicIp) != "192.0.2.1" {
		t.Fatalf("DescribeAddresses = %+v, %v", d, err)
	}
	f.Throttle(time.Second)
	_, err = c.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{AllocationIds: []string{"eipalloc-1"}})
	if !errors.As(err, &ae) || ae.ErrorCode() != "RequestLimitExceeded" {
		t.Fatalf("throttled DescribeAddresses = %v", err)
	}
}
