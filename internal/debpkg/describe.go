package debpkg

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxDescWidth is lintian's limit for the synopsis and for each line of
// the extended description (checks/fields/description: $MAXIMUM_WIDTH).
const maxDescWidth = 80

var (
	articleRe = regexp.MustCompile(`(?i)^(an?|the)\s+`)
	// a sentence end inside the synopsis: ". " followed by more text
	sentenceEndRe = regexp.MustCompile(`\.\s+\S`)
)

// DeriveSynopsis turns [project].description into a Debian synopsis that
// lintian accepts: one line, no leading article, not starting with the
// package name, no trailing full stop, more than one word, at most 80
// characters. notes say what was changed, for the build log.
func DeriveSynopsis(description, pkg, project string) (synopsis string, notes []string) {
	s := strings.Join(strings.Fields(description), " ")
	orig := s
	// Several sentences: keep the first.
	if loc := sentenceEndRe.FindStringIndex(s); loc != nil && !endsWithAbbrev(s[:loc[0]+1]) {
		s = s[:loc[0]]
	}
	for i := 0; i < 3; i++ {
		before := s
		s = strings.TrimLeft(s, " -:,")
		if startsWithWord(s, pkg) {
			s = strings.TrimSpace(s[len(pkg):])
			s = strings.TrimLeft(s, " -:,–—")
			for _, w := range []string{"is ", "- "} {
				if strings.HasPrefix(strings.ToLower(s), w) {
					s = s[len(w):]
				}
			}
		}
		s = articleRe.ReplaceAllString(s, "")
		if s == before {
			break
		}
	}
	s = trimFullStop(s)
	if s != "" && !strings.ContainsFunc(s, unicode.IsSpace) {
		s = s + " (Python web application)"
	}
	if s == "" || fuzzyEqual(s, pkg) {
		s = "Python web application " + project
	}
	if utf8.RuneCountInString(s) > maxDescWidth {
		s = truncateWords(s, maxDescWidth)
	}
	for _, fallback := range []string{"Python web application " + project, "web application packaged by tandem"} {
		if CheckSynopsis(s, pkg) == nil {
			break
		}
		s = fallback
	}
	if s != orig {
		notes = append(notes, fmt.Sprintf("synopsis %q derived from [project].description %q (set [tool.tandem].synopsis to choose it)", s, orig))
	}
	return s, notes
}

// CheckSynopsis reports why lintian would reject s (an error or warning
// tag), for a synopsis the project chose itself.
func CheckSynopsis(s, pkg string) error {
	switch {
	case strings.TrimSpace(s) == "":
		return fmt.Errorf("is empty")
	case strings.ContainsAny(s, "\n\r\t"):
		return fmt.Errorf("%q must be one line without tabs", s)
	case utf8.RuneCountInString(s) > maxDescWidth:
		return fmt.Errorf("%q is %d characters; lintian allows %d (synopsis-too-long)", s, utf8.RuneCountInString(s), maxDescWidth)
	case articleRe.MatchString(s):
		return fmt.Errorf("%q starts with an article; drop it (description-synopsis-starts-with-article)", s)
	case startsWithWord(s, pkg):
		return fmt.Errorf("%q starts with the package name %s (description-starts-with-package-name)", s, pkg)
	case fuzzyEqual(s, pkg):
		return fmt.Errorf("%q is only the package name (description-is-pkg-name)", s)
	case !strings.ContainsFunc(s, unicode.IsSpace):
		return fmt.Errorf("%q is a single word (description-too-short)", s)
	case trimFullStop(s) != s:
		return fmt.Errorf("%q ends with a full stop; a synopsis is not a sentence", s)
	}
	return nil
}

func startsWithWord(s, word string) bool {
	if len(s) < len(word) || !strings.EqualFold(s[:len(word)], word) {
		return false
	}
	if len(s) == len(word) {
		return true
	}
	r, _ := utf8.DecodeRuneInString(s[len(word):])
	return !(unicode.IsLetter(r) || unicode.IsDigit(r) || r == '_')
}

