// Package forge asks a forge's API whether a delivery really deploys, and
// downloads its .deb. A webhook is only a hint: Fetch asks the API again
// whether the pipeline or run succeeded, on which ref, from which
// repository, picks the artifact by job or artifact ID (never "the latest
// by ref"), downloads it bounded by MaxSize, and unpacks exactly one .deb
// with its published .sha256 (and .sig when present) from the archive.
// Poll asks the same API for the newest successful builds on allowed refs,
// so a missed webhook still deploys.
//
// Endpoints used, per kind (api = Source.APIURL):
//
//	gitlab   PRIVATE-TOKEN: <token>; :id is the numeric ID or URL-encoded path
//	         GET {api}/projects/:id/pipelines/:pipeline_id
//	         GET {api}/projects/:id/pipelines/:pipeline_id/jobs?scope[]=success&per_page=100
//	         GET {api}/projects/:id/jobs/:job_id
//	         GET {api}/projects/:id/jobs/:job_id/artifacts      (may redirect)
//	         GET {api}/projects/:id/pipelines?status=success&ref=REF&order_by=id&sort=desc&per_page=N
//	         GET {api}/projects/:id/pipelines?status=success&scope=tags&order_by=id&sort=desc&per_page=N
//	github   Authorization: Bearer <token>, X-GitHub-Api-Version: 2022-11-28
//	         GET {api}/repos/:owner/:repo/actions/runs/:run_id
//	         GET {api}/repos/:owner/:repo/actions/runs/:run_id/artifacts?per_page=100&page=P
//	         GET {api}/repos/:owner/:repo/actions/artifacts/:artifact_id/zip   (302 to another host)
//	         GET {api}/repos/:owner/:repo/actions/runs?status=success&branch=B&per_page=N
//	gitea    Authorization: token <token>; the same paths under /api/v1. Gitea pages
//	         with page/limit, answers the zip with a 302 to a signed URL, and
//	         leaves head_branch empty for a tag's run: the ref is then read
//	         from the run's path ("build.yml@refs/tags/v1"). The artifacts
//	         API came with Gitea 1.24 (go-gitea/gitea#33510) and lists only
//	         artifacts uploaded with actions/upload-artifact@v4.
//	forgejo  Authorization: token <token>; the same paths under /api/v1, but
//	         a run is Forgejo's own shape (status "success", prettyref,
//	         commit_sha, is_fork_pull_request, event_payload), and an
//	         artifact list may be a bare array. Forgejo added the actions
//	         artifacts API late (forgejo#12140); a version without it
//	         answers 404 there: Fetch says so, and such a forge should
//	         announce its builds through the generic source instead.
//	generic  GET the delivery's Release.URL and SignatureURL, no token; the
//	         SHA-256 comes from the (signed) delivery. Nothing to poll.
//
// The Authorization (or PRIVATE-TOKEN) header is sent only in the first
// request, to the API's own origin: a redirect (GitHub's artifact storage,
// GitLab's object storage, Gitea's signed raw URL) is followed without it,
// since the redirect's URL carries its own short-lived credential; a
// redirect from https to http is refused.
package forge

import (
	"archive/zip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tandem-ha/tandem/internal/artifact"
	"github.com/tandem-ha/tandem/internal/webhook"
)

// Sentinel errors; every error of Fetch and Poll about the build wraps one.
var (
	ErrNotSuccessful = errors.New("the pipeline or run did not succeed")
	ErrRefNotAllowed = errors.New("the ref may not deploy")
	ErrUntrusted     = errors.New("the build is not a push build of the configured project")
	ErrNoArtifact    = errors.New("no deployable artifact")
	ErrBadArchive    = errors.New("the artifact archive is malformed or unsafe")
	ErrForgeAPI      = errors.New("forge API request failed")
	// ErrTooLarge is artifact.ErrTooLarge, so one check covers the
	// download and the verification.
	ErrTooLarge = artifact.ErrTooLarge
)

// APIError is a forge API answer other than success. It wraps ErrForgeAPI.
type APIError struct {
	Method, URL string
	Status      int    // HTTP status
	Body        string // the start of the answer, for the log
	Hint        string // what to check
}

