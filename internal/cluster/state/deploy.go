package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// DeployDomain names the delivery domain: the deliveries received and
// their outcome, the rollout in progress with its journal, the release
// each node runs, the deploy lock and delivery's cluster-wide policy.
const DeployDomain = "deploy"

// deployLevel is the state level that introduced the delivery commands.
const deployLevel = 4

// Bounds on what the state keeps: finished deliveries and rollouts beyond
// these are dropped oldest first (open ones never are).
const (
	maxDeliveries = 200
	maxHistory    = 50
	maxSteps      = 200
)

// Delivery statuses. queued → running → deployed | failed | rolled_back,
// or queued → superseded; ignored deliveries are never stored.
const (
	DeliveryQueued     = "queued"
	DeliveryRunning    = "running"
	DeliveryDeployed   = "deployed"
	DeliveryFailed     = "failed"
	DeliveryRolledBack = "rolled_back"
	DeliverySuperseded = "superseded"
)

// Rollout phases.
const (
	PhaseFetch    = "fetch"    // finding and verifying the artifact
	PhaseForward  = "forward"  // installing the new release node by node
	PhaseRollback = "rollback" // putting every node back on its previous release
)

// Step states in the journal.
const (
	StepStarted = "started"
	StepDone    = "done"
	StepFailed  = "failed"
	// StepInterrupted is a step whose driver stopped before it ended;
	// what it achieved is in the state, and the next driver went on.
	StepInterrupted = "interrupted"
)

// ErrDuplicate is a delivery already received (same forge delivery ID, or
// same project, commit and artifact). Its message names the first one.
var ErrDuplicate = errors.New("delivery already received")

// ErrBusy is a rollout started while another runs.
var ErrBusy = errors.New("a rollout is already in progress")

// Delivery is one accepted request to deploy: a verified webhook, a poll
// result or an operator's 'tandem deploy'. Hint is the normalized webhook
// payload (the webhook package's Delivery as JSON) that the fetching node
// reads; the state does not interpret it.
type Delivery struct {
	ID         string          `json:"id"`
	Seq        uint64          `json:"seq"`
	Source     string          `json:"source"` // configured source name, or "cli"
	Kind       string          `json:"kind"`   // gitlab, github, ..., generic, file
	Project    string          `json:"project,omitempty"`
	Ref        string          `json:"ref,omitempty"`
	Commit     string          `json:"commit,omitempty"`
	Hint       json.RawMessage `json:"hint,omitempty"`
	Keys       []string        `json:"keys,omitempty"` // dedupe keys
	Force      bool            `json:"force,omitempty"`
	Manual     bool            `json:"manual,omitempty"` // an operator's; runs even when auto is off
	ReceivedBy string          `json:"received_by"`
	ReceivedAt time.Time       `json:"received_at"`
	Status     string          `json:"status"`
	Reason     string          `json:"reason,omitempty"`
	Package    string          `json:"package,omitempty"`
	Version    string          `json:"version,omitempty"`
	Digest     string          `json:"digest,omitempty"`
	UpdatedAt  time.Time       `json:"updated_at"`
}

// Finished reports whether the delivery has reached an outcome.
func (d Delivery) Finished() bool {
	return d.Status != DeliveryQueued && d.Status != DeliveryRunning
}

// Release is one node's installed version of a package. Digest is the
// SHA-256 of its .deb when the node has it in its release store.
type Release struct {
	Package string `json:"package"`
	Version string `json:"version"`
	Digest  string `json:"digest,omitempty"`
}

// Step is one entry of a rollout's journal, committed before the step
// runs (Started) and again when it ends.
type Step struct {
	N       int       `json:"n"`
	Action  string    `json:"action"` // fetch, install, hook_pre, move, hook_post, ...
	Node    string    `json:"node,omitempty"`
	State   string    `json:"state"`
	Detail  string    `json:"detail,omitempty"`
	At      time.Time `json:"at"`
	EndedAt time.Time `json:"ended_at,omitzero"`
}

