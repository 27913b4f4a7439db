// Package integrity is the package-file integrity area of `tandem harden`,
// the job rkhunter's daily scan did: every file an installed Debian
// package shipped is checked against the package's md5sums
// (/var/lib/dpkg/info/*.md5sums), and changed or missing files are
// reported per package. Conffiles are the admin's to change: the edited
// ones (against the checksums in dpkg's status) are listed for information
// and never fail the check. Files dpkg's path-exclude kept off the disk are
// skipped, and diverted files are checked where they now live.
//
// A scan runs daily from a systemd timer (`tandem harden scan`, at idle
// CPU and IO priority) and saves its findings, so the audit, `tandem
// status` and /metrics read the last result without scanning again.
package integrity

import (
	"context"
	"crypto/md5"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tandem-ha/tandem/internal/harden/check"
	"github.com/tandem-ha/tandem/internal/harden/internal/hostrun"
)

// Defaults.
const (
	DefaultStatePath = "/var/lib/tandem/integrity.json"
	DefaultBinary    = "/usr/bin/tandem"
	// MaxAge is how old the last scan may be before integrity.last-scan
	// fails: a daily timer that missed one run is still fine.
	MaxAge = 48 * time.Hour
	// ServiceUnit and TimerUnit run the daily scan.
	ServiceUnit = "/etc/systemd/system/tandem-integrity.service"
	TimerUnit   = "/etc/systemd/system/tandem-integrity.timer"
	timerName   = "tandem-integrity.timer"
	infoDir     = "/var/lib/dpkg/info"
)

// Options configures the area. The zero value scans and plans for the
// real host.
type Options struct {
	// Root is where host paths are read and the state is kept ("" is
	// /); tests use a temp tree.
	Root string
	// StatePath is where the last scan's report is saved (under Root);
	// DefaultStatePath when empty.
	StatePath string
	// Binary is the tandem the timer runs; DefaultBinary when empty.
	Binary string
	// Workers bounds how many files are hashed at once; 0 means 2 (the
	// scan is background work: the disk, not the CPU, is its limit).
	Workers int
	// Run runs systemctl is-enabled; nil runs the real command.
	Run hostrun.Func
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// Log receives the scan's progress; nil discards.
	Log *slog.Logger
}

// Area is the integrity area.
type Area struct {
	root, statePath, binary string
	workers                 int
	run                     hostrun.Func
	now                     func() time.Time
	log                     *slog.Logger
}

// New returns the integrity area for opts.
func New(opts Options) *Area {
	a := &Area{root: opts.Root, statePath: opts.StatePath, binary: opts.Binary, workers: opts.Workers,
		run: hostrun.OrExec(opts.Run), now: opts.Now, log: opts.Log}
	if a.statePath == "" {
		a.statePath = DefaultStatePath
	}
	if a.binary == "" {
		a.binary = DefaultBinary
	}
	if a.workers <= 0 {
		a.workers = 2
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	return a
}

// Name implements the area interface.
func (a *Area) Name() string { return "integrity" }

// Kind says what is wrong with a file.
type Kind string

const (
	Changed    Kind = "changed"    // its content differs from the package's checksum
	Missing    Kind = "missing"    // it is gone
	Unreadable Kind = "unreadable" // it could not be read (permissions, I/O error)
)

// Finding is one file that does not match its package.
type Finding struct {
	Package string `json:"package"`
	Path    string `json:"path"`
	Kind    Kind   `json:"kind"`
	Detail  string `json:"detail,omitempty"`
}

// Report is one scan's result, saved as JSON at the state path. Field
// names are stable: status and metrics read them.
type Report struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Packages int       `json:"packages"`
	Files    int       `json:"files"` // checked
	Bytes    int64     `json:"bytes"` // read
	// Skipped counts files not checked: conffiles, path-excluded files.
	Skipped  int       `json:"skipped"`
	Findings []Finding `json:"findings"`
	// Errors are md5sums files that could not be read or parsed.
	Errors []string `json:"errors,omitempty"`
	// Conffiles are the configuration files that differ from what their
	// package installed: for information only (they are the admin's to
	// change), so an unexpected edit can be spotted.
	Conffiles []Finding `json:"conffiles"`
}

// ChangedPackages returns the packages with findings, sorted.
func (r Report) ChangedPackages() []string {
	var out []string
	for _, f := range r.Findings {
		if !slices.Contains(out, f.Package) {
			out = append(out, f.Package)
		}
	}
	slices.Sort(out)
	return out
}

