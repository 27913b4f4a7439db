package pki

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// DefaultDir is where a node keeps its PKI files.
const DefaultDir = "/var/lib/tandem/pki"

// File names inside the PKI directory. ca.key exists only on app nodes.
// During a CA rotation an app node keeps the new CA in ca-next.crt and
// ca-next.key until its own certificate moves to it, and every node keeps
// the CAs it trusts in trusted.pem (absent: ca.crt only).
const (
	CACertFile     = "ca.crt"
	CAKeyFile      = "ca.key"
	NextCACertFile = "ca-next.crt"
	NextCAKeyFile  = "ca-next.key"
	TrustFile      = "trusted.pem"
	NodeCertFile   = "node.crt"
	NodeKeyFile    = "node.key"
)

// Load reads a node's credentials from dir. ca.key is optional, and so are
// the files of a rotation (ca-next.*, trusted.pem): the node's issuing CA
// is whichever of ca.crt and ca-next.crt issued node.crt, so a crash
// between writing the two leaves a node that starts.
func Load(dir string) (*Node, error) {
	n, err := loadNode(dir)
	if err != nil {
		return nil, err
	}
	next, err := loadCA(dir, NextCACertFile, NextCAKeyFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, err
	default:
		n.Hold(next)
	}
	trust := []*x509.Certificate{n.CA().Cert}
	b, err := os.ReadFile(filepath.Join(dir, TrustFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("load pki: %w", err)
	default:
		certs, err := ParseCertsPEM(b)
		if err != nil {
			return nil, fmt.Errorf("load pki from %s: %s: %w", dir, TrustFile, err)
		}
		trust = append(certs, trust...)
	}
	n.SetTrust(trust)
	return n, nil
}

// loadCA reads a CA certificate and, if present, its key.
func loadCA(dir, certFile, keyFile string) (*CA, error) {
	crt, err := os.ReadFile(filepath.Join(dir, certFile))
	if err != nil {
		return nil, fmt.Errorf("load pki: %w", err)
	}
	key, err := os.ReadFile(filepath.Join(dir, keyFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("load pki: %w", err)
	}
	ca, err := ParseCA(crt, key)
	if err != nil {
		return nil, fmt.Errorf("load pki from %s: %s: %w", dir, certFile, err)
	}
	return ca, nil
}

func loadNode(dir string) (*Node, error) {
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("load pki: %w", err)
		}
		return b, nil
	}
	caCert, err := read(CACertFile)
	if err != nil {
		return nil, err
	}
	caKey, err := read(CAKeyFile)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	ca, err := ParseCA(caCert, caKey)
	if err != nil {
		return nil, fmt.Errorf("load pki from %s: %w", dir, err)
	}
	crt, err := read(NodeCertFile)
	if err != nil {
		return nil, err
	}
	key, err := read(NodeKeyFile)
	if err != nil {
		return nil, err
	}
	n, err := NewNode(ca, crt, key)
	if err == nil {
		return n, nil
	}
	// Moved to a rotation's new CA before ca.crt was rewritten: the new CA
	// is in ca-next.crt (app nodes) and trusted.pem.
	var candidates []*CA
	if next, nerr := loadCA(dir, NextCACertFile, NextCAKeyFile); nerr == nil {
		candidates = append(candidates, next)
	}
	if b, rerr := os.ReadFile(filepath.Join(dir, TrustFile)); rerr == nil {
		if certs, perr := ParseCertsPEM(b); perr == nil {
			for _, c := range certs {
				candidates = append(candidates, &CA{Cert: c})
			}
		}
	}
	for _, c := range candidates {
		if moved, nerr := NewNode(c, crt, key); nerr == nil {
			moved.Hold(ca)
			return moved, nil
		}
	}
	return nil, fmt.Errorf("load pki from %s: %w", dir, err)
}

// Exists reports whether dir already holds a node certificate, so init and
// join can refuse to overwrite a node's identity.
func Exists(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, NodeCertFile))
	return err == nil
}

