package localapi

import "github.com/tandem-ha/tandem/internal/cluster/state"

// DeployRequest is 'tandem deploy'. Field names are stable.
type DeployRequest struct {
	// File is a .deb the CLI copied into the store's directory.
	File      string `json:"file,omitempty"`
	Signature string `json:"signature,omitempty"` // base64 .sig, when one sits beside the file
	URL       string `json:"url,omitempty"`
	SHA256    string `json:"sha256,omitempty"`
	Force     bool   `json:"force,omitempty"`
	// Version is 'tandem rollback''s target ("" = the last good release).
	Version string `json:"version,omitempty"`
}

// DeployReply names the queued delivery.
type DeployReply struct {
	Delivery string `json:"delivery"`
	Package  string `json:"package,omitempty"`
	Version  string `json:"version,omitempty"`
}

// LockRequest is 'tandem deploy lock|unlock'.
type LockRequest struct {
	Lock    bool   `json:"lock"`
	Message string `json:"message,omitempty"`
}

// Plan is 'tandem deploy plan': what the driver would do now.
type Plan struct {
	Next     *state.Delivery `json:"next,omitempty"`
	Running  *state.Rollout  `json:"running,omitempty"`
	HeldBack string          `json:"held_back,omitempty"`
	// Order is the nodes in the order they would be upgraded; the IP
	// moves before the last one (the holder).
	Order  []string `json:"order,omitempty"`
	Holder string   `json:"holder,omitempty"`
	Queued int      `json:"queued"`
}
