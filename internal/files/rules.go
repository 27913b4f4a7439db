package files

import (
	"fmt"
	"path/filepath"

	"github.com/tandem-ha/tandem/internal/cluster/state"
)

// Source names the node whose copy is authoritative under the committed
// holder h, and the epoch of its authority; ok is false when nobody may
// send.
//
//   - The holder of an active epoch is the source of that epoch.
//   - During a planned move (Drain, not yet Active) the previous holder
//     still serves the IP while its connections drain, so it stays the
//     source of its own epoch, h.Epoch-1, until it releases: that is when
//     it flushes its last changes to the new holder.
//   - During an unplanned move nobody sends: the previous holder may be
//     cut off, and the new holder is not cleared to act yet.
func Source(h state.Holder) (node string, epoch uint64, ok bool) {
	switch {
	case h.Active && h.Node != "":
		return h.Node, h.Epoch, true
	case !h.Active && h.Drain && h.Previous != "" && h.Epoch > 0:
		return h.Previous, h.Epoch - 1, true
	}
	return "", 0, false
}

// Held is what failover says this node has configured.
type Held struct {
	Holding bool   // the floating IP is configured here
	Epoch   uint64 // in this epoch
}

// MaySend reports whether self may send its copy now, and in which epoch:
// only when the committed state names it the source and it actually holds
// the IP in that epoch. A node that held an older epoch never sends: its
// epoch is not the source's, or it no longer holds the IP.
func MaySend(self string, h state.Holder, held Held) (uint64, bool) {
	node, epoch, ok := Source(h)
	if !ok || node != self || !held.Holding || held.Epoch != epoch {
		return 0, false
	}
	return epoch, true
}

// MayReceive checks, on a receiver, a request to catch up from peer in
// epoch: peer must be the committed source of exactly that epoch, and not
// this node itself.
func MayReceive(self, peer string, epoch uint64, h state.Holder) error {
	node, cur, ok := Source(h)
	switch {
	case peer == self:
		return fmt.Errorf("%w: a node never receives from itself", ErrNotSource)
	case !ok:
		return fmt.Errorf("%w: epoch %d has no active holder yet (a move is pending)", ErrNotSource, h.Epoch)
	case node != peer:
		return fmt.Errorf("%w: %s is not the holder here (the holder of epoch %d is %s)", ErrNotSource, peer, cur, node)
	case epoch != cur:
		return fmt.Errorf("%w: %s asked as holder of epoch %d, but the source's epoch here is %d", ErrNotSource, peer, epoch, cur)
	}
	return nil
}

// Mark records the source and epoch a receiver last caught up with.
type Mark struct {
	Source string `json:"source"`
	Epoch  uint64 `json:"epoch"`
}

// QuarantineFor says where a receiver's catch-up from (source, epoch) puts
// the files it would delete or replace: nowhere ("") when its copy last
// caught up with that same source in that same epoch, so the source's own
// deletes propagate; otherwise the epoch's quarantine directory. A node
// that held an older epoch, or a standby that last followed it, thus never
// loses a file the old holder wrote in its last moments.
func QuarantineFor(dir string, last Mark, source string, epoch uint64) string {
	if last.Source == source && last.Epoch == epoch {
		return ""
	}
	return QuarantineDir(dir, epoch)
}

// QuarantineRoot is the directory beside dir that holds its quarantines,
// one per epoch.
func QuarantineRoot(dir string) string {
	return filepath.Clean(dir) + ".tandem-quarantine"
}

// QuarantineDir is the quarantine of epoch beside dir.
func QuarantineDir(dir string, epoch uint64) string {
	return filepath.Join(QuarantineRoot(dir), fmt.Sprintf("epoch-%d", epoch))
}