// Save writes the node's credentials to dir (created 0700), each file
// atomically; keys are 0600. ca.key is written only when the node holds it.
func (n *Node) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save pki: %w", err)
	}
	cur := n.Current()
	signer, ok := cur.PrivateKey.(crypto.Signer)
	if !ok {
		return fmt.Errorf("save pki: node key %T cannot sign", cur.PrivateKey)
	}
	key, err := keyPEM(signer)
	if err != nil {
		return fmt.Errorf("save pki: %w", err)
	}
	type file struct {
		name string
		data []byte
		perm fs.FileMode
	}
	files := []file{
		{CACertFile, n.CA().CertPEM(), 0o644},
		{NodeCertFile, certPEM(cur.Leaf.Raw), 0o644},
		{NodeKeyFile, key, 0o600},
	}
	if n.CA().Key != nil {
		caKey, err := n.CA().KeyPEM()
		if err != nil {
			return fmt.Errorf("save pki: %w", err)
		}
		files = append(files, file{CAKeyFile, caKey, 0o600})
	}
	for _, f := range files {
		if err := WriteFileAtomic(filepath.Join(dir, f.name), f.data, f.perm); err != nil {
			return fmt.Errorf("save pki: %w", err)
		}
	}
	return nil
}

// SaveCert writes the certificate in use to dir, after a renewal.
func (n *Node) SaveCert(dir string) error {
	if err := WriteFileAtomic(filepath.Join(dir, NodeCertFile), certPEM(n.Current().Leaf.Raw), 0o644); err != nil {
		return fmt.Errorf("save renewed certificate: %w", err)
	}
	return nil
}

// SaveCA writes the issuing CA (ca.crt, and ca.key when the node holds
// it) to dir, after the node's certificate moved to it.
func (n *Node) SaveCA(dir string) error {
	ca := n.CA()
	if err := WriteFileAtomic(filepath.Join(dir, CACertFile), ca.CertPEM(), 0o644); err != nil {
		return fmt.Errorf("save CA: %w", err)
	}
	if ca.Key == nil {
		if err := os.Remove(filepath.Join(dir, CAKeyFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("save CA: %w", err)
		}
		return nil
	}
	key, err := ca.KeyPEM()
	if err != nil {
		return fmt.Errorf("save CA: %w", err)
	}
	if err := WriteFileAtomic(filepath.Join(dir, CAKeyFile), key, 0o600); err != nil {
		return fmt.Errorf("save CA: %w", err)
	}
	return nil
}

// SaveNext writes a rotation's new CA, with its key, to dir (ca-next.*).
func SaveNext(dir string, ca *CA) error {
	key, err := ca.KeyPEM()
	if err != nil {
		return fmt.Errorf("save the new CA: %w", err)
	}
	if err := WriteFileAtomic(filepath.Join(dir, NextCAKeyFile), key, 0o600); err != nil {
		return fmt.Errorf("save the new CA: %w", err)
	}
	if err := WriteFileAtomic(filepath.Join(dir, NextCACertFile), ca.CertPEM(), 0o644); err != nil {
		return fmt.Errorf("save the new CA: %w", err)
	}
	return nil
}

// RemoveNext removes a finished rotation's ca-next.* from dir.
func RemoveNext(dir string) error {
	for _, f := range []string{NextCAKeyFile, NextCACertFile} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", f, err)
		}
	}
	return nil
}

// SaveTrust writes the trusted CAs to dir (trusted.pem), or removes the
// file when the node trusts its issuing CA only.
func (n *Node) SaveTrust(dir string) error {
	path := filepath.Join(dir, TrustFile)
	certs := n.Trusted()
	if len(certs) == 1 && certs[0].Equal(n.CA().Cert) {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("save trusted CAs: %w", err)
		}
		return nil
	}
	var b []byte
	for _, c := range certs {
		b = append(b, certPEM(c.Raw)...)
	}
	if err := WriteFileAtomic(path, b, 0o644); err != nil {
		return fmt.Errorf("save trusted CAs: %w", err)
	}
	return nil
}

// WriteFileAtomic writes data to path through a temporary file in the same
// directory that is synced and renamed over path, then syncs the directory,
// so a crash leaves either the old or the new file.
func WriteFileAtomic(path string, data []byte, perm fs.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	// Set the mode before any secret byte is written.
	if err = f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer d.Close()
	if err = d.Sync(); err != nil {
		return fmt.Errorf("write %s: sync dir: %w", path, err)
	}
	return nil
}
