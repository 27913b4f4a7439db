package deploy

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/webhook"
)

// Notification is the JSON body POSTed when a rollout ends. Field names
// are stable; Type is release.deployed, release.failed or
// release.rolled_back.
type Notification struct {
	Type     string                   `json:"type"`
	Delivery string                   `json:"delivery"`
	Package  string                   `json:"package,omitempty"`
	Version  string                   `json:"version,omitempty"`
	Outcome  string                   `json:"outcome"`
	Reason   string                   `json:"reason,omitempty"`
	Started  time.Time                `json:"started_at"`
	Ended    time.Time                `json:"ended_at"`
	Nodes    map[string]state.Release `json:"nodes,omitempty"`
}

// Notifier POSTs a Standard-Webhooks-signed Notification to each URL
// when a rollout ends. The IP holder sends, so one node does; the
// webhook-id is the delivery's, so a receiver dedupes a repeat.
type Notifier struct {
	Name    string
	Machine Machine
	URLs    []string
	// Key is the decoded whsec_ secret.
	Key    []byte
	HTTP   *http.Client
	Now    func() time.Time
	Logger *slog.Logger
}

// ParseNotifySecret reads a whsec_ secret (the first line of its file).
func ParseNotifySecret(text []byte) ([]byte, error) {
	line, _, _ := strings.Cut(strings.TrimSpace(string(text)), "\n")
	enc, ok := strings.CutPrefix(strings.TrimSpace(line), "whsec_")
	if !ok {
		return nil, errors.New("notify secret must be a Standard Webhooks secret: whsec_ and base64 (e.g. whsec_$(head -c 32 /dev/urandom | base64))")
	}
	key, err := base64.StdEncoding.DecodeString(enc)
	if err != nil || len(key) < 16 {
		return nil, fmt.Errorf("notify secret: whsec_ must be followed by the base64 of at least 16 bytes")
	}
	return key, nil
}

// Run sends notifications for rollouts that end from now on.
func (n *Notifier) Run(ctx context.Context) error {
	if len(n.URLs) == 0 {
		return nil
	}
	if n.Now == nil {
		n.Now = time.Now
	}
	if n.HTTP == nil {
		n.HTTP = &http.Client{Timeout: 10 * time.Second}
	}
	seen := map[string]bool{}
	for _, r := range n.Machine.View().Deploy().History {
		seen[r.ID] = true
	}
	for {
		changed := n.Machine.Changed(state.DeployDomain)
		s := n.Machine.View()
		for _, r := range s.Deploy().History {
			if seen[r.ID] {
				continue
			}
			seen[r.ID] = true
			if s.Holder.Node != n.Name {
				continue
			}
			n.send(ctx, n.notification(r, s.Deploy()))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

func (n *Notifier) notification(r *state.Rollout, dep *state.Deploy) Notification {
	nodes := map[string]state.Release{}
	for node, rels := range dep.Installed {
		if rel, ok := rels[r.Package]; ok {
			nodes[node] = rel
		}
	}
	return Notification{Type: "release." + r.Outcome, Delivery: r.ID, Package: r.Package, Version: r.Version,
		Outcome: r.Outcome, Reason: r.Reason, Started: r.StartedAt, Ended: r.EndedAt, Nodes: nodes}
}

// send POSTs to every URL, retrying each a few times.
func (n *Notifier) send(ctx context.Context, note Notification) {
	body, err := json.Marshal(note)
	if err != nil {
		n.Logger.Error("encode notification", "err", err)
		return
	}
	for _, u := range n.URLs {
		var err error
		for attempt, wait := 0, time.Second; attempt < 4; attempt, wait = attempt+1, wait*3 {
			if err = n.post(ctx, u, note.Delivery, body); err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		if err != nil {
			n.Logger.Warn("notification not delivered", "url", u, "delivery", note.Delivery, "err", err)
		} else {
			n.Logger.Info("notification delivered", "url", u, "delivery", note.Delivery, "type", note.Type)
		}
	}
}

func (n *Notifier) post(ctx context.Context, url, id string, body []byte) error {
	ts, sig := webhook.SignStandard(n.Key, id, n.Now(), body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("webhook-id", id)
	req.Header.Set("webhook-timestamp", ts)
	req.Header.Set("webhook-signature", sig)
	resp, err := n.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}
