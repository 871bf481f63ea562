package api

import (
	"time"

	"github.com/spoolhq/spool/internal/task"
)

// timeLayout is RFC 3339 with a fixed six-digit fraction (PostgreSQL keeps
// microseconds), so times sort as strings and never lose their fraction.
const timeLayout = "2006-01-02T15:04:05.000000Z07:00"

func fmtTime(t time.Time) string { return t.UTC().Format(timeLayout) }

// taskJSON is the wire shape of a task. The payload is not echoed: lists
// would carry megabytes, and the sender already has it.
type taskJSON struct {
	ID             string     `json:"id"`
	Queue          string     `json:"queue"`
	State          task.State `json:"state"`
	Attempt        int        `json:"attempt"`
	MaxAttempts    int        `json:"max_attempts"`
	Priority       int        `json:"priority"`
	RunAt          string     `json:"run_at"`
	CreatedAt      string     `json:"created_at"`
	UpdatedAt      string     `json:"updated_at"`
	FinishedAt     *string    `json:"finished_at"`
	Target         targetJSON `json:"target"`
	Timeout        string     `json:"timeout"`
	ContentType    string     `json:"content_type"`
	IdempotencyKey string     `json:"idempotency_key,omitempty"`
	LastError      *string    `json:"last_error"`
	LastStatus     *int       `json:"last_status"`
	Schedule       string     `json:"schedule,omitempty"`
	ScheduledFor   *string    `json:"scheduled_for,omitempty"`
	// IdempotentReplay is set in an enqueue's answer only: whether the task
	// was stored by an earlier request with the same idempotency key.
	IdempotentReplay *bool `json:"idempotent_replay,omitempty"`
}

type targetJSON struct {
	URL     string            `json:"url"`
	Method  string            `json:"method"`
	Headers map[string]string `json:"headers"`
}

// Redacted replaces each target header value in a task's JSON unless the
// request asked for ?view=full with an admin key: target headers are where
// clients put a receiver's credentials.
const Redacted = "[redacted]"

// view says how much of a task the response may show.
type view int

const (
	redactedView view = iota // header names, values replaced by Redacted
	fullView                 // header values too (admin keys, ?view=full)
)

func toTaskJSON(t task.Task, v view) taskJSON {
	j := taskJSON{
		ID:             t.ID,
		Queue:          t.Queue,
		State:          t.State,
		Attempt:        t.Attempt,
		MaxAttempts:    t.MaxAttempts,
		Priority:       t.Priority,
		RunAt:          fmtTime(t.RunAt),
		CreatedAt:      fmtTime(t.CreatedAt),
		UpdatedAt:      fmtTime(t.UpdatedAt),
		Target:         targetJSON{URL: t.Target.URL, Method: t.Target.Method, Headers: headersJSON(t.Target.Headers, v)},
		Timeout:        fmtDuration(t.Timeout),
		ContentType:    t.ContentType,
		IdempotencyKey: t.IdempotencyKey,
	}
	if j.Target.Method == "" {
		j.Target.Method = "POST"
	}
	if t.FinishedAt != nil {
		s := fmtTime(*t.FinishedAt)
		j.FinishedAt = &s
	}
	if t.LastError != "" {
		s := t.LastError
		j.LastError = &s
	}
	if t.LastStatus != 0 {
		n := t.LastStatus
		j.LastStatus = &n
	}
	if t.Schedule != "" {
		j.Schedule = t.Schedule
		j.ScheduledFor = fmtOptTime(t.ScheduledFor)
	}
	return j
}

// headersJSON is a copy of h (never nil), with the values redacted unless v is fullView.
func headersJSON(h map[string]string, v view) map[string]string {
	out := make(map[string]string, len(h))
	for name, value := range h {
		if v != fullView {
			value = Redacted
		}
		out[name] = value
	}
	return out
}

