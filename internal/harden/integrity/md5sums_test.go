package integrity

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
)

func TestParseMD5Sums(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []string // "hex path"
		wantErr string
	}{
		{name: "dpkg's form", in: "7210080490f9fd139c1b44fa0f730988  bin/bash\n12c7981c8fed81743552e47dd4b1483e  usr/bin/bashbug\n",
			want: []string{"7210080490f9fd139c1b44fa0f730988 /bin/bash", "12c7981c8fed81743552e47dd4b1483e /usr/bin/bashbug"}},
		{name: "binary mark and spaces in the name", in: "7210080490f9fd139c1b44fa0f730988 *usr/share/a b.txt\n",
			want: []string{"7210080490f9fd139c1b44fa0f730988 /usr/share/a b.txt"}},
		{name: "escaped name", in: `\7210080490f9fd139c1b44fa0f730988  usr/share/a\\b\nc` + "\n",
			want: []string{"7210080490f9fd139c1b44fa0f730988 /usr/share/a\\b\nc"}},
		{name: "blank lines", in: "\n\n", want: nil},
		{name: "short line", in: "abc  x\n", wantErr: "line 1"},
		{name: "not hex", in: "zz10080490f9fd139c1b44fa0f730988  bin/bash\n", wantErr: "not hex"},
		{name: "one space", in: "7210080490f9fd139c1b44fa0f730988 bin/bash\n", wantErr: "two spaces"},
		{name: "leaves root", in: "7210080490f9fd139c1b44fa0f730988  ../etc/shadow\n", wantErr: "leaves /"},
		{name: "NUL", in: "7210080490f9fd139c1b44fa0f730988  bin/ba\x00sh\n", wantErr: "NUL"},
		{name: "bad escape", in: `\7210080490f9fd139c1b44fa0f730988  a\x` + "\n", wantErr: "escape"},
		{name: "second line bad", in: "7210080490f9fd139c1b44fa0f730988  bin/bash\nnope\n", wantErr: "line 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMD5Sums([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var gotS []string
			for _, e := range got {
				gotS = append(gotS, hex.EncodeToString(e.Sum[:])+" "+e.Path)
			}
			if fmt.Sprint(gotS) != fmt.Sprint(tt.want) {
				t.Errorf("got %q, want %q", gotS, tt.want)
			}
		})
	}
}

// FuzzParseMD5Sums: md5sums files come from packages, which anyone can
// build. The parser never panics, never returns a path outside /, and what
// it returns written back in dpkg's form parses to the same entries.
func FuzzParseMD5Sums(f *testing.F) {
	f.Add([]byte("7210080490f9fd139c1b44fa0f730988  bin/bash\n12c7981c8fed81743552e47dd4b1483e  usr/bin/bashbug\n"))
	f.Add([]byte(`\7210080490f9fd139c1b44fa0f730988  usr/a\\b\nc` + "\n"))
	f.Add([]byte("7210080490f9fd139c1b44fa0f730988 *a/../../b\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := ParseMD5Sums(data)
		if err != nil {
			return
		}
		var b bytes.Buffer
		for _, e := range entries {
			if !strings.HasPrefix(e.Path, "/") || strings.Contains(e.Path, "/../") || strings.HasSuffix(e.Path, "/..") || e.Path == "/" {
				t.Fatalf("path %q is not a clean path under /", e.Path)
			}
			name := strings.TrimPrefix(e.Path, "/")
			prefix := ""
			if strings.ContainsAny(name, "\\\n") {
				prefix = `\`
				name = strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(name)
			}
			fmt.Fprintf(&b, "%s%s  %s\n", prefix, hex.EncodeToString(e.Sum[:]), name)
		}
		again, err := ParseMD5Sums(b.Bytes())
		if err != nil {
			t.Fatalf("re-parsing %q: %v", b.String(), err)
		}
		if len(again) != len(entries) {
			t.Fatalf("re-parsed %d entries, want %d", len(again), len(entries))
		}
		for i := range again {
			if again[i] != entries[i] {
				t.Fatalf("entry %d: %+v, then %+v", i, entries[i], again[i])
			}
		}
	})
}
