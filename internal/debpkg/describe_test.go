package debpkg

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tandem-ha/tandem/internal/pyproject"
)

func TestDeriveSynopsis(t *testing.T) {
	long := "Collects, indexes and serves the measurements of every weather station in the region with a small API"
	for _, tc := range []struct {
		name, desc, want string
	}{
		{"plain", "Example web site served by gunicorn", "Example web site served by gunicorn"},
		{"flask tutorial", "The basic blog app built in the Flask tutorial.", "basic blog app built in the Flask tutorial"},
		{"article a", "A tiny photo gallery", "tiny photo gallery"},
		{"article an", "an inventory tracker", "inventory tracker"},
		{"article upper", "THE shop", "shop (Python web application)"},
		{"not an article", "Theatre booking site", "Theatre booking site"},
		{"two sentences", "Blog engine. Written in Flask.", "Blog engine"},
		{"ellipsis kept", "Stores things and so on...", "Stores things and so on..."},
		{"etc kept", "Stores photos, videos etc.", "Stores photos, videos etc."},
		{"package name first", "flaskr is a blog app", "blog app"},
		{"package name and colon", "Flaskr: the blog app", "blog app"},
		{"package name only", "flaskr", "Python web application flaskr"},
		{"package name in a word", "flaskrs everywhere", "flaskrs everywhere"},
		{"single word", "Blog", "Blog (Python web application)"},
		{"empty", "", "Python web application flaskr"},
		{"blanks and newlines", "  A  blog\n\tapp  ", "blog app"},
		{"too long", long, "Collects, indexes and serves the measurements of every weather station in..."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _ := DeriveSynopsis(tc.desc, "flaskr", "flaskr")
			if got != tc.want {
				t.Errorf("DeriveSynopsis(%q) = %q, want %q", tc.desc, got, tc.want)
			}
			if err := CheckSynopsis(got, "flaskr"); err != nil {
				t.Errorf("derived synopsis %q fails its own check: %v", got, err)
			}
		})
	}
}

func TestCheckSynopsis(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want: "" for accepted, else a word of the error
	}{
		{"blog app built with Flask", ""},
		{"tiny photo gallery...", ""},
		{"The blog", "article"},
		{"a blog", "article"},
		{"blog app.", "full stop"},
		{"flaskr blog", "package name"},
		{"Flaskr", "package name"},
		{"blog", "single word"},
		{strings.Repeat("word ", 17), "lintian allows 80"},
		{"two\nlines", "one line"},
		{"", "empty"},
	} {
		err := CheckSynopsis(tc.in, "flaskr")
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("CheckSynopsis(%q) = %v, want accepted", tc.in, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("CheckSynopsis(%q) = %v, want an error mentioning %q", tc.in, err, tc.want)
		}
	}
}