// job is one file to check.
type job struct {
	pkg  string
	path string // where to read it
	sum  [16]byte
	conf bool // a conffile: its finding is information
}

// Scan checks every installed package's files and saves the report.
func (a *Area) Scan(ctx context.Context) (Report, error) {
	r := Report{Started: a.now().UTC()}
	filter, err := readPathFilter(a.root)
	if err != nil {
		return r, err
	}
	div, err := readDiversions(a.root)
	if err != nil {
		return r, fmt.Errorf("reading dpkg's diversions: %w", err)
	}
	lists, err := filepath.Glob(hostrun.Under(a.root, infoDir+"/*.md5sums"))
	if err != nil {
		return r, err
	}
	conffiles, err := readConffiles(a.root)
	if err != nil {
		return r, fmt.Errorf("reading dpkg's status: %w", err)
	}
	slices.Sort(lists)
	jobs := make(chan job, 256)
	var (
		mu       sync.Mutex
		findings []Finding
		confs    []Finding
		files    int
		bytes    int64
		wg       sync.WaitGroup
	)
	for range a.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 128<<10)
			for j := range jobs {
				n, f := a.checkFile(j, buf)
				mu.Lock()
				bytes += n
				switch {
				case j.conf && f != nil:
					confs = append(confs, *f)
				case f != nil:
					findings = append(findings, *f)
				}
				if !j.conf {
					files++
				}
				mu.Unlock()
			}
		}()
	}
	send := func() error {
		defer close(jobs)
		for _, list := range lists {
			pkg := strings.TrimSuffix(filepath.Base(list), ".md5sums")
			data, err := os.ReadFile(list)
			if err == nil {
				var entries []Entry
				if entries, err = ParseMD5Sums(data); err == nil {
					r.Packages++
					conf, cerr := a.conffiles(pkg)
					if cerr != nil {
						r.Errors = append(r.Errors, cerr.Error())
					}
					for _, e := range entries {
						if conf[e.Path] || filter.excluded(e.Path) {
							r.Skipped++
							continue
						}
						select {
						case jobs <- job{pkg: pkg, path: location(div, pkg, e.Path), sum: e.Sum}:
						case <-ctx.Done():
							return ctx.Err()
						}
					}
					continue
				}
			}
			r.Errors = append(r.Errors, fmt.Sprintf("%s: %v", filepath.Base(list), err))
		}
		for _, c := range conffiles {
			if filter.excluded(c.path) {
				continue
			}
			select {
			case jobs <- job{pkg: c.pkg, path: location(div, c.pkg, c.path), sum: c.sum, conf: true}:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}
	err = send()
	wg.Wait()
	if err != nil {
		return r, fmt.Errorf("integrity scan interrupted: %w", err)
	}
	byPackage := func(x, y Finding) int {
		if c := strings.Compare(x.Package, y.Package); c != 0 {
			return c
		}
		return strings.Compare(x.Path, y.Path)
	}
	slices.SortFunc(findings, byPackage)
	slices.SortFunc(confs, byPackage)
	r.Findings, r.Conffiles, r.Files, r.Bytes = findings, confs, files, bytes
	if r.Findings == nil {
		r.Findings = []Finding{}
	}
	if r.Conffiles == nil {
		r.Conffiles = []Finding{}
	}
	r.Finished = a.now().UTC()
	if err := a.save(r); err != nil {
		return r, err
	}
	a.log.Info("integrity scan done", "packages", r.Packages, "files", r.Files, "findings", len(r.Findings),
		"duration", r.Finished.Sub(r.Started).Round(time.Millisecond))
	return r, nil
}

// checkFile hashes one file and returns the bytes read and a finding when
// it does not match.
func (a *Area) checkFile(j job, buf []byte) (int64, *Finding) {
	f, err := os.Open(hostrun.Under(a.root, j.path))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return 0, &Finding{Package: j.pkg, Path: j.path, Kind: Missing}
		}
		return 0, &Finding{Package: j.pkg, Path: j.path, Kind: Unreadable, Detail: err.Error()}
	}
	defer f.Close()
	h := md5.New()
	n, err := io.CopyBuffer(h, f, buf)
	if err != nil {
		return n, &Finding{Package: j.pkg, Path: j.path, Kind: Unreadable, Detail: err.Error()}
	}
	var sum [16]byte
	copy(sum[:], h.Sum(nil))
	if sum != j.sum {
		return n, &Finding{Package: j.pkg, Path: j.path, Kind: Changed}
	}
	return n, nil
}

