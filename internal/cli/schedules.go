package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spoolhq/spool/client"
)

const schedulesUsage = `
Usage: spool schedules <subcommand> [flags] ...

Subcommands:
  list            list schedules with their next run
  get NAME        show one schedule and its next five run times
  set NAME        create or replace a schedule: --cron or --every, --queue, --url, ...
  delete NAME     delete a schedule (the tasks it enqueued stay)
  trigger NAME    enqueue one run now
  pause NAME      stop enqueueing NAME's runs
  resume NAME     enqueue NAME's runs again, from its next time after now

Examples:
  spool schedules set nightly-report --cron '30 2 * * *' --timezone Europe/Paris \
      --queue reports --url https://example.com/report --data '{"kind":"nightly"}'
  spool schedules set heartbeat --every 1m --queue pings --url https://example.com/ping
  spool schedules get nightly-report
  spool schedules trigger nightly-report

Run 'spool schedules <subcommand> --help' for its flags.
`

// Schedules implements `spool schedules list|get|set|delete|trigger|pause|resume`.
func Schedules(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) error {
	env = getenv(env)
	one := func(sub, what, example string, do func(*client.Client, string) (*client.Schedule, error)) func([]string) error {
		return func(a []string) error {
			return byName("schedules "+sub, "NAME", a, env, stdout, what, example, do, printSchedule)
		}
	}
	subs := map[string]func([]string) error{
		"list": func(a []string) error { return schedulesList(ctx, a, env, stdout) },
		"get": one("get", "shows a schedule, its task and its next five run times.", "spool schedules get nightly-report --output json",
			func(c *client.Client, name string) (*client.Schedule, error) { return c.GetSchedule(ctx, name) }),
		"delete": one("delete", "deletes a schedule; the tasks it enqueued stay.", "spool schedules delete nightly-report",
			func(c *client.Client, name string) (*client.Schedule, error) { return c.DeleteSchedule(ctx, name) }),
		"pause": one("pause", "stops enqueueing the schedule's runs; the times passed while paused are not run later.", "spool schedules pause nightly-report",
			func(c *client.Client, name string) (*client.Schedule, error) { return c.PauseSchedule(ctx, name) }),
		"resume": one("resume", "enqueues a paused schedule's runs again, from its next time after now.", "spool schedules resume nightly-report",
			func(c *client.Client, name string) (*client.Schedule, error) { return c.ResumeSchedule(ctx, name) }),
		"trigger": func(a []string) error {
			return byName("schedules trigger", "NAME", a, env, stdout, "enqueues one run of the schedule now and prints its task; the schedule's times do not move.",
				"spool schedules trigger nightly-report",
				func(c *client.Client, name string) (*client.Task, error) { return c.TriggerSchedule(ctx, name) }, printTask)
		},
		"set": func(a []string) error { return schedulesSet(ctx, a, env, os.Stdin, stdout) },
	}
	return runSub("schedules", schedulesUsage, subs, []string{"list", "get", "set", "delete", "trigger", "pause", "resume"}, args, stdout)
}

const schedulesListUsage = `
Usage: spool schedules list [flags]

Lists every schedule, by name, with its timing and next run.

Example:
  spool schedules list --output json
` + clientFlagsHelp

func schedulesList(ctx context.Context, args []string, env func(string) string, stdout io.Writer) error {
	return fetchAndPrint("schedules list", schedulesListUsage, args, env, stdout, nil,
		func(c *client.Client, _ []string) ([]client.Schedule, error) {
			var all []client.Schedule
			cursor := ""
			for {
				p, err := c.ListSchedules(ctx, client.ScheduleListOptions{Limit: 1000, Cursor: cursor})
				if err != nil {
					return nil, err
				}
				all = append(all, p.Schedules...)
				if p.NextCursor == "" {
					return all, nil
				}
				cursor = p.NextCursor
			}
		}, printScheduleList)
}

const schedulesSetUsage = `
Usage: spool schedules set [flags] NAME

Creates or replaces schedule NAME. Each of its times enqueues one task on
--queue delivering to --url, exactly once whatever replicas crash or lead.
Give --cron (five fields, or @hourly, @daily, @weekly, @monthly, @yearly)
or --every (whole seconds). A replaced schedule keeps its next run when
its timing is unchanged.

DST (cron in --timezone): a time in a spring-forward gap runs at the first
instant after the gap; a time in a repeated fall-back hour runs once, at
its first occurrence.

Examples:
  spool schedules set nightly-report --cron '30 2 * * *' --timezone Europe/Paris \
      --queue reports --url https://example.com/report --data '{"kind":"nightly"}'
  spool schedules set heartbeat --every 1m --queue pings --url https://example.com/ping --missed skip
` + clientFlagsHelp

