// Package labcluster turns a booted lab into a tandem cluster: it packages
// tandem itself and the example site as .debs, installs them on the nodes,
// writes each node's tandem.toml, and forms the cluster (init on node1, then
// the witness, then the other app nodes) with a linux VIP on the lab bridge.
package labcluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
	"golang.org/x/sync/errgroup"

	"github.com/tandem-ha/tandem/examples"
	"github.com/tandem-ha/tandem/internal/artifact"
	"github.com/tandem-ha/tandem/internal/config"
	"github.com/tandem-ha/tandem/internal/debpkg"
	"github.com/tandem-ha/tandem/internal/lab"
	"github.com/tandem-ha/tandem/internal/labforge"
	"github.com/tandem-ha/tandem/internal/localapi"
)

// Port is the tandem listener port on every node.
const Port = 7946

// SitePort is where the example site listens on every app node.
const SitePort = 8000

// SiteDataDir is the example site's upload directory, replicated with
// [[files]] on every app node.
const SiteDataDir = "/var/lib/pysite"

// VIPURL is the example site through the floating IP.
var VIPURL = fmt.Sprintf("http://%s:%d/", lab.FloatingIP, SitePort)

// HookScript is installed on app nodes and configured for every hook; it
// appends "EPOCH STATE EVENT" lines to HookLog.
const (
	HookScript = "/usr/local/lib/tandem-lab/hook"
	HookLog    = "/var/lib/tandem/hooks.log"
)

const hookScript = `#!/bin/sh
# tandem lab: record every transition (keepalived notify semantics: $1 is
# MASTER, BACKUP or FAULT).
echo "$TANDEM_EPOCH $1 $TANDEM_EVENT" >> ` + HookLog + `
`

// Options configure Provision.
type Options struct {
	Exe      string    // the tandem binary to package and install
	Progress io.Writer // stage lines; may be nil
	Logger   *slog.Logger
	// Config is TOML decoded over every node's tandem.toml (e.g. [failover]
	// tweaks for tests); see NodeConfig.
	Config string
}

