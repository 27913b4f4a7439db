package debpkg

import (
	"strings"
	"testing"
	"unicode/utf8"
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

// FuzzDeriveSynopsis: whatever [project].description says, the derived
// synopsis passes the checks lintian would make.
func FuzzDeriveSynopsis(f *testing.F) {
	for _, s := range []string{"The basic blog app.", "flaskr", "", "A", "Stores things etc.", "a. b. c.", "x\ty"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			return
		}
		got, _ := DeriveSynopsis(s, "flaskr", "flaskr")
		if err := CheckSynopsis(got, "flaskr"); err != nil {
			t.Fatalf("DeriveSynopsis(%q) = %q: %v", s, got, err)
		}
	})
}

// FuzzLongDescription: a readme becomes Description lines within
// lintian's width, none starting with "." (a dpkg control statement).
func FuzzLongDescription(f *testing.F) {
	for _, s := range []string{"# T\n\nSome *text* [link](u).\n\n- a\n- b\n", "T\n=\n\n.. x::\n\n   y\n\n.env file", "```\ncode\n```\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			return
		}
		out := wrapText(LongDescription(s, "x y"), 78)
		for _, l := range strings.Split(out, "\n") {
			l = strings.TrimSpace(l) // as nfpm writes it
			if utf8.RuneCountInString(" "+l) > maxDescWidth {
				t.Fatalf("line too long: %q", l)
			}
			if strings.HasPrefix(l, ".") {
				t.Fatalf("line starts with a dot: %q", l)
			}
		}
	})
}
