package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/lab"
	"github.com/tandem-ha/tandem/internal/testenv"
)

const fixtures = "../../internal/debpkg/testdata/apps"

// packageApp packages a copy of the fixture app (modified by edit, if
// any) on the host at version v in system mode.
func packageApp(t *testing.T, ctx context.Context, app, v, out string, edit func(pyproject string) string, args ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), app)
	if err := os.CopyFS(dir, os.DirFS(filepath.Join(fixtures, app))); err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		p := filepath.Join(dir, "pyproject.toml")
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(edit(string(data))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.CommandContext(ctx, *tandemBin, append([]string{"package", dir, "--version", v, "--out", out}, args...)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tandem package %s --version %s: %v\n%s", app, v, err, b)
	}
	return filepath.Join(out, app+"_"+v+"_all.deb")
}

var debName = regexp.MustCompile(`^[a-z0-9][a-z0-9.+-]+$`)

// installDebianPackages installs Debian packages, and whatever they need
// that node lacks, from .debs the host downloads: lab nodes have no
// mirror, a real server would apt-get them.
func installDebianPackages(t *testing.T, ctx context.Context, c *Labctl, node string, pkgs ...string) {
	t.Helper()
	installed := map[string]bool{}
	for _, p := range strings.Fields(c.MustSh(t, ctx, node, "dpkg-query -W -f '${Package}\\n'")) {
		installed[p] = true
	}
	// Walk the dependencies as apt would: a group of alternatives is met
	// by any installed one, else the first is taken.
	var need []string
	seen := map[string]bool{}
	queue := append([]string{}, pkgs...)
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if seen[p] || installed[p] {
			continue
		}
		seen[p] = true
		need = append(need, p)
		out, err := exec.CommandContext(ctx, "apt-cache", "depends", "--no-recommends", "--no-suggests", "--no-conflicts",
			"--no-breaks", "--no-replaces", "--no-enhances", p).Output()
		if err != nil {
			t.Fatalf("apt-cache depends %s: %v", p, err)
		}
		var group []string // alternatives; a virtual name is replaced by its providers
		flush := func() {
			for _, g := range group {
				if installed[g] {
					group = nil
					return
				}
			}
			if len(group) > 0 {
				queue = append(queue, group[0])
			}
			group = nil
		}
		alt := false
		for _, l := range strings.Split(string(out), "\n") {
			switch {
			case strings.HasPrefix(l, "    "): // a provider of the virtual package above
				if n := strings.TrimSpace(l); debName.MatchString(n) {
					group = append(group, n)
				}
				continue
			case strings.HasPrefix(l, "  |Depends: "), strings.HasPrefix(l, "  |PreDepends: "):
				if !alt {
					flush()
				}
				alt = true
			case strings.HasPrefix(l, "  Depends: "), strings.HasPrefix(l, "  PreDepends: "):
				if !alt {
					flush()
				}
				alt = false
			default:
				continue
			}
			_, n, _ := strings.Cut(l, ": ")
			if strings.HasPrefix(n, "<") {
				continue // virtual: its providers follow, indented
			}
			if n, _, _ = strings.Cut(n, ":"); debName.MatchString(n) {
				group = append(group, n)
			}
		}
		flush()
	}
	if len(need) == 0 {
		return
	}
	dir := t.TempDir()
	dl := exec.CommandContext(ctx, "apt-get", append([]string{"download", "-q"}, need...)...)
	dl.Dir = dir
	if b, err := dl.CombinedOutput(); err != nil {
		testenv.Missing(t, "apt-get download %s on the host: %v\n%s", need, err, b)
	}
	ents, _ := os.ReadDir(dir)
	c.MustSh(t, ctx, node, "rm -rf /tmp/debdeps && mkdir /tmp/debdeps")
	for _, e := range ents {
		if err := c.CopyIn(ctx, filepath.Join(dir, e.Name()), node, "/tmp/debdeps/"+e.Name()); err != nil {
			t.Fatal(err)
		}
	}
	c.MustSh(t, ctx, node, "DEBIAN_FRONTEND=noninteractive dpkg -i /tmp/debdeps/*.deb >/dev/null && rm -rf /tmp/debdeps")
}

