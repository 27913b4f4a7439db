// Package exec moves the floating IP with the operator's own scripts: one to
// acquire, one to release and one that prints which node holds the IP.
//
// Every script gets TANDEM_VIP and TANDEM_NODE in its environment, runs with a
// timeout in its own process group (so a cancelled call also stops the
// script's children), and has its output captured for error messages.
package exec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	osexec "os/exec"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"
)

// Options configures a Provider.
type Options struct {
	// VIP is the floating IP (or any name for it); scripts see it as TANDEM_VIP.
	VIP string
	// Node is this node's name; scripts see it as TANDEM_NODE, and the holder
	// script's output is compared to it.
	Node string
	// Acquire, Release and Holder are argv vectors. Acquire and Holder are
	// required; an empty Release makes Release a no-op.
	Acquire, Release, Holder []string
	// Timeout bounds one script run (default 30s).
	Timeout time.Duration
	// PollInterval is how often Acquire runs the holder script until it
	// reports this node (default 500ms).
	PollInterval time.Duration
	Logger       *slog.Logger
}

// Provider runs scripts; it is safe for concurrent use.
type Provider struct {
	o Options
}

// New checks the options and returns a Provider.
func New(o Options) (*Provider, error) {
	if len(o.Acquire) == 0 || o.Acquire[0] == "" {
		return nil, errors.New("exec vip: acquire command is empty; set the acquire script's argv")
	}
	if len(o.Holder) == 0 || o.Holder[0] == "" {
		return nil, errors.New("exec vip: holder command is empty; set a script that prints the holding node's name")
	}
	if err := checkName(o.Node); err != nil {
		return nil, fmt.Errorf("exec vip: node name: %w", err)
	}
	if o.Logger == nil {
		return nil, errors.New("exec vip: Logger is nil")
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 500 * time.Millisecond
	}
	return &Provider{o: o}, nil
}

// Acquire runs the acquire script, then the holder script until it names this
// node or ctx ends.
func (p *Provider) Acquire(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("acquire %s: %w", p.o.VIP, err)
	}
	if _, err := p.run(ctx, "acquire", p.o.Acquire); err != nil {
		return fmt.Errorf("acquire %s: %w", p.o.VIP, err)
	}
	for {
		held, err := p.Held(ctx)
		if err != nil {
			return fmt.Errorf("acquire %s: confirm: %w", p.o.VIP, err)
		}
		if held {
			p.o.Logger.Info("vip acquired", "vip", p.o.VIP, "provider", "exec")
			return nil
		}
		t := time.NewTimer(p.o.PollInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("acquire %s: holder script does not report %q yet: %w", p.o.VIP, p.o.Node, ctx.Err())
		case <-t.C:
		}
	}
}

// Release runs the release script, if one is configured.
func (p *Provider) Release(ctx context.Context) error {
	if len(p.o.Release) == 0 {
		return nil
	}
	if _, err := p.run(ctx, "release", p.o.Release); err != nil {
		return fmt.Errorf("release %s: %w", p.o.VIP, err)
	}
	return nil
}

// Held runs the holder script and compares its output to this node's name.
func (p *Provider) Held(ctx context.Context) (bool, error) {
	out, err := p.run(ctx, "holder", p.o.Holder)
	if err != nil {
		return false, fmt.Errorf("holder of %s: %w", p.o.VIP, err)
	}
	name, err := ParseHolder(out)
	if err != nil {
		return false, fmt.Errorf("holder of %s: %w", p.o.VIP, err)
	}
	return name == p.o.Node, nil
}

const maxOutput = 64 << 10

// run executes argv and returns its stdout; on failure the error carries the
// tail of stderr (or stdout) so the operator sees why.
func (p *Provider) run(ctx context.Context, what string, argv []string) ([]byte, error) {
	parent := ctx
	ctx, cancel := context.WithTimeoutCause(ctx, p.o.Timeout, fmt.Errorf("timed out after %v", p.o.Timeout))
	defer cancel()
	cmd := osexec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "TANDEM_VIP="+p.o.VIP, "TANDEM_NODE="+p.o.Node, "TANDEM_ACTION="+what)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Kill the whole process group: a script's children would otherwise keep
	// its pipes open and hold Wait up.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	var stdout, stderr capped
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	p.o.Logger.Debug("vip script", "action", what, "argv", argv, "took", time.Since(start), "err", err)
	if err != nil {
		if parent.Err() != nil {
			return nil, fmt.Errorf("%s script %s: %w", what, argv[0], parent.Err())
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s script %s: %w", what, argv[0], context.Cause(ctx))
		}
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		if msg != "" {
			return nil, fmt.Errorf("%s script %s: %w: %s", what, argv[0], err, msg)
		}
		return nil, fmt.Errorf("%s script %s: %w", what, argv[0], err)
	}
	return stdout.Bytes(), nil
}

// capped keeps the first maxOutput bytes written and drops the rest.
type capped struct{ bytes.Buffer }

func (c *capped) Write(b []byte) (int, error) {
	if room := maxOutput - c.Len(); room > 0 {
		c.Buffer.Write(b[:min(len(b), room)])
	}
	return len(b), nil
}

// ParseHolder reads a holder script's output: one node name, or nothing when
// no node holds the IP. Surrounding blank lines and spaces are ignored; more
// than one name, or bytes that cannot be part of a name, are an error rather
// than a guess.
func ParseHolder(out []byte) (string, error) {
	s := strings.TrimSpace(string(out))
	if s == "" {
		return "", nil
	}
	if strings.ContainsAny(s, "\r\n") {
		return "", fmt.Errorf("holder script printed several lines (%q); it must print only the holding node's name", truncate(s))
	}
	if err := checkName(s); err != nil {
		return "", fmt.Errorf("holder script output %q: %w", truncate(s), err)
	}
	return s, nil
}

func checkName(s string) error {
	switch {
	case s == "":
		return errors.New("empty")
	case len(s) > 253:
		return errors.New("longer than 253 bytes")
	case !utf8.ValidString(s):
		return errors.New("not valid UTF-8")
	}
	for _, r := range s {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return fmt.Errorf("contains %q; a node name has no spaces or control characters", r)
		}
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// Close releases nothing and exists so every provider is an io.Closer.
func (p *Provider) Close() error { return nil }
