package guard

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 28, 21, 0, 0, 0, time.UTC)

func testJail(maxretry int, findtime time.Duration, maxTracked int) *jail {
	f, _ := Builtin("sshd", "")
	return newJail(JailConfig{Name: "sshd", MaxRetry: maxretry, FindTime: findtime, BanTime: 10 * time.Minute,
		BanTimeMax: 168 * time.Hour, BanTimeFactor: 2, MaxTracked: maxTracked}, f)
}

func TestJailWindow(t *testing.T) {
	a := netip.MustParseAddr("203.0.113.7")
	tests := []struct {
		name     string
		offsets  []time.Duration // failure times after t0
		decideAt int             // index of the failure that decides; -1: none
	}{
		{"maxretry within findtime", []time.Duration{0, time.Minute, 2 * time.Minute}, 2},
		{"spread wider than findtime", []time.Duration{0, 6 * time.Minute, 11 * time.Minute}, -1},
		{"old failures slide out", []time.Duration{0, 9 * time.Minute, 11 * time.Minute, 12 * time.Minute}, 3},
		{"exactly findtime apart is outside", []time.Duration{0, 5 * time.Minute, 10 * time.Minute}, -1},
		{"a burst", []time.Duration{0, 0, 0}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := testJail(3, 10*time.Minute, 0)
			got := -1
			for i, off := range tt.offsets {
				d, ok := j.failure(a, t0.Add(off), []byte("line"))
				if ok {
					if got >= 0 {
						t.Fatalf("decided twice (at %d and %d)", got, i)
					}
					got = i
					if d.Addr != a || d.Jail != "sshd" || d.Failures != 3 || d.Bantime != 10*time.Minute ||
						d.MaxBantime != 168*time.Hour || d.Factor != 2 || !d.At.Equal(t0.Add(off)) || d.Line != "line" {
						t.Errorf("decision %+v", d)
					}
				}
			}
			if got != tt.decideAt {
				t.Errorf("decided at failure %d; want %d", got, tt.decideAt)
			}
		})
	}
}

func TestJailStartsAfreshAfterDecision(t *testing.T) {
	j := testJail(2, time.Minute, 0)
	a := netip.MustParseAddr("2001:db8::1")
	decisions := 0
	for i := range 6 {
		if _, ok := j.failure(a, t0.Add(time.Duration(i)*time.Second), nil); ok {
			decisions++
		}
	}
	if decisions != 3 {
		t.Errorf("%d decisions for 6 failures with maxretry 2; want 3", decisions)
	}
}

// TestJailBoundedMemory floods a jail from many sources: it tracks at most
// MaxTracked hosts, forgets the stalest first, and a persistent attacker
// is still banned.
func TestJailBoundedMemory(t *testing.T) {
	j := testJail(3, time.Hour, 100)
	attacker := netip.MustParseAddr("198.51.100.1")
	decided := false
	for i := range 10000 {
		now := t0.Add(time.Duration(i) * time.Millisecond)
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		j.failure(a, now, nil)
		if i%1000 == 0 {
			if _, ok := j.failure(attacker, now, nil); ok {
				decided = true
			}
		}
		if len(j.hosts) > 100 || j.order.Len() != len(j.hosts) {
			t.Fatalf("tracking %d hosts (list %d); cap 100", len(j.hosts), j.order.Len())
		}
	}
	if j.stats.Evicted.Load() == 0 {
		t.Error("nothing evicted")
	}
	// The attacker failed once every 1000 sources, so the flood evicted
	// it in between and it was never banned; a source failing faster
	// than the flood turns the jail over is still caught.
	if decided {
		t.Error("decided on an attacker the flood should have evicted between its failures")
	}
	j2 := testJail(3, time.Hour, 100)
	decided = false
	for i := range 10000 {
		now := t0.Add(time.Duration(i) * time.Millisecond)
		j2.failure(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), now, nil)
		if i%50 == 0 {
			if _, ok := j2.failure(attacker, now, nil); ok {
				decided = true
			}
		}
	}
	if !decided {
		t.Error("an attacker failing every 50 lines of a flood from 10000 sources was never banned")
	}
}

func TestJailExpiresStaleHosts(t *testing.T) {
	j := testJail(5, time.Minute, 0)
	for i := range 50 {
		j.failure(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), t0, nil)
	}
	j.failure(netip.MustParseAddr("10.1.0.1"), t0.Add(2*time.Minute), nil)
	if len(j.hosts) != 1 {
		t.Errorf("%d hosts tracked after the window passed; want 1", len(j.hosts))
	}
}

func TestRecordLine(t *testing.T) {
	long := strings.Repeat("é", 600)
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{"a\x00b\nc\x7f", "a b c "},
		{"bad \xff\xfe utf8", "bad \uFFFD utf8"},
	}
	for _, tt := range tests {
		if got := recordLine([]byte(tt.in)); got != tt.want {
			t.Errorf("recordLine(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
	got := recordLine([]byte(long))
	if len(got) > maxDecisionLine || !strings.HasPrefix(long, got) {
		t.Errorf("long line: %d bytes, prefix %v", len(got), strings.HasPrefix(long, got))
	}
}
