package localapi

import "time"

// BanList is 'tandem guard bans --json': the bans in force on the whole
// cluster, and whether this node's kernel holds each. Field names are
// stable.
type BanList struct {
	Bans []BanInfo `json:"bans"`
	// KernelError says why this node's kernel sets could not be read; ""
	// when they could.
	KernelError string    `json:"kernel_error,omitempty"`
	GeneratedAt time.Time `json:"generated_at"`
}

// BanInfo is one ban in force.
type BanInfo struct {
	Addr    string    `json:"addr"`
	Jail    string    `json:"jail"` // "manual" for an operator's ban
	Reason  string    `json:"reason,omitempty"`
	Line    string    `json:"line,omitempty"` // the last failure's log line
	By      string    `json:"by"`             // the app node that decided it
	At      time.Time `json:"at"`
	Until   time.Time `json:"until"`
	Offence int       `json:"offence"` // this address's ban count, this one included
	// Enforced is true when this node's kernel holds the ban; Protected
	// says why it never will (a member's address, an ignored network).
	Enforced  bool   `json:"enforced"`
	Protected string `json:"protected,omitempty"`
}

// BanRequest is 'tandem guard ban IP'.
type BanRequest struct {
	Addr   string `json:"addr"`
	For    string `json:"for,omitempty"` // a Go duration; "" takes the default
	Reason string `json:"reason,omitempty"`
}

// UnbanRequest is 'tandem guard unban IP'.
type UnbanRequest struct {
	Addr string `json:"addr"`
}

// GuardStatus is guard's line in 'tandem status'.
type GuardStatus struct {
	Active int `json:"active"`
	IPv4   int `json:"ipv4"`
	IPv6   int `json:"ipv6"`
	// Enforced counts the bans this node's kernel holds; -1 when its sets
	// cannot be read.
	Enforced int `json:"enforced"`
}
