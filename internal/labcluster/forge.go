package labcluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tandem-ha/tandem/internal/artifact"
	"github.com/tandem-ha/tandem/internal/config"
	"github.com/tandem-ha/tandem/internal/lab"
	"github.com/tandem-ha/tandem/internal/labforge"
)

// The lab's fake forge listens in the client namespace (which plays the
// internet): the API on ForgePort, artifact blobs on ForgeBlobPort, a
// second "host" as GitHub's storage is.
const (
	ForgePort     = 8080
	ForgeBlobPort = 8081
	// WebhookPort is where every app node's [deploy] listener answers.
	WebhookPort = 8443
)

// ForgeURL is the forge's base URL; GitLab's API is ForgeURL+"/api/v4",
// GitHub's ForgeURL+"/gh".
var ForgeURL = fmt.Sprintf("http://%s:%d", lab.ClientAddr, ForgePort)

// WebhookURL is the cluster's webhook endpoint for source, through the
// floating IP.
func WebhookURL(source string) string {
	return fmt.Sprintf("http://%s:%d/webhook/%s", lab.FloatingIP, WebhookPort, source)
}

// ForgeDir is where the lab's forge keeps its state.
func ForgeDir(l *lab.Lab) string { return filepath.Join(l.Dir(), "forge") }

// SetupForge sets up the lab's forge directory (once; later calls return
// the existing configuration).
func SetupForge(l *lab.Lab) (*labforge.Forge, labforge.Config, error) {
	c, err := labforge.NewConfig(ForgeURL, fmt.Sprintf("http://%s:%d", lab.ClientAddr, ForgeBlobPort))
	if err != nil {
		return nil, c, err
	}
	return labforge.Init(ForgeDir(l), c)
}

