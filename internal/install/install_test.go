package install

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// call records one command a fake runner saw.
type call struct {
	env  []string
	name string
	args []string
}

// fakeRun answers every command with out and err, recording the calls.
func fakeRun(calls *[]call, out string, err error) RunFunc {
	return func(ctx context.Context, env []string, name string, args ...string) ([]byte, error) {
		*calls = append(*calls, call{env, name, args})
		return []byte(out), err
	}
}

func TestInstall(t *testing.T) {
	var long strings.Builder
	for i := 1; i <= 30; i++ {
		fmt.Fprintf(&long, "apt line %d\n", i)
	}
	long.WriteString("E: pysite : Depends: python3-flask but it is not installable\n")
	tests := []struct {
		name     string
		deb      string
		out      string
		err      error
		wantArg  string
		wantErr  []string
		notInErr []string
	}{
		{name: "absolute", deb: "/var/lib/tandem/releases/sha256/ab.deb", wantArg: "/var/lib/tandem/releases/sha256/ab.deb"},
		{name: "relative gets ./", deb: "pysite_0.2.0-1_amd64.deb", wantArg: "./pysite_0.2.0-1_amd64.deb"},
		{
			name: "apt fails: error carries the tail", deb: "/tmp/x.deb", out: long.String(), err: errors.New("exit status 100"),
			wantArg:  "/tmp/x.deb",
			wantErr:  []string{"apt-get install /tmp/x.deb", "exit status 100", "apt line 30", "python3-flask but it is not installable", "apt line 12"},
			notInErr: []string{"apt line 11\n", "apt line 1\n"},
		},
		{name: "not a deb", deb: "/tmp/x.tar", wantErr: []string{"not a .deb"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls []call
			a := &Apt{Run: fakeRun(&calls, tt.out, tt.err)}
			err := a.Install(t.Context(), tt.deb)
			checkErr(t, err, tt.wantErr, tt.notInErr)
			if tt.wantArg == "" {
				if len(calls) != 0 {
					t.Fatalf("ran %v for a bad path", calls)
				}
				return
			}
			if len(calls) != 1 || calls[0].name != "apt-get" {
				t.Fatalf("calls = %v, want one apt-get", calls)
			}
			c := calls[0]
			for _, want := range []string{"install", "-y", "--allow-downgrades", "Dpkg::Options::=--force-confdef", "Dpkg::Options::=--force-confold", tt.wantArg} {
				if !slices.Contains(c.args, want) {
					t.Errorf("apt-get args %q lack %q", c.args, want)
				}
			}
			if c.args[len(c.args)-1] != tt.wantArg {
				t.Errorf("last arg = %q, want the file %q", c.args[len(c.args)-1], tt.wantArg)
			}
			if !slices.Contains(c.env, "DEBIAN_FRONTEND=noninteractive") {
				t.Errorf("env %q lacks DEBIAN_FRONTEND=noninteractive", c.env)
			}
		})
	}
}

// TestInstallNotInterrupted: a cancelled context does not reach apt.
func TestInstallNotInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	a := &Apt{Run: func(ctx context.Context, env []string, name string, args ...string) ([]byte, error) {
		if ctx.Err() != nil {
			t.Error("apt-get ran with a cancelled context: dpkg would be killed midway")
		}
		return nil, nil
	}}
	if err := a.Install(ctx, "/tmp/x.deb"); err != nil {
		t.Fatal(err)
	}
}

