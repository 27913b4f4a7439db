package guard

import (
	"net/netip"
	"time"
)

// Decision is a jail's verdict that a source has failed often enough to be
// banned. The engine decides; the cluster's ban controller turns it into a
// ban every node enforces, growing the bantime for repeat offenders.
type Decision struct {
	Addr       netip.Addr    // the source to ban, unmapped
	Jail       string        // the jail that decided
	Failures   int           // failures counted within the jail's findtime
	Bantime    time.Duration // the jail's first bantime
	MaxBantime time.Duration // cap for a repeat offender's growing bantime; 0: no growth
	Factor     float64       // each earlier ban multiplies the bantime by this (>= 1)
	Line       string        // the last failure's log line, at most 512 bytes, for the record
	At         time.Time     // when the deciding line was read
}
