package cli

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tandem-ha/tandem/internal/config"
	"github.com/tandem-ha/tandem/internal/guard"
)

// guardTestReport is `tandem guard test --json`'s output. Field names are stable.
type guardTestReport struct {
	Filter  string          `json:"filter"`
	Log     string          `json:"log"`
	Lines   uint64          `json:"lines"`
	Matched uint64          `json:"matched"`
	Missed  uint64          `json:"missed"`
	Ignored uint64          `json:"ignored"`
	Regexes []guardTestRule `json:"regexes"`
	Hosts   []guardTestHost `json:"hosts"`
	Seconds float64         `json:"seconds"`
}

type guardTestRule struct {
	Regex string `json:"regex"`
	Hits  uint64 `json:"hits"`
}

type guardTestHost struct {
	Addr     string `json:"addr"`
	Failures uint64 `json:"failures"`
}

func newGuardTestCmd(e *env) *cobra.Command {
	var mode string
	var asJSON, printMatched, printMissed, printIgnored bool
	var maxHosts int
	cmd := &cobra.Command{
		Use:   "test FILTER LOG",
		Short: "Run a filter over a log and show which lines match and which hosts they name, like fail2ban-regex",
		Long: `test reads LOG (a file, or - for standard input) through FILTER and prints
how many lines were read, matched (a failure of the host shown), missed and
ignored (matched, but exempted by an ignoreregex), how often each regex
hit, and the hosts found with their failure counts.

FILTER is a built-in filter (` + strings.Join(guard.BuiltinNames(), ", ") + `),
a [[guard.filter]] of the configuration, or a regex with <HOST>, such as
'Login failed for .* from <HOST>$'. Regexes use Go's RE2 syntax and match
from the start of the message; lines in syslog format (auth.log) are
matched after their "date host program[pid]: " prefix.

It needs no running agent and changes nothing.`,
		Example: `  tandem guard test sshd /var/log/auth.log
  journalctl -t sshd -o short | tandem guard test sshd - --mode aggressive
  tandem guard test 'Login failed for .* from <HOST>$' app.log --print-matched`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := guardTestFilter(e, args[0], mode)
			if err != nil {
				return &UsageError{Err: err}
			}
			in, name := e.stdin, "standard input"
			if args[1] != "-" {
				file, err := os.Open(args[1])
				if err != nil {
					return &UsageError{Err: fmt.Errorf("open log: %w", err)}
				}
				defer file.Close()
				in, name = file, args[1]
			}
			show := func(kind string, line []byte) {}
			if printMatched || printMissed || printIgnored {
				show = func(kind string, line []byte) {
					if (kind == "matched" && printMatched) || (kind == "missed" && printMissed) || (kind == "ignored" && printIgnored) {
						fmt.Fprintf(e.stdout, "%s: %s\n", kind, strings.ToValidUTF8(string(line), "\uFFFD"))
					}
				}
			}
			r, err := runGuardTest(f, in, show)
			if err != nil {
				return fmt.Errorf("read %s: %w", name, err)
			}
			r.Log = name
			if asJSON {
				return writeJSON(e.stdout, r)
			}
			printGuardTest(e.stdout, r, maxHosts)
			return nil
		},
	}
	cmd.Flags().StringVar(&mode, "mode", "", "mode of a built-in filter (sshd: normal, ddos, extra, aggressive; nginx-*: normal, aggressive)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (stable field names) instead of text")
	cmd.Flags().BoolVar(&printMatched, "print-matched", false, "print every matched line")
	cmd.Flags().BoolVar(&printMissed, "print-missed", false, "print every line no regex matched")
	cmd.Flags().BoolVar(&printIgnored, "print-ignored", false, "print every line an ignoreregex exempted")
	cmd.Flags().IntVar(&maxHosts, "hosts", 20, "hosts to list in the text output, most failures first (0: all)")
	return cmd
}

