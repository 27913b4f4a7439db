package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tandem-ha/tandem/internal/config"
	"github.com/tandem-ha/tandem/internal/failover"
	"github.com/tandem-ha/tandem/internal/shellwords"
	"github.com/tandem-ha/tandem/internal/vip/aws"
	"github.com/tandem-ha/tandem/internal/vip/digitalocean"
	"github.com/tandem-ha/tandem/internal/vip/drain"
	vipexec "github.com/tandem-ha/tandem/internal/vip/exec"
	"github.com/tandem-ha/tandem/internal/vip/hetzner"
	"github.com/tandem-ha/tandem/internal/vip/linux"
)

// anchorer is a provider that can tell the local address its IP's traffic
// arrives at (DigitalOcean's anchor IP).
type anchorer interface {
	AnchorIP(ctx context.Context) (netip.Addr, error)
}

// anchorTimeout bounds the metadata lookup at start.
const anchorTimeout = 5 * time.Second

// newProvider builds the floating-IP provider named in the configuration,
// draining through vip.drain_address when there is one (see package drain).
func newProvider(ctx context.Context, cfg *config.Config, log *slog.Logger) (failover.Provider, error) {
	p, err := baseProvider(cfg, log)
	if err != nil {
		return nil, err
	}
	var a netip.Addr
	switch {
	case cfg.VIP.DrainAddress != "":
		if a, err = netip.ParseAddr(cfg.VIP.DrainAddress); err != nil {
			return nil, fmt.Errorf("vip.drain_address: %w", err)
		}
	case cfg.VIP.Provider == config.ProviderHetzner:
		// Hetzner routes the floating IP to the server, where it is
		// configured on the interface: connections arrive addressed to it.
		if a, err = netip.ParseAddr(cfg.VIP.Address); err != nil {
			return nil, fmt.Errorf("vip.address: %w", err)
		}
	default:
		an, ok := p.(anchorer)
		if !ok {
			return p, nil
		}
		actx, cancel := context.WithTimeout(ctx, anchorTimeout)
		a, err = an.AnchorIP(actx)
		cancel()
		if err != nil {
			log.Warn("planned moves will not drain: the address the IP's traffic arrives at is unknown; set vip.drain_address", "err", err)
			return p, nil
		}
		log.Info("planned moves drain the anchor IP", "anchor_ip", a)
	}
	rule, err := drain.New(drain.Options{Addr: a, NetNSFd: -1, Logger: log.With("drain", a)})
	if err != nil {
		return nil, fmt.Errorf("drain %s: %w", a, err)
	}
	return drain.Wrap(p, rule), nil
}

// baseProvider builds the provider itself.
func baseProvider(cfg *config.Config, log *slog.Logger) (failover.Provider, error) {
	v := cfg.VIP
	switch v.Provider {
	case config.ProviderLinux:
		prefix, err := netip.ParsePrefix(v.Address)
		if err != nil {
			return nil, fmt.Errorf("vip.address: %w", err)
		}
		return linux.New(linux.Options{
			Interface: v.Linux.Interface, Prefix: prefix, GARPCount: v.Linux.GARPCount,
			GARPRepeat: v.Linux.GARPRepeat.D(), GARPRefresh: v.Linux.GARPRefresh.D(), Logger: log,
		})
	case config.ProviderDigitalOcean:
		token, err := readToken("vip.digitalocean.token_file", v.DigitalOcean.TokenFile)
		if err != nil {
			return nil, err
		}
		return digitalocean.New(digitalocean.Options{
			Token: token, IP: netip.MustParseAddr(v.Address), DropletID: v.DigitalOcean.DropletID,
			BaseURL: v.DigitalOcean.APIURL, MetadataURL: v.DigitalOcean.MetadataURL, Logger: log,
		})
	case config.ProviderHetzner:
		token, err := readToken("vip.hetzner.token_file", v.Hetzner.TokenFile)
		if err != nil {
			return nil, err
		}
		return hetzner.New(hetzner.Options{
			Token: token, FloatingIPID: v.Hetzner.FloatingIPID, ServerID: v.Hetzner.ServerID,
			Endpoint: v.Hetzner.APIURL, MetadataEndpoint: v.Hetzner.MetadataURL, Logger: log,
		})
	case config.ProviderAWS:
		return aws.New(aws.Options{
			AllocationID: v.AWS.AllocationID, InstanceID: v.AWS.InstanceID, Region: v.AWS.Region,
			Endpoint: v.AWS.Endpoint, Logger: log,
		})
	case config.ProviderExec:
		var argv [3][]string
		for i, line := range []string{v.Exec.Acquire, v.Exec.Release, v.Exec.Holder} {
			words, err := shellwords.Split(line)
			if err != nil {
				return nil, fmt.Errorf("vip.exec: %q: %w", line, err)
			}
			argv[i] = words
		}
		return vipexec.New(vipexec.Options{
			VIP: v.Address, Node: cfg.Node.Name, Acquire: argv[0], Release: argv[1], Holder: argv[2],
			Timeout: v.Exec.Timeout.D(), Logger: log,
		})
	case config.ProviderNone:
		return &noProvider{}, nil
	}
	return nil, fmt.Errorf("vip.provider %q is not supported", v.Provider)
}

func readToken(key, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w (put the API token in that file, mode 0600)", key, err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("%s: %s is empty; put the API token in it", key, path)
	}
	return tok, nil
}

// noProvider is for clusters without a floating IP: "holding" then only
// decides where the primary units and hooks run.
type noProvider struct{ held atomic.Bool }

func (p *noProvider) Acquire(context.Context) error      { p.held.Store(true); return nil }
func (p *noProvider) Release(context.Context) error      { p.held.Store(false); return nil }
func (p *noProvider) Held(context.Context) (bool, error) { return p.held.Load(), nil }
