package debpkg

import (
	"strings"
	"testing"
)

// FuzzSplitCommand: [tool.tandem].service comes from the project; splitting
// it never panics, and quoting each word for ExecStart keeps one line.
func FuzzSplitCommand(f *testing.F) {
	for _, s := range []string{`gunicorn app:wsgi --bind "127.0.0.1:8000"`, `a 'b c' d\ e "f\"g" 50%`, `x "$HOME" ;`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		words, err := SplitCommand(s)
		if err != nil {
			return
		}
		if len(words) == 0 {
			t.Fatal("no words and no error")
		}
		j := JoinCommand(words)
		if strings.ContainsAny(j, "\n\r") && !strings.ContainsAny(s, "\n\r") {
			t.Fatalf("JoinCommand(%q) spans lines: %q", words, j)
		}
		if strings.Contains(strings.ReplaceAll(j, "%%", ""), "%") {
			t.Fatalf("unescaped specifier in %q", j)
		}
	})
}

// FuzzFromPEP440: whatever it accepts is a valid Debian version.
func FuzzFromPEP440(f *testing.F) {
	for _, s := range []string{"1.2.3", "1.0rc1.dev2", "1!2.0.post3+local.7", "0.0.0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := FromPEP440(s)
		if err != nil {
			return
		}
		if err := ValidateVersion(v); err != nil {
			t.Fatalf("FromPEP440(%q) = %q: %v", s, v, err)
		}
	})
}