// Provision installs tandem and the example site and forms the cluster.
func Provision(ctx context.Context, l *lab.Lab, o Options) error {
	start := time.Now()
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	stage := func(format string, args ...any) {
		fmt.Fprintf(o.Progress, "[%5.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	members, err := l.Members()
	if err != nil {
		return err
	}
	var apps []lab.NodeStatus
	var witness *lab.NodeStatus
	for i := range members {
		switch members[i].Role {
		case lab.RoleApp:
			apps = append(apps, members[i])
		case lab.RoleWitness:
			witness = &members[i]
		}
	}
	if len(apps) == 0 {
		return fmt.Errorf("lab %s has no app nodes", l.Name())
	}
	if witness == nil && len(apps) < 3 {
		return fmt.Errorf("a cluster with a linux VIP needs a witness or at least 3 app nodes; run 'tandem lab up --witness' or '--nodes 3'")
	}

	debDir := filepath.Join(l.Dir(), "debs")
	if err := os.MkdirAll(debDir, 0o755); err != nil {
		return fmt.Errorf("provision: %w", err)
	}
	stage("packaging tandem and the example site")
	tandemDeb, siteDeb, err := buildDebs(ctx, o, debDir)
	if err != nil {
		return err
	}

	_, forge, err := SetupForge(l)
	if err != nil {
		return err
	}
	stage("installing on %d nodes", len(apps)+btoi(witness != nil))
	g, gctx := errgroup.WithContext(ctx)
	install := func(n lab.NodeStatus) {
		g.Go(func() error { return installNode(gctx, l, n, tandemDeb, siteDeb, o.Config, forge) })
	}
	for _, n := range apps {
		install(n)
	}
	if witness != nil {
		install(*witness)
	}
	if err := g.Wait(); err != nil {
		return err
	}

	stage("starting the fake forge at %s", ForgeURL)
	if err := StartForge(ctx, l, o.Exe); err != nil {
		return err
	}

	first := apps[0]
	stage("creating the cluster on %s", first.Name)
	// One single-use token per joining node, each bound to its role.
	out, err := run(ctx, l, first.Name, "tandem", "init", "--no-start", fmt.Sprintf("--app-token-uses=%d", len(apps)-1),
		fmt.Sprintf("--witness-token=%v", witness != nil))
	if err != nil {
		return fmt.Errorf("tandem init on %s: %w", first.Name, err)
	}
	tokens := map[string]string{} // role -> token
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if role, tok, ok := strings.Cut(strings.TrimSpace(line), " "); ok {
			tokens[role] = tok
		}
	}
	seed := fmt.Sprintf("%s:%d", first.Address, Port)
	if err := waitAgent(ctx, l, first.Name, 30*time.Second); err != nil {
		return err
	}
	// The witness first: a linux VIP needs three voters before two app nodes.
	joiners := []lab.NodeStatus{}
	if witness != nil {
		joiners = append(joiners, *witness)
	}
	joiners = append(joiners, apps[1:]...)
	for _, n := range joiners {
		stage("joining %s", n.Name)
		token := tokens[string(n.Role)]
		if token == "" {
			return fmt.Errorf("tandem init on %s printed no %s token: %q", first.Name, n.Role, out)
		}
		// On standard input, as the README advises, never on a command line.
		args := []string{"tandem", "join", "--no-start", "--token-file", "-", seed}
		if n.Role == lab.RoleWitness {
			args = append(args, "--witness")
		}
		_, err := runIn(ctx, l, n.Name, strings.NewReader(token+"\n"), args...)
		if err != nil {
			return fmt.Errorf("tandem join on %s: %w", n.Name, err)
		}
	}
	stage("waiting for every voter and the floating IP")
	if err := WaitFormed(ctx, l, first.Name, len(members)-1, 60*time.Second); err != nil {
		return err
	}
	stage("cluster ready: %s", VIPURL)
	return nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// buildDebs packages tandem itself and the embedded example site.
func buildDebs(ctx context.Context, o Options, out string) (tandemDeb, siteDeb string, err error) {
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	self, err := debpkg.BuildSelf(ctx, debpkg.SelfOptions{
		Binary: o.Exe, FallbackVersion: "0.0.0~lab", Dir: ".", OutDir: out, Compression: "zstd",
	})
	if err != nil {
		return "", "", fmt.Errorf("package tandem: %w", err)
	}
	site, err := BuildSite(ctx, SiteOptions{OutDir: out, Logger: logger})
	if err != nil {
		return "", "", err
	}
	return self.Path, site.Path, nil
}

// SiteOptions vary the build of the example site.
type SiteOptions struct {
	OutDir  string
	Version string // "" = the version in its pyproject.toml
	// Broken makes /healthz answer 500 (a build whose health gate fails).
	Broken bool
	// Package renames the package (a package the cluster does not run).
	Package string
	Logger  *slog.Logger
}

// The lines of the example site that BuildSite patches; a change to the
// example must keep them (the test checks).
const (
	healthzLine  = `return self._json(start_response, 200, {"status": "ok", "version": self.version, "node": self.node})`
	brokenLine   = `return self._json(start_response, 500, {"status": "broken", "version": self.version, "node": self.node})`
	siteNameLine = `name = "pysite"`
)

// BuildSite packages the embedded example site (examples/pysite) into
// o.OutDir, patching a copy of its source (never the example) as asked.
func BuildSite(ctx context.Context, o SiteOptions) (*debpkg.Result, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	src, err := os.MkdirTemp("", "tandem-pysite-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(src)
	if err := os.CopyFS(src, mustSub(examples.Pysite, "pysite")); err != nil {
		return nil, fmt.Errorf("unpack the example site: %w", err)
	}
	if o.Broken {
		if err := patchFile(filepath.Join(src, "src", "pysite", "app.py"), healthzLine, brokenLine); err != nil {
			return nil, err
		}
	}
	if o.Package != "" {
		if err := patchFile(filepath.Join(src, "pyproject.toml"), siteNameLine, fmt.Sprintf("name = %q", o.Package)); err != nil {
			return nil, err
		}
	}
	site, err := debpkg.BuildPython(ctx, debpkg.Options{Dir: src, OutDir: o.OutDir, Version: o.Version, Compression: "zstd", Logger: o.Logger})
	if err != nil {
		return nil, fmt.Errorf("package the example site: %w", err)
	}
	return site, nil
}

// patchFile replaces the one occurrence of old in path with new.
func patchFile(path, old, new string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("patch the example site: %w", err)
	}
	if n := strings.Count(string(b), old); n != 1 {
		return fmt.Errorf("patch the example site: %s has %d copies of %q, want 1 (the example changed: update labcluster.BuildSite)", filepath.Base(path), n, old)
	}
	// The copy is read-only when the embedded tree's modes say so.
	if err := os.Chmod(path, 0o644); err != nil {
		return fmt.Errorf("patch the example site: %w", err)
	}
	return os.WriteFile(path, []byte(strings.Replace(string(b), old, new, 1)), 0o644)
}

func mustSub(f fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(f, dir)
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return sub
}

// NodeConfig returns a lab node's configuration: its name, role and
// listener, and for app nodes the linux VIP on the lab bridge, the example
// site's health check and the hook script on every transition. extra is TOML
// decoded over it (e.g. [failover] tweaks for tests and benchmarks).
func NodeConfig(n lab.NodeStatus, extra string) (config.Config, error) {
	c := config.Config{
		Node:    config.Node{Name: n.Name, Role: n.Role},
		Cluster: config.Cluster{Listen: fmt.Sprintf("%s:%d", n.Address, Port)},
	}
	if n.Role == config.RoleApp {
		c.VIP = config.VIP{Provider: config.ProviderLinux, Address: lab.FloatingIP.String() + "/24",
			Linux: config.LinuxVIP{Interface: "eth0"}}
		c.Health = []config.Check{{Name: "pysite", Type: "http", Target: fmt.Sprintf("http://127.0.0.1:%d/healthz", SitePort),
			JSONPath: "status", JSONWant: "ok"}}
		// Every transition is logged, so tests can check the hooks ran.
		c.Hooks = config.Hooks{Promote: HookScript, Demote: HookScript, Fault: HookScript}
		// The example site's uploads follow the IP (its temporary upload
		// files, ".NAME.tmp", are renamed into place when complete).
		c.Files = []config.FilesPath{{Path: SiteDataDir, Exclude: []string{".*.tmp"}}}
	}
	if extra != "" {
		dec := toml.NewDecoder(strings.NewReader(extra)).DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			return c, fmt.Errorf("the lab's extra configuration: %w", err)
		}
	}
	return c, nil
}

// RenderConfig writes c as tandem.toml. Zero values are left out, so that
// config.Load gives every unset key its default, as for a hand-written file.
func RenderConfig(c config.Config) ([]byte, error) {
	full, err := toml.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("render tandem.toml: %w", err)
	}
	var doc map[string]any
	if err := toml.Unmarshal(full, &doc); err != nil {
		return nil, fmt.Errorf("render tandem.toml: %w", err)
	}
	pruneZero(doc)
	body, err := toml.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("render tandem.toml: %w", err)
	}
	return append([]byte("# Written by tandem lab.\n"), body...), nil
}