func (e *APIError) Error() string {
	s := fmt.Sprintf("%s %s: status %d", e.Method, e.URL, e.Status)
	if e.Body != "" {
		s += " (" + e.Body + ")"
	}
	if e.Hint != "" {
		s += ": " + e.Hint
	}
	return s
}

func (e *APIError) Unwrap() error { return ErrForgeAPI }

// Source is one configured forge: where its API is and which builds of
// which project may deploy.
type Source struct {
	Kind    webhook.Source // gitlab, github, gitea, forgejo, generic
	APIURL  string         // e.g. https://gitlab.example/api/v4, https://api.github.example, https://gitea.example/api/v1
	Token   string         // API token (read from api_token_file by the caller)
	Project string         // "group/site" or a numeric GitLab ID | "owner/repo"
	Rules   webhook.Rules
	HTTP    *http.Client // the caller's; nil = a default with timeouts
	MaxSize int64        // cap on the .deb; 0 = artifact.DefaultMaxSize
}

// String describes the source without its token, so %v and %+v cannot
// print it.
func (s Source) String() string {
	token := "no token"
	if s.Token != "" {
		token = "token set"
	}
	return fmt.Sprintf("%s source %s at %s (%s)", s.Kind, s.Project, s.APIURL, token)
}

// GoString redacts too, for %#v.
func (s Source) GoString() string { return "forge.Source{" + s.String() + "}" }

// LogValue is the source for slog, without its token.
func (s Source) LogValue() slog.Value {
	return slog.GroupValue(slog.String("kind", string(s.Kind)), slog.String("project", s.Project),
		slog.String("api_url", s.APIURL), slog.Bool("token", s.Token != ""))
}

// Build is a fetched, not yet verified, release: the .deb in the directory
// Fetch was given, and what its pipeline published to verify it against.
type Build struct {
	DebPath string          // downloaded .deb in dir
	Expect  artifact.Expect // SHA-256 from the published checksum (or the generic delivery), .sig if published
	Ref     string
	RefKind webhook.RefKind
	Commit  string
	Project string
	WebURL  string
}

// Limits.
const (
	maxJSON     = 8 << 20  // an API answer
	maxSideFile = 64 << 10 // a .sha256 or .sig file
	maxPages    = 10       // pages of a listing
	maxRedirect = 5
	zipSlack    = 1 << 20 // the archive's own overhead over MaxSize
	errBodyLen  = 300
	apiTries    = 3
	retryDelay  = 300 * time.Millisecond // before the second try; doubles after
)

// Validate checks a configured source when the configuration is loaded.
func (s Source) Validate() error {
	switch s.Kind {
	case webhook.GitLab, webhook.GitHub, webhook.Gitea, webhook.Forgejo:
		u, err := url.Parse(s.APIURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("%s source: api_url %q must be an http(s) URL, e.g. %s", s.Kind, s.APIURL, exampleAPI(s.Kind))
		}
		if s.Project == "" {
			return fmt.Errorf("%s source: project is required (%s)", s.Kind, projectForm(s.Kind))
		}
		if s.Kind != webhook.GitLab {
			if _, _, err := ownerRepo(s.Project); err != nil {
				return fmt.Errorf("%s source: %w", s.Kind, err)
			}
		}
	case webhook.Generic:
	default:
		return fmt.Errorf("unknown source type %q (use one of %v)", s.Kind, webhook.Sources)
	}
	if s.MaxSize < 0 {
		return fmt.Errorf("%s source: max_size must not be negative", s.Kind)
	}
	return s.Rules.Validate()
}

func exampleAPI(k webhook.Source) string {
	switch k {
	case webhook.GitLab:
		return "https://gitlab.example/api/v4"
	case webhook.GitHub:
		return "https://api.github.com"
	}
	return "https://" + string(k) + ".example/api/v1"
}

func projectForm(k webhook.Source) string {
	if k == webhook.GitLab {
		return `the project's path "group/site" or its numeric ID`
	}
	return `"owner/repo"`
}

