package cli

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/tandem-ha/tandem/internal/lab"
	"github.com/tandem-ha/tandem/internal/testenv"
)

// TestLabArgs checks the lab commands' argument handling, which needs no lab.
func TestLabArgs(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		root     bool // needs root to get past the root check
		wantCode int
		wantErr  string
	}{
		{"exec without --", []string{"lab", "exec", "node1", "ls"}, false, ExitUsage, "put -- between"},
		{"exec no command", []string{"lab", "exec", "node1"}, false, ExitUsage, ""},
		{"cp bad target", []string{"lab", "cp", "/etc/hostname", "node1"}, false, ExitUsage, "NODE:PATH"},
		{"cp relative", []string{"lab", "cp", "/etc/hostname", "node1:etc"}, false, ExitUsage, "absolute"},
		{"netem clear and delay", []string{"lab", "netem", "node1", "--clear", "--delay", "1ms"}, false, ExitUsage, "--clear cannot"},
		{"kill needs node", []string{"lab", "kill"}, false, ExitUsage, ""},
		{"up bad nodes", []string{"lab", "up", "--nodes", "0"}, false, ExitUsage, "out of range"},
		{"bad lab name", []string{"lab", "status", "--name", "Bad/Name"}, true, ExitUsage, "lab name"},
		{"netem bad delay", []string{"lab", "netem", "node1", "--delay", "soon"}, true, ExitUsage, "not a duration"},
		{"status of a lab that is not up", []string{"lab", "status", "--name", "nosuchlab"}, true, ExitError, "not up"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.root {
				testenv.NeedRoot(t, "to check the lab's prerequisites")
			}
			var out, errb bytes.Buffer
			code := Main(tt.args, strings.NewReader(""), &out, &errb)
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d; stderr: %s", code, tt.wantCode, errb.String())
			}
			if !strings.Contains(errb.String(), tt.wantErr) {
				t.Errorf("stderr %q does not contain %q", errb.String(), tt.wantErr)
			}
		})
	}
}

func TestLabNotRoot(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("runs only as a normal user")
	}
	var out, errb bytes.Buffer
	if code := Main([]string{"lab", "status"}, strings.NewReader(""), &out, &errb); code != ExitNotReady {
		t.Errorf("exit %d, want %d (%s)", code, ExitNotReady, errb.String())
	}
}

func TestSameMembers(t *testing.T) {
	two := []lab.NodeStatus{
		{Name: "client", Role: lab.RoleClient}, {Name: "witness", Role: lab.RoleWitness},
		{Name: "node1", Role: lab.RoleApp}, {Name: "node2", Role: lab.RoleApp},
	}
	tests := []struct {
		name    string
		st      []lab.NodeStatus
		nodes   int
		witness bool
		want    bool
	}{
		{"as asked", two, 2, true, true},
		{"more nodes asked", two, 3, true, false},
		{"no witness asked", two, 2, false, false},
		{"old role word", []lab.NodeStatus{two[0], two[1], {Name: "node1", Role: "node"}, two[3]}, 2, true, false},
		{"empty", nil, 2, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sameMembers(tt.st, tt.nodes, tt.witness); got != tt.want {
				t.Errorf("sameMembers = %v, want %v", got, tt.want)
			}
		})
	}
}
