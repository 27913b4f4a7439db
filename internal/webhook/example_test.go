package webhook_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/tandem-ha/tandem/internal/webhook"
)

// journal stands for the raft-committed inbox the agent will provide.
type journal interface {
	Commit(ctx context.Context, d webhook.Delivery) (id string, duplicate bool, err error)
}

type memJournal map[string]bool

func (m memJournal) Commit(_ context.Context, d webhook.Delivery) (string, bool, error) {
	keys := d.DedupeKeys()
	for _, k := range keys {
		if m[k] {
			return "", true, nil
		}
	}
	for _, k := range keys {
		m[k] = true
	}
	return "rel-1", false, nil
}

// handler shows how the intake is wired: read with the cap, Receive, map
// the error, commit, answer 202.
func handler(in webhook.Intake, j journal, now func() time.Time) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := webhook.ReadBody(r.Body)
		if err == nil {
			var d webhook.Delivery
			d, err = in.Receive(r.Header, body, now())
			if err == nil {
				id, dup, cerr := j.Commit(r.Context(), d)
				switch {
				case cerr != nil:
					http.Error(w, "not committed, retry", http.StatusServiceUnavailable)
				case dup:
					fmt.Fprintln(w, "duplicate delivery, nothing to do")
				default:
					w.WriteHeader(http.StatusAccepted)
					fmt.Fprintln(w, id)
				}
				return
			}
		}
		http.Error(w, err.Error(), webhook.HTTPStatus(err))
	})
}

func Example() {
	secrets, _ := webhook.ParseSecrets([]byte("s3cret\n"), "/etc/tandem/github.secret")
	in := webhook.Intake{Source: webhook.GitHub, Secrets: secrets, Rules: webhook.Rules{Branches: []string{"main"}}}
	h := handler(in, memJournal{}, time.Now)
	body := `{"action":"completed","workflow_run":{"id":7,"head_branch":"main","head_sha":"acb5820ced9479c074f688cc328bf03f341a511d","conclusion":"success","event":"push"},"repository":{"full_name":"site/pysite"}}`
	for _, secret := range []string{"s3cret", "s3cret", "guess"} {
		req := httptest.NewRequest("POST", "/webhook/github", strings.NewReader(body))
		req.Header.Set("X-GitHub-Event", "workflow_run")
		req.Header.Set("X-GitHub-Delivery", "d-1")
		req.Header.Set("X-Hub-Signature-256", webhook.SignHex([]byte(secret), []byte(body)))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		fmt.Println(rec.Code, strings.TrimSpace(rec.Body.String()))
	}
	// Output:
	// 202 rel-1
	// 200 duplicate delivery, nothing to do
	// 401 webhook signature or token does not match any configured secret: X-Hub-Signature-256 does not match (check the webhook's secret)
}
