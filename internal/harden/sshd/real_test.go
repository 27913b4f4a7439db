package sshd

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tandem-ha/tandem/internal/harden/check"
	"github.com/tandem-ha/tandem/internal/harden/internal/hostrun"
)

// TestRealSSHD runs the area against a real Debian system's sshd: the
// tree at TANDEM_SSHD_ROOT (a Debian 12 root whose /etc/ssh, /home and
// /root the caller made writable, for example tmpfs mounts over a lab
// image in a private mount namespace), with commands run by chroot. It
// writes the plan's drop-in there, checks it with the real sshd -t, and
// audits the effective values sshd -T then prints. With TANDEM_SSHD_KEY
// (the private key of the root's "admin" and root) it also starts that
// sshd on 127.0.0.1:22 of the caller's private network namespace and logs
// in with golang.org/x/crypto/ssh. It runs only when asked, through
// testdata/real-sshd.sh.
func TestRealSSHD(t *testing.T) {
	root := os.Getenv("TANDEM_SSHD_ROOT")
	if root == "" {
		t.Skip("set TANDEM_SSHD_ROOT to a prepared Debian root")
	}
	run := func(ctx context.Context, argv ...string) ([]byte, error) {
		return hostrun.Exec(ctx, append([]string{"chroot", root}, argv...)...)
	}
	a := New(Options{Root: root, Run: run})
	ctx := context.Background()
	p, err := a.Plan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Files) != 1 {
		t.Fatalf("plan %+v", p)
	}
	t.Logf("drop-in:\n%s", p.Files[0].Content)
	if err := os.WriteFile(filepath.Join(root, p.Files[0].Path), p.Files[0].Content, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range p.Validate {
		if out, err := run(ctx, cmd...); err != nil {
			t.Fatalf("%q: %v\n%s", cmd, err, out)
		}
	}
	for _, r := range a.Audit(ctx) {
		t.Logf("%-26s %-5s %s", r.ID, r.Status, r.Current)
		if r.Status != check.Pass {
			t.Errorf("%s: %s (%s)", r.ID, r.Status, r.Current)
		}
	}
	if p2, err := a.Plan(ctx); err != nil || !p2.Empty() {
		t.Errorf("second plan %+v, %v; want empty", p2, err)
	}
	if keyFile := os.Getenv("TANDEM_SSHD_KEY"); keyFile != "" {
		loginChecks(t, root, keyFile)
	}
}

// loginChecks starts the hardened sshd in the foreground and checks what
// a modern client may and may not do.
func loginChecks(t *testing.T, root, keyFile string) {
	pem, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		t.Fatal(err)
	}
	sshd := exec.Command("chroot", root, "/usr/sbin/sshd", "-D", "-e", "-o", "ListenAddress=127.0.0.1:22")
	sshd.Stderr = os.Stderr
	if err := sshd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = sshd.Process.Kill()
		_ = sshd.Wait()
	})
	const addr = "127.0.0.1:22"
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd does not listen on %s: %v", addr, err)
		}
	}
	if err := loginCheck(addr, "admin", ssh.Config{}, signer, nil); err != nil {
		t.Errorf("the admin's key login with a modern client failed: %v", err)
	}
	for _, kex := range []string{"curve25519-sha256", "curve25519-sha256@libssh.org", "diffie-hellman-group16-sha512"} {
		cfg := ssh.Config{KeyExchanges: []string{kex}, Ciphers: []string{"chacha20-poly1305@openssh.com"}}
		if err := loginCheck(addr, "admin", cfg, signer, nil); err != nil {
			t.Errorf("key exchange %s refused: %v", kex, err)
		}
	}
	asked := false
	if err := loginCheck(addr, "admin", ssh.Config{}, nil, &asked); err == nil || asked {
		t.Errorf("password login: err %v, password asked %v; want refused without sshd offering passwords", err, asked)
	}
	for name, cfg := range map[string]ssh.Config{
		"NIST key exchange":               {KeyExchanges: []string{"ecdh-sha2-nistp256"}},
		"CTR with an encrypt-and-MAC MAC": {Ciphers: []string{"aes128-ctr"}, MACs: []string{"hmac-sha2-256"}},
	} {
		if err := loginCheck(addr, "admin", cfg, signer, nil); err == nil {
			t.Errorf("%s was accepted", name)
		}
	}
	if err := loginCheck(addr, "root", ssh.Config{}, signer, nil); err == nil {
		t.Error("root logged in with a key")
	}
}

// loginCheck logs in to addr as user with the key (nil: with a password,
// setting *asked when the client was ever asked for it, which happens only
// when sshd offers password logins) and runs true.
func loginCheck(addr, user string, cfg ssh.Config, key ssh.Signer, asked *bool) error {
	auth := []ssh.AuthMethod{ssh.PasswordCallback(func() (string, error) { *asked = true; return "not-the-password", nil })}
	if key != nil {
		auth = []ssh.AuthMethod{ssh.PublicKeys(key)}
	}
	client, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{
		Config: cfg, User: user, Auth: auth, Timeout: 10 * time.Second,
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), // only negotiation and authentication are checked
	})
	if err != nil {
		return err
	}
	defer client.Close()
	s, err := client.NewSession()
	if err != nil {
		return err
	}
	defer s.Close()
	return s.Run("true")
}
