package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/spoolhq/spool/client"
	"github.com/spoolhq/spool/internal/task"
)

const tasksUsage = `
Usage: spool tasks <subcommand> [flags] ...

Subcommands:
  get ID          show one task
  list QUEUE      list a queue's tasks, oldest first (--state, --limit, --cursor, --all, filters)
  cancel ID...    cancel unfinished tasks (several with --queue; --queue Q --state S --all: every one)
  retry ID...     run failed or cancelled tasks again (--queue Q --state failed --all: every one)

Examples:
  spool tasks get 0190a5d2-7c4e-7b1a-9f3e-2d1c0b9a8f7e
  spool tasks list emails --state failed --all
  spool tasks retry 0190a5d2-7c4e-7b1a-9f3e-2d1c0b9a8f7e
  spool tasks retry --queue emails --state failed --all

Run 'spool tasks <subcommand> --help' for its flags.
`

// maxPages stops --all if a server kept answering with a cursor forever.
const maxPages = 100_000

// Tasks implements `spool tasks get|list|cancel|retry`.
func Tasks(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error {
	env = getenv(env)
	subs := map[string]func([]string) error{
		"get":    func(a []string) error { return tasksGet(ctx, a, env, stdout) },
		"cancel": func(a []string) error { return tasksChange(ctx, cancelChange, a, env, stdout, stderr) },
		"retry":  func(a []string) error { return tasksChange(ctx, retryChange, a, env, stdout, stderr) },
		"list":   func(a []string) error { return tasksList(ctx, a, env, stdout, stderr) },
	}
	return runSub("tasks", tasksUsage, subs, []string{"get", "list", "cancel", "retry"}, args, stdout)
}

// tasksGet is `spool tasks get [--view full] ID`: the task and its
// attempts.
func tasksGet(ctx context.Context, args []string, env func(string) string, stdout io.Writer) error {
	var (
		view     *string
		attempts []client.Attempt // nil: not known (a server without the attempt history)
	)
	return taskByID(ctx, "get", args, env, stdout, "shows one task and its delivery attempts, oldest first. Target header values show as "+client.Redacted+
		" unless --view full is given with an admin API key.",
		"spool tasks get 0190a5d2-7c4e-7b1a-9f3e-2d1c0b9a8f7e --output json",
		func(fs *flag.FlagSet) { view = viewFlag(fs) },
		func(c *client.Client, id string) (*client.Task, error) {
			if err := checkView("tasks get", *view); err != nil {
				return nil, err
			}
			// The attempts first: a 404 then means no such task, which
			// the task's own request reports, or a server older than the
			// attempt history, whose task is shown without them.
			as, err := c.Attempts(ctx, id)
			var ce *client.Error
			switch {
			case errors.As(err, &ce) && ce.Status == http.StatusNotFound:
			case err != nil:
				return nil, err
			default:
				attempts = as
			}
			return c.GetTaskView(ctx, id, *view)
		},
		func(w io.Writer, format string, t *client.Task) error {
			return printTaskAttempts(w, format, t, attempts)
		})
}

// viewFlag registers --view, shared by tasks get and tasks list.
func viewFlag(fs *flag.FlagSet) *string {
	return fs.String("view", "", "full: show target header values (needs an admin API key); default: names only, values "+client.Redacted)
}

func checkView(name, view string) error {
	if view != "" && view != client.ViewRedacted && view != client.ViewFull {
		return usagef("%s: --view must be redacted or full, got %q", name, view)
	}
	return nil
}

// taskByID runs a subcommand that takes one task id and prints a task;
// flags, when set, registers the subcommand's own flags; show, when set,
// prints the task instead of printTask.
func taskByID(ctx context.Context, sub string, args []string, env func(string) string, stdout io.Writer,
	what, example string, flags func(*flag.FlagSet), do func(*client.Client, string) (*client.Task, error),
	show ...func(io.Writer, string, *client.Task) error) error {
	name := "tasks " + sub
	usage := fmt.Sprintf("\nUsage: spool %s [flags] ID\n\nspool %s %s\n\nExample:\n  %s\n%s", name, name, what, example, clientFlagsHelp)
	cmd := newCommand(name, usage)
	var cf clientFlags
	cf.register(cmd.fs)
	if flags != nil {
		flags(cmd.fs)
	}
	pos, err := cmd.parse(args, stdout)
	if err != nil {
		return err
	}
	if err := cmd.wantArgs(pos, "ID"); err != nil {
		return err
	}
	c, err := cf.client(name, env)
	if err != nil {
		return err
	}
	t, err := do(c, pos[0])
	if err != nil {
		return err
	}
	if len(show) > 0 {
		return show[0](stdout, cf.output, t)
	}
	return printTask(stdout, cf.output, t)
}

const tasksListUsage = `
Usage: spool tasks list [flags] QUEUE

Lists QUEUE's tasks in creation order, one page at a time (--cursor picks
up where the last page ended), or every page with --all.

Examples:
  spool tasks list emails
  spool tasks list emails --state failed --limit 50
  spool tasks list emails --state retrying --all --output json
  spool tasks list emails --target-host api.example.com --created-after 2026-01-02T00:00:00Z --all

Filters combine. With --priority, --target-host, --run-after or --run-before
the server examines at most 10 x --limit tasks per page, so a page may hold
fewer tasks (or none) and still have a cursor; --all follows it.

Target header values show as ` + client.Redacted + ` unless --view full is given
with an admin API key (with --output json; the table shows no headers).
` + clientFlagsHelp

func tasksList(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error {
	cmd := newCommand("tasks list", tasksListUsage)
	fs := cmd.fs
	var cf clientFlags
	cf.register(fs)
	var stateNames []string
	for _, s := range task.States {
		stateNames = append(stateNames, string(s))
	}
	state := fs.String("state", "", "only tasks in this state: "+strings.Join(stateNames, ", "))
	limit := fs.Int("limit", 0, "tasks per page, 1-1000 (server default when unset)")
	cursor := fs.String("cursor", "", "continue after this cursor (printed by the previous page)")
	all := fs.Bool("all", false, "follow cursors and list every page")
	view := viewFlag(fs)
	priority := fs.Int("priority", 0, "only tasks of this priority, 0-9")
	host := fs.String("target-host", "", "only tasks whose target URL has this host (no scheme or port)")
	key := fs.String("idempotency-key", "", "only the task holding this idempotency key")
	var times [4]time.Time
	for i, name := range []string{"created-after", "created-before", "run-after", "run-before"} {
		what := map[string]string{"created-after": "created at or after", "created-before": "created before",
			"run-after": "due (run_at) at or after", "run-before": "due (run_at) before"}[name]
		fs.Func(name, "only tasks "+what+" this RFC 3339 time", func(v string) error {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return fmt.Errorf("want an RFC 3339 time such as 2026-01-02T15:04:05Z")
			}
			times[i] = t
			return nil
		})
	}
	pos, err := cmd.parse(args, stdout)
	if err != nil {
		return err
	}
	if err := cmd.wantArgs(pos, "QUEUE"); err != nil {
		return err
	}
	opts := client.ListOptions{State: *state, Limit: *limit, Cursor: *cursor, View: *view, TargetHost: *host,
		IdempotencyKey: *key, CreatedAfter: times[0], CreatedBefore: times[1], RunAfter: times[2], RunBefore: times[3]}
	if cmd.set()["priority"] {
		if *priority < 0 || *priority > 9 {
			return usagef("tasks list: --priority must be 0-9, got %d", *priority)
		}
		opts.Priority = priority
	}
	if *state != "" {
		if _, err := task.ParseState(*state); err != nil {
			return usagef("tasks list: --state must be one of %s, got %q", strings.Join(stateNames, ", "), *state)
		}
	}
	if cmd.set()["limit"] && (*limit < 1 || *limit > 1000) {
		return usagef("tasks list: --limit must be 1-1000, got %d", *limit)
	}
	if err := checkView("tasks list", *view); err != nil {
		return err
	}
	c, err := cf.client("tasks list", env)
	if err != nil {
		return err
	}

	var tasks []client.Task
	next := ""
	for pages := 0; ; pages++ {
		if pages == maxPages {
			return fmt.Errorf("tasks list: stopped after %d pages", maxPages)
		}
		page, err := c.ListTasks(ctx, pos[0], opts)
		if err != nil {
			return err
		}
		tasks = append(tasks, page.Tasks...)
		next = page.NextCursor
		if !*all || next == "" {
			break
		}
		if next == opts.Cursor {
			return fmt.Errorf("tasks list: server repeated cursor %q", next)
		}
		opts.Cursor = next
	}
	if tasks == nil {
		tasks = []client.Task{}
	}
	if err := printTaskList(stdout, cf.output, tasks, next); err != nil {
		return err
	}
	if cf.output == "table" && next != "" {
		fmt.Fprintf(stderr, "more tasks: add --cursor %s (or --all)\n", next)
	}
	return nil
}

// change is tasks cancel or tasks retry.
type change struct {
	name   string // "cancel", "retry"
	done   string // "cancelled", "retried"
	what   string
	states []string // the states --state accepts
	one    func(ctx context.Context, c *client.Client, id string) (*client.Task, error)
	ids    func(c *client.Client, ctx context.Context, queue string, ids []string) (*client.BulkResult, error)
	state  func(c *client.Client, ctx context.Context, queue, state string, o client.SweepOptions) (*client.BulkResult, error)
}

var (
	cancelChange = change{
		name: "cancel", done: "cancelled",
		what:   "cancels tasks that have not finished; a running attempt completes but is not retried.",
		states: []string{"scheduled", "available", "running", "retrying"},
		one: func(ctx context.Context, c *client.Client, id string) (*client.Task, error) {
			return c.CancelTask(ctx, id)
		},
		ids:   (*client.Client).CancelTasks,
		state: (*client.Client).CancelTasksInState,
	}
	retryChange = change{
		name: "retry", done: "retried",
		what:   "makes failed or cancelled tasks available again, from attempt 1.",
		states: []string{"failed", "cancelled"},
		one: func(ctx context.Context, c *client.Client, id string) (*client.Task, error) {
			return c.RetryTask(ctx, id)
		},
		ids:   (*client.Client).RetryTasks,
		state: (*client.Client).RetryTasksInState,
	}
)

// maxBulk is the most ids the server takes in one bulk request.
const maxBulk = 1000

// tasksChange is `spool tasks cancel|retry`: one task by id; several ids
// of one queue (--queue), sent 1000 to a request; or a queue's tasks in a
// state (--queue, --state), 1000 to a request, every one with --all.
func tasksChange(ctx context.Context, ch change, args []string, env func(string) string, stdout, stderr io.Writer) error {
	name := "tasks " + ch.name
	usage := fmt.Sprintf(`
Usage: spool %[1]s [flags] ID
       spool %[1]s --queue QUEUE [flags] ID...
       spool %[1]s --queue QUEUE --state STATE [--all] [flags]

spool %[1]s %[2]s

One id prints the task. With --queue, ids are sent %[3]d to a request and
each is reported (a task of another queue, unknown, or in a state that
does not allow it is listed with the reason, and the command exits
non-zero). With --state (%[4]s), the queue's tasks in
that state are changed %[3]d to a request, in creation order; --all
repeats until none is left, each request starting where the previous one
stopped, so a task that comes back to that state meanwhile is not changed
twice.

Examples:
  spool %[1]s 0190a5d2-7c4e-7b1a-9f3e-2d1c0b9a8f7e
  spool %[1]s --queue emails 0190a5d2-7c4e-7b1a-9f3e-2d1c0b9a8f7e 0190a5d2-7c4f-7000-8000-000000000001
  spool %[1]s --queue emails --state %[5]s --all
%[6]s`, name, ch.what, maxBulk, strings.Join(ch.states, ", "), ch.states[0], clientFlagsHelp)
	cmd := newCommand(name, usage)
	var cf clientFlags
	cf.register(cmd.fs)
	queue := cmd.fs.String("queue", "", "the queue of the tasks (needed for several ids or --state)")
	state := cmd.fs.String("state", "", "change the queue's tasks in this state: "+strings.Join(ch.states, ", "))
	all := cmd.fs.Bool("all", false, "with --state: repeat until no task in that state is left")
	cursor := cmd.fs.String("cursor", "", "with --state: continue after this cursor (printed by the previous run)")
	pos, err := cmd.parse(args, stdout)
	if err != nil {
		return err
	}
	switch {
	case *state != "" && !slices.Contains(ch.states, *state):
		return usagef("%s: --state must be one of %s, got %q", name, strings.Join(ch.states, ", "), *state)
	case *state != "" && *queue == "":
		return usagef("%s: --state needs --queue", name)
	case *state != "" && len(pos) > 0:
		return usagef("%s: give ids or --state, not both", name)
	case *state == "" && (*all || *cursor != ""):
		return usagef("%s: --all and --cursor go with --state", name)
	case *state == "" && len(pos) == 0:
		return usagef("%s: missing ID (usage: spool %s [flags] ID, or --queue QUEUE --state STATE)", name, name)
	case *queue == "" && len(pos) > 1:
		return usagef("%s: several ids need --queue (the queue they belong to)", name)
	}
	c, err := cf.client(name, env)
	if err != nil {
		return err
	}
	switch {
	case *state != "":
		return changeState(ctx, ch, c, cf.output, *queue, *state, *cursor, *all, stdout, stderr)
	case *queue != "":
		return changeIDs(ctx, ch, c, cf.output, *queue, pos, stdout)
	}
	t, err := ch.one(ctx, c, pos[0])
	if err != nil {
		return err
	}
	return printTask(stdout, cf.output, t)
}

// changeIDs sends ids maxBulk at a time and prints a line per id.
func changeIDs(ctx context.Context, ch change, c *client.Client, output, queue string, ids []string, stdout io.Writer) error {
	var results []client.BulkTaskResult
	count := 0
	for len(ids) > 0 {
		n := min(len(ids), maxBulk)
		r, err := ch.ids(c, ctx, queue, ids[:n])
		if err != nil {
			return err
		}
		results = append(results, r.Results...)
		count += r.Count
		ids = ids[n:]
	}
	if output == "json" {
		if err := writeJSON(stdout, client.BulkResult{Count: count, Results: results}); err != nil {
			return err
		}
	} else {
		tw := newTable(stdout)
		fmt.Fprintln(tw, "ID\tSTATE\tRESULT")
		for _, r := range results {
			res := ch.done
			if r.Error != nil {
				res = oneLineText(r.Error.Detail, 120)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", r.ID, orDash(r.State), res)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if failed := len(results) - count; failed > 0 {
		return fmt.Errorf("tasks %s: %d of %d tasks not %s (see above)", ch.name, failed, len(results), ch.done)
	}
	return nil
}

// changeState changes a queue's tasks in state, one request (1000 tasks)
// or, with all, until none is left; it prints the total.
func changeState(ctx context.Context, ch change, c *client.Client, output, queue, state, cursor string, all bool,
	stdout, stderr io.Writer) error {
	o := client.SweepOptions{Cursor: cursor}
	total := 0
	var last *client.BulkResult
	for calls := 0; ; calls++ {
		if calls == maxPages {
			return fmt.Errorf("tasks %s: stopped after %d requests", ch.name, maxPages)
		}
		r, err := ch.state(c, ctx, queue, state, o)
		if err != nil {
			if total > 0 {
				fmt.Fprintf(stderr, "%s %d %s tasks before the error\n", ch.done, total, state)
			}
			return err
		}
		total += r.Count
		last = r
		if !all || !r.More {
			break
		}
		if r.NextCursor == o.Cursor {
			return fmt.Errorf("tasks %s: server repeated cursor %q", ch.name, r.NextCursor)
		}
		o.Cursor = r.NextCursor
	}
	if output == "json" {
		return writeJSON(stdout, client.BulkResult{Count: total, More: last.More, NextCursor: last.NextCursor})
	}
	fmt.Fprintf(stdout, "%s %d %s tasks of %s\n", ch.done, total, state, queue)
	if last.More {
		fmt.Fprintf(stderr, "more %s tasks: add --cursor %s (or --all)\n", state, last.NextCursor)
	}
	return nil
}
