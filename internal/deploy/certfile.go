package deploy

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// certFiles serves the webhook listener's certificate from its files and
// picks up a renewed pair (certbot, an ACME client) at the next handshake
// after the files change, so a renewal needs no restart of the agent.
type certFiles struct {
	certFile, keyFile string
	log               *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	certMod time.Time
	keyMod  time.Time
}

// loadCertFiles reads the pair once; a pair that does not load is an error
// at start, naming the files.
func loadCertFiles(certFile, keyFile string, log *slog.Logger) (*certFiles, error) {
	c := &certFiles{certFile: certFile, keyFile: keyFile, log: log}
	if err := c.reload(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *certFiles) modTimes() (time.Time, time.Time, error) {
	ci, err := os.Stat(c.certFile)
	if err != nil {
		return time.Time{}, time.Time{}, err
	}
	ki, err := os.Stat(c.keyFile)
	if err != nil {
		return time.Time{}, time.Time{}, err
	}
	return ci.ModTime(), ki.ModTime(), nil
}

// reload loads the pair when either file changed since the last load.
func (c *certFiles) reload() error {
	cm, km, err := c.modTimes()
	if err != nil {
		return fmt.Errorf("webhook certificate: %w (deploy.tls_cert, deploy.tls_key)", err)
	}
	if c.cert != nil && cm.Equal(c.certMod) && km.Equal(c.keyMod) {
		return nil
	}
	pair, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("webhook certificate %s with key %s: %w (deploy.tls_cert, deploy.tls_key)", c.certFile, c.keyFile, err)
	}
	c.cert, c.certMod, c.keyMod = &pair, cm, km
	return nil
}

// getCertificate is the listener's tls.Config.GetCertificate. While a
// renewal is half written (the certificate replaced, the key not yet) the
// pair does not load: the last good one is served and the next handshake
// tries again.
func (c *certFiles) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.reload(); err != nil {
		c.log.Warn("webhook certificate not reloaded; serving the previous one", "err", err)
	}
	return c.cert, nil
}
