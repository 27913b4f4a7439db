package sshd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tandem-ha/tandem/internal/harden/check"
)

// host is a fake Debian 12 host: files under a temp root, and the output
// of sshd -T and ssh -Q.
type host struct {
	t       *testing.T
	root    string
	eff     map[string]string // sshd -T lines replaced: keyword -> value
	sshdT   string            // when set, sshd -T prints exactly this
	sshdErr error
	queries map[string]string // ssh -Q NAME -> output; absent means the testdata file
	qErr    error
	calls   [][]string
}

const debianMain = `Include /etc/ssh/sshd_config.d/*.conf
KbdInteractiveAuthentication no
UsePAM yes
X11Forwarding yes
PrintMotd no
AcceptEnv LANG LC_*
Subsystem	sftp	/usr/lib/openssh/sftp-server
`

const edKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE0Qm7ss3Kx9LJ0s0K5Zq5aL1mYH1oV9kJtqjW0Jx3Zm admin@example.org\n"

func newHost(t *testing.T) *host {
	t.Helper()
	h := &host{t: t, root: t.TempDir(), eff: map[string]string{}, queries: map[string]string{}}
	h.write("/usr/sbin/sshd", "ELF")
	h.write("/etc/ssh/sshd_config", debianMain)
	h.write("/etc/passwd", "root:x:0:0:root:/root:/bin/bash\n"+
		"daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"+
		"sshd:x:100:65534::/run/sshd:/usr/sbin/nologin\n"+
		"admin:x:1000:1000:Admin,,,:/home/admin:/bin/bash\n"+
		"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
	for _, k := range []string{"rsa", "ecdsa", "ed25519"} {
		typ := map[string]string{"rsa": "ssh-rsa", "ecdsa": "ecdsa-sha2-nistp256", "ed25519": "ssh-ed25519"}[k]
		h.write("/etc/ssh/ssh_host_"+k+"_key.pub", typ+" AAAAfake root@node\n")
	}
	return h
}

func (h *host) write(path, content string) {
	h.t.Helper()
	p := filepath.Join(h.root, path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

func (h *host) remove(path string) {
	h.t.Helper()
	if err := os.Remove(filepath.Join(h.root, path)); err != nil {
		h.t.Fatal(err)
	}
}

func testdata(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// effective is sshd -T's output: Debian 12's defaults with h.eff's lines
// replaced (an empty value drops the keyword).
func (h *host) effective() string {
	if h.sshdT != "" {
		return h.sshdT
	}
	var b strings.Builder
	for l := range strings.SplitSeq(testdata(h.t, "sshd-T-debian12.txt"), "\n") {
		key, _, _ := strings.Cut(l, " ")
		if v, ok := h.eff[key]; ok {
			if v != "" {
				fmt.Fprintf(&b, "%s %s\n", key, v)
			}
			continue
		}
		if l != "" {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func (h *host) run(_ context.Context, argv ...string) ([]byte, error) {
	h.calls = append(h.calls, argv)
	switch {
	case slices.Equal(argv, []string{"sshd", "-T"}):
		if h.sshdErr != nil {
			return nil, h.sshdErr
		}
		return []byte(h.effective()), nil
	case len(argv) == 3 && argv[0] == "ssh" && argv[1] == "-Q":
		if h.qErr != nil {
			return nil, h.qErr
		}
		if out, ok := h.queries[argv[2]]; ok {
			return []byte(out), nil
		}
		return []byte(testdata(h.t, "ssh-Q-"+argv[2]+".txt")), nil
	}
	return nil, fmt.Errorf("unexpected command %q", argv)
}

func (h *host) area(port int) *Area {
	return New(Options{Root: h.root, Run: h.run, Port: port})
}

// hardened is sshd -T after tandem's drop-in with an admin key.
func (h *host) hardened() {
	h.eff["permitrootlogin"] = "no"
	h.eff["passwordauthentication"] = "no"
	h.eff["kbdinteractiveauthentication"] = "no"
	h.eff["kexalgorithms"] = "sntrup761x25519-sha512@openssh.com,curve25519-sha256,curve25519-sha256@libssh.org,diffie-hellman-group16-sha512,diffie-hellman-group18-sha512"
	h.eff["ciphers"] = "chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-gcm@openssh.com,aes256-ctr,aes192-ctr,aes128-ctr"
	h.eff["macs"] = "hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com,umac-128-etm@openssh.com"
	h.eff["hostkeyalgorithms"] = "ssh-ed25519,rsa-sha2-512,rsa-sha2-256"
}

func results(rs []check.Result) map[string]check.Result {
	out := map[string]check.Result{}
	for _, r := range rs {
		out[r.ID] = r
	}
	return out
}

func TestAudit(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(h *host)
		port   int
		want   map[string]check.Status
		substr map[string]string // check ID -> text its Current or Fix holds
	}{
		{
			name:  "Debian 12 defaults, admin has a key",
			setup: func(h *host) { h.write("/home/admin/.ssh/authorized_keys", edKey) },
			want: map[string]check.Status{
				"ssh.admin-has-key": check.Pass, "ssh.root-login": check.Fail, "ssh.password-auth": check.Fail,
				"ssh.kbd-interactive": check.Pass, "ssh.kex": check.Fail, "ssh.ciphers": check.Pass,
				"ssh.macs": check.Fail, "ssh.host-key-algorithms": check.Fail, "ssh.drop-in-effective": check.Pass,
			},
			substr: map[string]string{
				"ssh.root-login": "without-password", "ssh.kex": "ecdh-sha2-nistp256", "ssh.macs": "not allowed: umac-64-etm@openssh.com",
				"ssh.host-key-algorithms": "ecdsa-sha2-nistp256",
			},
		},
		{
			name: "hardened",
			setup: func(h *host) {
				h.write("/home/admin/.ssh/authorized_keys", edKey)
				h.hardened()
			},
			want: map[string]check.Status{
				"ssh.admin-has-key": check.Pass, "ssh.root-login": check.Pass, "ssh.password-auth": check.Pass,
				"ssh.kbd-interactive": check.Pass, "ssh.kex": check.Pass, "ssh.ciphers": check.Pass,
				"ssh.macs": check.Pass, "ssh.host-key-algorithms": check.Pass, "ssh.drop-in-effective": check.Pass,
			},
		},
		{
			name: "no key anywhere: the password checks say why they stay on",
			setup: func(h *host) {
				h.write("/home/admin/.ssh/authorized_keys", "# no keys yet\n\n")
			},
			want: map[string]check.Status{"ssh.admin-has-key": check.Fail, "ssh.password-auth": check.Fail},
			substr: map[string]string{
				"ssh.admin-has-key": "checked: root, admin",
				"ssh.password-auth": "add a key for an admin user, then apply again",
			},
		},
		{
			name: "hidden ciphers and an old MAC",
			setup: func(h *host) {
				h.write("/home/admin/.ssh/authorized_keys", edKey)
				h.hardened()
				h.eff["ciphers"] = "aes256-cbc,chacha20-poly1305@openssh.com"
				h.eff["macs"] = "hmac-sha2-256"
			},
			want:   map[string]check.Status{"ssh.ciphers": check.Fail, "ssh.macs": check.Fail},
			substr: map[string]string{"ssh.ciphers": "not allowed: aes256-cbc", "ssh.macs": "not allowed: hmac-sha2-256"},
		},
		{
			name: "post-quantum hybrid not first",
			setup: func(h *host) {
				h.hardened()
				h.eff["kexalgorithms"] = "curve25519-sha256,sntrup761x25519-sha512@openssh.com"
			},
			want:   map[string]check.Status{"ssh.kex": check.Fail},
			substr: map[string]string{"ssh.kex": "comes before a post-quantum hybrid"},
		},
		{
			name: "policy port",
			setup: func(h *host) {
				h.hardened()
			},
			port:   2222,
			want:   map[string]check.Status{"ssh.port": check.Fail},
			substr: map[string]string{"ssh.port": "22"},
		},
		{
			name: "policy port in effect",
			setup: func(h *host) {
				h.hardened()
				h.eff["port"] = "2222"
			},
			port: 2222,
			want: map[string]check.Status{"ssh.port": check.Pass},
		},
		{
			name: "an earlier drop-in overrides",
			setup: func(h *host) {
				h.write("/home/admin/.ssh/authorized_keys", edKey)
				h.write("/etc/ssh/sshd_config.d/00-a-early.conf", "PasswordAuthentication yes\n")
			},
			want:   map[string]check.Status{"ssh.drop-in-effective": check.Fail},
			substr: map[string]string{"ssh.drop-in-effective": "00-a-early.conf:1 sets passwordauthentication yes before"},
		},
		{
			name: "a later drop-in (cloud-init) does not override",
			setup: func(h *host) {
				h.write("/home/admin/.ssh/authorized_keys", edKey)
				h.write("/etc/ssh/sshd_config.d/50-cloud-init.conf", "PasswordAuthentication yes\n")
			},
			want: map[string]check.Status{"ssh.drop-in-effective": check.Pass},
		},
		{
			name: "a setting above the Include and a Match block",
			setup: func(h *host) {
				h.write("/home/admin/.ssh/authorized_keys", edKey)
				h.write("/etc/ssh/sshd_config", "PermitRootLogin yes\n"+debianMain+"Match User backup\n\tPasswordAuthentication yes\n")
			},
			want: map[string]check.Status{"ssh.drop-in-effective": check.Fail},
			substr: map[string]string{"ssh.drop-in-effective": `sshd_config:1 sets permitrootlogin yes before tandem's drop-in is read (tandem wants no); ` +
				`/etc/ssh/sshd_config:10 sets passwordauthentication yes inside "Match User backup"`},
		},
		{
			name: "a main configuration without the Include",
			setup: func(h *host) {
				h.write("/home/admin/.ssh/authorized_keys", edKey)
				h.write("/etc/ssh/sshd_config", strings.Replace(debianMain, "Include /etc/ssh/sshd_config.d/*.conf\n", "", 1))
			},
			want:   map[string]check.Status{"ssh.drop-in-effective": check.Fail},
			substr: map[string]string{"ssh.drop-in-effective": "does not include /etc/ssh/sshd_config.d/00-tandem.conf"},
		},
		{
			name: "a relative Include inside a Match block",
			setup: func(h *host) {
				h.write("/home/admin/.ssh/authorized_keys", edKey)
				h.write("/etc/ssh/sshd_config", debianMain+"Match Address 192.0.2.0/24\nInclude extra/*.conf\n")
				h.write("/etc/ssh/extra/a.conf", "KbdInteractiveAuthentication yes\n")
			},
			want:   map[string]check.Status{"ssh.drop-in-effective": check.Fail},
			substr: map[string]string{"ssh.drop-in-effective": `/etc/ssh/extra/a.conf:1 sets kbdinteractiveauthentication yes inside "Match Address 192.0.2.0/24"`},
		},
		{
			name: "sshd -T fails",
			setup: func(h *host) {
				h.sshdErr = errors.New("sshd -T: exit status 255: /etc/ssh/sshd_config line 3: Bad configuration option: Foo")
			},
			want:   map[string]check.Status{"ssh.root-login": check.Error, "ssh.kex": check.Error},
			substr: map[string]string{"ssh.root-login": "Bad configuration option"},
		},
		{
			name:   "no /etc/passwd",
			setup:  func(h *host) { h.remove("/etc/passwd") },
			want:   map[string]check.Status{"ssh.admin-has-key": check.Error, "ssh.password-auth": check.Fail},
			substr: map[string]string{"ssh.admin-has-key": "cannot read the users"},
		},
		{
			name: "ssh.service not running",
			setup: func(h *host) {
				h.sshdErr = errors.New("sshd -T: exit status 255: Missing privilege separation directory: /run/sshd")
			},
			want:   map[string]check.Status{"ssh.password-auth": check.Error},
			substr: map[string]string{"ssh.password-auth": "is ssh.service running?"},
		},
		{
			name:   "sshd -T prints something else",
			setup:  func(h *host) { h.sshdT = "port 22\n" },
			want:   map[string]check.Status{"ssh.password-auth": check.Error},
			substr: map[string]string{"ssh.password-auth": "no permitrootlogin line"},
		},
		{
			name:   "sshd not installed",
			setup:  func(h *host) { h.remove("/usr/sbin/sshd") },
			want:   map[string]check.Status{"ssh.root-login": check.Error, "ssh.drop-in-effective": check.Error},
			substr: map[string]string{"ssh.root-login": "not installed"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHost(t)
			tt.setup(h)
			rs := h.area(tt.port).Audit(context.Background())
			got := results(rs)
			wantN := len(auditIDs)
			if tt.port != 0 {
				wantN++
			}
			if len(rs) != wantN || len(got) != wantN {
				t.Errorf("got %d results (%d IDs), want %d", len(rs), len(got), wantN)
			}
			for id, st := range tt.want {
				if got[id].Status != st {
					t.Errorf("%s: %s (current %q), want %s", id, got[id].Status, got[id].Current, st)
				}
			}
			for id, s := range tt.substr {
				if !strings.Contains(got[id].Current+" | "+got[id].Fix, s) {
					t.Errorf("%s: current %q / fix %q lacks %q", id, got[id].Current, got[id].Fix, s)
				}
			}
			for _, r := range rs {
				if r.Title == "" || r.Fix == "" {
					t.Errorf("%s has no title or fix: %+v", r.ID, r)
				}
			}
		})
	}
}

// dropInLines returns the directives a plan's drop-in sets.
func dropInLines(t *testing.T, p check.Plan) map[string]string {
	t.Helper()
	if len(p.Files) != 1 || p.Files[0].Path != DropIn {
		t.Fatalf("plan files %+v, want only %s", p.Files, DropIn)
	}
	out := map[string]string{}
	for l := range strings.SplitSeq(string(p.Files[0].Content), "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		k, v, _ := strings.Cut(l, " ")
		out[k] = v
	}
	return out
}

// TestLockoutGuard: password logins are not turned off while nobody can
// log in with a key, and root login is not turned off while only root can.
func TestLockoutGuard(t *testing.T) {
	tests := []struct {
		name      string
		setup     func(h *host)
		rootLogin string // "" means the drop-in leaves it out
		passwords bool   // the drop-in turns passwords off
	}{
		{"no keys", func(h *host) {}, "", false},
		{"comment-only key file", func(h *host) { h.write("/home/admin/.ssh/authorized_keys", "# ssh-ed25519 AAAA old\n") }, "", false},
		{"admin has a key", func(h *host) { h.write("/home/admin/.ssh/authorized_keys", edKey) }, "no", true},
		{"key with options", func(h *host) {
			h.write("/home/admin/.ssh/authorized_keys2", `from="192.0.2.0/24",no-agent-forwarding `+edKey)
		}, "no", true},
		{"only root has a key", func(h *host) { h.write("/root/.ssh/authorized_keys", edKey) }, "prohibit-password", true},
		{"a nologin user's key does not count", func(h *host) {
			h.write("/etc/passwd", "root:x:0:0:root:/root:/bin/bash\nsvc:x:1001:1001::/home/svc:/usr/sbin/nologin\n")
			h.write("/home/svc/.ssh/authorized_keys", edKey)
		}, "", false},
		{"a system user's key does not count", func(h *host) {
			h.write("/etc/passwd", "root:x:0:0:root:/root:/bin/bash\nbackup:x:34:34:backup:/var/backups:/bin/sh\n")
			h.write("/var/backups/.ssh/authorized_keys", edKey)
		}, "", false},
		{"AuthorizedKeysFile with tokens", func(h *host) {
			h.eff["authorizedkeysfile"] = "/etc/ssh/keys/%u %h/.ssh/other"
			h.write("/etc/ssh/keys/admin", edKey)
		}, "no", true},
		{"AuthorizedKeysFile none", func(h *host) {
			h.eff["authorizedkeysfile"] = "none"
			h.write("/home/admin/.ssh/authorized_keys", edKey)
		}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHost(t)
			tt.setup(h)
			p, err := h.area(0).Plan(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			lines := dropInLines(t, p)
			if lines["PermitRootLogin"] != tt.rootLogin {
				t.Errorf("PermitRootLogin %q, want %q", lines["PermitRootLogin"], tt.rootLogin)
			}
			_, pw := lines["PasswordAuthentication"]
			_, kbd := lines["KbdInteractiveAuthentication"]
			if pw != tt.passwords || kbd != tt.passwords {
				t.Errorf("PasswordAuthentication set %v, KbdInteractiveAuthentication set %v; want %v", pw, kbd, tt.passwords)
			}
			if tt.passwords && (lines["PasswordAuthentication"] != "no" || lines["KbdInteractiveAuthentication"] != "no") {
				t.Errorf("passwords not turned off: %v", lines)
			}
			if !tt.passwords && !strings.Contains(string(p.Files[0].Content), "left as they are: no login user has an authorized key") {
				t.Errorf("the drop-in does not say why passwords stay on:\n%s", p.Files[0].Content)
			}
		})
	}
}

func TestPlan(t *testing.T) {
	h := newHost(t)
	h.write("/home/admin/.ssh/authorized_keys", edKey)
	a := h.area(2222)
	p, err := a.Plan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"PermitRootLogin":              "no",
		"PasswordAuthentication":       "no",
		"KbdInteractiveAuthentication": "no",
		"KexAlgorithms":                "sntrup761x25519-sha512@openssh.com,curve25519-sha256,curve25519-sha256@libssh.org,diffie-hellman-group16-sha512,diffie-hellman-group18-sha512",
		"Ciphers":                      "chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-gcm@openssh.com,aes256-ctr,aes192-ctr,aes128-ctr",
		"MACs":                         "hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com,umac-128-etm@openssh.com",
		"HostKeyAlgorithms":            "ssh-ed25519,rsa-sha2-512,rsa-sha2-256",
		"Port":                         "2222",
	}
	if got := dropInLines(t, p); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("drop-in\n%v\nwant\n%v", got, want)
	}
	if !p.Risky || !slices.EqualFunc(p.Validate, [][]string{{"sshd", "-t"}}, slices.Equal) ||
		!slices.EqualFunc(p.Reload, [][]string{{"systemctl", "reload", "ssh"}}, slices.Equal) || p.Files[0].Mode != 0o644 {
		t.Errorf("plan %+v: want risky, validated by sshd -t, reloaded with systemctl reload ssh, mode 0644", p)
	}
	// Applied: the same plan again changes nothing.
	h.write(DropIn, string(p.Files[0].Content))
	p2, err := a.Plan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !p2.Empty() {
		t.Errorf("second plan %+v, want empty", p2)
	}
	// The drop-in lost a line: the plan restores it.
	h.write(DropIn, strings.Replace(string(p.Files[0].Content), "PermitRootLogin no\n", "", 1))
	if p3, err := a.Plan(context.Background()); err != nil || p3.Empty() {
		t.Errorf("plan after an edit: %+v, %v; want the drop-in rewritten", p3, err)
	}
}

func TestPlanAlgorithmsFollowSSHQ(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(h *host)
		kex     string
		macs    string
		hostKey string // "" means HostKeyAlgorithms left out
	}{
		{
			name: "a newer OpenSSH: ML-KEM first",
			setup: func(h *host) {
				h.queries["kex"] = "mlkem768x25519-sha256\nsntrup761x25519-sha512@openssh.com\ncurve25519-sha256\ncurve25519-sha256@libssh.org\ndiffie-hellman-group16-sha512\ndiffie-hellman-group18-sha512\n"
			},
			kex:     "mlkem768x25519-sha256,sntrup761x25519-sha512@openssh.com,curve25519-sha256,curve25519-sha256@libssh.org,diffie-hellman-group16-sha512,diffie-hellman-group18-sha512",
			macs:    "hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com,umac-128-etm@openssh.com",
			hostKey: "ssh-ed25519,rsa-sha2-512,rsa-sha2-256",
		},
		{
			name: "a build without UMAC: the name is left out",
			setup: func(h *host) {
				h.queries["mac"] = "hmac-sha2-256-etm@openssh.com\nhmac-sha2-512-etm@openssh.com\nhmac-ripemd160\n"
			},
			kex:     "sntrup761x25519-sha512@openssh.com,curve25519-sha256,curve25519-sha256@libssh.org,diffie-hellman-group16-sha512,diffie-hellman-group18-sha512",
			macs:    "hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com",
			hostKey: "ssh-ed25519,rsa-sha2-512,rsa-sha2-256",
		},
		{
			name:    "ssh -Q fails: OpenSSH 9.2's names, no newer ones",
			setup:   func(h *host) { h.qErr = errors.New("ssh: not found") },
			kex:     "sntrup761x25519-sha512@openssh.com,curve25519-sha256,curve25519-sha256@libssh.org,diffie-hellman-group16-sha512,diffie-hellman-group18-sha512",
			macs:    "hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com,umac-128-etm@openssh.com",
			hostKey: "ssh-ed25519,rsa-sha2-512,rsa-sha2-256",
		},
		{
			name: "only an ECDSA host key: HostKeyAlgorithms left alone",
			setup: func(h *host) {
				h.remove("/etc/ssh/ssh_host_rsa_key.pub")
				h.remove("/etc/ssh/ssh_host_ed25519_key.pub")
			},
			kex:  "sntrup761x25519-sha512@openssh.com,curve25519-sha256,curve25519-sha256@libssh.org,diffie-hellman-group16-sha512,diffie-hellman-group18-sha512",
			macs: "hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com,umac-128-etm@openssh.com",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHost(t)
			h.write("/home/admin/.ssh/authorized_keys", edKey)
			tt.setup(h)
			p, err := h.area(0).Plan(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			lines := dropInLines(t, p)
			if lines["KexAlgorithms"] != tt.kex || lines["MACs"] != tt.macs || lines["HostKeyAlgorithms"] != tt.hostKey {
				t.Errorf("kex %q macs %q hostkey %q\nwant kex %q macs %q hostkey %q",
					lines["KexAlgorithms"], lines["MACs"], lines["HostKeyAlgorithms"], tt.kex, tt.macs, tt.hostKey)
			}
			if strings.Contains(string(p.Files[0].Content), "ripemd") {
				t.Errorf("the drop-in names an algorithm outside the policy:\n%s", p.Files[0].Content)
			}
		})
	}
}

func TestPlanErrors(t *testing.T) {
	h := newHost(t)
	h.sshdErr = errors.New("sshd -T: exit status 255: Bad configuration option")
	if _, err := h.area(0).Plan(context.Background()); err == nil || !strings.Contains(err.Error(), "Bad configuration option") {
		t.Errorf("plan when sshd -T fails: %v, want its error", err)
	}
	h = newHost(t)
	h.remove("/usr/sbin/sshd")
	if p, err := h.area(0).Plan(context.Background()); err != nil || !p.Empty() {
		t.Errorf("plan without sshd: %+v, %v; want empty and no error", p, err)
	}
	h = newHost(t)
	h.remove("/etc/passwd")
	if _, err := h.area(0).Plan(context.Background()); err == nil || !strings.Contains(err.Error(), "passwd") {
		t.Errorf("plan without /etc/passwd: %v, want an error naming it", err)
	}
}
