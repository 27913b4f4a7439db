package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadToken(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	plain := file("plain", "tandem1.abc.def.ghi\n")
	initLine := file("init", "app tandem1.abc.def.ghi\n")
	empty := file("empty", " \n")
	tests := []struct {
		name, token, file, stdin, want, err string
	}{
		{"file", "", plain, "", "tandem1.abc.def.ghi", ""},
		{"init's line", "", initLine, "", "tandem1.abc.def.ghi", ""},
		{"stdin", "", "-", "  tandem1.abc.def.ghi\n", "tandem1.abc.def.ghi", ""},
		{"flag", " tandem1.abc.def.ghi ", "", "", "tandem1.abc.def.ghi", ""},
		{"both", "t", plain, "", "", "not both"},
		{"neither", "", "", "", "", "--token-file"},
		{"empty file", "", empty, "", "", "is empty"},
		{"missing file", "", filepath.Join(dir, "nope"), "", "", "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &env{stdin: strings.NewReader(tt.stdin)}
			got, err := readToken(e, tt.token, tt.file)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("readToken = %q, %v; want an error containing %q", got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("readToken = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}
