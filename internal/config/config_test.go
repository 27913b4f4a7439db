package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// doMinimal is minimal with a DigitalOcean reserved IP.
var doMinimal = strings.Replace(strings.Replace(minimal, `"linux"`, `"digitalocean"`, 1), `"10.0.0.100/24"`, `"203.0.113.5"`, 1) + "[vip.digitalocean]\ntoken_file = \"/x\"\n"

const minimal = `
[node]
name = "node1"
[cluster]
listen = "10.0.0.1:7946"
[vip]
provider = "linux"
address = "10.0.0.100/24"
[vip.linux]
interface = "eth0"
`

func TestExampleIsValid(t *testing.T) {
	c, err := Parse("example.toml", []byte(Example))
	if err != nil {
		t.Fatalf("the shipped example does not validate:\n%v", err)
	}
	if c.Health[0].Rise != 3 || c.VIP.Linux.GARPCount != 5 || c.Failover.Lease.D() != 500*time.Millisecond {
		t.Errorf("example values not decoded: %+v", c)
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse("t.toml", []byte(minimal+"[[health]]\ntype = \"tcp\"\ntarget = \"127.0.0.1:80\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name string
		got  any
		want any
	}{
		{"role", c.Node.Role, RoleApp},
		{"data_dir", c.Node.DataDir, "/var/lib/tandem"},
		{"advertise from listen", c.Cluster.Advertise, "10.0.0.1:7946"},
		{"linux cooloff", c.Failover.Cooloff.D(), 5 * time.Second},
		{"health name", c.Health[0].Name, "tcp-0"},
		{"health interval", c.Health[0].Interval.D(), 200 * time.Millisecond},
		{"health timeout", c.Health[0].Timeout.D(), time.Second},
		{"metrics", c.Metrics.Listen, "127.0.0.1:9746"},
		{"raft heartbeat timeout", c.Failover.HeartbeatTimeout.D(), 3 * time.Second},
		{"probe interval", c.Failover.ProbeInterval.D(), 100 * time.Millisecond},
		{"lease", c.Failover.Lease.D(), 500 * time.Millisecond},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v; want %v", ch.name, ch.got, ch.want)
		}
	}
	cloud, err := Parse("t.toml", []byte(doMinimal))
	if err != nil {
		t.Fatal(err)
	}
	if cloud.Failover.Cooloff.D() != 20*time.Second {
		t.Errorf("cloud cooloff = %v; want 20s", cloud.Failover.Cooloff.D())
	}
}

func TestErrorsNameKeyAndLine(t *testing.T) {
	tests := []struct {
		name     string
		doc      string
		wantKey  string
		wantLine int
		wantMsg  string
	}{
		{"bad duration", minimal + "[failover]\nlease = \"soon\"\n", "failover.lease", 12, "not a duration"},
		{"unknown key", minimal + "[failover]\nlaese = \"1s\"\n", "failover.laese", 12, "unknown key"},
		{"wrong type", minimal + "[failover]\nmax_moves_per_hour = \"six\"\n", "failover.max_moves_per_hour", 12, "string"},
		{"priority out of range", minimal + "[failover]\npriority = 5000\n", "failover.priority", 12, "out of range"},
		{"zero failure threshold", minimal + "[failover]\nfailure_threshold = 0\n", "failover.failure_threshold", 12, "use 1 to 100"},
		{"short failure window", minimal + "[failover]\nfailure_window = \"500ms\"\n", "failover.failure_window", 12, "use 1s to 168h"},
		{"bad provider", strings.Replace(minimal, `"linux"`, `"ovh"`, 1), "vip.provider", 7, "not a provider"},
		{"missing interface", strings.Replace(minimal, "interface = \"eth0\"", "", 1), "vip.linux.interface", 9, "missing"},
		{"vip without prefix", strings.Replace(minimal, "10.0.0.100/24", "10.0.0.100", 1), "vip.address", 8, "prefix length"},
		{"drain address with linux", strings.Replace(minimal, "address = \"10.0.0.100/24\"", "address = \"10.0.0.100/24\"\ndrain_address = \"10.0.0.1\"", 1), "vip.drain_address", 9, "drains vip.address itself"},
		{"bad drain address", strings.Replace(doMinimal, "address = \"203.0.113.5\"", "address = \"203.0.113.5\"\ndrain_address = \"anchor\"", 1), "vip.drain_address", 9, "anchor IP"},
		{"unspecified drain address", strings.Replace(doMinimal, "address = \"203.0.113.5\"", "address = \"203.0.113.5\"\ndrain_address = \"0.0.0.0\"", 1), "vip.drain_address", 9, "plain local IP"},
		{"bad role", strings.Replace(minimal, "name = \"node1\"", "name = \"node1\"\nrole = \"boss\"", 1), "node.role", 4, "not a role"},
		{"bad check type", minimal + "[[health]]\ntype = \"ping\"\n", "health[0].type", 12, "not a check type"},
		{"second check bad", minimal + "[[health]]\ntype = \"tcp\"\ntarget = \"a:1\"\n[[health]]\ntype = \"http\"\ntarget = \"ftp://x\"\n", "health[1].target", 16, "http://"},
		{"wildcard without advertise", strings.Replace(minimal, "10.0.0.1:7946", "0.0.0.0:7946", 1), "cluster.advertise", 4, "wildcard"},
		{"syntax", minimal + "[failover\n", "", 11, "syntax error"},
		{"deploy source without packages", minimal + "[[deploy.source]]\ntype = \"gitlab\"\n", "deploy.packages", 0, "name the packages"},
		{"deploy bad package", minimal + "[deploy]\npackages = [\"My Site\"]\n", "deploy.packages[0]", 12, "not a Debian package name"},
		{"deploy listener without tls", minimal + "[deploy]\npackages = [\"site\"]\nlisten = \":8443\"\n", "deploy.tls_cert", 11, "insecure_http"},
		{"deploy tls and insecure", minimal + "[deploy]\npackages = [\"site\"]\nlisten = \":8443\"\ninsecure_http = true\ntls_cert = \"/c\"\ntls_key = \"/k\"\n", "deploy.insecure_http", 14, "not both"},
		{"deploy keep 1", minimal + "[deploy]\npackages = [\"site\"]\nkeep = 1\n", "deploy.keep", 13, "rollback target"},
		{"deploy short poll", minimal + "[deploy]\npackages = [\"site\"]\npoll_interval = \"1s\"\n", "deploy.poll_interval", 13, "turn polling off"},
		{"deploy source type", minimal + "[deploy]\npackages = [\"site\"]\n[[deploy.source]]\ntype = \"svn\"\n", "deploy.source[0].type", 14, "not a source type"},
		{"deploy inline secret", minimal + "[deploy]\npackages = [\"site\"]\n[[deploy.source]]\ntype = \"generic\"\nbranches = [\"main\"]\n", "deploy.source[0].secret_file", 13, "never written inline"},
		{"deploy gitlab without api", minimal + "[deploy]\npackages = [\"site\"]\n[[deploy.source]]\ntype = \"gitlab\"\nsecret_file = \"/s\"\nproject = \"g/p\"\nbranches = [\"main\"]\napi_token_file = \"/t\"\n", "deploy.source[0].api_url", 13, "API base URL"},
		{"deploy no refs", minimal + "[deploy]\npackages = [\"site\"]\n[[deploy.source]]\ntype = \"generic\"\nsecret_file = \"/s\"\n", "deploy.source[0].branches", 13, "no branch or tag"},
		{"files relative path", minimal + "[[files]]\npath = \"uploads\"\n", "files[0].path", 12, "absolute"},
		{"files system dir", minimal + "[[files]]\npath = \"/var/lib\"\n", "files[0].path", 12, "system directory"},
		{"files data dir", minimal + "[[files]]\npath = \"/var/lib/tandem/x\"\n", "files[0].path", 12, "node.data_dir"},
		{"files overlap", minimal + "[[files]]\npath = \"/srv/a\"\n[[files]]\npath = \"/srv/a/b\"\n", "files[1].path", 14, "overlaps files[0].path"},
		{"files empty exclude", minimal + "[[files]]\npath = \"/srv/a\"\nexclude = [\"\"]\n", "files[0].exclude[0]", 13, "rsync pattern"},
		{"files bwlimit", minimal + "[[files]]\npath = \"/srv/a\"\nbwlimit = -1\n", "files[0].bwlimit", 13, "out of range"},
		{"files missing path", minimal + "[[files]]\ndelete = false\n", "files[0].path", 11, "missing"},
		{"deploy notify unsigned", minimal + "[deploy]\npackages = [\"site\"]\nnotify_urls = [\"https://chat.example/hook\"]\n", "deploy.notify_secret_file", 11, "signed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.toml", []byte(tt.doc))
			var errs Errors
			if !errors.As(err, &errs) || len(errs) == 0 {
				t.Fatalf("Parse() = %v; want config.Errors", err)
			}
			e := errs[0]
			if e.Key != tt.wantKey || e.Line != tt.wantLine || !strings.Contains(e.Msg, tt.wantMsg) {
				t.Errorf("error = %q (key %q line %d); want key %q line %d containing %q", e.Error(), e.Key, e.Line, tt.wantKey, tt.wantLine, tt.wantMsg)
			}
			if !strings.HasPrefix(e.Error(), "t.toml") {
				t.Errorf("error %q does not name the file", e.Error())
			}
		})
	}
}