// Fetch asks the forge whether d is a successful build of an allowed ref of
// the configured project, downloads its artifact into dir (which must
// exist) and returns where the .deb is and what it must hash to.
func (s Source) Fetch(ctx context.Context, d webhook.Delivery, dir string) (Build, error) {
	if d.Source != "" && d.Source != s.Kind {
		return Build{}, fmt.Errorf("fetch: delivery from %s given to the %s source", d.Source, s.Kind)
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return Build{}, fmt.Errorf("fetch: %s is not a directory", dir)
	}
	c := s.conn()
	defer c.close()
	switch s.Kind {
	case webhook.GitLab:
		return c.fetchGitLab(ctx, d, dir)
	case webhook.GitHub, webhook.Gitea, webhook.Forgejo:
		return c.fetchActions(ctx, d, dir)
	case webhook.Generic:
		return c.fetchGeneric(ctx, d, dir)
	}
	return Build{}, fmt.Errorf("fetch: unknown source type %q", s.Kind)
}

// Poll returns the newest successful builds on allowed refs, newest first,
// at most limit (0: 10), as synthetic deliveries with the ID
// "poll:<kind>:<pipeline or run id>". The generic source has nothing to
// poll and returns none.
func (s Source) Poll(ctx context.Context, limit int) ([]webhook.Delivery, error) {
	if limit <= 0 {
		limit = 10
	}
	limit = min(limit, 100)
	c := s.conn()
	defer c.close()
	switch s.Kind {
	case webhook.GitLab:
		return c.pollGitLab(ctx, limit)
	case webhook.GitHub, webhook.Gitea, webhook.Forgejo:
		return c.pollActions(ctx, limit)
	case webhook.Generic:
		return nil, nil
	}
	return nil, fmt.Errorf("poll: unknown source type %q", s.Kind)
}

func (s Source) maxSize() int64 {
	if s.MaxSize > 0 {
		return s.MaxSize
	}
	return artifact.DefaultMaxSize
}

// conn is one Fetch's or Poll's view of the API.
type conn struct {
	s      Source
	hc     *http.Client // s.HTTP, or a default, never following redirects itself
	own    *http.Transport
	api    *url.URL
	origin string // scheme://host of the API, the only place credentials go
}

func (s Source) conn() *conn {
	c := &conn{s: s}
	base := s.HTTP
	if base == nil {
		c.own = &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
			IdleConnTimeout:       30 * time.Second,
			ForceAttemptHTTP2:     true,
		}
		base = &http.Client{Transport: c.own, Timeout: 30 * time.Minute}
	}
	hc := *base
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c.hc = &hc
	if u, err := url.Parse(strings.TrimRight(s.APIURL, "/")); err == nil {
		c.api = u
		c.origin = u.Scheme + "://" + u.Host
	}
	return c
}

func (c *conn) close() {
	if c.own != nil {
		c.own.CloseIdleConnections()
	}
}

// endpoint joins the API base and an already escaped path and query.
func (c *conn) endpoint(escapedPath string, q url.Values) (string, error) {
	if c.api == nil || c.api.Host == "" {
		return "", fmt.Errorf("%s source: api_url %q is not a URL", c.s.Kind, c.s.APIURL)
	}
	u := c.api.String() + escapedPath
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u, nil
}

// authorize adds the kind's credentials and API headers.
func (c *conn) authorize(h http.Header) {
	switch c.s.Kind {
	case webhook.GitLab:
		if c.s.Token != "" {
			h.Set("PRIVATE-TOKEN", c.s.Token)
		}
	case webhook.GitHub:
		h.Set("Accept", "application/vnd.github+json")
		h.Set("X-GitHub-Api-Version", "2022-11-28")
		if c.s.Token != "" {
			h.Set("Authorization", "Bearer "+c.s.Token)
		}
	case webhook.Gitea, webhook.Forgejo:
		h.Set("Accept", "application/json")
		if c.s.Token != "" {
			h.Set("Authorization", "token "+c.s.Token)
		}
	}
}

