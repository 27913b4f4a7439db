package deploy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/webhook"
)

// Kinds of deliveries besides the webhook sources'.
const (
	KindFile = "file" // 'tandem deploy FILE': the .deb is in the receiving node's store
	KindURL  = "url"  // 'tandem deploy URL'
	// SourceRollback marks 'tandem rollback''s deliveries: their release
	// was verified when it was first deployed.
	SourceRollback = "rollback"
)

// Source is one configured webhook source.
type Source struct {
	Name  string
	Kind  webhook.Source
	Rules webhook.Rules
	// SecretFile is read again when it changes, so secrets rotate
	// without a restart.
	SecretFile string
}

// IntakeOptions configures the webhook listener.
type IntakeOptions struct {
	Name    string
	Cluster Cluster
	Machine Machine
	Sources []Source
	Now     func() time.Time
	Logger  *slog.Logger
	// OnDelivery counts deliveries by source and outcome (metrics).
	OnDelivery func(source, outcome string)
}

// Intake receives webhooks: verify, parse, commit to the cluster, answer.
type Intake struct {
	o   IntakeOptions
	log *slog.Logger

	mu      sync.Mutex
	secrets map[string]cachedSecrets
}

type cachedSecrets struct {
	mod     time.Time
	size    int64
	secrets webhook.Secrets
}

// NewIntake returns the webhook intake.
func NewIntake(o IntakeOptions) *Intake {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.OnDelivery == nil {
		o.OnDelivery = func(string, string) {}
	}
	return &Intake{o: o, log: o.Logger, secrets: map[string]cachedSecrets{}}
}

// loadSecrets reads a source's secret file when it changed.
func (in *Intake) loadSecrets(src Source) (webhook.Secrets, error) {
	fi, err := os.Stat(src.SecretFile)
	if err != nil {
		return webhook.Secrets{}, fmt.Errorf("secret file of source %s: %w", src.Name, err)
	}
	in.mu.Lock()
	c, ok := in.secrets[src.Name]
	in.mu.Unlock()
	if ok && c.mod.Equal(fi.ModTime()) && c.size == fi.Size() {
		return c.secrets, nil
	}
	b, err := os.ReadFile(src.SecretFile)
	if err != nil {
		return webhook.Secrets{}, fmt.Errorf("secret file of source %s: %w", src.Name, err)
	}
	s, err := webhook.ParseSecrets(b, src.SecretFile)
	if err != nil {
		return webhook.Secrets{}, err
	}
	in.mu.Lock()
	in.secrets[src.Name] = cachedSecrets{mod: fi.ModTime(), size: fi.Size(), secrets: s}
	in.mu.Unlock()
	return s, nil
}

// Check loads every source's secrets, so a missing or bad file is an
// error at start rather than a 401 at the first delivery.
func (in *Intake) Check() error {
	var errs []error
	for _, src := range in.o.Sources {
		s, err := in.loadSecrets(src)
		if err == nil {
			err = webhook.Intake{Source: src.Kind, Secrets: s, Rules: src.Rules}.Validate()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("deploy.source %s: %w", src.Name, err))
		}
	}
	return errors.Join(errs...)
}

// Reply is the JSON body of a webhook answer. Field names are stable.
type Reply struct {
	Status   string `json:"status"` // queued, duplicate, ignored, error
	Delivery string `json:"delivery,omitempty"`
	Reason   string `json:"reason,omitempty"`
}

// Handler serves POST /webhook/{source}.
func (in *Intake) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /webhook/{source}", in.serve)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusNotFound, Reply{Status: "error", Reason: "POST deliveries to /webhook/SOURCE, SOURCE being a configured deploy.source name"})
	})
	return mux
}

func (in *Intake) serve(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("source")
	var src *Source
	for i := range in.o.Sources {
		if in.o.Sources[i].Name == name {
			src = &in.o.Sources[i]
		}
	}
	if src == nil {
		in.o.OnDelivery(name, "unknown_source")
		reply(w, http.StatusNotFound, Reply{Status: "error", Reason: fmt.Sprintf("no deploy.source named %q", name)})
		return
	}
	body, err := webhook.ReadBody(http.MaxBytesReader(w, r.Body, webhook.MaxBody+1))
	if err != nil {
		in.refuse(w, r, src, err)
		return
	}
	secrets, err := in.loadSecrets(*src)
	if err != nil {
		in.log.Error("webhook secrets", "source", src.Name, "err", err)
		in.o.OnDelivery(src.Name, "error")
		reply(w, http.StatusServiceUnavailable, Reply{Status: "error", Reason: "this node cannot read the source's secrets; see its log"})
		return
	}
	d, err := webhook.Intake{Source: src.Kind, Secrets: secrets, Rules: src.Rules}.Receive(r.Header, body, in.o.Now())
	if err != nil {
		in.refuse(w, r, src, err)
		return
	}
	id, err := in.Commit(r.Context(), src.Name, d, false, false)
	switch {
	case errors.Is(err, state.ErrDuplicate):
		in.o.OnDelivery(src.Name, "duplicate")
		reply(w, http.StatusOK, Reply{Status: "duplicate", Reason: err.Error()})
	case err != nil:
		in.log.Warn("webhook not committed", "source", src.Name, "err", err)
		in.o.OnDelivery(src.Name, "error")
		// 503: the forge retries later.
		reply(w, http.StatusServiceUnavailable, Reply{Status: "error", Reason: "the cluster could not record the delivery (no quorum?); retry"})
	default:
		in.log.Info("webhook accepted", "source", src.Name, "delivery", id, "ref", d.Ref, "commit", d.Commit, "remote", r.RemoteAddr)
		in.o.OnDelivery(src.Name, "accepted")
		reply(w, http.StatusAccepted, Reply{Status: "queued", Delivery: id})
	}
}