func TestFilesDefaults(t *testing.T) {
	c, err := Parse("t.toml", []byte(minimal+"[[files]]\npath = \"/var/lib/site/uploads/\"\nexclude = [\"*.tmp\"]\n[[files]]\npath = \"/srv/media\"\ndelete = false\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Files) != 2 || !c.Files[0].DeletesPropagate() || c.Files[1].DeletesPropagate() {
		t.Errorf("files = %+v; want deletes on for the first (default), off for the second", c.Files)
	}
	w := "[node]\nname = \"witness\"\nrole = \"witness\"\n[cluster]\nlisten = \"10.0.0.10:7946\"\n[[files]]\npath = \"/srv/a\"\n"
	if _, err := Parse("w.toml", []byte(w)); err == nil || !strings.Contains(err.Error(), "witness runs no app") {
		t.Errorf("witness with files: %v; want an error", err)
	}
}

func TestWitnessNeedsNoVIP(t *testing.T) {
	doc := "[node]\nname = \"witness\"\nrole = \"witness\"\n[cluster]\nlisten = \"10.0.0.10:7946\"\n"
	if _, err := Parse("w.toml", []byte(doc)); err != nil {
		t.Fatalf("witness config: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(minimal))
	f.Add([]byte(Example))
	f.Add([]byte("[[health]]\n[health.x]\na=1\n"))
	f.Add([]byte(minimal + "[[guard.jail]]\nname = \"a\"\nfilter = \"f\"\nfiles = [\"/x\"]\n[[guard.filter]]\nname = \"f\"\nfailregex = ['^x (?P<u>.*) from <HOST>$']\nignoreregex = ['(?i)test']\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.toml", data)
		if err == nil && c == nil {
			t.Fatal("Parse returned neither a config nor an error")
		}
		if err != nil && err.Error() == "" {
			t.Fatal("empty error message")
		}
	})
}

func TestDataDirOfBrokenFile(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, doc, want string
	}{
		{"invalid elsewhere", "[node]\ndata_dir = \"/srv/tandem\"\n[vip]\nprovider = \"nope\"\n", "/srv/tandem"},
		{"unset", "[node]\nname = \"n1\"\n", DefaultDataDir},
		{"relative", "[node]\ndata_dir = \"tandem\"\n", DefaultDataDir},
		{"not TOML", "[node\n", DefaultDataDir},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, fmt.Sprintf("%d.toml", i))
			if err := os.WriteFile(p, []byte(tt.doc), 0o600); err != nil {
				t.Fatal(err)
			}
			if got := DataDir(p); got != tt.want {
				t.Errorf("DataDir = %q; want %q", got, tt.want)
			}
		})
	}
	if got := DataDir(filepath.Join(dir, "missing.toml")); got != DefaultDataDir {
		t.Errorf("missing file: %q", got)
	}
}

