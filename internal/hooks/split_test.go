package hooks

import (
	"slices"
	"strings"
	"testing"
)

func TestSplitCommand(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr string
	}{
		{in: "", want: nil},
		{in: "   \t ", want: nil},
		{in: "/usr/local/bin/notify", want: []string{"/usr/local/bin/notify"}},
		{in: "  /bin/notify  a\tb  ", want: []string{"/bin/notify", "a", "b"}},
		{in: `/bin/notify 'two words' "x y"`, want: []string{"/bin/notify", "two words", "x y"}},
		{in: `a 'it''s' b`, want: []string{"a", "its", "b"}},
		{in: `a "say \"hi\" \$HOME \n"`, want: []string{"a", `say "hi" $HOME \n`}},
		{in: `a 'no \escapes "here"'`, want: []string{"a", `no \escapes "here"`}},
		{in: `a b\ c \'d`, want: []string{"a", "b c", "'d"}},
		{in: `a '' ""`, want: []string{"a", "", ""}},
		{in: "a \\\nb", want: []string{"a", "b"}},
		{in: `pre"mid"'post'`, want: []string{"premidpost"}},
		{in: `$HOME *.sh ~`, want: []string{"$HOME", "*.sh", "~"}}, // nothing is expanded
		{in: `a 'open`, wantErr: "unterminated quote"},
		{in: `a "open`, wantErr: "unterminated quote"},
		{in: `a "esc\"`, wantErr: "unterminated quote"},
		{in: `a \`, wantErr: "trailing backslash"},
	}
	for _, tt := range tests {
		got, err := SplitCommand(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("SplitCommand(%q) = %q, %v; want error %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("SplitCommand(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

// quote renders w as a single-quoted shell word.
func quote(w string) string { return "'" + strings.ReplaceAll(w, "'", `'\''`) + "'" }

// FuzzSplitCommand: never panics, and quoting words then splitting gives
// the words back.
func FuzzSplitCommand(f *testing.F) {
	f.Add(`/bin/notify 'a b' "c \" d" e\ f`, "x'y")
	f.Add(`"`, "")
	f.Add(`\`, "\n")
	f.Fuzz(func(t *testing.T, line, word string) {
		words, err := SplitCommand(line)
		if err == nil {
			var quoted []string
			for _, w := range words {
				quoted = append(quoted, quote(w))
			}
			again, err := SplitCommand(strings.Join(quoted, " "))
			if err != nil || !slices.Equal(again, words) {
				t.Fatalf("re-split of %q = %q, %v; want %q", line, again, err, words)
			}
		}
		in := []string{"/bin/hook", word, word + " tail"}
		var quoted []string
		for _, w := range in {
			quoted = append(quoted, quote(w))
		}
		got, err := SplitCommand(strings.Join(quoted, "  "))
		if err != nil || !slices.Equal(got, in) {
			t.Fatalf("SplitCommand(quoted %q) = %q, %v", in, got, err)
		}
	})
}
