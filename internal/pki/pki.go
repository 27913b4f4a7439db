// Package pki holds tandem's cluster PKI: the cluster CA, node certificates,
// the files they live in, the mutual-TLS configurations built from them, and
// join tokens that pin the CA's public-key hash.
//
// Every key is ECDSA P-256. The CA is self-signed and valid for ten years;
// node certificates carry the node name as CN and DNS SAN, the node's IP SANs,
// and both server and client extended key usages, so the same certificate
// serves the node's listener and authenticates its outgoing calls. Node
// certificates are short-lived (NodeValidity) and renewed with the same
// key (Node.Replace); the TLS configurations pick up a renewed certificate
// without a restart.
//
// During a CA rotation a node trusts two CAs and moves its certificate
// from the old to the new one (SetTrust, Hold, Replace); the TLS
// configurations read the trusted set at each handshake.
//
// A chain to the cluster CA proves only that the certificate was issued
// by someone holding the CA key, which every app node does. Who is a
// member, and with which key, is the cluster's state: the cluster package
// checks each peer's name and key (Hash) against it.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Validity of the CA and of node certificates. Node certificates are
// renewed when a third of their validity is left (NeedsRenewal).
const (
	CAValidity   = 10 * 365 * 24 * time.Hour
	NodeValidity = 30 * 24 * time.Hour
	// clockSkew backdates NotBefore so a node whose clock is slightly behind
	// the signer's still accepts a fresh certificate.
	clockSkew = time.Hour
)

// HashPrefix starts every CA hash.
const HashPrefix = "sha256:"

