package firewall

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// Members keeps the cluster port's allow-list current: the members file
// (read at boot through the script's include) and the live sets. The agent
// calls Sync on every membership change.
type Members struct {
	File string // default DefaultMembers
	Root string // tests
	Run  Runner
}

// Sync writes the members file when it changed and loads it into the live
// table when the firewall is loaded; without the table it only records
// the members for the next apply or boot.
func (m Members) Sync(ctx context.Context, members []netip.Addr) error {
	file := m.File
	if file == "" {
		file = DefaultMembers
	}
	path := file
	if m.Root != "" {
		path = filepath.Join(m.Root, file)
	}
	want := MembersScript(members)
	if old, err := os.ReadFile(path); err != nil || !bytes.Equal(old, want) {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return fmt.Errorf("firewall members: %w", err)
		}
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, want, 0o644); err != nil {
			return fmt.Errorf("firewall members: %w", err)
		}
		if err := os.Chmod(tmp, 0o644); err != nil { // the agent's umask is 0077; apply writes it 0644
			return fmt.Errorf("firewall members: %w", err)
		}
		if err := os.Rename(tmp, path); err != nil {
			return fmt.Errorf("firewall members: %w", err)
		}
	}
	if _, err := m.Run.Run(ctx, "nft", "list", "set", "inet", Table, "members4"); err != nil {
		return nil // no firewall loaded: nothing live to update
	}
	if _, err := m.Run.Run(ctx, "nft", "-f", file); err != nil {
		return fmt.Errorf("firewall members: load %s: %w", file, err)
	}
	return nil
}

var addrToken = regexp.MustCompile(`[0-9a-fA-F:.]+`)

// ParseMembers reads the addresses back from a members file (the CLI's
// fallback when the agent does not answer). Anything that is not an
// address is ignored.
func ParseMembers(data []byte) []netip.Addr {
	var out []netip.Addr
	for _, line := range strings.Split(string(data), "\n") {
		_, set, ok := strings.Cut(line, "add element inet "+Table+" ")
		if !ok {
			continue
		}
		_, elems, ok := strings.Cut(set, "{")
		if !ok {
			continue
		}
		for _, tok := range addrToken.FindAllString(elems, -1) {
			if a, err := netip.ParseAddr(tok); err == nil {
				out = append(out, a.Unmap())
			}
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}