// refuse answers a delivery that does not deploy: irrelevant (200 with the
// reason), bad signature (401), too large (413), malformed (400). Nothing
// is stored.
func (in *Intake) refuse(w http.ResponseWriter, r *http.Request, src *Source, err error) {
	status := webhook.HTTPStatus(err)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		status = http.StatusRequestEntityTooLarge
	}
	outcome := map[int]string{200: "ignored", 401: "bad_signature", 413: "too_large", 400: "malformed"}[status]
	if outcome == "" {
		outcome = "error"
	}
	in.o.OnDelivery(src.Name, outcome)
	if status == http.StatusOK {
		in.log.Info("webhook ignored", "source", src.Name, "reason", err.Error())
		reply(w, status, Reply{Status: "ignored", Reason: err.Error()})
		return
	}
	in.log.Warn("webhook refused", "source", src.Name, "status", status, "remote", r.RemoteAddr, "err", err.Error())
	msg := err.Error()
	if status == http.StatusUnauthorized {
		msg = "signature or token does not match" // say no more to a stranger
	}
	reply(w, status, Reply{Status: "error", Reason: msg})
}

func reply(w http.ResponseWriter, status int, r Reply) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(r)
}

// Commit records a delivery in the cluster as queued and returns its ID;
// a redelivery returns an error wrapping state.ErrDuplicate.
func (in *Intake) Commit(ctx context.Context, source string, d webhook.Delivery, force, manual bool) (string, error) {
	hint, err := json.Marshal(d)
	if err != nil {
		return "", err
	}
	del := state.Delivery{ID: NewID(), Source: source, Kind: string(d.Source), Project: d.Project, Ref: d.Ref,
		Commit: d.Commit, Hint: hint, Keys: d.DedupeKeys(), Force: force, Manual: manual,
		ReceivedBy: in.o.Name, ReceivedAt: in.o.Now()}
	if d.Release != nil {
		del.Package, del.Version = d.Release.Package, d.Release.Version
	}
	return CommitDelivery(ctx, in.o.Cluster, del)
}

// CommitDelivery commits a delivery within a second (a forge wants a quick
// answer) and returns its ID.
func CommitDelivery(ctx context.Context, c Cluster, del state.Delivery) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := c.Apply(ctx, state.ReceiveDelivery{Delivery: del}); err != nil {
		return "", err
	}
	return del.ID, nil
}

// NewID returns a new delivery ID: "d-" and 12 random hex digits.
func NewID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "d-" + hex.EncodeToString(b[:])
}

// Serve runs the webhook listener until ctx ends.
func (in *Intake) Serve(ctx context.Context, addr, certFile, keyFile string) error {
	srv := &http.Server{Addr: addr, Handler: in.Handler(), ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second,
		MaxHeaderBytes: 64 << 10}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("webhook listener: %w (set deploy.listen to a free port, or \"\" to disable)", err)
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	in.log.Info("webhook listener", "addr", addr, "tls", certFile != "")
	if certFile != "" {
		err = srv.ServeTLS(ln, certFile, keyFile)
	} else {
		err = srv.Serve(ln)
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("webhook listener: %w", err)
	}
	return nil
}

// Poller asks the forges for new builds on a timer, so a missed webhook
// still deploys. Only the IP holder polls, so one node asks.
type Poller struct {
	Intake   *Intake
	Machine  Machine
	Interval time.Duration
	Poll     func(ctx context.Context, source string) ([]webhook.Delivery, error)
	Logger   *slog.Logger
}

// Run polls until ctx ends.
func (p *Poller) Run(ctx context.Context) error {
	if p.Interval <= 0 {
		return nil
	}
	t := time.NewTicker(p.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if p.Machine.View().Holder.Node != p.Intake.o.Name {
			continue
		}
		for _, src := range p.Intake.o.Sources {
			if src.Kind == webhook.Generic {
				continue
			}
			ds, err := p.Poll(ctx, src.Name)
			if err != nil {
				p.Logger.Warn("poll for new builds", "source", src.Name, "err", err)
				continue
			}
			for _, d := range ds {
				if _, dup := p.Machine.View().Deploy().Duplicate(d.DedupeKeys()); dup {
					continue
				}
				id, err := p.Intake.Commit(ctx, src.Name, d, false, false)
				if err != nil && !errors.Is(err, state.ErrDuplicate) {
					p.Logger.Warn("record polled build", "source", src.Name, "err", err)
					continue
				}
				if err == nil {
					p.Logger.Info("poll found a build no webhook announced", "source", src.Name, "delivery", id, "ref", d.Ref, "commit", d.Commit)
				}
			}
		}
	}
}

// ParseHint decodes a delivery's webhook payload.
func ParseHint(del state.Delivery) (webhook.Delivery, error) {
	var d webhook.Delivery
	if len(del.Hint) == 0 {
		return d, fmt.Errorf("delivery %s carries no webhook payload", del.ID)
	}
	if err := json.Unmarshal(del.Hint, &d); err != nil {
		return d, fmt.Errorf("delivery %s: %w", del.ID, err)
	}
	return d, nil
}

// SourceNames lists the configured sources, for messages.
func SourceNames(srcs []Source) string {
	var n []string
	for _, s := range srcs {
		n = append(n, s.Name)
	}
	return strings.Join(n, ", ")
}