// guardTestFilter resolves FILTER: a regex with <HOST>, a built-in filter,
// or a [[guard.filter]] of the configuration.
func guardTestFilter(e *env, name, mode string) (*guard.Filter, error) {
	if strings.Contains(name, guard.HostTag) {
		if mode != "" {
			return nil, errors.New("--mode applies to built-in filters, not to a regex")
		}
		f, err := guard.Regex(name)
		if err != nil {
			return nil, fmt.Errorf("regex %q: %w", name, err)
		}
		return f, nil
	}
	if guard.IsBuiltin(name) {
		return guard.Builtin(name, mode)
	}
	cfg, err := config.Load(e.configPath)
	if err != nil {
		return nil, fmt.Errorf("%q is neither a built-in filter (%s) nor a regex with %s, and the configuration that might define it does not load: %w",
			name, strings.Join(guard.BuiltinNames(), ", "), guard.HostTag, err)
	}
	return guard.ResolveFilter(name, mode, cfg.GuardEngine().Filters)
}

// runGuardTest runs f over every line of in.
func runGuardTest(f *guard.Filter, in io.Reader, show func(kind string, line []byte)) (*guardTestReport, error) {
	start := time.Now()
	rules := f.Rules()
	hits := make([]uint64, len(rules))
	hosts := map[netip.Addr]uint64{}
	r := &guardTestReport{Filter: f.Name()}
	lr := guard.NewLineReader(in, 0)
	for {
		line, err := lr.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				if line = lr.Rest(); line == nil {
					break
				}
			} else {
				return nil, err
			}
		}
		r.Lines++
		prog, msg := guard.SplitSyslog(line)
		res := f.Match(prog, msg)
		switch {
		case res.Match:
			r.Matched++
			hits[res.Rule]++
			hosts[res.Addr]++
			show("matched", line)
		case res.Ignored:
			r.Ignored++
			hits[res.Rule]++
			show("ignored", line)
		default:
			r.Missed++
			show("missed", line)
		}
	}
	r.Seconds = time.Since(start).Seconds()
	for i, src := range rules {
		r.Regexes = append(r.Regexes, guardTestRule{Regex: src, Hits: hits[i]})
	}
	for a, n := range hosts {
		r.Hosts = append(r.Hosts, guardTestHost{Addr: a.String(), Failures: n})
	}
	slices.SortFunc(r.Hosts, func(a, b guardTestHost) int {
		return cmp.Or(cmp.Compare(b.Failures, a.Failures), strings.Compare(a.Addr, b.Addr))
	})
	if r.Regexes == nil {
		r.Regexes = []guardTestRule{}
	}
	if r.Hosts == nil {
		r.Hosts = []guardTestHost{}
	}
	return r, nil
}

func printGuardTest(w io.Writer, r *guardTestReport, maxHosts int) {
	fmt.Fprintf(w, "Filter: %s\nLog:    %s\n\n", r.Filter, r.Log)
	fmt.Fprintf(w, "Lines: %d read, %d matched, %d missed, %d ignored\n\n", r.Lines, r.Matched, r.Missed, r.Ignored)
	fmt.Fprintln(w, "Regexes: [hits] regex")
	for i, rule := range r.Regexes {
		fmt.Fprintf(w, "  %2d) [%d] %s\n", i+1, rule.Hits, rule.Regex)
	}
	fmt.Fprintf(w, "\nHosts: %d\n", len(r.Hosts))
	for i, h := range r.Hosts {
		if maxHosts > 0 && i == maxHosts {
			fmt.Fprintf(w, "  ... and %d more (--hosts 0 lists all)\n", len(r.Hosts)-i)
			break
		}
		fmt.Fprintf(w, "  %-39s %d\n", h.Addr, h.Failures)
	}
	rate := 0.0
	if r.Seconds > 0 {
		rate = float64(r.Lines) / r.Seconds
	}
	fmt.Fprintf(w, "\nRead in %.3fs (%.0f lines/s)\n", r.Seconds, rate)
}
