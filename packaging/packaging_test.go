package packaging

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/tandem-ha/tandem/internal/config"
)

// commentedSetting matches "# key = value" and "# [table]" lines of the
// sample; prose comments do not match.
var commentedSetting = regexp.MustCompile(`^#\s?((\[\[?[a-z_.]+\]\]?)|([a-z_]+\s*=.*))$`)

// TestSampleConfigKeysExist uncomments every setting of the shipped sample
// and checks that config knows every key, so the sample cannot drift from
// the schema.
func TestSampleConfigKeysExist(t *testing.T) {
	var b strings.Builder
	n := 0
	for _, line := range strings.Split(string(Config), "\n") {
		if m := commentedSetting.FindStringSubmatch(strings.TrimSpace(line)); m != nil {
			b.WriteString(m[1] + "\n")
			n++
		}
	}
	if n < 20 {
		t.Fatalf("found only %d commented settings in the sample; the pattern no longer matches its style", n)
	}
	_, err := config.Parse("packaging/tandem.toml", []byte(b.String()))
	var errs config.Errors
	if err != nil && !errors.As(err, &errs) {
		t.Fatalf("uncommented sample does not parse: %v\n%s", err, b.String())
	}
	for _, e := range errs {
		if strings.Contains(e.Msg, "unknown key") || strings.Contains(e.Msg, "syntax") || strings.Contains(e.Msg, "wrong type") {
			t.Errorf("sample setting does not match the schema: %v", e)
		}
	}
}