// get GETs rawURL, following up to maxRedirect redirects itself: the
// credentials (auth) go only to the API's origin and only before the first
// redirect, and https never redirects to http. The caller closes the body of a
// returned response, whose status is 200.
func (c *conn) get(ctx context.Context, rawURL string, auth bool) (*http.Response, error) {
	cur := rawURL
	for hop := 0; ; hop++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, cur, nil)
		if err != nil {
			return nil, fmt.Errorf("%w: GET %s: %v", ErrForgeAPI, redact(cur), err)
		}
		if auth && hop == 0 && sameOrigin(req.URL, c.origin) {
			c.authorize(req.Header)
		} else if auth {
			c.authorize(req.Header)
			req.Header.Del("Authorization")
			req.Header.Del("PRIVATE-TOKEN")
		}
		req.Header.Set("User-Agent", "tandem")
		resp, err := c.hc.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("GET %s: %w", redact(cur), ctx.Err())
			}
			return nil, fmt.Errorf("%w: GET %s: %v (is api_url right and the forge reachable?)", ErrForgeAPI, redact(cur), err)
		}
		switch resp.StatusCode {
		case http.StatusOK:
			return resp, nil
		case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
			loc := resp.Header.Get("Location")
			drain(resp)
			if hop >= maxRedirect {
				return nil, &APIError{Method: "GET", URL: redact(rawURL), Status: resp.StatusCode, Hint: "too many redirects"}
			}
			next, err := req.URL.Parse(loc)
			if err != nil || loc == "" || (next.Scheme != "https" && next.Scheme != "http") {
				return nil, &APIError{Method: "GET", URL: redact(cur), Status: resp.StatusCode, Hint: fmt.Sprintf("redirect to an invalid location %q", loc)}
			}
			if req.URL.Scheme == "https" && next.Scheme == "http" {
				return nil, &APIError{Method: "GET", URL: redact(cur), Status: resp.StatusCode, Hint: "refusing a redirect from https to http"}
			}
			cur = next.String()
		default:
			body, _ := io.ReadAll(io.LimitReader(resp.Body, errBodyLen))
			drain(resp)
			hint := c.hint(resp.StatusCode)
			if hop > 0 {
				hint = fmt.Sprintf("after %s redirected here; credentials are never forwarded on a redirect, so if api_url itself redirects (http to https, a moved host), set it to the final URL", redact(rawURL))
			}
			return nil, &APIError{Method: "GET", URL: redact(cur), Status: resp.StatusCode, Body: oneLine(string(body)), Hint: hint}
		}
	}
}

func (c *conn) hint(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return "the forge refused the API token: check api_token_file"
	case http.StatusForbidden:
		switch c.s.Kind {
		case webhook.GitLab:
			return "the token may not read this project's pipelines and artifacts (it needs the read_api scope)"
		case webhook.GitHub:
			return "the token may not read this repository's actions (it needs actions:read), or the rate limit is exhausted"
		}
		return "the token may not read this repository's actions"
	case http.StatusNotFound:
		return "no such project, pipeline, run, job or artifact (or the token cannot see it): check project and api_url"
	case http.StatusGone:
		return "the artifact expired on the forge"
	case http.StatusTooManyRequests:
		return "rate limited by the forge; a later retry or poll will try again"
	}
	return ""
}

// retryable reports whether a failed API GET may succeed when repeated:
// the forge was unreachable, overloaded or rate limiting.
func retryable(err error) bool {
	var ae *APIError
	if errors.As(err, &ae) {
		switch ae.Status {
		case http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway,
			http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true
		}
		return false
	}
	return errors.Is(err, ErrForgeAPI) // a transport error
}

// getJSON GETs an API endpoint and decodes its JSON answer into v, trying
// up to apiTries times while the forge answers 429 or 5xx or cannot be
// reached. It returns the response headers (for pagination).
func (c *conn) getJSON(ctx context.Context, rawURL string, v any) (http.Header, error) {
	var resp *http.Response
	var err error
	for try := 1; ; try++ {
		resp, err = c.get(ctx, rawURL, true)
		if err == nil || try == apiTries || !retryable(err) || ctx.Err() != nil {
			break
		}
		t := time.NewTimer(retryDelay << (try - 1))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w (then: %w)", err, ctx.Err())
		case <-t.C:
		}
	}
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJSON+1))
	if err != nil {
		return nil, fmt.Errorf("%w: GET %s: reading the answer: %v", ErrForgeAPI, redact(rawURL), err)
	}
	if len(body) > maxJSON {
		return nil, fmt.Errorf("%w: GET %s: answer larger than %d bytes", ErrForgeAPI, redact(rawURL), maxJSON)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return nil, fmt.Errorf("%w: GET %s: not the expected JSON (%v): is api_url the API's base URL?", ErrForgeAPI, redact(rawURL), err)
	}
	return resp.Header, nil
}

