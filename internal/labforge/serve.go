package labforge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"golang.org/x/sync/errgroup"
)

// Ready is the line Serve prints once it listens, for a starter waiting on
// its log.
const Ready = "forge ready"

// Serve runs the forge's HTTP server on each of addrs (the API's listener
// and the blob listener; one address serves both) until ctx ends. It
// prints Ready to ready once every listener is bound.
func Serve(ctx context.Context, f *Forge, addrs []string, log *slog.Logger, ready io.Writer) error {
	if len(addrs) == 0 {
		return errors.New("forge: no listen address given")
	}
	g, gctx := errgroup.WithContext(ctx)
	h := f.Handler(log)
	var servers []*http.Server
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			return fmt.Errorf("forge: listen on %s: %w", a, err)
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, srv)
		g.Go(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("forge on %s: %w", a, err)
			}
			return nil
		})
	}
	if ready != nil {
		fmt.Fprintf(ready, "%s on %v\n", Ready, addrs)
	}
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		for _, s := range servers {
			_ = s.Shutdown(sctx)
		}
		return nil
	})
	return g.Wait()
}