func TestLongDescription(t *testing.T) {
	for _, tc := range []struct {
		name, readme, synopsis, want string
	}{
		{"markdown", "# Flaskr\n\n[![CI](https://x/badge.svg)](https://x)\n\nThe basic **blog** app built in the [Flask tutorial](https://flask.palletsprojects.com/tutorial/).\n\n```sh\nflask run\n```\n\nIt keeps posts in `SQLite`.\n\n## Install\n\nRun pip.\n",
			"basic blog app", "The basic blog app built in the Flask tutorial.\n\nIt keeps posts in SQLite."},
		{"first paragraph repeats the synopsis", "Blog app\n\nUsers register and post.\n", "blog app", "Users register and post."},
		{"list", "Features:\n\n- register\n- log in\n  and out\n* post\n", "x", "Features:\n\n\x00- register\n\x00- log in and out\n\x00- post"},
		{"rst", "Flaskr\n======\n\nA blog, see `the docs <https://example.org>`_ and the `tutorial`_.\n\n.. code-block:: sh\n\n    flask run\n\nEnd :code:`here`.\n\nUsage\n-----\n\nNo.\n",
			"x", "A blog, see the docs and the tutorial.\n\nEnd here."},
		{"html and quotes", "<p align=center><img src=x></p>\n\n> note\n\nText.\n", "x", "Text."},
		{"empty", "", "x", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := LongDescription(tc.readme, tc.synopsis); got != tc.want {
				t.Errorf("LongDescription =\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
	huge := strings.Repeat("Lorem ipsum dolor sit amet, consectetur adipiscing elit.\n\n", 100)
	if got := LongDescription(huge, "x"); len(got) > maxLongDesc+100 {
		t.Errorf("long readme gives %d bytes", len(got))
	}
}

func TestWrapTextWithinLintianWidth(t *testing.T) {
	text := "A " + strings.Repeat("word ", 40) + "\n\n" + listMark + strings.Repeat("item ", 30) + "\n" +
		"see https://example.org/" + strings.Repeat("x", 120) + " and\n" + strings.Repeat("y ", 38) + "zz .env file"
	out := wrapText(text, 78)
	for i, l := range strings.Split(out, "\n") {
		if utf8.RuneCountInString(" "+l) > maxDescWidth {
			t.Errorf("line %d is %d columns: %q", i, len(l)+1, l)
		}
		if strings.HasPrefix(l, ".") {
			t.Errorf("line %d starts with a dot: %q", i, l)
		}
	}
	if !strings.Contains(out, "\n• item item") {
		t.Errorf("list item not marked:\n%s", out)
	}
	if strings.Contains(out, "xxxxx") {
		t.Errorf("over-long word kept:\n%s", out)
	}
}

func TestMaintainer(t *testing.T) {
	pp := func(p ...pyproject.Person) []pyproject.Person { return p }
	for _, tc := range []struct {
		name        string
		proj        pyproject.Project
		want, error string
	}{
		{"tandem key first", pyproject.Project{Tandem: pyproject.Tandem{Maintainer: "Ops <ops@example.org>"}, Authors: pp(pyproject.Person{Name: "A", Email: "a@example.org"})}, "Ops <ops@example.org>", ""},
		{"maintainers before authors", pyproject.Project{Maintainers: pp(pyproject.Person{Name: "Pallets", Email: "contact@example.org"}), Authors: pp(pyproject.Person{Name: "A", Email: "a@example.org"})}, "Pallets <contact@example.org>", ""},
		{"authors", pyproject.Project{Authors: pp(pyproject.Person{Name: "Only name"}, pyproject.Person{Email: "only@example.org"}, pyproject.Person{Name: "B", Email: "b@example.org"})}, "B <b@example.org>", ""},
		{"comma in name skipped", pyproject.Project{Authors: pp(pyproject.Person{Name: "Doe, Jane", Email: "j@example.org"})}, "", "may not contain commas"},
		{"none", pyproject.Project{}, "", "[project].maintainers"},
		{"bad tandem key", pyproject.Project{Tandem: pyproject.Tandem{Maintainer: "nobody"}}, "", "tool.tandem.maintainer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := maintainer(&tc.proj)
			if tc.error != "" {
				if err == nil || !strings.Contains(err.Error(), tc.error) {
					t.Errorf("err = %v, want one mentioning %q", err, tc.error)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("maintainer = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestDEP5Expr(t *testing.T) {
	for in, want := range map[string]string{
		"MIT":                                  "Expat",
		"MIT OR Apache-2.0":                    "Expat or Apache-2.0",
		"(MIT OR Apache-2.0) AND BSD-3-Clause": "Expat or Apache-2.0 and BSD-3-Clause",
		"GPL-2.0-or-later WITH Classpath-exception-2.0": "GPL-2+ with Classpath-exception-2.0 exception",
		"LGPL-3.0-only": "LGPL-3",
	} {
		if got, _ := DEP5Expr(in); got != want {
			t.Errorf("DEP5Expr(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestResolveLicense(t *testing.T) {
	mit := LicenseFile{Path: "LICENSE-MIT", Text: "Permission is hereby granted, free of charge\n"}
	apache := LicenseFile{Path: "LICENSE-APACHE", Text: "Apache License\nVersion 2.0\n"}
	for _, tc := range []struct {
		name  string
		spdx  string
		files []LicenseFile
		want  []string // substrings of the rendered copyright file
		not   []string
	}{
		{"expression with files", "MIT OR Apache-2.0", []LicenseFile{apache, mit}, []string{
			"Files: *\nCopyright: 2024 A\nLicense: Expat or Apache-2.0\n\nLicense: Expat\n Permission is hereby granted",
			"\nLicense: Apache-2.0\n On Debian systems, the complete text of this license can be found in\n /usr/share/common-licenses/Apache-2.0.\n"}, []string{" Apache License\n"}},
		{"common license text is referenced, not copied", "", []LicenseFile{{Path: "LICENSE", Text: "Apache License\nVersion 2.0, January 2004\n"}},
			[]string{"License: Apache-2.0\n On Debian systems"}, []string{"January 2004"}},
		{"guessed from the file", "", []LicenseFile{mit}, []string{"License: Expat\n Permission is hereby granted"}, nil},
		{"unknown text", "", []LicenseFile{{Path: "COPYING", Text: "All rights reserved.\n"}}, []string{"License: other\n All rights reserved.\n"}, nil},
		{"nothing declared", "", nil, []string{"License: other\n No license was declared"}, nil},
		{"not in the project", "MPL-2.0", nil, []string{"License: MPL-2.0\n On Debian systems"}, nil},
		{"unknown id without text", "LicenseRef-Proprietary", nil, []string{"License: LicenseRef-Proprietary\n See the LicenseRef-Proprietary license; its text was not found"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := RenderCopyright(CopyrightParams{Name: "x", Year: 2024, Holders: []string{"A"}, License: ResolveLicense(tc.spdx, tc.files)})
			for _, w := range tc.want {
				if !strings.Contains(c, w) {
					t.Errorf("copyright lacks %q:\n%s", w, c)
				}
			}
			for _, w := range tc.not {
				if strings.Contains(c, w) {
					t.Errorf("copyright has %q:\n%s", w, c)
				}
			}
		})
	}
}

func TestFindLicenseFiles(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"LICENSE", "LICENSE.md", "COPYING", "AUTHORS", "licenses/a.txt", "licenses/sub/b.txt", "src/x.py", "venv/LICENSE"} {
		p := filepath.Join(dir, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name   string
		globs  []string
		legacy string
		want   string
	}{
		{"default names", nil, "", "COPYING LICENSE LICENSE.md"},
		{"legacy file", nil, "AUTHORS", "AUTHORS"},
		{"pep 639 globs", []string{"LICEN[CS]E*", "licenses/**"}, "", "LICENSE LICENSE.md licenses/a.txt licenses/sub/b.txt"},
		{"one level", []string{"licenses/*.txt"}, "", "licenses/a.txt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FindLicenseFiles(dir, tc.globs, tc.legacy)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, f := range got {
				names = append(names, f.Path)
			}
			if strings.Join(names, " ") != tc.want {
				t.Errorf("found %q, want %q", names, tc.want)
			}
		})
	}
}
