package rsync

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/confine"
	"github.com/tandem-ha/tandem/internal/files"
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
	// And as 'tandem files confine --read DIR -- COMMAND...', which the
	// source's transport runs rsync through where Landlock is there.
	if len(os.Args) > 5 && os.Args[1] == "files" && os.Args[2] == "confine" && os.Args[3] == "--read" && os.Args[5] == "--" {
		if err := confine.Exec(os.Args[4], os.Args[6:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

// confined is the source's Confine as the agent sets it, with this test
// binary as tandem, or nil on a kernel without Landlock.
func confined(t *testing.T) func(dir string, argv []string) []string {
	if confine.Supported() == 0 {
		return nil
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return func(dir string, argv []string) []string {
		return append([]string{exe, "files", "confine", "--read", dir, "--"}, argv...)
	}
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
		// A receiver asking the source to follow links out of the path.
		{"copy links", "rsync --server --sender -logDtpLre.iLsfxCIvu . /srv/dir/", ""},
		{"copy dir links", "rsync --server --sender -logDtpkre.iLsfxCIvu . /srv/dir/", ""},
		{"copy links, long", "rsync --server --sender -logDtpre.iLsfxCIvu --copy-links . /srv/dir/", ""},
		{"copy unsafe links", "rsync --server --sender -logDtpre.iLsfxCIvu --copy-unsafe-links . /srv/dir/", ""},
		// Arguments that would come over the protocol, unchecked.
		{"protect args", "rsync --server --sender -slogDtpre.iLsfxCIvu . /srv/dir/", ""},
		{"files from", "rsync --server --sender -logDtpre.iLsfxCIvu --files-from=/etc/shadow . /srv/dir/", ""},
		{"another path", "rsync --server --sender -logDtpre.iLsfxCIvu . /etc/ /srv/dir/", ""},
		{"two dots", "rsync --server --sender -logDtpre.iLsfxCIvu . . /srv/dir/", ""},
		{"a path that escapes: replaced", "rsync --server --sender -logDtpre.iLsfxCIvu . /srv/dir/../../etc/", "rsync --server --sender -logDtpre.iLsfxCIvu . /srv/dir/"},
		{"a remote shell", "rsync --server --sender -logDtpre.iLsfxCIvu --rsh=sh . /srv/dir/", ""},
		{"a daemon config", "rsync --server --sender --daemon --config=/tmp/x . /srv/dir/", ""},
		{"newline in capabilities", "rsync --server --sender -logDtpre.iL\nsh . /srv/dir/", ""},
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
	// The receiver's directory and its parent do not exist yet.
	p := &pair{t: t, src: filepath.Join(base, "src"), dst: filepath.Join(base, "app", "dst")}
	p.allowed.Store(true)
	if err := os.MkdirAll(p.src, 0o755); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	// Confined as in production, so every pull here shows that rsync
	// still serves everything it must from inside the confinement.
	source := &Transport{Confine: confined(t)}
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
				_ = source.ServeConn(c, "receiver", func(peer string, r Request) (string, func() bool, error) {
					dir, epoch := r.Dir, r.Epoch
					if !p.allowed.Load() || epoch != 7 || dir != p.dst {
						return "", nil, errors.New("not the source of that epoch")
					}
					if r.Quarantine != 0 {
						return fmt.Sprintf("%s.quarantine-%d", p.src, r.Quarantine), p.allowed.Load, nil
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
	// Both agents' halves (the source's server and the receiver's
	// bridge) run in this process: what they allocate while carrying the
	// file shows whether it streams or is held in memory.
	var before, after runtime.MemStats
	// Meanwhile the app reads the file's name: it is absent or whole,
	// never half-written (rsync writes a temporary name, then renames).
	stop := make(chan struct{})
	partial := make(chan int64, 1)
	go func() {
		defer close(partial)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if fi, err := os.Stat(filepath.Join(p.dst, "big.bin")); err == nil && fi.Size() != int64(len(big)) {
				partial <- fi.Size()
				return
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	runtime.ReadMemStats(&before)
	st, err := p.pull(PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	close(stop)
	if n, ok := <-partial; ok {
		t.Errorf("the app could see big.bin half-written (%d of %d bytes)", n, len(big))
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > uint64(len(big))/8 {
		t.Errorf("carrying a %d MiB file allocated %d KiB; want it streamed (under %d KiB)", len(big)>>20, alloc>>10, len(big)/8>>10)
	} else {
		t.Logf("carrying %d MiB allocated %d KiB in the agents' halves", len(big)>>20, alloc>>10)
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
			[]string{"-rlptgoD", "--mkpath", "--timeout=30", "node1:/srv/up/", "/srv/up/", "/usr/bin/tandem files pipe --socket /run/tandem/files.sock --token T"},
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

// TestPullUsersTrees: upload directories as users have them. Nested
// subdirectories, names with spaces, unicode, a leading '-', option-like
// names and a newline all arrive byte for byte (no name ever reaches a
// command line); owner, group, mode and mtime are kept, including a
// file owned by the app's user; a destination that does not exist yet is
// created; a declared path that is a symlink is written through to its
// target and stays a symlink.
func TestPullUsersTrees(t *testing.T) {
	p := newPair(t)
	mtime := time.Date(2025, 6, 7, 8, 9, 10, 0, time.UTC)
	names := []string{
		"2026/11/29/photo été.jpg",
		"deep/a/b/c/d/e/f/g.txt",
		"with space/and  two.txt",
		"-rf",
		"--delete",
		"-e sh -c reboot",
		"line\nbreak.txt",
		"日本語/ファイル.png",
		"host:path",
		"*.glob?[x]",
	}
	for i, n := range names {
		write(t, filepath.Join(p.src, n), fmt.Sprintf("content %d", i), 0o640, mtime)
	}
	// Files owned by the app's user (www-data on Debian), as uploads are.
	const appUID, appGID = 33, 33
	asRoot := os.Geteuid() == 0
	if asRoot {
		for _, n := range []string{names[0], "2026", "2026/11", "2026/11/29"} {
			if err := os.Lchown(filepath.Join(p.src, n), appUID, appGID); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The receiver's declared path is a symlink to where the data lives,
	// and that place does not exist yet.
	real := p.dst + ".real"
	if err := os.MkdirAll(filepath.Dir(p.dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, p.dst); err != nil {
		t.Fatal(err)
	}
	if _, err := p.pull(PullOptions{Delete: true}); err == nil {
		t.Log("rsync created the symlink's missing target")
	}
	if err := os.Mkdir(real, 0o755); err != nil && !os.IsExist(err) {
		t.Fatal(err)
	}
	if _, err := p.pull(PullOptions{Delete: true}); err != nil {
		t.Fatalf("pull into a symlinked path: %v", err)
	}
	for i, n := range names {
		got, err := os.ReadFile(filepath.Join(real, n))
		if err != nil || string(got) != fmt.Sprintf("content %d", i) {
			t.Errorf("%q = %q, %v", n, got, err)
			continue
		}
		fi, _ := os.Stat(filepath.Join(real, n))
		if fi.Mode().Perm() != 0o640 || !fi.ModTime().Equal(mtime) {
			t.Errorf("%q: mode %v mtime %v; want 0640, %v", n, fi.Mode(), fi.ModTime(), mtime)
		}
	}
	if fi, err := os.Lstat(p.dst); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the declared path is no longer a symlink: %v, %v", fi, err)
	}
	if asRoot {
		for _, n := range []string{names[0], "2026/11"} {
			fi, err := os.Lstat(filepath.Join(real, n))
			if err != nil {
				t.Fatal(err)
			}
			if st := fi.Sys().(*syscall.Stat_t); st.Uid != appUID || st.Gid != appGID {
				t.Errorf("%q owned by %d:%d; want the app's %d:%d", n, st.Uid, st.Gid, appUID, appGID)
			}
		}
	}
	// No stray temporary files: rsync renamed every one into place.
	var tmp []string
	_ = filepath.WalkDir(real, func(path string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".") && d.Name() != "." {
			tmp = append(tmp, path)
		}
		return nil
	})
	if len(tmp) > 0 {
		t.Errorf("temporary files left behind: %q", tmp)
	}
}

// TestPullMissingDestination: a receiver whose directory does not exist
// yet (the app was never installed or run there) gets it, parents
// included; a source whose directory does not exist yet is an error that
// says so and deletes nothing.
func TestPullMissingDestination(t *testing.T) {
	p := newPair(t)
	if _, err := os.Stat(filepath.Dir(p.dst)); err == nil {
		t.Fatal("the test needs a receiver whose parent directory is missing")
	}
	write(t, filepath.Join(p.src, "sub", "a.txt"), "a", 0o644, time.Now())
	if _, err := p.pull(PullOptions{Delete: true}); err != nil {
		t.Fatalf("pull into a missing directory: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(p.dst, "sub", "a.txt")); err != nil || string(b) != "a" {
		t.Errorf("a.txt = %q, %v", b, err)
	}
}

// TestPullSymlinksStayInside: symlinks are copied as symlinks, never
// followed, on either side. A link in the source's tree pointing outside
// it does not bring the target's content; a link the receiver's copy has
// where the source has a directory is replaced, not written through; a
// deleted link is removed, not its target.
func TestPullSymlinksStayInside(t *testing.T) {
	p := newPair(t)
	base := filepath.Dir(p.src)
	secret := filepath.Join(base, "secret")
	write(t, filepath.Join(secret, "shadow"), "root:$6$hash", 0o600, time.Now())
	victim := filepath.Join(base, "victim")
	write(t, filepath.Join(victim, "keep.txt"), "keep", 0o644, time.Now())
	if err := os.Symlink(secret, filepath.Join(p.src, "evil")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(secret, "shadow"), filepath.Join(p.src, "shadow-link")); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(p.src, "sub", "x.txt"), "x", 0o644, time.Now())
	// The receiver's copy has sub as a link to a directory outside, and a
	// link the source does not have.
	if err := os.MkdirAll(p.dst, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(p.dst, "sub")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(p.dst, "stale-link")); err != nil {
		t.Fatal(err)
	}
	if _, err := p.pull(PullOptions{Delete: true}); err != nil {
		t.Fatalf("pull: %v", err)
	}
	for _, n := range []string{"evil", "shadow-link"} {
		fi, err := os.Lstat(filepath.Join(p.dst, n))
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("%s on the receiver: %v, %v; want a symlink, not the target's content", n, fi, err)
		}
	}
	if fi, err := os.Lstat(filepath.Join(p.dst, "sub")); err != nil || !fi.IsDir() {
		t.Errorf("sub on the receiver: %v, %v; want a real directory in place of the link", fi, err)
	}
	ents, _ := os.ReadDir(victim)
	if len(ents) != 1 || ents[0].Name() != "keep.txt" {
		t.Errorf("the directory outside the path changed through a link: %v", ents)
	}
	if _, err := os.Lstat(filepath.Join(p.dst, "stale-link")); err == nil {
		t.Error("a link the source lacks was kept")
	}
	if b, err := os.ReadFile(filepath.Join(victim, "keep.txt")); err != nil || string(b) != "keep" {
		t.Errorf("deleting a link touched its target: %q, %v", b, err)
	}
}

// TestExcludesFromNames: the exclude patterns built from file names (the
// source's SQLite databases, escaped and anchored) leave exactly those
// files out, whatever their names hold.
func TestExcludesFromNames(t *testing.T) {
	p := newPair(t)
	skipped := []string{`-x [1].db`, "line\nbreak.db", `+ plus.db`, `!`, `a*b?.db`}
	kept := []string{`-x 1.db`, `axb1.db`, `plus.db`, `keep.txt`}
	for _, n := range append(slices.Clone(skipped), kept...) {
		write(t, filepath.Join(p.src, n), n, 0o644, time.Now())
	}
	// SkipPatterns adds each database's journals; they are excluded too.
	if _, err := p.pull(PullOptions{Delete: true, Exclude: files.SkipPatterns(skipped)}); err != nil {
		t.Fatal(err)
	}
	for _, n := range skipped {
		if _, err := os.Lstat(filepath.Join(p.dst, n)); err == nil {
			t.Errorf("%q was copied", n)
		}
	}
	for _, n := range kept {
		if _, err := os.Lstat(filepath.Join(p.dst, n)); err != nil {
			t.Errorf("%q was left out: %v", n, err)
		}
	}
}

func TestPullFromMissingSource(t *testing.T) {
	p := newPair(t)
	write(t, filepath.Join(p.dst, "mine.txt"), "mine", 0o644, time.Now())
	if err := os.Remove(p.src); err != nil {
		t.Fatal(err)
	}
	_, err := p.pull(PullOptions{Delete: true})
	if err == nil {
		t.Fatal("a pull from a source without the directory succeeded")
	}
	if !strings.Contains(err.Error(), "does not exist on the source yet") {
		t.Errorf("pull from a missing source: %v; want it to say the source lacks the directory", err)
	}
	if _, err := os.Stat(filepath.Join(p.dst, "mine.txt")); err != nil {
		t.Errorf("a failed pull deleted the receiver's file: %v", err)
	}
}

// TestServeConnRefuses: what a member that passed the listener's checks
// may still not get from a source's stream: a push (rsync --server
// without --sender, which would write into the source's copy), a request
// the source's controller refuses (a witness, a stale epoch, an undeclared
// path), or a header that is not one.
func TestServeConnRefuses(t *testing.T) {
	local := t.TempDir()
	push := []string{"rsync", "--server", "-logDtpre.iLsfxCIvu", "--delete", ".", "/srv/dir/"}
	pull := []string{"rsync", "--server", "--sender", "-logDtpre.iLsfxCIvu", ".", "/srv/dir/"}
	refuse := func(peer string, r Request) (string, func() bool, error) {
		return "", nil, fmt.Errorf("%s is not an app node of this cluster", peer)
	}
	allow := func(peer string, r Request) (string, func() bool, error) {
		return local, func() bool { return true }, nil
	}
	tests := []struct {
		name   string
		header string
		auth   Authorize
		want   string
	}{
		{"a push", mustJSON(t, Request{Dir: "/srv/dir", Epoch: 1, Argv: push}), allow, "only 'rsync --server --sender"},
		{"refused by the controller", mustJSON(t, Request{Dir: "/srv/dir", Epoch: 1, Argv: pull}), refuse, "not an app node"},
		{"a daemon", mustJSON(t, Request{Dir: "/srv/dir", Epoch: 1, Argv: []string{"rsync", "--daemon", "--server", "--sender", ".", "/"}}), allow, "only 'rsync --server --sender"},
		{"not JSON", "GET / HTTP/1.1", allow, ""},
		{"a header without end", strings.Repeat("x", maxHeader+10), allow, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer b.Close()
			errc := make(chan error, 1)
			go func() {
				errc <- (&Transport{}).ServeConn(a, "peer", tt.auth)
				a.Close() // as the cluster's listener does
			}()
			go func() { _, _ = io.WriteString(b, tt.header+"\n") }()
			_ = b.SetReadDeadline(time.Now().Add(5 * time.Second))
			line, _ := bufio.NewReader(b).ReadString('\n')
			if err := <-errc; err == nil {
				t.Fatal("served")
			}
			if tt.want != "" && !strings.Contains(line, tt.want) {
				t.Errorf("answer %q; want it to say %q", line, tt.want)
			}
			if ents, _ := os.ReadDir(local); len(ents) != 0 {
				t.Errorf("the source's directory changed: %v", ents)
			}
		})
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// FuzzServeConnHeader: whatever a member sends as its request, the source
// answers without panicking, and serves only what the controller and
// ServerArgs allow (here the controller refuses everything).
func FuzzServeConnHeader(f *testing.F) {
	f.Add([]byte(`{"dir":"/srv/dir","epoch":1,"argv":["rsync","--server","--sender","-logDtpre.iLsfxCIvu",".","/srv/dir/"]}` + "\n"))
	f.Add([]byte("{\"dir\":\"/srv/dir\"\n"))
	f.Add([]byte("\n"))
	f.Fuzz(func(t *testing.T, header []byte) {
		a, b := net.Pipe()
		defer b.Close()
		errc := make(chan error, 1)
		go func() {
			errc <- (&Transport{}).ServeConn(a, "peer", func(peer string, r Request) (string, func() bool, error) {
				if r.Dir != filepath.Clean(r.Dir) {
					t.Errorf("the controller was asked about an unclean path %q", r.Dir)
				}
				return "", nil, errors.New("refused")
			})
			a.Close()
		}()
		go func() { _, _ = b.Write(header); _, _ = b.Write([]byte("\n")) }()
		_ = b.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.Copy(io.Discard, b)
		if err := <-errc; err == nil {
			t.Fatalf("served %q", header)
		}
	})
}

// TestBandwidthLimit: [[files]] bwlimit slows a transfer down to about the
// limit (KiB/s).
func TestBandwidthLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("takes seconds")
	}
	p := newPair(t)
	data := make([]byte, 2<<20)
	_, _ = rand.Read(data) // incompressible
	if err := os.WriteFile(filepath.Join(p.src, "two-mib.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := p.pull(PullOptions{BWLimit: 1024}); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	// 2 MiB at 1 MiB/s: about 2 s (rsync lets the first burst through).
	if took < 1500*time.Millisecond {
		t.Errorf("2 MiB at bwlimit=1024 KiB/s took %v; want about 2s", took)
	}
	t.Logf("2 MiB at bwlimit=1024 KiB/s took %v", took.Round(time.Millisecond))
}

func TestRsyncMessage(t *testing.T) {
	tests := []struct{ stderr, want string }{
		{"rsync: [Receiver] mkdir \"/x/y\" failed: No such file or directory (2)\nrsync error: error in file IO (code 11) at main.c(808) [Receiver=3.2.7]\n",
			`rsync: [Receiver] mkdir "/x/y" failed: No such file or directory (2); rsync error: error in file IO (code 11) at main.c(808) [Receiver=3.2.7]`},
		{"rsync error: some files/attrs were not transferred (see previous errors) (code 23) at main.c(1865) [generator=3.2.7]\n",
			"rsync error: some files/attrs were not transferred (see previous errors) (code 23) at main.c(1865) [generator=3.2.7]; the source's log names the files (journalctl -u tandem there)"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := rsyncMessage(tt.stderr); got != tt.want {
			t.Errorf("rsyncMessage(%q) = %q; want %q", tt.stderr, got, tt.want)
		}
	}
}

// TestPullFromQuarantine is the transfer of 'tandem files restore': the
// holder pulls a node's quarantine and adds only what its copy lacks,
// replacing and deleting nothing.
func TestPullFromQuarantine(t *testing.T) {
	p := newPair(t)
	q := p.src + ".quarantine-4"
	mtime := time.Now().Add(-time.Hour)
	write(t, filepath.Join(q, "kept.jpg"), "the old version", 0o644, mtime)
	write(t, filepath.Join(q, "2026", "last one.jpg"), "only the old holder had it", 0o640, mtime)
	write(t, filepath.Join(p.dst, "kept.jpg"), "the holder's version", 0o644, time.Now())
	write(t, filepath.Join(p.dst, "other.jpg"), "the holder's other file", 0o644, time.Now())
	// The app's directory is group-writable; the quarantine is root's
	// and closed: the restore must not carry that over (the lab's e2e
	// found the app unable to upload after a restore that did).
	if err := os.Chmod(p.dst, 0o775); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(q, 0o700); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(p.dst)
	st, err := p.pull(PullOptions{FromQuarantine: 4, IgnoreExisting: true})
	if err != nil {
		t.Fatal(err)
	}
	if after, _ := os.Stat(p.dst); after.Mode() != before.Mode() {
		t.Errorf("the restore changed the directory's mode: %v -> %v", before.Mode(), after.Mode())
	}
	for name, want := range map[string]string{"kept.jpg": "the holder's version", "other.jpg": "the holder's other file", "2026/last one.jpg": "only the old holder had it"} {
		if b, err := os.ReadFile(filepath.Join(p.dst, name)); err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", name, b, err, want)
		}
	}
	if st.Files != 1 {
		t.Errorf("stats = %+v; want 1 file restored", st)
	}
}
