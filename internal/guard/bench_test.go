package guard

import (
	"bytes"
	"os"
	"testing"
)

// BenchmarkSSHD runs the sshd filter over the log in $GUARD_BENCH_LOG (a
// file make bench-guard generates with -keep), or over the samples.
func BenchmarkSSHD(b *testing.B) {
	path := os.Getenv("GUARD_BENCH_LOG")
	if path == "" {
		path = "testdata/sshd"
	}
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	lines := bytes.Split(data, []byte("\n"))
	f, _ := Builtin("sshd", "")
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		for _, l := range lines {
			prog, msg := SplitSyslog(l)
			f.Match(prog, msg)
		}
	}
	b.ReportMetric(float64(len(lines))*float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}
