// Package samehost keeps a cloud API's credentials on the API's own host:
// a client that carries a token never follows a redirect elsewhere, so a
// compromised or misconfigured endpoint cannot collect the token.
package samehost

import (
	"errors"
	"fmt"
	"net/http"
)

// ErrCrossHostRedirect is returned when an API answered with a redirect to
// another host.
var ErrCrossHostRedirect = errors.New("refusing to follow a redirect to another host with the API's credentials")

// Client returns a copy of hc (a default client with a 15 s timeout when
// nil) that follows redirects only within the host of the request that
// started the chain.
func Client(hc *http.Client) *http.Client {
	var c http.Client
	if hc != nil {
		c = *hc
	}
	next := c.CheckRedirect
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if origin := via[0].URL; req.URL.Host != origin.Host || req.URL.Scheme != origin.Scheme {
			return fmt.Errorf("%w: %s://%s sent us to %s://%s", ErrCrossHostRedirect, origin.Scheme, origin.Host, req.URL.Scheme, req.URL.Host)
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
	return &c
}
