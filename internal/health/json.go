package health

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// validPath reports whether path is a usable dotted path: non-empty
// segments separated by dots. Numeric segments index arrays.
func validPath(path string) error {
	for seg := range strings.SplitSeq(path, ".") {
		if seg == "" {
			return fmt.Errorf("json path %q has an empty segment; write it like \"status\" or \"checks.db.status\"", path)
		}
	}
	return nil
}

// jsonField returns the field of the JSON document body found by the dotted
// path, rendered as text: strings as themselves, numbers as written, true,
// false and null as those words, objects and arrays as compact JSON. The body
// comes from the checked service and is untrusted.
func jsonField(body []byte, path string) (string, error) {
	if err := validPath(path); err != nil {
		return "", err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return "", fmt.Errorf("body is not JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return "", errors.New("body is not JSON: data after the top-level value")
	}
	walked := ""
	for seg := range strings.SplitSeq(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			f, ok := x[seg]
			if !ok {
				return "", fmt.Errorf("json field %q not found", joinPath(walked, seg))
			}
			v = f
		case []any:
			i, err := strconv.Atoi(seg)
			if err != nil || i < 0 || i >= len(x) {
				return "", fmt.Errorf("json field %q: %q is not an index of an array of %d", joinPath(walked, seg), seg, len(x))
			}
			v = x[i]
		default:
			return "", fmt.Errorf("json field %q: %s is not an object or array", joinPath(walked, seg), describe(walked))
		}
		walked = joinPath(walked, seg)
	}
	return render(v), nil
}

// matchJSON checks that the field at path equals want. Numbers also match
// numerically, so want "1" matches 1.0.
func matchJSON(body []byte, path, want string) error {
	got, err := jsonField(body, path)
	if err != nil {
		return err
	}
	if got == want {
		return nil
	}
	if g, err := strconv.ParseFloat(got, 64); err == nil {
		if w, err := strconv.ParseFloat(want, 64); err == nil && g == w {
			return nil
		}
	}
	return fmt.Errorf("json field %q is %s, want %q", path, strconv.Quote(truncate(got, 128)), want)
}

func joinPath(a, b string) string {
	if a == "" {
		return b
	}
	return a + "." + b
}

func describe(walked string) string {
	if walked == "" {
		return "the document"
	}
	return strconv.Quote(walked)
}

func render(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case json.Number:
		return x.String()
	case bool:
		return strconv.FormatBool(x)
	case nil:
		return "null"
	default:
		b, err := json.Marshal(x)
		if err != nil {
			return fmt.Sprint(x)
		}
		return string(b)
	}
}
