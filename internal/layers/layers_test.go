package layers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/tandem-ha/tandem/internal/testenv"
)

const module = "github.com/tandem-ha/tandem/"

// Layers, lowest first. Each package of the module belongs to exactly one.
const (
	leaf       = "leaf"       // small helpers that import nothing of ours but other helpers
	state      = "state"      // the pure replicated state: the standard library only
	controller = "controller" // decide and act on committed state: failover, health, hooks, ...
	provider   = "provider"   // move an IP or drain connections: internal/vip/...
	cluster    = "cluster"    // raft, mTLS, joins, the CA
	cfg        = "config"     // the tandem.toml schema
	api        = "api"        // the CLI<->agent local API
	ops        = "ops"        // cluster operations and status over the local API
	agent      = "agent"      // the composition root: wires everything, decides nothing
	tooling    = "tooling"    // lab, packaging and CI tooling the CLI drives, never the agent
	cli        = "cli"        // subcommands, flags, exit codes
	binary     = "main"       // cmd/tandem
	harness    = "harness"    // benchmarks and the end-to-end suite
)

// layerOf assigns each package of the module (path without the module
// prefix) to a layer. Keep it exhaustive: an unknown package fails the test.
var layerOf = map[string]string{
	"internal/shellwords":            leaf,
	"internal/prereq":                leaf,
	"internal/pyproject":             leaf,
	"internal/testenv":               leaf,
	"internal/nft":                   leaf,
	"internal/layers":                leaf,
	"internal/vip/internal/retry":    leaf,
	"internal/vip/internal/fakeapi":  leaf,
	"internal/vip/internal/netnsrun": leaf,
	"internal/vip/internal/samehost": leaf,
	"internal/labprobe":              leaf,
	"internal/debversion":            leaf,
	"internal/webhook":               leaf,
	"internal/artifact":              leaf,
	"internal/forge":                 leaf, // asks a forge's API about a delivery and downloads it; imports only webhook and artifact
	// tandem harden: the check contract, the areas (each reads the host
	// through a command seam and returns checks and a plan, applying
	// nothing itself) and the audit/apply transaction; the CLI (audit,
	// apply) and the agent (members set, metrics) compose them.
	"internal/harden/check":            leaf,
	"internal/harden":                  leaf,
	"internal/harden/firewall":         leaf,
	"internal/harden/internal/hostrun": leaf,
	"internal/harden/sshd":             leaf,
	"internal/harden/updates":          leaf,
	"internal/harden/integrity":        leaf,
	"packaging":                        leaf,
	"examples":                         leaf,
	"internal/confine":                 leaf, // Landlock confinement of the rsync that serves files to peers
	"internal/guard":                   leaf, // log sources, filters and jails deciding bans; imports nothing of ours, so config compiles its filters

	"internal/cluster/state": state,

	"internal/liveness":   controller,
	"internal/failover":   controller,
	"internal/health":     controller,
	"internal/hooks":      controller,
	"internal/deploy":     controller,
	"internal/guard/bans": controller, // turns decisions into cluster bans and keeps the kernel's ban sets in line
	"internal/files":      controller, // replication of declared directories, following the holder and its epoch

	"internal/vip":                     provider,
	"internal/vip/linux":               provider,
	"internal/vip/digitalocean":        provider,
	"internal/vip/hetzner":             provider,
	"internal/vip/aws":                 provider,
	"internal/vip/exec":                provider,
	"internal/vip/drain":               provider,
	"internal/vip/viptest":             provider,
	"internal/vip/digitalocean/dofake": provider,
	"internal/vip/hetzner/hcloudfake":  provider,
	"internal/vip/aws/ec2fake":         provider,
	"internal/files/rsync":             provider, // Debian's rsync carried over the cluster's mTLS streams
	"internal/files/inotify":           provider, // file events through fsnotify
	"internal/guard/nftban":            provider, // guard's ban sets and drop chain in nftables
	"internal/install":                 provider, // the OS side of a release install: apt, dpkg-query, systemctl

	"internal/cluster": cluster,
	"internal/pki":     cluster,

	"internal/config": cfg,

	"internal/localapi": api,

	"internal/ops": ops,

	"internal/agent": agent,

	"internal/debpkg":     tooling,
	"internal/ciconfig":   tooling,
	"internal/lab":        tooling,
	"internal/labcluster": tooling,
	"internal/labforge":   tooling,

	"internal/cli": cli,
	"cmd/tandem":   binary,

	"bench/chaos":    harness,
	"bench/deploy":   harness,
	"bench/failover": harness,
	"bench/package":  harness,
	"bench/files":    harness,
	"bench/guard":    harness,
	"test/e2e":       harness,
}