func toTaskList(ts []task.Task, v view) []taskJSON {
	out := make([]taskJSON, len(ts))
	for i, t := range ts {
		out[i] = toTaskJSON(t, v)
	}
	return out
}

// queueJSON is the wire shape of a queue.
type queueJSON struct {
	Name        string  `json:"name"`
	Concurrency int     `json:"concurrency"`
	RateLimit   float64 `json:"rate_limit"`
	MaxAttempts int     `json:"max_attempts"`
	Timeout     string  `json:"timeout"`
	Paused      bool    `json:"paused"`
	Weight      int     `json:"weight"`
	// RetryStatuses is never null: [] means nothing retries.
	RetryStatuses []string             `json:"retry_statuses"`
	Counts        map[task.State]int64 `json:"counts"`
	CreatedAt     string               `json:"created_at"`
	UpdatedAt     string               `json:"updated_at"`
}

func toQueueJSON(q task.Queue) queueJSON {
	counts := make(map[task.State]int64, len(task.States))
	for _, st := range task.States {
		counts[st] = q.Counts[st] // every state, zero included
	}
	return queueJSON{
		Name:          q.Name,
		Concurrency:   q.Concurrency,
		RateLimit:     q.RateLimit,
		MaxAttempts:   q.MaxAttempts,
		Timeout:       fmtDuration(q.Timeout),
		Paused:        q.Paused,
		Weight:        q.Weight,
		RetryStatuses: q.RetryStatuses.Tokens(),
		Counts:        counts,
		CreatedAt:     fmtTime(q.CreatedAt),
		UpdatedAt:     fmtTime(q.UpdatedAt),
	}
}

// attemptListJSON is the answer of GET /v1/tasks/{id}/attempts.
type attemptListJSON struct {
	Attempts []attemptJSON `json:"attempts"`
}

// attemptJSON is the wire shape of one attempt. Unknown or absent values
// are null rather than left out, so every attempt has every field.
type attemptJSON struct {
	Attempt    int                 `json:"attempt"`
	StartedAt  *string             `json:"started_at"`
	FinishedAt string              `json:"finished_at"`
	Duration   *string             `json:"duration"` // as timeout: a Go duration ("1.5s")
	Outcome    task.AttemptOutcome `json:"outcome"`
	Status     *int                `json:"status"`
	Error      *attemptErrorJSON   `json:"error"`
	// ResponseExcerpt is the start of the response body as text (invalid
	// UTF-8 shown as U+FFFD); null when none was kept.
	ResponseExcerpt *string           `json:"response_excerpt"`
	ResponseHeaders map[string]string `json:"response_headers"`
	Replica         *string           `json:"replica"`
	TraceID         *string           `json:"trace_id"`
}

// attemptErrorJSON says why an attempt did not succeed.
type attemptErrorJSON struct {
	Class   task.ErrorClass `json:"class"`
	Message string          `json:"message"`
}

func toAttemptJSON(a task.Attempt) attemptJSON {
	j := attemptJSON{
		Attempt:         a.Attempt,
		StartedAt:       fmtOptTime(a.StartedAt),
		FinishedAt:      fmtTime(a.FinishedAt),
		Outcome:         a.Outcome,
		ResponseExcerpt: a.ResponseExcerpt,
		ResponseHeaders: a.ResponseHeaders,
		Replica:         optString(a.Replica),
		TraceID:         optString(a.TraceID),
	}
	if j.ResponseHeaders == nil {
		j.ResponseHeaders = map[string]string{}
	}
	if a.Duration > 0 {
		d := fmtDuration(a.Duration.Round(time.Microsecond))
		j.Duration = &d
	}
	if a.Status != 0 {
		n := a.Status
		j.Status = &n
	}
	if a.ErrorClass != "" || a.ErrorMessage != "" {
		j.Error = &attemptErrorJSON{Class: a.ErrorClass, Message: a.ErrorMessage}
	}
	return j
}

// optString is &s, or nil for "".
func optString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
