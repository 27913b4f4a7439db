package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
)

// Caller is how the RPC handlers learn who calls and who leads.
type Caller interface {
	// PeerName is the verified member name of the request's client
	// certificate (the cluster listener checked its pinned key).
	PeerName(r *http.Request) string
	// Leader names the current raft leader.
	Leader() (name, addr string)
}

// Handlers returns the cluster endpoints of a node's delivery service,
// by pattern. Install, fetch and hook may be asked only by the raft
// leader, and only for the rollout in progress; releases may be copied
// only by app members.
func (l *Local) Handlers(c Caller) map[string]http.Handler {
	leaderOnly := func(h func(w http.ResponseWriter, r *http.Request, rollout string) error) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			caller := c.PeerName(r)
			if caller == "" || !waitLeader(r.Context(), c, caller) {
				rpcError(w, http.StatusForbidden, fmt.Errorf("only the raft leader drives rollouts; %q is not the leader", caller))
				return
			}
			var probe struct {
				Rollout string `json:"rollout"`
			}
			body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
			if err != nil || json.Unmarshal(body, &probe) != nil {
				rpcError(w, http.StatusBadRequest, errors.New("malformed request"))
				return
			}
			if cur := l.o.Machine.View().Deploy().Rollout; !l.waitRollout(r.Context(), probe.Rollout) {
				id := ""
				if cur != nil {
					id = cur.ID
				}
				rpcError(w, http.StatusConflict, fmt.Errorf("rollout %q is not in progress (current: %q)", probe.Rollout, id))
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			if err := h(w, r, probe.Rollout); err != nil {
				rpcError(w, http.StatusUnprocessableEntity, err)
			}
		})
	}
	return map[string]http.Handler{
		"POST /v1/deploy/fetch": leaderOnly(func(w http.ResponseWriter, r *http.Request, _ string) error {
			var req FetchRequest
			if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
				return err
			}
			res, err := l.Fetch(r.Context(), req)
			if err != nil {
				return err
			}
			writeJSON(w, res)
			return nil
		}),
		"POST /v1/deploy/install": leaderOnly(func(w http.ResponseWriter, r *http.Request, _ string) error {
			var req InstallRequest
			if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
				return err
			}
			res, err := l.Install(r.Context(), req)
			if err != nil {
				return err
			}
			writeJSON(w, res)
			return nil
		}),
		"POST /v1/deploy/hook": leaderOnly(func(w http.ResponseWriter, r *http.Request, _ string) error {
			var req HookRequest
			if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
				return err
			}
			if err := l.Hook(r.Context(), req); err != nil {
				return err
			}
			writeJSON(w, struct{}{})
			return nil
		}),
		"GET /v1/deploy/artifact/{digest}": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			caller := c.PeerName(r)
			if m, ok := l.o.Machine.View().Members[caller]; !ok || m.Role != state.RoleApp {
				rpcError(w, http.StatusForbidden, fmt.Errorf("only app members may copy releases; %q is not one", caller))
				return
			}
			f, err := l.Artifact(r.PathValue("digest"))
			if err != nil {
				rpcError(w, http.StatusNotFound, err)
				return
			}
			defer f.Close()
			w.Header().Set("Content-Type", "application/vnd.debian.binary-package")
			if fi, err := f.Stat(); err == nil {
				w.Header().Set("Content-Length", fmt.Sprint(fi.Size()))
			}
			_, _ = io.Copy(w, f)
		}),
	}
}

// waitLeader reports whether caller is the raft leader, waiting briefly:
// a new leader's first call may arrive before this node heard of it.
func waitLeader(ctx context.Context, c Caller, caller string) bool {
	return await(ctx, 2*time.Second, func() bool { leader, _ := c.Leader(); return leader == caller })
}

// waitRollout reports whether id is the rollout in progress, waiting
// briefly for this node to apply the commit that started it.
func (l *Local) waitRollout(ctx context.Context, id string) bool {
	return await(ctx, 3*time.Second, func() bool {
		r := l.o.Machine.View().Deploy().Rollout
		return r != nil && r.ID == id
	})
}

// await polls cond until it holds (true) or within passes or ctx ends
// (false): for state this node learns a moment after a peer does.
func await(ctx context.Context, within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
	return true
}

func rpcError(w http.ResponseWriter, status int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// PeerCaller calls a member's endpoint over the cluster's mTLS.
type PeerCaller interface {
	Call(ctx context.Context, peer, method, path string, in, out any) error
}

// RemoteNodes is Nodes over the cluster's mTLS.
type RemoteNodes struct{ C PeerCaller }

// Fetch implements Nodes.
func (n RemoteNodes) Fetch(ctx context.Context, node string, req FetchRequest) (FetchResult, error) {
	var out FetchResult
	err := n.C.Call(ctx, node, http.MethodPost, "/v1/deploy/fetch", req, &out)
	return out, err
}

// Install implements Nodes.
func (n RemoteNodes) Install(ctx context.Context, node string, req InstallRequest) (InstallResult, error) {
	var out InstallResult
	err := n.C.Call(ctx, node, http.MethodPost, "/v1/deploy/install", req, &out)
	return out, err
}

// Hook implements Nodes.
func (n RemoteNodes) Hook(ctx context.Context, node string, req HookRequest) error {
	return n.C.Call(ctx, node, http.MethodPost, "/v1/deploy/hook", req, nil)
}
