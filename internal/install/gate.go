package install

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// GateSpec is what one node's health gate waits for after an install.
type GateSpec struct {
	Unit      string        // systemd unit, e.g. pysite.service
	HealthURL string        // e.g. http://127.0.0.1:8000/healthz ("" = unit only)
	Version   string        // Debian version just installed, e.g. 0.2.0-1
	Since     time.Time     // the install began: the unit must have (re)started after it
	Soak      time.Duration // health must pass continuously this long
	Timeout   time.Duration // overall budget to become healthy (0: DefaultGateTimeout)
}

// Defaults of the gate.
const (
	DefaultGateTimeout = 90 * time.Second
	DefaultInterval    = 200 * time.Millisecond
	probeTimeout       = 2 * time.Second
	maxHealthBody      = 64 << 10
)

// ErrGate is wrapped by every error of a gate that did not pass (as opposed
// to a cancelled context, which wraps ctx.Err()).
var ErrGate = errors.New("health gate failed")

// Gater runs health gates. The zero Gater uses systemctl and journalctl
// through Exec, a plain HTTP client and DefaultInterval.
type Gater struct {
	Log      *slog.Logger
	Run      RunFunc       // systemctl, journalctl; nil means Exec
	HTTP     *http.Client  // health probes; nil means a client without proxy
	Interval time.Duration // between probes; 0 means DefaultInterval
}

// Gate runs g with the zero Gater: see Gater.Gate.
func Gate(ctx context.Context, g GateSpec) error {
	return Gater{}.Gate(ctx, g)
}

// Gate waits until the unit is active and (re)started after g.Since, so
// the process runs the new code, then until the health URL answers 200 —
// with the new version when its body is JSON with a "version" field — and
// keeps answering so for g.Soak, probing every Interval. Until the first
// pass, failures are retried within g.Timeout (the app is starting); after
// it, any failure fails the gate at once, as does a restart of the unit
// during the soak. Errors name the unit, URL, last status and body, and end
// with the unit's last journal lines.
func (gt Gater) Gate(ctx context.Context, g GateSpec) error {
	if g.Unit == "" {
		return fmt.Errorf("health gate: no unit given")
	}
	if g.Timeout <= 0 {
		g.Timeout = DefaultGateTimeout
	}
	log := gt.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("unit", g.Unit, "url", g.HealthURL, "version", g.Version)
	err := gt.gate(ctx, g, log)
	if err == nil {
		log.Info("health gate passed", "soak", g.Soak)
		return nil
	}
	log.Warn("health gate failed", "err", err)
	return fmt.Errorf("%w\nlast journal lines of %s:\n%s", err, g.Unit, gt.journal(ctx, g.Unit))
}

func (gt Gater) interval() time.Duration {
	if gt.Interval > 0 {
		return gt.Interval
	}
	return DefaultInterval
}

func (gt Gater) run() RunFunc {
	if gt.Run != nil {
		return gt.Run
	}
	return Exec
}

func (gt Gater) client() *http.Client {
	if gt.HTTP != nil {
		return gt.HTTP
	}
	// The health URL is local: never send it through a proxy.
	return &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
}

