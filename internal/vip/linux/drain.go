package linux

import (
	"context"

	"github.com/tandem-ha/tandem/internal/vip/drain"
)

// DrainTable is the nftables table that turns new connections to the VIP
// away while a planned move drains (see package drain).
const DrainTable = drain.Table

// StopNew starts draining the VIP: SYNs to it are dropped; packets of
// established connections pass. Release and Acquire end the drain.
func (p *Provider) StopNew(ctx context.Context) error { return p.drain.StopNew(ctx) }

// InFlight counts the TCP connections to the VIP that are still open.
func (p *Provider) InFlight(ctx context.Context) (int, error) { return p.drain.InFlight(ctx) }
