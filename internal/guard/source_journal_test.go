package guard

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// exportEntry writes one entry in journalctl's export format; a value
// given as []byte is written as a binary field.
func exportEntry(fields ...any) []byte {
	var b bytes.Buffer
	for i := 0; i < len(fields); i += 2 {
		name := fields[i].(string)
		switch v := fields[i+1].(type) {
		case string:
			b.WriteString(name + "=" + v + "\n")
		case []byte:
			b.WriteString(name + "\n")
			_ = binary.Write(&b, binary.LittleEndian, uint64(len(v)))
			b.Write(v)
			b.WriteByte('\n')
		}
	}
	b.WriteByte('\n')
	return b.Bytes()
}

func TestExportReader(t *testing.T) {
	long := strings.Repeat("x", 300<<10) // longer than the reader's buffer
	var in bytes.Buffer
	in.Write(exportEntry("__CURSOR", "s=1;i=1", "__REALTIME_TIMESTAMP", "1", "_COMM", "sshd", "SYSLOG_IDENTIFIER", "sshd",
		"MESSAGE", "Invalid user a from 203.0.113.7 port 22"))
	in.Write(exportEntry("__CURSOR", "s=1;i=2", "_COMM", "sshd", "MESSAGE", []byte("Invalid user \x01\xff\n from 203.0.113.8 port 22")))
	in.Write(exportEntry("__CURSOR", "s=1;i=3", "SYSLOG_IDENTIFIER", "sshd", "MESSAGE", long, "_PID", "7"))
	in.Write(exportEntry("__CURSOR", "s=1;i=4", "SYSLOG_IDENTIFIER", "sshd", "MESSAGE", []byte(long)))
	in.WriteString("__CURSOR=s=1;i=5\nMESSAGE=partial") // cut off: dropped
	x := NewExportReader(&in)
	var e JournalEntry
	type got struct{ cursor, ident, msg string }
	var all []got
	for {
		err := x.Next(&e)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, got{string(e.Cursor), string(e.Identifier), string(e.Message)})
	}
	want := []got{
		{"s=1;i=1", "sshd", "Invalid user a from 203.0.113.7 port 22"},
		{"s=1;i=2", "sshd", "Invalid user \x01\xff\n from 203.0.113.8 port 22"},
		{"s=1;i=3", "sshd", long[:maxJournalField]},
		{"s=1;i=4", "sshd", long[:maxJournalField]},
	}
	if !slices.Equal(all, want) {
		for i := range all {
			all[i].msg = all[i].msg[:min(len(all[i].msg), 60)]
		}
		t.Errorf("entries %q", all)
	}
}

func TestExportReaderCorrupt(t *testing.T) {
	var huge bytes.Buffer
	huge.WriteString("MESSAGE\n")
	_ = binary.Write(&huge, binary.LittleEndian, uint64(1<<40))
	for _, in := range [][]byte{huge.Bytes(), []byte("MESSAGE\n\x03\x00\x00\x00\x00\x00\x00\x00abcX\n\n")} {
		var e JournalEntry
		if err := NewExportReader(bytes.NewReader(in)).Next(&e); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Next(%q) = %v; want ErrCorrupt", in, err)
		}
	}
}

func TestJournalArgs(t *testing.T) {
	s := &journalSource{units: []string{"ssh", "nginx.service"}, identifiers: []string{"sshd"}}
	want := "--follow --output=export --no-pager --quiet --lines=0 _SYSTEMD_UNIT=ssh.service + _SYSTEMD_UNIT=nginx.service + SYSLOG_IDENTIFIER=sshd"
	if got := strings.Join(s.args(""), " "); got != want {
		t.Errorf("args = %s\nwant   %s", got, want)
	}
	if got := s.args("s=1;i=9"); got[4] != "--after-cursor=s=1;i=9" {
		t.Errorf("restart args %v", got)
	}
}

// TestJournalSource runs the engine with a stand-in journalctl that prints
// entries and exits, as journalctl does when journald restarts: the
// engine restarts it after the last cursor it read.
func TestJournalSource(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	for i, h := range []string{"203.0.113.7", "203.0.113.7", "203.0.113.7", "198.51.100.1"} {
		out.Write(exportEntry("__CURSOR", "c"+string(rune('0'+i)), "SYSLOG_IDENTIFIER", "sshd",
			"MESSAGE", []byte("Invalid user x\xff from "+h+" port 22")))
	}
	if err := os.WriteFile(filepath.Join(dir, "entries"), out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\necho \"$@\" >> " + dir + "/calls\ncat " + dir + "/entries\n"
	bin := filepath.Join(dir, "journalctl")
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	_, d := startEngine(t, Config{Journalctl: bin, Jails: []JailConfig{{Name: "sshd", Filter: "sshd", JournalIdentifiers: []string{"sshd"},
		MaxRetry: 3, FindTime: time.Minute, BanTime: time.Minute}}})
	x := d.wait(t, netip.MustParseAddr("203.0.113.7"))
	if x.Line != "sshd: Invalid user x\uFFFD from 203.0.113.7 port 22" {
		t.Errorf("decision line %q", x.Line)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		calls, _ := os.ReadFile(filepath.Join(dir, "calls"))
		if strings.Contains(string(calls), "--after-cursor=c3") {
			if !strings.Contains(strings.SplitN(string(calls), "\n", 2)[0], "--lines=0") {
				t.Errorf("first run without --lines=0: %s", calls)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("journalctl not restarted after the last cursor; calls:\n%s", calls)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