// mayImport lists, for each layer, the layers its packages may import
// directly (besides their own, where listed).
var mayImport = map[string][]string{
	leaf:       {leaf},
	state:      {},
	controller: {leaf, state, controller}, // failover reads health's check status and runs on liveness
	provider:   {leaf, provider},
	cluster:    {leaf, state, cluster},
	cfg:        {leaf},
	api:        {leaf, state},
	ops:        {leaf, state, controller, cluster, api},
	agent:      {leaf, state, controller, provider, cluster, cfg, api, ops},
	tooling:    {leaf, tooling, cfg, api},
	cli:        {leaf, state, cfg, api, agent, tooling},
	binary:     {cli},
	harness:    {leaf, tooling, api},
}

// concreteProviders are the packages that talk to a cloud or the kernel to
// move the IP; only the composition root builds them.
var concreteProviders = []string{
	"internal/vip/linux", "internal/vip/digitalocean", "internal/vip/hetzner",
	"internal/vip/aws", "internal/vip/exec",
}

// pkg is the part of 'go list -json' the rules read.
type pkg struct {
	ImportPath string
	Standard   bool
	Imports    []string
	Deps       []string
	Error      *struct{ Err string }
}

// listModule runs 'go list -deps -json ./...' and returns every package it
// names (the module's and their dependencies), by import path.
func listModule(t *testing.T) map[string]*pkg {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		testenv.Missing(t, "needs the go command on PATH to list packages")
	}
	var out, errb bytes.Buffer
	cmd := exec.Command(goBin, "list", "-deps", "-json", module+"...")
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("go list: %v\n%s", err, errb.String())
	}
	all := map[string]*pkg{}
	dec := json.NewDecoder(&out)
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		if p.Error != nil {
			t.Fatalf("go list: %s: %s", p.ImportPath, p.Error.Err)
		}
		all[p.ImportPath] = &p
	}
	return all
}

// ours returns the module's packages, without the module prefix, sorted.
func ours(all map[string]*pkg) []string {
	var names []string
	for path := range all {
		if rel, ok := strings.CutPrefix(path, module); ok {
			names = append(names, rel)
		}
	}
	sort.Strings(names)
	return names
}

func internalImports(p *pkg, transitive bool) []string {
	list := p.Imports
	if transitive {
		list = p.Deps
	}
	var out []string
	for _, d := range list {
		if rel, ok := strings.CutPrefix(d, module); ok {
			out = append(out, rel)
		}
	}
	return out
}

