package debpkg

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

var hostile = []string{
	"with space",
	"single'quote",
	`double"quote`,
	"dollar$HOME",
	"subst$(touch MARK)",
	"back`touch MARK`tick",
	"semi;touch MARK",
	"new\nline touch MARK",
	"glob*?[a]",
	"amp&&touch MARK||",
	`back\slash`,
	"",
}

func TestShellQuote(t *testing.T) {
	for _, v := range hostile {
		dir := t.TempDir()
		cmd := exec.Command("/bin/sh", "-c", "printf '%s' "+ShellQuote(v))
		cmd.Dir = dir
		out, err := cmd.Output()
		if err != nil || string(out) != v {
			t.Errorf("sh printf %s = %q, %v; want %q", ShellQuote(v), out, err, v)
		}
		if _, err := os.Stat(filepath.Join(dir, "MARK")); err == nil {
			t.Errorf("%q ran a command", v)
		}
	}
	if ShellQuote("pysite.service") != "pysite.service" || ShellQuote("/var/lib/x") != "/var/lib/x" {
		t.Error("plain words need no quotes")
	}
}

// TestScriptsQuoteEveryValue renders the maintainer scripts with hostile
// values in every field and runs each of them with every command stubbed:
// nothing is executed from a value, and each value reaches the commands
// as one argument.
func TestScriptsQuoteEveryValue(t *testing.T) {
	stubs := []string{"getent", "adduser", "usermod", "mkdir", "chown", "chmod", "stat", "ls", "cut",
		"deb-systemd-helper", "deb-systemd-invoke", "systemctl", "journalctl", "py3compile", "py3clean",
		"sleep", "rm", "rmdir", "find", "grep", "dpkg", "sed", "xargs", "deluser", "delgroup", "userdel", "groupdel"}
	for _, v := range hostile[:len(hostile)-1] {
		for _, mode := range []string{"venv", "system"} {
			p := ScriptParams{
				Package: "pkg" + v, Unit: v + ".service", User: "u" + v, DataDir: "/var/lib/" + v, Mode: mode,
				VenvDir: "/usr/lib/" + v, MountPoints: []string{"/usr/var" + v}, DataSubdirs: []string{"/var/lib/" + v + "/var"},
				SetupUnit: v + "-setup.service", StartCheck: 1,
			}
			if mode == "system" {
				p.VenvDir = ""
			}
			sc, err := RenderScripts(p)
			if err != nil {
				t.Fatal(err)
			}
			work := t.TempDir()
			bin := filepath.Join(work, "bin")
			if err := os.Mkdir(bin, 0o755); err != nil {
				t.Fatal(err)
			}
			log := filepath.Join(work, "args")
			for _, s := range stubs {
				code := "0"
				if s == "getent" {
					code = "2" // no such user or group
				}
				stub := "#!/bin/sh\nprintf '%s\\0' \"$@\" >>" + ShellQuote(log) + "\nexit " + code + "\n"
				if err := os.WriteFile(filepath.Join(bin, s), []byte(stub), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			for _, run := range []struct {
				name, text string
				args       []string
			}{
				{"preinst", sc.PreInst, []string{"install"}},
				{"postinst", sc.PostInst, []string{"configure", ""}},
				{"postinst upgrade", sc.PostInst, []string{"configure", "1.0"}},
				{"prerm", sc.PreRm, []string{"remove"}},
				{"postrm", sc.PostRm, []string{"purge"}},
			} {
				if out, err := exec.Command("/bin/sh", "-n", "-c", run.text).CombinedOutput(); err != nil {
					t.Fatalf("%s with %q does not parse: %v %s\n%s", run.name, v, err, out, run.text)
				}
				path := filepath.Join(work, run.name)
				if err := os.WriteFile(path, []byte(run.text), 0o755); err != nil {
					t.Fatal(err)
				}
				cmd := exec.Command("/bin/sh", append([]string{path}, run.args...)...)
				cmd.Dir = work
				cmd.Env = []string{"PATH=" + bin + ":/usr/bin:/bin"}
				_ = cmd.Run() // the stubs fail; what matters is what ran
				if _, err := os.Stat(filepath.Join(work, "MARK")); err == nil {
					t.Fatalf("%s with %q ran a command from a value", run.name, v)
				}
			}
			args, _ := os.ReadFile(log)
			got := map[string]bool{}
			for _, a := range bytes.Split(args, []byte{0}) {
				got[string(a)] = true
			}
			want := []string{"u" + v, "/var/lib/" + v, v + ".service", "tandem package pkg" + v, "/var/lib/" + v + "/var"}
			if _, err := os.Stat("/run/systemd/system"); err == nil {
				want = append(want, v+"-setup.service")
			}
			if mode == "system" {
				want = append(want, "pkg"+v, "/usr/var"+v)
			}
			for _, w := range want {
				if !got[w] {
					t.Errorf("mode %s: no command got %q as one argument (%d arguments seen)", mode, w, len(got))
				}
			}
		}
	}
}

func TestCheckUser(t *testing.T) {
	for _, tc := range []struct {
		user string
		ok   bool
	}{
		{"pysite", true}, {"flaskr", true}, {"www-data", false}, {"backup", false}, {"postgres", false},
		{"root", false}, {"nobody", false}, {"systemd-network", false}, {"_apt", false}, {"tandem", false},
	} {
		if err := CheckUser(tc.user); (err == nil) != tc.ok {
			t.Errorf("CheckUser(%q) = %v, want ok=%v", tc.user, err, tc.ok)
		}
	}
}

func TestCheckDataDir(t *testing.T) {
	for _, tc := range []struct {
		dir   string
		allow []string
		ok    bool
	}{
		{"/var/lib/pysite", nil, true},
		{"/var/lib/pysite/data", nil, true},
		{"/srv/pysite", nil, true},
		{"/srv/www/pysite", nil, true},
		{"/data/pysite", []string{"/data"}, true},
		{"/var/lib", nil, false},
		{"/srv", nil, false},
		{"/var/lib/dpkg", nil, false},
		{"/var/lib/apt/lists", nil, false},
		{"/var/lib/systemd", nil, false},
		{"/var/lib/tandem", nil, false},
		{"/etc", nil, false},
		{"/etc/pysite", nil, false},
		{"/usr/lib/pysite", nil, false},
		{"/home/pysite", nil, false},
		{"/", nil, false},
		{"/var/libx/pysite", nil, false},
		{"/data", []string{"/data"}, false},
		{"/data/x", nil, false},
		{"/var/lib/../../etc", nil, false},
		{"/anything", []string{"/"}, false},
	} {
		if err := CheckDataDir(tc.dir, tc.allow); (err == nil) != tc.ok {
			t.Errorf("CheckDataDir(%q, %q) = %v, want ok=%v", tc.dir, tc.allow, err, tc.ok)
		}
	}
}