// conffiles returns the package's conffiles: they are the admin's to
// change, so they are not checked.
func (a *Area) conffiles(pkg string) (map[string]bool, error) {
	lines, err := readLines(a.root, infoDir+"/"+pkg+".conffiles")
	if err != nil {
		return nil, fmt.Errorf("%s.conffiles: %w", pkg, err)
	}
	out := map[string]bool{}
	for _, l := range lines {
		// dpkg ≥ 1.20 may prefix a flag ("remove-on-upgrade /etc/x").
		for _, f := range strings.Fields(l) {
			if strings.HasPrefix(f, "/") {
				out[filepath.Clean(f)] = true
			}
		}
	}
	return out, nil
}

// save writes the report atomically (temp file and rename).
func (a *Area) save(r Report) error {
	path := hostrun.Under(a.root, a.statePath)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("saving the integrity report: %w", err)
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".integrity-*.json")
	if err != nil {
		return fmt.Errorf("saving the integrity report: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("saving the integrity report: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("saving the integrity report: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("saving the integrity report: %w", err)
	}
	return nil
}

// ErrNoScan means no scan has saved a report yet.
var ErrNoScan = errors.New("no integrity scan has run yet")

// LastReport returns the last scan's saved report, or ErrNoScan.
func (a *Area) LastReport() (Report, error) {
	return LoadReport(hostrun.Under(a.root, a.statePath))
}

// LoadReport reads a saved report from path; ErrNoScan when there is none.
// tandem status and /metrics call it.
func LoadReport(path string) (Report, error) {
	var r Report
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return r, ErrNoScan
	}
	if err != nil {
		return r, fmt.Errorf("reading the last integrity report: %w", err)
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("reading the last integrity report %s: %w (the next scan rewrites it)", path, err)
	}
	return r, nil
}

// Audit reads the last scan's report; it never scans.
func (a *Area) Audit(ctx context.Context) []check.Result {
	last := check.Result{
		ID: "integrity.last-scan", Title: "package files were checked within the last two days",
		Wanted: "a scan younger than " + MaxAge.String(),
		Fix:    "run `tandem harden scan`; tandem harden apply installs a daily timer for it",
	}
	pkgs := check.Result{
		ID: "integrity.packages", Title: "installed packages' files match their checksums",
		Wanted: "no changed or missing files",
		Fix:    "check the files named (debsums -c, or reinstall the package: apt-get install --reinstall PKG), then run `tandem harden scan`",
	}
	r, err := a.LastReport()
	switch {
	case errors.Is(err, ErrNoScan):
		last.Status, last.Current = check.Fail, "never"
		pkgs.Status, pkgs.Current = check.Error, ErrNoScan.Error()
	case err != nil:
		last.Status, last.Current = check.Error, err.Error()
		pkgs.Status, pkgs.Current = check.Error, err.Error()
	default:
		age := a.now().Sub(r.Finished)
		last.Status = passIf(age <= MaxAge && age > -time.Hour)
		last.Current = fmt.Sprintf("%s (%s ago; %d files of %d packages in %s)", r.Finished.Format(time.RFC3339),
			age.Round(time.Minute), r.Files, r.Packages, r.Finished.Sub(r.Started).Round(time.Second))
		pkgs.Status, pkgs.Current = passIf(len(r.Findings) == 0), summarize(r)
	}
	timer := check.Result{
		ID: "integrity.timer", Title: "the daily integrity scan is scheduled",
		Wanted: timerName + " enabled", Fix: "tandem harden apply installs and enables it",
	}
	out, err := a.run(ctx, "systemctl", "is-enabled", timerName)
	state := strings.TrimSpace(string(out))
	switch {
	case state == "":
		timer.Status, timer.Current = check.Error, fmt.Sprintf("systemctl is-enabled printed nothing: %v", err)
	default:
		timer.Status, timer.Current = passIf(state == "enabled"), state
	}
	return []check.Result{last, pkgs, timer}
}

// maxListed is how many files a summary names.
const maxListed = 5

