package rsync

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestMain doubles as 'tandem files pipe' when rsync runs this test
// binary as its -e command.
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == "files" && os.Args[2] == "pipe" {
		fs := flag.NewFlagSet("pipe", flag.ExitOnError)
		socket := fs.String("socket", "", "")
		token := fs.String("token", "", "")
		_ = fs.Parse(os.Args[3:])
		rest := fs.Args() // host, then the remote command
		if err := Pipe(context.Background(), *socket, *token, rest[1:], os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestServerArgs(t *testing.T) {
	tests := []struct {
		name string
		argv string
		want string // "" = refused
	}{
		{"archive pull", "rsync --server --sender -logDtpre.iLsfxCIvu . /srv/up/", "rsync --server --sender -logDtpre.iLsfxCIvu . /srv/dir/"},
		{"with receiver options", "rsync --server --sender -blogDtpre.iLsfxCIvu --timeout=30 --bwlimit=100 --backup-dir /srv/q . /x/",
			"rsync --server --sender -blogDtpre.iLsfxCIvu --timeout=30 --bwlimit=100 . /srv/dir/"},
		{"backup-dir with =", "rsync --server --sender -blogDtpre.iLsfxCIvu --backup-dir=/q . /x/", "rsync --server --sender -blogDtpre.iLsfxCIvu . /srv/dir/"},
		{"not a sender", "rsync --server -logDtpre.iLsfxCIvu . /srv/dir/", ""},
		{"remove source files", "rsync --server --sender -logDtpre.iLsfxCIvu --remove-source-files . /srv/dir/", ""},
		{"log file", "rsync --server --sender -logDtpre.iLsfxCIvu --log-file=/etc/passwd . /srv/dir/", ""},
		{"another program", "sh -c reboot . /srv/dir/", ""},
		{"unknown short flag", "rsync --server --sender -logDtpKre.iLsfxCIvu . /srv/dir/", ""},
		{"bad capabilities", "rsync --server --sender -logDtpre.i;sh . /srv/dir/", ""},
		{"two short groups", "rsync --server --sender -logDt -pr . /srv/dir/", ""},
		{"timeout without number", "rsync --server --sender -logDtpr --timeout=x . /srv/dir/", ""},
		{"missing dot", "rsync --server --sender -logDtpr x /srv/dir/", ""},
		{"too short", "rsync --server --sender", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ServerArgs(strings.Fields(tt.argv), "/srv/dir")
			if tt.want == "" {
				if err == nil {
					t.Fatalf("ServerArgs accepted %q as %q", tt.argv, got)
				}
				return
			}
			if err != nil || strings.Join(got, " ") != tt.want {
				t.Fatalf("ServerArgs = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func FuzzServerArgs(f *testing.F) {
	f.Add("rsync --server --sender -logDtpre.iLsfxCIvu --timeout=60 . /srv/up/")
	f.Add("rsync --server --sender -blogDtpre.iLsfxCIvu --backup-dir /q . /x/")
	f.Fuzz(func(t *testing.T, s string) {
		argv := strings.Split(s, " ")
		out, err := ServerArgs(argv, "/srv/dir")
		if err != nil {
			return
		}
		// Whatever passes is a sending server for the declared dir, with
		// no option outside the allowed set.
		if len(out) < 5 || out[0] != "rsync" || out[1] != "--server" || out[2] != "--sender" || out[len(out)-1] != "/srv/dir/" || out[len(out)-2] != "." {
			t.Fatalf("ServerArgs(%q) = %q", s, out)
		}
		for _, o := range out[3 : len(out)-2] {
			name, _, _ := strings.Cut(o, "=")
			if strings.HasPrefix(o, "--") && !slices.Contains([]string{"--timeout", "--bwlimit", "--compress-level", "--numeric-ids", "--partial"}, name) {
				t.Fatalf("ServerArgs(%q) passed %q", s, o)
			}
		}
	})
}

// pair is a source and a receiver on loopback TCP standing in for the
// cluster's mTLS streams.
type pair struct {
	t       *testing.T
	src     string // the source's directory
	dst     string // the receiver's
	recv    *Transport
	allowed atomic.Bool
	served  atomic.Int32
}

func newPair(t *testing.T) *pair {
	if _, err := exec.LookPath("rsync"); err != nil {
		t.Skip("rsync is not installed (apt-get install rsync)")
	}
	base := t.TempDir()
	p := &pair{t: t, src: filepath.Join(base, "src"), dst: filepath.Join(base, "dst")}
	p.allowed.Store(true)
	if err := os.MkdirAll(p.src, 0o755); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	source := &Transport{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				p.served.Add(1)
				// On one machine the two copies cannot share a path: the
				// source serves its own directory for the receiver's.
				_ = source.ServeConn(c, "receiver", func(peer, dir string, epoch uint64) (string, func() bool, error) {
					if !p.allowed.Load() || epoch != 7 || dir != p.dst {
						return "", nil, errors.New("not the source of that epoch")
					}
					return p.src, p.allowed.Load, nil
				})
			}()
		}
	}()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(base, "files.sock")
	p.recv = &Transport{Exe: exe, Socket: sock, IOTimeout: 10 * time.Second,
		Dial: func(ctx context.Context, peer string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", ln.Addr().String())
		}}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go p.recv.Listen(ctx)
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return p
}

func (p *pair) pull(o PullOptions) (Stats, error) {
	o.Peer, o.Dir = "source", p.dst
	if o.Epoch == 0 {
		o.Epoch = 7
	}
	return p.recv.Pull(p.t.Context(), o)
}

func write(t *testing.T, path, content string, mode os.FileMode, mtime time.Time) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

func TestPullCopiesDeletesAndQuarantines(t *testing.T) {
	p := newPair(t)
	mtime := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	write(t, filepath.Join(p.src, "a.jpg"), "aaa", 0o640, mtime)
	write(t, filepath.Join(p.src, "sub", "b.txt"), "bbb", 0o600, mtime)
	write(t, filepath.Join(p.src, "skip.tmp"), "tmp", 0o644, mtime)
	write(t, filepath.Join(p.dst, "only-here.jpg"), "mine", 0o644, mtime)
	write(t, filepath.Join(p.dst, "a.jpg"), "my a", 0o644, mtime.Add(time.Hour))

	q := filepath.Join(t.TempDir(), "quarantine", "epoch-7")
	st, err := p.pull(PullOptions{Delete: true, Backup: q, Exclude: []string{"*.tmp"}})
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	if st.Files != 2 || st.Bytes != 6 {
		t.Errorf("stats = %+v; want 2 files, 6 bytes", st)
	}
	for name, want := range map[string]string{"a.jpg": "aaa", "sub/b.txt": "bbb"} {
		b, err := os.ReadFile(filepath.Join(p.dst, name))
		if err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", name, b, err, want)
		}
	}
	fi, err := os.Stat(filepath.Join(p.dst, "a.jpg"))
	if err != nil || fi.Mode().Perm() != 0o640 || !fi.ModTime().Equal(mtime) {
		t.Errorf("a.jpg mode %v mtime %v; want 0640 and %v", fi.Mode(), fi.ModTime(), mtime)
	}
	if _, err := os.Stat(filepath.Join(p.dst, "skip.tmp")); err == nil {
		t.Error("an excluded file was copied")
	}
	if _, err := os.Stat(filepath.Join(p.dst, "only-here.jpg")); err == nil {
		t.Error("a file only the receiver had was not removed from the copy")
	}
	for name, want := range map[string]string{"only-here.jpg": "mine", "a.jpg": "my a"} {
		b, err := os.ReadFile(filepath.Join(q, name))
		if err != nil || string(b) != want {
			t.Errorf("quarantine %s = %q, %v; want %q", name, b, err, want)
		}
	}

	// A delete without quarantine is a delete.
	if err := os.Remove(filepath.Join(p.src, "sub", "b.txt")); err != nil {
		t.Fatal(err)
	}
	if _, err := p.pull(PullOptions{Delete: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(p.dst, "sub", "b.txt")); err == nil {
		t.Error("the source's delete did not propagate")
	}
}

func TestPullRefusedBySource(t *testing.T) {
	p := newPair(t)
	_, err := p.pull(PullOptions{Epoch: 6})
	if err == nil || !strings.Contains(err.Error(), "not the source of that epoch") {
		t.Fatalf("pull in a stale epoch = %v; want the source's refusal", err)
	}
}

func TestLargeFileStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("large file")
	}
	p := newPair(t)
	big := bytes.Repeat([]byte("0123456789abcdef"), 4<<20) // 64 MiB
	if err := os.WriteFile(filepath.Join(p.src, "big.bin"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := p.pull(PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(p.dst, "big.bin"))
	if err != nil || !bytes.Equal(got, big) || st.Bytes != int64(len(big)) {
		t.Fatalf("big.bin: %d bytes, %v, stats %+v", len(got), err, st)
	}
}

func TestClientArgs(t *testing.T) {
	tr := &Transport{Exe: "/usr/bin/tandem", Socket: "/run/tandem/files.sock", IOTimeout: 30 * time.Second}
	tests := []struct {
		name string
		o    PullOptions
		want []string
		not  []string
	}{
		{"plain", PullOptions{Peer: "node1", Dir: "/srv/up"},
			[]string{"-rlptgoD", "--timeout=30", "node1:/srv/up/", "/srv/up/", "/usr/bin/tandem files pipe --socket /run/tandem/files.sock --token T"},
			[]string{"--delete", "--backup", "--bwlimit"}},
		{"delete, quarantine, limit, excludes", PullOptions{Peer: "node1", Dir: "/srv/up/", Delete: true, Backup: "/srv/up.tandem-quarantine/epoch-3",
			BWLimit: 500, Exclude: []string{"*.tmp", "/app.db"}},
			[]string{"--delete", "--backup", "--backup-dir=/srv/up.tandem-quarantine/epoch-3", "--bwlimit=500", "--exclude=*.tmp", "--exclude=/app.db"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tr.clientArgs(tt.o, "T")
			for _, w := range tt.want {
				if !slices.Contains(got, w) {
					t.Errorf("args %q lack %q", got, w)
				}
			}
			for _, n := range tt.not {
				for _, a := range got {
					if strings.HasPrefix(a, n) {
						t.Errorf("args %q have %q", got, a)
					}
				}
			}
		})
	}
	if q := shellQuote("/opt/my tandem/tandem"); q != "'/opt/my tandem/tandem'" {
		t.Errorf("shellQuote = %s", q)
	}
}