// download GETs rawURL into w, at most max bytes.
func (c *conn) download(ctx context.Context, rawURL string, auth bool, w io.Writer, max int64) (int64, error) {
	resp, err := c.get(ctx, rawURL, auth)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.ContentLength > max {
		return 0, fmt.Errorf("%w: %s is %d bytes, the limit is %d (max_size)", ErrTooLarge, redact(rawURL), resp.ContentLength, max)
	}
	n, err := io.Copy(w, io.LimitReader(resp.Body, max+1))
	if err != nil {
		if ctx.Err() != nil {
			return n, fmt.Errorf("download %s: %w", redact(rawURL), ctx.Err())
		}
		return n, fmt.Errorf("%w: download %s: %v", ErrForgeAPI, redact(rawURL), err)
	}
	if n > max {
		return n, fmt.Errorf("%w: %s is larger than the limit of %d bytes (max_size)", ErrTooLarge, redact(rawURL), max)
	}
	return n, nil
}

// fetchZip downloads an artifact archive into a temporary file in dir and
// unpacks its .deb, checksum and signature.
func (c *conn) fetchZip(ctx context.Context, rawURL, dir string) (unpacked, error) {
	tmp, err := os.CreateTemp(dir, ".artifact-*.zip")
	if err != nil {
		return unpacked{}, fmt.Errorf("fetch: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	max := c.s.maxSize()
	n, err := c.download(ctx, rawURL, true, tmp, max+zipSlack)
	if err != nil {
		return unpacked{}, err
	}
	zr, err := zip.NewReader(tmp, n)
	if err != nil {
		return unpacked{}, fmt.Errorf("%w: %s is not a zip archive: %v", ErrBadArchive, redact(rawURL), err)
	}
	return extractFrom(zr, dir, max)
}

// sameOrigin reports whether u is on the API's scheme and host.
func sameOrigin(u *url.URL, origin string) bool {
	return origin != "" && strings.EqualFold(u.Scheme+"://"+u.Host, origin)
}

// redact drops a URL's query (signed download URLs carry credentials in
// it) and user info, for errors and logs.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(bad URL)"
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u.String()
}

func drain(resp *http.Response) {
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// ownerRepo splits "owner/repo".
func ownerRepo(p string) (string, string, error) {
	owner, repo, ok := strings.Cut(p, "/")
	if !ok || owner == "" || repo == "" || strings.Contains(repo, "/") || owner == ".." || repo == ".." || owner == "." || repo == "." {
		return "", "", fmt.Errorf("project %q must be \"owner/repo\"", p)
	}
	return owner, repo, nil
}

// settleRef decides whether ref may deploy. kind is what the API said
// (RefUnknown when it does not say, as GitHub's run API): an unknown ref
// is allowed when it matches the branches, then the tag patterns, and
// takes that kind.
func settleRef(r webhook.Rules, ref string, kind webhook.RefKind, what string) (webhook.RefKind, error) {
	if kind == webhook.RefUnknown {
		switch {
		case r.Allows(ref, webhook.RefBranch):
			return webhook.RefBranch, nil
		case r.Allows(ref, webhook.RefTag):
			return webhook.RefTag, nil
		}
	} else if r.Allows(ref, kind) {
		return kind, nil
	}
	k := string(kind)
	if kind == webhook.RefUnknown {
		k = "ref"
	}
	if ref == "" {
		return kind, fmt.Errorf("%w: %s names no branch or tag", ErrRefNotAllowed, what)
	}
	return kind, fmt.Errorf("%w: %s built %s %q; allowed are branches %v and tags matching %v (configure branches/tags)", ErrRefNotAllowed, what, k, ref, r.Branches, r.Tags)
}

// sameCommit checks the commit a webhook named against the API's.
func sameCommit(d webhook.Delivery, apiSHA, what string) error {
	if d.Commit != "" && apiSHA != "" && !strings.EqualFold(d.Commit, apiSHA) {
		return fmt.Errorf("%w: the delivery names commit %s but the forge says %s built %s", ErrUntrusted, d.Commit, what, apiSHA)
	}
	return nil
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