// summarize says what the report found, naming the first few files.
func summarize(r Report) string {
	if len(r.Findings) == 0 {
		s := fmt.Sprintf("all %d files of %d packages match", r.Files, r.Packages)
		if len(r.Conffiles) > 0 {
			s += fmt.Sprintf("; %d conffiles edited (expected; listed in %s)", len(r.Conffiles), DefaultStatePath)
		}
		if len(r.Errors) > 0 {
			s += fmt.Sprintf(" (%d md5sums files unreadable: %s)", len(r.Errors), r.Errors[0])
		}
		return s
	}
	var named []string
	for _, f := range r.Findings[:min(len(r.Findings), maxListed)] {
		named = append(named, fmt.Sprintf("%s %s (%s)", f.Path, f.Kind, f.Package))
	}
	s := fmt.Sprintf("%d files of %d packages: %s", len(r.Findings), len(r.ChangedPackages()), strings.Join(named, "; "))
	if len(r.Findings) > maxListed {
		s += fmt.Sprintf("; and %d more (see %s)", len(r.Findings)-maxListed, DefaultStatePath)
	}
	return s
}

func passIf(ok bool) check.Status {
	if ok {
		return check.Pass
	}
	return check.Fail
}

// serviceUnit runs one scan at idle priority: the scan reads every
// package file, and the site must not notice.
func (a *Area) serviceUnit() string {
	return `# Written by ` + "`tandem harden apply`" + `: checks installed packages' files
# against their checksums; the audit reads the saved result.
[Unit]
Description=tandem integrity scan of installed packages' files
After=local-fs.target

[Service]
Type=oneshot
ExecStart=` + a.binary + ` harden scan
Nice=19
CPUSchedulingPolicy=idle
IOSchedulingClass=idle
ProtectSystem=strict
` + a.writable() + `
PrivateTmp=yes
PrivateNetwork=yes
NoNewPrivileges=yes
`
}

// writable is the unit line that lets the scan write its report:
// StateDirectory creates /var/lib/tandem when it is missing.
func (a *Area) writable() string {
	dir := filepath.Dir(a.statePath)
	if rest, ok := strings.CutPrefix(dir, "/var/lib/"); ok && rest != "" {
		return "StateDirectory=" + rest
	}
	return "ReadWritePaths=" + dir
}

const timerUnit = `# Written by ` + "`tandem harden apply`" + `: the daily integrity scan.
[Unit]
Description=daily tandem integrity scan of installed packages' files

[Timer]
OnCalendar=daily
RandomizedDelaySec=1h
Persistent=true

[Install]
WantedBy=timers.target
`

// Plan writes the scan's service and timer and enables the timer. It is
// empty when both units have this content and the timer is enabled.
func (a *Area) Plan(ctx context.Context) (check.Plan, error) {
	plan := check.Plan{Area: a.Name()}
	for _, u := range []struct{ path, content string }{{ServiceUnit, a.serviceUnit()}, {TimerUnit, timerUnit}} {
		old, err := os.ReadFile(hostrun.Under(a.root, u.path))
		if err == nil && string(old) == u.content {
			continue
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return plan, fmt.Errorf("reading %s: %w", u.path, err)
		}
		plan.Files = append(plan.Files, check.File{Path: u.path, Content: []byte(u.content), Mode: 0o644})
	}
	out, _ := a.run(ctx, "systemctl", "is-enabled", timerName)
	enabled := strings.TrimSpace(string(out)) == "enabled"
	if len(plan.Files) == 0 && enabled {
		return plan, nil
	}
	plan.Validate = [][]string{{"systemd-analyze", "verify", ServiceUnit, TimerUnit}}
	// Also run after a revert, when the timer may be gone again: enable
	// it only when its file is there.
	plan.Reload = [][]string{
		{"systemctl", "daemon-reload"},
		{"sh", "-c", "if [ -e " + TimerUnit + " ]; then systemctl enable --now " + timerName + "; fi"},
	}
	return plan, nil
}

// StatusLine is the report in one line for `tandem status`: the findings
// and the scan's age at now.
func (r Report) StatusLine(now time.Time) string {
	age := now.Sub(r.Finished).Round(time.Minute)
	if len(r.Findings) == 0 {
		return fmt.Sprintf("all %d package files match (scanned %s ago)", r.Files, age)
	}
	return fmt.Sprintf("%d package files changed or missing in %d packages (scanned %s ago; tandem harden audit names them)",
		len(r.Findings), len(r.ChangedPackages()), age)
}
