// Command spool is the Spool task service and its command-line client.
// This package only parses the command line and wires packages together.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"

	"github.com/spoolhq/spool/internal/cli"
)

// Set by -ldflags "-X main.version=… -X main.commit=…".
var (
	version = ""
	commit  = ""
)

const usage = `Spool: a durable asynchronous task service.

Usage: spool <command> [flags]

Service:
  serve        run the service (HTTP API, dispatcher, maintenance)
  migrate      apply the database schema migrations
  healthcheck  probe a running instance (for Docker HEALTHCHECK)
  version      print version, commit and Go version

Client (SPOOL_SERVER, SPOOL_API_KEY):
  enqueue      enqueue a task
  tasks        get, list, cancel or retry tasks
  queues       list, get, pause, resume or set queues
  destinations list, get or set destinations (adaptive limits, breakers, ceilings)
  schedules    list, get, set, delete, trigger, pause or resume periodic schedules

Tools:
  sink         a webhook receiver for demos, tests and benchmarks
  bench        measure enqueue and delivery throughput and latency of a server

Run 'spool <command> --help' for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.As(err, new(usageError)), errors.As(err, new(*cli.UsageError)):
		fmt.Fprintln(os.Stderr, "spool:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "spool:", err)
		os.Exit(1)
	}
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// run is main without the process: tests call it directly.
func run(ctx context.Context, args []string, env func(string) (string, bool), stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageError{"no command given"}
	}
	getenv := func(k string) string { v, _ := env(k); return v }
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return serve(ctx, rest, env, stdout)
	case "migrate":
		return migrate(ctx, rest, env, stdout)
	case "healthcheck":
		return healthcheck(ctx, rest, env, stdout)
	case "version":
		fmt.Fprintf(stdout, "spool %s (commit %s, %s %s/%s)\n", buildVersion(), buildCommit(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return nil
	case "enqueue":
		return cli.Enqueue(ctx, rest, getenv, stdout, stderr)
	case "tasks":
		return cli.Tasks(ctx, rest, getenv, stdout, stderr)
	case "queues":
		return cli.Queues(ctx, rest, getenv, stdout, stderr)
	case "schedules":
		return cli.Schedules(ctx, rest, getenv, stdout, stderr)
	case "destinations":
		return cli.Destinations(ctx, rest, getenv, stdout, stderr)
	case "sink":
		return cli.Sink(ctx, rest, getenv, stdout, stderr)
	case "bench":
		return cli.Bench(ctx, rest, getenv, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return usageError{fmt.Sprintf("unknown command %q", cmd)}
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func buildCommit() string {
	if commit != "" {
		return commit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return s.Value[:12]
			}
		}
	}
	return "unknown"
}
