package cli

import (
	"bytes"
	"strings"
	"testing"
)

// TestDeployArgumentErrors: mistakes in 'tandem deploy' are named before
// the agent is asked (the socket here does not exist).
func TestDeployArgumentErrors(t *testing.T) {
	tests := []struct {
		args []string
		says string
	}{
		{[]string{"deploy", "https://ci.example/site_1_all.deb"}, "--sha256"},
		{[]string{"deploy", "https://ci.example/site_1_all.deb", "--sha256", "abc"}, "--sha256"},
		{[]string{"deploy", "https://ci.example/site_1_all.deb", "--sha256", strings.Repeat("g", 64)}, "--sha256"},
		{[]string{"deploy", "site_1_all.deb", "--sha256", strings.Repeat("a", 64)}, "goes with a URL"},
		{[]string{"deploy"}, "accepts 1 arg"},
	}
	for _, tt := range tests {
		var out, errb bytes.Buffer
		if code := Main(tt.args, nil, &out, &errb); code != ExitUsage || !strings.Contains(errb.String(), tt.says) {
			t.Errorf("%v: exit %d, %q; want exit %d saying %q", tt.args, code, errb.String(), ExitUsage, tt.says)
		}
	}
}
