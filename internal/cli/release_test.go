package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Main(args, nil, &out, &errb)
	return code, out.String(), errb.String()
}

func TestReleaseKeygenSignVerify(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "ci.key")
	code, out, errs := run(t, "release", "keygen", "--key-file", keyFile, "--json")
	if code != 0 {
		t.Fatalf("keygen: %d %s", code, errs)
	}
	var kp struct{ Public, Private, KeyFile string }
	if err := json.Unmarshal([]byte(out), &kp); err != nil || !strings.HasPrefix(kp.Public, "ed25519:") || kp.Private != "" {
		t.Fatalf("keygen --json = %q (%v): want the public key only", out, err)
	}
	if st, err := os.Stat(keyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v; want mode 0600", st, err)
	}
	if code, _, errs := run(t, "release", "keygen", "--key-file", keyFile); code != ExitUsage || !strings.Contains(errs, "--force") {
		t.Errorf("keygen over an existing key file: %d %s", code, errs)
	}
	_, other, _ := run(t, "release", "keygen")
	otherPub := strings.Fields(strings.Split(other, "\n")[0])[1]
	otherPriv := strings.Fields(strings.Split(other, "\n")[1])[1]

	deb := filepath.Join(dir, "site_1.0_all.deb")
	if err := os.WriteFile(deb, []byte("a .deb's bytes"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := run(t, "release", "sign", deb, "--key-file", keyFile); code != 0 {
		t.Fatalf("sign: %d %s", code, errs)
	}
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"good", []string{"release", "verify", deb, "--key", kp.Public}, 0, "good signature"},
		{"rotation: either key", []string{"release", "verify", deb, "--key", otherPub, "--key", kp.Public}, 0, "good signature"},
		{"other key", []string{"release", "verify", deb, "--key", otherPub}, ExitError, "none of the 1 pinned keys"},
		{"no key", []string{"release", "verify", deb}, ExitUsage, "--key"},
		{"private key pinned", []string{"release", "verify", deb, "--key", otherPriv}, ExitUsage, "private key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := run(t, tc.args...)
			if code != tc.code || !strings.Contains(out+errs, tc.want) {
				t.Errorf("exit %d, %q; want %d and %q", code, out+errs, tc.code, tc.want)
			}
		})
	}

	// In CI the key comes from the environment.
	t.Setenv(signingKeyEnv, otherPriv)
	if code, _, errs := run(t, "release", "sign", deb); code != 0 {
		t.Fatalf("sign with $%s: %d %s", signingKeyEnv, code, errs)
	}
	if code, _, errs := run(t, "release", "verify", deb, "--key", otherPub); code != 0 {
		t.Errorf("verify after signing with the env key: %d %s", code, errs)
	}
	// A changed .deb no longer verifies.
	if err := os.WriteFile(deb, []byte("tampered"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := run(t, "release", "verify", deb, "--key", otherPub); code != ExitError {
		t.Errorf("a tampered .deb verified (exit %d)", code)
	}
	t.Setenv(signingKeyEnv, "")
	if code, _, errs := run(t, "release", "sign", deb); code != ExitUsage || !strings.Contains(errs, "keygen") {
		t.Errorf("sign without a key: %d %s", code, errs)
	}
}
