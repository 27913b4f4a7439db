package pki

import (
	"crypto"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// DefaultDir is where a node keeps its PKI files.
const DefaultDir = "/var/lib/tandem/pki"

// File names inside the PKI directory. ca.key exists only on app nodes.
const (
	CACertFile   = "ca.crt"
	CAKeyFile    = "ca.key"
	NodeCertFile = "node.crt"
	NodeKeyFile  = "node.key"
)

// Load reads a node's credentials from dir. ca.key is optional.
func Load(dir string) (*Node, error) {
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
	if err != nil {
		return nil, fmt.Errorf("load pki from %s: %w", dir, err)
	}
	return n, nil
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
		{CACertFile, n.CA.CertPEM(), 0o644},
		{NodeCertFile, certPEM(cur.Leaf.Raw), 0o644},
		{NodeKeyFile, key, 0o600},
	}
	if n.CA.Key != nil {
		caKey, err := n.CA.KeyPEM()
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