// pruneZero removes keys whose value is zero ("", 0, false, "0s") and
// tables left empty.
func pruneZero(m map[string]any) {
	for k, v := range m {
		switch v := v.(type) {
		case map[string]any:
			pruneZero(v)
			if len(v) == 0 {
				delete(m, k)
			}
		case []any:
			kept := v[:0]
			for _, e := range v {
				if t, ok := e.(map[string]any); ok {
					pruneZero(t)
				}
				if !isZero(e) {
					kept = append(kept, e)
				}
			}
			if len(kept) == 0 {
				delete(m, k)
			} else {
				m[k] = kept
			}
		default:
			if isZero(v) {
				delete(m, k)
			}
		}
	}
}

func isZero(v any) bool {
	switch v := v.(type) {
	case string:
		return v == "" || v == "0s"
	case int64:
		return v == 0
	case float64:
		return v == 0
	case bool:
		return !v
	case map[string]any:
		return len(v) == 0
	}
	return false
}

func installNode(ctx context.Context, l *lab.Lab, n lab.NodeStatus, tandemDeb, siteDeb, extra string, forge labforge.Config) error {
	c, err := NodeConfig(n, extra)
	if err != nil {
		return err
	}
	if n.Role == lab.RoleApp {
		if err := writeDeployFiles(ctx, l, n.Name, forge); err != nil {
			return err
		}
		if c.Deploy.Packages == nil { // unless the extra configuration set its own
			c.Deploy = DeployConfig(forge)
			// The extra configuration may still tune it ([deploy] soak).
			if extra != "" {
				if err := toml.NewDecoder(strings.NewReader(extra)).Decode(&c); err != nil {
					return fmt.Errorf("the lab's extra configuration: %w", err)
				}
			}
		}
	}
	data, err := RenderConfig(c)
	if err != nil {
		return err
	}
	if _, err := runIn(ctx, l, n.Name, bytes.NewReader(data),
		"sh", "-c", "mkdir -p /etc/tandem && cat > /etc/tandem/tandem.toml"); err != nil {
		return fmt.Errorf("%s: write tandem.toml: %w", n.Name, err)
	}
	if n.Role == lab.RoleApp {
		if _, err := runIn(ctx, l, n.Name, strings.NewReader(hookScript), "sh", "-c",
			"mkdir -p "+filepath.Dir(HookScript)+" && cat > "+HookScript+" && chmod 755 "+HookScript); err != nil {
			return fmt.Errorf("%s: write the hook script: %w", n.Name, err)
		}
	}
	debs := []string{tandemDeb}
	if n.Role == lab.RoleApp {
		debs = append(debs, siteDeb)
	}
	args := []string{"env", "DEBIAN_FRONTEND=noninteractive", "dpkg", "--force-confold", "-i"}
	for _, d := range debs {
		dst := "/root/" + filepath.Base(d)
		if err := l.CopyIn(ctx, d, n.Name, dst); err != nil {
			return fmt.Errorf("%s: copy %s: %w", n.Name, filepath.Base(d), err)
		}
		args = append(args, dst)
	}
	if _, err := run(ctx, l, n.Name, args...); err != nil {
		return fmt.Errorf("%s: install: %w", n.Name, err)
	}
	if n.Role == lab.RoleApp {
		// The first release goes into the release store too, as a deploy
		// would have put it there, so the first rollback has a target.
		sum, err := artifact.FileSHA256(siteDeb)
		if err != nil {
			return err
		}
		dst := "/var/lib/tandem/releases/sha256/" + sum + ".deb"
		if _, err := run(ctx, l, n.Name, "sh", "-c", "install -d -m 700 /var/lib/tandem/releases/sha256 && install -m 600 /root/"+filepath.Base(siteDeb)+" "+dst); err != nil {
			return fmt.Errorf("%s: store the first release: %w", n.Name, err)
		}
	}
	return nil
}

