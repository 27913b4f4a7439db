package deploy

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/internal/cluster/state"
	"github.com/tandem-ha/tandem/internal/webhook"
)

func TestNotifierSendsSignedOutcomes(t *testing.T) {
	secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	secrets, err := webhook.ParseSecrets([]byte(secret), "test")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan Notification, 4)
	fails := 1 // the first POST fails: the notifier retries
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := (webhook.Intake{Source: webhook.Generic, Secrets: secrets}).Verify(r.Header, body, time.Now()); err != nil {
			t.Errorf("notification signature: %v", err)
		}
		if fails > 0 {
			fails--
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		var n Notification
		if err := json.Unmarshal(body, &n); err != nil {
			t.Errorf("notification body: %v", err)
		}
		got <- n
	}))
	defer srv.Close()
	key, err := ParseNotifySecret([]byte(secret + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := newSim(t, "node1", "node2")
	n := &Notifier{Name: "node1", Machine: s.m, URLs: []string{srv.URL}, Key: key, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go n.Run(ctx)
	time.Sleep(50 * time.Millisecond) // let it record the history it starts with
	s.receive("d-1", false)
	s.fail["install node2 0.2.0-1"] = errWrap("gate")
	s.run(s.driver("witness"))
	select {
	case note := <-got:
		if note.Type != "release.rolled_back" || note.Delivery != "d-1" || note.Version != "0.2.0-1" || note.Nodes["node1"].Version != "0.1.0-1" {
			t.Errorf("notification %+v", note)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no notification")
	}
	if s.m.View().Deploy().History[0].Outcome != state.DeliveryRolledBack {
		t.Fatal("setup: the rollout did not roll back")
	}
}

func TestParseNotifySecret(t *testing.T) {
	for _, bad := range []string{"", "plain", "whsec_!!!", "whsec_" + base64.StdEncoding.EncodeToString([]byte("short"))} {
		if _, err := ParseNotifySecret([]byte(bad)); err == nil {
			t.Errorf("ParseNotifySecret(%q) accepted", bad)
		}
	}
}

type errWrap string

func (e errWrap) Error() string { return string(e) }
