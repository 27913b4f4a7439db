package agent

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/tandem-ha/tandem/internal/config"
	"github.com/tandem-ha/tandem/internal/failover"
	"github.com/tandem-ha/tandem/internal/vip/digitalocean/dofake"
)

// TestProviderDrains: which configurations give planned moves a drain.
func TestProviderDrains(t *testing.T) {
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const head = "[node]\nname = \"node1\"\n[cluster]\nlisten = \"10.0.0.1:7946\"\n"
	// A droplet's metadata service, and a machine without one.
	do := dofake.New("secret", "203.0.113.5")
	t.Cleanup(do.Close)
	meta, noMeta := do.MetadataURL(3), do.URL+"/nowhere"
	tests := []struct {
		name  string
		vip   string
		drain bool
	}{
		{"linux drains its VIP", "[vip]\nprovider = \"linux\"\naddress = \"10.0.0.100/24\"\n[vip.linux]\ninterface = \"eth0\"\n", true},
		{"hetzner drains the floating IP by default", "[vip]\nprovider = \"hetzner\"\naddress = \"203.0.113.5\"\n[vip.hetzner]\ntoken_file = \"" + token + "\"\nfloating_ip_id = 7\nserver_id = 3\n", true},
		{"digitalocean drains the anchor IP from metadata", "[vip]\nprovider = \"digitalocean\"\naddress = \"203.0.113.5\"\n[vip.digitalocean]\ntoken_file = \"" + token + "\"\nmetadata_url = \"" + meta + "\"\n", true},
		{"digitalocean without an anchor IP cannot", "[vip]\nprovider = \"digitalocean\"\naddress = \"203.0.113.5\"\n[vip.digitalocean]\ntoken_file = \"" + token + "\"\ndroplet_id = 3\nmetadata_url = \"" + noMeta + "\"\n", false},
		{"digitalocean drains the configured address", "[vip]\nprovider = \"digitalocean\"\naddress = \"203.0.113.5\"\ndrain_address = \"10.19.0.5\"\n[vip.digitalocean]\ntoken_file = \"" + token + "\"\ndroplet_id = 3\nmetadata_url = \"" + noMeta + "\"\n", true},
		{"exec with a drain address", "[vip]\nprovider = \"exec\"\naddress = \"203.0.113.5\"\ndrain_address = \"10.0.0.1\"\n[vip.exec]\nacquire = \"/bin/true\"\nrelease = \"/bin/true\"\nholder = \"/bin/true\"\n", true},
		{"none", "[vip]\nprovider = \"none\"\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := config.Parse("t.toml", []byte(head+tt.vip))
			if err != nil {
				t.Fatal(err)
			}
			p, err := newProvider(t.Context(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			if c, ok := p.(io.Closer); ok {
				t.Cleanup(func() { c.Close() })
			}
			if _, ok := p.(failover.Drainer); ok != tt.drain {
				t.Fatalf("provider %T drains = %v; want %v", p, ok, tt.drain)
			}
		})
	}
}
