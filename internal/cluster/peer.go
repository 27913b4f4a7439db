package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// peerAddr returns a member's address from the replicated state.
func (n *Node) peerAddr(name string) (string, error) {
	m, ok := n.machine.View().Members[name]
	if !ok || m.Address == "" {
		return "", fmt.Errorf("%q is not a member with an address (see 'tandem status')", name)
	}
	return m.Address, nil
}

// Call sends in as JSON to a member's endpoint (registered there with
// Handle) over the cluster's mTLS and decodes its JSON reply into out
// (unless nil). The peer must be the member pinned at its address; an
// error reply becomes a *RemoteError.
func (n *Node) Call(ctx context.Context, peer, method, path string, in, out any) error {
	addr, err := n.peerAddr(peer)
	if err != nil {
		return err
	}
	var body []byte
	if in != nil {
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("encode request to %s: %w", peer, err)
		}
	}
	if err := requestJSON(ctx, n.client, method, addr, path, body, out); err != nil {
		return fmt.Errorf("%s %s on %s: %w", method, path, peer, err)
	}
	return nil
}

// Open GETs a member's endpoint and returns its body as a stream, for
// transfers larger than a JSON reply (release files). The caller closes it.
func (n *Node) Open(ctx context.Context, peer, path string) (io.ReadCloser, error) {
	addr, err := n.peerAddr(peer)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := n.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s on %s: %w", path, peer, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var buf bytes.Buffer
		_, _ = io.Copy(&buf, io.LimitReader(resp.Body, maxBody))
		return nil, fmt.Errorf("GET %s on %s: %w", path, peer, decodeError(resp.StatusCode, buf.Bytes()))
	}
	return resp.Body, nil
}
