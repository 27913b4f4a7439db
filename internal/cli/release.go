package cli

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tandem-ha/tandem/internal/artifact"
)

// signingKeyEnv is where `tandem release sign` finds the private key when
// no --key-file is given: the CI variable the pipelines of 'tandem ci init'
// pass.
const signingKeyEnv = "TANDEM_SIGNING_KEY"

func newReleaseCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "release",
		Short: "Make and check release signing keys and signatures",
		Long: `A cluster that pins signing keys ([deploy] signing_keys) installs only a .deb
whose .sig was made by one of them, so a leaked CI token cannot ship code.

  tandem release keygen --key-file ci.key    # pin the printed public key
  tandem release sign dist/site_1.0_all.deb --key-file ci.key
  tandem release verify dist/site_1.0_all.deb --key ed25519:...

The .sig holds the base64 ed25519 signature of "tandem-release-v1 sha256:"
and the .deb's hex SHA-256.`,
	}
	cmd.AddCommand(newReleaseKeygenCmd(e), newReleaseSignCmd(e), newReleaseVerifyCmd(e))
	return cmd
}

func newReleaseKeygenCmd(e *env) *cobra.Command {
	var keyFile string
	var force, asJSON bool
	cmd := &cobra.Command{
		Use:   "keygen [--key-file FILE]",
		Short: "Make a release signing key pair",
		Long: `Makes an ed25519 key pair. The public key (ed25519:...) goes into every
node's [deploy] signing_keys. The private key (ed25519-private:...) goes into
your CI as the masked secret variable TANDEM_SIGNING_KEY, never into tandem's
configuration.

With --key-file the private key is written there (mode 0600; an existing file
is kept unless --force) and only the public key is printed; without it both
are printed, to be pasted into CI at once and not kept.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			pub, priv, err := artifact.GenerateKey()
			if err != nil {
				return err
			}
			if keyFile != "" {
				flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
				if force {
					flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
				}
				f, err := os.OpenFile(keyFile, flags, 0o600)
				if errors.Is(err, os.ErrExist) {
					return &UsageError{Err: fmt.Errorf("%s already exists; pass --force to replace the key in it", keyFile)}
				}
				if err != nil {
					return fmt.Errorf("write the private key: %w", err)
				}
				_, werr := fmt.Fprintln(f, priv)
				if cerr := f.Close(); werr == nil {
					werr = cerr
				}
				if werr != nil {
					return fmt.Errorf("write the private key to %s: %w", keyFile, werr)
				}
				priv = ""
			}
			if asJSON {
				return json.NewEncoder(e.stdout).Encode(struct {
					Public  string `json:"public"`
					Private string `json:"private,omitempty"`
					KeyFile string `json:"key_file,omitempty"`
				}{pub, priv, keyFile})
			}
			fmt.Fprintf(e.stdout, "public  %s\n", pub)
			if priv != "" {
				fmt.Fprintf(e.stdout, "private %s\n", priv)
			}
			fmt.Fprintf(e.stderr, "Pin the public key on every node: [deploy] signing_keys = [%q]\n", pub)
			if keyFile != "" {
				fmt.Fprintf(e.stderr, "The private key is in %s: store it as the CI secret %s, then delete the file.\n", keyFile, signingKeyEnv)
			} else {
				fmt.Fprintf(e.stderr, "Store the private key as the CI secret %s; do not keep it elsewhere.\n", signingKeyEnv)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&keyFile, "key-file", "", "write the private key to this file (mode 0600) instead of printing it")
	cmd.Flags().BoolVar(&force, "force", false, "replace an existing --key-file")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print {\"public\", \"private\", \"key_file\"} as JSON")
	return cmd
}

func newReleaseSignCmd(e *env) *cobra.Command {
	var keyFile string
	cmd := &cobra.Command{
		Use:   "sign FILE.deb... [--key-file FILE]",
		Short: "Sign .deb files: writes FILE.deb.sig next to each",
		Long: `Writes FILE.deb.sig next to each FILE.deb, signed with the private key in
--key-file, or else in the environment variable TANDEM_SIGNING_KEY (as CI
passes a secret). Publish the .sig next to the .deb and its .sha256.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			text := os.Getenv(signingKeyEnv)
			origin := "$" + signingKeyEnv
			if keyFile != "" {
				b, err := os.ReadFile(keyFile)
				if err != nil {
					return &UsageError{Err: fmt.Errorf("read the private key: %w", err)}
				}
				text, origin = string(b), keyFile
			}
			if strings.TrimSpace(text) == "" {
				return &UsageError{Err: fmt.Errorf("no private key: pass --key-file or set %s (make one with 'tandem release keygen')", signingKeyEnv)}
			}
			priv, err := artifact.ParsePrivateKey(text)
			if err != nil {
				return &UsageError{Err: fmt.Errorf("%s: %w", origin, err)}
			}
			for _, path := range args {
				if !strings.HasSuffix(path, ".deb") {
					return &UsageError{Err: fmt.Errorf("%s is not a .deb file", path)}
				}
				digest, err := artifact.FileSHA256(path)
				if err != nil {
					return fmt.Errorf("sign %s: %w", path, err)
				}
				sig, err := artifact.Sign(priv, digest)
				if err != nil {
					return fmt.Errorf("sign %s: %w", path, err)
				}
				if err := os.WriteFile(path+".sig", sig, 0o644); err != nil {
					return fmt.Errorf("sign %s: %w", path, err)
				}
				fmt.Fprintf(e.stdout, "wrote %s.sig (key %s)\n", path, artifact.FormatPublicKey(priv.Public().(ed25519.PublicKey)))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&keyFile, "key-file", "", "file holding the private key (default: $"+signingKeyEnv+")")
	return cmd
}

func newReleaseVerifyCmd(e *env) *cobra.Command {
	var keys []string
	cmd := &cobra.Command{
		Use:   "verify FILE.deb --key ed25519:... [--key ...]",
		Short: "Check FILE.deb.sig against pinned public keys",
		Long: `Checks FILE.deb.sig (and FILE.deb.sha256 when present) as a node does
before installing: the signature must be made by one of the --key public keys
over the .deb's SHA-256. Exits 1 when it is not.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(keys) == 0 {
				return &UsageError{Err: errors.New("name at least one public key with --key ed25519:<base64>")}
			}
			var pubs []ed25519.PublicKey
			for _, k := range keys {
				p, err := artifact.ParsePublicKey(k)
				if err != nil {
					return &UsageError{Err: err}
				}
				pubs = append(pubs, p)
			}
			path := args[0]
			digest, err := artifact.FileSHA256(path)
			if err != nil {
				return err
			}
			if sum, err := os.ReadFile(path + ".sha256"); err == nil {
				want, err := artifact.ParseChecksum(sum, baseName(path))
				if err != nil {
					return fmt.Errorf("%s.sha256: %w", path, err)
				}
				if want != digest {
					return fmt.Errorf("%s.sha256 says %s, the file's SHA-256 is %s", path, want, digest)
				}
			}
			sig, err := os.ReadFile(path + ".sig")
			if err != nil {
				return fmt.Errorf("read the signature: %w (sign with 'tandem release sign')", err)
			}
			if err := artifact.VerifySignature(sig, digest, pubs); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			_, err = fmt.Fprintf(e.stdout, "%s: good signature (sha256 %s)\n", path, digest)
			return err
		},
	}
	cmd.Flags().StringArrayVar(&keys, "key", nil, "pinned public key, ed25519:... (repeatable)")
	return cmd
}

func baseName(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[i+1:]
	}
	return p
}
