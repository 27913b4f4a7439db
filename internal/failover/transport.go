package failover

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// ProbePath is where the mesh's probe handler is mounted.
const ProbePath = "/v1/probe"

// maxProbeBody bounds what a probe request or reply may be.
const maxProbeBody = 64 << 10

// HTTPTransport probes peers over the cluster's mTLS HTTP API.
type HTTPTransport struct {
	Client *http.Client // presents this node's certificate, trusts the cluster CA
}

// Probe implements Transport.
func (t HTTPTransport) Probe(ctx context.Context, addr string, req ProbeRequest) (ProbeReply, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return ProbeReply{}, fmt.Errorf("probe %s: %w", addr, err)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+ProbePath, bytes.NewReader(body))
	if err != nil {
		return ProbeReply{}, fmt.Errorf("probe %s: %w", addr, err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := t.Client.Do(hreq)
	if err != nil {
		return ProbeReply{}, fmt.Errorf("probe %s: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return ProbeReply{}, fmt.Errorf("probe %s: %s: %s", addr, resp.Status, bytes.TrimSpace(msg))
	}
	var reply ProbeReply
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxProbeBody)).Decode(&reply); err != nil {
		return ProbeReply{}, fmt.Errorf("probe %s: decode reply: %w", addr, err)
	}
	return reply, nil
}

// Handler serves probes. The caller's identity is the common name of its
// verified client certificate; the listener must have verified it.
func (m *Mesh) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "use POST", http.StatusMethodNotAllowed)
			return
		}
		from, err := peerName(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		req, err := decodeProbe(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if req.From != from {
			http.Error(w, fmt.Sprintf("probe claims to be from %q but its certificate names %q", req.From, from), http.StatusForbidden)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(m.HandleProbe(from, req))
	})
}

func peerName(r *http.Request) (string, error) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return "", errors.New("a client certificate from the cluster CA is required")
	}
	return r.TLS.VerifiedChains[0][0].Subject.CommonName, nil
}

// decodeProbe reads a probe request from a peer.
func decodeProbe(body io.Reader) (ProbeRequest, error) {
	var req ProbeRequest
	if err := json.NewDecoder(io.LimitReader(body, maxProbeBody)).Decode(&req); err != nil {
		return ProbeRequest{}, fmt.Errorf("bad probe: %w", err)
	}
	if req.From == "" {
		return ProbeRequest{}, errors.New("bad probe: no sender")
	}
	return req, nil
}