func (gt Gater) gate(ctx context.Context, g GateSpec, log *slog.Logger) error {
	start := time.Now()
	deadline := start.Add(g.Timeout)
	tick := time.NewTicker(gt.interval())
	defer tick.Stop()
	wait := func() error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			return nil
		}
	}

	// 1. The unit runs the new code: active, and entered active after Since.
	var u unitState
	for {
		nu, err := gt.unit(ctx, g.Unit)
		if err == nil {
			u = nu
		}
		if ctx.Err() != nil {
			return fmt.Errorf("health gate of %s: %w (last state: %s)", g.Unit, ctx.Err(), u)
		}
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrGate, g.Unit, err)
		}
		if u.Active == "active" && !u.Entered.IsZero() && !u.Entered.Before(g.Since.Truncate(time.Second)) {
			break
		}
		if time.Now().After(deadline) {
			why := fmt.Sprintf("is %s", u)
			if u.Active == "active" {
				why = fmt.Sprintf("was not restarted after the install began at %s (active since %s): the old process still runs; does the package's postinst restart the unit?", g.Since.UTC().Format(time.RFC3339), u.Entered.UTC().Format(time.RFC3339))
			}
			return fmt.Errorf("%w: unit %s %s, after %s", ErrGate, g.Unit, why, g.Timeout)
		}
		if err := wait(); err != nil {
			return fmt.Errorf("health gate of %s: %w (last state: %s)", g.Unit, err, u)
		}
	}
	log.Debug("unit restarted on the new release", "active_since", u.Entered)

	// 2. Health answers 200 with the new version, continuously for Soak.
	want := Upstream(g.Version)
	hc := gt.client()
	var passedAt time.Time
	var last probe
	for {
		if g.HealthURL == "" {
			// Unit only: it must stay up, unrestarted, for the soak.
			if passedAt.IsZero() {
				passedAt = time.Now()
			}
		} else {
			p := probeOnce(ctx, hc, g.HealthURL, want)
			if ctx.Err() != nil { // p was cut short: report the one before
				return fmt.Errorf("health gate of %s: %w (last probe of %s: %s)", g.Unit, ctx.Err(), g.HealthURL, last)
			}
			last = p
			switch {
			case last.ok && passedAt.IsZero():
				passedAt = time.Now()
				log.Debug("health passed; soaking", "soak", g.Soak)
			case !last.ok && !passedAt.IsZero():
				return fmt.Errorf("%w: %s failed after passing %s into the soak (unit %s): %s", ErrGate, g.HealthURL, time.Since(passedAt).Round(time.Millisecond), g.Unit, last)
			case !last.ok && time.Now().After(deadline):
				return fmt.Errorf("%w: %s did not pass within %s (unit %s): %s", ErrGate, g.HealthURL, g.Timeout, g.Unit, last)
			}
		}
		if !passedAt.IsZero() && time.Since(passedAt) >= g.Soak {
			break
		}
		if err := wait(); err != nil {
			return fmt.Errorf("health gate of %s: %w (last probe of %s: %s)", g.Unit, err, g.HealthURL, last)
		}
	}

	// 3. The unit did not restart (crash-loop) during the soak.
	end, err := gt.unit(ctx, g.Unit)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("health gate of %s: %w", g.Unit, ctx.Err())
		}
		return fmt.Errorf("%w: %s: %v", ErrGate, g.Unit, err)
	}
	if end.Active != "active" || !end.Entered.Equal(u.Entered) {
		return fmt.Errorf("%w: unit %s restarted or stopped during the soak: it was active since %s, now %s", ErrGate, g.Unit, u.Entered.UTC().Format(time.RFC3339Nano), end)
	}
	return nil
}

// unitState is what systemctl show says about a unit.
type unitState struct {
	Active, Sub, Result string
	Entered             time.Time // ActiveEnterTimestamp; zero when never active
}

func (u unitState) String() string {
	if u.Active == "" {
		return "unknown"
	}
	s := u.Active + "/" + u.Sub
	if u.Result != "" && u.Result != "success" {
		s += " (result " + u.Result + ")"
	}
	return s
}

// unit asks systemd for the unit's state. Timestamps are requested in UTC
// with microseconds (systemd 248 and later).
func (gt Gater) unit(ctx context.Context, unit string) (unitState, error) {
	out, err := gt.run()(ctx, nil, "systemctl", "show", "--timestamp=us+utc",
		"--property=ActiveState,SubState,Result,ActiveEnterTimestamp,LoadState", "--", unit)
	if err != nil {
		return unitState{}, fmt.Errorf("systemctl show %s: %v\n%s", unit, err, tail(out, 5))
	}
	return parseShow(out, unit)
}

// parseShow reads systemctl show's KEY=value lines.
func parseShow(out []byte, unit string) (unitState, error) {
	var u unitState
	load := ""
	for line := range strings.SplitSeq(string(out), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if !ok {
			continue
		}
		switch k {
		case "ActiveState":
			u.Active = v
		case "SubState":
			u.Sub = v
		case "Result":
			u.Result = v
		case "LoadState":
			load = v
		case "ActiveEnterTimestamp":
			t, err := parseTimestamp(v)
			if err != nil {
				return u, fmt.Errorf("systemctl show %s: ActiveEnterTimestamp: %w", unit, err)
			}
			u.Entered = t
		}
	}
	if load == "not-found" {
		return u, fmt.Errorf("unit %s does not exist: does the package install it under that name?", unit)
	}
	if u.Active == "" {
		return u, fmt.Errorf("systemctl show %s: no ActiveState in %q", unit, truncate(string(out), 200))
	}
	return u, nil
}

