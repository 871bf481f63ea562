package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// ScheduleRequest creates or replaces a schedule. Set exactly one of Cron
// and Every. Task is the task each run enqueues; its Delay, RunAt and
// IdempotencyKey must be unset (each run sets them).
type ScheduleRequest struct {
	Cron     string        // five fields, or @hourly-style names
	Every    time.Duration // whole seconds
	Timezone string        // IANA name; "" = UTC
	Queue    string
	Task     EnqueueRequest
	Paused   bool
	Missed   string        // skip, latest (default), all
	Jitter   time.Duration // 0 = none
	StartAt  time.Time     // zero = none
	EndAt    time.Time     // zero = none
}

// MarshalJSON writes the request in the API's shape, unset fields omitted.
func (r ScheduleRequest) MarshalJSON() ([]byte, error) {
	w := struct {
		Cron     string         `json:"cron,omitempty"`
		Every    string         `json:"every,omitempty"`
		Timezone string         `json:"timezone,omitempty"`
		Queue    string         `json:"queue"`
		Task     EnqueueRequest `json:"task"`
		Paused   bool           `json:"paused,omitempty"`
		Missed   string         `json:"missed,omitempty"`
		Jitter   string         `json:"jitter,omitempty"`
		StartAt  string         `json:"start_at,omitempty"`
		EndAt    string         `json:"end_at,omitempty"`
	}{Cron: r.Cron, Timezone: r.Timezone, Queue: r.Queue, Task: r.Task, Paused: r.Paused, Missed: r.Missed}
	if r.Every != 0 {
		w.Every = r.Every.String()
	}
	if r.Jitter != 0 {
		w.Jitter = r.Jitter.String()
	}
	if !r.StartAt.IsZero() {
		w.StartAt = r.StartAt.Format(time.RFC3339Nano)
	}
	if !r.EndAt.IsZero() {
		w.EndAt = r.EndAt.Format(time.RFC3339Nano)
	}
	return json.Marshal(w)
}

// ScheduleTask is a schedule's task template as the API reports it.
type ScheduleTask struct {
	Target        Target          `json:"target"`
	Payload       json.RawMessage `json:"payload,omitempty"`
	PayloadBase64 string          `json:"payload_base64,omitempty"`
	ContentType   string          `json:"content_type,omitempty"`
	Priority      int             `json:"priority"`
	MaxAttempts   int             `json:"max_attempts,omitempty"`
	Timeout       jsonDuration    `json:"timeout,omitempty"`
}

// Schedule is a schedule as the API reports it.
type Schedule struct {
	Name      string
	Cron      string
	Every     time.Duration
	Timezone  string
	Queue     string
	Task      ScheduleTask
	Paused    bool
	Missed    string
	Jitter    time.Duration
	StartAt   *time.Time
	EndAt     *time.Time
	Source    string // api, or file (declared in the schedules file)
	NextRunAt *time.Time
	LastRunAt *time.Time
	NextRuns  []time.Time
	CreatedAt time.Time
	UpdatedAt time.Time

	// Raw is the JSON the server sent (see Task.Raw).
	Raw json.RawMessage
}

type wireSchedule struct {
	Name      string       `json:"name"`
	Cron      string       `json:"cron,omitempty"`
	Every     jsonDuration `json:"every,omitempty"`
	Timezone  string       `json:"timezone"`
	Queue     string       `json:"queue"`
	Task      ScheduleTask `json:"task"`
	Paused    bool         `json:"paused"`
	Missed    string       `json:"missed"`
	Jitter    jsonDuration `json:"jitter"`
	StartAt   *time.Time   `json:"start_at"`
	EndAt     *time.Time   `json:"end_at"`
	Source    string       `json:"source"`
	NextRunAt *time.Time   `json:"next_run_at"`
	LastRunAt *time.Time   `json:"last_run_at"`
	NextRuns  []time.Time  `json:"next_runs"`
	CreatedAt time.Time    `json:"created_at"`
	UpdatedAt time.Time    `json:"updated_at"`
}

// UnmarshalJSON decodes tolerantly and keeps the JSON in Raw.
func (s *Schedule) UnmarshalJSON(data []byte) error {
	var w wireSchedule
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	*s = Schedule{
		Name: w.Name, Cron: w.Cron, Every: time.Duration(w.Every), Timezone: w.Timezone, Queue: w.Queue,
		Task: w.Task, Paused: w.Paused, Missed: w.Missed, Jitter: time.Duration(w.Jitter),
		StartAt: w.StartAt, EndAt: w.EndAt, Source: w.Source, NextRunAt: w.NextRunAt, LastRunAt: w.LastRunAt,
		NextRuns: w.NextRuns, CreatedAt: w.CreatedAt, UpdatedAt: w.UpdatedAt,
		Raw: bytes.Clone(data),
	}
	return nil
}

