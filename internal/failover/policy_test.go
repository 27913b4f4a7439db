package failover

import (
	"strings"
	"testing"

	"github.com/tandem-ha/tandem/internal/cluster/state"
)

func TestJoinRuleRefusesTwoAppVoters(t *testing.T) {
	app := func(n string) state.Member { return state.Member{Name: n, Role: state.RoleApp} }
	wit := state.Member{Name: "witness", Role: state.RoleWitness}
	tests := []struct {
		name    string
		onLink  bool
		current []state.Member
		joining state.Member
		refused bool
	}{
		{"second app node without witness", true, []state.Member{app("node1")}, app("node2"), true},
		{"witness first", true, []state.Member{app("node1")}, wit, false},
		{"app after witness", true, []state.Member{app("node1"), wit}, app("node2"), false},
		{"third app node", true, []state.Member{app("node1"), app("node2"), wit}, app("node3"), false},
		{"cloud provider arbitrates", false, []state.Member{app("node1")}, app("node2"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := JoinRule(tt.onLink)(tt.current, tt.joining)
			if (err != nil) != tt.refused {
				t.Fatalf("JoinRule = %v; refused want %v", err, tt.refused)
			}
			if err != nil && !strings.Contains(err.Error(), "witness") {
				t.Errorf("refusal %q does not say how to fix it", err)
			}
		})
	}
}
