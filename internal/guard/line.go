package guard

import "bytes"

// SplitSyslog splits a syslog file line ("Nov 28 21:00:00 host sshd[12]:
// msg", or with an RFC 3339 timestamp as rsyslog's high-precision format
// writes) into the program's identifier and its message. A line in no
// syslog format (an nginx log) comes back whole with prog "".
func SplitSyslog(line []byte) (prog string, msg []byte) {
	rest, ok := skipTimestamp(line)
	if !ok {
		return "", line
	}
	// host
	sp := bytes.IndexByte(rest, ' ')
	if sp <= 0 {
		return "", line
	}
	rest = rest[sp+1:]
	// tag: prog[pid]: or prog:
	end := bytes.Index(rest, []byte(": "))
	if end <= 0 || end > 64 {
		return "", line
	}
	tag := rest[:end]
	if i := bytes.IndexByte(tag, '['); i > 0 && tag[len(tag)-1] == ']' {
		tag = tag[:i]
	}
	if bytes.IndexByte(tag, ' ') >= 0 {
		return "", line
	}
	return program(tag), rest[end+2:]
}

// program returns tag as a string without allocating for the common names.
func program(tag []byte) string {
	switch string(tag) { // the compiler does not allocate for this switch
	case "sshd":
		return "sshd"
	case "sshd-session":
		return "sshd-session"
	case "tandem":
		return "tandem"
	case "nginx":
		return "nginx"
	}
	return string(tag)
}

// skipTimestamp skips "Mmm dd hh:mm:ss " or an RFC 3339 timestamp and
// its space.
func skipTimestamp(b []byte) ([]byte, bool) {
	// "Nov 28 21:00:00 " (day space-padded: "Nov  8")
	if len(b) > 16 && isUpper(b[0]) && isLower(b[1]) && isLower(b[2]) && b[3] == ' ' &&
		(b[4] == ' ' || isDigit(b[4])) && isDigit(b[5]) && b[6] == ' ' &&
		isDigit(b[7]) && isDigit(b[8]) && b[9] == ':' && isDigit(b[10]) && isDigit(b[11]) && b[12] == ':' &&
		isDigit(b[13]) && isDigit(b[14]) && b[15] == ' ' {
		return b[16:], true
	}
	// "2026-11-28T21:00:00[.frac](Z|+hh:mm) "
	if len(b) > 20 && isDigit(b[0]) && isDigit(b[3]) && b[4] == '-' && b[7] == '-' && b[10] == 'T' && b[13] == ':' {
		sp := bytes.IndexByte(b[19:], ' ')
		if sp < 0 {
			return nil, false
		}
		return b[19+sp+1:], true
	}
	return nil, false
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isUpper(c byte) bool { return c >= 'A' && c <= 'Z' }
func isLower(c byte) bool { return c >= 'a' && c <= 'z' }