// MarshalJSON returns Raw when set, otherwise the API's shape.
func (s Schedule) MarshalJSON() ([]byte, error) {
	if len(s.Raw) > 0 {
		return s.Raw, nil
	}
	return json.Marshal(wireSchedule{
		Name: s.Name, Cron: s.Cron, Every: jsonDuration(s.Every), Timezone: s.Timezone, Queue: s.Queue,
		Task: s.Task, Paused: s.Paused, Missed: s.Missed, Jitter: jsonDuration(s.Jitter),
		StartAt: s.StartAt, EndAt: s.EndAt, Source: s.Source, NextRunAt: s.NextRunAt, LastRunAt: s.LastRunAt,
		NextRuns: s.NextRuns, CreatedAt: s.CreatedAt, UpdatedAt: s.UpdatedAt,
	})
}

// SchedulePage is one page of a schedule listing.
type SchedulePage struct {
	Schedules []Schedule `json:"schedules"`
	// NextCursor fetches the next page; "" at the end.
	NextCursor string `json:"next_cursor,omitempty"`
}

// ScheduleListOptions page a schedule listing; zero values are omitted.
type ScheduleListOptions struct {
	Limit  int
	Cursor string
}

// PutSchedule creates or replaces schedule name; created tells which.
func (c *Client) PutSchedule(ctx context.Context, name string, r ScheduleRequest) (s *Schedule, created bool, err error) {
	if err := needID("schedule name", name); err != nil {
		return nil, false, err
	}
	s = new(Schedule)
	status, err := c.call(ctx, http.MethodPut, c.endpoint("v1", "schedules", name), r, s)
	if err != nil {
		return nil, false, fmt.Errorf("put schedule: %w", err)
	}
	return s, status == http.StatusCreated, nil
}

// GetSchedule returns one schedule with its next run times.
func (c *Client) GetSchedule(ctx context.Context, name string) (*Schedule, error) {
	return c.scheduleCall(ctx, "get schedule", http.MethodGet, name)
}

// DeleteSchedule deletes a schedule and returns it; its tasks stay.
func (c *Client) DeleteSchedule(ctx context.Context, name string) (*Schedule, error) {
	return c.scheduleCall(ctx, "delete schedule", http.MethodDelete, name)
}

// PauseSchedule stops enqueueing a schedule's runs.
func (c *Client) PauseSchedule(ctx context.Context, name string) (*Schedule, error) {
	return c.scheduleCall(ctx, "pause schedule", http.MethodPost, name, "pause")
}

// ResumeSchedule enqueues a paused schedule's runs again, from its next
// time after now.
func (c *Client) ResumeSchedule(ctx context.Context, name string) (*Schedule, error) {
	return c.scheduleCall(ctx, "resume schedule", http.MethodPost, name, "resume")
}

func (c *Client) scheduleCall(ctx context.Context, what, method, name string, action ...string) (*Schedule, error) {
	if err := needID("schedule name", name); err != nil {
		return nil, err
	}
	s := new(Schedule)
	if _, err := c.call(ctx, method, c.endpoint(append([]string{"v1", "schedules", name}, action...)...), nil, s); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return s, nil
}

// TriggerSchedule enqueues one run of the schedule now and returns its task.
func (c *Client) TriggerSchedule(ctx context.Context, name string) (*Task, error) {
	if err := needID("schedule name", name); err != nil {
		return nil, err
	}
	t := new(Task)
	if _, err := c.call(ctx, http.MethodPost, c.endpoint("v1", "schedules", name, "trigger"), nil, t); err != nil {
		return nil, fmt.Errorf("trigger schedule: %w", err)
	}
	return t, nil
}

// ListSchedules returns one page of schedules, by name.
func (c *Client) ListSchedules(ctx context.Context, o ScheduleListOptions) (*SchedulePage, error) {
	u := c.endpoint("v1", "schedules")
	q := u.Query()
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.Cursor != "" {
		q.Set("cursor", o.Cursor)
	}
	u.RawQuery = q.Encode()
	p := new(SchedulePage)
	if _, err := c.call(ctx, http.MethodGet, u, nil, p); err != nil {
		return nil, fmt.Errorf("list schedules: %w", err)
	}
	if p.Schedules == nil {
		p.Schedules = []Schedule{}
	}
	return p, nil
}