// waitHTTP polls url in node until its body contains want.
func waitHTTP(t *testing.T, ctx context.Context, c *Labctl, node, url, want, unit string) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		out, err := c.Sh(ctx, node, "curl -fsS --max-time 2 "+url)
		if err == nil && strings.Contains(out, want) {
			return
		}
		last = out
		time.Sleep(300 * time.Millisecond)
	}
	st, _ := c.Sh(ctx, node, "systemctl status --no-pager "+unit+"; journalctl -u "+unit+" --no-pager -n 30")
	t.Fatalf("%s: %s never answered %q (last %q)\n%s", node, url, want, last, st)
}

// TestPackageFrameworks installs the framework fixtures (a Flask app with
// SQLite in its instance folder and an init-db setup command, a Django
// project with admin, static files and migrations, a Starlette app under
// gunicorn's uvicorn worker), each built in system mode with tandem
// package, on a node with Debian's framework packages, and uses them
// through gunicorn. A failing setup command and a service that cannot
// start fail the installation with their output.
func TestPackageFrameworks(t *testing.T) {
	c := suite(t)
	ctx := testCtx(t, 10*time.Minute)
	if err := exec.Command("/usr/bin/python3", "-c", "import flask, flit_core, django, starlette, uvicorn.workers, gunicorn").Run(); err != nil {
		testenv.Missing(t, "building the fixtures needs python3-flask, flit, python3-django, python3-starlette, python3-uvicorn and python3-gunicorn on the host (packaging/test-deps.txt)")
	}
	const node = "node1"
	out := t.TempDir()
	flask1 := packageApp(t, ctx, "flaskr", "1.0.0", out, nil)
	flask2 := packageApp(t, ctx, "flaskr", "1.1.0", out, nil)
	dj := packageApp(t, ctx, "djsite", "1.0.0", out, nil)
	asgi := packageApp(t, ctx, "asgisite", "1.0.0", out, nil)
	badSetup := packageApp(t, ctx, "flaskr", "1.2.0", out, func(s string) string {
		return strings.Replace(s, `setup = ["flask --app flaskr init-db"]`, `setup = ["flask --app flaskr init-db", "flask --app flaskr no-such-command"]`, 1)
	})
	badStart := packageApp(t, ctx, "asgisite", "1.1.0", out, func(s string) string {
		return strings.Replace(s, "asgisite.app:app", "asgisite.app:missing_app", 1)
	})
	venvOut := t.TempDir()
	flaskVenv := packageApp(t, ctx, "flaskr", "2.0.0", venvOut, nil, "--mode", "venv", "--system-site-packages")
	installDebianPackages(t, ctx, c, node, "python3-flask", "python3-django", "python3-starlette", "python3-uvicorn")
	if err := c.CopyIn(ctx, flaskVenv, node, "/tmp/flaskr-venv.deb"); err != nil {
		t.Fatal(err)
	}
	for _, deb := range []string{flask1, flask2, dj, asgi, badSetup, badStart} {
		if err := c.CopyIn(ctx, deb, node, "/tmp/"+filepath.Base(deb)); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		_, _ = c.Sh(context.Background(), node, "dpkg --purge flaskr djsite asgisite >/dev/null 2>&1; rm -f /tmp/flaskr_*.deb /tmp/djsite_*.deb /tmp/asgisite_*.deb /tmp/flaskr-venv.deb /tmp/jar")
	})

	t.Run("flask", func(t *testing.T) {
		c.MustSh(t, ctx, node, "dpkg -i /tmp/flaskr_1.0.0_all.deb")
		waitHTTP(t, ctx, c, node, "http://127.0.0.1:8010/health", `"version":"1.0.0"`, "flaskr")
		// init-db ran as flaskr before the start; the database is in the
		// instance folder, inside the data directory.
		if got := strings.TrimSpace(c.MustSh(t, ctx, node, "stat -c %U /var/lib/flaskr/var/flaskr-instance/flaskr.sqlite")); got != "flaskr" {
			t.Errorf("database owned by %q, want flaskr", got)
		}
		// A user registers, logs in and creates a post.
		base := "curl -fsS -o /dev/null -b /tmp/jar -c /tmp/jar http://127.0.0.1:8010"
		c.MustSh(t, ctx, node, base+"/auth/register -d username=ann -d password=secret")
		c.MustSh(t, ctx, node, base+"/auth/login -d username=ann -d password=secret")
		c.MustSh(t, ctx, node, base+"/create -d title=Hello-from-the-lab -d body=first")
		if page := c.MustSh(t, ctx, node, "curl -fsS http://127.0.0.1:8010/"); !strings.Contains(page, "Hello-from-the-lab") || !strings.Contains(page, "by ann") {
			t.Errorf("index does not show the post:\n%s", page)
		}
		// Byte-compiled on install, by py3compile.
		c.MustSh(t, ctx, node, "ls /usr/lib/python3/dist-packages/flaskr/__pycache__/db.cpython-311.pyc")
		// Upgrade: the setup runs again, the data stays.
		c.MustSh(t, ctx, node, "dpkg -i /tmp/flaskr_1.1.0_all.deb")
		waitHTTP(t, ctx, c, node, "http://127.0.0.1:8010/health", `"version":"1.1.0"`, "flaskr")
		if page := c.MustSh(t, ctx, node, "curl -fsS http://127.0.0.1:8010/"); !strings.Contains(page, "Hello-from-the-lab") {
			t.Errorf("the post is gone after the upgrade:\n%s", page)
		}
		// A failing setup command stops the upgrade with its output; the
		// running version is left alone.
		res, err := c.Sh(ctx, node, "dpkg -i /tmp/flaskr_1.2.0_all.deb 2>&1")
		if err == nil || !strings.Contains(res, "a setup command ([tool.tandem] setup) failed") || !strings.Contains(res, "no-such-command") {
			t.Errorf("dpkg -i with a failing setup: %v\n%s", err, res)
		}
		if st, _ := c.Sh(ctx, node, "systemctl show -p NRestarts --value flaskr"); strings.TrimSpace(st) != "0" {
			t.Errorf("flaskr restarted %s times", st)
		}
		c.MustSh(t, ctx, node, "dpkg --purge flaskr")
		c.MustSh(t, ctx, node, "test ! -e /var/lib/flaskr && test ! -e /usr/var && ! getent passwd flaskr && test ! -e /usr/lib/python3/dist-packages/flaskr")
	})

	// The same app in venv mode (reusing Debian's Flask): the instance
	// folder, in the venv's prefix, is bound from the data directory too.
	t.Run("flask-venv", func(t *testing.T) {
		c.MustSh(t, ctx, node, "dpkg -i /tmp/flaskr-venv.deb")
		waitHTTP(t, ctx, c, node, "http://127.0.0.1:8010/health", `"version":"2.0.0"`, "flaskr")
		c.MustSh(t, ctx, node, "test -f /var/lib/flaskr/var/flaskr-instance/flaskr.sqlite && test -d /usr/lib/flaskr/var && test ! -e /usr/var")
		c.MustSh(t, ctx, node, "curl -fsS -o /dev/null http://127.0.0.1:8010/auth/register -d username=bob -d password=pw")
		c.MustSh(t, ctx, node, "dpkg --purge flaskr && test ! -e /usr/lib/flaskr && test ! -e /var/lib/flaskr && ! getent passwd flaskr")
	})

	t.Run("django", func(t *testing.T) {
		c.MustSh(t, ctx, node, "dpkg -i /tmp/djsite_1.0.0_all.deb")
		waitHTTP(t, ctx, c, node, "http://127.0.0.1:8020/health", `"ok"`, "djsite")
		for _, u := range []string{"/admin/login/", "/static/admin/css/base.css", "/static/djsite/site.css"} {
			if code := strings.TrimSpace(c.MustSh(t, ctx, node, "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8020"+u)); code != "200" {
				t.Errorf("%s answered %s, want 200", u, code)
			}
		}
		mig := c.MustSh(t, ctx, node, "runuser -u djsite -- env DJANGO_SETTINGS_MODULE=djsite.settings DJSITE_DATA_DIR=/var/lib/djsite python3 -m django showmigrations notes")
		if !strings.Contains(mig, "[X] 0001_initial") {
			t.Errorf("migrations did not run:\n%s", mig)
		}
		c.MustSh(t, ctx, node, "dpkg --purge djsite && ! getent passwd djsite && test ! -e /var/lib/djsite")
	})

	t.Run("asgi", func(t *testing.T) {
		c.MustSh(t, ctx, node, "dpkg -i /tmp/asgisite_1.0.0_all.deb")
		waitHTTP(t, ctx, c, node, "http://127.0.0.1:8030/", "hello from asgisite", "asgisite")
		if ps := c.MustSh(t, ctx, node, "ps -o args= -u asgisite"); !strings.Contains(ps, "uvicorn.workers.UvicornWorker") {
			t.Errorf("not running uvicorn workers:\n%s", ps)
		}
		// A service that cannot start fails the installation with the end
		// of its journal instead of restarting forever.
		res, err := c.Sh(ctx, node, "dpkg -i /tmp/asgisite_1.1.0_all.deb 2>&1")
		if err == nil || !strings.Contains(res, "asgisite.service failed to start") || !strings.Contains(res, "missing_app") {
			t.Errorf("dpkg -i of a service that cannot start: %v\n%s", err, res)
		}
		if st, _ := c.Sh(ctx, node, "systemctl is-active asgisite"); strings.TrimSpace(st) == "active" {
			t.Error("the failing service was left running")
		}
		c.MustSh(t, ctx, node, "dpkg --purge asgisite && ! getent passwd asgisite")
		// A user of that name that the package did not create is refused,
		// and left alone.
		c.MustSh(t, ctx, node, "adduser --system --quiet --group asgisite")
		res, err = c.Sh(ctx, node, "dpkg -i /tmp/asgisite_1.0.0_all.deb 2>&1")
		if err == nil || !strings.Contains(res, "already exists and was not created by this package; refusing to adopt it") {
			t.Errorf("dpkg -i with a foreign user asgisite: %v\n%s", err, res)
		}
		c.MustSh(t, ctx, node, "dpkg --purge asgisite; getent passwd asgisite && deluser --system --quiet asgisite && delgroup --system --quiet asgisite 2>/dev/null; true")
	})
}

