package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spoolhq/spool/client"
	"github.com/spoolhq/spool/internal/task"
)

// writeJSON prints v indented. Tasks and queues marshal to the JSON the
// server sent, so fields this CLI does not know still appear.
func writeJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode output: %w", err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return fmt.Errorf("encode output: %w", err)
	}
	out.WriteByte('\n')
	_, err = w.Write(out.Bytes())
	return err
}

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// fmtTimePtr is fmtTime for the times the API sends as null when unset.
func fmtTimePtr(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return fmtTime(*t)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func fmtStatus(n int) string {
	if n == 0 {
		return "-"
	}
	return strconv.Itoa(n)
}

func fmtDuration(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return d.String()
}

// oneLineText keeps table cells on one line whatever a target answered.
func oneLineText(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > max {
		return string(r[:max-1]) + "…"
	}
	return s
}

func targetText(t client.Target) string {
	m := t.Method
	if m == "" {
		m = "POST"
	}
	return m + " " + t.URL
}

// headersText is "Name: value, …" sorted by name, as the API gave them
// (values redacted unless the task was fetched with --view full).
func headersText(h map[string]string) string {
	parts := make([]string, 0, len(h))
	for _, name := range slices.Sorted(maps.Keys(h)) {
		parts = append(parts, name+": "+oneLineText(h[name], 80))
	}
	return strings.Join(parts, ", ")
}

func printTask(w io.Writer, format string, t *client.Task) error {
	if format == "json" {
		return writeJSON(w, t)
	}
	tw := newTable(w)
	rows := [][2]string{
		{"ID", t.ID},
		{"QUEUE", t.Queue},
		{"STATE", t.State},
		{"ATTEMPT", fmt.Sprintf("%d/%d", t.Attempt, t.MaxAttempts)},
		{"PRIORITY", strconv.Itoa(t.Priority)},
		{"RUN AT", fmtTime(t.RunAt)},
		{"TARGET", targetText(t.Target)},
		{"HEADERS", orDash(headersText(t.Target.Headers))},
		{"TIMEOUT", fmtDuration(t.Timeout)},
		{"IDEMPOTENCY KEY", orDash(t.IdempotencyKey)},
		{"LAST STATUS", fmtStatus(t.LastStatus)},
		{"LAST ERROR", orDash(oneLineText(t.LastError, 200))},
		{"CREATED AT", fmtTime(t.CreatedAt)},
		{"UPDATED AT", fmtTime(t.UpdatedAt)},
		{"FINISHED AT", fmtTimePtr(t.FinishedAt)},
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
	}
	return tw.Flush()
}

// printTaskAttempts prints a task with its attempts (nil: unknown, so
// left out): in JSON, the task's object with an "attempts" member; as
// text, the task's table and then one row per attempt.
func printTaskAttempts(w io.Writer, format string, t *client.Task, attempts []client.Attempt) error {
	if attempts == nil {
		return printTask(w, format, t)
	}
	if format == "json" {
		task, err := json.Marshal(t)
		if err != nil {
			return fmt.Errorf("encode output: %w", err)
		}
		as, err := json.Marshal(attempts)
		if err != nil {
			return fmt.Errorf("encode output: %w", err)
		}
		task = bytes.TrimSuffix(bytes.TrimSpace(task), []byte("}"))
		if !bytes.HasSuffix(bytes.TrimSpace(task), []byte("{")) {
			task = append(task, ',')
		}
		task = append(append(append(task, `"attempts":`...), as...), '}')
		return writeJSON(w, json.RawMessage(task))
	}
	if err := printTask(w, format, t); err != nil {
		return err
	}
	if len(attempts) == 0 {
		_, err := fmt.Fprintf(w, "\nATTEMPTS  none\n")
		return err
	}
	fmt.Fprintf(w, "\nATTEMPTS\n")
	tw := newTable(w)
	fmt.Fprintln(tw, "#\tOUTCOME\tSTATUS\tSTARTED AT\tDURATION\tERROR\tREPLICA\tTRACE ID\tRESPONSE")
	for _, a := range attempts {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.Attempt, a.Outcome, fmtStatus(a.Status),
			fmtTimePtr(a.StartedAt), fmtDuration(a.Duration), orDash(attemptErrorText(a.Error)), orDash(a.Replica),
			orDash(a.TraceID), orDash(oneLineText(deref(a.ResponseExcerpt), 60)))
	}
	return tw.Flush()
}

