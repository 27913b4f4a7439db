package harden

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/tandem-ha/tandem/internal/harden/check"
)

// DefaultStateDir is where pending applies are kept (under Host.Root).
const DefaultStateDir = "/var/lib/tandem/harden"

// UnitPrefix names the transient systemd timer that reverts an unconfirmed
// apply: UnitPrefix + id.
const UnitPrefix = "tandem-harden-revert-"

// MinConfirm is the shortest confirmation window a risky apply accepts:
// time enough to open a new SSH session and confirm from it.
const MinConfirm = 10 * time.Second

// Host is the machine apply changes. Root is "/" on a real host and a
// temporary directory in tests; every path of a plan is taken under it.
type Host struct {
	Root     string
	StateDir string // default DefaultStateDir, under Root
	Run      Runner
	Log      *slog.Logger
	Now      func() time.Time
}

func (h *Host) path(p string) string {
	if h.Root == "" || h.Root == "/" {
		return p
	}
	return filepath.Join(h.Root, p)
}

func (h *Host) state() string {
	if h.StateDir != "" {
		return h.path(h.StateDir)
	}
	return h.path(DefaultStateDir)
}

func (h *Host) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

// ApplyOptions are apply's flags.
type ApplyOptions struct {
	DryRun bool
	// Confirm is how long a risky apply waits for 'tandem harden confirm'
	// before it reverts by itself.
	Confirm time.Duration
}

// FileChange is one file an apply writes, with its diff.
type FileChange struct {
	Area    string `json:"area"`
	Path    string `json:"path"`
	Existed bool   `json:"existed"`
	Diff    string `json:"diff"`
}

// ApplyResult says what an apply did.
type ApplyResult struct {
	Changes []FileChange `json:"changes"`
	// Commands are the validate and reload commands run (or, with
	// --dry-run, to be run).
	Commands [][]string `json:"commands"`
	// Nothing is true when the host already complies.
	Nothing bool `json:"nothing_to_change"`
	DryRun  bool `json:"dry_run"`
	// Pending is the id to confirm when the apply was risky; empty
	// otherwise.
	Pending  string    `json:"pending,omitempty"`
	Deadline time.Time `json:"deadline,omitzero"`
}

// Manifest describes a pending apply: what to put back and what to run.
// It is written before any file changes, beside the revert script.
type Manifest struct {
	ID       string         `json:"id"`
	Created  time.Time      `json:"created"`
	Deadline time.Time      `json:"deadline,omitzero"` // zero: not risky, committed at once
	Areas    []string       `json:"areas"`
	Files    []BackedUpFile `json:"files"`
	Reload   [][]string     `json:"reload"`
	Unit     string         `json:"unit,omitempty"` // the revert timer's unit, without .timer
}

// BackedUpFile is one replaced file: its previous content is in Backup
// (relative to the pending directory), or it did not exist.
type BackedUpFile struct {
	Path    string `json:"path"`
	Existed bool   `json:"existed"`
	Mode    uint32 `json:"mode,omitempty"`
	Backup  string `json:"backup,omitempty"`
}

// ErrPending is returned by Apply while an earlier risky apply waits for
// its confirmation.
var ErrPending = errors.New("an earlier apply waits for its confirmation")

// ValidateError is a plan's validation failure; the apply was reverted.
type ValidateError struct {
	Area string
	Err  error
}

func (e *ValidateError) Error() string {
	return fmt.Sprintf("%s: validation failed, every file was put back: %v", e.Area, e.Err)
}
func (e *ValidateError) Unwrap() error { return e.Err }

// changed keeps the plans' files whose content or mode differ from the
// host's, and drops plans whose every file is unchanged (their reload is
// not needed). A plan with commands only is kept.
func (h *Host) changed(plans []check.Plan) ([]check.Plan, []FileChange, error) {
	var out []check.Plan
	var changes []FileChange
	for _, p := range plans {
		if p.Empty() {
			continue
		}
		var files []check.File
		for _, f := range p.Files {
			if !filepath.IsAbs(f.Path) || filepath.Clean(f.Path) != f.Path {
				return nil, nil, fmt.Errorf("%s: plan path %q is not a clean absolute path", p.Area, f.Path)
			}
			old, err := os.ReadFile(h.path(f.Path))
			existed := err == nil
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, nil, fmt.Errorf("%s: read %s: %w", p.Area, f.Path, err)
			}
			if existed && bytes.Equal(old, f.Content) {
				if st, err := os.Stat(h.path(f.Path)); err == nil && uint32(st.Mode().Perm()) == f.Mode&0o7777 {
					continue
				}
			}
			files = append(files, f)
			changes = append(changes, FileChange{Area: p.Area, Path: f.Path, Existed: existed, Diff: Diff(f.Path, old, f.Content)})
		}
		if len(p.Files) > 0 && len(files) == 0 {
			continue
		}
		p.Files = files
		out = append(out, p)
	}
	return out, changes, nil
}

