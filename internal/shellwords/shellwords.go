// Package shellwords splits a command line into words the way a POSIX shell
// would, without running a shell: hook commands, exec-provider scripts and a
// project's service command all go through Split.
package shellwords

import (
	"errors"
	"fmt"
	"strings"
)

// Errors from Split; the returned errors wrap them.
var (
	ErrUnterminatedQuote = errors.New("unterminated quote")
	ErrTrailingBackslash = errors.New("trailing backslash")
)

// Split splits line into words the way a POSIX shell would, without expanding
// variables, globs or anything else: unquoted blanks (space, tab, newline,
// carriage return) separate words; single quotes keep everything literally;
// double quotes keep everything except that a backslash escapes ", \, $ and `;
// outside quotes a backslash escapes any character, and backslash-newline
// continues the line. An empty or blank line gives no words and no error.
func Split(line string) ([]string, error) {
	var (
		words  []string
		cur    strings.Builder
		inWord bool
	)
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '\\':
			if i+1 >= len(line) {
				return nil, ErrTrailingBackslash
			}
			i++
			if line[i] != '\n' { // backslash-newline continues the line
				cur.WriteByte(line[i])
				inWord = true
			}
		case c == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("%w: no closing '", ErrUnterminatedQuote)
			}
			cur.WriteString(line[i+1 : i+1+j])
			i += 1 + j
			inWord = true
		case c == '"':
			inWord = true
			closed := false
			for i++; i < len(line); i++ {
				d := line[i]
				if d == '"' {
					closed = true
					break
				}
				if d == '\\' && i+1 < len(line) && strings.IndexByte("\"\\$`", line[i+1]) >= 0 {
					i++
					d = line[i]
				}
				cur.WriteByte(d)
			}
			if !closed {
				return nil, fmt.Errorf(`%w: no closing "`, ErrUnterminatedQuote)
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}
