package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/tandem-ha/tandem/internal/pki"
)

// MarkerFile, in the data directory, records that this node founded or
// joined a cluster. The agent waits for it, so that a package install can
// start the service before the operator runs 'tandem init' or 'tandem join'.
const MarkerFile = "cluster.json"

// Marker is the content of MarkerFile.
type Marker struct {
	Name     string    `json:"name"`
	Role     string    `json:"role"`
	Created  time.Time `json:"created"`
	Founder  bool      `json:"founder"`
	JoinedAt string    `json:"joined_via,omitempty"`
	// Peers are the members (name to address) when this node joined; see
	// Options.JoinedPeers.
	Peers map[string]string `json:"peers,omitempty"`
	// Keys are those members' pinned keys (name to key hash); see
	// Options.JoinedKeys.
	Keys map[string]string `json:"keys,omitempty"`
}

// ReadMarker reads the marker of the node with this data directory.
func ReadMarker(dataDir string) (Marker, error) {
	var m Marker
	b, err := os.ReadFile(MarkerPath(dataDir))
	if err != nil {
		return m, fmt.Errorf("read %s: %w", MarkerPath(dataDir), err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("read %s: %w (remove the file and join again)", MarkerPath(dataDir), err)
	}
	return m, nil
}

// MarkerPath is where a node with this data directory keeps its marker.
func MarkerPath(dataDir string) string { return filepath.Join(dataDir, MarkerFile) }

// PKIDir is where a node with this data directory keeps its certificates.
func PKIDir(dataDir string) string { return filepath.Join(dataDir, "pki") }

// Initialized reports whether the node with this data directory has founded
// or joined a cluster.
func Initialized(dataDir string) bool {
	_, err := os.Stat(MarkerPath(dataDir))
	return err == nil
}

// WaitInitialized returns once the node has founded or joined a cluster,
// or when ctx ends.
func WaitInitialized(ctx context.Context, dataDir string, log *slog.Logger) error {
	if Initialized(dataDir) {
		return nil
	}
	log.Warn("this node is not part of a cluster yet: run 'tandem init' on the first node, or 'tandem join' here; waiting")
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for !Initialized(dataDir) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

func writeMarker(dataDir string, m Marker) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return pki.WriteFileAtomic(MarkerPath(dataDir), append(b, '\n'), 0o600)
}

func alreadyMember(name, dataDir, hint string) error {
	return fmt.Errorf("%s is already part of a cluster (%s exists); %s", name, MarkerPath(dataDir), hint)
}

// AdvertisedIPs returns the IP of an advertise address host:port, for the
// node certificate's SANs.
func AdvertisedIPs(advertise string) []netip.Addr {
	if ap, err := netip.ParseAddrPort(advertise); err == nil {
		return []netip.Addr{ap.Addr()}
	}
	return nil
}

// FoundOptions says how to found a cluster.
type FoundOptions struct {
	TokenTTL time.Duration
	// Tokens are the join tokens to create, one per entry.
	Tokens []TokenSpec
}

// TokenSpec asks for a join token for one role.
type TokenSpec struct {
	Role string // state.RoleApp or state.RoleWitness
	Uses int    // joins it allows; 0: unlimited until it expires
}

// IssuedToken is a join token created for a role.
type IssuedToken struct {
	Role    string
	Uses    int // 0: unlimited
	Expires time.Time
	Token   pki.Token
}

// Found creates the cluster CA and this node's certificate, bootstraps a
// cluster of one from o (whose TLS it fills in) and returns the join
// tokens f asks for.
// It writes the marker last, once the raft store is closed again.
func Found(ctx context.Context, o Options, f FoundOptions) ([]IssuedToken, error) {
	if Initialized(o.DataDir) {
		return nil, alreadyMember(o.Name, o.DataDir, "to start over, stop the agent and remove "+o.DataDir)
	}
	now := time.Now()
	ca, err := pki.NewCA(now)
	if err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	creds, err := ca.Issue(o.Name, AdvertisedIPs(o.Advertise), now)
	if err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	if err := creds.Save(PKIDir(o.DataDir)); err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	o.TLS = creds
	node, err := New(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	toks, err := foundOn(ctx, node, f)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if serr := node.Shutdown(sctx); err == nil && serr != nil {
		err = fmt.Errorf("init: stop raft: %w", serr)
	}
	if err != nil {
		return nil, err
	}
	if err := writeMarker(o.DataDir, Marker{Name: o.Name, Role: o.Role, Created: now, Founder: true}); err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	return toks, nil
}

func foundOn(ctx context.Context, node *Node, f FoundOptions) ([]IssuedToken, error) {
	if err := node.Bootstrap(ctx); err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	var out []IssuedToken
	for _, spec := range f.Tokens {
		uses := spec.Uses
		if uses == 0 {
			uses = -1
		}
		tok, err := node.CreateToken(ctx, f.TokenTTL, uses, spec.Role)
		if err != nil {
			return nil, fmt.Errorf("init: %w", err)
		}
		out = append(out, IssuedToken{Role: spec.Role, Uses: spec.Uses, Expires: node.now().Add(f.TokenTTL), Token: tok})
	}
	return out, nil
}

// JoinAndSave asks the cluster at addr to admit this node with token, then
// saves its credentials and the marker under dataDir.
func JoinAndSave(ctx context.Context, dataDir, addr, token string, req JoinRequest) error {
	if Initialized(dataDir) {
		return alreadyMember(req.Name, dataDir, "run 'tandem leave' first, or remove "+dataDir+" to start over")
	}
	if req.IPs == nil {
		req.IPs = AdvertisedIPs(req.Advertise)
	}
	res, err := Join(ctx, addr, token, req)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("join: %w", err)
	}
	if err := res.Credentials.Save(PKIDir(dataDir)); err != nil {
		return fmt.Errorf("join: %w", err)
	}
	peers, keys := map[string]string{}, map[string]string{}
	for _, m := range res.Members {
		peers[m.Name] = m.Address
		if m.Key != "" {
			keys[m.Name] = m.Key
		}
	}
	return writeMarker(dataDir, Marker{Name: req.Name, Role: req.Role, Created: time.Now(), JoinedAt: addr, Peers: peers, Keys: keys})
}
