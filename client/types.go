package client

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// The task states the API reports.
const (
	StateScheduled = "scheduled"
	StateAvailable = "available"
	StateRunning   = "running"
	StateRetrying  = "retrying"
	StateSucceeded = "succeeded"
	StateFailed    = "failed"
	StateCancelled = "cancelled"
)

// Target is where a task is delivered.
type Target struct {
	URL     string            `json:"url"`
	Method  string            `json:"method,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
}

// EnqueueRequest is one task to enqueue. Zero values mean "the server's
// default"; Priority is a pointer because 0 is a real priority (the first).
type EnqueueRequest struct {
	Target Target
	// Payload is a JSON payload, sent as is. Exclusive with RawPayload.
	Payload json.RawMessage
	// RawPayload is an arbitrary byte payload, sent as payload_base64.
	RawPayload  []byte
	ContentType string
	// Delay and RunAt both schedule the task; set at most one.
	Delay          time.Duration
	RunAt          time.Time
	Priority       *int // 0 (first) to 9; nil = server default
	MaxAttempts    int
	Timeout        time.Duration // per attempt
	IdempotencyKey string
}

// MarshalJSON writes the request in the API's shape: durations in Go syntax
// ("30s"), run_at in RFC 3339, unset fields omitted.
func (r EnqueueRequest) MarshalJSON() ([]byte, error) {
	w := struct {
		Target         Target          `json:"target"`
		Payload        json.RawMessage `json:"payload,omitempty"`
		PayloadBase64  []byte          `json:"payload_base64,omitempty"` // encoding/json writes []byte as std base64
		ContentType    string          `json:"content_type,omitempty"`
		Delay          string          `json:"delay,omitempty"`
		RunAt          string          `json:"run_at,omitempty"`
		Priority       *int            `json:"priority,omitempty"`
		MaxAttempts    int             `json:"max_attempts,omitempty"`
		Timeout        string          `json:"timeout,omitempty"`
		IdempotencyKey string          `json:"idempotency_key,omitempty"`
	}{
		Target:         r.Target,
		Payload:        r.Payload,
		PayloadBase64:  r.RawPayload,
		ContentType:    r.ContentType,
		Priority:       r.Priority,
		MaxAttempts:    r.MaxAttempts,
		IdempotencyKey: r.IdempotencyKey,
	}
	if r.Delay != 0 {
		w.Delay = r.Delay.String()
	}
	if !r.RunAt.IsZero() {
		w.RunAt = r.RunAt.Format(time.RFC3339Nano)
	}
	if r.Timeout != 0 {
		w.Timeout = r.Timeout.String()
	}
	return json.Marshal(w)
}

// Task is a task as the API reports it.
type Task struct {
	ID             string
	Queue          string
	State          string
	Attempt        int
	MaxAttempts    int
	Priority       int
	RunAt          time.Time
	CreatedAt      time.Time
	UpdatedAt      time.Time
	FinishedAt     *time.Time
	Target         Target
	LastError      string // "" when none (null in JSON)
	LastStatus     int    // 0 when none (null in JSON)
	ContentType    string
	Timeout        time.Duration
	IdempotencyKey string
	Schedule       string     // the schedule whose run this is; "" = none
	ScheduledFor   *time.Time // that run's scheduled time
	// IdempotentReplay is set in an enqueue's answer only: true when an
	// earlier request with the same idempotency key stored the task (for a
	// key the client generated, that request was the call's own earlier
	// attempt whose answer was lost).
	IdempotentReplay bool

	// Raw is the JSON the server sent, with any fields this client does not
	// know; the CLI prints it for --output json so nothing is lost.
	Raw json.RawMessage
}

type wireTask struct {
	ID               string       `json:"id"`
	Queue            string       `json:"queue"`
	State            string       `json:"state"`
	Attempt          int          `json:"attempt"`
	MaxAttempts      int          `json:"max_attempts"`
	Priority         int          `json:"priority"`
	RunAt            time.Time    `json:"run_at"`
	CreatedAt        time.Time    `json:"created_at"`
	UpdatedAt        time.Time    `json:"updated_at"`
	FinishedAt       *time.Time   `json:"finished_at,omitempty"`
	Target           Target       `json:"target"`
	LastError        *string      `json:"last_error"`
	LastStatus       *int         `json:"last_status"`
	ContentType      string       `json:"content_type,omitempty"`
	Timeout          jsonDuration `json:"timeout,omitempty"`
	IdempotencyKey   string       `json:"idempotency_key,omitempty"`
	IdempotentReplay bool         `json:"idempotent_replay,omitempty"`
	Schedule         string       `json:"schedule,omitempty"`
	ScheduledFor     *time.Time   `json:"scheduled_for,omitempty"`
}

// UnmarshalJSON decodes tolerantly: unknown fields are ignored (and kept in
// Raw), nulls become zero values, timeout may be "10s" or seconds.
func (t *Task) UnmarshalJSON(data []byte) error {
	var w wireTask
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	*t = Task{
		ID: w.ID, Queue: w.Queue, State: w.State, Attempt: w.Attempt,
		MaxAttempts: w.MaxAttempts, Priority: w.Priority, RunAt: w.RunAt,
		CreatedAt: w.CreatedAt, UpdatedAt: w.UpdatedAt, FinishedAt: w.FinishedAt,
		Target: w.Target, ContentType: w.ContentType, Timeout: time.Duration(w.Timeout),
		IdempotencyKey: w.IdempotencyKey, IdempotentReplay: w.IdempotentReplay, Schedule: w.Schedule, ScheduledFor: w.ScheduledFor,
		Raw: bytes.Clone(data),
	}
	if w.LastError != nil {
		t.LastError = *w.LastError
	}
	if w.LastStatus != nil {
		t.LastStatus = *w.LastStatus
	}
	return nil
}

// MarshalJSON returns Raw when the task came from the server, so a decoded
// task re-encodes to exactly what was received; otherwise the API's shape.
func (t Task) MarshalJSON() ([]byte, error) {
	if len(t.Raw) > 0 {
		return t.Raw, nil
	}
	w := wireTask{
		ID: t.ID, Queue: t.Queue, State: t.State, Attempt: t.Attempt,
		MaxAttempts: t.MaxAttempts, Priority: t.Priority, RunAt: t.RunAt,
		CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt, FinishedAt: t.FinishedAt,
		Target: t.Target, ContentType: t.ContentType, Timeout: jsonDuration(t.Timeout),
		IdempotencyKey: t.IdempotencyKey, IdempotentReplay: t.IdempotentReplay, Schedule: t.Schedule, ScheduledFor: t.ScheduledFor,
	}
	if t.LastError != "" {
		w.LastError = &t.LastError
	}
	if t.LastStatus != 0 {
		w.LastStatus = &t.LastStatus
	}
	return json.Marshal(w)
}

// TaskPage is one page of a task listing.
type TaskPage struct {
	Tasks []Task `json:"tasks"`
	// NextCursor fetches the next page; "" at the end.
	NextCursor string `json:"next_cursor,omitempty"`
}

// ListOptions filter and page a task listing; zero values are omitted.
//
// The filters combine. The server examines at most 10 × Limit tasks per
// page for Priority, TargetHost, RunAfter and RunBefore, so a filtered page
// may hold fewer tasks than Limit, or none, and still have a NextCursor:
// follow it until it is "" (AllTasks does).
type ListOptions struct {
	State  string
	Limit  int
	Cursor string
	View   string // ViewRedacted (the server's default) or ViewFull

	Priority       *int   // only this priority
	TargetHost     string // only targets on this host (no port; any case)
	IdempotencyKey string // only the task holding this key
	// CreatedAfter (inclusive) and CreatedBefore (exclusive) bound the
	// creation time, to the millisecond.
	CreatedAfter, CreatedBefore time.Time
	// RunAfter (inclusive) and RunBefore (exclusive) bound run_at.
	RunAfter, RunBefore time.Time
}

// BulkResult is the answer to a bulk cancel or retry.
type BulkResult struct {
	Count int `json:"count"` // tasks changed
	// Results, for a call with ids: one per id, in order.
	Results []BulkTaskResult `json:"results,omitempty"`
	// More, for a call with a state: tasks in that state remain; call
	// again with NextCursor as SweepOptions.Cursor.
	More       bool   `json:"more"`
	NextCursor string `json:"next_cursor,omitempty"`
}

// BulkTaskResult is what a bulk call did to one id.
type BulkTaskResult struct {
	ID    string `json:"id"`
	State string `json:"state,omitempty"` // after the call; "" for an unknown id
	// Error is nil when the task changed; else Status 404 (no such task
	// in the queue) or 409 (its state does not allow the change).
	Error *Error `json:"error"`
}

// SweepOptions page a bulk call by state.
type SweepOptions struct {
	Cursor string // NextCursor of the previous answer
	Limit  int    // most tasks to change, 1 to 1000; 0 = the server's 1000
}

// Task views: the server shows target header values as Redacted unless
// ViewFull is asked for with an admin key.
const (
	ViewRedacted = "redacted"
	ViewFull     = "full"
	Redacted     = "[redacted]"
)

// Queue is a queue's settings and task counts.
type Queue struct {
	Name          string
	Concurrency   int     // 0 = unlimited
	RateLimit     float64 // tasks per second, 0 = unlimited
	MaxAttempts   int
	Timeout       time.Duration
	Paused        bool
	Weight        int              // share of the workers against other queues with due work
	RetryStatuses []string         // which failed attempts retry: "429", "500-599", "timeout", "connection"
	Counts        map[string]int64 // by state
	CreatedAt     time.Time
	UpdatedAt     time.Time

	// Raw is the JSON the server sent (see Task.Raw).
	Raw json.RawMessage
}

type wireQueue struct {
	Name          string           `json:"name"`
	Concurrency   int              `json:"concurrency"`
	RateLimit     float64          `json:"rate_limit"`
	MaxAttempts   int              `json:"max_attempts"`
	Timeout       jsonDuration     `json:"timeout"`
	Paused        bool             `json:"paused"`
	Weight        int              `json:"weight"`
	RetryStatuses []string         `json:"retry_statuses"`
	Counts        map[string]int64 `json:"counts,omitempty"`
	CreatedAt     time.Time        `json:"created_at"`
	UpdatedAt     time.Time        `json:"updated_at"`
}

// UnmarshalJSON decodes tolerantly and keeps the JSON in Raw.
func (q *Queue) UnmarshalJSON(data []byte) error {
	var w wireQueue
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	*q = Queue{
		Name: w.Name, Concurrency: w.Concurrency, RateLimit: w.RateLimit,
		MaxAttempts: w.MaxAttempts, Timeout: time.Duration(w.Timeout), Paused: w.Paused,
		Weight: w.Weight, RetryStatuses: w.RetryStatuses,
		Counts: w.Counts, CreatedAt: w.CreatedAt, UpdatedAt: w.UpdatedAt,
		Raw: bytes.Clone(data),
	}
	return nil
}

// MarshalJSON returns Raw when set, otherwise the API's shape.
func (q Queue) MarshalJSON() ([]byte, error) {
	if len(q.Raw) > 0 {
		return q.Raw, nil
	}
	return json.Marshal(wireQueue{
		Name: q.Name, Concurrency: q.Concurrency, RateLimit: q.RateLimit,
		MaxAttempts: q.MaxAttempts, Timeout: jsonDuration(q.Timeout), Paused: q.Paused,
		Weight: q.Weight, RetryStatuses: q.RetryStatuses,
		Counts: q.Counts, CreatedAt: q.CreatedAt, UpdatedAt: q.UpdatedAt,
	})
}

// QueuePatch changes the settings whose fields are non-nil; nil fields are
// not sent, so the server leaves them alone.
type QueuePatch struct {
	Concurrency *int
	RateLimit   *float64
	MaxAttempts *int
	Timeout     *time.Duration
	Paused      *bool
	Weight      *int
	// RetryStatuses replaces the queue's set; a pointer to an empty slice
	// sends [] (nothing retries).
	RetryStatuses *[]string
}

// MarshalJSON writes only the set fields, timeout in Go syntax.
func (p QueuePatch) MarshalJSON() ([]byte, error) {
	w := struct {
		Concurrency   *int      `json:"concurrency,omitempty"`
		RateLimit     *float64  `json:"rate_limit,omitempty"`
		MaxAttempts   *int      `json:"max_attempts,omitempty"`
		Timeout       *string   `json:"timeout,omitempty"`
		Paused        *bool     `json:"paused,omitempty"`
		Weight        *int      `json:"weight,omitempty"`
		RetryStatuses *[]string `json:"retry_statuses,omitempty"`
	}{Concurrency: p.Concurrency, RateLimit: p.RateLimit, MaxAttempts: p.MaxAttempts, Paused: p.Paused,
		Weight: p.Weight, RetryStatuses: p.RetryStatuses}
	if p.Timeout != nil {
		s := p.Timeout.String()
		w.Timeout = &s
	}
	return json.Marshal(w)
}

// Destination is a destination's shared state as the API reports it: the
// adaptive concurrency limit and circuit breaker Spool keeps for one
// scheme, host and port, the operator's ceilings, and recent figures summed
// over the replicas that reported in the last few seconds.
type Destination struct {
	Name                string  // "https://api.example.com:443" (JSON "destination")
	Limit               float64 // adaptive concurrency limit, all replicas together
	LimitState          string  // "slow_start" or "learned"
	MaxConcurrency      int     // operator's ceiling; 0 = none
	RateLimit           float64 // operator's ceiling, requests per second; 0 = none
	InFlight            int
	Replicas            int
	Breaker             string // "closed", "open" or "half_open"
	ConsecutiveFailures int
	OpenUntil           *time.Time // set while the breaker is open
	Cooldown            time.Duration
	HoldUntil           *time.Time // set while a Retry-After holds the destination
	SuccessRate         float64
	Latency             time.Duration
	RecentSuccesses     int64
	RecentFailures      int64
	CreatedAt           time.Time
	UpdatedAt           time.Time

	// Raw is the JSON the server sent (see Task.Raw).
	Raw json.RawMessage
}

type wireDestination struct {
	Name                string       `json:"destination"`
	Limit               float64      `json:"limit"`
	LimitState          string       `json:"limit_state"`
	MaxConcurrency      int          `json:"max_concurrency"`
	RateLimit           float64      `json:"rate_limit"`
	InFlight            int          `json:"in_flight"`
	Replicas            int          `json:"replicas"`
	Breaker             string       `json:"breaker"`
	ConsecutiveFailures int          `json:"consecutive_failures"`
	OpenUntil           *time.Time   `json:"open_until"`
	Cooldown            jsonDuration `json:"cooldown"`
	HoldUntil           *time.Time   `json:"hold_until"`
	SuccessRate         float64      `json:"success_rate"`
	Latency             jsonDuration `json:"latency"`
	RecentSuccesses     int64        `json:"recent_successes"`
	RecentFailures      int64        `json:"recent_failures"`
	CreatedAt           time.Time    `json:"created_at"`
	UpdatedAt           time.Time    `json:"updated_at"`
}

// UnmarshalJSON decodes tolerantly and keeps the JSON in Raw.
func (d *Destination) UnmarshalJSON(data []byte) error {
	var w wireDestination
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	*d = Destination{
		Name: w.Name, Limit: w.Limit, LimitState: w.LimitState, MaxConcurrency: w.MaxConcurrency,
		RateLimit: w.RateLimit, InFlight: w.InFlight, Replicas: w.Replicas, Breaker: w.Breaker,
		ConsecutiveFailures: w.ConsecutiveFailures, OpenUntil: w.OpenUntil, Cooldown: time.Duration(w.Cooldown),
		HoldUntil: w.HoldUntil, SuccessRate: w.SuccessRate, Latency: time.Duration(w.Latency),
		RecentSuccesses: w.RecentSuccesses, RecentFailures: w.RecentFailures,
		CreatedAt: w.CreatedAt, UpdatedAt: w.UpdatedAt,
		Raw: bytes.Clone(data),
	}
	return nil
}

// MarshalJSON returns Raw when set, otherwise the API's shape.
func (d Destination) MarshalJSON() ([]byte, error) {
	if len(d.Raw) > 0 {
		return d.Raw, nil
	}
	return json.Marshal(wireDestination{
		Name: d.Name, Limit: d.Limit, LimitState: d.LimitState, MaxConcurrency: d.MaxConcurrency,
		RateLimit: d.RateLimit, InFlight: d.InFlight, Replicas: d.Replicas, Breaker: d.Breaker,
		ConsecutiveFailures: d.ConsecutiveFailures, OpenUntil: d.OpenUntil, Cooldown: jsonDuration(d.Cooldown),
		HoldUntil: d.HoldUntil, SuccessRate: d.SuccessRate, Latency: jsonDuration(d.Latency),
		RecentSuccesses: d.RecentSuccesses, RecentFailures: d.RecentFailures,
		CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt,
	})
}

// DestinationPatch sets the operator's ceilings whose fields are non-nil;
// 0 removes a ceiling.
type DestinationPatch struct {
	MaxConcurrency *int     `json:"max_concurrency,omitempty"`
	RateLimit      *float64 `json:"rate_limit,omitempty"`
}

// Ptr returns a pointer to v, for the optional fields of EnqueueRequest,
// QueuePatch and DestinationPatch.
func Ptr[T any](v T) *T { return &v }

// jsonDuration is a duration on the wire: a Go duration string ("10s") when
// written; when read, also a number of seconds, or null.
type jsonDuration time.Duration

func (d jsonDuration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

func (d *jsonDuration) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		*d = 0
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		if s == "" {
			*d = 0
			return nil
		}
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("duration %q: %w", s, err)
		}
		*d = jsonDuration(v)
		return nil
	}
	secs, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("duration %s: want a string like \"10s\" or seconds", b)
	}
	*d = jsonDuration(secs * float64(time.Second))
	return nil
}

// The attempt outcomes the API reports.
const (
	AttemptSucceeded = "succeeded" // a 2xx answer
	AttemptRetry     = "retry"     // failed; the task is tried again
	AttemptFailed    = "failed"    // failed; the task failed
	AttemptReleased  = "released"  // abandoned at shutdown after the request went out; not counted
	AttemptExpired   = "expired"   // the lease expired with no completion (a lost replica)
)

// Attempt is one delivery attempt of a task, as GET /v1/tasks/{id}/attempts
// reports it.
type Attempt struct {
	Attempt    int
	StartedAt  *time.Time // nil when unknown
	FinishedAt time.Time
	Duration   time.Duration // 0 when unknown
	Outcome    string
	Status     int           // 0 when no response arrived
	Error      *AttemptError // nil when the attempt succeeded
	// ResponseExcerpt is the start of the response body; nil when none was
	// kept.
	ResponseExcerpt *string
	ResponseHeaders map[string]string // a few headers of the answer (Content-Type, Retry-After, X-Request-Id, X-Correlation-Id)
	Replica         string            // "" when unknown
	TraceID         string            // "" when unknown

	// Raw is the JSON the server sent (see Task.Raw).
	Raw json.RawMessage
}

// AttemptError says why an attempt did not succeed.
type AttemptError struct {
	// Class is one of http_status, timeout, connection, tls, ssrf_refused,
	// shutdown, lease_expired.
	Class   string `json:"class"`
	Message string `json:"message"`
}

type wireAttempt struct {
	Attempt         int               `json:"attempt"`
	StartedAt       *time.Time        `json:"started_at"`
	FinishedAt      time.Time         `json:"finished_at"`
	Duration        jsonDuration      `json:"duration"`
	Outcome         string            `json:"outcome"`
	Status          *int              `json:"status"`
	Error           *AttemptError     `json:"error"`
	ResponseExcerpt *string           `json:"response_excerpt"`
	ResponseHeaders map[string]string `json:"response_headers"`
	Replica         *string           `json:"replica"`
	TraceID         *string           `json:"trace_id"`
}

// UnmarshalJSON decodes tolerantly and keeps the JSON in Raw.
func (a *Attempt) UnmarshalJSON(data []byte) error {
	var w wireAttempt
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	*a = Attempt{Attempt: w.Attempt, StartedAt: w.StartedAt, FinishedAt: w.FinishedAt, Duration: time.Duration(w.Duration),
		Outcome: w.Outcome, Error: w.Error, ResponseExcerpt: w.ResponseExcerpt, ResponseHeaders: w.ResponseHeaders, Raw: bytes.Clone(data)}
	if w.Status != nil {
		a.Status = *w.Status
	}
	if w.Replica != nil {
		a.Replica = *w.Replica
	}
	if w.TraceID != nil {
		a.TraceID = *w.TraceID
	}
	return nil
}

// MarshalJSON returns Raw when the attempt came from the server; otherwise
// the API's shape.
func (a Attempt) MarshalJSON() ([]byte, error) {
	if len(a.Raw) > 0 {
		return a.Raw, nil
	}
	w := wireAttempt{Attempt: a.Attempt, StartedAt: a.StartedAt, FinishedAt: a.FinishedAt, Outcome: a.Outcome, Error: a.Error,
		ResponseExcerpt: a.ResponseExcerpt, ResponseHeaders: a.ResponseHeaders}
	if a.Duration != 0 {
		w.Duration = jsonDuration(a.Duration)
	}
	if a.Status != 0 {
		w.Status = &a.Status
	}
	if a.Replica != "" {
		w.Replica = &a.Replica
	}
	if a.TraceID != "" {
		w.TraceID = &a.TraceID
	}
	if w.ResponseHeaders == nil {
		w.ResponseHeaders = map[string]string{}
	}
	return json.Marshal(w)
}