// fuzzyEqual is lintian's description-is-pkg-name comparison.
func fuzzyEqual(s, pkg string) bool {
	norm := func(x string) string {
		x = strings.ToLower(x)
		x = strings.NewReplacer("-", " ", "_", " ", "/", " ", `\`, " ").Replace(x)
		return strings.Join(strings.Fields(x), " ")
	}
	return norm(s) == norm(pkg)
}

func endsWithAbbrev(s string) bool {
	l := strings.ToLower(s)
	return strings.HasSuffix(l, " etc.") || strings.HasSuffix(l, " e.g.") || strings.HasSuffix(l, " eg.") || strings.HasSuffix(l, " i.e.")
}

// trimFullStop drops trailing full stops, but keeps an ellipsis and
// abbreviations lintian accepts ("etc.").
func trimFullStop(s string) string {
	s = strings.TrimRight(s, " ")
	if strings.HasSuffix(s, "...") && !strings.HasSuffix(s, "....") {
		return s
	}
	if endsWithAbbrev(s) {
		return s
	}
	return strings.TrimRight(strings.TrimRight(s, "."), " ")
}

// truncateWords shortens s to at most max characters at a word boundary,
// ending it with "..." (which lintian accepts).
func truncateWords(s string, max int) string {
	r := []rune(s)
	cut := string(r[:max-3])
	if i := strings.LastIndexByte(cut, ' '); i > max/2 {
		cut = cut[:i]
	}
	return strings.TrimRight(cut, " ,;:-.") + "..."
}

var (
	mdImageRe  = regexp.MustCompile(`!\[([^\]]*)\]\([^)]*\)`)
	mdLinkRe   = regexp.MustCompile(`\[([^\]]+)\]\([^)]*\)`)
	mdRefRe    = regexp.MustCompile(`\[([^\]]+)\]\[[^\]]*\]`)
	mdEmphRe   = regexp.MustCompile(`(\*\*|__)(\S(?:.*?\S)?)(\*\*|__)`)
	rstLinkRe  = regexp.MustCompile("`([^`<]+?)\\s*<[^>]*>`_+")
	rstRefRe   = regexp.MustCompile("`([^`]+)`_+")
	rstRoleRe  = regexp.MustCompile(":[a-z]+:`([^`]+)`")
	rstUnderRe = regexp.MustCompile(`^([=\-~^"'*+#]){3,}\s*$`)
	listItemRe = regexp.MustCompile(`^(\s*)([-*+]|\d+[.)])\s+`)
	htmlTagRe  = regexp.MustCompile(`<[^>]+>`)
)

// maxLongDesc bounds how much of the readme becomes the extended
// description: the Packages index is not the place for a manual.
const maxLongDesc = 1200

// LongDescription turns a readme (Markdown, reStructuredText or plain
// text) into paragraphs for the extended description: the prose before
// the second heading, without markup, code blocks, tables or images,
// skipping a first paragraph that only repeats the synopsis. Paragraphs
// are separated by empty lines; list items are kept one per line.
func LongDescription(readme, synopsis string) string {
	lines := strings.Split(strings.ReplaceAll(readme, "\r\n", "\n"), "\n")
	var paras [][]string
	var cur []string
	flush := func() {
		if len(cur) > 0 {
			paras = append(paras, cur)
			cur = nil
		}
	}
	headings := 0
	fence := false
	rstBlock := false
	for i := 0; i < len(lines); i++ {
		l := strings.TrimRight(lines[i], " \t")
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "```") || strings.HasPrefix(t, "~~~") {
			fence = !fence
			flush()
			continue
		}
		if fence {
			continue
		}
		if rstBlock {
			if t == "" || strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t") {
				continue
			}
			rstBlock = false
		}
		isHeading := strings.HasPrefix(t, "#") ||
			(i+1 < len(lines) && t != "" && rstUnderRe.MatchString(strings.TrimSpace(lines[i+1])))
		if rstUnderRe.MatchString(t) {
			flush()
			continue
		}
		if isHeading {
			flush()
			headings++
			if headings >= 2 && len(paras) > 0 {
				break
			}
			continue
		}
		switch {
		case t == "":
			flush()
			continue
		case strings.HasPrefix(t, ".. "), strings.HasSuffix(t, "::"):
			// reStructuredText directive or literal block.
			flush()
			rstBlock = true
			continue
		case strings.HasPrefix(l, "    "), strings.HasPrefix(l, "\t"),
			strings.HasPrefix(t, "|"), strings.HasPrefix(t, "<"), strings.HasPrefix(t, "[!"),
			strings.HasPrefix(t, "!["), strings.HasPrefix(t, ">"):
			// code, tables, HTML, badges, images, quotes
			if listItemRe.MatchString(l) && !strings.HasPrefix(l, "\t") && len(l)-len(strings.TrimLeft(l, " ")) < 4 {
				break
			}
			flush()
			continue
		}
		cur = append(cur, l)
	}
	flush()

	var rendered []string
	for _, p := range paras {
		if text := renderPara(p); text != "" {
			rendered = append(rendered, text)
		}
	}
	var out []string
	size := 0
	for i, text := range rendered {
		// "Run it like this:" introduced a code block, which is gone.
		if strings.HasSuffix(text, ":") && (i+1 == len(rendered) || !strings.HasPrefix(rendered[i+1], listMark)) {
			continue
		}
		if i == 0 || len(out) == 0 {
			if fuzzyAlnum(text) == fuzzyAlnum(synopsis) {
				continue
			}
		}
		if size > 0 && size+len(text) > maxLongDesc {
			break
		}
		out = append(out, text)
		size += len(text)
	}
	return strings.Join(out, "\n\n")
}