// Sh runs a shell script in a node of l and returns its output; a non-zero
// exit is an error naming the node and quoting the output.
func Sh(ctx context.Context, l *lab.Lab, node, script string) (string, error) {
	var out, errb bytes.Buffer
	code, err := l.Exec(ctx, node, []string{"sh", "-c", script}, nil, &out, &errb)
	if err != nil {
		return "", fmt.Errorf("%s: %s: %w", node, script, err)
	}
	if code != 0 {
		return out.String(), fmt.Errorf("%s: %s exited %d: %s", node, script, code, strings.TrimSpace(errb.String()+" "+out.String()))
	}
	return out.String(), nil
}

func run(ctx context.Context, l *lab.Lab, node string, argv ...string) (string, error) {
	return runIn(ctx, l, node, nil, argv...)
}

func runIn(ctx context.Context, l *lab.Lab, node string, stdin io.Reader, argv ...string) (string, error) {
	var out, errb bytes.Buffer
	code, err := l.Exec(ctx, node, argv, stdin, &out, &errb)
	if err != nil {
		return "", err
	}
	if code != 0 {
		return "", fmt.Errorf("%s exited %d: %s", strings.Join(argv, " "), code, strings.TrimSpace(errb.String()+" "+out.String()))
	}
	return out.String(), nil
}

// Status runs 'tandem status --json' on a node.
func Status(ctx context.Context, l *lab.Lab, node string) (localapi.Status, error) {
	var st localapi.Status
	out, err := run(ctx, l, node, "tandem", "status", "--json")
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return st, fmt.Errorf("tandem status on %s: %w", node, err)
	}
	return st, nil
}

// waitAgent waits until the node's agent answers on its local API.
func waitAgent(ctx context.Context, l *lab.Lab, node string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		_, err := Status(ctx, l, node)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the agent on %s did not start within %v: %w", node, timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// WaitFormed waits until node sees voters voting members, all reachable,
// an active holder of the floating IP, and a raft leader other than the
// holder.
func WaitFormed(ctx context.Context, l *lab.Lab, node string, voters int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last string
	for {
		st, err := Status(ctx, l, node)
		if err == nil {
			// Settled means the controller (raft leader) is off the holder.
			ok := len(st.Members) == voters && st.Holder.Active && st.Holder.Node != "" &&
				st.Raft.Leader != "" && (st.Raft.Leader != st.Holder.Node || voters < 2)
			for _, m := range st.Members {
				ok = ok && m.Suffrage == "voter" && m.Reachable
			}
			if ok {
				return nil
			}
			last = fmt.Sprintf("%d/%d members, holder %q active=%v", len(st.Members), voters, st.Holder.Node, st.Holder.Active)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster did not form within %v: %s", timeout, last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}
