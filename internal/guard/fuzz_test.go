package guard

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzFilterMatch runs every built-in filter, in every mode, over
// arbitrary lines: no panic, and a match names a valid, unmapped address
// whose text is in the line after the syslog prefix.
func FuzzFilterMatch(f *testing.F) {
	f.Add([]byte("Nov 28 21:00:01 web1 sshd[1]: Invalid user 10.0.0.5 from 203.0.113.7 port 22"))
	f.Add([]byte("Nov 28 21:00:01 web1 sshd[1]: Failed password for invalid user \xff\x00 from ::ffff:203.0.113.7 port 1 ssh2"))
	f.Add([]byte(`2026/11/28 21:00:01 [error] 1#1: *1 user "a": password mismatch, client: 2001:db8::1, server: x`))
	f.Add([]byte(`203.0.113.7 - - [x] "GET /.env HTTP/1.1" 404 1`))
	f.Add([]byte(`Nov 28 21:00:01 web1 tandem[1]: level=WARN msg="webhook refused" status=401 remote=[::1]:1 err=x`))
	var filters []*Filter
	for _, name := range BuiltinNames() {
		for _, mode := range BuiltinModes(name) {
			fl, err := Builtin(name, mode)
			if err != nil {
				f.Fatal(err)
			}
			filters = append(filters, fl)
		}
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		prog, msg := SplitSyslog(line)
		if !bytes.HasSuffix(line, msg) {
			t.Fatalf("message %q is not the end of the line %q", msg, line)
		}
		for _, fl := range filters {
			res := fl.Match(prog, msg)
			if !res.Match {
				continue
			}
			if !res.Addr.IsValid() || res.Addr.Is4In6() || res.Addr.Zone() != "" {
				t.Fatalf("%s: bad address %v from %q", fl.Name(), res.Addr, line)
			}
			if res.Addr.Is4() && !bytes.Contains(msg, []byte(res.Addr.String())) {
				t.Fatalf("%s: address %v is not in %q", fl.Name(), res.Addr, msg)
			}
		}
	})
}

// FuzzUserFilter compiles arbitrary failregex/ignoreregex pairs as a
// [[guard.filter]] and runs them: errors, never panics.
func FuzzUserFilter(f *testing.F) {
	f.Add(`^Login failed for .* from <HOST>$`, `test`, "Login failed for x from 203.0.113.7")
	f.Add(`(?P<host>x)<HOST>`, ``, "x")
	f.Add(`<HOST><HOST>`, `<HOST>`, "")
	f.Add(`(?=look)<HOST>`, ``, "")
	f.Add(`a{1001}<HOST>`, ``, "")
	f.Fuzz(func(t *testing.T, fail, ignore, line string) {
		spec := FilterSpec{Name: "u", FailRegex: []string{fail}}
		if ignore != "" {
			spec.IgnoreRegex = []string{ignore}
		}
		fl, err := NewFilter(spec)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an error without a message")
			}
			return
		}
		res := fl.Match("", []byte(line))
		if res.Match && !res.Addr.IsValid() {
			t.Fatalf("match without an address: %q on %q", fail, line)
		}
	})
}

// FuzzExportReader parses arbitrary bytes as journalctl's export format:
// no panic, no runaway memory, values within their cap.
func FuzzExportReader(f *testing.F) {
	f.Add(exportEntry("__CURSOR", "c", "SYSLOG_IDENTIFIER", "sshd", "MESSAGE", "Invalid user a from 203.0.113.7 port 22"))
	f.Add(exportEntry("MESSAGE", []byte("bin\x00ary\n"), "_COMM", "sshd"))
	f.Add([]byte("MESSAGE\n\xff\xff\xff\xff\xff\xff\xff\x7f"))
	f.Add([]byte("\n\n\nA=\n\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		x := NewExportReader(bytes.NewReader(in))
		var e JournalEntry
		for range 10000 {
			err := x.Next(&e)
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, ErrCorrupt) {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if len(e.Message) > maxJournalField || len(e.Identifier) > maxJournalField {
				t.Fatalf("a value over the cap: %d", len(e.Message))
			}
		}
	})
}

