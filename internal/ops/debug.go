package ops

import (
	"fmt"
	"io"
	"net/http"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"time"

	"github.com/tandem-ha/tandem/internal/localapi"
)

// maxProfile bounds a CPU profile's duration.
const maxProfile = 5 * time.Minute

// DebugRoutes serve the Go runtime's profiles on the local API, which only
// root can reach: a CPU profile over ?seconds= (default 30) at
// /debug/pprof/profile, and the named profiles (heap, allocs, goroutine,
// block, mutex, threadcreate) at /debug/pprof/NAME, for `go tool pprof`.
// They use runtime/pprof directly rather than net/http/pprof, whose import
// registers its handlers on http.DefaultServeMux.
func DebugRoutes() []localapi.Route {
	return []localapi.Route{
		{Pattern: "GET /debug/pprof/profile", Handler: http.HandlerFunc(cpuProfile)},
		{Pattern: "GET /debug/pprof/trace", Handler: http.HandlerFunc(executionTrace)},
		{Pattern: "GET /debug/pprof/{name}", Handler: http.HandlerFunc(namedProfile)},
	}
}

func cpuProfile(w http.ResponseWriter, r *http.Request) {
	record(w, r, "cpu profile", pprof.StartCPUProfile, pprof.StopCPUProfile)
}

func executionTrace(w http.ResponseWriter, r *http.Request) {
	record(w, r, "execution trace", trace.Start, trace.Stop)
}

// record runs start into w for ?seconds= (default 30), then stop.
func record(w http.ResponseWriter, r *http.Request, what string, start func(io.Writer) error, stop func()) {
	d := 30 * time.Second
	if s := r.URL.Query().Get("seconds"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || time.Duration(n)*time.Second > maxProfile {
			http.Error(w, fmt.Sprintf("seconds=%q: want a whole number of seconds from 1 to %d", s, int(maxProfile.Seconds())), http.StatusBadRequest)
			return
		}
		d = time.Duration(n) * time.Second
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	if err := start(w); err != nil {
		http.Error(w, what+": "+err.Error()+" (one at a time)", http.StatusConflict)
		return
	}
	select {
	case <-time.After(d):
	case <-r.Context().Done():
	}
	stop()
}

func namedProfile(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	p := pprof.Lookup(name)
	if p == nil || name == "profile" {
		http.Error(w, fmt.Sprintf("no profile %q: use profile?seconds=N, heap, allocs, goroutine, block, mutex or threadcreate", name), http.StatusNotFound)
		return
	}
	debug, _ := strconv.Atoi(r.URL.Query().Get("debug"))
	if debug == 0 {
		w.Header().Set("Content-Type", "application/octet-stream")
	} else {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	}
	if err := p.WriteTo(w, debug); err != nil {
		http.Error(w, "profile "+name+": "+err.Error(), http.StatusInternalServerError)
	}
}