// Rollout is the one rollout in progress, or a finished one in History.
// The node driving it (the raft leader) commits every step before and
// after running it, so a new leader resumes from here.
type Rollout struct {
	ID       string `json:"id"` // the delivery's ID
	Rollback bool   `json:"rollback,omitempty"`
	Force    bool   `json:"force,omitempty"`
	Phase    string `json:"phase"`
	Package  string `json:"package,omitempty"`
	Version  string `json:"version,omitempty"`
	Digest   string `json:"digest,omitempty"`
	// Signature is the release's .sig (base64), re-checked by every node
	// against its pinned keys before it installs.
	Signature string `json:"signature,omitempty"`
	// Previous is each app node's release when the rollout started: the
	// rollback targets.
	Previous map[string]Release `json:"previous,omitempty"`
	// Targets is what each node must end on in the current phase.
	Targets   map[string]Release `json:"targets,omitempty"`
	Steps     []Step             `json:"steps,omitempty"`
	Driver    string             `json:"driver"`
	StartedAt time.Time          `json:"started_at"`
	EndedAt   time.Time          `json:"ended_at,omitzero"`
	Outcome   string             `json:"outcome,omitempty"`
	Reason    string             `json:"reason,omitempty"`
	// Failure is what made the rollout roll back: the step and its error.
	Failure string `json:"failure,omitempty"`
}

// LastStep returns the journal's latest step.
func (r *Rollout) LastStep() (Step, bool) {
	if r == nil || len(r.Steps) == 0 {
		return Step{}, false
	}
	return r.Steps[len(r.Steps)-1], true
}

// Lock holds automatic deploys back until an operator unlocks.
type Lock struct {
	Message string    `json:"message"`
	By      string    `json:"by"`
	At      time.Time `json:"at"`
}

// DeployPolicy is delivery's cluster-wide settings, published by the app
// nodes from their configuration so the driver (which may be the witness)
// applies them.
type DeployPolicy struct {
	Packages    []string      `json:"packages"`
	Soak        time.Duration `json:"soak"`
	GateTimeout time.Duration `json:"gate_timeout"`
	Auto        bool          `json:"auto"`
	PreHook     bool          `json:"pre_hook,omitempty"`
	PostHook    bool          `json:"post_hook,omitempty"`
	HookTimeout time.Duration `json:"hook_timeout,omitempty"`
	Notify      bool          `json:"notify,omitempty"`
}

// Deploy is the delivery domain's state. Read-only once published.
type Deploy struct {
	Seq        uint64                        `json:"seq"`
	Deliveries []Delivery                    `json:"deliveries,omitempty"` // oldest first
	Rollout    *Rollout                      `json:"rollout,omitempty"`
	History    []*Rollout                    `json:"history,omitempty"`   // finished, oldest first
	Installed  map[string]map[string]Release `json:"installed,omitempty"` // node → package → release
	// Bad holds digests of releases that failed: never auto-deployed again.
	Bad    map[string]string `json:"bad,omitempty"`
	Lock   *Lock             `json:"lock,omitempty"`
	Policy *DeployPolicy     `json:"policy,omitempty"`
}

// Delivery returns the delivery with this ID.
func (d *Deploy) Delivery(id string) (Delivery, bool) {
	for _, x := range d.Deliveries {
		if x.ID == id {
			return x, true
		}
	}
	return Delivery{}, false
}

// Duplicate returns the delivery already received under one of keys.
// A delivery that failed before its release was even identified (the
// forge was down, its pipeline not finished yet) does not count, so a
// redelivery or the poll fallback tries again.
func (d *Deploy) Duplicate(keys []string) (Delivery, bool) {
	for _, x := range slices.Backward(d.Deliveries) {
		if x.Status == DeliveryFailed && x.Digest == "" {
			continue
		}
		for _, k := range keys {
			if slices.Contains(x.Keys, k) {
				return x, true
			}
		}
	}
	return Delivery{}, false
}

// NextQueued returns the newest queued delivery: newest wins.
func (d *Deploy) NextQueued() (Delivery, bool) {
	for _, x := range slices.Backward(d.Deliveries) {
		if x.Status == DeliveryQueued {
			return x, true
		}
	}
	return Delivery{}, false
}

// Running returns the release a node runs of pkg.
func (d *Deploy) Running(node, pkg string) (Release, bool) {
	r, ok := d.Installed[node][pkg]
	return r, ok
}

// Deploy returns the delivery domain's state.
func (s Snapshot) Deploy() *Deploy {
	if v, ok := s.sections[DeployDomain].(*Deploy); ok {
		return v
	}
	return &Deploy{}
}

type deployDomain struct{}

func (deployDomain) Name() string { return DeployDomain }