// Apply writes the plans' files, validates and reloads them. A risky
// apply (any plan Risky) stays pending: a systemd timer, outside this
// process, puts the previous files back and reloads unless Confirm is
// called within opts.Confirm.
func (h *Host) Apply(ctx context.Context, plans []check.Plan, opts ApplyOptions) (ApplyResult, error) {
	plans, changes, err := h.changed(plans)
	if err != nil {
		return ApplyResult{}, err
	}
	res := ApplyResult{Changes: changes, DryRun: opts.DryRun, Nothing: len(plans) == 0}
	risky := false
	for _, p := range plans {
		res.Commands = append(res.Commands, p.Validate...)
		res.Commands = append(res.Commands, p.Reload...)
		risky = risky || p.Risky
	}
	if opts.DryRun || res.Nothing {
		return res, nil
	}
	if risky && opts.Confirm < MinConfirm {
		return res, fmt.Errorf("this apply changes the firewall or sshd, so it must be confirmed: pass --confirm of at least %s (e.g. --confirm 60s)", MinConfirm)
	}
	unlock, err := h.lock()
	if err != nil {
		return res, err
	}
	locked := true
	defer func() {
		if locked {
			unlock()
		}
	}()
	if id, err := h.pendingID(); err != nil {
		return res, err
	} else if id != "" {
		return res, fmt.Errorf("%w (%s): run 'tandem harden confirm' to keep it or 'tandem harden revert' to undo it first", ErrPending, id)
	}
	m, dir, err := h.backup(plans, risky, opts.Confirm)
	if err != nil {
		return res, err
	}
	if risky {
		// The timer exists before any file changes: if this process dies
		// from here on, the revert still happens.
		if _, err := h.Run.Run(ctx, "systemd-run", "--unit", m.Unit, "--description", "tandem harden: revert unconfirmed apply "+m.ID,
			"--on-active", fmt.Sprintf("%ds", int(opts.Confirm.Round(time.Second)/time.Second)), "--timer-property=AccuracySec=1s",
			"/bin/sh", filepath.Join(dir, "revert.sh")); err != nil {
			os.RemoveAll(dir)
			return res, fmt.Errorf("schedule the revert (nothing was changed): %w", err)
		}
		res.Pending, res.Deadline = m.ID, m.Deadline
	}
	fail := func(area string, err error) (ApplyResult, error) {
		unlock()
		locked = false
		if rerr := h.runRevert(ctx, m, dir); rerr != nil {
			return res, fmt.Errorf("%w; and the revert failed too: %v (the previous files are in %s)", &ValidateError{Area: area, Err: err}, rerr, dir)
		}
		res.Pending, res.Deadline = "", time.Time{}
		return res, &ValidateError{Area: area, Err: err}
	}
	for _, p := range plans {
		for _, f := range p.Files {
			if err := writeAtomic(h.path(f.Path), f.Content, fs.FileMode(f.Mode&0o7777)); err != nil {
				return fail(p.Area, err)
			}
		}
	}
	for _, p := range plans {
		for _, cmd := range p.Validate {
			if _, err := h.Run.Run(ctx, cmd...); err != nil {
				return fail(p.Area, err)
			}
		}
	}
	for _, p := range plans {
		for _, cmd := range p.Reload {
			if _, err := h.Run.Run(ctx, cmd...); err != nil {
				return fail(p.Area, fmt.Errorf("reload: %w", err))
			}
		}
	}
	if !risky {
		if err := os.RemoveAll(dir); err != nil {
			return res, fmt.Errorf("drop the backup: %w", err)
		}
	}
	h.log().Info("harden apply", "files", len(changes), "pending", res.Pending, "deadline", res.Deadline)
	return res, nil
}

func (h *Host) log() *slog.Logger {
	if h.Log != nil {
		return h.Log
	}
	return slog.New(slog.DiscardHandler)
}

