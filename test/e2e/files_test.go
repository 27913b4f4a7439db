package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/labcluster"
	"github.com/tandem-ha/tandem/internal/localapi"
)

// Shared files: the example site's upload directory is declared with
// [[files]] on every app node of the lab (labcluster.NodeConfig).

// uploadScript uploads files named PREFIX-1..N through the floating IP,
// one after another, and prints "ok NAME" for each one the site accepted
// (its 303 answer), so only accepted uploads are held to I5.
func uploadScript(prefix string, n int, pause time.Duration) string {
	return fmt.Sprintf(`for i in $(seq 1 %d); do
  name=%s-$i.txt
  code=$(printf 'content of %%s' "$name" | curl -sS -o /dev/null -w '%%{http_code}' --max-time 5 -F "file=@-;filename=$name" %supload 2>/dev/null)
  [ "$code" = 303 ] && echo "ok $name"
  sleep %.3f
done; true`, n, prefix, labcluster.VIPURL, pause.Seconds())
}

func accepted(out string) []string {
	var names []string
	for _, l := range strings.Split(out, "\n") {
		if name, ok := strings.CutPrefix(strings.TrimSpace(l), "ok "); ok {
			names = append(names, name)
		}
	}
	return names
}

// missingThroughVIP returns the files the site does not serve through the
// floating IP with the content uploaded.
func missingThroughVIP(t *testing.T, ctx context.Context, c *Labctl, names []string) []string {
	t.Helper()
	if len(names) == 0 {
		return nil
	}
	script := fmt.Sprintf(`for n in %s; do
  got=$(curl -fsS --max-time 3 %sfiles/$n 2>/dev/null)
  [ "$got" = "content of $n" ] || echo "missing $n"
done; true`, strings.Join(names, " "), labcluster.VIPURL)
	out := c.MustSh(t, ctx, "client", script)
	var missing []string
	for _, l := range strings.Split(out, "\n") {
		if name, ok := strings.CutPrefix(strings.TrimSpace(l), "missing "); ok {
			missing = append(missing, name)
		}
	}
	return missing
}

// tree lists a node's copy of the upload directory: "md5  ./name" lines.
func tree(t *testing.T, ctx context.Context, c *Labctl, node string) string {
	t.Helper()
	return c.MustSh(t, ctx, node, "cd "+labcluster.SiteDataDir+" && find . -type f ! -name '.*' | sort | xargs -r md5sum")
}

func filesStatus(ctx context.Context, c *Labctl, node string) (localapi.FilesStatus, error) {
	var st localapi.FilesStatus
	r, err := c.Exec(ctx, node, "tandem", "files", "status", "--json")
	if err != nil {
		return st, err
	}
	if r.Code != 0 {
		return st, r.Err()
	}
	return st, json.Unmarshal([]byte(r.Stdout), &st)
}