func (deployDomain) Commands() []CommandType {
	reg := func(c Command, witness bool, newFn func() Command) CommandType {
		return CommandType{Name: c.Type(), Level: deployLevel, Witness: witness, New: newFn}
	}
	return []CommandType{
		reg(ReceiveDelivery{}, false, func() Command { return &ReceiveDelivery{} }),
		reg(StartRollout{}, false, func() Command { return &StartRollout{} }),
		reg(RolloutStep{}, false, func() Command { return &RolloutStep{} }),
		reg(FinishRollout{}, false, func() Command { return &FinishRollout{} }),
		reg(SetInstalled{}, false, func() Command { return &SetInstalled{} }),
		reg(SetDeployLock{}, false, func() Command { return &SetDeployLock{} }),
		reg(SetDeployPolicy{}, false, func() Command { return &SetDeployPolicy{} }),
	}
}

func (deployDomain) Empty() any { return &Deploy{} }

// Clone copies what commands change in place; rollouts are replaced, never
// changed, once published.
func (deployDomain) Clone(v any) any {
	d := *v.(*Deploy)
	d.Deliveries = slices.Clone(d.Deliveries)
	d.History = slices.Clone(d.History)
	d.Installed = maps.Clone(d.Installed)
	d.Bad = maps.Clone(d.Bad)
	return &d
}

func (deployDomain) Save(v any) (json.RawMessage, error) { return json.Marshal(v) }

func (d deployDomain) Restore(data json.RawMessage) (any, error) {
	v := d.Empty().(*Deploy)
	if err := json.Unmarshal(data, v); err != nil {
		return nil, err
	}
	return v, nil
}

func readDeploy(tx *Tx) *Deploy { return tx.Read(DeployDomain).(*Deploy) }
func editDeploy(tx *Tx) *Deploy { return tx.Edit(DeployDomain).(*Deploy) }

// editRollout replaces the rollout in progress by a copy that may change.
func editRollout(d *Deploy) *Rollout {
	r := *d.Rollout
	r.Steps = slices.Clone(r.Steps)
	r.Targets = maps.Clone(r.Targets)
	d.Rollout = &r
	return &r
}

func (d *Deploy) setDelivery(id string, f func(*Delivery)) {
	for i := range d.Deliveries {
		if d.Deliveries[i].ID == id {
			f(&d.Deliveries[i])
			return
		}
	}
}

// trimDeliveries drops the oldest finished deliveries beyond the bound.
func (d *Deploy) trimDeliveries() {
	for extra := len(d.Deliveries) - maxDeliveries; extra > 0; extra-- {
		i := slices.IndexFunc(d.Deliveries, Delivery.Finished)
		if i < 0 {
			return
		}
		d.Deliveries = slices.Delete(d.Deliveries, i, i+1)
	}
}

// leaderOnly refuses a command proposed through another node: only the
// raft leader's own driver starts, journals and ends rollouts (its
// commands are applied locally, without Authorize).
func leaderOnly(caller Member, what string) error {
	return fmt.Errorf("%w: only the raft leader drives rollouts; %s may not %s", ErrForbidden, caller.Name, what)
}

// Authorize implements Authorizer.
func (StartRollout) Authorize(caller Member) error { return leaderOnly(caller, "start one") }

// Authorize implements Authorizer.
func (RolloutStep) Authorize(caller Member) error { return leaderOnly(caller, "journal one") }

// Authorize implements Authorizer.
func (FinishRollout) Authorize(caller Member) error { return leaderOnly(caller, "end one") }

// ReceiveDelivery records an accepted delivery as queued. A delivery whose
// ID or dedupe keys were seen is refused with ErrDuplicate, so a forge's
// redelivery does nothing.
type ReceiveDelivery struct {
	Delivery Delivery `json:"delivery"`
}

// Type implements Command.
func (ReceiveDelivery) Type() string { return "deploy_receive" }

// Apply implements Command.
func (c ReceiveDelivery) Apply(tx *Tx) error {
	in := c.Delivery
	if in.ID == "" || in.ReceivedAt.IsZero() {
		return fmt.Errorf("%w: a delivery needs an ID and a time", ErrInvalid)
	}
	d := readDeploy(tx)
	if dup, ok := d.Delivery(in.ID); ok {
		return fmt.Errorf("%w: as %s (%s)", ErrDuplicate, dup.ID, dup.Status)
	}
	if dup, ok := d.Duplicate(in.Keys); ok {
		return fmt.Errorf("%w: as %s (%s)", ErrDuplicate, dup.ID, dup.Status)
	}
	d = editDeploy(tx)
	d.Seq++
	in.Seq = d.Seq
	in.Status, in.Reason, in.UpdatedAt = DeliveryQueued, "", in.ReceivedAt
	d.Deliveries = append(d.Deliveries, in)
	d.trimDeliveries()
	return nil
}

