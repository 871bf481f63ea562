package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/spoolhq/spool/client"
	"github.com/spoolhq/spool/internal/task"
)

const tasksUsage = `
Usage: spool tasks <subcommand> [flags] ...

Subcommands:
  get ID          show one task
  list QUEUE      list a queue's tasks, oldest first (--state, --limit, --cursor, --all)
  cancel ID       cancel an unfinished task
  retry ID        run a failed or cancelled task again

Examples:
  spool tasks get 0190a5d2-7c4e-7b1a-9f3e-2d1c0b9a8f7e
  spool tasks list emails --state failed --all
  spool tasks retry 0190a5d2-7c4e-7b1a-9f3e-2d1c0b9a8f7e

Run 'spool tasks <subcommand> --help' for its flags.
`

// maxPages stops --all if a server kept answering with a cursor forever.
const maxPages = 100_000

// Tasks implements `spool tasks get|list|cancel|retry`.
func Tasks(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error {
	env = getenv(env)
	subs := map[string]func([]string) error{
		"get": func(a []string) error { return tasksGet(ctx, a, env, stdout) },
		"cancel": func(a []string) error {
			return taskByID(ctx, "cancel", a, env, stdout, "cancels a task that has not finished; a running attempt completes but is not retried.",
				"spool tasks cancel 0190a5d2-7c4e-7b1a-9f3e-2d1c0b9a8f7e", nil,
				func(c *client.Client, id string) (*client.Task, error) { return c.CancelTask(ctx, id) })
		},
		"retry": func(a []string) error {
			return taskByID(ctx, "retry", a, env, stdout, "makes a failed or cancelled task available again.",
				"spool tasks retry 0190a5d2-7c4e-7b1a-9f3e-2d1c0b9a8f7e", nil,
				func(c *client.Client, id string) (*client.Task, error) { return c.RetryTask(ctx, id) })
		},
		"list": func(a []string) error { return tasksList(ctx, a, env, stdout, stderr) },
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
	pos, err := cmd.parse(args, stdout)
	if err != nil {
		return err
	}
	if err := cmd.wantArgs(pos, "QUEUE"); err != nil {
		return err
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

	opts := client.ListOptions{State: *state, Limit: *limit, Cursor: *cursor, View: *view}
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
