package sshd

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/tandem-ha/tandem/internal/harden/internal/hostrun"
)

// keyHolders is who can log in with a key: the guard that keeps password
// logins on until someone can log in without one.
type keyHolders struct {
	Users   []string // login users other than root with an authorized key
	Root    bool     // root has an authorized key
	Checked []string // the login users inspected
	Command bool     // an AuthorizedKeysCommand is set: keys it serves are not seen
}

// any reports whether anyone can log in with a key.
func (k keyHolders) any() bool { return len(k.Users) > 0 || k.Root }

func (k keyHolders) String() string {
	var who []string
	if k.Root {
		who = append(who, "root")
	}
	who = append(who, k.Users...)
	s := "authorized keys: " + strings.Join(who, ", ")
	if len(who) == 0 {
		s = "no login user has an authorized key (checked: " + strings.Join(k.Checked, ", ") + ")"
		if len(k.Checked) == 0 {
			s = "no login user has an authorized key (no user with a login shell found)"
		}
	}
	if k.Command {
		s += "; keys from AuthorizedKeysCommand are not counted"
	}
	return s
}

// firstUID is where Debian's regular users begin (login.defs UID_MIN);
// system accounts below it are not admins even when they have a shell.
const firstUID = 1000

// nobodyUID is Debian's nobody.
const nobodyUID = 65534

// findKeyHolders reads /etc/passwd under root and each login user's
// authorized keys files, named as sshd -T prints AuthorizedKeysFile.
func findKeyHolders(root string, eff Effective) (keyHolders, error) {
	var k keyHolders
	data, err := os.ReadFile(hostrun.Under(root, "/etc/passwd"))
	if err != nil {
		return k, err
	}
	patterns := strings.Fields(firstOr(eff, "authorizedkeysfile", ".ssh/authorized_keys .ssh/authorized_keys2"))
	if cmd := firstOr(eff, "authorizedkeyscommand", "none"); cmd != "none" && cmd != "" {
		k.Command = true
	}
	for _, u := range parsePasswd(data) {
		if !u.login() {
			continue
		}
		k.Checked = append(k.Checked, u.Name)
		if !u.hasKey(root, patterns) {
			continue
		}
		if u.UID == 0 {
			k.Root = true
		} else {
			k.Users = append(k.Users, u.Name)
		}
	}
	slices.Sort(k.Users)
	return k, nil
}

func firstOr(eff Effective, key, def string) string {
	if v, ok := eff.Get(key); ok {
		return v
	}
	return def
}

type passwdEntry struct {
	Name  string
	UID   int
	Home  string
	Shell string
}

func parsePasswd(data []byte) []passwdEntry {
	var out []passwdEntry
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Split(sc.Text(), ":")
		if len(f) != 7 {
			continue
		}
		uid, err := strconv.Atoi(f[2])
		if err != nil {
			continue
		}
		out = append(out, passwdEntry{Name: f[0], UID: uid, Home: f[5], Shell: f[6]})
	}
	return out
}

// login reports whether the user is root or a regular user whose shell
// lets them in.
func (u passwdEntry) login() bool {
	if u.UID != 0 && (u.UID < firstUID || u.UID == nobodyUID) {
		return false
	}
	base := filepath.Base(u.Shell)
	return u.Shell != "" && base != "nologin" && base != "false"
}

// hasKey reports whether any of the user's authorized keys files holds a
// key line.
func (u passwdEntry) hasKey(root string, patterns []string) bool {
	for _, p := range patterns {
		if p == "none" {
			continue
		}
		path := expandTokens(p, u)
		if !filepath.IsAbs(path) {
			path = filepath.Join(u.Home, path)
		}
		data, err := os.ReadFile(hostrun.Under(root, path))
		if err == nil && hasKeyLine(data) {
			return true
		}
	}
	return false
}

// expandTokens expands sshd_config's %h, %u, %U and %% in a file name.
func expandTokens(p string, u passwdEntry) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] != '%' || i+1 == len(p) {
			b.WriteByte(p[i])
			continue
		}
		i++
		switch p[i] {
		case 'h':
			b.WriteString(u.Home)
		case 'u':
			b.WriteString(u.Name)
		case 'U':
			b.WriteString(strconv.Itoa(u.UID))
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			b.WriteByte(p[i])
		}
	}
	return b.String()
}

// keyTypePrefixes start the key type field of an authorized_keys line.
var keyTypePrefixes = []string{"ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-", "rsa-sha2-"}

// hasKeyLine reports whether an authorized_keys file has a key: a line
// with a known key type followed by a key blob (options may come first).
func hasKeyLine(data []byte) bool {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		fields := strings.Fields(line)
		for i, f := range fields {
			// A key's base64 blob begins with its length, "AAAA".
			if i+1 < len(fields) && strings.HasPrefix(fields[i+1], "AAAA") && slices.ContainsFunc(keyTypePrefixes, func(p string) bool { return strings.HasPrefix(f, p) }) {
				return true
			}
		}
	}
	return false
}