func TestInstalled(t *testing.T) {
	tests := []struct {
		name    string
		pkg     string
		out     string
		err     error
		want    string
		wantErr []string
		broken  bool
	}{
		{name: "installed", pkg: "pysite", out: "install ok installed\t0.2.0-1\n", want: "0.2.0-1"},
		{name: "epoch", pkg: "pysite", out: "install ok installed\t1:0.2.0-1\n", want: "1:0.2.0-1"},
		{name: "triggers pending", pkg: "pysite", out: "install ok triggers-pending\t0.2.0-1\n", want: "0.2.0-1"},
		{name: "never installed", pkg: "pysite", out: "dpkg-query: no packages found matching pysite\n", err: errors.New("exit status 1"), want: ""},
		{name: "removed, conffiles left", pkg: "pysite", out: "deinstall ok config-files\t0.1.0-1\n", want: ""},
		{name: "known but not installed", pkg: "pysite", out: "unknown ok not-installed\t\n", want: ""},
		{name: "multi-arch", pkg: "pysite", out: "install ok installed\t0.2.0-1\nunknown ok not-installed\t\n", want: "0.2.0-1"},
		{name: "half-installed", pkg: "pysite", out: "install reinstreq half-installed\t0.2.0-1\n", broken: true, wantErr: []string{"half-installed", "dpkg --configure -a", "pysite"}},
		{name: "unpacked", pkg: "pysite", out: "install ok unpacked\t0.2.0-1\n", broken: true, wantErr: []string{"unpacked"}},
		{name: "half-configured", pkg: "pysite", out: "install ok half-configured\t0.2.0-1\n", broken: true, wantErr: []string{"half-configured"}},
		{name: "garbage", pkg: "pysite", out: "what\n", wantErr: []string{"unexpected dpkg-query output"}},
		{name: "unknown status", pkg: "pysite", out: "install ok exploded\t1\n", wantErr: []string{"unknown dpkg status"}},
		{name: "dpkg-query fails otherwise", pkg: "pysite", out: "dpkg-query: error: database locked\n", err: errors.New("exit status 2"), wantErr: []string{"dpkg-query --show pysite", "database locked"}},
		{name: "option-like name", pkg: "--admindir=/tmp", wantErr: []string{"not a Debian package name"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls []call
			a := &Apt{Run: fakeRun(&calls, tt.out, tt.err)}
			got, err := a.Installed(t.Context(), tt.pkg)
			checkErr(t, err, tt.wantErr, nil)
			if errors.Is(err, ErrBrokenPackage) != tt.broken {
				t.Errorf("errors.Is(err, ErrBrokenPackage) = %v, want %v (err %v)", !tt.broken, tt.broken, err)
			}
			if got != tt.want {
				t.Errorf("version = %q, want %q", got, tt.want)
			}
			if len(calls) == 1 && (calls[0].name != "dpkg-query" || calls[0].args[len(calls[0].args)-1] != tt.pkg) {
				t.Errorf("ran %v", calls[0])
			}
		})
	}
}

func TestAppInfo(t *testing.T) {
	tests := []struct {
		name       string
		pkg        string
		file       string // "" = no file
		unit, path string
		wantErr    []string
	}{
		{name: "ok", pkg: "pysite", file: `{"package":"pysite","version":"0.2.0-1","unit":"pysite.service","health_path":"/healthz","data_dir":"/var/lib/pysite","mode":"venv"}`, unit: "pysite.service", path: "/healthz"},
		{name: "no health path", pkg: "pysite", file: `{"package":"pysite","unit":"pysite.service"}`, unit: "pysite.service"},
		{name: "missing", pkg: "pysite", wantErr: []string{"does not exist", "tandem package"}},
		{name: "bad json", pkg: "pysite", file: `{`, wantErr: []string{"pysite.json"}},
		{name: "other package", pkg: "pysite", file: `{"package":"other","unit":"other.service"}`, wantErr: []string{`names package "other"`}},
		{name: "no unit", pkg: "pysite", file: `{"package":"pysite"}`, wantErr: []string{"no valid unit"}},
		{name: "unit with slash", pkg: "pysite", file: `{"package":"pysite","unit":"../x.service"}`, wantErr: []string{"no valid unit"}},
		{name: "relative health path", pkg: "pysite", file: `{"package":"pysite","unit":"pysite.service","health_path":"healthz"}`, wantErr: []string{"must start with /"}},
		{name: "traversal name", pkg: "../etc/passwd", wantErr: []string{"not a Debian package name"}},
		{name: "too large", pkg: "pysite", file: `{"package":"pysite","unit":"pysite.service","x":"` + strings.Repeat("a", maxMeta) + `"}`, wantErr: []string{"larger than"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.file != "" {
				if err := os.WriteFile(filepath.Join(dir, tt.pkg+".json"), []byte(tt.file), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			unit, path, err := appInfoIn(dir, tt.pkg)
			checkErr(t, err, tt.wantErr, nil)
			if unit != tt.unit || path != tt.path {
				t.Errorf("AppInfo = %q, %q, want %q, %q", unit, path, tt.unit, tt.path)
			}
		})
	}
}

func TestTailBuffer(t *testing.T) {
	var b tailBuffer
	b.Write([]byte(strings.Repeat("a", maxOutput-1)))
	b.Write([]byte("bc"))
	if got := b.Bytes(); len(got) != maxOutput || !strings.HasSuffix(string(got), "abc") {
		t.Fatalf("tail buffer holds %d bytes ending %q", len(got), got[len(got)-3:])
	}
	b.Write([]byte(strings.Repeat("z", maxOutput+5)))
	if got := b.Bytes(); len(got) != maxOutput || strings.Trim(string(got), "z") != "" {
		t.Fatalf("tail buffer after a large write holds %d bytes", len(got))
	}
}

// checkErr fails unless err is nil when want is empty, else contains each
// of want and none of not.
func checkErr(t *testing.T, err error, want, not []string) {
	t.Helper()
	if len(want) == 0 {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("no error, want one containing %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
	for _, n := range not {
		if strings.Contains(err.Error(), n) {
			t.Errorf("error %q contains %q", err, n)
		}
	}
}
