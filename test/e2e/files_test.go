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

// treeScript lists a node's copy of the upload directory: "md5  ./name" lines.
const treeScript = "cd " + labcluster.SiteDataDir + " && find . -type f ! -name '.*' | sort | xargs -r md5sum"

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
		// A listing can fail while the copies still move: a file listed by
		// find may be quarantined or replaced before md5sum reads it. That
		// is "not converged yet", not a failure.
		ref, err := c.Sh(ctx, want, treeScript)
		diff := ""
		if err != nil {
			diff = fmt.Sprintf("listing %s: %v", want, err)
		}
		for _, n := range apps {
			if diff != "" {
				break
			}
			got, err := c.Sh(ctx, n, treeScript)
			switch {
			case err != nil:
				diff = fmt.Sprintf("listing %s: %v", n, err)
			case got != ref:
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

	// The restore command, run where the status says: the holder fetches
	// the quarantine over the cluster and the file is served again.
	if p.Quarantine[0].RestoreOn != standby {
		t.Fatalf("restore to run on %q; want the holder %s", p.Quarantine[0].RestoreOn, standby)
	}
	t.Logf("restore on %s: %s", standby, c.MustSh(t, ctx, standby, p.Quarantine[0].Restore))
	if got := c.MustSh(t, ctx, "client", "curl -fsS --max-time 3 "+labcluster.VIPURL+"files/only-old-holder.txt"); !strings.Contains(got, "last moment") {
		t.Errorf("after the restore the file is served as %q", got)
	}
	c.MustSh(t, ctx, holder, p.Quarantine[0].Discard)
	if out, _ := c.Sh(ctx, holder, "ls "+p.Quarantine[0].Dir+" 2>&1"); !strings.Contains(out, "No such file") {
		t.Errorf("the quarantine is still there after its discard command: %s", out)
	}
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

// TestFilesPartitionedHolder is issue 11's scenario 4: the holder is cut
// off while uploads continue through the floating IP (which moves); no
// node that lost the lease sends, and after healing every copy converges
// to the new holder's, with what only the old holder wrote in quarantine.
func TestFilesPartitionedHolder(t *testing.T) {
	c := suite(t)
	ctx := testCtx(t, 5*time.Minute)
	holder := ready(t, ctx, c).Holder.Node
	standby := other(holder)
	prefix := fmt.Sprintf("part%d", time.Now().Unix())
	if err := c.Partition(ctx, holder); err != nil {
		t.Fatal(err)
	}
	// The cut-off holder keeps writing locally (a request in flight, a
	// cron job): none of it may reach the others.
	c.MustSh(t, ctx, holder, "for i in 1 2 3; do echo cut-off > "+labcluster.SiteDataDir+"/"+prefix+"-cut-$i.txt; sleep 0.3; done")
	waitHealthyHolder(t, ctx, c, standby)
	names := accepted(c.MustSh(t, ctx, "client", uploadScript(prefix, 10, 20*time.Millisecond)))
	if err := c.Heal(ctx, holder); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, ctx, c, standby, 60*time.Second)
	if out := c.MustSh(t, ctx, standby, "ls "+labcluster.SiteDataDir); strings.Contains(out, prefix+"-cut") {
		t.Fatalf("a file the cut-off holder wrote reached %s", standby)
	}
	st, err := filesStatus(ctx, c, holder)
	if err != nil {
		t.Fatal(err)
	}
	var quarantined int
	for _, q := range st.Paths[0].Quarantine {
		out := c.MustSh(t, ctx, holder, "ls "+q.Dir)
		quarantined += strings.Count(out, prefix+"-cut")
		c.MustSh(t, ctx, holder, q.Discard)
	}
	if quarantined != 3 {
		t.Errorf("the old holder's quarantine holds %d of its 3 cut-off files", quarantined)
	}
	if missing := missingThroughVIP(t, ctx, c, names); len(missing) > 0 {
		t.Errorf("uploads lost: %v", missing)
	}
}

// TestFilesSQLiteNotCopied is issue 11's scenario 7: a SQLite database in
// the path is reported, not copied.
func TestFilesSQLiteNotCopied(t *testing.T) {
	c := suite(t)
	ctx := testCtx(t, 3*time.Minute)
	holder := ready(t, ctx, c).Holder.Node
	db := labcluster.SiteDataDir + "/site.sqlite3"
	c.MustSh(t, ctx, holder, `python3 -c "
import sqlite3
c = sqlite3.connect('`+db+`')
c.execute('pragma journal_mode=wal')
c.execute('create table t (x)')
c.execute('insert into t values (1)')
c.commit()
"`)
	marker := fmt.Sprintf("after-db-%d.txt", time.Now().Unix())
	c.MustSh(t, ctx, holder, "echo x > "+labcluster.SiteDataDir+"/"+marker)
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(c.MustSh(t, ctx, other(holder), "ls "+labcluster.SiteDataDir), marker) {
		if time.Now().After(deadline) {
			t.Fatal("the marker file written after the database never arrived")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out := c.MustSh(t, ctx, other(holder), "ls "+labcluster.SiteDataDir); strings.Contains(out, "site.sqlite3") {
		t.Errorf("the SQLite database (or its WAL) was copied: %s", out)
	}
	st, err := filesStatus(ctx, c, holder)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Paths) != 1 || len(st.Paths[0].SQLite) != 1 || st.Paths[0].SQLite[0] != "site.sqlite3" {
		t.Errorf("files status does not report the database: %+v", st.Paths)
	}
	text := c.MustSh(t, ctx, holder, "tandem files status")
	if !strings.Contains(text, "WARNING: SQLite") {
		t.Errorf("'tandem files status' prints no warning:\n%s", text)
	}
	c.MustSh(t, ctx, holder, "rm -f "+db+" "+db+"-wal "+db+"-shm")
}

// TestFilesManySmallOneLargeDegraded is issue 11's scenario 6: 10,000
// small files and one large file replicate; deletes and renames
// propagate; under 50±20 ms delay and 2% loss replication keeps up and
// converges.
func TestFilesManySmallOneLargeDegraded(t *testing.T) {
	c := suite(t)
	ctx := testCtx(t, 10*time.Minute)
	holder := ready(t, ctx, c).Holder.Node
	standby := other(holder)
	bulk := labcluster.SiteDataDir + "/bulk"
	count := func(node string) string {
		return strings.TrimSpace(c.MustSh(t, ctx, node, "find "+bulk+" -type f 2>/dev/null | wc -l"))
	}
	waitCount := func(want string, within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		for count(standby) != want {
			if time.Since(start) > within {
				t.Fatalf("%s has %s files in bulk/ after %v; want %s", standby, count(standby), within, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
		return time.Since(start)
	}
	defer c.Sh(context.Background(), holder, "rm -rf "+bulk)
	start := time.Now()
	c.MustSh(t, ctx, holder, `python3 -c "
import os
os.makedirs('`+bulk+`', exist_ok=True)
for i in range(10000):
    with open('`+bulk+`/f%05d.txt' % i, 'w') as f:
        f.write('small file %d\n' % i)
"`)
	wrote := time.Since(start)
	took := waitCount("10000", 2*time.Minute)
	t.Logf("10,000 small files: written in %v, on %s %v later", wrote.Round(time.Millisecond), standby, took.Round(time.Millisecond))

	c.MustSh(t, ctx, holder, "dd if=/dev/urandom of="+bulk+"/large.bin bs=1M count=1024 status=none")
	start = time.Now()
	sum := strings.Fields(c.MustSh(t, ctx, holder, "md5sum "+bulk+"/large.bin"))[0]
	for {
		out, _ := c.Sh(ctx, standby, "md5sum "+bulk+"/large.bin 2>/dev/null")
		if f := strings.Fields(out); len(f) > 0 && f[0] == sum {
			break
		}
		if time.Since(start) > 3*time.Minute {
			t.Fatal("the 1 GiB file did not arrive intact within 3 minutes")
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("1 GiB file intact on %s %v after it was written", standby, time.Since(start).Round(time.Millisecond))

	// Deletes and renames.
	c.MustSh(t, ctx, holder, "cd "+bulk+" && rm -f large.bin f000*.txt && for i in 1 2 3 4 5 6 7 8 9; do mv f0010$i.txt renamed-$i.txt; done")
	want := strings.TrimSpace(count(holder))
	waitCount(want, time.Minute)
	if out := c.MustSh(t, ctx, standby, "ls "+bulk+" | grep -c renamed- || true"); strings.TrimSpace(out) != "9" {
		t.Errorf("renames did not propagate: %s renamed files", strings.TrimSpace(out))
	}

	// Degraded network on the holder's link.
	if err := c.Netem(ctx, holder, "--delay", "50ms", "--jitter", "20ms", "--loss", "2%"); err != nil {
		t.Fatal(err)
	}
	defer c.Netem(context.Background(), holder, "--clear")
	c.MustSh(t, ctx, holder, "cd "+bulk+" && for i in $(seq 1 100); do echo degraded $i > d-$i.txt; sleep 0.05; done")
	want = strings.TrimSpace(count(holder))
	took = waitCount(want, 2*time.Minute)
	t.Logf("under 50±20 ms delay and 2%% loss: converged %v after the last of 100 writes", took.Round(time.Millisecond))
	if err := c.Netem(ctx, holder, "--clear"); err != nil {
		t.Fatal(err)
	}
}

// TestFilesRecoveryPoint is issue 11's scenario 2, in brief (make
// bench-files runs it with 20 trials): during a stream of uploads the
// holder loses power at a random moment; of the uploads the site had
// accepted before, the new holder may lack only those of the last second.
func TestFilesRecoveryPoint(t *testing.T) {
	c := suite(t)
	ctx := testCtx(t, 8*time.Minute)
	for trial := range 3 {
		holder := ready(t, ctx, c).Holder.Node
		standby := other(holder)
		prefix := fmt.Sprintf("rpo%d-%d", time.Now().Unix(), trial)
		script := fmt.Sprintf(`i=0; while :; do i=$((i+1)); name=%s-$i.txt
  code=$(printf 'content of %%s' "$name" | curl -sS -o /dev/null -w '%%{http_code}' --max-time 2 -F "file=@-;filename=$name" %supload 2>/dev/null)
  [ "$code" = 303 ] && echo "ok $name $(date +%%s.%%N)"
  [ $i -ge 200 ] && break
  sleep 0.03
done; true`, prefix, labcluster.VIPURL)
		type result struct {
			out string
			err error
		}
		done := make(chan result, 1)
		go func() {
			out, err := c.Sh(ctx, "client", script)
			done <- result{out, err}
		}()
		time.Sleep(time.Duration(1500+trial*700) * time.Millisecond)
		kill := time.Now()
		if err := c.Kill(ctx, holder); err != nil {
			t.Fatal(err)
		}
		r := <-done
		if r.err != nil {
			t.Fatal(r.err)
		}
		var before []string
		at := map[string]time.Time{}
		for _, l := range strings.Split(r.out, "\n") {
			f := strings.Fields(l)
			if len(f) != 3 || f[0] != "ok" {
				continue
			}
			var sec, nsec int64
			if _, err := fmt.Sscanf(f[2], "%d.%d", &sec, &nsec); err != nil {
				continue
			}
			if ts := time.Unix(sec, nsec); ts.Before(kill) {
				before = append(before, f[1])
				at[f[1]] = ts
			}
		}
		waitHealthyHolder(t, ctx, c, standby)
		missing := missingThroughVIP(t, ctx, c, before)
		rpo := time.Duration(0)
		for _, m := range missing {
			rpo = max(rpo, kill.Sub(at[m]))
		}
		t.Logf("trial %d: %d uploads accepted before %s lost power, %d missing on %s, recovery point %v",
			trial+1, len(before), holder, len(missing), standby, rpo.Round(time.Millisecond))
		if rpo > time.Second {
			t.Errorf("trial %d: lost uploads accepted %v before the kill (%v); want at most 1s", trial+1, rpo, missing)
		}
		if err := c.Start(ctx, holder); err != nil {
			t.Fatal(err)
		}
		waitConverged(t, ctx, c, standby, 60*time.Second)
		c.MustSh(t, ctx, holder, "rm -rf "+labcluster.SiteDataDir+".tandem-quarantine")
	}
}
