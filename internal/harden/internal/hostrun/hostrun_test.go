package hostrun

import (
	"context"
	"strings"
	"testing"
)

func TestUnder(t *testing.T) {
	tests := []struct{ root, path, want string }{
		{"", "/etc/passwd", "/etc/passwd"},
		{"/", "/etc/../etc/passwd", "/etc/passwd"},
		{"/tmp/r", "/etc/passwd", "/tmp/r/etc/passwd"},
		{"/tmp/r", "../../etc/passwd", "/tmp/r/etc/passwd"}, // never above root
	}
	for _, tt := range tests {
		if got := Under(tt.root, tt.path); got != tt.want {
			t.Errorf("Under(%q, %q) = %q, want %q", tt.root, tt.path, got, tt.want)
		}
	}
}

func TestExec(t *testing.T) {
	ctx := context.Background()
	out, err := Exec(ctx, "sh", "-c", "echo out; echo err >&2")
	if err != nil || string(out) != "out\n" {
		t.Errorf("stdout %q, %v; want only stdout", out, err)
	}
	_, err = Exec(ctx, "sh", "-c", "echo the reason >&2; exit 3")
	if err == nil || !strings.Contains(err.Error(), "the reason") || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("error %v, want the exit status and stderr", err)
	}
	if _, err := Exec(ctx); err == nil {
		t.Error("an empty command ran")
	}
	if OrExec(nil) == nil {
		t.Error("OrExec(nil) is nil")
	}
}
