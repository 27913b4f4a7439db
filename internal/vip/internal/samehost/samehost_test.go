package samehost

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestClientStaysOnHost(t *testing.T) {
	var leaked string
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaked = r.Header.Get("Authorization")
	}))
	defer elsewhere.Close()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/away":
			http.Redirect(w, r, elsewhere.URL+"/steal", http.StatusFound)
		case "/moved":
			http.Redirect(w, r, "/here", http.StatusMovedPermanently)
		case "/here":
			if r.Header.Get("Authorization") == "" {
				t.Error("a same-host redirect lost the credentials")
			}
		}
	}))
	defer api.Close()
	c := Client(nil)
	get := func(path string) error {
		req, _ := http.NewRequest("GET", api.URL+path, nil)
		req.Header.Set("Authorization", "Bearer secret")
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := get("/away"); !errors.Is(err, ErrCrossHostRedirect) {
		t.Errorf("redirect to another host: %v; want ErrCrossHostRedirect", err)
	}
	if leaked != "" {
		t.Errorf("the other host received %q", leaked)
	}
	if err := get("/moved"); err != nil {
		t.Errorf("same-host redirect: %v", err)
	}
}