// TestMaxMovesPerHourIsDeprecated checks that a configuration from before
// the failure penalties still loads, with a warning naming the key, its
// line and what replaces it.
func TestMaxMovesPerHourIsDeprecated(t *testing.T) {
	c, err := Parse("t.toml", []byte(minimal+"[failover]\nmax_moves_per_hour = 6\n"))
	if err != nil {
		t.Fatalf("Parse() = %v; want a warning, not an error", err)
	}
	if len(c.Warnings) != 1 {
		t.Fatalf("warnings = %v; want one", c.Warnings)
	}
	w := c.Warnings[0]
	if w.Key != "failover.max_moves_per_hour" || w.Line != 12 || !strings.Contains(w.Msg, "failover.failure_threshold") {
		t.Errorf("warning = %q (line %d); want the key, line 12 and its replacement", w.Error(), w.Line)
	}
	if c.Failover.FailureThreshold != 3 || c.Failover.FailureWindow.D() != 10*time.Minute {
		t.Errorf("failure policy = %d in %v; want the defaults 3 in 10m", c.Failover.FailureThreshold, c.Failover.FailureWindow.D())
	}
	clean, err := Parse("t.toml", []byte(minimal))
	if err != nil || len(clean.Warnings) != 0 {
		t.Fatalf("Parse(minimal) = %v, warnings %v; want none", err, clean.Warnings)
	}
}

