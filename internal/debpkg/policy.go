package debpkg

import (
	"fmt"
	"path"
	"strings"
)

// reservedUsers are accounts that Debian's base system or common server
// packages own. A package must never create, adopt or (on purge) delete
// them, so they cannot be an app's user.
var reservedUsers = map[string]bool{
	"root": true, "daemon": true, "bin": true, "sys": true, "sync": true, "games": true, "man": true,
	"lp": true, "mail": true, "news": true, "uucp": true, "proxy": true, "www-data": true, "backup": true,
	"list": true, "irc": true, "gnats": true, "nobody": true, "nogroup": true, "adm": true, "staff": true,
	"users": true, "sudo": true, "operator": true, "shadow": true, "utmp": true, "tty": true, "disk": true,
	"kmem": true, "dialout": true, "cdrom": true, "floppy": true, "audio": true, "video": true,
	"plugdev": true, "netdev": true, "input": true, "render": true, "kvm": true, "crontab": true,
	"messagebus": true, "sshd": true, "polkitd": true, "tss": true, "ntp": true, "ntpsec": true,
	"postgres": true, "mysql": true, "redis": true, "memcache": true, "nginx": true, "apache": true,
	"postfix": true, "debian-exim": true, "bind": true, "dnsmasq": true, "rabbitmq": true,
	"mongodb": true, "git": true, "ftp": true, "tandem": true, "admin": true, "ubuntu": true, "debian": true,
}

// CheckUser refuses a system user name that belongs to the system.
func CheckUser(user string) error {
	if reservedUsers[user] || strings.HasPrefix(user, "systemd-") || strings.HasPrefix(user, "_") {
		return fmt.Errorf("the system user %q belongs to the system or another service; the package would adopt it and delete it on purge: set user = \"...\" in [tool.tandem] (or rename [project].name)", user)
	}
	return nil
}

// DataDirRoots are where a package's data directory may be.
var DataDirRoots = []string{"/var/lib", "/srv"}

// systemDataDirs are directories below /var/lib that belong to Debian's
// own tools or to other services.
var systemDataDirs = map[string]bool{
	"dpkg": true, "apt": true, "systemd": true, "ucf": true, "polkit-1": true, "sudo": true, "pam": true,
	"dbus": true, "private": true, "misc": true, "logrotate": true, "python": true, "sgml-base": true,
	"xml-core": true, "man-db": true, "initramfs-tools": true, "dhcp": true, "tandem": true,
	"postgresql": true, "mysql": true, "docker": true, "containerd": true, "nftables": true, "ssh": true,
	"usrmerge": true, "debconf": true, "emacsen-common": true, "vim": true, "os-prober": true, "ntpsec": true,
}

// CheckDataDir accepts a data directory below /var/lib or /srv (or below
// one of allow, the operator's explicit list), never a system directory.
func CheckDataDir(dir string, allow []string) error {
	bad := func(why string) error {
		return fmt.Errorf("data-dir %q %s; use a directory of the app's own below /var/lib or /srv (e.g. \"/var/lib/mysite\"), or allow another root with tandem package --allow-data-dir", dir, why)
	}
	if dir != path.Clean(dir) || !path.IsAbs(dir) {
		return bad("is not a clean absolute path")
	}
	roots := append(append([]string{}, DataDirRoots...), allow...)
	for _, r := range roots {
		r = path.Clean(r)
		rest, ok := strings.CutPrefix(dir, r+"/")
		if !ok || r == "/" {
			continue
		}
		first, _, _ := strings.Cut(rest, "/")
		if r == "/var/lib" && systemDataDirs[first] {
			return bad("belongs to the system or another service")
		}
		return nil
	}
	for _, r := range roots {
		if dir == path.Clean(r) {
			return bad("is a shared root itself")
		}
	}
	return bad("is not below " + strings.Join(roots, " or "))
}