// StartRollout begins the rollout of a queued delivery (or a rollback);
// every older queued delivery is superseded: newest wins.
type StartRollout struct {
	Rollout Rollout `json:"rollout"`
}

// Type implements Command.
func (StartRollout) Type() string { return "deploy_start" }

// Apply implements Command.
func (c StartRollout) Apply(tx *Tx) error {
	d := readDeploy(tx)
	if d.Rollout != nil {
		return fmt.Errorf("%w: %s", ErrBusy, d.Rollout.ID)
	}
	del, ok := d.Delivery(c.Rollout.ID)
	if !ok || del.Status != DeliveryQueued {
		return fmt.Errorf("%w: delivery %q is not queued", ErrInvalid, c.Rollout.ID)
	}
	if c.Rollout.Phase == "" || c.Rollout.StartedAt.IsZero() {
		return fmt.Errorf("%w: a rollout needs a phase and a start time", ErrInvalid)
	}
	d = editDeploy(tx)
	r := c.Rollout
	r.Outcome, r.EndedAt = "", time.Time{}
	d.Rollout = &r
	for i := range d.Deliveries {
		x := &d.Deliveries[i]
		switch {
		case x.ID == r.ID:
			x.Status, x.UpdatedAt = DeliveryRunning, r.StartedAt
		case x.Status == DeliveryQueued && x.Seq < del.Seq:
			x.Status, x.Reason, x.UpdatedAt = DeliverySuperseded, "superseded by "+r.ID, r.StartedAt
		}
	}
	return nil
}

// RolloutStep journals one step of the rollout in progress: a new step
// (Step.N == len(Steps)+1) or the end of the latest one. It may also set
// what fetching found (Package, Version, Digest), the phase and the
// targets. Only the rollout's current driver may write; a new leader first
// takes the rollout over with TakeOver.
type RolloutStep struct {
	ID        string             `json:"id"`
	Driver    string             `json:"driver"`
	TakeOver  bool               `json:"take_over,omitempty"`
	Step      *Step              `json:"step,omitempty"`
	Phase     string             `json:"phase,omitempty"`
	Package   string             `json:"package,omitempty"`
	Version   string             `json:"version,omitempty"`
	Digest    string             `json:"digest,omitempty"`
	Signature string             `json:"signature,omitempty"`
	Previous  map[string]Release `json:"previous,omitempty"`
	Targets   map[string]Release `json:"targets,omitempty"`
	Failure   string             `json:"failure,omitempty"`
}

// Type implements Command.
func (RolloutStep) Type() string { return "deploy_step" }

// Apply implements Command.
func (c RolloutStep) Apply(tx *Tx) error {
	d := readDeploy(tx)
	if d.Rollout == nil || d.Rollout.ID != c.ID {
		return fmt.Errorf("%w: rollout %q is not in progress", ErrInvalid, c.ID)
	}
	if !c.TakeOver && d.Rollout.Driver != c.Driver {
		return fmt.Errorf("%w: %s drives rollout %s, not %s", ErrStaleEpoch, d.Rollout.Driver, c.ID, c.Driver)
	}
	d = editDeploy(tx)
	r := editRollout(d)
	r.Driver = c.Driver
	if s := c.Step; s != nil {
		switch {
		case s.N == len(r.Steps)+1:
			r.Steps = append(r.Steps, *s)
			if len(r.Steps) > maxSteps {
				r.Steps = slices.Delete(r.Steps, 0, len(r.Steps)-maxSteps)
			}
		case len(r.Steps) > 0 && s.N == r.Steps[len(r.Steps)-1].N:
			r.Steps[len(r.Steps)-1] = *s
		default:
			return fmt.Errorf("%w: step %d out of order", ErrInvalid, s.N)
		}
	}
	if c.Phase != "" {
		r.Phase = c.Phase
	}
	if c.Digest != "" {
		r.Package, r.Version, r.Digest, r.Signature = c.Package, c.Version, c.Digest, c.Signature
		d.setDelivery(r.ID, func(x *Delivery) { x.Package, x.Version, x.Digest = c.Package, c.Version, c.Digest })
	}
	if c.Previous != nil {
		r.Previous = c.Previous
	}
	if c.Targets != nil {
		r.Targets = c.Targets
	}
	if c.Failure != "" {
		r.Failure = c.Failure
	}
	return nil
}