// StartForge starts the forge server (the hidden `tandem lab forge-serve`
// of exe) in the lab's client namespace, unless it already answers, and
// waits until it listens. `tandem lab down` ends it with every other
// process in the lab's namespaces.
func StartForge(ctx context.Context, l *lab.Lab, exe string) error {
	dir := ForgeDir(l)
	if _, _, err := SetupForge(l); err != nil {
		return err
	}
	if forgeUp(ctx, l) {
		return nil
	}
	logPath := filepath.Join(dir, "forge.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("start the forge: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command("nsenter", "--net="+l.NetnsPath(lab.ClientName), "--", exe, "lab", "forge-serve",
		"--dir", dir,
		"--listen", fmt.Sprintf("%s:%d", lab.ClientAddr, ForgePort),
		"--listen", fmt.Sprintf("%s:%d", lab.ClientAddr, ForgeBlobPort))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the forge: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(10 * time.Second)
	for {
		b, _ := os.ReadFile(logPath)
		if strings.Contains(string(b), labforge.Ready) {
			return nil
		}
		select {
		case err := <-exited:
			return fmt.Errorf("the forge exited at start (%v): %s", err, strings.TrimSpace(string(b)))
		case <-deadline:
			_ = cmd.Process.Kill()
			return fmt.Errorf("the forge did not start within 10s (is %s a tandem binary?): %s", exe, strings.TrimSpace(string(b)))
		case <-ctx.Done():
			_ = cmd.Process.Kill()
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// forgeUp reports whether the forge answers in the client namespace.
func forgeUp(ctx context.Context, l *lab.Lab) bool {
	code, err := l.Exec(ctx, lab.ClientName, []string{"bash", "-c",
		fmt.Sprintf("exec 3<>/dev/tcp/%s/%d", lab.ClientAddr, ForgePort)}, nil, nil, nil)
	return err == nil && code == 0
}

// SendHook sends a webhook the forge built to url from the client
// namespace (through the hidden `tandem lab forge-send` of exe), as the
// forge on the internet would.
func SendHook(ctx context.Context, l *lab.Lab, exe, url string, h labforge.Hook) (labforge.Response, error) {
	var out, errb bytes.Buffer
	code, err := l.Exec(ctx, lab.ClientName, []string{exe, "lab", "forge-send", "--dir", ForgeDir(l), "--id", h.ID, "--url", url},
		nil, &out, &errb)
	if err != nil {
		return labforge.Response{}, fmt.Errorf("send the webhook: %w", err)
	}
	if code != 0 {
		return labforge.Response{}, fmt.Errorf("send the webhook: %s", strings.TrimPrefix(strings.TrimSpace(errb.String()), "tandem: "))
	}
	var r labforge.Response
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		return r, fmt.Errorf("send the webhook: parse the answer %q: %w", out.String(), err)
	}
	return r, nil
}

// PushOptions describe one `tandem lab push`.
type PushOptions struct {
	Exe     string // the tandem binary (its hidden forge-send command runs in the client)
	Version string // the site's version, e.g. 0.2.0
	// Broken builds a site whose /healthz answers 500.
	Broken bool
	// Package renames the package (a package the cluster does not run).
	Package string
	Source  string // labforge.SourceGitLab (default) or SourceGitHub
	Ref     string // branch or tag; "main" by default
	Tag     bool
	// Unsigned publishes no .sig; BadSignature signs with a key the
	// cluster does not pin; BadChecksum publishes a wrong .sha256.
	Unsigned, BadSignature, BadChecksum bool
	// Status is the build's outcome ("" = success).
	Status string
	// NoWebhook publishes only (the poll fallback must find it).
	NoWebhook bool
	Hook      labforge.HookOptions
	// URL receives the webhook; WebhookURL(Source) when empty.
	URL    string
	Logger *slog.Logger
}

// PushResult is what a push did; its JSON form is `lab push --json`.
type PushResult struct {
	labforge.Published
	Package  string             `json:"package,omitempty"`
	Version  string             `json:"version,omitempty"`
	SHA256   string             `json:"sha256,omitempty"`
	Deb      string             `json:"deb,omitempty"`
	Delivery string             `json:"delivery,omitempty"` // the webhook's delivery ID
	URL      string             `json:"url,omitempty"`
	Webhook  *labforge.Response `json:"webhook,omitempty"` // the cluster's answer
}

// Push builds the example site at o.Version, publishes it to the lab's
// forge as a new finished pipeline or run, and (unless NoWebhook) sends the
// forge's webhook to the cluster.
func Push(ctx context.Context, l *lab.Lab, o PushOptions) (PushResult, error) {
	if o.Source == "" {
		o.Source = labforge.SourceGitLab
	}
	if o.URL == "" {
		o.URL = WebhookURL(o.Source)
	}
	f, c, err := SetupForge(l)
	if err != nil {
		return PushResult{}, err
	}
	out := filepath.Join(l.Dir(), "push", fmt.Sprintf("%d", time.Now().UnixNano()))
	if err := os.MkdirAll(out, 0o755); err != nil {
		return PushResult{}, fmt.Errorf("push: %w", err)
	}
	site, err := BuildSite(ctx, SiteOptions{Version: o.Version, Broken: o.Broken, Package: o.Package, OutDir: out, Logger: o.Logger})
	if err != nil {
		return PushResult{}, err
	}
	do := labforge.DebOptions{SigningKey: c.SigningKey}
	switch {
	case o.Unsigned:
		do.SigningKey = ""
	case o.BadSignature:
		if _, do.SigningKey, err = artifact.GenerateKey(); err != nil {
			return PushResult{}, err
		}
	}
	if o.BadChecksum {
		do.Checksum = strings.Repeat("0", 64)
	}
	files, digest, err := labforge.DebFiles(site.Path, do)
	if err != nil {
		return PushResult{}, err
	}
	pub, err := f.Publish(labforge.Build{Source: o.Source, Ref: o.Ref, Tag: o.Tag, Status: o.Status, Files: files})
	if err != nil {
		return PushResult{}, err
	}
	res := PushResult{Published: pub, Package: site.Package, Version: site.Version, SHA256: digest, Deb: site.Path}
	if o.NoWebhook {
		return res, nil
	}
	h, err := f.MakeHook(o.Source, pub.ID, o.Hook)
	if err != nil {
		return res, err
	}
	res.Delivery, res.URL = h.ID, o.URL
	resp, err := SendHook(ctx, l, o.Exe, o.URL, h)
	if err != nil {
		return res, err
	}
	res.Webhook = &resp
	return res, nil
}

// Replay sends the forge's last webhook (or the one with delivery ID id)
// again, as a forge's retry or "Resend request" does.
func Replay(ctx context.Context, l *lab.Lab, exe, url, id string) (PushResult, error) {
	f, err := labforge.Open(ForgeDir(l))
	if err != nil {
		return PushResult{}, err
	}
	h, err := f.LastHook(id)
	if err != nil {
		return PushResult{}, err
	}
	if url == "" {
		url = WebhookURL(h.Source)
	}
	res := PushResult{Published: labforge.Published{Source: h.Source, ID: h.Build}, Delivery: h.ID, URL: url}
	resp, err := SendHook(ctx, l, exe, url, h)
	if err != nil {
		return res, err
	}
	res.Webhook = &resp
	return res, nil
}

// Files the lab writes into every app node for delivery.
const (
	GitLabSecretFile = "/etc/tandem/gitlab-webhook.secret"
	GitHubSecretFile = "/etc/tandem/github-webhook.secret"
	ForgeTokenFile   = "/etc/tandem/forge-api.token"
)

// DeployConfig is an app node's [deploy] section in the lab: the example
// site, delivered from both of the forge's sources (GitLab and GitHub),
// a plain-HTTP webhook listener on WebhookPort (lab only: in production
// it is TLS or behind a proxy), a 2 s soak, a 20 s gate timeout, a 30 s
// poll and the lab's
// signing key pinned, so that every push is signed and a wrong signature
// is refused.
func DeployConfig(fc labforge.Config) config.Deploy {
	src := func(name, api, secret string) config.Source {
		return config.Source{Name: name, Type: name, SecretFile: secret, APIURL: api, APITokenFile: ForgeTokenFile,
			Project: labforge.DefaultProject, Branches: []string{"main"}, Tags: []string{"v*"}, Job: labforge.JobName}
	}
	return config.Deploy{
		Packages:     []string{"pysite"},
		Listen:       fmt.Sprintf(":%d", WebhookPort),
		InsecureHTTP: true,
		Soak:         config.Duration(2 * time.Second),
		// A broken build (lab push --broken) never passes its gate: it
		// rolls back after this, not the default 2 minutes.
		GateTimeout:  config.Duration(20 * time.Second),
		PollInterval: config.Duration(30 * time.Second),
		SigningKeys:  []string{fc.SigningPublic},
		Sources: []config.Source{
			src(labforge.SourceGitLab, ForgeURL+"/api/v4", GitLabSecretFile),
			src(labforge.SourceGitHub, ForgeURL+"/gh", GitHubSecretFile),
		},
	}
}

// writeDeployFiles writes the webhook secrets and the forge's API token
// into an app node, readable by root only.
func writeDeployFiles(ctx context.Context, l *lab.Lab, node string, fc labforge.Config) error {
	for path, content := range map[string]string{
		GitLabSecretFile: fc.GitLabSecret, GitHubSecretFile: fc.GitHubSecret, ForgeTokenFile: fc.Token,
	} {
		if _, err := runIn(ctx, l, node, strings.NewReader(content+"\n"), "sh", "-c",
			"mkdir -p /etc/tandem && umask 077 && cat > "+path); err != nil {
			return fmt.Errorf("%s: write %s: %w", node, path, err)
		}
	}
	return nil
}

// DefaultSoakConfig is extra configuration that gives the lab tandem's
// default deploy soak instead of its own shorter one (benchmarks state
// their goals for the default).
func DefaultSoakConfig() string {
	return fmt.Sprintf("[deploy]\nsoak = %q\n", config.Duration(config.DefaultSoak).D().String())
}
