package firewall

import (
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
)

// The live listing and the members file are parsed; neither may crash the
// audit or the CLI, whatever nft or a hand edit put there.
func FuzzParseRuleset(f *testing.F) {
	if b, err := os.ReadFile("testdata/live.txt"); err == nil {
		f.Add(string(b))
	}
	f.Add("table inet tandem-fw {\n\tset members4 {\n\t\telements = { 10.0.0.1,\n")
	f.Fuzz(func(t *testing.T, s string) {
		rs := ParseRuleset(s)
		for _, r := range rs.Rules {
			if r == "" || strings.Contains(r, "\n") {
				t.Fatalf("rule %q", r)
			}
			dports(r)
		}
		a := New(testOptions(), nil)
		for id, c := range checks {
			if st, _, want := c(a, rs); st == "" || want == "" {
				t.Fatalf("%s: empty status or wanted", id)
			}
		}
	})
}

func FuzzParseMembers(f *testing.F) {
	f.Add([]byte{10, 0, 0, 1, 10, 0, 0, 2}, "add element inet tandem-fw members4 { 10.0.0.1 }")
	f.Fuzz(func(t *testing.T, raw []byte, junk string) {
		var addrs []netip.Addr
		for i := 0; i+4 <= len(raw) && i < 64; i += 4 {
			addrs = append(addrs, netip.AddrFrom4([4]byte(raw[i:i+4])))
		}
		got := ParseMembers(MembersScript(addrs))
		want := slices.Clone(addrs)
		slices.SortFunc(want, netip.Addr.Compare)
		want = slices.Compact(want)
		if !slices.Equal(got, want) {
			t.Fatalf("round trip of %v = %v", want, got)
		}
		ParseMembers([]byte(junk))
	})
}