// TestDeployDefaults: the delivery defaults the README promises (poll
// every 5 minutes, "0s" turns it off; keep 5 releases; 256 MiB cap; 3 s
// soak; automatic deploys on).
func TestDeployDefaults(t *testing.T) {
	base := minimal + "[deploy]\npackages = [\"site\"]\n"
	tests := []struct {
		name  string
		extra string
		check func(d Deploy) string
	}{
		{"defaults", "", func(d Deploy) string {
			if d.PollInterval.D() != 5*time.Minute || d.Keep != 5 || d.MaxSize != 256<<20 || d.Soak.D() != DefaultSoak || !d.Auto {
				return fmt.Sprintf("poll %s keep %d max %d soak %s auto %v", d.PollInterval.D(), d.Keep, d.MaxSize, d.Soak.D(), d.Auto)
			}
			return ""
		}},
		{"polling off", "poll_interval = \"0s\"\n", func(d Deploy) string {
			if d.PollInterval.D() != 0 {
				return fmt.Sprintf("poll %s; want 0 (off)", d.PollInterval.D())
			}
			return ""
		}},
		{"keep 10, poll 1m", "keep = 10\npoll_interval = \"1m\"\n", func(d Deploy) string {
			if d.Keep != 10 || d.PollInterval.D() != time.Minute {
				return fmt.Sprintf("keep %d poll %s", d.Keep, d.PollInterval.D())
			}
			return ""
		}},
		{"no soak", "soak = \"0s\"\n", func(d Deploy) string {
			if d.Soak.D() != 0 {
				return fmt.Sprintf("soak %s; want 0", d.Soak.D())
			}
			return ""
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("t.toml", []byte(base+tt.extra))
			if err != nil {
				t.Fatal(err)
			}
			if msg := tt.check(c.Deploy); msg != "" {
				t.Error(msg)
			}
		})
	}
}