// attemptErrorText is an attempt's error for a table cell: the class, and
// the message unless the status and the response already say it.
func attemptErrorText(e *client.AttemptError) string {
	switch {
	case e == nil:
		return ""
	case e.Class == "http_status" || e.Message == "":
		return e.Class
	}
	return e.Class + ": " + oneLineText(e.Message, 80)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func printTaskList(w io.Writer, format string, tasks []client.Task, next string) error {
	if format == "json" {
		return writeJSON(w, client.TaskPage{Tasks: tasks, NextCursor: next})
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "ID\tSTATE\tATTEMPT\tPRIORITY\tRUN AT\tLAST STATUS\tTARGET")
	for _, t := range tasks {
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%d\t%s\t%s\t%s\n", t.ID, t.State, t.Attempt, t.MaxAttempts,
			t.Priority, fmtTime(t.RunAt), fmtStatus(t.LastStatus), oneLineText(targetText(t.Target), 80))
	}
	return tw.Flush()
}

func queueStatus(q *client.Queue) string {
	if q.Paused {
		return "paused"
	}
	return "active"
}

func fmtLimit(v float64, unit string) string {
	if v == 0 {
		return "unlimited"
	}
	return strconv.FormatFloat(v, 'f', -1, 64) + unit
}

func printQueue(w io.Writer, format string, q *client.Queue) error {
	if format == "json" {
		return writeJSON(w, q)
	}
	tw := newTable(w)
	rows := [][2]string{
		{"NAME", q.Name},
		{"STATUS", queueStatus(q)},
		{"CONCURRENCY", fmtLimit(float64(q.Concurrency), "")},
		{"RATE LIMIT", fmtLimit(q.RateLimit, "/s")},
		{"MAX ATTEMPTS", strconv.Itoa(q.MaxAttempts)},
		{"TIMEOUT", fmtDuration(q.Timeout)},
		{"WEIGHT", strconv.Itoa(q.Weight)},
		{"RETRY STATUSES", fmtRetryStatuses(q.RetryStatuses)},
		{"CREATED AT", fmtTime(q.CreatedAt)},
		{"UPDATED AT", fmtTime(q.UpdatedAt)},
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
	}
	if q.Counts != nil {
		for _, st := range task.States {
			fmt.Fprintf(tw, "%s\t%d\n", strings.ToUpper(string(st)), q.Counts[string(st)])
		}
	}
	return tw.Flush()
}

// fmtRetryStatuses shows a queue's retry_statuses; none retry when empty.
func fmtRetryStatuses(tokens []string) string {
	if len(tokens) == 0 {
		return "none"
	}
	return strings.Join(tokens, ",")
}

func printQueueList(w io.Writer, format string, qs []client.Queue) error {
	if format == "json" {
		return writeJSON(w, struct {
			Queues []client.Queue `json:"queues"`
		}{qs})
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "NAME\tSTATUS\tCONCURRENCY\tRATE LIMIT\tMAX ATTEMPTS\tTIMEOUT\tPENDING\tRUNNING\tSUCCEEDED\tFAILED")
	for i := range qs {
		q := &qs[i]
		c := q.Counts
		pending := c[string(task.Scheduled)] + c[string(task.Available)] + c[string(task.Retrying)]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%d\t%d\t%d\t%d\n", q.Name, queueStatus(q),
			fmtLimit(float64(q.Concurrency), ""), fmtLimit(q.RateLimit, "/s"), q.MaxAttempts, fmtDuration(q.Timeout),
			pending, c[string(task.Running)], c[string(task.Succeeded)], c[string(task.Failed)])
	}
	return tw.Flush()
}