// Errors callers may test for with errors.Is.
var (
	ErrNoCAKey     = errors.New("this node does not hold the cluster CA key (witnesses never do)")
	ErrCAMismatch  = errors.New("the CA does not match the pinned hash")
	ErrInvalidName = errors.New("invalid node name")
	ErrInvalidCSR  = errors.New("invalid certificate request")
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,61}[A-Za-z0-9])?$`)

// ValidName reports whether name can be a node name: 1 to 63 letters, digits,
// dots and hyphens, starting and ending with a letter or digit.
func ValidName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w %q: use 1-63 letters, digits, '.' or '-', starting and ending with a letter or digit", ErrInvalidName, name)
	}
	return nil
}

// CA is the cluster certificate authority. Key is nil on nodes that only
// know the certificate (witnesses, and joining nodes before they get it).
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// NewCA creates a self-signed cluster CA valid for CAValidity from now.
func NewCA(now time.Time) (*CA, error) {
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: fmt.Sprintf("tandem cluster CA %08x", serial.Uint64()&0xffffffff), Organization: []string{"tandem"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// ParseCA parses a PEM CA certificate and, if keyPEM is not empty, its key.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := ParseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("CA certificate %q is not a CA", cert.Subject.CommonName)
	}
	ca := &CA{Cert: cert}
	if len(keyPEM) > 0 {
		key, err := ParseKeyPEM(keyPEM)
		if err != nil {
			return nil, fmt.Errorf("CA key: %w", err)
		}
		if !samePublicKey(key.Public(), cert.PublicKey) {
			return nil, errors.New("CA key does not match the CA certificate")
		}
		ca.Key = key
	}
	return ca, nil
}

// Hash returns the CA's pin: "sha256:" and the hex SHA-256 of the DER
// SubjectPublicKeyInfo, as kubeadm prints it.
func (ca *CA) Hash() string { return Hash(ca.Cert) }

// Hash returns "sha256:<hex>" over cert's DER SubjectPublicKeyInfo.
func Hash(cert *x509.Certificate) string { return HashKey(cert.RawSubjectPublicKeyInfo) }

// HashKey returns "sha256:<hex>" over a DER SubjectPublicKeyInfo (a
// certificate's or a CSR's): the key pin of a node.
func HashKey(spki []byte) string {
	sum := sha256.Sum256(spki)
	return HashPrefix + hex.EncodeToString(sum[:])
}

// MatchesPin reports whether cert's hash equals pin ("sha256:<hex>").
func MatchesPin(cert *x509.Certificate, pin string) bool {
	return subtle.ConstantTimeCompare([]byte(Hash(cert)), []byte(strings.ToLower(pin))) == 1
}

// CertPEM returns the CA certificate in PEM.
func (ca *CA) CertPEM() []byte { return certPEM(ca.Cert.Raw) }

// KeyPEM returns the CA key in PEM, or ErrNoCAKey.
func (ca *CA) KeyPEM() ([]byte, error) {
	if ca.Key == nil {
		return nil, ErrNoCAKey
	}
	return keyPEM(ca.Key)
}

// Pool returns a pool holding only the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// WithoutKey returns a copy of the CA that does not hold the key.
func (ca *CA) WithoutKey() *CA { return &CA{Cert: ca.Cert} }

// Issue creates a key and a certificate for a node of this cluster, on the
// node holding the CA key (tandem init).
func (ca *CA) Issue(name string, ips []netip.Addr, now time.Time) (*Node, error) {
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	csr, err := NewCSR(key, name, ips)
	if err != nil {
		return nil, err
	}
	crt, err := ca.SignCSR(csr, name, now)
	if err != nil {
		return nil, err
	}
	kp, err := keyPEM(key)
	if err != nil {
		return nil, err
	}
	return NewNode(ca, crt, kp)
}

// ParseCSR parses and checks a node's PEM certificate request: it must be
// self-signed by an ECDSA P-256 key, name the node as CN, ask for no DNS
// name other than the node name, and no e-mail or URI names. IP addresses
// are allowed.
func ParseCSR(csrPEM []byte, name string) (*x509.CertificateRequest, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: want a PEM CERTIFICATE REQUEST", ErrInvalidCSR)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrInvalidCSR, err)
	}
	if csr.Subject.CommonName != name {
		return nil, fmt.Errorf("%w: CN %q does not match node name %q", ErrInvalidCSR, csr.Subject.CommonName, name)
	}
	for _, d := range csr.DNSNames {
		if d != name {
			return nil, fmt.Errorf("%w: DNS name %q is not the node name %q", ErrInvalidCSR, d, name)
		}
	}
	if len(csr.EmailAddresses) > 0 || len(csr.URIs) > 0 {
		return nil, fmt.Errorf("%w: only the node name and IP addresses may be requested", ErrInvalidCSR)
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: key must be ECDSA P-256, got %T", ErrInvalidCSR, csr.PublicKey)
	}
	return csr, nil
}

// SignCSR signs a node's PEM certificate request after checking it with
// ParseCSR, and returns the certificate in PEM, valid for NodeValidity. The
// certificate keeps the request's IP addresses.
func (ca *CA) SignCSR(csrPEM []byte, name string, now time.Time) ([]byte, error) {
	return ca.SignCSRFor(csrPEM, name, now, NodeValidity)
}

// SignCSRFor is SignCSR with a validity of the caller's.
func (ca *CA) SignCSRFor(csrPEM []byte, name string, now time.Time, validity time.Duration) ([]byte, error) {
	if ca.Key == nil {
		return nil, ErrNoCAKey
	}
	csr, err := ParseCSR(csrPEM, name)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(validity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name, Organization: []string{"tandem"}},
		DNSNames:     []string{name},
		IPAddresses:  csr.IPAddresses,
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %s: %w", name, err)
	}
	return certPEM(der), nil
}

// NewKey generates an ECDSA P-256 private key.
func NewKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return k, nil
}

// NewCSR returns a PEM certificate request for node name with the given IP
// addresses, signed by key.
func NewCSR(key crypto.Signer, name string, ips []netip.Addr) ([]byte, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	tmpl := &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: name},
		DNSNames: []string{name},
	}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(ip.Unmap().AsSlice()))
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("create certificate request: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// ParseCertPEM parses the first PEM CERTIFICATE block.
func ParseCertPEM(b []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("want a PEM CERTIFICATE")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	return cert, nil
}

// ParseKeyPEM parses a PEM PKCS#8 (or SEC 1 EC) private key.
func ParseKeyPEM(b []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("want a PEM private key")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("unsupported PEM block %q", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("private key %T cannot sign", key)
	}
	return s, nil
}

// ParseCertsPEM parses every PEM CERTIFICATE block of b (a bundle).
func ParseCertsPEM(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("want PEM CERTIFICATE blocks")
	}
	return out, nil
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// EncodeKeyPEM returns key as a PEM PKCS#8 block.
func EncodeKeyPEM(key crypto.Signer) ([]byte, error) { return keyPEM(key) }

func keyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func newSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil
}

func samePublicKey(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

// Node is one node's credentials: its certificate and key, the CA that
// issued it (with its key on app nodes), and the CAs it trusts peers from.
//
// The issuing CA and the trusted set change during a CA rotation (see
// SetTrust, Hold and Replace) without a restart: every TLS configuration
// made from n reads them at each handshake.
type Node struct {
	Name string
	// Cert is the node's certificate chain (node certificate, then the CA)
	// with its private key and parsed Leaf, as loaded; Current is the one
	// in use, which Replace renews.
	Cert tls.Certificate

	cur   atomic.Pointer[tls.Certificate]
	ca    atomic.Pointer[CA]
	trust atomic.Pointer[trustSet]

	hmu  sync.Mutex
	held map[string]*CA // by hash: CAs this node holds, with their keys on app nodes
}

// trustSet is the CAs a node accepts peers from, and their pool.
type trustSet struct {
	certs []*x509.Certificate
	pool  *x509.CertPool
}

func newTrustSet(certs []*x509.Certificate) *trustSet {
	t := &trustSet{pool: x509.NewCertPool()}
	seen := map[string]bool{}
	for _, c := range certs {
		if h := Hash(c); !seen[h] {
			seen[h] = true
			t.certs = append(t.certs, c)
			t.pool.AddCert(c)
		}
	}
	return t
}

// CA returns the CA that issued the certificate in use: the one this node
// signs joins and renewals with when it holds its key.
func (n *Node) CA() *CA { return n.ca.Load() }

// Trusted returns the CAs this node accepts peers' certificates from.
func (n *Node) Trusted() []*x509.Certificate { return slices.Clone(n.trust.Load().certs) }

// TrustedHashes returns the hashes of Trusted, sorted.
func (n *Node) TrustedHashes() []string {
	var out []string
	for _, c := range n.trust.Load().certs {
		out = append(out, Hash(c))
	}
	slices.Sort(out)
	return out
}

// Pool returns the pool of the trusted CAs.
func (n *Node) Pool() *x509.CertPool { return n.trust.Load().pool }

// SetTrust replaces the CAs this node accepts peers from; handshakes
// after it use the new set. It reports whether the set changed.
func (n *Node) SetTrust(certs []*x509.Certificate) bool {
	next := newTrustSet(certs)
	cur := n.trust.Load()
	if cur != nil && slices.EqualFunc(cur.certs, next.certs, func(a, b *x509.Certificate) bool { return a.Equal(b) }) {
		return false
	}
	n.trust.Store(next)
	return true
}

// Hold keeps a CA (with its key, on app nodes) for a rotation: the node can
// then sign with it (Held) and move its own certificate to it.
func (n *Node) Hold(ca *CA) {
	n.hmu.Lock()
	defer n.hmu.Unlock()
	if n.held == nil {
		n.held = map[string]*CA{}
	}
	if old, ok := n.held[ca.Hash()]; ok && old.Key != nil && ca.Key == nil {
		return
	}
	n.held[ca.Hash()] = ca
}

// Held returns the CA with this hash that the node holds (the issuing CA
// included), or nil.
func (n *Node) Held(hash string) *CA {
	if ca := n.CA(); ca.Hash() == hash {
		return ca
	}
	n.hmu.Lock()
	defer n.hmu.Unlock()
	return n.held[hash]
}

// Drop forgets a held CA.
func (n *Node) Drop(hash string) {
	n.hmu.Lock()
	defer n.hmu.Unlock()
	delete(n.held, hash)
}

// Forget drops every held CA but the issuing one.
func (n *Node) Forget() {
	n.hmu.Lock()
	defer n.hmu.Unlock()
	n.held = nil
}

// KeyHashes returns the hashes of the CAs whose key this node holds,
// sorted.
func (n *Node) KeyHashes() []string {
	var out []string
	if ca := n.CA(); ca.Key != nil {
		out = append(out, ca.Hash())
	}
	n.hmu.Lock()
	for h, ca := range n.held {
		if ca.Key != nil && !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	n.hmu.Unlock()
	slices.Sort(out)
	return out
}

// Current returns the certificate in use: Cert, or its latest renewal.
func (n *Node) Current() *tls.Certificate {
	if c := n.cur.Load(); c != nil {
		return c
	}
	return &n.Cert
}

// NeedsRenewal reports whether the certificate in use has less than a
// third of validity left at now, or more than validity (with some slack for
// clocks): one issued before certificates were short-lived, which lived as
// long as the CA, is replaced by a short-lived one.
func (n *Node) NeedsRenewal(now time.Time, validity time.Duration) bool {
	left := n.Current().Leaf.NotAfter.Sub(now)
	return left < validity/3 || left > validity+2*clockSkew
}

// CSR returns a request to renew the certificate in use: the same name,
// IP addresses and key.
func (n *Node) CSR() ([]byte, error) {
	cur := n.Current()
	signer, ok := cur.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("node key %T cannot sign", cur.PrivateKey)
	}
	var ips []netip.Addr
	for _, ip := range cur.Leaf.IPAddresses {
		if a, ok := netip.AddrFromSlice(ip); ok {
			ips = append(ips, a.Unmap())
		}
	}
	return NewCSR(signer, n.Name, ips)
}

// Replace puts a renewed certificate in use (in every TLS configuration
// made from n) after checking that a trusted CA issued it for this node's
// name and key. When that CA is not the issuing one (a rotation), it
// becomes the issuing one, with its key if the node holds it.
func (n *Node) Replace(certPEMBytes []byte) error {
	cur := n.Current()
	leaf, err := ParseCertPEM(certPEMBytes)
	if err != nil {
		return fmt.Errorf("renewed certificate: %w", err)
	}
	if leaf.Subject.CommonName != n.Name {
		return fmt.Errorf("renewed certificate is for %q, not %q", leaf.Subject.CommonName, n.Name)
	}
	if !samePublicKey(leaf.PublicKey, cur.Leaf.PublicKey) {
		return fmt.Errorf("renewed certificate for %q has another key than the node's", n.Name)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:     n.Pool(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return fmt.Errorf("renewed certificate for %q is not valid under a CA this node trusts: %w", n.Name, err)
	}
	issuer := chains[0][len(chains[0])-1]
	ca := n.Held(Hash(issuer))
	if ca == nil {
		ca = &CA{Cert: issuer}
	}
	if old := n.CA(); old.Hash() != ca.Hash() {
		n.Hold(old)
		n.ca.Store(ca)
	}
	n.cur.Store(&tls.Certificate{Certificate: [][]byte{leaf.Raw, issuer.Raw}, PrivateKey: cur.PrivateKey, Leaf: leaf})
	return nil
}

// NewNode assembles a node's credentials from its PEM certificate and key,
// checking that the certificate was issued by ca for server and client use
// and that the key matches it. The node trusts ca only until SetTrust.
func NewNode(ca *CA, certPEMBytes, keyPEMBytes []byte) (*Node, error) {
	leaf, err := ParseCertPEM(certPEMBytes)
	if err != nil {
		return nil, fmt.Errorf("node certificate: %w", err)
	}
	key, err := ParseKeyPEM(keyPEMBytes)
	if err != nil {
		return nil, fmt.Errorf("node key: %w", err)
	}
	if !samePublicKey(key.Public(), leaf.PublicKey) {
		return nil, errors.New("node key does not match the node certificate")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:     ca.Pool(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, fmt.Errorf("node certificate %q is not valid under the cluster CA: %w", leaf.Subject.CommonName, err)
	}
	n := &Node{
		Name: leaf.Subject.CommonName,
		Cert: tls.Certificate{
			Certificate: [][]byte{leaf.Raw, ca.Cert.Raw},
			PrivateKey:  key,
			Leaf:        leaf,
		},
	}
	n.ca.Store(ca)
	n.trust.Store(newTrustSet([]*x509.Certificate{ca.Cert}))
	return n, nil
}

// CanSign reports whether this node holds the CA key and so can sign joins.
func (n *Node) CanSign() bool { return n.CA().Key != nil }

// ServerConfig is for listeners where every client must present a
// certificate from a CA the node trusts. The trusted CAs are read at each
// handshake, so SetTrust needs no new listener.
func (n *Node) ServerConfig() *tls.Config {
	c := &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return n.Current(), nil },
		ClientAuth:     tls.RequireAndVerifyClientCert,
		ClientCAs:      n.Pool(),
	}
	// c as the caller finished it (ALPN, VerifyConnection), with the CAs
	// trusted now.
	c.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		cc := c.Clone()
		cc.GetConfigForClient = nil
		cc.ClientCAs = n.Pool()
		return cc, nil
	}
	return c
}

// JoinServerConfig is ServerConfig for a listener that also serves the join
// endpoint: a client certificate is verified against the cluster CA when one
// is given (a foreign one fails the handshake) but may be absent. Whoever
// uses it MUST check for a verified chain (see PeerName) on everything but
// the join endpoint.
func (n *Node) JoinServerConfig() *tls.Config {
	c := n.ServerConfig()
	c.ClientAuth = tls.VerifyClientCertIfGiven
	return c
}

// ClientConfig presents the node certificate and accepts only servers whose
// certificate chains to a CA the node trusts (read at each handshake).
func (n *Node) ClientConfig() *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return n.Current(), nil },
		// Peers are dialled by address and identified by chain, so the
		// standard hostname check is replaced by VerifyConnection.
		InsecureSkipVerify: true,
		VerifyConnection:   verifyServerIn(n.Pool),
	}
}

// VerifyServer returns a tls.Config.VerifyConnection function that accepts
// a server whose certificate chains to ca with server-auth usage; the
// hostname is not checked.
func VerifyServer(ca *x509.Certificate) func(tls.ConnectionState) error {
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return verifyServerIn(func() *x509.CertPool { return pool })
}

func verifyServerIn(roots func() *x509.CertPool) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("server sent no certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
			Roots:         roots(),
			Intermediates: inter,
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		if err != nil {
			return fmt.Errorf("server certificate %q is not from the cluster CA: %w", cs.PeerCertificates[0].Subject.CommonName, err)
		}
		return nil
	}
}

// PeerName returns the node name of a peer whose certificate chain was
// verified during the handshake, or "" when the peer presented none.
func PeerName(cs *tls.ConnectionState) string {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return ""
	}
	return cs.VerifiedChains[0][0].Subject.CommonName
}
