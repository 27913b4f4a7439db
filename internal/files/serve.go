package files

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	"github.com/tandem-ha/tandem/internal/cluster/state"
)

// SyncPath is the member-only endpoint through which a source asks a
// receiver to catch up.
const SyncPath = "/v1/files/sync"

// Handler serves SyncPath; peer names the calling member (from its
// verified certificate).
func (c *Controller) Handler(peer func(*http.Request) string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The whole body, and nothing after the request: a decoder would
		// take the first JSON value and ignore what follows.
		const maxBody = 1 << 20
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
		if err != nil {
			writeErr(w, http.StatusBadRequest, fmt.Errorf("read sync request: %w", err))
			return
		}
		if len(body) > maxBody {
			writeErr(w, http.StatusRequestEntityTooLarge, fmt.Errorf("sync request over %d bytes", maxBody))
			return
		}
		var req SyncRequest
		if err := json.Unmarshal(body, &req); err != nil {
			writeErr(w, http.StatusBadRequest, fmt.Errorf("decode sync request: %w", err))
			return
		}
		rep, err := c.Receive(r.Context(), peer(r), req)
		switch {
		case errors.Is(err, ErrBadRequest):
			writeErr(w, http.StatusBadRequest, err)
			return
		case errors.Is(err, ErrNotSource), errors.Is(err, ErrUnknownPath), errors.Is(err, ErrUnsafePath):
			writeErr(w, http.StatusConflict, err)
			return
		case err != nil:
			writeErr(w, http.StatusBadGateway, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(rep)
	})
}

func writeErr(w http.ResponseWriter, status int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}

// Serve decides, on a source, whether to serve peer a pull of dir in
// epoch: dir must be declared, peer an app member, and this node the
// source of exactly that epoch. still tells, during the transfer, whether
// that remains so.
func (c *Controller) Serve(peer, dir string, epoch uint64) (still func() bool, err error) {
	dir = filepath.Clean(dir)
	if c.paths[dir] == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownPath, dir)
	}
	s := c.o.Machine.View()
	if m, ok := s.Members[peer]; !ok || m.Role != state.RoleApp {
		return nil, fmt.Errorf("%s is not an app node of this cluster", peer)
	} else if m.Pending {
		// The source never asks it to catch up before it is promoted.
		return nil, fmt.Errorf("%s has joined but is not promoted yet; it receives files once it is", peer)
	}
	still = func() bool {
		e, ok := MaySend(c.o.Name, c.o.Machine.View().Holder, c.o.Held())
		return ok && e == epoch
	}
	if !still() {
		return nil, fmt.Errorf("%w: %s is not the source of epoch %d here (holder: %s, epoch %d)", ErrNotSource, c.o.Name, epoch, s.Holder.Node, s.Holder.Epoch)
	}
	if err := checkLinks(dir); err != nil {
		c.log.Warn("not sending a replicated directory: a symlink on the way to it could point root's rsync anywhere", "dir", dir, "err", err)
		return nil, err
	}
	return still, nil
}

// ServeQuarantine decides, on a node that keeps a quarantine beside dir,
// whether to serve its epoch's quarantine to peer: only the committed
// source (the holder, which restores into the copy that replicates) may
// fetch it, and only a quarantine beside a declared directory. It returns
// the quarantine to serve; still tells whether peer remains the source.
func (c *Controller) ServeQuarantine(peer, dir string, epoch uint64) (local string, still func() bool, err error) {
	dir = filepath.Clean(dir)
	if c.paths[dir] == nil {
		return "", nil, fmt.Errorf("%w: %q", ErrUnknownPath, dir)
	}
	isSource := func() bool {
		node, _, ok := Source(c.o.Machine.View().Holder)
		return ok && node == peer && peer != c.o.Name
	}
	if !isSource() {
		return "", nil, fmt.Errorf("%w: only the holder may fetch a quarantine to restore it, and %s is not the holder here", ErrNotSource, peer)
	}
	q := QuarantineDir(dir, epoch)
	if err := checkLinks(q); err != nil {
		return "", nil, err
	}
	if fi, err := os.Stat(q); err != nil || !fi.IsDir() {
		return "", nil, fmt.Errorf("no quarantine of epoch %d beside %s on %s", epoch, dir, c.o.Name)
	}
	return q, isSource, nil
}