// parseTimestamp reads a systemd timestamp: "" or "n/a" (never), "@unix",
// or "Day YYYY-MM-DD HH:MM:SS[.micros] UTC".
func parseTimestamp(v string) (time.Time, error) {
	v = strings.TrimSpace(v)
	if v == "" || v == "n/a" || v == "0" {
		return time.Time{}, nil
	}
	if s, ok := strings.CutPrefix(v, "@"); ok {
		sec, frac, _ := strings.Cut(s, ".")
		n, err := strconv.ParseInt(sec, 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("bad timestamp %q", v)
		}
		var ns int64
		if frac != "" {
			f, err := strconv.ParseFloat("0."+frac, 64)
			if err != nil {
				return time.Time{}, fmt.Errorf("bad timestamp %q", v)
			}
			ns = int64(f * 1e9)
		}
		return time.Unix(n, ns), nil
	}
	// "UTC" parses as UTC anywhere; another zone name (a systemctl that
	// ignored --timestamp) is read in the node's own zone.
	for _, layout := range []string{"Mon 2006-01-02 15:04:05.999999 MST", "Mon 2006-01-02 15:04:05 MST"} {
		if t, err := time.ParseInLocation(layout, v, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("bad timestamp %q (want UTC, as --timestamp=us+utc prints it)", v)
}

// probe is one health check's outcome.
type probe struct {
	ok     bool
	status int
	err    error
	body   string
	why    string
}

func (p probe) String() string {
	switch {
	case p.err != nil:
		return p.err.Error()
	case p.status == 0:
		return "no probe yet"
	}
	s := fmt.Sprintf("status %d", p.status)
	if p.why != "" {
		s += ", " + p.why
	}
	if p.body != "" {
		s += ", body " + strconv.Quote(p.body)
	}
	return s
}

// probeOnce GETs the health URL once.
func probeOnce(ctx context.Context, hc *http.Client, url, want string) probe {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return probe{err: fmt.Errorf("bad health URL %q: %v", url, err)}
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return probe{err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxHealthBody))
	p := probe{status: resp.StatusCode, body: truncate(strings.TrimSpace(string(body)), 200)}
	if err != nil {
		p.err = fmt.Errorf("status %d, reading body: %v", resp.StatusCode, err)
		return p
	}
	if resp.StatusCode != http.StatusOK {
		return p
	}
	if got, ok := bodyVersion(body); ok && !SameVersion(got, want) {
		p.why = fmt.Sprintf("version %q, want %q", got, want)
		return p
	}
	p.ok, p.body = true, ""
	return p
}

// bodyVersion returns the "version" field of a JSON object body.
func bodyVersion(body []byte) (string, bool) {
	var v struct {
		Version *json.RawMessage `json:"version"`
	}
	if json.Unmarshal(body, &v) != nil || v.Version == nil {
		return "", false
	}
	var s string
	if json.Unmarshal(*v.Version, &s) != nil {
		return string(*v.Version), true // a number or null never matches
	}
	return s, true
}

// Upstream returns the upstream part of a Debian version: without the
// epoch and the Debian revision ("1:0.2.0-1" -> "0.2.0").
func Upstream(debVersion string) string {
	v := debVersion
	if i := strings.IndexByte(v, ':'); i >= 0 {
		v = v[i+1:]
	}
	if i := strings.LastIndexByte(v, '-'); i >= 0 {
		v = v[:i]
	}
	return v
}

// SameVersion reports whether an app's reported version is the upstream
// version of a package. `tandem package` writes a pre-release as 0.2.0~rc1
// for 0.2.0rc1 so it sorts right; the app reports the Python form.
func SameVersion(reported, upstream string) bool {
	return reported == upstream || reported == strings.ReplaceAll(upstream, "~", "")
}

// journal returns the unit's last journal lines, even when ctx is done.
func (gt Gater) journal(ctx context.Context, unit string) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	out, err := gt.run()(ctx, nil, "journalctl", "--unit", unit, "--lines", strconv.Itoa(tailLines), "--no-pager", "--output", "short-iso")
	if err != nil {
		return fmt.Sprintf("  (journalctl failed: %v)\n%s", err, tail(out, 5))
	}
	return tail(out, tailLines)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
