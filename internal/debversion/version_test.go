package debversion

import (
	"strings"
	"testing"
)

func TestCompareOrders(t *testing.T) {
	// Each pair is strictly ordered a < b; both directions are checked.
	less := []struct{ a, b string }{
		// Policy 5.6.12's own example: ~~ < ~~a < ~ < (end) < a.
		{"1.0~~", "1.0~~a"},
		{"1.0~~a", "1.0~"},
		{"1.0~", "1.0"},
		{"1.0", "1.0a"},
		{"1.0~rc1", "1.0"},
		{"1.0~rc1", "1.0~rc2"},
		{"1.9", "1.10"}, // digit runs compare numerically
		{"1.0", "1.0.1"},
		{"1.0", "1.0+git1.gabc"},
		{"1.0+git1", "1.0+git2"},
		{"1.0a", "1.0b"},
		{"1.0Z", "1.0a"}, // uppercase before lowercase (ASCII)
		{"1.0a", "1.0+"}, // letters before non-letters
		{"1.0+", "1.0."}, // then ASCII order among the rest
		{"1.0-1", "1.0-2"},
		{"1.0-1", "1.0-1.1"},
		{"1.0-1~bpo1", "1.0-1"},
		{"1.0-9", "1.0-10"},
		{"1.0-1", "1.0.1-1"},
		{"2.0", "1:1.0"}, // any epoch beats none
		{"1:9.9", "2:0.1"},
		{"0:1.0", "1.1"},
		{"1.2.3-0", "1.2.3-1"},
		{"0.0.0+git3.gabc", "0.1"},
		{"10.0", "10.00a"},
		{"1.0.dev1", "1.0.post1"},
	}
	for _, tc := range less {
		if got := mustCompare(t, tc.a, tc.b); got != -1 {
			t.Errorf("Compare(%q, %q) = %d, want -1", tc.a, tc.b, got)
		}
		if got := mustCompare(t, tc.b, tc.a); got != 1 {
			t.Errorf("Compare(%q, %q) = %d, want 1", tc.b, tc.a, got)
		}
	}
	equal := []struct{ a, b string }{
		{"1.0", "1.0"},
		{"1.0", "0:1.0"}, // epoch 0 is the default
		{"1.0", "1.0-0"}, // an absent revision orders like 0
		{"1.01", "1.1"},  // leading zeros do not count
		{"1.0-00", "1.0"},
		{"007", "7"},
	}
	for _, tc := range equal {
		if got := mustCompare(t, tc.a, tc.b); got != 0 {
			t.Errorf("Compare(%q, %q) = %d, want 0", tc.a, tc.b, got)
		}
	}
}

func mustCompare(t *testing.T, a, b string) int {
	t.Helper()
	c, err := Compare(a, b)
	if err != nil {
		t.Fatalf("Compare(%q, %q): %v", a, b, err)
	}
	return c
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Version
	}{
		{"1.2.3", Version{Upstream: "1.2.3"}},
		{"1:1.2.3-1", Version{Epoch: 1, Upstream: "1.2.3", Revision: "1"}},
		{"1.2-3-4", Version{Upstream: "1.2-3", Revision: "4"}}, // the last hyphen splits
		{"2.0-1+deb12u1", Version{Upstream: "2.0", Revision: "1+deb12u1"}},
		{"0:0.1~rc1", Version{Upstream: "0.1~rc1"}},
	} {
		got, err := Parse(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, tc := range []struct{ in, why string }{
		{"", "empty"},
		{"a1.0", "must start with a digit"},
		{"x:1.0", "epoch"},
		{"-1:1.0", "epoch"},
		{"99999999999:1.0", "epoch"},
		{"1.0-", "revision after the last '-' is empty"},
		{"1.0-a_b", "revision may contain only"},
		{"1.0 beta", "upstream version may contain only"},
		{"1:", "must start with a digit"},
		{"1.0:2", "epoch"},
		{"1.0-1:2", "epoch"},
	} {
		_, err := Parse(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", tc.in, err, tc.why)
		}
	}
}

func TestStringRoundTrip(t *testing.T) {
	for in, want := range map[string]string{"1:2.0-3": "1:2.0-3", "0:2.0": "2.0", "2.0": "2.0"} {
		v, err := Parse(in)
		if err != nil {
			t.Fatal(err)
		}
		if v.String() != want {
			t.Errorf("Parse(%q).String() = %q, want %q", in, v.String(), want)
		}
	}
}

// FuzzCompare checks that parsing never panics and that the order is
// antisymmetric and consistent with String.
func FuzzCompare(f *testing.F) {
	for _, s := range [][2]string{{"1.0", "1.0~rc1"}, {"1:2.0-1", "2.0-1"}, {"1.0~~a", "1.0a+"}, {"0.0.0+git3.gabc", "1.01"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		va, errA := Parse(a)
		vb, errB := Parse(b)
		if errA != nil || errB != nil {
			return
		}
		ab, ba := va.Compare(vb), vb.Compare(va)
		if ab != -ba {
			t.Fatalf("Compare(%q, %q) = %d but reversed = %d", a, b, ab, ba)
		}
		if va.Compare(va) != 0 {
			t.Fatalf("Compare(%q, itself) != 0", a)
		}
		again, err := Parse(va.String())
		if err != nil || again.Compare(va) != 0 {
			t.Fatalf("Parse(String(%q)) = %+v, %v; want equal", a, again, err)
		}
	})
}
