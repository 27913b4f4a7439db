package shellwords

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestSplit(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr string
	}{
		{in: "", want: nil},
		{in: "   \t ", want: nil},
		{in: " \r\n\t", want: nil},
		{in: "/usr/local/bin/notify", want: []string{"/usr/local/bin/notify"}},
		{in: "  /bin/notify  a\tb  ", want: []string{"/bin/notify", "a", "b"}},
		{in: "a\nb\r\nc", want: []string{"a", "b", "c"}},
		{in: `/bin/notify 'two words' "x y"`, want: []string{"/bin/notify", "two words", "x y"}},
		{in: `a 'it''s' b`, want: []string{"a", "its", "b"}},
		{in: `a "say \"hi\" \$HOME \n"`, want: []string{"a", `say "hi" $HOME \n`}},
		{in: `a 'no \escapes "here"'`, want: []string{"a", `no \escapes "here"`}},
		{in: `a b\ c \'d`, want: []string{"a", "b c", "'d"}},
		{in: `a '' ""`, want: []string{"a", "", ""}},
		{in: "a \\\nb", want: []string{"a", "b"}},
		{in: "a\\\nb", want: []string{"ab"}},
		{in: "'a\nb' \"c\nd\"", want: []string{"a\nb", "c\nd"}},
		{in: `pre"mid"'post'`, want: []string{"premidpost"}},
		{in: `$HOME *.sh ~`, want: []string{"$HOME", "*.sh", "~"}}, // nothing is expanded
		{in: `gunicorn app:wsgi --bind "127.0.0.1:8000" --name 'my site' --env A=\$B --pct 50%`,
			want: []string{"gunicorn", "app:wsgi", "--bind", "127.0.0.1:8000", "--name", "my site", "--env", "A=$B", "--pct", "50%"}},
		{in: `a 'open`, wantErr: "unterminated quote: no closing '"},
		{in: `a "open`, wantErr: `unterminated quote: no closing "`},
		{in: `a "esc\"`, wantErr: "unterminated quote"},
		{in: `a \`, wantErr: "trailing backslash"},
	}
	for _, tt := range tests {
		got, err := Split(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Split(%q) = %q, %v; want error %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("Split(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestSplitErrorsWrapSentinels(t *testing.T) {
	for in, want := range map[string]error{`'x`: ErrUnterminatedQuote, `"x`: ErrUnterminatedQuote, `x\`: ErrTrailingBackslash} {
		if _, err := Split(in); !errors.Is(err, want) {
			t.Errorf("Split(%q) = %v, want %v", in, err, want)
		}
	}
}

// quote renders w as a single-quoted shell word.
func quote(w string) string { return "'" + strings.ReplaceAll(w, "'", `'\''`) + "'" }

// FuzzSplit: never panics, and quoting words then splitting gives the words
// back.
func FuzzSplit(f *testing.F) {
	f.Add(`/bin/notify 'a b' "c \" d" e\ f`, "x'y")
	f.Add(`"`, "")
	f.Add(`\`, "\n")
	f.Fuzz(func(t *testing.T, line, word string) {
		words, err := Split(line)
		if err == nil {
			var quoted []string
			for _, w := range words {
				quoted = append(quoted, quote(w))
			}
			again, err := Split(strings.Join(quoted, " "))
			if err != nil || !slices.Equal(again, words) {
				t.Fatalf("re-split of %q = %q, %v; want %q", line, again, err, words)
			}
		}
		in := []string{"/bin/hook", word, word + " tail"}
		var quoted []string
		for _, w := range in {
			quoted = append(quoted, quote(w))
		}
		got, err := Split(strings.Join(quoted, "  "))
		if err != nil || !slices.Equal(got, in) {
			t.Fatalf("Split(quoted %q) = %q, %v", in, got, err)
		}
	})
}
