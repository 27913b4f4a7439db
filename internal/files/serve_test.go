package files

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"testing/synctest"
)

func TestHandlerAnswers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := newFakeNet(t, "a", "b")
		n.move("a", true, false)
		h := n.nodes["b"].c.Handler(func(r *http.Request) string { return r.Header.Get("X-Peer") })
		tests := []struct {
			name, peer string
			req        SyncRequest
			body       string
			want       int
		}{
			{"the holder", "a", SyncRequest{Dir: dir, Epoch: 1}, "", http.StatusOK},
			{"a stale epoch", "a", SyncRequest{Dir: dir, Epoch: 0}, "", http.StatusConflict},
			{"not the holder", "b", SyncRequest{Dir: dir, Epoch: 1}, "", http.StatusConflict},
			{"undeclared", "a", SyncRequest{Dir: "/etc", Epoch: 1}, "", http.StatusConflict},
			{"garbage", "a", SyncRequest{}, "{", http.StatusBadRequest},
		}
		for _, tt := range tests {
			body := []byte(tt.body)
			if tt.body == "" {
				body, _ = json.Marshal(tt.req)
			}
			r := httptest.NewRequestWithContext(context.Background(), "POST", SyncPath, bytes.NewReader(body))
			r.Header.Set("X-Peer", tt.peer)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.want {
				t.Errorf("%s: status %d (%s); want %d", tt.name, w.Code, w.Body, tt.want)
			}
		}
		// Serving: only the source, for its epoch, to an app member.
		if _, err := n.nodes["a"].c.Serve("b", dir, 1); err != nil {
			t.Errorf("the holder refused to serve its standby: %v", err)
		}
		if _, err := n.nodes["a"].c.Serve("witness", dir, 1); err == nil {
			t.Error("the holder served the witness")
		}
		if _, err := n.nodes["b"].c.Serve("a", dir, 1); err == nil {
			t.Error("a standby served")
		}
		still, err := n.nodes["a"].c.Serve("b", dir, 1)
		if err != nil {
			t.Fatal(err)
		}
		n.move("b", true, false)
		if still() {
			t.Error("a transfer goes on after the holder moved")
		}
	})
}
