package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spoolhq/spool/internal/sink"
	"github.com/spoolhq/spool/internal/telemetry"
	"github.com/spoolhq/spool/webhook"
)

const sinkUsage = `
Usage: spool sink [flags]

Runs a webhook receiver for demos, tests and benchmarks. Every request
except GET /stats is a delivery: it is verified against the signing keys
(when set; 401 otherwise), counted, and answered 200 unless the target URL's
query asks for something else:

  ?fail=N     answer 500 to the first N attempts of each task (by webhook-id)
  ?status=C   always answer status C (200-599)
  ?delay=D    wait D (a Go duration, at most 5m) before answering

GET /stats answers {"received","unique","duplicates","bad_signatures"};
DELETE /stats resets the counters.

Environment:
  SPOOL_SINK_ADDR            listen address (default :8080)
  SPOOL_SIGNING_KEYS         whsec_ keys, comma-separated; any verifies
  SPOOL_SIGNING_KEYS_FILE    the same, one per line (# comments)
  Without keys, deliveries are accepted unsigned.

Examples:
  spool sink --addr 127.0.0.1:8081
  SPOOL_SIGNING_KEYS=whsec_... spool sink
  spool enqueue demo 'http://127.0.0.1:8081/hook?fail=2' --data '{}'
  curl -s http://127.0.0.1:8081/stats
`

// sinkShutdownTimeout bounds how long a stopping sink waits for answers in flight.
const sinkShutdownTimeout = 10 * time.Second

// Sink implements `spool sink`. It serves until ctx is cancelled, then
// shuts down gracefully. It logs JSON lines on stdout; the first one names
// the address actually bound (useful with --addr 127.0.0.1:0).
func Sink(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error {
	env = getenv(env)
	cmd := newCommand("sink", sinkUsage)
	addr := cmd.fs.String("addr", "", "listen address (env SPOOL_SINK_ADDR, default :8080)")
	verbose := cmd.fs.Bool("verbose", false, "log every delivery")
	pos, err := cmd.parse(args, stdout)
	if err != nil {
		return err
	}
	if err := cmd.wantArgs(pos); err != nil {
		return err
	}
	if *addr == "" {
		*addr = env("SPOOL_SINK_ADDR")
	}
	if *addr == "" {
		*addr = ":8080"
	}
	keys, err := sinkKeys(env)
	if err != nil {
		return err
	}

	level := "info"
	if *verbose {
		level = "debug"
	}
	log := telemetry.NewLogger(stdout, level, "spool-sink", "")
	s := sink.New(sink.Config{Keys: keys, Logger: log})

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("sink: listen %s: %w", *addr, err)
	}
	// Handlers waiting out a ?delay= see this context end at shutdown, so
	// a stop is never held up by a delay.
	baseCtx, cancelBase := context.WithCancel(context.Background())
	defer cancelBase()
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      sink.MaxDelay + 30*time.Second, // a delayed answer must still be written
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    1 << 20,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
	}
	log.Info("sink listening", "addr", ln.Addr().String(), "verify_signatures", len(keys) > 0, "keys", len(keys))

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case err := <-served:
		return fmt.Errorf("sink: serve: %w", err)
	case <-ctx.Done():
	}
	cancelBase()
	shutCtx, cancel := context.WithTimeout(context.Background(), sinkShutdownTimeout)
	defer cancel()
	err = srv.Shutdown(shutCtx)
	if serveErr := <-served; !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(err, serveErr)
	}
	st := s.Stats()
	log.Info("sink stopped", "received", st.Received, "unique", st.Unique, "duplicates", st.Duplicates, "bad_signatures", st.BadSignatures)
	if err != nil {
		return fmt.Errorf("sink: shutdown: %w", err)
	}
	return nil
}

// sinkKeys reads the verification keys the way `spool serve` reads its
// signing keys: SPOOL_SIGNING_KEYS wins over SPOOL_SIGNING_KEYS_FILE.
func sinkKeys(env func(string) string) ([][]byte, error) {
	var list []string
	source := "SPOOL_SIGNING_KEYS"
	if v := env("SPOOL_SIGNING_KEYS"); v != "" {
		list = strings.Split(v, ",")
	} else if path := env("SPOOL_SIGNING_KEYS_FILE"); path != "" {
		source = "SPOOL_SIGNING_KEYS_FILE"
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("sink: %s: %w", source, err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "#") {
				continue
			}
			list = append(list, line)
		}
	}
	keys, err := webhook.ParseKeys(list)
	if err != nil {
		return nil, fmt.Errorf("sink: %s: %w", source, err)
	}
	return keys, nil
}
