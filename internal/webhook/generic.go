package webhook

import (
	"net/url"
	"regexp"
	"strings"

	"github.com/tandem-ha/tandem/internal/debversion"
)

// Release is the body of a generic (Standard Webhooks) delivery: any CI
// that can POST announces a built .deb with it. The JSON schema:
//
//	{
//	  "package":       "pysite",                  required: Debian package name
//	  "version":       "0.2.0-1",                 required: its Debian version
//	  "url":           "https://ci.example/pysite_0.2.0-1_amd64.deb",
//	                                              required: http(s) URL of the .deb
//	  "sha256":        "<64 lowercase hex>",      required: the .deb's SHA-256
//	  "signature_url": "https://ci.example/pysite_0.2.0-1_amd64.deb.sig",
//	                                              optional: its ed25519 signature
//	  "ref":           "main",                    required: branch or tag built
//	  "ref_type":      "branch",                  optional: "branch" or "tag"
//	  "commit":        "<40 hex>",                optional: commit built
//	  "project":       "site/pysite"              optional: for logs and dedupe
//	}
//
// Unknown fields are ignored, so the schema can grow.
type Release struct {
	Package      string `json:"package"`
	Version      string `json:"version"`
	URL          string `json:"url"`
	SHA256       string `json:"sha256"`
	SignatureURL string `json:"signature_url,omitempty"`
	Ref          string `json:"ref"`
	RefType      string `json:"ref_type,omitempty"`
	Commit       string `json:"commit,omitempty"`
	Project      string `json:"project,omitempty"`
}

var (
	packageRe = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)
	digestRe  = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

func parseGeneric(d *Delivery, body []byte) error {
	var r Release
	if err := decode(body, &r); err != nil {
		return err
	}
	r.SHA256, r.Commit = strings.ToLower(r.SHA256), strings.ToLower(r.Commit)
	if !packageRe.MatchString(r.Package) {
		return malformed("package %q is not a Debian package name (lowercase letters, digits, + - .)", r.Package)
	}
	if _, err := debversion.Parse(r.Version); err != nil {
		return malformed("version: %v", err)
	}
	if err := checkURL("url", r.URL); err != nil {
		return err
	}
	if r.SignatureURL != "" {
		if err := checkURL("signature_url", r.SignatureURL); err != nil {
			return err
		}
	}
	if !digestRe.MatchString(r.SHA256) {
		return malformed("sha256 %q is not 64 hex digits", r.SHA256)
	}
	d.Ref, d.RefKind = r.Ref, RefUnknown
	switch r.RefType {
	case "branch":
		d.RefKind = RefBranch
	case "tag":
		d.RefKind = RefTag
	case "":
	default:
		return malformed(`ref_type %q must be "branch" or "tag"`, r.RefType)
	}
	if r.Ref == "" || strings.HasPrefix(r.Ref, "refs/") {
		return malformed("ref %q: give the bare branch or tag name that was built", r.Ref)
	}
	d.Event, d.Status, d.Commit, d.Project, d.Release = EventRelease, "success", r.Commit, r.Project, &r
	return nil
}

func checkURL(field, s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return malformed("%s %q is not an http(s) URL", field, s)
	}
	return nil
}