// FinishRollout ends the rollout in progress with its outcome (a delivery
// status), moving it to the history. MarkBad records the release's digest
// so it is never deployed automatically again.
type FinishRollout struct {
	ID      string    `json:"id"`
	Driver  string    `json:"driver"`
	Outcome string    `json:"outcome"`
	Reason  string    `json:"reason,omitempty"`
	MarkBad bool      `json:"mark_bad,omitempty"`
	At      time.Time `json:"at"`
}

// Type implements Command.
func (FinishRollout) Type() string { return "deploy_finish" }

// Apply implements Command.
func (c FinishRollout) Apply(tx *Tx) error {
	d := readDeploy(tx)
	if d.Rollout == nil || d.Rollout.ID != c.ID {
		return fmt.Errorf("%w: rollout %q is not in progress", ErrInvalid, c.ID)
	}
	if d.Rollout.Driver != c.Driver {
		return fmt.Errorf("%w: %s drives rollout %s, not %s", ErrStaleEpoch, d.Rollout.Driver, c.ID, c.Driver)
	}
	switch c.Outcome {
	case DeliveryDeployed, DeliveryFailed, DeliveryRolledBack:
	default:
		return fmt.Errorf("%w: outcome %q", ErrInvalid, c.Outcome)
	}
	d = editDeploy(tx)
	r := editRollout(d)
	r.Outcome, r.Reason, r.EndedAt = c.Outcome, c.Reason, c.At
	d.History = append(d.History, r)
	if len(d.History) > maxHistory {
		d.History = slices.Delete(d.History, 0, len(d.History)-maxHistory)
	}
	d.Rollout = nil
	d.setDelivery(r.ID, func(x *Delivery) { x.Status, x.Reason, x.UpdatedAt = c.Outcome, c.Reason, c.At })
	if c.MarkBad && r.Digest != "" {
		if d.Bad == nil {
			d.Bad = map[string]string{}
		}
		d.Bad[r.Digest] = fmt.Sprintf("%s %s: %s", r.Package, r.Version, c.Reason)
	}
	return nil
}

// SetInstalled records the releases a node runs, as it reports them (at
// start and after every install): the journal and the nodes agree.
type SetInstalled struct {
	Node     string             `json:"node"`
	Releases map[string]Release `json:"releases"`
}

// Type implements Command.
func (SetInstalled) Type() string { return "deploy_installed" }

// Authorize lets an app node report only its own releases; the leader's
// driver reports on the node it installed on by committing locally.
func (c SetInstalled) Authorize(caller Member) error {
	if caller.Name != c.Node {
		return fmt.Errorf("%w: %s may report only its own releases, not %s's", ErrForbidden, caller.Name, c.Node)
	}
	return nil
}

// Apply implements Command.
func (c SetInstalled) Apply(tx *Tx) error {
	if _, ok := readMembers(tx).Members[c.Node]; !ok {
		return fmt.Errorf("%w: %q", ErrUnknownMember, c.Node)
	}
	d := readDeploy(tx)
	if maps.EqualFunc(d.Installed[c.Node], c.Releases, func(a, b Release) bool { return a == b }) && d.Installed[c.Node] != nil {
		return nil
	}
	d = editDeploy(tx)
	if d.Installed == nil {
		d.Installed = map[string]map[string]Release{}
	}
	d.Installed[c.Node] = maps.Clone(c.Releases)
	return nil
}

// SetDeployLock locks (Lock set) or unlocks (nil) automatic deploys.
type SetDeployLock struct {
	Lock *Lock `json:"lock"`
}

// Type implements Command.
func (SetDeployLock) Type() string { return "deploy_lock" }

// Apply implements Command.
func (c SetDeployLock) Apply(tx *Tx) error {
	editDeploy(tx).Lock = c.Lock
	return nil
}

// SetDeployPolicy publishes delivery's policy.
type SetDeployPolicy struct {
	Policy DeployPolicy `json:"policy"`
}

// Type implements Command.
func (SetDeployPolicy) Type() string { return "deploy_policy" }

// Apply implements Command.
func (c SetDeployPolicy) Apply(tx *Tx) error {
	p := c.Policy
	editDeploy(tx).Policy = &p
	return nil
}
