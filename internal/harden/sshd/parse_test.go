package sshd

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
)

func TestParseEffective(t *testing.T) {
	real, err := os.ReadFile("testdata/sshd-T-debian12.txt")
	if err != nil {
		t.Fatal(err)
	}
	eff, err := ParseEffective(real)
	if err != nil {
		t.Fatalf("Debian 12's sshd -T: %v", err)
	}
	if v, _ := eff.Get("permitrootlogin"); v != "without-password" {
		t.Errorf("permitrootlogin %q", v)
	}
	if got := eff["listenaddress"]; !slices.Equal(got, []string{"[::]:22", "0.0.0.0:22"}) {
		t.Errorf("listenaddress %q: repeated keywords keep every line", got)
	}
	if got := eff.List("ciphers"); len(got) != 6 || got[0] != "chacha20-poly1305@openssh.com" {
		t.Errorf("ciphers %q", got)
	}
	if got := eff["acceptenv"]; !slices.Equal(got, []string{"LANG", "LC_*"}) {
		t.Errorf("acceptenv %q, want one value per line", got)
	}
	if eff, err := ParseEffective([]byte("banner\n")); err != nil || !slices.Equal(eff["banner"], []string{""}) {
		t.Errorf("a keyword without a value: %q, %v", eff["banner"], err)
	}

	tests := []struct {
		name, in, wantErr string
	}{
		{"a warning in the output", "port 22\nWARNING: something\n", "line 2"},
		{"a keyword with punctuation", "port 22\nfoo-bar x\n", "line 2"},
		{"too big", strings.Repeat("x", maxEffective+1), "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseEffective([]byte(tt.in)); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// FuzzParseEffective: sshd -T's output carries values from the
// configuration. The parser never panics, and what it returns, printed
// back as sshd does, parses to the same.
func FuzzParseEffective(f *testing.F) {
	if real, err := os.ReadFile("testdata/sshd-T-debian12.txt"); err == nil {
		f.Add(real)
	}
	f.Add([]byte("port 22\nport 2222\nacceptenv\n"))
	f.Add([]byte("permitrootlogin no\r\n\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		eff, err := ParseEffective(data)
		if err != nil {
			return
		}
		var b strings.Builder
		for _, key := range slices.Sorted(func(yield func(string) bool) {
			for k := range eff {
				if !yield(k) {
					return
				}
			}
		}) {
			if !isKeyword(key) {
				t.Fatalf("keyword %q", key)
			}
			for _, v := range eff[key] {
				if strings.ContainsAny(v, "\n") {
					t.Fatalf("value %q of %s spans lines", v, key)
				}
				fmt.Fprintf(&b, "%s %s\n", key, v)
			}
		}
		again, err := ParseEffective([]byte(b.String()))
		if err != nil {
			t.Fatalf("re-parsing %q: %v", b.String(), err)
		}
		if len(again) != len(eff) {
			t.Fatalf("re-parsed %d keywords, want %d", len(again), len(eff))
		}
		for k, v := range eff {
			if !slices.Equal(again[k], v) {
				t.Fatalf("%s: %q, then %q", k, v, again[k])
			}
		}
	})
}

// FuzzParseConfig: the configuration scanner never panics and keeps
// keywords lower case and Match blocks labelled.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(debianMain + "Match User x\n  PasswordAuthentication=yes\n"))
	f.Add([]byte("Match\nInclude a b\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		settings, err := parseConfig("/etc/ssh/sshd_config", data, "")
		if err != nil {
			return
		}
		for _, s := range settings {
			if s.Keyword != strings.ToLower(s.Keyword) || s.Keyword == "match" || s.Line < 1 {
				t.Fatalf("setting %+v", s)
			}
		}
	})
}