// renderPara removes inline markup; list items become lines of their own
// starting with "  - ".
func renderPara(lines []string) string {
	var items []string
	var prose []string
	for _, l := range lines {
		if m := listItemRe.FindStringSubmatch(l); m != nil {
			items = append(items, inline(l[len(m[0]):]))
			continue
		}
		if len(items) > 0 && strings.HasPrefix(l, " ") {
			items[len(items)-1] += " " + inline(l)
			continue
		}
		prose = append(prose, inline(l))
	}
	var b []string
	if len(prose) > 0 {
		b = append(b, strings.Join(strings.Fields(strings.Join(prose, " ")), " "))
	}
	for _, it := range items {
		it = strings.Join(strings.Fields(it), " ")
		if it != "" {
			b = append(b, listMark+it)
		}
	}
	return strings.Join(b, "\n")
}

// listMark starts a list item; wrapText indents its continuation lines.
const listMark = "\x00- "

func inline(s string) string {
	s = mdImageRe.ReplaceAllString(s, "")
	s = mdLinkRe.ReplaceAllString(s, "$1")
	s = mdRefRe.ReplaceAllString(s, "$1")
	s = rstLinkRe.ReplaceAllString(s, "$1")
	s = rstRefRe.ReplaceAllString(s, "$1")
	s = rstRoleRe.ReplaceAllString(s, "$1")
	s = mdEmphRe.ReplaceAllString(s, "$2")
	s = strings.ReplaceAll(s, "``", "")
	s = strings.ReplaceAll(s, "`", "")
	s = htmlTagRe.ReplaceAllString(s, "")
	return s
}

func fuzzyAlnum(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 128 && (unicode.IsLetter(r) || unicode.IsDigit(r)) {
			return unicode.ToLower(r)
		}
		return -1
	}, s)
}

// wrapText wraps text for the Description field: paragraphs (separated by
// empty lines) are filled to width columns, list items start with "• ". No line starts with "." (dpkg would read it as
// a control statement) and words longer than a line are dropped, so every
// line stays within lintian's 80 columns once dpkg adds its leading space.
func wrapText(text string, width int) string {
	var out []string
	for _, para := range strings.Split(text, "\n") {
		first, indent := "", ""
		if rest, ok := strings.CutPrefix(para, listMark); ok {
			// nfpm strips the indentation of Description lines, and a
			// line starting with "-" or "*" reads as an unindented list
			// to lintian: a bullet marks the item instead.
			para, first = rest, "• "
		}
		var words []string
		for _, w := range strings.Fields(para) {
			if len(indent)+utf8.RuneCountInString(w)+2 <= width {
				words = append(words, w)
			}
		}
		if len(words) > 0 && strings.HasPrefix(words[0], ".") {
			words[0] = `"` + words[0] + `"`
		}
		if len(words) == 0 {
			out = append(out, "")
			continue
		}
		line := first + words[0]
		for i := 1; i < len(words); i++ {
			w := words[i]
			if utf8.RuneCountInString(line)+1+utf8.RuneCountInString(w) > width {
				if strings.HasPrefix(w, ".") {
					// No line may start with "." (a dpkg control statement).
					w = `"` + w + `"`
				}
				out = append(out, line)
				line = indent + w
				continue
			}
			line += " " + w
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}