// TestPackageFrameworksVenv packages, in venv mode, the Django project
// laid out as real ones are (djreal: a settings package named by
// manage.py, SECRET_KEY from its environment file, whitenoise serving the
// static files collected at build time) and the ASGI app (Starlette under
// gunicorn's uvicorn worker, with a static file). The machine has no
// package index, so the venvs take Debian's frameworks through
// system-site-packages, as the Flask venv above does. Both are installed
// on every app node, started by systemd, and used through the floating IP
// from the client.
func TestPackageFrameworksVenv(t *testing.T) {
	c := suite(t)
	ctx := testCtx(t, 10*time.Minute)
	if err := exec.Command("/usr/bin/python3", "-c", "import django, whitenoise, starlette, uvicorn.workers, gunicorn").Run(); err != nil {
		testenv.Missing(t, "building the fixtures needs python3-django, python3-whitenoise, python3-starlette, python3-uvicorn and python3-gunicorn on the host (packaging/test-deps.txt)")
	}
	out := t.TempDir()
	venv := []string{"--mode", "venv", "--system-site-packages"}
	dj := packageApp(t, ctx, "djreal", "1.0.0", out, nil, venv...)
	asgi := packageApp(t, ctx, "asgisite", "2.0.0", out, func(s string) string {
		return strings.Replace(s, "--bind 127.0.0.1:8030", "--bind 0.0.0.0:8030", 1)
	}, venv...)
	nodes := []string{lab.NodeName(1), lab.NodeName(2)}
	for _, node := range nodes {
		installDebianPackages(t, ctx, c, node, "python3-django", "python3-whitenoise", "python3-starlette", "python3-uvicorn", "python3-gunicorn")
		for _, deb := range []string{dj, asgi} {
			if err := c.CopyIn(ctx, deb, node, "/tmp/"+filepath.Base(deb)); err != nil {
				t.Fatal(err)
			}
		}
		t.Cleanup(func() {
			_, _ = c.Sh(context.Background(), node, "dpkg --purge djreal asgisite >/dev/null 2>&1; rm -f /tmp/djreal_*.deb /tmp/asgisite_*.deb")
		})
	}
	vip := func(port int) string { return fmt.Sprintf("http://%s:%d", lab.FloatingIP, port) }
	// get fetches url from the client, through the floating IP.
	get := func(t *testing.T, url string, curlArgs ...string) (code, body string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			args := append([]string{"curl", "-sS", "--max-time", "3", "-w", "\n%{http_code}"}, curlArgs...)
			r, err := c.Exec(ctx, "client", append(args, url)...)
			out := strings.TrimRight(r.Stdout, "\n")
			i := strings.LastIndex(out, "\n")
			if err == nil && i >= 0 && out[i+1:] == "200" || time.Now().After(deadline) {
				if i < 0 {
					return out, ""
				}
				return out[i+1:], out[:i]
			}
			time.Sleep(500 * time.Millisecond)
		}
	}

	t.Run("django", func(t *testing.T) {
		for _, node := range nodes {
			c.MustSh(t, ctx, node, "dpkg -i /tmp/djreal_1.0.0_all.deb")
			waitHTTP(t, ctx, c, node, "http://127.0.0.1:8040/health/", `"ok"`, "djreal")
			if got := strings.TrimSpace(c.MustSh(t, ctx, node, "systemctl is-active djreal; ps -o user=,args= -p $(systemctl show -P MainPID djreal)")); !strings.Contains(got, "active\ndjreal ") || !strings.Contains(got, "/usr/lib/djreal/bin/python -m gunicorn") {
				t.Errorf("%s: djreal is not systemd's venv service as its own user:\n%s", node, got)
			}
			// Collected at build time, in the venv, where BASE_DIR puts
			// STATIC_ROOT; nothing was collected on the node.
			c.MustSh(t, ctx, node, "test -f /usr/lib/djreal/lib/python3.11/site-packages/djreal/staticfiles/staticfiles.json && dpkg -S /usr/lib/djreal/lib/python3.11/site-packages/djreal/staticfiles/staticfiles.json")
			mig := c.MustSh(t, ctx, node, "runuser -u djreal -- env DJANGO_SETTINGS_MODULE=djreal.settings.production DJANGO_DATA_DIR=/var/lib/djreal DJANGO_SECRET_KEY=x /usr/lib/djreal/bin/python -m django showmigrations auth")
			if !strings.Contains(mig, "[X] 0001_initial") {
				t.Errorf("%s: migrations did not run:\n%s", node, mig)
			}
		}
		code, page := get(t, vip(8040)+"/admin/login/")
		if code != "200" || !strings.Contains(page, "csrfmiddlewaretoken") {
			t.Fatalf("admin login page through the floating IP: %s\n%.500s", code, page)
		}
		// whitenoise serves the manifest's hashed name the page links to,
		// compressed at build time.
		css := regexp.MustCompile(`/static/admin/css/base\.[0-9a-f]{12}\.css`).FindString(page)
		if css == "" {
			t.Fatalf("the login page links no hashed stylesheet:\n%.800s", page)
		}
		if code, hdrs := get(t, vip(8040)+css, "-o", "/dev/null", "-D", "-", "-H", "Accept-Encoding: gzip"); code != "200" || !strings.Contains(strings.ToLower(hdrs), "content-encoding: gzip") {
			t.Errorf("%s through the floating IP: %s\n%s", css, code, hdrs)
		}
		if code, body := get(t, vip(8040)+"/static/djreal/site.css"); code != "200" || !strings.Contains(body, "font-family") {
			t.Errorf("the project's own static file through the floating IP: %s %q", code, body)
		}
	})

	t.Run("asgi", func(t *testing.T) {
		for _, node := range nodes {
			c.MustSh(t, ctx, node, "dpkg -i /tmp/asgisite_2.0.0_all.deb")
			waitHTTP(t, ctx, c, node, "http://127.0.0.1:8030/health", `"ok"`, "asgisite")
			if ps := c.MustSh(t, ctx, node, "ps -o args= -u asgisite"); !strings.Contains(ps, "/usr/lib/asgisite/bin/python -m gunicorn") || !strings.Contains(ps, "uvicorn.workers.UvicornWorker") {
				t.Errorf("%s: not the venv's gunicorn with uvicorn workers:\n%s", node, ps)
			}
		}
		if code, body := get(t, vip(8030)+"/"); code != "200" || !strings.Contains(body, "hello from asgisite") {
			t.Errorf("/ through the floating IP: %s %q", code, body)
		}
		if code, body := get(t, vip(8030)+"/static/style.css"); code != "200" || !strings.Contains(body, "font-family") {
			t.Errorf("/static/style.css through the floating IP: %s %q", code, body)
		}
	})
}
