// Package examples carries the example projects inside the tandem binary,
// so that 'tandem lab up' can package and install the example site from
// any directory.
package examples

import "embed"

// Pysite is examples/pysite: a small WSGI site served by gunicorn.
//
//go:embed pysite/pyproject.toml pysite/README.md pysite/LICENSE all:pysite/src pysite/deploy
var Pysite embed.FS
