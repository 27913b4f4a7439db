package config

import (
	"fmt"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// keyLines walks the TOML document and records the line of every key, so
// that semantic errors found after decoding can point at the file.
func keyLines(data []byte) (keyIndex, error) {
	idx := keyIndex{}
	arrays := map[string]int{} // array-of-tables path -> next index
	var table string
	p := unstable.Parser{}
	p.Reset(data)
	for p.NextExpression() {
		n := p.Expression()
		switch n.Kind {
		case unstable.Table, unstable.ArrayTable:
			path, line := joinKey(&p, n.Key(), data)
			// A table nested under an array of tables ("[[health]]" then
			// "[health.x]") belongs to that array's latest element.
			for arr, next := range arrays {
				if strings.HasPrefix(path, arr+".") {
					path = fmt.Sprintf("%s[%d]%s", arr, next-1, path[len(arr):])
				}
			}
			if n.Kind == unstable.ArrayTable {
				i := arrays[path]
				arrays[path] = i + 1
				path = fmt.Sprintf("%s[%d]", path, i)
			}
			table = path
			idx[path] = line
		case unstable.KeyValue:
			rel, line := joinKey(&p, n.Key(), data)
			full := rel
			if table != "" {
				full = table + "." + rel
			}
			idx[full] = line
		}
	}
	if err := p.Error(); err != nil {
		return nil, err
	}
	return idx, nil
}

func joinKey(p *unstable.Parser, it unstable.Iterator, data []byte) (string, int) {
	var parts []string
	line := 0
	for it.Next() {
		k := it.Node()
		parts = append(parts, string(k.Data))
		if line == 0 {
			line = p.Shape(k.Raw).Start.Line
		}
	}
	return strings.Join(parts, "."), line
}