// FuzzLineReader checks that the lines read from a stream in chunks are
// the stream's lines (cut to the buffer's size).
func FuzzLineReader(f *testing.F) {
	f.Add([]byte("a\nbb\r\n\nccc"), uint8(3))
	f.Add([]byte(strings.Repeat("x", 100)+"\ny\n"), uint8(1))
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		const size = 16
		lr := NewLineReader(&chunked{b: in, n: int(chunk%7) + 1}, size)
		var got []string
		for {
			line, err := lr.Next()
			if err != nil {
				break
			}
			got = append(got, string(line))
		}
		if rest := lr.Rest(); rest != nil {
			got = append(got, string(rest))
		}
		var want []string
		parts := strings.Split(string(in), "\n")
		for i, p := range parts {
			if i == len(parts)-1 && p == "" {
				break
			}
			if len(p) >= size { // overlong: cut at the buffer, as read
				p = p[:size]
			} else {
				p = strings.TrimSuffix(p, "\r")
			}
			want = append(want, p)
		}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Fatalf("lines %q; want %q", got, want)
		}
	})
}

// chunked returns at most n bytes per Read.
type chunked struct {
	b []byte
	n int
}

func (c *chunked) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), c.n)], c.b)
	c.b = c.b[n:]
	return n, nil
}

// FuzzSSHDInjection puts attacker-chosen text where sshd logs the client's
// user name (or its disconnect reason, or key exchange offer) in every
// message family that carries one: when the line matches, the host is
// always the real source, and a printable user name never hides the
// failure.
func FuzzSSHDInjection(f *testing.F) {
	f.Add("10.0.0.5")
	f.Add("x from 10.0.0.5 port 22")
	f.Add("a from 10.0.0.5 port 22 ssh2 [preauth] from 10.0.0.6 port 1 ssh2")
	f.Add("::1 port 1")
	f.Add("")
	families := []struct {
		mode, format   string // %[1]s the user text, %[2]s the real host
		needsPrintable bool
	}{
		{"normal", "Failed password for invalid user %[1]s from %[2]s port 40000 ssh2", true},
		{"normal", "Invalid user %[1]s from %[2]s port 40000", true},
		{"normal", "error: PAM: Authentication failure for illegal user %[1]s from %[2]s", true},
		{"normal", "error: maximum authentication attempts exceeded for invalid user %[1]s from %[2]s port 40000 ssh2 [preauth]", true},
		{"aggressive", "Failed publickey for invalid user %[1]s from %[2]s port 40000 ssh2: RSA SHA256:abc", true},
		{"ddos", "Connection closed by invalid user %[1]s %[2]s port 40000 [preauth]", true},
		{"ddos", "Disconnected from invalid user %[1]s %[2]s port 40000 [preauth]", true},
		{"ddos", "ssh_dispatch_run_fatal: Connection from invalid user %[1]s %[2]s port 40000: invalid format [preauth]", false},
		{"extra", "Unable to negotiate with %[2]s port 40000: no matching cipher found. Their offer: %[1]s [preauth]", false},
		{"extra", "Received disconnect from %[2]s port 40000:14: %[1]s [preauth]", false},
		{"normal", "Received disconnect from %[2]s port 40000:3: %[1]s Auth fail [preauth]", false},
	}
	filters := map[string]*Filter{}
	for _, m := range BuiltinModes("sshd") {
		filters[m], _ = Builtin("sshd", m)
	}
	real := []string{"203.0.113.7", "2001:db8::7"}
	f.Fuzz(func(t *testing.T, user string) {
		// sshd's log.c escapes what is not printable (strnvis), so a
		// logged message holds no control characters.
		printable := true
		for _, r := range user {
			if r < 0x20 || r == 0x7f {
				printable = false
			}
		}
		for _, fam := range families {
			for _, host := range real {
				msg := fmt.Sprintf(fam.format, user, host)
				res := filters[fam.mode].Match("sshd", []byte(msg))
				if res.Match && res.Addr != netip.MustParseAddr(host) {
					t.Fatalf("%q names %v; the source is %s", msg, res.Addr, host)
				}
				if !res.Match && printable && utf8.ValidString(user) && fam.needsPrintable {
					t.Fatalf("%q does not match: a user name hid the failure", msg)
				}
			}
		}
	})
}
