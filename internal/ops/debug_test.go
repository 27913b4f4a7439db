package ops

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime/pprof"
	"testing"

	"github.com/tandem-ha/tandem/internal/localapi"
)

func TestDebugRoutes(t *testing.T) {
	h, err := localapi.Handler(DebugRoutes())
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		path     string
		code     int
		gzipBody bool // a pprof protobuf is gzip-compressed
	}{
		{"/debug/pprof/profile?seconds=1", http.StatusOK, true},
		{"/debug/pprof/heap", http.StatusOK, true},
		{"/debug/pprof/trace?seconds=1", http.StatusOK, false},
		{"/debug/pprof/trace?seconds=-1", http.StatusBadRequest, false},
		{"/debug/pprof/goroutine?debug=1", http.StatusOK, false},
		{"/debug/pprof/profile?seconds=0", http.StatusBadRequest, false},
		{"/debug/pprof/profile?seconds=x", http.StatusBadRequest, false},
		{"/debug/pprof/profile?seconds=100000", http.StatusBadRequest, false},
		{"/debug/pprof/nosuch", http.StatusNotFound, false},
	}
	for _, c := range cases {
		t.Run(c.path, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, c.path, nil))
			if rec.Code != c.code {
				t.Fatalf("status %d, want %d: %s", rec.Code, c.code, rec.Body)
			}
			if !c.gzipBody {
				return
			}
			zr, err := gzip.NewReader(bytes.NewReader(rec.Body.Bytes()))
			if err != nil {
				t.Fatalf("body is not a gzip-compressed profile: %v", err)
			}
			if b, err := io.ReadAll(zr); err != nil || len(b) == 0 {
				t.Fatalf("profile body: %d bytes, %v", len(b), err)
			}
		})
	}
}

func TestDebugRoutesOneCPUProfileAtATime(t *testing.T) {
	h, err := localapi.Handler(DebugRoutes())
	if err != nil {
		t.Fatal(err)
	}
	if err := pprof.StartCPUProfile(io.Discard); err != nil {
		t.Fatal(err)
	}
	defer pprof.StopCPUProfile()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/debug/pprof/profile?seconds=1", nil))
	if rec.Code != http.StatusConflict {
		t.Fatalf("a CPU profile while another runs got %d, want %d", rec.Code, http.StatusConflict)
	}
}