// backup creates the pending directory with the previous content of every
// file, the manifest and the revert script.
func (h *Host) backup(plans []check.Plan, risky bool, confirm time.Duration) (Manifest, string, error) {
	now := h.now().UTC()
	suffix := make([]byte, 3)
	rand.Read(suffix)
	m := Manifest{ID: now.Format("20060102-150405") + "-" + hex.EncodeToString(suffix), Created: now}
	if risky {
		m.Deadline = now.Add(confirm)
		m.Unit = UnitPrefix + m.ID
	}
	dir := filepath.Join(h.state(), "pending", m.ID)
	if err := os.MkdirAll(filepath.Join(dir, "files"), 0o700); err != nil {
		return m, "", fmt.Errorf("backup: %w", err)
	}
	for _, p := range plans {
		m.Areas = append(m.Areas, p.Area)
		m.Reload = append(m.Reload, p.Reload...)
		for _, f := range p.Files {
			b := BackedUpFile{Path: f.Path}
			old, err := os.ReadFile(h.path(f.Path))
			switch {
			case err == nil:
				st, err := os.Stat(h.path(f.Path))
				if err != nil {
					return m, dir, fmt.Errorf("backup %s: %w", f.Path, err)
				}
				b.Existed, b.Mode = true, uint32(st.Mode().Perm())
				b.Backup = filepath.Join("files", fmt.Sprint(len(m.Files)))
				if err := writeAtomic(filepath.Join(dir, b.Backup), old, st.Mode().Perm()); err != nil {
					return m, dir, fmt.Errorf("backup %s: %w", f.Path, err)
				}
			case !errors.Is(err, fs.ErrNotExist):
				return m, dir, fmt.Errorf("backup %s: %w", f.Path, err)
			}
			m.Files = append(m.Files, b)
		}
	}
	data, _ := json.MarshalIndent(m, "", "  ")
	if err := writeAtomic(filepath.Join(dir, "manifest.json"), data, 0o600); err != nil {
		return m, dir, err
	}
	if err := writeAtomic(filepath.Join(dir, "revert.sh"), []byte(h.revertScript(m, dir)), 0o700); err != nil {
		return m, dir, err
	}
	return m, dir, nil
}

// revertScript is the revert as a self-contained shell script: it needs
// neither tandem's agent nor its binary (which an upgrade may replace), so
// the timer can run it after tandem was killed. It is a no-op once the
// apply is confirmed (the directory is gone), and takes the same lock as
// apply and confirm so a confirmation and the timer never both act.
func (h *Host) revertScript(m Manifest, dir string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "#!/bin/sh\n# tandem harden: put back what apply %s replaced, then reload.\n# Run by the timer %s unless 'tandem harden confirm' came first.\nset -u\n", m.ID, m.Unit)
	fmt.Fprintf(&b, "P=%s\nexec 9>>%s\nflock 9\n", shQuote(dir), shQuote(filepath.Join(h.state(), "lock")))
	b.WriteString("[ -f \"$P/manifest.json\" ] || { echo 'tandem harden: nothing to revert (confirmed or reverted already)'; exit 0; }\nstatus=0\n")
	for _, f := range m.Files {
		target := h.path(f.Path)
		if f.Existed {
			tmp := target + ".tandem-revert"
			fmt.Fprintf(&b, "cp -p %s %s && mv -f %s %s || { echo 'tandem harden: could not restore %s'; status=1; }\n",
				shQuote("$P/"+f.Backup), shQuote(tmp), shQuote(tmp), shQuote(target), shEsc(f.Path))
		} else {
			fmt.Fprintf(&b, "rm -f %s || status=1\n", shQuote(target))
		}
	}
	for _, cmd := range m.Reload {
		q := make([]string, len(cmd))
		for i, a := range cmd {
			q[i] = shQuote(a)
		}
		fmt.Fprintf(&b, "%s || { echo 'tandem harden: reload failed: %s'; status=1; }\n", strings.Join(q, " "), shEsc(strings.Join(cmd, " ")))
	}
	fmt.Fprintf(&b, "mkdir -p %s && rm -rf %s && mv %s %s\n", shQuote(filepath.Join(h.state(), "reverted")),
		shQuote(filepath.Join(h.state(), "reverted", m.ID)), "\"$P\"", shQuote(filepath.Join(h.state(), "reverted", m.ID)))
	fmt.Fprintf(&b, "echo \"tandem harden: apply %s reverted (status $status)\"\nexit $status\n", m.ID)
	return b.String()
}

