// Package check is the shape of one baseline check's result, shared by the
// checks (firewall, sshd, updates, integrity) and the audit that runs them.
package check

// Status is a check's outcome.
type Status string

const (
	Pass    Status = "pass"
	Fail    Status = "fail"
	Skipped Status = "skipped" // the policy skips it; the audit shows the policy's reason
	Error   Status = "error"   // the check could not run; Current says why
)

// Result is one check's stable ID, why it matters, and what to do.
type Result struct {
	ID      string `json:"id"`    // stable, e.g. "ssh.root-login"; never renamed
	Title   string `json:"title"` // one line: why this matters
	Status  Status `json:"status"`
	Current string `json:"current"` // the value found (effective, e.g. from sshd -T)
	Wanted  string `json:"wanted"`
	Fix     string `json:"fix"` // what `tandem harden apply` does, or the manual step
}

// Plan is what `tandem harden apply` changes for one area (firewall, sshd,
// updates, integrity): files first, then the commands that check and load
// them. Empty when the host already complies, so a second apply changes
// nothing.
type Plan struct {
	Area     string
	Files    []File     // written atomically; the previous content (or its absence) is kept for the revert
	Validate [][]string // run after writing, e.g. {"sshd", "-t"}; a failure reverts at once
	Reload   [][]string // run after validation, and again after a revert, e.g. {"systemctl", "reload", "ssh"}
	// Risky changes can lock an admin out (firewall, sshd): they are reverted
	// by themselves unless confirmed within the apply's --confirm time.
	Risky bool
}

// File is one file a plan writes.
type File struct {
	Path    string
	Content []byte
	Mode    uint32 // permission bits, e.g. 0o644
}

// Empty reports whether the plan changes nothing.
func (p Plan) Empty() bool { return len(p.Files) == 0 && len(p.Validate) == 0 && len(p.Reload) == 0 }
