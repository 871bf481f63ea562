package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/spoolhq/spool/internal/config"
)

// healthcheck probes a running instance's /readyz and fails unless it
// answers 200. Docker's HEALTHCHECK runs it: the image has no shell or curl.
func healthcheck(ctx context.Context, args []string, env config.Env, stdout io.Writer) error {
	fs := flag.NewFlagSet("spool healthcheck", flag.ContinueOnError)
	fs.SetOutput(stdout)
	def := defaultHealthURL(env)
	target := fs.String("url", def, "URL to probe [SPOOL_HEALTHCHECK_URL]")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	fs.Usage = func() {
		fmt.Fprint(stdout, `Usage: spool healthcheck [flags]

Exits 0 when the instance's readiness endpoint answers 200, 1 otherwise.
By default it probes /readyz on the local API port (SPOOL_HTTP_ADDR), or on
the admin port (SPOOL_ADMIN_ADDR) when SPOOL_ROLE=worker.

Example:
  HEALTHCHECK CMD ["/spool", "healthcheck"]

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *target, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: bad --url: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %s: %w", *target, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s answered %d", *target, resp.StatusCode)
	}
	return nil
}

func defaultHealthURL(env config.Env) string {
	if v, ok := env("SPOOL_HEALTHCHECK_URL"); ok && v != "" {
		return v
	}
	addr := ":8000"
	if v, ok := env("SPOOL_HTTP_ADDR"); ok && v != "" {
		addr = v
	}
	if role, _ := env("SPOOL_ROLE"); role == string(config.RoleWorker) {
		addr = ":9090"
		if v, ok := env("SPOOL_ADMIN_ADDR"); ok && v != "" {
			addr = v
		}
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "http://127.0.0.1:8000/readyz"
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/readyz"
}