// violations checks every rule and returns one line per broken one.
func violations(all map[string]*pkg) []string {
	var bad []string
	add := func(format string, args ...any) { bad = append(bad, fmt.Sprintf(format, args...)) }
	for _, name := range ours(all) {
		p := all[module+name]
		layer, ok := layerOf[name]
		if !ok {
			add("%s has no layer: add it to layerOf in internal/layers/layers_test.go (see DESIGN.md's layout)", name)
			continue
		}
		// The allow-list: direct imports by layer.
		for _, imp := range internalImports(p, false) {
			il, ok := layerOf[imp]
			if ok && !slices.Contains(mayImport[layer], il) {
				add("%s (%s) imports %s (%s): a %s package may import only %v", name, layer, imp, il, layer, mayImport[layer])
			}
		}
		deps := internalImports(p, true)
		// Nothing below the CLI reaches the agent or the CLI.
		for _, top := range []string{"internal/agent", "internal/cli"} {
			if slices.Contains(deps, top) && layer != cli && layer != binary {
				add("%s (%s) depends on %s: only the CLI may (the agent is the composition root, the CLI its only caller)", name, layer, top)
			}
		}
		// Only the agent builds concrete providers.
		for _, cp := range concreteProviders {
			if slices.Contains(p.Imports, module+cp) && name != "internal/agent" && layer != provider {
				add("%s imports the concrete provider %s: only internal/agent may build providers", name, cp)
			}
		}
		// Controllers never reach raft, config, the agent or a provider.
		if layer == controller {
			for _, d := range p.Deps {
				rel, _ := strings.CutPrefix(d, module)
				if strings.HasPrefix(d, "github.com/hashicorp/raft") || rel == "internal/config" || rel == "internal/agent" ||
					rel == "internal/cluster" || layerOf[rel] == provider && strings.HasPrefix(d, module) {
					add("controller %s depends on %s: controllers see only committed state and interfaces they declare", name, d)
				}
			}
		}
		// Providers never reach a controller.
		if layer == provider {
			for _, d := range deps {
				if layerOf[d] == controller {
					add("provider %s depends on controller %s: providers never import controllers", name, d)
				}
			}
		}
		// The replicated state is pure: the standard library only.
		if layer == state {
			for _, d := range p.Deps {
				if dp := all[d]; dp == nil || !dp.Standard {
					add("%s depends on %s: the replicated state may use the standard library only", name, d)
				}
			}
		}
	}
	return bad
}

// TestImportRules fails, naming each offending import, when a package
// crosses DESIGN.md's layers.
func TestImportRules(t *testing.T) {
	all := listModule(t)
	if len(ours(all)) < 20 {
		t.Fatalf("go list found only %d packages of the module; the listing is broken", len(ours(all)))
	}
	for _, v := range violations(all) {
		t.Error(v)
	}
	// Every layer assigned above still names a package, so the table does
	// not keep rules for code that is gone.
	for name := range layerOf {
		if _, ok := all[module+name]; !ok {
			t.Errorf("layerOf names %s, which no longer exists: remove it", name)
		}
	}
}

// TestRulesCatchViolations feeds made-up module graphs to the rules, so
// each rule is shown to fail when broken.
func TestRulesCatchViolations(t *testing.T) {
	std := &pkg{ImportPath: "fmt", Standard: true}
	mk := func(name string, imports ...string) *pkg {
		p := &pkg{ImportPath: module + name}
		for _, i := range imports {
			if !strings.Contains(strings.SplitN(i, "/", 2)[0], ".") && !strings.HasPrefix(i, "internal/") {
				p.Imports, p.Deps = append(p.Imports, i), append(p.Deps, i)
				continue
			}
			full := i
			if strings.HasPrefix(i, "internal/") {
				full = module + i
			}
			p.Imports, p.Deps = append(p.Imports, full), append(p.Deps, full)
		}
		return p
	}
	tests := []struct {
		name string
		pkgs []*pkg
		want string
	}{
		{"lower layer imports the agent", []*pkg{mk("internal/labprobe", "internal/agent"), mk("internal/agent")}, "depends on internal/agent"},
		{"tooling imports a provider", []*pkg{mk("internal/labcluster", "internal/vip/linux"), mk("internal/vip/linux")}, "only internal/agent may build providers"},
		{"controller imports config", []*pkg{mk("internal/health", "internal/config"), mk("internal/config")}, "controllers see only committed state"},
		{"controller imports raft", []*pkg{mk("internal/failover", "github.com/hashicorp/raft")}, "controllers see only committed state"},
		{"provider imports a controller", []*pkg{mk("internal/vip/drain", "internal/failover"), mk("internal/failover")}, "providers never import controllers"},
		{"state imports a module", []*pkg{mk("internal/cluster/state", "github.com/x/y")}, "standard library only"},
		{"unknown package", []*pkg{mk("internal/newthing")}, "has no layer"},
		{"clean", []*pkg{mk("internal/cluster/state", "fmt"), mk("internal/failover", "internal/cluster/state")}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			all := map[string]*pkg{"fmt": std}
			for _, p := range tt.pkgs {
				all[p.ImportPath] = p
			}
			got := strings.Join(violations(all), "\n")
			if tt.want == "" && got != "" || !strings.Contains(got, tt.want) {
				t.Errorf("violations = %q, want one containing %q", got, tt.want)
			}
		})
	}
}
