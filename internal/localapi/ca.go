package localapi

import "time"

// CAStatus is the cluster's CA as `tandem ca status --json` prints it:
// the trusted CAs, a rotation in progress and which member is on which CA.
// Field names are stable.
type CAStatus struct {
	// CAs are the CAs the cluster trusts: one, or two during a rotation.
	CAs []CAInfo `json:"cas"`
	// Rotation is the rotation in progress; null when none.
	Rotation *RotationStatus `json:"rotation"`
	// LastRotation is the last finished rotation; null before the first.
	LastRotation *RotationStatus `json:"last_rotation"`
	Members      []CAMember      `json:"members"`
	GeneratedAt  time.Time       `json:"generated_at"`
}

// CAInfo is one trusted CA.
type CAInfo struct {
	Hash     string    `json:"hash"` // sha256:<hex> of its public key, as join tokens pin it
	Subject  string    `json:"subject"`
	NotAfter time.Time `json:"not_after"`
	// Status is "current" outside a rotation, else "old" or "new".
	Status string `json:"status"`
}

// RotationStatus is a CA rotation.
type RotationStatus struct {
	From     string     `json:"from"`
	To       string     `json:"to"`
	Phase    string     `json:"phase"` // "trust", "reissue"; "done" or "aborted" for the last finished one
	By       string     `json:"by"`
	Started  time.Time  `json:"started"`
	Finished *time.Time `json:"finished,omitempty"`
	// Waiting are the members the phase waits for.
	Waiting []string `json:"waiting"`
}

// CAMember is what a member reported of its credentials.
type CAMember struct {
	Name string `json:"name"`
	Role string `json:"role"`
	// CertCA is the hash of the CA its certificate is from; "" until it
	// reports (a member running an older tandem).
	CertCA string `json:"cert_ca"`
	// On is "current", "old", "new" (during a rotation) or "unknown".
	On string `json:"on"`
	// TrustsNew and HoldsNewKey (app nodes) tell, during a rotation,
	// whether it accepts the new CA and holds its key.
	TrustsNew   bool `json:"trusts_new"`
	HoldsNewKey bool `json:"holds_new_key"`
}

// RotateReply is the answer to `tandem ca rotate`.
type RotateReply struct {
	Rotation RotationStatus `json:"rotation"`
	// Resumed is true when a rotation was already in progress.
	Resumed bool `json:"resumed"`
}
