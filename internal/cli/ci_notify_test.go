package cli

import (
	"bufio"
	"encoding/base64"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tandem-ha/tandem/internal/testenv"
	"github.com/tandem-ha/tandem/internal/webhook"
)

// notifyScript returns the shell the generated pipeline runs to announce a
// build, and the environment the forge would give it.
func notifyScript(t *testing.T, forge string, doc map[string]any) (string, []string) {
	t.Helper()
	if forge == "gitlab" {
		job := doc["notify"].(map[string]any)
		var lines []string
		for _, l := range job["script"].([]any) {
			lines = append(lines, l.(string))
		}
		return strings.Join(lines, "\n"), []string{"PACKAGE_JOB_ID=380", "CI_PROJECT_URL=https://gitlab.example/site/mysite",
			"TANDEM_REF=main", "TANDEM_COMMIT=" + strings.Repeat("ab", 20), "TANDEM_PROJECT=site/mysite"}
	}
	steps := doc["jobs"].(map[string]any)["notify"].(map[string]any)["steps"].([]any)
	run := steps[len(steps)-1].(map[string]any)["run"].(string)
	return run, []string{"TANDEM_DEB_BASE_URL=https://ci.example/builds/77/", "TANDEM_REF=main", "TANDEM_REF_TYPE=branch",
		"TANDEM_COMMIT=" + strings.Repeat("ab", 20), "TANDEM_PROJECT=site/mysite"}
}

// TestCINotifyIsVerified runs the notify job of every pipeline 'tandem ci
// init' writes, with a real .deb beside it and a fake curl, and checks
// what it would POST with tandem's own intake: the Standard Webhooks
// signature verifies against the generic source's secret, and the body
// names the .deb's package, version, URL and SHA-256 (and its .sig).
func TestCINotifyIsVerified(t *testing.T) {
	for _, c := range []struct{ cmd, pkg string }{{"bash", "bash"}, {"openssl", "openssl"}, {"dpkg-deb", "dpkg"}, {"sha256sum", "coreutils"}} {
		testenv.NeedCommand(t, c.cmd, c.pkg)
	}
	key := []byte("0123456789abcdef0123456789abcdef")
	secret := "whsec_" + base64.StdEncoding.EncodeToString(key)
	secrets, err := webhook.ParseSecrets([]byte(secret), "test")
	if err != nil {
		t.Fatal(err)
	}
	intake := webhook.Intake{Source: webhook.Generic, Secrets: secrets, Rules: webhook.Rules{Branches: []string{"main"}}}

	// A .deb as 'tandem package' names it, with its .sig.
	work := t.TempDir()
	root := filepath.Join(work, "root")
	if err := os.MkdirAll(filepath.Join(root, "DEBIAN"), 0o755); err != nil {
		t.Fatal(err)
	}
	control := "Package: mysite\nVersion: 1.4.0-1\nArchitecture: all\nMaintainer: dev <dev@example.org>\nDescription: test\n"
	if err := os.WriteFile(filepath.Join(root, "DEBIAN", "control"), []byte(control), 0o644); err != nil {
		t.Fatal(err)
	}
	dist := filepath.Join(work, "dist")
	if err := os.Mkdir(dist, 0o755); err != nil {
		t.Fatal(err)
	}
	deb := filepath.Join(dist, "mysite_1.4.0-1_all.deb")
	if out, err := exec.Command("dpkg-deb", "--root-owner-group", "--build", root, deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb: %v\n%s", err, out)
	}
	if err := os.WriteFile(deb+".sig", []byte("c2ln\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// curl writes its arguments one per line.
	bin := filepath.Join(work, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	args := filepath.Join(work, "curl.args")
	if err := os.WriteFile(filepath.Join(bin, "curl"), []byte("#!/bin/bash\nprintf '%s\\n' \"$@\" > \""+args+"\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}

	project := t.TempDir()
	if err := os.WriteFile(filepath.Join(project, "pyproject.toml"), []byte("[project]\nname = \"mysite\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ forge, path string }{
		{"gitlab", ".gitlab-ci.yml"}, {"github", ".github/workflows/tandem.yml"},
		{"gitea", ".gitea/workflows/tandem.yml"}, {"forgejo", ".forgejo/workflows/tandem.yml"},
	} {
		t.Run(tc.forge, func(t *testing.T) {
			var out, errb strings.Builder
			if code := Main([]string{"ci", "init", "--force", tc.forge, project}, nil, &out, &errb); code != 0 {
				t.Fatalf("ci init: exit %d: %s", code, errb.String())
			}
			data, err := os.ReadFile(filepath.Join(project, tc.path))
			if err != nil {
				t.Fatal(err)
			}
			// The package job signs with the key when there is one, and
			// keeps the .deb, its checksum and its signature.
			for _, want := range []string{"TANDEM_SIGNING_KEY", "tandem release sign dist/*.deb", "dist/*.deb.sha256", "dist/*.deb.sig"} {
				if !strings.Contains(string(data), want) {
					t.Errorf("%s lacks %q", tc.path, want)
				}
			}
			var doc map[string]any
			if err := yaml.Unmarshal(data, &doc); err != nil {
				t.Fatal(err)
			}
			script, env := notifyScript(t, tc.forge, doc)
			os.Remove(args)
			cmd := exec.Command("bash", "-e", "-c", script)
			cmd.Dir = work
			cmd.Env = append([]string{"PATH=" + bin + ":/usr/bin:/bin", "TANDEM_WEBHOOK_URL=https://203.0.113.10:8443/webhook/ci",
				"TANDEM_WEBHOOK_SECRET=" + secret}, env...)
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("notify script: %v\n%s", err, b)
			}
			sent, err := os.ReadFile(args)
			if err != nil {
				t.Fatalf("the notify script did not call curl: %v", err)
			}
			h, body, url := http.Header{}, "", ""
			sc := bufio.NewScanner(strings.NewReader(string(sent)))
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				switch sc.Text() {
				case "-H":
					sc.Scan()
					k, v, _ := strings.Cut(sc.Text(), ":")
					h.Add(k, strings.TrimSpace(v))
				case "--data-binary":
					sc.Scan()
					body = sc.Text()
				default:
					url = sc.Text()
				}
			}
			if url != "https://203.0.113.10:8443/webhook/ci" {
				t.Errorf("posted to %q", url)
			}
			d, err := intake.Receive(h, []byte(body), time.Now())
			if err != nil {
				t.Fatalf("tandem refuses what the pipeline sends: %v\nheaders %v\nbody %s", err, h, body)
			}
			r := d.Release
			sum, err := exec.Command("sha256sum", deb).Output()
			if err != nil {
				t.Fatal(err)
			}
			if r.Package != "mysite" || r.Version != "1.4.0-1" || r.SHA256 != strings.Fields(string(sum))[0] ||
				!strings.HasSuffix(r.URL, "/mysite_1.4.0-1_all.deb") || r.SignatureURL != r.URL+".sig" || d.Ref != "main" ||
				d.RefKind != webhook.RefBranch || d.Project != "site/mysite" {
				t.Errorf("announced %+v %+v", d, *r)
			}
		})
	}
}
