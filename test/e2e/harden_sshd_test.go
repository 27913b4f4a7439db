package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tandem-ha/tandem/internal/harden/check"
	"github.com/tandem-ha/tandem/internal/harden/sshd"
	"github.com/tandem-ha/tandem/internal/lab"
	"github.com/tandem-ha/tandem/internal/labprobe"
)

// TestHardenSSHD applies the sshd area's plan on node1 the way apply does
// (the drop-in written, sshd -t, systemctl reload ssh), then checks sshd's
// effective values through the area's audit, and that from the client
// namespace a modern client (golang.org/x/crypto/ssh) still logs in with a
// key while a password, root, and a client offering only NIST curves are
// refused. It puts node1's sshd back as it was.
func TestHardenSSHD(t *testing.T) {
	c := suite(t)
	ctx := testCtx(t, 3*time.Minute)
	const node = "node1"
	root := filepath.Join(lab.DefaultStateDir, c.Name, node, "merged")
	if _, err := os.Stat(filepath.Join(root, "etc/ssh/sshd_config")); err != nil {
		t.Fatalf("node1's root is not at %s: %v", root, err)
	}
	run := func(ctx context.Context, argv ...string) ([]byte, error) {
		r, err := c.Exec(ctx, node, argv...)
		if err != nil {
			return nil, err
		}
		return []byte(r.Stdout), r.Err()
	}

	// An admin with a key, so the lockout guard lets passwords go.
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	authorized := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub)))
	c.MustSh(t, ctx, node, "id hadmin >/dev/null 2>&1 || useradd -m -s /bin/bash hadmin; echo hadmin:secret-pw | chpasswd; "+
		"install -d -o hadmin -m 700 /home/hadmin/.ssh; echo '"+authorized+"' > /home/hadmin/.ssh/authorized_keys; "+
		"chown hadmin /home/hadmin/.ssh/authorized_keys; mkdir -p /root/.ssh; "+
		"if [ -e /root/.ssh/authorized_keys ]; then cp -a /root/.ssh/authorized_keys /root/.ssh/authorized_keys.e2e-saved; fi; "+
		"echo '"+authorized+"' >> /root/.ssh/authorized_keys")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := c.Sh(ctx, node, "rm -f "+sshd.DropIn+" /root/.ssh/authorized_keys; "+
			"if [ -e /root/.ssh/authorized_keys.e2e-saved ]; then mv /root/.ssh/authorized_keys.e2e-saved /root/.ssh/authorized_keys; fi; "+
			"systemctl reload ssh; userdel -rf hadmin"); err != nil {
			t.Errorf("putting node1's sshd back: %v", err)
		}
	})

	area := sshd.New(sshd.Options{Root: root, Run: run})
	plan, err := area.Plan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Files) != 1 || !plan.Risky {
		t.Fatalf("plan %+v: want the drop-in, risky", plan)
	}
	t.Logf("drop-in:\n%s", plan.Files[0].Content)
	tmp := filepath.Join(t.TempDir(), "dropin.conf")
	if err := os.WriteFile(tmp, plan.Files[0].Content, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := c.CopyIn(ctx, tmp, node, plan.Files[0].Path); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range append(plan.Validate, plan.Reload...) {
		if out, err := run(ctx, cmd...); err != nil {
			t.Fatalf("%q: %v\n%s", cmd, err, out)
		}
	}

	// The effective values, from sshd -T.
	for _, r := range area.Audit(ctx) {
		t.Logf("%-26s %-5s %s", r.ID, r.Status, r.Current)
		if r.Status != check.Pass {
			t.Errorf("%s: %s, current %q, want pass", r.ID, r.Status, r.Current)
		}
	}
	if again, err := area.Plan(ctx); err != nil || !again.Empty() {
		t.Errorf("second plan %+v, %v; want empty", again, err)
	}

	// The client namespace's view.
	addr := net.JoinHostPort(lab.NodeAddr(1).String(), "22")
	nsPath := c.NetnsPath(lab.ClientName)
	dial := func(user string, cfg ssh.ClientConfig) error {
		cfg.User = user
		cfg.HostKeyCallback = ssh.InsecureIgnoreHostKey() // the test only checks negotiation and auth
		cfg.Timeout = 10 * time.Second
		conn, err := labprobe.Dial(ctx, nsPath, "tcp", addr)
		if err != nil {
			return fmt.Errorf("dial %s: %w", addr, err)
		}
		sc, chans, reqs, err := ssh.NewClientConn(conn, addr, &cfg)
		if err != nil {
			conn.Close()
			return err
		}
		client := ssh.NewClient(sc, chans, reqs)
		defer client.Close()
		s, err := client.NewSession()
		if err != nil {
			return err
		}
		defer s.Close()
		return s.Run("true")
	}
	key := ssh.ClientConfig{Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}}
	if err := dial("hadmin", key); err != nil {
		t.Errorf("the admin's key login with a modern client failed: %v", err)
	}
	for _, kex := range []string{"curve25519-sha256", "curve25519-sha256@libssh.org", "diffie-hellman-group16-sha512"} {
		cfg := key
		cfg.KeyExchanges = []string{kex}
		cfg.Ciphers = []string{"chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com"}
		cfg.MACs = []string{"hmac-sha2-256-etm@openssh.com"}
		if err := dial("hadmin", cfg); err != nil {
			t.Errorf("key exchange %s refused: %v", kex, err)
		}
	}
	// The client asks for a password only when sshd offers password logins.
	asked := false
	askPassword := ssh.PasswordCallback(func() (string, error) { asked = true; return "secret-pw", nil })
	if err := dial("hadmin", ssh.ClientConfig{Auth: []ssh.AuthMethod{askPassword}}); err == nil || asked {
		t.Errorf("password login: err %v, password asked %v; want refused, sshd offering no passwords", err, asked)
	}
	refused := []struct {
		what string
		user string
		cfg  ssh.ClientConfig
	}{
		{"root with a key", "root", key},
		{"NIST-curve key exchange", "hadmin", ssh.ClientConfig{Auth: key.Auth, Config: ssh.Config{KeyExchanges: []string{"ecdh-sha2-nistp256"}}}},
		{"an encrypt-and-MAC MAC with a CTR cipher", "hadmin", ssh.ClientConfig{Auth: key.Auth, Config: ssh.Config{
			Ciphers: []string{"aes128-ctr"}, MACs: []string{"hmac-sha2-256"}}}},
	}
	for _, r := range refused {
		if err := dial(r.user, r.cfg); err == nil {
			t.Errorf("%s was accepted", r.what)
		} else {
			t.Logf("%s refused: %v", r.what, err)
		}
	}
}