func schedulesSet(ctx context.Context, args []string, env func(string) string, stdin io.Reader, stdout io.Writer) error {
	cmd := newCommand("schedules set", schedulesSetUsage)
	fs := cmd.fs
	var cf clientFlags
	cf.register(fs)
	var tf taskFlags
	tf.register(fs)
	cron := fs.String("cron", "", "cron expression, e.g. '30 2 * * *' or @hourly (exclusive with --every)")
	every := fs.Duration("every", 0, "interval, whole seconds, e.g. 1m (exclusive with --cron)")
	timezone := fs.String("timezone", "", "IANA time zone of --cron, e.g. Europe/Paris (server default: UTC)")
	queue := fs.String("queue", "", "queue each run's task is enqueued in (required)")
	target := fs.String("url", "", "URL each run's task is delivered to (required)")
	missed := fs.String("missed", "", "runs missed while Spool was down: skip, latest (server default) or all")
	jitter := fs.Duration("jitter", 0, "delay each run by a stable pseudo-random 0 to this, at most 1h")
	startAt := fs.String("start-at", "", "no run before this RFC 3339 time")
	endAt := fs.String("end-at", "", "no run after this RFC 3339 time")
	paused := fs.Bool("paused", false, "create the schedule paused")
	pos, err := cmd.parse(args, stdout)
	if err != nil {
		return err
	}
	if err := cmd.wantArgs(pos, "NAME"); err != nil {
		return err
	}
	given := cmd.set()
	if given["cron"] == given["every"] {
		return usagef("schedules set: give exactly one of --cron and --every")
	}
	if strings.TrimSpace(*queue) == "" || *target == "" {
		return usagef("schedules set: --queue and --url are required")
	}
	req := client.ScheduleRequest{Cron: *cron, Every: *every, Timezone: *timezone, Queue: *queue,
		Missed: *missed, Jitter: *jitter, Paused: *paused}
	if req.Task, err = tf.request("schedules set", *target, given, stdin); err != nil {
		return err
	}
	for _, f := range []struct {
		flag string
		v    *string
		t    *time.Time
	}{{"start-at", startAt, &req.StartAt}, {"end-at", endAt, &req.EndAt}} {
		if !given[f.flag] {
			continue
		}
		if *f.t, err = time.Parse(time.RFC3339Nano, *f.v); err != nil {
			return usagef("schedules set: --%s must be an RFC 3339 time like 2030-01-02T15:04:05Z, got %q", f.flag, *f.v)
		}
	}
	c, err := cf.client("schedules set", env)
	if err != nil {
		return err
	}
	s, _, err := c.PutSchedule(ctx, pos[0], req)
	if err != nil {
		return err
	}
	return printSchedule(stdout, cf.output, s)
}

func scheduleTiming(s *client.Schedule) string {
	if s.Cron != "" {
		return "cron " + s.Cron
	}
	return "every " + s.Every.String()
}

func printSchedule(w io.Writer, format string, s *client.Schedule) error {
	if format == "json" {
		return writeJSON(w, s)
	}
	tw := newTable(w)
	next := make([]string, len(s.NextRuns))
	for i, t := range s.NextRuns {
		next[i] = fmtTime(t)
	}
	rows := [][2]string{
		{"NAME", s.Name},
		{"TIMING", scheduleTiming(s)},
		{"TIMEZONE", s.Timezone},
		{"QUEUE", s.Queue},
		{"TARGET", targetText(s.Task.Target)},
		{"PAUSED", fmt.Sprint(s.Paused)},
		{"MISSED", s.Missed},
		{"JITTER", fmtDuration(s.Jitter)},
		{"START AT", fmtTimePtr(s.StartAt)},
		{"END AT", fmtTimePtr(s.EndAt)},
		{"SOURCE", s.Source},
		{"LAST RUN", fmtTimePtr(s.LastRunAt)},
		{"NEXT RUNS", orDash(strings.Join(next, ", "))},
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
	}
	return tw.Flush()
}

func printScheduleList(w io.Writer, format string, ss []client.Schedule) error {
	if format == "json" {
		return writeJSON(w, client.SchedulePage{Schedules: ss})
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "NAME\tTIMING\tTIMEZONE\tQUEUE\tPAUSED\tSOURCE\tNEXT RUN")
	for i := range ss {
		s := &ss[i]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%s\t%s\n", s.Name, scheduleTiming(s), s.Timezone, s.Queue, s.Paused, s.Source, fmtTimePtr(s.NextRunAt))
	}
	return tw.Flush()
}
