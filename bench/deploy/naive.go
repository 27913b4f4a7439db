package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/tandem-ha/tandem/internal/lab"
	"github.com/tandem-ha/tandem/internal/labcluster"
)

// The naive receiver, as the setups tandem replaces ran it: a webhook
// receiver on every node that downloads the announced .deb and runs
// `dpkg -i` on it at once. Every node gets the webhook at the same time, so
// every node restarts the site at the same time.
const (
	naivePort   = 9000
	naiveScript = "/usr/local/lib/naive-receiver.py"
	// naiveFilePort is where the bench serves the .debs from the client
	// namespace, as a CI's artifact store would.
	naiveFilePort = 8090
)

const naiveReceiver = `import http.server, json, os, subprocess, urllib.request

class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        path = "/tmp/naive.deb"
        urllib.request.urlretrieve(body["url"], path)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        r = subprocess.run(["dpkg", "--force-confold", "-i", path], capture_output=True, env=env)
        self.send_response(200 if r.returncode == 0 else 500)
        self.end_headers()
        self.wfile.write((r.stdout + r.stderr)[-2000:])

http.server.ThreadingHTTPServer(("0.0.0.0", %d), Hook).serve_forever()
`

// startNaive installs and starts the receiver on every app node and the
// .deb file server in the client namespace.
func startNaive(ctx context.Context, l *lab.Lab) error {
	for _, n := range appNodes {
		script := fmt.Sprintf("mkdir -p %s && cat > %s <<'EOF'\n%sEOF\nsystemctl stop naive-receiver 2>/dev/null; systemd-run --unit=naive-receiver python3 %s",
			filepath.Dir(naiveScript), naiveScript, fmt.Sprintf(naiveReceiver, naivePort), naiveScript)
		if _, err := labcluster.Sh(ctx, l, n, script); err != nil {
			return err
		}
	}
	dir := filepath.Join(l.Dir(), "naive")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	go func() {
		// Ends with the lab (lab down ends every process in its namespaces).
		_, _ = l.Exec(context.WithoutCancel(ctx), lab.ClientName, []string{"python3", "-m", "http.server", fmt.Sprint(naiveFilePort),
			"--bind", lab.ClientAddr.String(), "--directory", dir}, nil, nil, nil)
	}()
	// Wait until the receivers and the file server answer.
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		ok := true
		urls := []string{fmt.Sprintf("http://%s:%d/", lab.ClientAddr, naiveFilePort)}
		for _, n := range appNodes {
			urls = append(urls, fmt.Sprintf("http://%s:%d/", nodeAddr(l, n), naivePort))
		}
		for _, u := range urls {
			code, err := l.Exec(ctx, lab.ClientName, []string{"curl", "-s", "-o", "/dev/null", "--max-time", "1", u}, nil, nil, nil)
			ok = ok && err == nil && code == 0
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the naive receivers or the file server did not answer within 15s")
		}
	}
}

func nodeAddr(l *lab.Lab, node string) string {
	ms, _ := l.Members()
	for _, m := range ms {
		if m.Name == node {
			return m.Address
		}
	}
	return ""
}

// naiveDeploy builds the site at version, puts it on the file server and
// sends every node's receiver the webhook at once.
func (b *bench) naiveDeploy(ctx context.Context, version string) (time.Time, error) {
	dir := filepath.Join(b.l.Dir(), "naive")
	site, err := labcluster.BuildSite(ctx, labcluster.SiteOptions{Version: version, OutDir: dir})
	if err != nil {
		return time.Time{}, err
	}
	body := fmt.Sprintf(`{"url":"http://%s:%d/%s"}`, lab.ClientAddr, naiveFilePort, filepath.Base(site.Path))
	sent := time.Now()
	var wg sync.WaitGroup
	errs := make([]string, len(appNodes))
	for i, n := range appNodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out strings.Builder
			code, err := b.l.Exec(ctx, lab.ClientName, []string{"curl", "-sS", "--max-time", "120", "-w", " %{http_code}",
				"-H", "content-type: application/json", "--data-binary", body, fmt.Sprintf("http://%s:%d/", b.addrs[n], naivePort)},
				nil, &out, &out)
			if err != nil || code != 0 || !strings.HasSuffix(strings.TrimSpace(out.String()), " 200") {
				errs[i] = fmt.Sprintf("%s: %v %s", n, err, strings.TrimSpace(out.String()))
			}
		}()
	}
	wg.Wait()
	var bad []string
	for _, e := range errs {
		if e != "" {
			bad = append(bad, e)
		}
	}
	if len(bad) > 0 {
		return sent, fmt.Errorf("naive receiver: %s", strings.Join(bad, "; "))
	}
	return sent, nil
}
