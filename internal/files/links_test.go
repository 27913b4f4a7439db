package files

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tandem-ha/tandem/internal/cluster/state"
)

// appUID is www-data's uid on Debian: the app's user, who may write the
// directory that holds the declared path.
const appUID = 33

func TestCheckLinks(t *testing.T) {
	root := os.Geteuid() == 0
	base := t.TempDir()
	mk := func(path string) string {
		p := filepath.Join(base, path)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	link := func(target, path string, uid int) string {
		p := filepath.Join(base, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		if root {
			if err := os.Lchown(p, uid, uid); err != nil {
				t.Fatal(err)
			}
		}
		return p
	}
	real := mk("data/uploads")
	etc := mk("etc")
	link(real, "site/by-admin", 0)
	link("../data/uploads", "site/relative-by-admin", 0)
	link(etc, "site/by-app", appUID)
	link(etc, "app-owned-parent", appUID)
	mk("etc/profile.d")
	link(filepath.Join(base, "site/by-app"), "site/admin-to-app", 0)
	link(filepath.Join(base, "loop/b"), "loop/a", 0)
	link(filepath.Join(base, "loop/a"), "loop/b", 0)

	tests := []struct {
		name   string
		path   string
		ok     bool
		asRoot bool // the case needs links owned by root
	}{
		{"a real directory", real, true, false},
		{"a directory that does not exist yet", filepath.Join(base, "data/later/uploads"), true, false},
		{"the admin's link to the real directory", filepath.Join(base, "site/by-admin"), true, true},
		{"the admin's relative link", filepath.Join(base, "site/relative-by-admin"), true, true},
		{"a path through the admin's link", filepath.Join(base, "site/by-admin/2026"), true, true},
		{"the app's link as the path", filepath.Join(base, "site/by-app"), false, false},
		{"the app's link on the way", filepath.Join(base, "app-owned-parent/profile.d"), false, false},
		{"the admin's link to the app's link", filepath.Join(base, "site/admin-to-app"), false, true},
		{"a loop", filepath.Join(base, "loop/a"), false, true},
		{"a relative path", "srv/uploads", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.asRoot && !root {
				t.Skip("needs root to own the link")
			}
			err := checkLinks(tt.path)
			if (err == nil) != tt.ok {
				t.Fatalf("checkLinks(%s) = %v; want ok=%v", tt.path, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrUnsafePath) {
				t.Errorf("error %v is not ErrUnsafePath", err)
			}
		})
	}
}

// TestRedirectedPathsAreRefused: the app's user swaps the declared path,
// or the quarantine beside it, for a link to a system directory. Root's
// rsync must neither write uploads (or the copy's old files) there on a
// receiver, nor send from there on the source; the refusal is reported.
func TestRedirectedPathsAreRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a link to the app's user")
	}
	base := t.TempDir()
	etc := filepath.Join(base, "etc")
	if err := os.MkdirAll(filepath.Join(etc, "profile.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	uploads := filepath.Join(base, "site", "uploads")
	if err := os.MkdirAll(uploads, 0o755); err != nil {
		t.Fatal(err)
	}
	m := state.New()
	for i, cmd := range []state.Command{
		state.AddMember{Member: state.Member{Name: "a", Role: state.RoleApp, Address: "a"}},
		state.AddMember{Member: state.Member{Name: "b", Role: state.RoleApp, Address: "b"}},
		state.SetHolder{Node: "a", Active: true, Reason: "test"},
	} {
		b, _ := state.Encode(cmd)
		if err := m.Apply(uint64(i+1), b); err != nil {
			t.Fatal(err)
		}
	}
	var pulls []Pull
	newCtrl := func(name string, held Held) *Controller {
		c, err := New(Options{Name: name, Specs: []Spec{{Dir: uploads, Delete: true}}, Machine: m,
			Held: func() Held { return held }, Transfer: recordTransfer{&pulls}, Peers: fakePeersNone{}})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	recv := newCtrl("b", Held{})
	src := newCtrl("a", Held{Holding: true, Epoch: 1})
	appLink := func(target, path string) {
		if err := os.Symlink(target, path); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(path, appUID, appUID); err != nil {
			t.Fatal(err)
		}
	}

	// The control: nothing redirected, the pull and the serving happen.
	if _, err := recv.Receive(t.Context(), "a", SyncRequest{Dir: uploads, Epoch: 1}); err != nil || len(pulls) != 1 {
		t.Fatalf("the control pull: %v (%d pulls)", err, len(pulls))
	}
	if _, err := src.Serve("b", uploads, 1); err != nil {
		t.Fatalf("the control serve: %v", err)
	}

	// The quarantine of the next epoch is a link to etc/profile.d: the
	// receiver's old files (whose names and content uploads chose) would
	// land there as root. b follows a new source in epoch 2.
	if err := m.Apply(4, mustEncode(t, state.SetHolder{Node: "a", PrevEpoch: 1, Active: true, Reason: "test"})); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(QuarantineRoot(uploads), 0o755); err != nil {
		t.Fatal(err)
	}
	appLink(filepath.Join(etc, "profile.d"), QuarantineDir(uploads, 2))
	pulls = nil
	_, err := recv.Receive(t.Context(), "a", SyncRequest{Dir: uploads, Epoch: 2})
	if !errors.Is(err, ErrUnsafePath) || len(pulls) != 0 {
		t.Errorf("pull with a redirected quarantine: %v (%d pulls); want refused", err, len(pulls))
	}
	if st := recv.Status().Paths[0]; !strings.Contains(st.PullError, "not root") {
		t.Errorf("status pull error = %q; want the refusal reported", st.PullError)
	}

	// The declared path itself is swapped for a link to etc.
	if err := os.Rename(uploads, uploads+".moved"); err != nil {
		t.Fatal(err)
	}
	appLink(etc, uploads)
	_, err = recv.Receive(t.Context(), "a", SyncRequest{Dir: uploads, Epoch: 2})
	if !errors.Is(err, ErrUnsafePath) || len(pulls) != 0 {
		t.Errorf("pull into a redirected path: %v (%d pulls); want refused", err, len(pulls))
	}
	src2 := newCtrl("a", Held{Holding: true, Epoch: 2})
	if _, err := src2.Serve("b", uploads, 2); !errors.Is(err, ErrUnsafePath) {
		t.Errorf("serving a redirected path: %v; want refused", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(etc, "profile.d")); len(ents) != 0 {
		t.Errorf("something was written into etc/profile.d: %v", ents)
	}
}

type fakePeersNone struct{}

func (fakePeersNone) Sync(context.Context, string, SyncRequest) (SyncReply, error) {
	return SyncReply{}, errors.New("no peers in this test")
}

func mustEncode(t *testing.T, cmd state.Command) []byte {
	t.Helper()
	b, err := state.Encode(cmd)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
