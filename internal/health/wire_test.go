package health

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestWireRoundTrip(t *testing.T) {
	long := strings.Repeat("é", MaxWireText) // cut on a rune boundary
	tests := []struct {
		name string
		in   []CheckStatus
		want []CheckStatus
	}{
		{"none", nil, nil},
		{"kept fields only", []CheckStatus{{Name: "site", Type: TypeHTTP, Healthy: true, Output: "HTTP 200", Passes: 9, LastDuration: 5}},
			[]CheckStatus{{Name: "site", Type: TypeHTTP, Healthy: true, Output: "HTTP 200"}}},
		{"texts cut", []CheckStatus{{Name: "db", Type: TypeTCP, Error: long, Output: long}},
			[]CheckStatus{{Name: "db", Type: TypeTCP, Error: truncate(long, MaxWireText-3), Output: truncate(long, MaxWireText-3)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := AppendWire([]byte("x"), tt.in)
			got, rest, err := DecodeWire(append(b[1:], 7))
			if err != nil || !reflect.DeepEqual(got, tt.want) || string(rest) != "\x07" {
				t.Errorf("DecodeWire = %+v, rest %q, %v; want %+v, rest 7", got, rest, err, tt.want)
			}
		})
	}
	if _, _, err := DecodeWire([]byte{2, 1, 'a'}); !errors.Is(err, ErrWire) {
		t.Errorf("truncated input: %v; want ErrWire", err)
	}
}

func TestSummary(t *testing.T) {
	for _, tt := range []struct {
		c    CheckStatus
		want string
	}{
		{CheckStatus{Output: "HTTP 200"}, "HTTP 200"},
		{CheckStatus{Error: "connection refused"}, "connection refused"},
		{CheckStatus{Error: "status 500", Output: "HTTP 500 oops"}, "status 500 HTTP 500 oops"},
	} {
		if got := tt.c.Summary(); got != tt.want {
			t.Errorf("Summary(%+v) = %q; want %q", tt.c, got, tt.want)
		}
	}
}

func FuzzDecodeWire(f *testing.F) {
	f.Add(AppendWire(nil, []CheckStatus{{Name: "a", Type: "http", Healthy: true, Output: "ok"}}))
	f.Add([]byte{1, 0, 0, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, rest, err := DecodeWire(b)
		if err != nil {
			return
		}
		if len(rest) > len(b) {
			t.Fatalf("rest longer than the input")
		}
		again, _, err := DecodeWire(AppendWire(nil, got))
		if err != nil || len(again) != len(got) {
			t.Fatalf("re-encoded %+v decodes as %+v, %v", got, again, err)
		}
	})
}