// waitConverged waits until every app node's copy equals want's.
func waitConverged(t *testing.T, ctx context.Context, c *Labctl, want string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ref := tree(t, ctx, c, want)
		diff := ""
		for _, n := range apps {
			if got := tree(t, ctx, c, n); got != ref {
				diff = fmt.Sprintf("%s has\n%s\nwant (%s)\n%s", n, got, want, ref)
			}
		}
		if diff == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("copies did not converge within %v: %s", within, diff)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestFilesSurviveHolderPowerLoss is issue 11's scenarios 1 and 3: files
// uploaded through the VIP are all served by the new holder after the
// old one loses power 1 s after the last upload; when the old holder
// comes back it receives first, sends nothing, and the file only it had
// is in its quarantine, reported, not deleted.
func TestFilesSurviveHolderPowerLoss(t *testing.T) {
	c := suite(t)
	ctx := testCtx(t, 5*time.Minute)
	holder := ready(t, ctx, c).Holder.Node
	standby := other(holder)

	prefix := fmt.Sprintf("kill%d", time.Now().Unix())
	names := accepted(c.MustSh(t, ctx, "client", uploadScript(prefix, 20, 0)))
	if len(names) != 20 {
		t.Fatalf("only %d of 20 uploads accepted", len(names))
	}
	time.Sleep(time.Second)
	// A file written on the holder in its last moment, after it was cut
	// off: it never reaches the standby.
	if err := c.Partition(ctx, holder); err != nil {
		t.Fatal(err)
	}
	c.MustSh(t, ctx, holder, "echo 'written in the last moment' > "+labcluster.SiteDataDir+"/only-old-holder.txt")
	if err := c.Kill(ctx, holder); err != nil {
		t.Fatal(err)
	}
	if err := c.Heal(ctx, holder); err != nil {
		t.Fatal(err)
	}
	waitHealthyHolder(t, ctx, c, standby)
	if missing := missingThroughVIP(t, ctx, c, names); len(missing) > 0 {
		t.Fatalf("scenario 1: %d of %d files lost after the holder was killed 1 s after the last upload: %v", len(missing), len(names), missing)
	}
	t.Logf("scenario 1: all %d files served by %s after %s lost power", len(names), standby, holder)

	// New uploads land on the new holder only.
	more := accepted(c.MustSh(t, ctx, "client", uploadScript(prefix+"-after", 5, 0)))

	// Scenario 3: the old holder returns.
	if err := c.Start(ctx, holder); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, ctx, c, standby, 60*time.Second)
	st, err := filesStatus(ctx, c, holder)
	if err != nil {
		t.Fatal(err)
	}
	if st.Sending || len(st.Paths) != 1 || st.Paths[0].Source != standby {
		t.Fatalf("old holder's files status = %+v; want it receiving from %s", st, standby)
	}
	p := st.Paths[0]
	if len(p.Quarantine) != 1 || p.Quarantine[0].Files != 1 || p.Quarantine[0].Restore == "" || p.Quarantine[0].Discard == "" {
		t.Fatalf("old holder's quarantine = %+v; want the one file only it had, with restore and discard commands", p.Quarantine)
	}
	q := c.MustSh(t, ctx, holder, "cat "+p.Quarantine[0].Dir+"/only-old-holder.txt")
	if !strings.Contains(q, "last moment") {
		t.Errorf("quarantined file content = %q", q)
	}
	if out := c.MustSh(t, ctx, standby, "ls "+labcluster.SiteDataDir); strings.Contains(out, "only-old-holder") {
		t.Errorf("the old holder's file reached the new holder: it sent")
	}
	full, err := clusterStatus(ctx, c, holder)
	if err != nil {
		t.Fatal(err)
	}
	if full.Files == nil || len(full.Files.Paths) != 1 || len(full.Files.Paths[0].Quarantine) != 1 {
		t.Errorf("'tandem status' on the old holder does not report its quarantine: %+v", full.Files)
	}
	if missing := missingThroughVIP(t, ctx, c, append(names, more...)); len(missing) > 0 {
		t.Errorf("after the old holder returned, files are missing through the VIP: %v", missing)
	}
	t.Logf("scenario 3: %s received from %s, quarantined %s", holder, standby, p.Quarantine[0].Dir)
	c.MustSh(t, ctx, holder, p.Quarantine[0].Discard)
}

func waitHealthyHolder(t *testing.T, ctx context.Context, c *Labctl, node string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		r, err := c.Exec(ctx, "client", "curl", "-fsS", "--max-time", "1", labcluster.VIPURL+"healthz")
		if err == nil && r.Code == 0 && strings.Contains(r.Stdout, fmt.Sprintf("%q", node)) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s does not serve through the VIP after 30s", node)
}

// TestFilesSwitchoverMidUploads is issue 11's scenario 5: a switchover in
// the middle of a stream of uploads loses nothing.
func TestFilesSwitchoverMidUploads(t *testing.T) {
	c := suite(t)
	ctx := testCtx(t, 5*time.Minute)
	holder := ready(t, ctx, c).Holder.Node
	prefix := fmt.Sprintf("sw%d", time.Now().Unix())
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := c.Sh(ctx, "client", uploadScript(prefix, 60, 50*time.Millisecond))
		done <- result{out, err}
	}()
	time.Sleep(1500 * time.Millisecond)
	out := c.MustSh(t, ctx, other(holder), "tandem switchover --to "+other(holder))
	t.Logf("switchover mid-uploads: %s", strings.TrimSpace(out))
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	names := accepted(r.out)
	if len(names) < 40 {
		t.Fatalf("only %d of 60 uploads accepted around a planned move", len(names))
	}
	waitHealthyHolder(t, ctx, c, other(holder))
	if missing := missingThroughVIP(t, ctx, c, names); len(missing) > 0 {
		t.Fatalf("scenario 5: %d accepted uploads lost by a switchover: %v", len(missing), missing)
	}
	journal := c.MustSh(t, ctx, holder, "journalctl -u tandem --no-pager | grep -c 'flushed file replication before the planned move' || true")
	t.Logf("scenario 5: all %d accepted uploads served after the switchover (flush logged %s times on %s)", len(names), strings.TrimSpace(journal), holder)
	waitConverged(t, ctx, c, other(holder), 30*time.Second)
}
