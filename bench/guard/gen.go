package main

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"time"
)

// sshdMessages are the message shapes of the generated log, with their
// weights: about half are failures of the normal mode, the rest the
// ordinary traffic of a busy sshd (logins, sessions, preauth closes) and
// other programs' lines, as an auth.log under a brute-force attack has.
var sshdMessages = []struct {
	weight int
	prog   string
	format string // %[1]s host, %[2]d port, %[3]s user
}{
	{18, "sshd", "Failed password for invalid user %[3]s from %[1]s port %[2]d ssh2"},
	{12, "sshd", "Failed password for root from %[1]s port %[2]d ssh2"},
	{14, "sshd", "Invalid user %[3]s from %[1]s port %[2]d"},
	{3, "sshd", "error: maximum authentication attempts exceeded for root from %[1]s port %[2]d ssh2 [preauth]"},
	{2, "sshd", "User %[3]s from %[1]s not allowed because not listed in AllowUsers"},
	{1, "sshd", "error: PAM: Authentication failure for illegal user %[3]s from %[1]s"},
	{10, "sshd", "Connection closed by invalid user %[3]s %[1]s port %[2]d [preauth]"},
	{8, "sshd", "Received disconnect from %[1]s port %[2]d:11: Bye Bye [preauth]"},
	{8, "sshd", "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=%[1]s  user=root"},
	{4, "sshd", "Accepted publickey for deploy from %[1]s port %[2]d ssh2: ED25519 SHA256:Vq2bH1o0pCk3xWZ0s9kq1w5gYt7nXJ0aL4r6m8dQe2U"},
	{4, "sshd", "pam_unix(sshd:session): session opened for user deploy(uid=1000) by (uid=0)"},
	{3, "sshd", "Disconnected from user deploy %[1]s port %[2]d"},
	{3, "sshd", "Connection closed by %[1]s port %[2]d [preauth]"},
	{2, "sshd", "Unable to negotiate with %[1]s port %[2]d: no matching host key type found. Their offer: ssh-rsa,ssh-dss [preauth]"},
	{3, "CRON", "pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)"},
	{3, "systemd-logind", "New session 4711 of user deploy."},
	{2, "sudo", "deploy : TTY=pts/0 ; PWD=/home/deploy ; USER=root ; COMMAND=/usr/bin/systemctl restart mysite"},
}

var users = []string{"admin", "oracle", "test", "ubuntu", "pi", "git", "postgres", "user1", "support", "guest", "ftpuser", "10.0.0.5"}

// generate writes n auth.log lines from a few thousand attacking hosts.
func generate(w io.Writer, n int, seed uint64) error {
	r := rand.New(rand.NewPCG(seed, 7))
	total := 0
	for _, m := range sshdMessages {
		total += m.weight
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	t := time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)
	for i := range n {
		t = t.Add(time.Duration(r.IntN(80)) * time.Millisecond)
		pick := r.IntN(total)
		var k int
		for k = 0; pick >= sshdMessages[k].weight; k++ {
			pick -= sshdMessages[k].weight
		}
		m := sshdMessages[k]
		var host string
		if r.IntN(10) == 0 {
			host = fmt.Sprintf("2001:db8:%x::%x", r.IntN(64), r.IntN(4096))
		} else {
			host = fmt.Sprintf("203.0.%d.%d", 113+r.IntN(8), 1+r.IntN(254))
		}
		msg := m.format
		if strings.Contains(msg, "%[") {
			msg = fmt.Sprintf(m.format, host, 1024+r.IntN(64000), users[r.IntN(len(users))])
		}
		if _, err := fmt.Fprintf(bw, "%s web1 %s[%d]: %s\n", t.Format(time.Stamp), m.prog, 1000+i%30000, msg); err != nil {
			return err
		}
	}
	return bw.Flush()
}
