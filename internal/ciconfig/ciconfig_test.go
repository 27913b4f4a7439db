package ciconfig

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
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

func TestDataFor(t *testing.T) {
	tests := []struct {
		name      string
		pyproject string
		src       bool
		forge     string
		wantTest  string
		wantApt   string
		wantImage string
	}{
		{"unittest", "[project]\nname = \"a\"\n", false, "gitlab", "python3 -m unittest discover -s tests -v", "python3-wheel", "debian:bookworm"},
		{"src layout", "[project]\nname = \"a\"\n", true, "github", "PYTHONPATH=src python3 -m unittest", "python3-wheel", "debian:bookworm"},
		{"pytest", "[project]\nname = \"a\"\n[tool.pytest.ini_options]\n", false, "gitea", "python3 -m pytest", "python3-pytest", "node:20-bookworm"},
		{"debian gunicorn", "[project]\nname = \"a\"\ndependencies = [\"gunicorn\"]\n[tool.tandem]\nsystem-site-packages = true\n", false, "forgejo", "unittest", "python3-gunicorn", "node:20-bookworm"},
		{"system mode, flit", "[build-system]\nbuild-backend = \"flit_core.buildapi\"\n[project]\nname = \"a\"\ndependencies = [\"Flask\"]\n[tool.tandem]\nmode = \"system\"\n", false, "gitlab", "unittest", " dh-python python3-flask flit", "debian:bookworm"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "pyproject.toml"), []byte(tt.pyproject), 0o644); err != nil {
				t.Fatal(err)
			}
			if tt.src {
				if err := os.Mkdir(filepath.Join(dir, "src"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			d := DataFor(tt.forge, dir)
			if !strings.Contains(d.Test, tt.wantTest) || !strings.Contains(d.Apt, tt.wantApt) || d.Image != tt.wantImage || d.Name != "a" {
				t.Errorf("DataFor = %+v; want test %q, apt with %q, image %q, name a", d, tt.wantTest, tt.wantApt, tt.wantImage)
			}
		})
	}
}

func TestRender(t *testing.T) {
	dir := t.TempDir()
	for _, forge := range []string{"gitlab", "GitHub", "gitea", "forgejo"} {
		out, err := Render(forge, dir)
		if err != nil {
			t.Fatalf("Render(%s): %v", forge, err)
		}
		if want := `written by "tandem ci init ` + strings.ToLower(forge) + `"`; !strings.Contains(string(out), want) {
			t.Errorf("Render(%s) lacks %q", forge, want)
		}
		if strings.Contains(string(out), "<no value>") {
			t.Errorf("Render(%s) left a template field empty:\n%s", forge, out)
		}
	}
	if _, err := Render("jenkins", dir); err == nil || !strings.Contains(err.Error(), "gitlab, github, gitea or forgejo") {
		t.Errorf("Render(jenkins) error = %v", err)
	}
}

// TestNotifyScriptVerifies runs the notify job's script, as each rendered
// pipeline carries it, against a receiver that checks the delivery the way
// the cluster's generic source does: its Standard Webhooks signature, made
// with openssl, must verify, and its body must describe the .deb.
func TestNotifyScriptVerifies(t *testing.T) {
	for _, c := range []struct{ cmd, pkg string }{{"dpkg-deb", "dpkg"}, {"openssl", "openssl"}, {"curl", "curl"}, {"sha256sum", "coreutils"}} {
		testenv.NeedCommand(t, c.cmd, c.pkg)
	}
	// A real, tiny .deb: the script reads its control fields.
	work := t.TempDir()
	pkgDir := filepath.Join(work, "pkg")
	if err := os.MkdirAll(filepath.Join(pkgDir, "DEBIAN"), 0o755); err != nil {
		t.Fatal(err)
	}
	control := "Package: mysite\nVersion: 1.2.3-1\nArchitecture: all\nMaintainer: Dev <dev@mail.example>\nDescription: test\n"
	if err := os.WriteFile(filepath.Join(pkgDir, "DEBIAN", "control"), []byte(control), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(work, "dist"), 0o755); err != nil {
		t.Fatal(err)
	}
	deb := filepath.Join(work, "dist", "mysite_1.2.3-1_all.deb")
	if out, err := exec.Command("dpkg-deb", "--root-owner-group", "--build", pkgDir, deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb: %v: %s", err, out)
	}
	if err := os.WriteFile(deb+".sig", []byte("sig\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(deb)
	sum := sha256.Sum256(data)

	secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	secrets, err := webhook.ParseSecrets([]byte(secret), "test")
	if err != nil {
		t.Fatal(err)
	}
	in := webhook.Intake{Source: webhook.Generic, Secrets: secrets, Rules: webhook.Rules{Branches: []string{"main"}}}
	got := make(chan webhook.Delivery, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		d, err := in.Receive(r.Header, body, time.Now())
		if err != nil {
			http.Error(w, err.Error(), webhook.HTTPStatus(err))
			return
		}
		got <- d
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()

	for _, forge := range []string{"gitlab", "github"} {
		t.Run(forge, func(t *testing.T) {
			out, err := Render(forge, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			script := notifyStep(t, forge, out)
			cmd := exec.Command("sh", "-c", script)
			cmd.Dir = work
			cmd.Env = append(os.Environ(),
				"TANDEM_WEBHOOK_URL="+srv.URL+"/webhook/generic", "TANDEM_WEBHOOK_SECRET="+secret,
				"TANDEM_DEB_BASE_URL=https://ci.example/builds/77/", "TANDEM_REF=main", "TANDEM_REF_TYPE=branch",
				"TANDEM_COMMIT="+strings.Repeat("ab", 20), "TANDEM_PROJECT=site/mysite")
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("notify script: %v\n%s", err, b)
			}
			var d webhook.Delivery
			select {
			case d = <-got:
			default:
				t.Fatal("the receiver accepted no delivery")
			}
			r := d.Release
			if r == nil || r.Package != "mysite" || r.Version != "1.2.3-1" || r.SHA256 != hex.EncodeToString(sum[:]) ||
				r.URL != "https://ci.example/builds/77/mysite_1.2.3-1_all.deb" || r.SignatureURL != r.URL+".sig" ||
				d.Ref != "main" || d.Commit != strings.Repeat("ab", 20) || d.Project != "site/mysite" {
				t.Errorf("delivery %+v, release %+v", d, r)
			}
		})
	}
}

// notifyStep returns the notify job's script from a rendered pipeline.
func notifyStep(t *testing.T, forge string, pipeline []byte) string {
	t.Helper()
	var doc map[string]any
	if err := yaml.Unmarshal(pipeline, &doc); err != nil {
		t.Fatal(err)
	}
	var lines []string
	if forge == "gitlab" {
		job := doc["notify"].(map[string]any)
		for _, s := range job["script"].([]any) {
			lines = append(lines, s.(string))
		}
		// Without GitLab's predefined variables, the lines that read them
		// fall back to the environment the test sets.
		return strings.Join(lines[2:], "\n")
	}
	job := doc["jobs"].(map[string]any)["notify"].(map[string]any)
	steps := job["steps"].([]any)
	return steps[len(steps)-1].(map[string]any)["run"].(string)
}
