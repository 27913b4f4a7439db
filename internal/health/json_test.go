package health

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestJSONField(t *testing.T) {
	doc := `{"status":"ok","n":42,"f":1.50,"neg":-3e2,"t":true,"z":null,
		"obj":{"a":{"b":"deep"}},"arr":[10,{"x":"y"}],"dot.key":1,"":"empty",
		"esc":"caf\u00e9\n"}`
	tests := []struct {
		path, want, wantErr string
	}{
		{path: "status", want: "ok"},
		{path: "n", want: "42"},
		{path: "f", want: "1.50"}, // numbers keep their written form
		{path: "neg", want: "-3e2"},
		{path: "t", want: "true"},
		{path: "z", want: "null"},
		{path: "obj.a.b", want: "deep"},
		{path: "obj.a", want: `{"b":"deep"}`},
		{path: "arr.0", want: "10"},
		{path: "arr.1.x", want: "y"},
		{path: "arr", want: `[10,{"x":"y"}]`},
		{path: "esc", want: "café\n"},
		{path: "missing", wantErr: `json field "missing" not found`},
		{path: "obj.a.c", wantErr: `json field "obj.a.c" not found`},
		{path: "arr.2", wantErr: `"2" is not an index of an array of 2`},
		{path: "arr.-1", wantErr: "not an index"},
		{path: "arr.x", wantErr: "not an index"},
		{path: "status.x", wantErr: `json field "status.x": "status" is not an object or array`},
		{path: "dot.key", wantErr: `json field "dot" not found`}, // dots always separate
		{path: "a..b", wantErr: "empty segment"},
		{path: "", wantErr: "empty segment"},
	}
	for _, tt := range tests {
		got, err := jsonField([]byte(doc), tt.path)
		switch {
		case tt.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("jsonField(%q) = %q, %v; want error containing %q", tt.path, got, err, tt.wantErr)
			}
		case err != nil || got != tt.want:
			t.Errorf("jsonField(%q) = %q, %v; want %q", tt.path, got, err, tt.want)
		}
	}
}

func TestJSONFieldBadBodies(t *testing.T) {
	tests := []struct{ name, body, wantErr string }{
		{"empty", "", "body is not JSON"},
		{"html", "<html>ok</html>", "body is not JSON"},
		{"truncated", `{"status":"o`, "body is not JSON"},
		{"trailing garbage", `{"status":"ok"} trailing`, "data after the top-level value"},
		{"two documents", `{"status":"ok"}{"status":"ok"}`, "data after the top-level value"},
		{"scalar document", `"ok"`, `the document is not an object or array`},
	}
	for _, tt := range tests {
		_, err := jsonField([]byte(tt.body), "status")
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: jsonField(%q) error = %v; want one containing %q", tt.name, tt.body, err, tt.wantErr)
		}
	}
	if got, err := jsonField([]byte(" {\"status\":\"ok\"}\n\n"), "status"); err != nil || got != "ok" {
		t.Errorf("surrounding whitespace: %q, %v", got, err)
	}
}

func TestMatchJSON(t *testing.T) {
	doc := []byte(`{"status":"ok","count":1.0,"big":1e3,"s":"2"}`)
	tests := []struct {
		path, want string
		ok         bool
	}{
		{"status", "ok", true},
		{"status", "OK", false}, // exact, case-sensitive
		{"status", "ok ", false},
		{"count", "1", true}, // numeric equality
		{"count", "1.0", true},
		{"count", "2", false},
		{"big", "1000", true},
		{"s", "2.0", true},
		{"missing", "x", false},
	}
	for _, tt := range tests {
		err := matchJSON(doc, tt.path, tt.want)
		if (err == nil) != tt.ok {
			t.Errorf("matchJSON(%q, %q) = %v; want ok=%v", tt.path, tt.want, err, tt.ok)
		}
	}
}

// FuzzJSONField feeds untrusted bodies and paths to the matcher: it must
// never panic, must reject invalid JSON, and must find any string value
// that was put at a known path.
func FuzzJSONField(f *testing.F) {
	f.Add([]byte(`{"status":"ok"}`), "status", "ok")
	f.Add([]byte(`{"a":{"b":[1,{"c":null}]}}`), "a.b.1.c", "null")
	f.Add([]byte(`[[[[[]]]]]`), "0.0.0.0", "")
	f.Add([]byte(`{"n":1e999}`), "n", "1")
	f.Add([]byte("\xff{"), "x", "y")
	f.Fuzz(func(t *testing.T, body []byte, path, want string) {
		got, err := jsonField(body, path)
		if err == nil {
			if !json.Valid(body) {
				t.Fatalf("jsonField accepted invalid JSON %q", body)
			}
			if merr := matchJSON(body, path, got); merr != nil {
				t.Fatalf("matchJSON(%q, %q, its own value %q) = %v", body, path, got, merr)
			}
		}
		_ = matchJSON(body, path, want)

		// Round trip: a value placed at path is found there.
		if validPath(path) != nil || !utf8.ValidString(path) || !utf8.ValidString(want) {
			return // json.Marshal would rewrite invalid UTF-8
		}
		segs := strings.Split(path, ".")
		var v any = want
		for i := len(segs) - 1; i >= 0; i-- {
			v = map[string]any{segs[i]: v}
		}
		doc, err := json.Marshal(v)
		if err != nil {
			return
		}
		got, err = jsonField(doc, path)
		if err != nil || got != want {
			t.Fatalf("jsonField(%s, %q) = %q, %v; want %q", doc, path, got, err, want)
		}
	})
}
