package debpkg

import (
	"errors"
	"strings"

	"github.com/tandem-ha/tandem/internal/shellwords"
)

// SplitCommand splits a command line into words like a POSIX shell does
// for quoting ('...', "...", backslash), without expansions (see
// shellwords.Split); unlike it, a blank line is an error here, since a
// service needs a command.
func SplitCommand(s string) ([]string, error) {
	words, err := shellwords.Split(s)
	if err != nil {
		return nil, err
	}
	if len(words) == 0 {
		return nil, errors.New("empty command")
	}
	return words, nil
}

// JoinCommand formats words for a systemd ExecStart= line: specifiers
// (%) and variable references ($) are escaped, and words with blanks,
// quotes or backslashes are double-quoted.
func JoinCommand(words []string) string {
	out := make([]string, len(words))
	for i, w := range words {
		w = strings.NewReplacer("%", "%%", "$", "$$").Replace(w)
		if w == "" || w == ";" || strings.ContainsAny(w, " \t\"'\\") {
			w = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(w) + `"`
		}
		out[i] = w
	}
	return strings.Join(out, " ")
}
