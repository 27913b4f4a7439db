package main

import (
	"debug/elf"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestLinkerDropsUncalledCloudOperations guards the agent's size and
// memory: the binary uses reflection (text/template), so the linker keeps
// every exported method of a type reachable from an interface value. One
// *ec2.Client in a struct field once kept all of EC2's operations, 19 MB
// of code. The provider calls two; the rest must be gone.
func TestLinkerDropsUncalledCloudOperations(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "tandem")
	if out, err := exec.Command("go", "build", "-trimpath", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	const client = "github.com/aws/aws-sdk-go-v2/service/ec2.(*Client)."
	var kept, called []string
	for _, s := range syms {
		op, ok := strings.CutPrefix(s.Name, client)
		if !ok || strings.ContainsAny(op, ".-") {
			continue // not an operation: a closure or a lowercase helper's wrapper
		}
		switch op {
		case "AssociateAddress", "DescribeAddresses":
			called = append(called, op)
		default:
			if op[0] >= 'A' && op[0] <= 'Z' {
				kept = append(kept, op)
			}
		}
	}
	if len(called) != 2 {
		t.Errorf("operations the aws provider calls: found %v in the binary, want AssociateAddress and DescribeAddresses (did the check stop matching symbol names?)", called)
	}
	if len(kept) > 0 {
		t.Errorf("the binary keeps %d EC2 operations nobody calls (%v …): a *ec2.Client reached an interface or a struct field; keep it in method values (see internal/vip/aws)", len(kept), kept[:min(5, len(kept))])
	}
}
