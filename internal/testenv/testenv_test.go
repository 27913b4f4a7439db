package testenv

import (
	"testing"
)

// recorder captures what Missing does instead of ending the test.
type recorder struct {
	testing.TB
	skipped, failed bool
}

func (r *recorder) Helper()               {}
func (r *recorder) Skip(...any)           { r.skipped = true }
func (r *recorder) Fatalf(string, ...any) { r.failed = true }
func (r *recorder) Skipf(string, ...any)  { r.skipped = true }
func (r *recorder) Fatal(...any)          { r.failed = true }

func TestMissing(t *testing.T) {
	cases := []struct {
		strict             string
		wantSkip, wantFail bool
	}{
		{"", true, false},
		{"1", false, true},
	}
	for _, tc := range cases {
		t.Setenv(StrictVar, tc.strict)
		r := &recorder{TB: t}
		Missing(r, "needs %s", "lintian")
		if r.skipped != tc.wantSkip || r.failed != tc.wantFail {
			t.Errorf("%s=%q: skipped %v failed %v; want %v %v", StrictVar, tc.strict, r.skipped, r.failed, tc.wantSkip, tc.wantFail)
		}
	}
}

func TestNeedCommand(t *testing.T) {
	t.Setenv(StrictVar, "1")
	r := &recorder{TB: t}
	NeedCommand(r, "tandem-no-such-command", "none")
	if !r.failed {
		t.Errorf("a missing command did not fail in strict mode")
	}
	r = &recorder{TB: t}
	NeedCommand(r, "sh", "dash")
	if r.failed || r.skipped {
		t.Errorf("sh is on PATH but NeedCommand skipped %v failed %v", r.skipped, r.failed)
	}
}
