package guard

import (
	"bufio"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// sampleMeta is a "# failJSON:" comment: what the next line must give.
type sampleMeta struct {
	Match bool     `json:"match"`
	Host  string   `json:"host"`
	Modes []string `json:"modes"` // the modes it matches in; empty: every mode
	Desc  string   `json:"desc"`
}

type sample struct {
	meta   sampleMeta
	line   string
	lineNo int
}

var metaLine = regexp.MustCompile(`^#+ ?(failJSON|filterOptions): *(.+)$`)

// readSamples reads a testdata file in fail2ban's failJSON format.
func readSamples(t *testing.T, path string) (modes []string, samples []sample) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var pending *sampleMeta
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if m := metaLine.FindStringSubmatch(line); m != nil {
			switch m[1] {
			case "failJSON":
				pending = &sampleMeta{}
				if err := json.Unmarshal([]byte(m[2]), pending); err != nil {
					t.Fatalf("%s:%d: failJSON: %v", path, n, err)
				}
			case "filterOptions":
				var opts []map[string]string
				if err := json.Unmarshal([]byte(m[2]), &opts); err != nil {
					t.Fatalf("%s:%d: filterOptions: %v", path, n, err)
				}
				for _, o := range opts {
					modes = append(modes, o["mode"])
				}
			}
			continue
		}
		if strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "" {
			continue
		}
		if pending == nil {
			t.Fatalf("%s:%d: a sample line without a failJSON comment before it", path, n)
		}
		samples = append(samples, sample{meta: *pending, line: line, lineNo: n})
		pending = nil
	}
	return modes, samples
}

// TestBuiltinSamples runs every built-in filter, in each of its modes,
// over its samples: a failure line must match exactly one regex and name
// its host; any other line must not match; every regex has a sample.
func TestBuiltinSamples(t *testing.T) {
	for _, name := range BuiltinNames() {
		t.Run(name, func(t *testing.T) {
			modes, samples := readSamples(t, filepath.Join("testdata", name))
			if len(samples) == 0 {
				t.Fatal("no samples")
			}
			if !slices.Equal(modes, BuiltinModes(name)) {
				t.Fatalf("filterOptions list modes %v; the filter has %v", modes, BuiltinModes(name))
			}
			for _, mode := range modes {
				f, err := Builtin(name, mode)
				if err != nil {
					t.Fatal(err)
				}
				hits := make([]int, len(f.rules))
				for _, s := range samples {
					want := s.meta.Match && (len(s.meta.Modes) == 0 || slices.Contains(s.meta.Modes, mode))
					prog, msg := SplitSyslog([]byte(s.line))
					res := f.Match(prog, msg)
					if res.Match != want {
						t.Errorf("mode %s, line %d (%s): match = %v; want %v\n  %s", mode, s.lineNo, s.meta.Desc, res.Match, want, s.line)
						continue
					}
					if !want {
						continue
					}
					if host := netip.MustParseAddr(s.meta.Host); res.Addr != host {
						t.Errorf("mode %s, line %d (%s): host %v; want %v", mode, s.lineNo, s.meta.Desc, res.Addr, host)
					}
					matching := 0
					for i, r := range f.rules {
						if loc := r.re.FindSubmatchIndex(msg); loc != nil {
							matching++
							hits[i]++
						}
					}
					if matching != 1 {
						t.Errorf("mode %s, line %d (%s): %d regexes match; want exactly 1", mode, s.lineNo, s.meta.Desc, matching)
					}
				}
				for i, h := range hits {
					if h == 0 {
						t.Errorf("mode %s: regex %d has no sample: %s", mode, i, f.rules[i].src)
					}
				}
			}
		})
	}
}
