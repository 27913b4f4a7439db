package main

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// Fault kinds. The target is a role, resolved when the fault starts: the
// holder and the standby change as the campaign goes.
const (
	kindHolderPower      = "holder_power"
	kindHolderPartition  = "holder_partition"
	kindHolderHang       = "holder_hang"
	kindHolderNetem      = "holder_netem"
	kindStandbyPower     = "standby_power"
	kindStandbyPartition = "standby_partition"
	kindWitnessPower     = "witness_power"
	kindWitnessPartition = "witness_partition"
)

// kinds is every single-fault kind, in a fixed order so a seed replays.
var kinds = []string{
	kindHolderPower, kindHolderPartition, kindHolderHang, kindHolderNetem,
	kindStandbyPower, kindStandbyPartition, kindWitnessPower, kindWitnessPartition,
}

// pairs are the overlapping faults of -overlap. In each, the cluster cannot
// fail over (no quorum, or no healthy standby): the outage has no bound,
// but there must be no split brain and everything must settle.
var pairs = [][2]string{
	{kindWitnessPower, kindHolderPower},         // the standby alone has no quorum
	{kindStandbyPartition, kindHolderHang},      // no healthy standby to move to
	{kindWitnessPartition, kindHolderNetem},     // a degraded holder, no witness
	{kindStandbyPower, kindWitnessPartition},    // the holder loses its quorum and drops the IP
	{kindWitnessPartition, kindHolderPartition}, // the standby alone has no quorum
}

// bound is the longest outage a single fault of a kind may cause while a
// healthy standby that is not penalised exists: detection plus the move for
// faults of the holder, next to nothing for the others. A degraded link has
// no failover bound: it may slow the site while it lasts, but the site must
// be served again within a second of its end (see check).
func bound(kind string, dur time.Duration) time.Duration {
	switch kind {
	case kindHolderPower, kindHolderPartition:
		return 1500 * time.Millisecond
	case kindHolderHang:
		return 2500 * time.Millisecond
	case kindHolderNetem:
		return dur + time.Second
	}
	return time.Second
}

// step is one fault of the campaign, or a pair of overlapping faults.
type step struct {
	N      int
	Faults []fault
	Gap    time.Duration // pause before it, once the cluster has settled
}

// fault is one injected fault, as planned.
type fault struct {
	Kind     string
	Duration time.Duration
	// Netem's degradation (holder_netem only).
	Delay time.Duration
	Loss  float64
}

func (f fault) String() string {
	if f.Kind == kindHolderNetem {
		return fmt.Sprintf("%s(%v,%g%%)", f.Kind, f.Delay, f.Loss)
	}
	return f.Kind
}

// plan draws n steps from seed: every kind and duration comes from the
// seed alone, so a failing run can be replayed with the same -seed.
func plan(seed uint64, n int, overlap bool) []step {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	draw := func(kind string) fault {
		f := fault{Kind: kind, Duration: time.Second + time.Duration(r.Int64N(int64(5*time.Second)))}
		f.Duration = f.Duration.Round(100 * time.Millisecond)
		if kind == kindHolderNetem {
			f.Delay = time.Duration(20+r.IntN(131)) * time.Millisecond
			f.Loss = float64(2 + r.IntN(19))
		}
		return f
	}
	steps := make([]step, n)
	for i := range steps {
		s := step{N: i + 1, Gap: (2*time.Second + time.Duration(r.Int64N(int64(3*time.Second)))).Round(100 * time.Millisecond)}
		if overlap && r.IntN(4) == 0 {
			p := pairs[r.IntN(len(pairs))]
			s.Faults = []fault{draw(p[0]), draw(p[1])}
		} else {
			s.Faults = []fault{draw(kinds[r.IntN(len(kinds))])}
		}
		steps[i] = s
	}
	return steps
}
