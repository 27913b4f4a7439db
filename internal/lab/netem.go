package lab

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Netem degrades a member's link. The kernel here has no sch_netem, so the lab
// relays the member's frames through a small user-space forwarder instead of
// using tc; the effect is the same as `tc qdisc add dev <bridge port> root
// netem ...`: frames towards the member are delayed by Delay ± Jitter and
// dropped with probability Loss percent, so any round trip to the member grows
// by Delay. Frames keep their order.
type Netem struct {
	Delay  time.Duration `json:"delay"`
	Jitter time.Duration `json:"jitter"`
	Loss   float64       `json:"loss_percent"`
}

// Limits keep a typo from making a link useless for hours.
const (
	maxNetemDelay = time.Minute
)

// Validate checks the values and says which one is wrong.
func (n Netem) Validate() error {
	switch {
	case n.Delay < 0 || n.Delay > maxNetemDelay:
		return fmt.Errorf("--delay %v is out of range: use 0 to %v", n.Delay, maxNetemDelay)
	case n.Jitter < 0 || n.Jitter > n.Delay:
		return fmt.Errorf("--jitter %v is out of range: use 0 to the delay (%v)", n.Jitter, n.Delay)
	case n.Loss < 0 || n.Loss > 100 || math.IsNaN(n.Loss):
		return fmt.Errorf("--loss %v%% is out of range: use 0%% to 100%%", n.Loss)
	case n.Delay == 0 && n.Loss == 0:
		return fmt.Errorf("netem needs --delay or --loss (use --clear to remove degradation)")
	}
	return nil
}

func (n Netem) String() string {
	var parts []string
	if n.Delay > 0 {
		s := "delay " + n.Delay.String()
		if n.Jitter > 0 {
			s += " ±" + n.Jitter.String()
		}
		parts = append(parts, s)
	}
	if n.Loss > 0 {
		parts = append(parts, "loss "+strconv.FormatFloat(n.Loss, 'g', -1, 64)+"%")
	}
	return strings.Join(parts, ", ")
}

// ParseLoss parses a loss percentage such as "2%", "0.5%" or "2".
func ParseLoss(s string) (float64, error) {
	t := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(s), "%"))
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("--loss %q is not a percentage: write e.g. 2%% or 0.5%%", s)
	}
	if v < 0 || v > 100 {
		return 0, fmt.Errorf("--loss %q is out of range: use 0%% to 100%%", s)
	}
	return v, nil
}

// ParseNetem builds a Netem from command-line strings; empty strings mean 0.
func ParseNetem(delay, jitter, loss string) (Netem, error) {
	var n Netem
	var err error
	if delay != "" {
		if n.Delay, err = time.ParseDuration(delay); err != nil {
			return n, fmt.Errorf("--delay %q is not a duration: write e.g. 100ms", delay)
		}
	}
	if jitter != "" {
		if n.Jitter, err = time.ParseDuration(jitter); err != nil {
			return n, fmt.Errorf("--jitter %q is not a duration: write e.g. 20ms", jitter)
		}
	}
	if loss != "" {
		if n.Loss, err = ParseLoss(loss); err != nil {
			return n, err
		}
	}
	return n, n.Validate()
}