// shQuote quotes s for sh; "$P/..." keeps its variable.
func shQuote(s string) string {
	if rest, ok := strings.CutPrefix(s, "$P/"); ok {
		return "\"$P\"/" + shQuote(rest)
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// shEsc makes s safe inside a single-quoted echo.
func shEsc(s string) string { return strings.ReplaceAll(s, "'", "") }

// runRevert stops the timer and runs the revert script now.
func (h *Host) runRevert(ctx context.Context, m Manifest, dir string) error {
	if m.Unit != "" {
		// The timer may already be gone (fired, or never started).
		h.Run.Run(ctx, "systemctl", "stop", m.Unit+".timer")
	}
	cmd := exec.CommandContext(ctx, "/bin/sh", filepath.Join(dir, "revert.sh"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("revert %s: %w: %s", m.ID, err, strings.TrimSpace(string(out)))
	}
	h.log().Info("harden revert", "id", m.ID, "output", strings.TrimSpace(string(out)))
	return nil
}

// Pending returns the apply waiting for confirmation, if any.
func (h *Host) Pending() (*Manifest, error) {
	id, err := h.pendingID()
	if err != nil || id == "" {
		return nil, err
	}
	data, err := os.ReadFile(filepath.Join(h.state(), "pending", id, "manifest.json"))
	if err != nil {
		return nil, fmt.Errorf("pending apply %s: %w", id, err)
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("pending apply %s: manifest: %w", id, err)
	}
	return &m, nil
}

func (h *Host) pendingID() (string, error) {
	entries, err := os.ReadDir(filepath.Join(h.state(), "pending"))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("pending applies: %w", err)
	}
	var ids []string
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(h.state(), "pending", e.Name(), "manifest.json")); err == nil {
			ids = append(ids, e.Name())
		}
	}
	slices.Sort(ids)
	if len(ids) == 0 {
		return "", nil
	}
	return ids[len(ids)-1], nil
}

// ErrNothingPending is returned by Confirm and Revert when no apply waits.
var ErrNothingPending = errors.New("no apply waits for confirmation")

// Confirm keeps the pending apply: it cancels the revert timer and drops
// the backup.
func (h *Host) Confirm(ctx context.Context) (Manifest, error) {
	unlock, err := h.lock()
	if err != nil {
		return Manifest{}, err
	}
	defer unlock()
	m, err := h.Pending()
	if err != nil {
		return Manifest{}, err
	}
	if m == nil {
		return Manifest{}, h.nothingPending()
	}
	if m.Unit != "" {
		if _, err := h.Run.Run(ctx, "systemctl", "stop", m.Unit+".timer"); err != nil {
			h.log().Warn("harden confirm: stop the revert timer", "err", err)
		}
	}
	if err := os.RemoveAll(filepath.Join(h.state(), "pending", m.ID)); err != nil {
		return *m, fmt.Errorf("confirm %s: drop the backup: %w", m.ID, err)
	}
	h.log().Info("harden confirm", "id", m.ID)
	return *m, nil
}

// nothingPending says so, naming the last apply the timer reverted if any.
func (h *Host) nothingPending() error {
	entries, _ := os.ReadDir(filepath.Join(h.state(), "reverted"))
	if len(entries) > 0 {
		last := entries[len(entries)-1].Name()
		return fmt.Errorf("%w; the last unconfirmed apply (%s) was reverted", ErrNothingPending, last)
	}
	return ErrNothingPending
}

// Revert undoes the pending apply now.
func (h *Host) Revert(ctx context.Context) (Manifest, error) {
	m, err := h.Pending()
	if err != nil {
		return Manifest{}, err
	}
	if m == nil {
		return Manifest{}, h.nothingPending()
	}
	return *m, h.runRevert(ctx, *m, filepath.Join(h.state(), "pending", m.ID))
}

// lock serialises apply, confirm and the revert script (flock on the same
// file).
func (h *Host) lock() (func(), error) {
	if err := os.MkdirAll(h.state(), 0o700); err != nil {
		return nil, fmt.Errorf("harden state: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(h.state(), "lock"), os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("harden lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("harden lock: %w", err)
	}
	return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}

// writeAtomic writes data to path through a temporary file and a rename,
// so a reader sees the old or the new content, never a mix.
func writeAtomic(path string, data []byte, mode fs.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tandem-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
