// Package vip is the home of tandem's floating-IP providers. Each provider is
// its own package with a concrete type that the agent builds from config and
// hands to the failover controller, which declares the seam it needs:
//
//	Acquire(ctx context.Context) error     // make this node the holder; returns once confirmed
//	Release(ctx context.Context) error     // give the IP up if held; idempotent
//	Held(ctx context.Context) (bool, error) // does this node hold it now?
//
// Every provider also has Close() error.
//
//	linux          on-link VIP: netlink address + gratuitous ARP bursts and refresh
//	digitalocean   reserved IP via godo; held from the metadata service or the API
//	hetzner        floating IP via hcloud-go
//	aws            Elastic IP via EC2 AssociateAddress / DescribeAddresses
//	exec           the operator's acquire / release / holder scripts
//
// Cloud providers' Release is a no-op: unassigning could undo the next
// holder's assignment, and the next Acquire moves the IP anyway.
//
// viptest is the conformance suite all of them pass; dofake, hcloudfake and
// ec2fake are local API servers that reproduce slow actions, pending-event /
// locked refusals, rate limiting and a third holder.
package vip
