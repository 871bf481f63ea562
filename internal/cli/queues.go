package cli

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spoolhq/spool/client"
	"github.com/spoolhq/spool/internal/task"
)

const queuesUsage = `
Usage: spool queues <subcommand> [flags] ...

Subcommands:
  list            list queues with their settings and task counts
  get NAME        show one queue
  pause NAME      stop dispatching NAME's tasks (enqueueing still works)
  resume NAME     dispatch NAME's tasks again
  set NAME        change settings: --concurrency, --rate-limit, --max-attempts, --timeout,
                  --weight, --retry-statuses

Examples:
  spool queues list
  spool queues set emails --concurrency 10 --rate-limit 50
  spool queues pause emails

Run 'spool queues <subcommand> --help' for its flags.
`

// Queues implements `spool queues list|get|pause|resume|set`.
func Queues(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error {
	env = getenv(env)
	subs := map[string]func([]string) error{
		"list": func(a []string) error { return queuesList(ctx, a, env, stdout) },
		"get": func(a []string) error {
			return queueByName(ctx, "get", a, env, stdout, "shows a queue's settings and its task counts by state.",
				"spool queues get emails --output json",
				func(c *client.Client, name string) (*client.Queue, error) { return c.GetQueue(ctx, name) })
		},
		"pause": func(a []string) error {
			return queueByName(ctx, "pause", a, env, stdout, "stops dispatching the queue's tasks on every replica; enqueueing still works and running attempts finish.",
				"spool queues pause emails",
				func(c *client.Client, name string) (*client.Queue, error) { return c.PauseQueue(ctx, name) })
		},
		"resume": func(a []string) error {
			return queueByName(ctx, "resume", a, env, stdout, "dispatches a paused queue's tasks again.",
				"spool queues resume emails",
				func(c *client.Client, name string) (*client.Queue, error) { return c.ResumeQueue(ctx, name) })
		},
		"set": func(a []string) error { return queuesSet(ctx, a, env, stdout) },
	}
	return runSub("queues", queuesUsage, subs, []string{"list", "get", "pause", "resume", "set"}, args, stdout)
}

const queuesListUsage = `
Usage: spool queues list [flags]

Lists every queue with its settings and task counts (PENDING counts
scheduled, available and retrying tasks).

Example:
  spool queues list --output json
` + clientFlagsHelp

func queuesList(ctx context.Context, args []string, env func(string) string, stdout io.Writer) error {
	return fetchAndPrint("queues list", queuesListUsage, args, env, stdout, nil,
		func(c *client.Client, _ []string) ([]client.Queue, error) { return c.ListQueues(ctx) }, printQueueList)
}

// queueByName runs a subcommand that takes one queue name and prints it.
func queueByName(ctx context.Context, sub string, args []string, env func(string) string, stdout io.Writer,
	what, example string, do func(*client.Client, string) (*client.Queue, error)) error {
	return byName("queues "+sub, "NAME", args, env, stdout, what, example, do, printQueue)
}

// byName runs a subcommand ("queues get") that takes one argument naming
// a resource, calls do with it and prints what do returns.
func byName[T any](name, arg string, args []string, env func(string) string, stdout io.Writer,
	what, example string, do func(*client.Client, string) (T, error), print func(io.Writer, string, T) error) error {
	usage := fmt.Sprintf("\nUsage: spool %s [flags] %s\n\nspool %s %s\n\nExample:\n  %s\n%s", name, arg, name, what, example, clientFlagsHelp)
	return fetchAndPrint(name, usage, args, env, stdout, []string{arg},
		func(c *client.Client, pos []string) (T, error) { return do(c, pos[0]) }, print)
}

// fetchAndPrint runs a client subcommand that only reads or sets one thing:
// the shared client flags, exactly the positional arguments named in want,
// then do with them, and print with what do returns.
func fetchAndPrint[T any](name, usage string, args []string, env func(string) string, stdout io.Writer,
	want []string, do func(*client.Client, []string) (T, error), print func(io.Writer, string, T) error) error {
	cmd := newCommand(name, usage)
	var cf clientFlags
	cf.register(cmd.fs)
	pos, err := cmd.parse(args, stdout)
	if err != nil {
		return err
	}
	if err := cmd.wantArgs(pos, want...); err != nil {
		return err
	}
	c, err := cf.client(name, env)
	if err != nil {
		return err
	}
	v, err := do(c, pos)
	if err != nil {
		return err
	}
	return print(stdout, cf.output, v)
}

const queuesSetUsage = `
Usage: spool queues set [flags] NAME

Changes NAME's settings. Only the flags given are sent; the others keep
their values. Limits hold across every replica.

Examples:
  spool queues set emails --concurrency 10 --rate-limit 50
  spool queues set emails --max-attempts 5 --timeout 10s
  spool queues set emails --concurrency 0      # no concurrency limit
  spool queues set reports --weight 3          # 3 workers to 1 against a busy queue of weight 1
  spool queues set emails --retry-statuses 429,500-599,timeout
  spool queues set emails --retry-statuses none   # nothing retries
` + clientFlagsHelp

func queuesSet(ctx context.Context, args []string, env func(string) string, stdout io.Writer) error {
	cmd := newCommand("queues set", queuesSetUsage)
	fs := cmd.fs
	var cf clientFlags
	cf.register(fs)
	concurrency := fs.Int("concurrency", 0, "tasks running at once across all replicas; 0 = unlimited")
	rateLimit := fs.Float64("rate-limit", 0, "tasks started per second across all replicas; 0 = unlimited")
	maxAttempts := fs.Int("max-attempts", 0, fmt.Sprintf("default attempts for new tasks, 1-%d", task.MaxMaxAttempts))
	timeout := fs.Duration("timeout", 0, "default timeout of each attempt, e.g. 10s")
	weight := fs.Int("weight", 0, fmt.Sprintf("share of the workers against other queues with due work, 1-%d (default 1)", task.MaxWeight))
	retryStatuses := fs.String("retry-statuses", "", `which failed attempts retry: statuses, ranges, timeout, connection, comma-separated (e.g. "429,500-599,timeout"); "none": nothing retries`)
	pos, err := cmd.parse(args, stdout)
	if err != nil {
		return err
	}
	if err := cmd.wantArgs(pos, "NAME"); err != nil {
		return err
	}
	given := cmd.set()
	var p client.QueuePatch
	if given["concurrency"] {
		if *concurrency < 0 {
			return usagef("queues set: --concurrency must be 0 (unlimited) or more, got %d", *concurrency)
		}
		p.Concurrency = concurrency
	}
	if given["rate-limit"] {
		// NaN fails both comparisons, so test for the valid range.
		if !(*rateLimit >= 0) || *rateLimit > 1e9 {
			return usagef("queues set: --rate-limit must be 0 (unlimited) or a positive rate, got %v", *rateLimit)
		}
		p.RateLimit = rateLimit
	}
	if given["max-attempts"] {
		if *maxAttempts < 1 || *maxAttempts > task.MaxMaxAttempts {
			return usagef("queues set: --max-attempts must be 1-%d, got %d", task.MaxMaxAttempts, *maxAttempts)
		}
		p.MaxAttempts = maxAttempts
	}
	if given["timeout"] {
		if *timeout <= 0 || *timeout > task.MaxTimeout {
			return usagef("queues set: --timeout must be above 0 and at most %s, got %s", task.MaxTimeout, *timeout)
		}
		p.Timeout = timeout
	}
	if given["weight"] {
		if *weight < 1 || *weight > task.MaxWeight {
			return usagef("queues set: --weight must be 1-%d, got %d", task.MaxWeight, *weight)
		}
		p.Weight = weight
	}
	if given["retry-statuses"] {
		text := *retryStatuses
		if strings.TrimSpace(text) == "none" {
			text = ""
		} else if strings.TrimSpace(text) == "" {
			return usagef(`queues set: --retry-statuses needs a list such as "429,500-599,timeout", or "none"`)
		}
		rs, err := task.ParseRetryStatuses(text)
		if err != nil {
			return usagef("queues set: --retry-statuses: %s", strings.TrimPrefix(err.Error(), "retry_statuses: "))
		}
		tokens := rs.Tokens()
		p.RetryStatuses = &tokens
	}
	if p == (client.QueuePatch{}) {
		return usagef("queues set: nothing to change: give at least one of --concurrency, --rate-limit, --max-attempts, --timeout, --weight, --retry-statuses")
	}
	c, err := cf.client("queues set", env)
	if err != nil {
		return err
	}
	q, err := c.UpdateQueue(ctx, pos[0], p)
	if err != nil {
		return err
	}
	return printQueue(stdout, cf.output, q)
}
