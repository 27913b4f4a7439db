package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// stateVersion is bumped when the state file's meaning changes.
const stateVersion = 1

// state is what one lab records in <StateDir>/<name>/lab.json so that
// separate CLI invocations find its nodes again. Everything else (running,
// partitioned, init PID) is read from the system each time.
type state struct {
	Version int           `json:"version"`
	Name    string        `json:"name"`
	Image   string        `json:"image"`
	Created time.Time     `json:"created"`
	Members []memberState `json:"members"`
}

type memberState struct {
	Name string `json:"name"`
	Role string `json:"role"`
	Addr string `json:"address"`
	// Nspawn identifies the node's systemd-nspawn process; zero when never started.
	Nspawn procID `json:"nspawn,omitzero"`
	// Netem is the link degradation in force, with its forwarder process.
	Netem     *Netem `json:"netem,omitempty"`
	Forwarder procID `json:"forwarder,omitzero"`
}

// procID names a process robustly: a PID plus its start time, so a recycled
// PID is never mistaken for ours.
type procID struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"`
}

func (s *state) member(name string) (*memberState, error) {
	for i := range s.Members {
		if s.Members[i].Name == name {
			return &s.Members[i], nil
		}
	}
	names := make([]string, len(s.Members))
	for i, m := range s.Members {
		names[i] = m.Name
	}
	return nil, fmt.Errorf("lab %s has no node %q (it has %v)", s.Name, name, names)
}

// ErrNoLab is returned when a lab has no state file: it is not up.
var ErrNoLab = errors.New("lab is not up")

func loadState(path string) (*state, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoLab
	}
	if err != nil {
		return nil, fmt.Errorf("read lab state: %w", err)
	}
	return decodeState(b)
}

func decodeState(b []byte) (*state, error) {
	var s state
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parse lab state: %w", err)
	}
	if s.Version != stateVersion {
		return nil, fmt.Errorf("lab state has version %d, this tandem understands %d: run 'tandem lab down' and 'tandem lab up'", s.Version, stateVersion)
	}
	if err := ValidateName(s.Name); err != nil {
		return nil, fmt.Errorf("lab state: %w", err)
	}
	for i, m := range s.Members {
		if !validMember(m.Name) {
			return nil, fmt.Errorf("lab state: bad member name %q", m.Name)
		}
		if m.Role == roleNodeV1 {
			s.Members[i].Role = RoleApp
		}
	}
	return &s, nil
}

// saveState writes the file atomically: a crash leaves the old or the new
// version, never half of one.
func saveState(path string, s *state) error {
	s.Version = stateVersion
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode lab state: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".lab.json.*")
	if err != nil {
		return fmt.Errorf("write lab state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write lab state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write lab state: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write lab state: %w", err)
	}
	return nil
}
